// Scoring: session read, submission, and the result in the front ends' terms.
#include "server/core/scoring.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {

std::shared_ptr<Scoring> Scoring::Start(const CallParts& parts, std::shared_ptr<CallScope> scope,
                                        PreparedScore prepared, Done done) {
  std::shared_ptr<Scoring> scoring(
      new Scoring(parts, std::move(scope), std::move(prepared), std::move(done)));
  scoring->scope_->outcome().session_id = scoring->prepared_.session_id;
  scoring->scope_->outcome().prompt_tokens =
      static_cast<int64_t>(scoring->prepared_.engine.tokens.size());
  if (scoring->prepared_.session_id.empty()) {
    scoring->Submit();
  } else if (parts.sessions == nullptr) {
    scoring->done_(SessionsOff());
  } else {
    parts.session_workers->Post([scoring] {
      absl::StatusOr<session::LoadedSession> loaded = scoring->parts_.sessions->Load(
          {scoring->scope_->tenant(), scoring->prepared_.session_id});
      if (!loaded.ok()) {
        return scoring->done_(absl::Status(
            loaded.status().code(), absl::StrCat("session_id: ", loaded.status().message())));
      }
      scoring->prepared_.engine.initial_state = std::move(loaded->state);
      scoring->session_revision_ = loaded->revision;
      scoring->Submit();
    });
  }
  return scoring;
}

void Scoring::Submit() {
  ScoreRequest request = std::move(prepared_.engine);
  request.deadline = scope_->deadline();
  scope_->ChargeTokens(static_cast<int64_t>(request.tokens.size()));
  // The engine calls on_done exactly once (also when it stops); it keeps this alive till then.
  request.on_done = [self = shared_from_this()] { self->Arrive(); };
  absl::StatusOr<std::shared_ptr<PendingScore>> pending = parts_.engine->Score(std::move(request));
  if (!pending.ok()) return done_(pending.status());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ = *std::move(pending);
    if (cancelled_) pending_->Cancel();
  }
  Arrive();
}

void Scoring::Cancel() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_ = true;
  if (pending_) pending_->Cancel();
}

void Scoring::Arrive() {
  if (arrivals_.fetch_add(1) == 1) {
    parts_.workers->Post([self = shared_from_this()] { self->Answer(); });
  }
}

void Scoring::Answer() {
  // The handle is let go here, on the worker, after its last use (it holds the engine's
  // on_done, which holds this).
  std::shared_ptr<PendingScore> pending;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending = std::move(pending_);
  }
  absl::StatusOr<ScoreResult> result = pending->Wait();
  pending.reset();
  if (!result.ok()) {
    return done_(absl::IsUnavailable(result.status())
                     ? absl::UnavailableError("the server shut down before the scoring finished")
                     : result.status());
  }
  parts_.metrics->RecordQueueTime(absl::ToDoubleSeconds(result->queue_time));
  ScoreOutcome outcome;
  const size_t scored = prepared_.scored_ids.size();
  const size_t first = result->logprobs.size() - scored;
  outcome.tokens.resize(scored);
  for (size_t i = 0; i < scored; ++i) {
    ScoredToken& token = outcome.tokens[i];
    token.id = prepared_.scored_ids[i];
    token.logprob = result->logprobs[first + i];
    outcome.total_logprob += token.logprob;
    outcome.is_greedy = outcome.is_greedy && result->is_argmax[first + i];
    if (!result->top.empty()) token.top = std::move(result->top[first + i]);
  }
  outcome.unscored_tokens = prepared_.unscored_tokens;
  outcome.context_tokens = prepared_.context_tokens;
  outcome.session_revision = session_revision_;
  done_(std::move(outcome));
}

}  // namespace hgrn2::server
