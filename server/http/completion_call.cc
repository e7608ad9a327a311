// CompletionCall: a completions or chat answer on the request core (see completion_call.h).
//
// Flow control as in the gRPC Generate call: one write in flight; tokens that arrive meanwhile
// wait in the engine's streams and go out together (several events in one write), so a slow
// reader costs only its own stream. The pump runs on a stream worker (after on_news) or on the
// connection's strand (after a write), one at a time.
#include "server/http/completion_call.h"

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/core/generation.h"
#include "server/core/scoring.h"
#include "server/http/openai_errors.h"
#include "server/http/openai_responses.h"

namespace hgrn2::server {
namespace {

class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(const CallParts& parts, const OpenAiModel& model, std::shared_ptr<CallScope> scope,
                 std::shared_ptr<HttpExchange> exchange, CompletionPlan plan)
      : parts_(parts),
        model_(model),
        scope_(std::move(scope)),
        exchange_(std::move(exchange)),
        plan_(std::move(plan)),
        chat_(plan_.kind == ApiKind::kChat),
        id_(absl::StrCat(chat_ ? "chatcmpl-" : "cmpl-", scope_->request_id())),
        created_(absl::ToUnixSeconds(absl::Now())),
        jobs_(plan_.prompts.size()) {
    const size_t n = static_cast<size_t>(plan_.generation.num_samples);
    choices_.resize(plan_.prompts.size() * n);
    for (size_t i = 0; i < choices_.size(); ++i) choices_[i].index = static_cast<int32_t>(i);
  }

  // Starts every prompt's work; keeps itself alive until it has answered.
  void Begin() {
    self_ = shared_from_this();
    const std::weak_ptr<CompletionCall> weak = self_;
    int64_t prompt_tokens = 0;
    for (size_t p = 0; p < jobs_.size(); ++p) {
      const PlannedPrompt& prompt = plan_.prompts[p];
      prompt_tokens += static_cast<int64_t>(prompt.ids.size());
      if (plan_.echo && plan_.logprobs && prompt.ids.size() >= 2) {
        PreparedScore score;
        score.engine.tokens = prompt.ids;
        score.engine.num_top_logprobs = *plan_.logprobs;
        score.engine.priority = plan_.generation.engine.priority;
        score.scored_ids.assign(prompt.ids.begin() + 1, prompt.ids.end());
        score.unscored_tokens = 1;
        jobs_[p].scoring = Scoring::Start(
            parts_, scope_, std::move(score), [weak, p](absl::StatusOr<ScoreOutcome> outcome) {
              if (std::shared_ptr<CompletionCall> call = weak.lock()) {
                {
                  std::lock_guard<std::mutex> lock(call->mutex_);
                  call->jobs_[p].score = std::move(outcome);
                }
                call->Schedule();
              }
            });
      }
      if (plan_.generate) {
        PreparedGeneration generation = plan_.generation;
        generation.engine.prompt = prompt.ids;
        generation.prompt_tokens = static_cast<int32_t>(prompt.ids.size());
        jobs_[p].generation = Generation::Start(parts_, scope_, std::move(generation), [weak] {
          if (std::shared_ptr<CompletionCall> call = weak.lock()) call->Schedule();
        });
      }
    }
    prompt_tokens_ = prompt_tokens;
    scope_->outcome().prompt_tokens = prompt_tokens;
    exchange_->OnClientGone([weak] {
      if (std::shared_ptr<CompletionCall> call = weak.lock()) call->CancelAll();
    });
    {
      std::lock_guard<std::mutex> lock(mutex_);
      started_ = true;
    }
    Pump();
  }

 private:
  struct Job {
    std::shared_ptr<Generation> generation;             // none: echo only
    std::shared_ptr<Scoring> scoring;                   // echo with logprobs
    std::optional<absl::StatusOr<ScoreOutcome>> score;  // guarded by mutex_
    // Pump only.
    bool echo_taken = false;
    bool ended = false;
  };

  // One answer choice (prompt p, sample s at p * n + s). Pump only.
  struct Choice {
    int32_t index = 0;
    std::string text;  // the whole answer's
    std::optional<TokenTexts> texts;
    LegacyLogprobs legacy;      // the whole answer's (completions)
    Json chat = Json::array();  // the whole answer's (chat)
    int64_t offset = 0;         // code points of the token texts so far (text_offset)
    bool role_sent = false;
    std::optional<SampleFinish> finish;
    std::optional<int32_t> last_token;
  };

  // Any thread: queues one Pump on a stream worker unless one is queued.
  void Schedule() {
    if (pump_queued_.exchange(true)) return;
    parts_.workers->Post([self = shared_from_this()] {
      self->pump_queued_.store(false);
      self->Pump();
    });
  }

