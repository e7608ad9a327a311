// The hgrn2.v1.Inference handlers: GenerateCall streams one generation with flow control,
// ScoreCall answers one scoring request, the rest answer at once.
#include "server/inference_service.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/dtype.h"
#include "engine/tokenizer/stream_decoder.h"
#include "server/grpc_status.h"
#include "server/log.h"

namespace hgrn2::server {
namespace {

// Prompt ids given to a stream decoder as already-shown context.
constexpr size_t kDecoderContextIds = 16;

// A cancellation this close to the call's deadline counts as the deadline passing.
constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(100);

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::LENGTH;
    case FinishReason::kEos:
      return v1::EOS;
    case FinishReason::kStop:
      return v1::STOP;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

std::string TokenText(const Tokenizer* tokenizer, int32_t id) {
  if (tokenizer == nullptr) return {};
  absl::StatusOr<std::string> text = tokenizer->Decode({id}, /*skip_special=*/false);
  return text.ok() ? *std::move(text) : std::string();
}

void AddAlternatives(const std::vector<TokenLogprob>& top, const Tokenizer* tokenizer,
                     v1::TokenLogprob& out) {
  for (const TokenLogprob& alternative : top) {
    v1::TopLogprob& entry = *out.add_top();
    entry.set_token_id(alternative.id);
    entry.set_logprob(alternative.logprob);
    entry.set_text(TokenText(tokenizer, alternative.id));
  }
}

// A streaming call refused before it started (draining, bad request): finishes at once.
class RefusedStream : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  RefusedStream(const grpc::Status& status, ServerMetrics& metrics, absl::Time start)
      : code_(status.error_code()), metrics_(metrics), start_(start) {
    Finish(status);
  }
  void OnDone() override {
    metrics_.RecordRequest("Generate", code_, SecondsSince(start_));
    delete this;
  }

 private:
  const grpc::StatusCode code_;
  ServerMetrics& metrics_;
  const absl::Time start_;
};

// One Generate call. Owned through shared_ptr: by itself from construction until gRPC's OnDone,
// and by each queued Pump task, so a task never outlives it.
//
// Flow control: one write is in flight at a time. Tokens that arrive meanwhile wait in the
// engine's stream (at most max_new_tokens of them) and go out together in the next message, so a
// slow reader costs only its own stream, never the scheduler or other streams.
class GenerateCall : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                     public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(const ModelContext& model, ServerMetrics& metrics, CallTracker& calls,
               WorkerPool& workers, std::string request_id, PreparedGeneration prepared,
               absl::Time start)
      : model_(model),
        metrics_(metrics),
        calls_(calls),
        workers_(workers),
        request_id_(std::move(request_id)),
        prepared_(std::move(prepared)),
        start_(start),
        matcher_(prepared_.stop_strings) {
    if (model_.tokenizer != nullptr) {
      const std::vector<int32_t>& prompt = prepared_.engine.prompt;
      const size_t context = std::min(prompt.size(), kDecoderContextIds);
      decoder_.emplace(*model_.tokenizer, /*skip_special=*/true,
                       absl::MakeConstSpan(prompt).subspan(prompt.size() - context));
    }
    metrics_.StreamStarted();
  }

