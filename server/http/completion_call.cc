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
#include "server/http/completion_answer.h"
#include "server/http/openai_errors.h"
#include "server/http/openai_responses.h"

namespace hgrn2::server {
namespace {

class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(const CallParts& parts, const OpenAiModel& model, std::shared_ptr<CallScope> scope,
                 std::shared_ptr<HttpExchange> exchange, CompletionPlan plan)
      : parts_(parts),
        scope_(std::move(scope)),
        exchange_(std::move(exchange)),
        plan_(std::move(plan)),
        jobs_(plan_.prompts.size()),
        answer_(model, plan_, scope_->request_id()) {}

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
    answer_.SetPromptTokens(prompt_tokens);
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
        answer_.TakeEcho(p, score ? &**score : nullptr, events);
        job.echo_taken = true;
      }
      if (!job.generation || job.ended) continue;
      while (true) {
        Generation::Event event = job.generation->Next();
        if (!event.update && !event.end) break;
        if (event.update) answer_.TakeUpdate(p, *event.update, events);
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
        events += answer_.UsageEvent();
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
    HttpResponse response = status.ok() ? answer_.Whole() : ErrorResponse(status);
    response.headers.emplace_back("X-Request-Id", scope_->request_id());
    exchange_->Respond(std::move(response));
    self_.reset();
  }

  const CallParts& parts_;
  const std::shared_ptr<CallScope> scope_;
  const std::shared_ptr<HttpExchange> exchange_;
  const CompletionPlan plan_;
  std::shared_ptr<CompletionCall> self_;  // from Begin until the answer is on its way
  std::atomic<bool> pump_queued_{false};

  std::mutex mutex_;
  std::vector<Job> jobs_;  // sized once; each job's `score` guarded by mutex_
  bool started_ = false;   // guarded by mutex_: Begin has started every job
  bool busy_ = false;      // guarded by mutex_: a thread is in Step, or a write is in flight
  bool again_ = false;     // guarded by mutex_: news arrived while busy
  bool finished_ = false;  // guarded by mutex_: the answer (or failure) is on its way

  // Pump only.
  CompletionAnswer answer_;
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
