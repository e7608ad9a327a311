// The hgrn2.v1.Inference handlers: GenerateCall streams one generation with flow control,
// ScoreCall answers one scoring request, the rest answer at once.
#include "server/inference_service.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/base/dtype.h"
#include "engine/session/session_manager.h"
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

// One sample's text as its tokens come: incremental detokenization (restarted after a token the
// decoder cannot place) and stop strings. The stream's copy makes the text to send; with a session
// to save, a second copy runs on the scheduler thread (GenerationRequest::stops_after) so the
// engine stops at exactly the token the stream stops at.
class TextTracker {
 public:
  TextTracker(const Tokenizer* tokenizer, absl::Span<const int32_t> prompt,
              std::vector<std::string> stop_strings, std::string request_id)
      : tokenizer_(tokenizer),
        matcher_(std::move(stop_strings)),
        request_id_(std::move(request_id)) {
    if (tokenizer_ == nullptr) return;
    const size_t context = std::min(prompt.size(), kDecoderContextIds);
    decoder_.emplace(*tokenizer_, /*skip_special=*/true, prompt.subspan(prompt.size() - context));
  }

  // Adds the token's new text (what may be shown so far) to `text`; true when a stop string
  // completed (stop_string() says which; nothing after it is shown).
  bool Push(int32_t token, std::string& text) {
    if (!decoder_) return false;
    recent_ids_.push_back(token);
    if (recent_ids_.size() > kDecoderContextIds) recent_ids_.erase(recent_ids_.begin());
    absl::StatusOr<std::string> delta = decoder_->Push(token);
    if (!delta.ok()) {
      // An id the tokenizer does not know (a model vocabulary padded past the tokenizer's) has no
      // text. Otherwise the decoder lost its footing (e.g. a run of byte pieces that decodes
      // differently as it grows): this token's own text goes out, and decoding restarts after it.
      if (!error_logged_ && !request_id_.empty()) {
        error_logged_ = true;
        Log(absl::StrCat("request ", request_id_, ": stream decoder: ", delta.status().message(),
                         "; restarting it"));
      }
      delta = tokenizer_->Decode({token}, /*skip_special=*/true);
      decoder_.emplace(*tokenizer_, /*skip_special=*/true, recent_ids_);
      if (!delta.ok()) return false;
    }
    return !delta->empty() && AddText(*delta, text);
  }

  // The end without a stop string: text held back by the decoder and the matcher.
  void Finish(std::string& text) {
    if (decoder_) {
      absl::StatusOr<std::string> tail = decoder_->Finish();
      if (tail.ok() && !tail->empty()) AddText(*tail, text);
    }
    if (!stop_string_) text += matcher_.Finish();
  }

  const std::optional<std::string>& stop_string() const { return stop_string_; }

 private:
  bool AddText(absl::string_view delta, std::string& text) {
    StopStringMatcher::Result shown = matcher_.Push(delta);
    text += shown.text;
    if (shown.stopped) stop_string_ = std::move(shown.stop_string);
    return shown.stopped;
  }

  const Tokenizer* tokenizer_;
  std::optional<StreamDecoder> decoder_;
  std::vector<int32_t> recent_ids_;  // the last few ids, to restart the decoder
  bool error_logged_ = false;
  StopStringMatcher matcher_;
  std::optional<std::string> stop_string_;
  const std::string request_id_;  // for the log; empty: do not log
};