  // Keeps itself alive until OnDone and submits the request; a refusal finishes the call.
  static GenerateCall* Start(std::shared_ptr<GenerateCall> call, Engine& engine,
                             absl::Time deadline) {
    call->self_ = call;
    call->deadline_ = deadline;
    GenerationRequest request = std::move(call->prepared_.engine);
    request.deadline = deadline;
    request.on_update = [weak = std::weak_ptr<GenerateCall>(call)] {
      if (std::shared_ptr<GenerateCall> locked = weak.lock()) locked->Schedule();
    };
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine.Generate(std::move(request));
    if (!stream.ok()) {
      call->FinishWith(ToGrpcStatus(stream.status()));
      return call.get();
    }
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(call->mutex_);
      call->stream_ = *std::move(stream);
      cancelled = call->cancelled_;
    }
    if (cancelled) call->stream_->Cancel();
    call->Schedule();
    return call.get();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!ok) broken_ = true;
    }
    if (!ok) CancelEngineRequest();
    Pump();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      // gRPC's deadline timer may fire a little before absl::Now() reaches the deadline it gave
      // us; a cancellation that close to the deadline is the deadline's.
      deadline_passed_ = absl::Now() + kDeadlineSlack >= deadline_;
    }
    CancelEngineRequest();
  }

  void OnDone() override {
    metrics_.RecordRequest("Generate", final_code_, SecondsSince(start_));
    metrics_.StreamEnded();
    calls_.End();
    std::shared_ptr<GenerateCall> self = std::move(self_);  // may be the last reference
  }

 private:
  // Called on the scheduler thread: queues one Pump unless one is queued already.
  void Schedule() {
    if (pump_queued_.exchange(true)) return;
    workers_.Post([self = shared_from_this()] {
      self->pump_queued_.store(false);
      self->Pump();
    });
  }

  void CancelEngineRequest() {
    std::shared_ptr<GenerationStream> stream;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stream = stream_;
    }
    if (stream) stream->Cancel();
  }

  // Finishes without a last message (errors, cancellation).
  void FinishWith(const grpc::Status& status) {
    final_code_ = status.error_code();
    Finish(status);
  }

  // Sends what the engine has, if no write is in flight. Runs on a worker or in OnWriteDone.
  void Pump() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (busy_ || finished_ || !stream_) {
          again_ = true;
          return;
        }
        busy_ = true;
        again_ = false;
      }
      if (Step()) return;  // a write or the finish is in flight
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!again_) return;
    }
  }

  // Takes the stream's news and starts a write or the finish; false when there was nothing.
  bool Step() {
    StreamUpdate update = stream_->Poll();
    bool gone;
    bool deadline_passed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gone = broken_ || cancelled_;
      deadline_passed = deadline_passed_;
    }
    if (gone) {
      // Nothing more goes out; the engine's end (it was cancelled) finishes the call.
      if (!update.end) return false;
      MarkFinished();
      if (absl::IsDeadlineExceeded(update.end->status) || deadline_passed ||
          absl::Now() >= deadline_) {
        FinishWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed"));
      } else {
        FinishWith(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      }
      return true;
    }
    message_.Clear();
    std::string text;
    int32_t new_tokens = 0;
    for (const SampledToken& token : update.tokens) {
      if (stop_string_) break;  // tokens after a stop string are not sent
      AddToken(token, text);
      ++new_tokens;
    }
    if (update.end) {
      const GenerationEnd& end = *update.end;
      const bool stopped_here =
          stop_string_.has_value() && (end.status.ok() || absl::IsCancelled(end.status));
      if (!end.status.ok() && !stopped_here) {
        MarkFinished();
        FinishWith(absl::IsUnavailable(end.status)
                       ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                      "the server shut down before the generation finished")
                       : ToGrpcStatus(end.status));
        return true;
      }
      if (!stop_string_) FlushText(text);
      message_.set_text(std::move(text));
      message_.set_finish_reason(stop_string_ ? v1::STOP : ToProto(end.finish_reason));
      if (stop_string_) message_.set_stop_string(*stop_string_);
      v1::Usage& usage = *message_.mutable_usage();
      usage.set_prompt_tokens(static_cast<uint32_t>(end.prompt_tokens));
      usage.set_generated_tokens(static_cast<uint32_t>(sent_tokens_));
      metrics_.RecordQueueTime(absl::ToDoubleSeconds(end.queue_time));
      RecordTokenTimes(new_tokens);
      if (!request_id_sent_) message_.set_request_id(request_id_);
      MarkFinished();
      final_code_ = grpc::StatusCode::OK;
      StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
      return true;
    }
    if (new_tokens == 0 && text.empty()) return false;
    message_.set_text(std::move(text));
    RecordTokenTimes(new_tokens);
    if (!request_id_sent_) {
      message_.set_request_id(request_id_);
      request_id_sent_ = true;
    }
    StartWrite(&message_);
    return true;
  }

  void AddToken(const SampledToken& token, std::string& text) {
    message_.add_token_ids(token.id);
    v1::TokenLogprob& logprob = *message_.add_logprobs();
    logprob.set_token_id(token.id);
    logprob.set_logprob(token.logprob);
    AddAlternatives(token.top, model_.tokenizer, logprob);
    ++sent_tokens_;
    if (!decoder_) return;
    recent_ids_.push_back(token.id);
    if (recent_ids_.size() > kDecoderContextIds) recent_ids_.erase(recent_ids_.begin());
    absl::StatusOr<std::string> delta = decoder_->Push(token.id);
    if (!delta.ok()) {
      // An id the tokenizer does not know (a model vocabulary padded past the tokenizer's) has no
      // text. Otherwise the decoder lost its footing (e.g. a run of byte pieces that decodes
      // differently as it grows): this token's own text goes out, and decoding restarts after it.
      if (!decoder_error_logged_) {
        decoder_error_logged_ = true;
        Log(absl::StrCat("request ", request_id_, ": stream decoder: ", delta.status().message(),
                         "; restarting it"));
      }
      delta = model_.tokenizer->Decode({token.id}, /*skip_special=*/true);
      decoder_.emplace(*model_.tokenizer, /*skip_special=*/true, recent_ids_);
      if (!delta.ok()) return;
    }
    if (!delta->empty()) AddText(*delta, text);
  }

  void AddText(absl::string_view delta, std::string& text) {
    StopStringMatcher::Result shown = matcher_.Push(delta);
    text += shown.text;
    if (shown.stopped) {
      stop_string_ = std::move(shown.stop_string);
      CancelEngineRequest();
    }
  }

  // The end without a stop string: text held back by the decoder and the matcher goes out.
  void FlushText(std::string& text) {
    if (decoder_) {
      absl::StatusOr<std::string> tail = decoder_->Finish();
      if (tail.ok() && !tail->empty()) AddText(*tail, text);
    }
    if (!stop_string_) text += matcher_.Finish();
  }

  void RecordTokenTimes(int32_t new_tokens) {
    if (new_tokens == 0) return;
    const absl::Time now = absl::Now();
    if (last_tokens_at_ == absl::InfinitePast()) {
      metrics_.RecordTimeToFirstToken(absl::ToDoubleSeconds(now - start_));
      // The first message's other tokens came with the first.
      for (int32_t i = 1; i < new_tokens; ++i) metrics_.RecordInterTokenLatency(0.0);
    } else {
      const double each = absl::ToDoubleSeconds(now - last_tokens_at_) / new_tokens;
      for (int32_t i = 0; i < new_tokens; ++i) metrics_.RecordInterTokenLatency(each);
    }
    last_tokens_at_ = now;
  }

  void MarkFinished() {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
  }

  const ModelContext& model_;
  ServerMetrics& metrics_;
  CallTracker& calls_;
  WorkerPool& workers_;
  const std::string request_id_;
  PreparedGeneration prepared_;
  const absl::Time start_;
  absl::Time deadline_ = absl::InfiniteFuture();
  std::shared_ptr<GenerateCall> self_;
  std::atomic<bool> pump_queued_{false};

  std::mutex mutex_;
  std::shared_ptr<GenerationStream> stream_;  // set once the engine took the request
  bool busy_ = false;                         // a thread is in Step, or a write is in flight
  bool again_ = false;                        // news arrived while busy
  bool finished_ = false;                     // Finish has been called
  bool cancelled_ = false;                    // the client cancelled (or its deadline passed)
  bool deadline_passed_ = false;              // OnCancel came at (or just before) the deadline
  bool broken_ = false;                       // a write failed

  // Used by the one thread in Step at a time.
  v1::GenerateResponse message_;
  std::optional<StreamDecoder> decoder_;
  std::vector<int32_t> recent_ids_;  // the last few generated ids, to restart the decoder
  bool decoder_error_logged_ = false;
  StopStringMatcher matcher_;
  std::optional<std::string> stop_string_;
  int64_t sent_tokens_ = 0;
  bool request_id_sent_ = false;
  absl::Time last_tokens_at_ = absl::InfinitePast();
  grpc::StatusCode final_code_ = grpc::StatusCode::UNKNOWN;
};