  void CancelAll() {
    for (Job& job : jobs_) {
      if (job.generation) job.generation->Cancel(/*deadline_passed=*/false);
      if (job.scoring) job.scoring->Cancel();
    }
  }

  void Pump() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (busy_ || finished_ || !started_) {
          again_ = true;
          return;
        }
        busy_ = true;
        again_ = false;
      }
      if (Step()) return;  // a write or the answer is on its way
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!again_) return;
    }
  }

  void OnWriteDone(bool ok) {
    if (!ok) CancelAll();  // the client is gone: the engine requests stop; their ends follow
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    }
    Pump();
  }

  // Takes what the prompts' work has; sends it (stream) or the whole answer once all is done.
  // False when there was nothing to send.
  bool Step() {
    std::string events;
    bool all_ended = true;
    absl::Status failed;
    for (size_t p = 0; p < jobs_.size() && failed.ok(); ++p) {
      Job& job = jobs_[p];
      if (!job.echo_taken) {
        std::optional<absl::StatusOr<ScoreOutcome>> score;
        if (job.scoring) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (!job.score) {
            all_ended = false;
            continue;  // its generation's text waits behind the echoed prompt
          }
          score = std::move(job.score);
          job.score.reset();
        }
        if (score && !score->ok()) {
          failed = score->status();
          break;
        }
        TakeEcho(p, score ? &**score : nullptr, events);
        job.echo_taken = true;
      }
      if (!job.generation || job.ended) continue;
      while (true) {
        Generation::Event event = job.generation->Next();
        if (!event.update && !event.end) break;
        if (event.update) TakeUpdate(p, *event.update, events);
        if (event.end) {
          job.ended = true;
          if (!event.end->ok()) failed = *event.end;
          break;
        }
      }
      if (!job.ended) all_ended = false;
    }
    if (!failed.ok()) {
      CancelAll();
      Finish(failed, std::move(events));
      return true;
    }
    if (all_ended) {
      Finish(absl::OkStatus(), std::move(events));
      return true;
    }
    if (!plan_.stream || events.empty()) return false;
    SendEvents(std::move(events));
    return true;
  }

  void SendEvents(std::string events) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!stream_started_) {
      headers.emplace_back("X-Request-Id", scope_->request_id());
      stream_started_ = true;
    }
    exchange_->Send(
        std::move(events), [self = shared_from_this()](bool ok) { self->OnWriteDone(ok); },
        std::move(headers));
  }

  // The answer, or the failure: the scope ends first (the tenant's slot is free before the
  // client hears), then the last write.
  void Finish(const absl::Status& status, std::string events) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    scope_->End(status);
    if (plan_.stream && (stream_started_ || status.ok())) {
      if (!status.ok()) {
        // The header is out: the error goes as an event, as vLLM sends it.
        events += SseEvent(ErrorBody(status));
      } else if (plan_.include_usage) {
        Json usage = Header(chat_ ? "chat.completion.chunk" : "text_completion");
        usage["choices"] = Json::array();
        usage["usage"] = Usage();
        events += SseEvent(usage);
      }
      events += "data: [DONE]\n\n";
      std::vector<std::pair<std::string, std::string>> headers;
      if (!stream_started_) headers.emplace_back("X-Request-Id", scope_->request_id());
      stream_started_ = true;
      exchange_->Send(
          std::move(events),
          [self = shared_from_this()](bool) {
            self->exchange_->End();
            self->self_.reset();
          },
          std::move(headers));
      return;
    }
    HttpResponse response = status.ok() ? WholeAnswer() : ErrorResponse(status);
    response.headers.emplace_back("X-Request-Id", scope_->request_id());
    exchange_->Respond(std::move(response));
    self_.reset();
  }

  Json Header(const char* object) const {
    Json out = {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_.name}};
    if (!model_.fingerprint.empty()) out["system_fingerprint"] = model_.fingerprint;
    return out;
  }

  Json Usage() const {
    int64_t completion = 0;
    for (const Choice& choice : choices_) {
      if (choice.finish) completion += choice.finish->generated_tokens;
    }
    return UsageJson(prompt_tokens_, completion, cached_tokens_);
  }

  // The echoed prompt of prompt p, for each of its samples (completions only).
  void TakeEcho(size_t p, const ScoreOutcome* score, std::string& events) {
    const PlannedPrompt& prompt = plan_.prompts[p];
    const Tokenizer* tokenizer = model_.context->tokenizer;
    const size_t n = static_cast<size_t>(plan_.generation.num_samples);
    std::string text;
    LegacyLogprobs logprobs;
    int64_t offset = 0;
    if (plan_.echo) {
      text = prompt.text;
      if (text.empty() && tokenizer != nullptr && !prompt.ids.empty()) {
        absl::StatusOr<std::string> decoded = tokenizer->Decode(prompt.ids, false);
        if (decoded.ok()) text = *std::move(decoded);
      }
      if (plan_.logprobs) {
        TokenTexts texts(tokenizer, {});
        for (size_t i = 0; i < prompt.ids.size(); ++i) {
          std::optional<float> logprob;
          absl::Span<const TokenLogprob> top;
          if (i > 0 && score != nullptr) {
            logprob = score->tokens[i - 1].logprob;
            top = score->tokens[i - 1].top;
          }
          TokenEntry entry = MakeTokenEntry(texts, prompt.ids[i], logprob, top, i > 0);
          logprobs.Add(entry, offset);
          offset += CodePoints(entry.text);
        }
      }
    }
    for (size_t s = 0; s < n; ++s) {
      Choice& choice = choices_[p * n + s];
      choice.offset = offset;
      if (plan_.logprobs) choice.texts.emplace(tokenizer, prompt.ids);
      if (!plan_.echo) continue;
      if (!plan_.generate) {
        // Only the prompt: it ends here, as vLLM ends it.
        choice.finish.emplace();
        choice.finish->reason = FinishReason::kLength;
        choice.finish->prompt_tokens = static_cast<int64_t>(prompt.ids.size());
      }
      if (plan_.stream) {
        Json chunk = Header("text_completion");
        Json c = {{"index", choice.index},
                  {"text", text},
                  {"logprobs", plan_.logprobs ? logprobs.ToJson() : Json(nullptr)},
                  {"finish_reason", choice.finish ? Json("length") : Json(nullptr)}};
        chunk["choices"] = Json::array({std::move(c)});
        events += SseEvent(chunk);
      } else {
        choice.text = text;
        choice.legacy = logprobs;
      }
    }
  }

  // One sample's news.
  void TakeUpdate(size_t p, const SampleUpdate& update, std::string& events) {
    const size_t n = static_cast<size_t>(plan_.generation.num_samples);
    Choice& choice = choices_[p * n + static_cast<size_t>(update.index)];
    LegacyLogprobs legacy;
    Json chat = Json::array();
    if (plan_.logprobs) {
      for (const SampledToken& token : update.tokens) {
        TokenEntry entry = MakeTokenEntry(*choice.texts, token.id, token.logprob, token.top, true);
        if (chat_) {
          chat.push_back(ChatLogprob(entry));
        } else {
          legacy.Add(entry, choice.offset);
          choice.offset += CodePoints(entry.text);
        }
      }
    }
    if (!update.tokens.empty()) choice.last_token = update.tokens.back().id;
    delivered_tokens_ += static_cast<int64_t>(update.tokens.size());
    if (update.finish) {
      choice.finish = update.finish;
      if (update.index == 0) cached_tokens_ += update.finish->cached_prompt_tokens;
    }
    if (!plan_.stream) {
      choice.text += update.text;
      if (plan_.logprobs) {
        if (chat_) {
          for (Json& entry : chat) choice.chat.push_back(std::move(entry));
        } else {
          choice.legacy.Extend(legacy);
        }
      }
      return;
    }
    if (chat_) {
      if (!choice.role_sent) {
        choice.role_sent = true;
        events +=
            ChatChunk(choice.index, Json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr);
      }
      if (!plan_.logprobs && !update.text.empty()) {
        events += TextEvent(choice.index, update.text);
      } else if (!update.text.empty() || !chat.empty()) {
        events +=
            ChatChunk(choice.index, Json{{"content", update.text}},
                      plan_.logprobs ? Json{{"content", std::move(chat)}} : Json(nullptr), nullptr);
      }
      if (update.finish) {
        events += ChatChunk(choice.index, Json::object(), nullptr, &choice);
      }
      return;
    }
    if (!plan_.logprobs && !update.finish) {
      events += TextEvent(choice.index, update.text);
      return;
    }
    Json chunk = Header("text_completion");
    Json c = {{"index", choice.index},
              {"text", update.text},
              {"logprobs", plan_.logprobs ? legacy.ToJson() : Json(nullptr)},
              {"finish_reason",
               update.finish ? Json(FinishReasonText(update.finish->reason)) : Json(nullptr)}};
    if (update.finish) {
      c["stop_reason"] = StopReason(choice);
      AddRevisions(*update.finish, c);
    }
    chunk["choices"] = Json::array({std::move(c)});
    if (plan_.continuous_usage)
      chunk["usage"] = UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_);
    events += SseEvent(chunk);
  }

  // The stream's common event, a text delta without logprobs or a finish, written without a JSON
  // tree (the hot path: one per update of every stream): the bytes SseEvent writes for it.
  std::string TextEvent(int32_t index, const std::string& text) {
    if (event_prefix_.empty()) {
      // `data: {"id":...,"model":...,"choices":[{"index":`
      std::string header = Header(chat_ ? "chat.completion.chunk" : "text_completion").dump();
      header.pop_back();
      event_prefix_ = absl::StrCat("data: ", header, R"(,"choices":[{"index":)");
    }
    std::string out = event_prefix_;
    absl::StrAppend(&out, index, chat_ ? R"(,"delta":{"content":)" : R"(,"text":)",
                    Json(text).dump(-1, ' ', false, Json::error_handler_t::replace),
                    chat_ ? "}" : "", R"(,"logprobs":null,"finish_reason":null}])");
    if (plan_.continuous_usage) {
      absl::StrAppend(&out, R"(,"usage":)",
                      UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_).dump());
    }
    out += "}\n\n";
    return out;
  }

  std::string ChatChunk(int32_t index, Json delta, Json logprobs, const Choice* finished) const {
    Json chunk = Header("chat.completion.chunk");
    Json c = {
        {"index", index},
        {"delta", std::move(delta)},
        {"logprobs", std::move(logprobs)},
        {"finish_reason",
         finished != nullptr ? Json(FinishReasonText(finished->finish->reason)) : Json(nullptr)}};
    if (finished != nullptr) {
      c["stop_reason"] = StopReason(*finished);
      AddRevisions(*finished->finish, c);
    }
    chunk["choices"] = Json::array({std::move(c)});
    if (plan_.continuous_usage) {
      chunk["usage"] = UsageJson(prompt_tokens_, delivered_tokens_, cached_tokens_);
    }
    return SseEvent(chunk);
  }

  // With sessions, the revisions the gRPC API reports: the one resumed and the one saved.
  static void AddRevisions(const SampleFinish& finish, Json& choice) {
    if (finish.resumed_revision != 0) choice["resumed_revision"] = finish.resumed_revision;
    if (finish.saved_revision != 0) choice["saved_revision"] = finish.saved_revision;
  }

  // vLLM's stop_reason: the stop string, or the stop token id; null for EOS and length.
  static Json StopReason(const Choice& choice) {
    const SampleFinish& finish = *choice.finish;
    if (!finish.stop_string.empty()) return finish.stop_string;
    if (finish.reason == FinishReason::kStop && choice.last_token) return *choice.last_token;
    return nullptr;
  }

  HttpResponse WholeAnswer() const {
    Json out = Header(chat_ ? "chat.completion" : "text_completion");
    Json choices = Json::array();
    for (const Choice& choice : choices_) {
      const char* reason = choice.finish ? FinishReasonText(choice.finish->reason) : "length";
      Json c = {{"index", choice.index}};
      if (chat_) {
        c["message"] = Json{{"role", "assistant"}, {"content", choice.text}};
        c["logprobs"] = plan_.logprobs ? Json{{"content", choice.chat}} : Json(nullptr);
      } else {
        c["text"] = choice.text;
        c["logprobs"] = plan_.logprobs ? choice.legacy.ToJson() : Json(nullptr);
      }
      c["finish_reason"] = reason;
      c["stop_reason"] = choice.finish ? StopReason(choice) : Json(nullptr);
      if (choice.finish) AddRevisions(*choice.finish, c);
      choices.push_back(std::move(c));
    }
    out["choices"] = std::move(choices);
    out["usage"] = Usage();
    HttpResponse response;
    response.body = out.dump(-1, ' ', false, Json::error_handler_t::replace);
    return response;
  }

  const CallParts& parts_;
  const OpenAiModel& model_;
  const std::shared_ptr<CallScope> scope_;
  const std::shared_ptr<HttpExchange> exchange_;
  const CompletionPlan plan_;
  const bool chat_;
  const std::string id_;
  const int64_t created_;
  std::shared_ptr<CompletionCall> self_;  // from Begin until the answer is on its way
  std::atomic<bool> pump_queued_{false};

  std::mutex mutex_;
  std::vector<Job> jobs_;  // sized once; each job's `score` guarded by mutex_
  bool started_ = false;   // guarded by mutex_: Begin has started every job
  bool busy_ = false;      // guarded by mutex_: a thread is in Step, or a write is in flight
  bool again_ = false;     // guarded by mutex_: news arrived while busy
  bool finished_ = false;  // guarded by mutex_: the answer (or failure) is on its way

  // Pump only.
  std::vector<Choice> choices_;
  int64_t prompt_tokens_ = 0;
  int64_t cached_tokens_ = 0;
  int64_t delivered_tokens_ = 0;  // tokens handed out so far, every choice's
  std::string event_prefix_;      // TextEvent's start, made once
  bool stream_started_ = false;
};

}  // namespace

void StartCompletionCall(const CallParts& parts, const OpenAiModel& model,
                         std::shared_ptr<CallScope> scope, std::shared_ptr<HttpExchange> exchange,
                         CompletionPlan plan) {
  std::make_shared<CompletionCall>(parts, model, std::move(scope), std::move(exchange),
                                   std::move(plan))
      ->Begin();
}

}  // namespace hgrn2::server