// One Generate call: one or n samples of a prompt, streamed on one gRPC stream. Owned through
// shared_ptr: by itself from Begin until gRPC's OnDone, and by each queued task, so a task never
// outlives it.
//
// Flow control: one write is in flight at a time. Tokens that arrive meanwhile wait in the
// engine's streams (at most max_new_tokens of them each) and go out together in the next message,
// so a slow reader costs only its own stream, never the scheduler or other streams.
class GenerateCall : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                     public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(const CallParts& parts, std::string request_id, Admission admission,
               PreparedGeneration prepared, absl::Time start)
      : parts_(parts),
        model_(*parts.model),
        metrics_(*parts.metrics),
        request_id_(std::move(request_id)),
        admission_(std::move(admission)),
        prepared_(std::move(prepared)),
        start_(start) {
    samples_.resize(static_cast<size_t>(prepared_.num_samples));
    for (Sample& sample : samples_) {
      sample.text.emplace(model_.tokenizer, prepared_.engine.prompt, prepared_.stop_strings,
                          request_id_);
    }
    metrics_.StreamStarted();
  }

  // Keeps itself alive until OnDone and submits the request: at once, or after the session work
  // (reading the session, reserving the id to save) on a session thread. A refusal finishes the
  // call.
  static GenerateCall* Begin(std::shared_ptr<GenerateCall> call, Engine& engine,
                             absl::Time deadline) {
    call->self_ = call;
    call->deadline_ = deadline;
    GenerateCall* reactor = call.get();
    if (call->prepared_.session_id.empty() && call->prepared_.save_session_as.empty()) {
      call->Submit(engine);
    } else {
      call->parts_.session_workers->Post(
          [call = std::move(call), &engine] { call->Submit(engine); });
    }
    return reactor;
  }

  void OnWriteDone(bool ok) override {
    TakeOver();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!ok) broken_ = true;
    }
    if (!ok) CancelEngineRequests();
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
    CancelEngineRequests();
  }

  void OnDone() override {
    TakeOver();
    metrics_.RecordRequest("Generate", final_code_, SecondsSince(start_));
    metrics_.StreamEnded();
    parts_.calls->End();
    admission_.Release();  // the tenant's slot, now: queued tasks may hold the call a while longer
    std::shared_ptr<GenerateCall> self = std::move(self_);  // may be the last reference
  }

 private:
  // One of the n samples: its engine stream and how far its text has got.
  struct Sample {
    std::shared_ptr<GenerationStream> stream;
    std::optional<TextTracker> text;
    bool stopped = false;  // a stop string completed: nothing after it is sent
    int64_t sent_tokens = 0;
    bool engine_ended = false;  // the engine reported the end
    bool done = false;          // its last message is written (or on its way)
  };

  // Reads the session and reserves the id to save (when asked), then hands the request to the
  // engine. Runs on the handler thread, or on a session thread when there is session work.
  void Submit(Engine& engine) {
    GenerationRequest request = std::move(prepared_.engine);
    if (!prepared_.save_session_as.empty()) {
      absl::StatusOr<session::SaveReservation> reserved =
          parts_.sessions->Reserve({admission_.tenant(), prepared_.save_session_as});
      if (!reserved.ok()) return FinishWith(ToGrpcStatus(reserved.status()));
      reservation_ = *std::move(reserved);
      request.return_final_state = true;
      if (!prepared_.stop_strings.empty() && model_.tokenizer != nullptr) {
        // The saved state must end at the token the stream stops at: the engine watches the
        // text too, with its own tracker, on the scheduler thread.
        auto watcher = std::make_shared<TextTracker>(model_.tokenizer, request.prompt,
                                                     prepared_.stop_strings, std::string());
        request.stops_after = [watcher](const SampledToken& token) {
          std::string ignored;
          return watcher->Push(token.id, ignored);
        };
      }
    }
    if (!prepared_.session_id.empty()) {
      absl::StatusOr<session::LoadedSession> loaded =
          parts_.sessions->Load({admission_.tenant(), prepared_.session_id});
      if (!loaded.ok()) {
        return FinishWith(ToGrpcStatus(absl::Status(
            loaded.status().code(), absl::StrCat("session_id: ", loaded.status().message()))));
      }
      request.initial_state = std::move(loaded->state);
      history_tokens_ = loaded->num_tokens;
    }
    request.deadline = deadline_;
    request.on_update = [weak = std::weak_ptr<GenerateCall>(shared_from_this())] {
      if (std::shared_ptr<GenerateCall> locked = weak.lock()) locked->Schedule();
    };
    absl::StatusOr<std::vector<std::shared_ptr<GenerationStream>>> streams;
    if (samples_.size() == 1) {
      absl::StatusOr<std::shared_ptr<GenerationStream>> stream =
          engine.Generate(std::move(request));
      if (stream.ok()) {
        streams = std::vector<std::shared_ptr<GenerationStream>>{*std::move(stream)};
      } else {
        streams = stream.status();
      }
    } else {
      streams = engine.GenerateMany(std::move(request), static_cast<int32_t>(samples_.size()));
    }
    if (!streams.ok()) return FinishWith(ToGrpcStatus(streams.status()));
    admission_.ChargeTokens(prepared_.prompt_tokens);  // one prefill, whatever n is
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < samples_.size(); ++i) samples_[i].stream = (*streams)[i];
      submitted_ = true;
      cancelled = cancelled_;
    }
    if (cancelled) CancelEngineRequests();
    Pump();
  }

  // Called on the scheduler thread: queues one Pump unless one is queued already.
  void Schedule() {
    if (pump_queued_.exchange(true)) return;
    parts_.workers->Post([self = shared_from_this()] {
      self->pump_queued_.store(false);
      self->Pump();
    });
  }

  void CancelEngineRequests() {
    std::vector<std::shared_ptr<GenerationStream>> streams;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!submitted_) return;
      for (const Sample& sample : samples_) streams.push_back(sample.stream);
    }
    for (const auto& stream : streams) stream->Cancel();
  }

  // Before a StartWrite, StartWriteAndFinish or Finish (only WriteMessage, WriteLastMessage and
  // FinishWith start them), and first in what they lead to (handoffs_).
  void HandOff() { handoffs_.fetch_add(1, std::memory_order_release); }
  void TakeOver() { static_cast<void>(handoffs_.load(std::memory_order_acquire)); }

  // Sends message_; OnWriteDone follows.
  void WriteMessage() {
    HandOff();
    StartWrite(&message_);
  }

  // Sends message_ as the last one and finishes with OK.
  void WriteLastMessage() {
    MarkFinished();
    final_code_ = grpc::StatusCode::OK;
    HandOff();
    StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
  }

  // Finishes without a last message (errors, cancellation).
  void FinishWith(const grpc::Status& status) {
    MarkFinished();
    final_code_ = status.error_code();
    HandOff();
    Finish(status);
  }

  // Sends what the engine has, if no write is in flight. Runs on a worker or in OnWriteDone.
  void Pump() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (busy_ || finished_ || !submitted_) {
          again_ = true;
          return;
        }
        busy_ = true;
        again_ = false;
      }
      if (Step()) return;  // a write, a save or the finish is in flight
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!again_) return;
    }
  }

  // Takes the streams' news and starts a write, a save or the finish; false when there was
  // nothing to do.
  bool Step() {
    bool gone;
    bool deadline_passed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gone = broken_ || cancelled_;
      deadline_passed = deadline_passed_;
    }
    if (gone) return StepGone(deadline_passed);
    // Round robin over the samples, so each gets its turn on the stream.
    for (size_t k = 0; k < samples_.size(); ++k) {
      const size_t index = (next_sample_ + k) % samples_.size();
      Sample& sample = samples_[index];
      if (sample.done) continue;
      StreamUpdate update = sample.stream->Poll();
      if (update.tokens.empty() && !update.end) continue;
      next_sample_ = index + 1;
      if (StepSample(index, std::move(update))) return true;
    }
    return false;
  }

  // The client is gone: nothing more goes out; once every engine request has ended (they were
  // cancelled), the call finishes.
  bool StepGone(bool deadline_passed) {
    absl::Status ended_with;
    for (Sample& sample : samples_) {
      if (sample.engine_ended) continue;
      StreamUpdate update = sample.stream->Poll();
      if (!update.end) return false;
      sample.engine_ended = true;
      ended_with = update.end->status;
    }
    if (absl::IsDeadlineExceeded(ended_with) || deadline_passed || absl::Now() >= deadline_) {
      FinishWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed"));
    } else {
      FinishWith(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    }
    return true;
  }

  // Writes one sample's news (its last message when it ended); true when something is in flight.
  bool StepSample(size_t index, StreamUpdate update) {
    Sample& sample = samples_[index];
    message_.Clear();
    message_.set_index(static_cast<uint32_t>(index));
    std::string text;
    int32_t new_tokens = 0;
    for (const SampledToken& token : update.tokens) {
      if (sample.stopped) break;  // tokens after a stop string are not sent
      AddToken(sample, token, text);
      ++new_tokens;
    }
    admission_.ChargeTokens(new_tokens);
    if (!update.end) {
      if (new_tokens == 0 && text.empty()) return false;
      message_.set_text(std::move(text));
      RecordTokenTimes(new_tokens);
      AddRequestId();
      WriteMessage();
      return true;
    }
    sample.engine_ended = true;
    const GenerationEnd& end = *update.end;
    const bool stopped_here = sample.stopped && (end.status.ok() || absl::IsCancelled(end.status));
    if (!end.status.ok() && !stopped_here) {
      // One sample failing ends the call; the others are cancelled.
      CancelEngineRequests();
      FinishWith(absl::IsUnavailable(end.status)
                     ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    "the server shut down before the generation finished")
                     : ToGrpcStatus(end.status));
      return true;
    }
    if (!sample.stopped) sample.text->Finish(text);
    message_.set_text(std::move(text));
    message_.set_finish_reason(sample.stopped ? v1::STOP : ToProto(end.finish_reason));
    if (sample.stopped) message_.set_stop_string(*sample.text->stop_string());
    v1::Usage& usage = *message_.mutable_usage();
    usage.set_prompt_tokens(static_cast<uint32_t>(prepared_.prompt_tokens));
    usage.set_generated_tokens(static_cast<uint32_t>(sample.sent_tokens));
    usage.set_cached_prompt_tokens(static_cast<uint32_t>(end.cached_prompt_tokens));
    metrics_.RecordQueueTime(absl::ToDoubleSeconds(end.queue_time));
    RecordTokenTimes(new_tokens);
    AddRequestId();
    sample.done = true;
    const bool last =
        std::all_of(samples_.begin(), samples_.end(), [](const Sample& s) { return s.done; });
    if (reservation_.held()) {
      // The save is durable before the client hears the generation ended.
      SaveThenFinish(end);
      return true;
    }
    if (!last) {
      WriteMessage();
      return true;
    }
    WriteLastMessage();
    return true;
  }

  // Saves the final state on a session thread, then writes the last message (n is 1 here).
  void SaveThenFinish(const GenerationEnd& end) {
    std::shared_ptr<const SequenceState> state = end.final_state;
    // The session holds every token it has read and written: its history, this prompt, and what
    // was generated (the last one pending). With a stop string the engine stopped at the
    // token that completed it.
    const int64_t num_tokens = history_tokens_ + prepared_.prompt_tokens + end.generated_tokens;
    parts_.session_workers->Post([self = shared_from_this(), state, num_tokens] {
      absl::Status saved =
          state == nullptr
              ? absl::InternalError("the engine returned no final state")
              : self->parts_.sessions->Save(self->reservation_, *state, num_tokens).status();
      self->reservation_.Release();
      if (!saved.ok()) {
        self->FinishWith(ToGrpcStatus(absl::Status(
            saved.code(), absl::StrCat("saving session \"", self->prepared_.save_session_as,
                                       "\": ", saved.message()))));
        return;
      }
      self->WriteLastMessage();
    });
  }

  void AddRequestId() {
    if (request_id_sent_) return;
    message_.set_request_id(request_id_);
    request_id_sent_ = true;
  }

  void AddToken(Sample& sample, const SampledToken& token, std::string& text) {
    message_.add_token_ids(token.id);
    v1::TokenLogprob& logprob = *message_.add_logprobs();
    logprob.set_token_id(token.id);
    logprob.set_logprob(token.logprob);
    AddAlternatives(token.top, model_.tokenizer, logprob);
    ++sample.sent_tokens;
    if (sample.text->Push(token.id, text)) {
      sample.stopped = true;
      sample.stream->Cancel();  // already ended when the engine watched the text too
    }
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

  const CallParts& parts_;
  const ModelContext& model_;
  ServerMetrics& metrics_;
  const std::string request_id_;
  Admission admission_;  // the tenant, and its slot until OnDone
  PreparedGeneration prepared_;
  const absl::Time start_;
  absl::Time deadline_ = absl::InfiniteFuture();
  std::shared_ptr<GenerateCall> self_;
  std::atomic<bool> pump_queued_{false};
  // gRPC orders StartWrite, StartWriteAndFinish and Finish before the OnWriteDone or OnDone they
  // lead to, but inside its library, where ThreadSanitizer cannot see it. Released before each
  // and acquired in those callbacks, this counter shows that order, so the worker that builds the
  // next message is not reported as racing the worker that built the last one.
  std::atomic<uint64_t> handoffs_{0};
  session::SaveReservation reservation_;  // held while this call will save a session
  int64_t history_tokens_ = 0;            // tokens in the session it started from

  std::mutex mutex_;
  bool submitted_ = false;        // the engine took the request; the samples' streams are set
  bool busy_ = false;             // a thread is in Step, or a write or save is in flight
  bool again_ = false;            // news arrived while busy
  bool finished_ = false;         // Finish has been called
  bool cancelled_ = false;        // the client cancelled (or its deadline passed)
  bool deadline_passed_ = false;  // OnCancel came at (or just before) the deadline
  bool broken_ = false;           // a write failed

  // Used by the one thread in Step (or the save) at a time.
  std::vector<Sample> samples_;
  size_t next_sample_ = 0;
  v1::GenerateResponse message_;
  bool request_id_sent_ = false;
  absl::Time last_tokens_at_ = absl::InfinitePast();
  grpc::StatusCode final_code_ = grpc::StatusCode::UNKNOWN;
};