// One Score call: submitted on the handler thread, answered by a worker once the engine is done.
class ScoreCall : public grpc::ServerUnaryReactor {
 public:
  ScoreCall(const ModelContext& model, ServerMetrics& metrics, CallTracker& calls,
            WorkerPool& workers, std::string request_id, PreparedScore prepared,
            v1::ScoreResponse* response, absl::Time start)
      : model_(model),
        metrics_(metrics),
        calls_(calls),
        workers_(workers),
        request_id_(std::move(request_id)),
        prepared_(std::move(prepared)),
        response_(response),
        start_(start) {}

  void Start(Engine& engine, absl::Time deadline) {
    ScoreRequest request = std::move(prepared_.engine);
    request.deadline = deadline;
    // The engine calls on_done exactly once (also when it stops), so `this` lives until then.
    request.on_done = [this] { Arrive(); };
    absl::StatusOr<std::shared_ptr<PendingScore>> pending = engine.Score(std::move(request));
    if (!pending.ok()) {
      Complete(ToGrpcStatus(pending.status()));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_ = *std::move(pending);
      if (cancelled_) pending_->Cancel();
    }
    Arrive();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
    if (pending_) pending_->Cancel();
  }

  void OnDone() override {
    metrics_.RecordRequest("Score", code_, SecondsSince(start_));
    calls_.End();
    delete this;
  }