// One Score call: submitted on the handler thread, answered by a worker once the engine is done.
class ScoreCall : public grpc::ServerUnaryReactor {
 public:
  ScoreCall(const CallParts& parts, std::string request_id, Admission admission,
            PreparedScore prepared, v1::ScoreResponse* response, absl::Time start)
      : parts_(parts),
        model_(*parts.model),
        metrics_(*parts.metrics),
        calls_(*parts.calls),
        workers_(*parts.workers),
        request_id_(std::move(request_id)),
        admission_(std::move(admission)),
        prepared_(std::move(prepared)),
        response_(response),
        start_(start) {}

  // Submits the request: at once, or after reading its session on a session thread.
  void Start(Engine& engine, absl::Time deadline) {
    if (prepared_.session_id.empty()) return Submit(engine, deadline);
    parts_.session_workers->Post([this, &engine, deadline] {
      absl::StatusOr<session::LoadedSession> loaded =
          parts_.sessions->Load({admission_.tenant(), prepared_.session_id});
      if (!loaded.ok()) {
        return Complete(ToGrpcStatus(absl::Status(
            loaded.status().code(), absl::StrCat("session_id: ", loaded.status().message()))));
      }
      prepared_.engine.initial_state = std::move(loaded->state);
      Submit(engine, deadline);
    });
  }