 private:
  // The second of (the engine is done, Start has the handle) answers, on a worker.
  void Arrive() {
    if (arrivals_.fetch_add(1) == 1) workers_.Post([this] { Answer(); });
  }

  void Answer() {
    absl::StatusOr<ScoreResult> result = pending_->Wait();
    if (!result.ok()) {
      Complete(absl::IsUnavailable(result.status())
                   ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  "the server shut down before the scoring finished")
                   : ToGrpcStatus(result.status()));
      return;
    }
    metrics_.RecordQueueTime(absl::ToDoubleSeconds(result->queue_time));
    const size_t scored = prepared_.scored_ids.size();
    const size_t first = result->logprobs.size() - scored;
    double total = 0.0;
    bool greedy = true;
    for (size_t i = 0; i < scored; ++i) {
      const float logprob = result->logprobs[first + i];
      response_->add_token_ids(prepared_.scored_ids[i]);
      response_->add_token_logprobs(logprob);
      total += logprob;
      greedy = greedy && result->is_argmax[first + i];
      if (!result->top.empty()) {
        v1::TokenLogprob& entry = *response_->add_top_logprobs();
        entry.set_token_id(prepared_.scored_ids[i]);
        entry.set_logprob(logprob);
        AddAlternatives(result->top[first + i], model_.tokenizer, entry);
      }
    }
    response_->set_total_logprob(total);
    response_->set_is_greedy(greedy);
    response_->set_unscored_tokens(static_cast<uint32_t>(prepared_.unscored_tokens));
    response_->set_context_tokens(static_cast<uint32_t>(prepared_.context_tokens));
    response_->set_request_id(request_id_);
    Complete(grpc::Status::OK);
  }

  void Complete(const grpc::Status& status) {
    code_ = status.error_code();
    Finish(status);
  }

  const ModelContext& model_;
  ServerMetrics& metrics_;
  CallTracker& calls_;
  WorkerPool& workers_;
  const std::string request_id_;
  PreparedScore prepared_;
  v1::ScoreResponse* const response_;
  const absl::Time start_;
  std::atomic<int> arrivals_{0};
  std::mutex mutex_;
  std::shared_ptr<PendingScore> pending_;
  bool cancelled_ = false;
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is shutting down and takes no new requests");
}

}  // namespace

InferenceService::InferenceService(Engine& engine, const ModelContext& model,
                                   const EngineOptions& engine_options, ServedModel served,
                                   ServerMetrics& metrics, CallTracker& calls, WorkerPool& workers)
    : engine_(engine),
      model_(model),
      engine_options_(engine_options),
      served_(std::move(served)),
      metrics_(metrics),
      calls_(calls),
      workers_(workers) {}