  void Submit(Engine& engine, absl::Time deadline) {
    ScoreRequest request = std::move(prepared_.engine);
    request.deadline = deadline;
    admission_.ChargeTokens(static_cast<int64_t>(request.tokens.size()));
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
    // The handle is let go here, on the worker, after its last use: dropped in OnDone on a gRPC
    // thread, the only order between this read and the scheduler freeing the handle would run
    // through gRPC's own (to ThreadSanitizer invisible) synchronization.
    std::shared_ptr<PendingScore> pending;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending = std::move(pending_);
    }
    absl::StatusOr<ScoreResult> result = pending->Wait();
    pending.reset();
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

  const CallParts& parts_;
  const ModelContext& model_;
  ServerMetrics& metrics_;
  CallTracker& calls_;
  WorkerPool& workers_;
  const std::string request_id_;
  const Admission admission_;  // the tenant, and its slot until the call is deleted
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

grpc::Status SessionsOff() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "sessions are off on this server (--session-store none)");
}

}  // namespace

InferenceService::InferenceService(Engine& engine, const EngineOptions& engine_options,
                                   ServedModel served, const CallParts& parts)
    : engine_(engine),
      engine_options_(engine_options),
      served_(std::move(served)),
      parts_(parts),
      model_(*parts.model),
      metrics_(*parts.metrics),
      calls_(*parts.calls) {}

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
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return new RefusedStream(ToGrpcStatus(admission.status()), metrics_, start);
  }
  absl::StatusOr<std::string> request_id = RequestIdOf(request->request_id(), model_.limits);
  if (!request_id.ok()) {
    return new RefusedStream(ToGrpcStatus(request_id.status()), metrics_, start);
  }
  absl::StatusOr<PreparedGeneration> prepared = PrepareGenerate(*request, model_);
  if (!prepared.ok()) return new RefusedStream(ToGrpcStatus(prepared.status()), metrics_, start);
  if (!prepared->session_id.empty() || !prepared->save_session_as.empty()) {
    if (parts_.sessions == nullptr) {
      return new RefusedStream(SessionsOff(), metrics_, start);
    }
  }
  if (!calls_.TryBegin()) return new RefusedStream(Unavailable(), metrics_, start);
  auto call = std::make_shared<GenerateCall>(parts_, *std::move(request_id), *std::move(admission),
                                             *std::move(prepared), start);
  return GenerateCall::Begin(std::move(call), engine_, DeadlineOf(*context));
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) return Answer(context, "Score", ToGrpcStatus(admission.status()), start);
  absl::StatusOr<std::string> request_id = RequestIdOf(request->request_id(), model_.limits);
  if (!request_id.ok()) return Answer(context, "Score", ToGrpcStatus(request_id.status()), start);
  absl::StatusOr<PreparedScore> prepared = PrepareScore(*request, model_);
  if (!prepared.ok()) return Answer(context, "Score", ToGrpcStatus(prepared.status()), start);
  if (!prepared->session_id.empty() && parts_.sessions == nullptr) {
    return Answer(context, "Score", SessionsOff(), start);
  }
  if (!calls_.TryBegin()) return Answer(context, "Score", Unavailable(), start);
  auto* call = new ScoreCall(parts_, *std::move(request_id), *std::move(admission),
                             *std::move(prepared), response, start);
  call->Start(engine_, DeadlineOf(*context));
  return call;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  const absl::Time start = absl::Now();
  const absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) return Answer(context, "Tokenize", ToGrpcStatus(admission.status()), start);
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
  const absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return Answer(context, "Detokenize", ToGrpcStatus(admission.status()), start);
  }
  absl::StatusOr<std::vector<int32_t>> ids = PrepareDetokenize(*request, model_);
  if (!ids.ok()) return Answer(context, "Detokenize", ToGrpcStatus(ids.status()), start);
  const bool skip_special = !request->has_skip_special_tokens() || request->skip_special_tokens();
  absl::StatusOr<std::string> text = model_.tokenizer->Decode(*ids, skip_special);
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
  const absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return Answer(context, "GetModelInfo", ToGrpcStatus(admission.status()), start);
  }
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
  limits.set_max_n(static_cast<uint32_t>(l.max_samples));
  limits.set_max_stop_total_bytes(static_cast<uint32_t>(l.max_stop_total_bytes));
  limits.set_max_stop_token_ids(static_cast<uint32_t>(l.max_stop_token_ids));
  limits.set_max_logit_bias(static_cast<uint32_t>(l.max_logit_bias));
  limits.set_max_request_id_bytes(static_cast<uint32_t>(l.max_request_id_bytes));
  limits.set_max_text_bytes(static_cast<uint64_t>(l.max_text_bytes));
  limits.set_max_detokenize_ids(static_cast<uint32_t>(l.max_detokenize_ids));
  limits.set_max_message_bytes(static_cast<uint64_t>(served_.max_message_bytes));
  limits.set_max_streams_per_connection(static_cast<uint32_t>(served_.max_streams_per_connection));
  response->set_model_fingerprint(served_.fingerprint);
  response->set_server_version(HGRN2_VERSION);
  return Answer(context, "GetModelInfo", grpc::Status::OK, start);
}

}  // namespace hgrn2::server