grpc::ServerUnaryReactor* InferenceService::Answer(grpc::CallbackServerContext* context,
                                                   const std::string& rpc,
                                                   const grpc::Status& status, absl::Time start) {
  metrics_.RecordRequest(rpc, status.error_code(), SecondsSince(start));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> request_id = RequestIdOf(request->request_id(), model_.limits);
  if (!request_id.ok()) {
    return new RefusedStream(ToGrpcStatus(request_id.status()), metrics_, start);
  }
  absl::StatusOr<PreparedGeneration> prepared = PrepareGenerate(*request, model_);
  if (!prepared.ok()) return new RefusedStream(ToGrpcStatus(prepared.status()), metrics_, start);
  if (!calls_.TryBegin()) return new RefusedStream(Unavailable(), metrics_, start);
  auto call = std::make_shared<GenerateCall>(model_, metrics_, calls_, workers_,
                                             *std::move(request_id), *std::move(prepared), start);
  return GenerateCall::Start(std::move(call), engine_, DeadlineOf(*context));
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> request_id = RequestIdOf(request->request_id(), model_.limits);
  if (!request_id.ok()) return Answer(context, "Score", ToGrpcStatus(request_id.status()), start);
  absl::StatusOr<PreparedScore> prepared = PrepareScore(*request, model_);
  if (!prepared.ok()) return Answer(context, "Score", ToGrpcStatus(prepared.status()), start);
  if (!calls_.TryBegin()) return Answer(context, "Score", Unavailable(), start);
  auto* call = new ScoreCall(model_, metrics_, calls_, workers_, *std::move(request_id),
                             *std::move(prepared), response, start);
  call->Start(engine_, DeadlineOf(*context));
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<int32_t>> ids = PrepareTokenize(*request, model_);
  if (!ids.ok()) return Answer(context, "Tokenize", ToGrpcStatus(ids.status()), start);
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_pieces(model_.tokenizer->PieceOf(id));
  }
  return Answer(context, "Tokenize", grpc::Status::OK, start);
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  const absl::Time start = absl::Now();
  if (model_.tokenizer == nullptr) {
    return Answer(context, "Detokenize",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "token_ids: this model has no tokenizer (no tokenizer.json or "
                               "tokenizer.model)"),
                  start);
  }
  const bool skip_special = !request->has_skip_special_tokens() || request->skip_special_tokens();
  const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  absl::StatusOr<std::string> text = model_.tokenizer->Decode(ids, skip_special);
  if (!text.ok()) {
    return Answer(context, "Detokenize",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("token_ids: ", text.status().message())),
                  start);
  }
  response->set_text(*std::move(text));
  return Answer(context, "Detokenize", grpc::Status::OK, start);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  const absl::Time start = absl::Now();
  const ModelConfig& c = *model_.config;
  response->set_model_type("hgrn2");
  response->set_model_path(served_.path);
  response->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
  response->set_hidden_size(static_cast<uint32_t>(c.hidden_size));
  response->set_num_layers(static_cast<uint32_t>(c.num_layers));
  response->set_num_heads(static_cast<uint32_t>(c.num_heads));
  response->set_head_key_dim(static_cast<uint32_t>(c.key_dim));
  response->set_head_value_dim(static_cast<uint32_t>(c.value_dim));
  response->set_num_parameters(static_cast<uint64_t>(c.num_parameters()));
  if (model_.tokenizer != nullptr && model_.tokenizer->bos_id()) {
    response->set_bos_token_id(*model_.tokenizer->bos_id());
  } else if (c.bos_token_id) {
    response->set_bos_token_id(*c.bos_token_id);
  }
  for (int32_t id : c.eos_token_ids) response->add_eos_token_ids(id);
  if (model_.tokenizer != nullptr) response->set_tokenizer(model_.tokenizer->kind());
  response->set_state_bytes_per_sequence(engine_.state_bytes());
  response->set_dtype(served_.dtype);
  response->set_state_dtype(served_.state_dtype);
  response->set_backend(served_.backend);
  v1::Limits& limits = *response->mutable_limits();
  const RequestLimits& l = model_.limits;
  limits.set_max_prompt_tokens(static_cast<uint32_t>(l.max_prompt_tokens));
  limits.set_max_new_tokens(static_cast<uint32_t>(l.max_new_tokens));
  limits.set_default_max_new_tokens(static_cast<uint32_t>(l.default_max_new_tokens));
  limits.set_max_stop_strings(static_cast<uint32_t>(l.max_stop_strings));
  limits.set_max_stop_string_bytes(static_cast<uint32_t>(l.max_stop_string_bytes));
  limits.set_max_logprobs(static_cast<uint32_t>(l.max_logprobs));
  limits.set_max_running(static_cast<uint32_t>(engine_options_.max_running));
  limits.set_max_queued(static_cast<uint32_t>(engine_options_.max_queued));
  response->set_server_version(HGRN2_VERSION);
  return Answer(context, "GetModelInfo", grpc::Status::OK, start);
}

}  // namespace hgrn2::server
