// Scoring: one scoring request on its way through the engine, for any front end: the session
// read, the request submitted, and its result put in the front end's terms (log-probabilities of
// the scored tokens, their alternatives, whether the text is the greedy one).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/core/call_parts.h"
#include "server/core/call_scope.h"
#include "server/core/prepared_request.h"

namespace hgrn2::server {

struct ScoredToken {
  int32_t id = 0;
  float logprob = 0.0f;           // log p(id | everything before it)
  std::vector<TokenLogprob> top;  // the most probable tokens there, when asked for
};

struct ScoreOutcome {
  std::vector<ScoredToken> tokens;  // one per scored token, in order
  double total_logprob = 0.0;
  bool is_greedy = true;  // every scored token held the largest logit at its position
  int32_t unscored_tokens = 0;
  int32_t context_tokens = 0;
  uint64_t session_revision = 0;  // of the session scored on (0: none)
};

// Thread-safety: Start and Cancel from any thread.
class Scoring : public std::enable_shared_from_this<Scoring> {
 public:
  using Done = std::function<void(absl::StatusOr<ScoreOutcome>)>;
  // Starts `prepared` for the call in `scope`: at once, or after reading its session on a
  // session thread. `done` is called once, from any thread (before Start returns when the request
  // is refused at once), with the outcome or why there is none (FAILED_PRECONDITION when it names
  // a session and sessions are off, UNAVAILABLE when the server shut down first).
  static std::shared_ptr<Scoring> Start(const CallParts& parts, std::shared_ptr<CallScope> scope,
                                        PreparedScore prepared, Done done);
  // The client went away: the engine request is cancelled (done then reports CANCELLED).
  void Cancel();

 private:
  Scoring(const CallParts& parts, std::shared_ptr<CallScope> scope, PreparedScore prepared,
          Done done)
      : parts_(parts),
        scope_(std::move(scope)),
        prepared_(std::move(prepared)),
        done_(std::move(done)) {}
  void Submit();
  // The second of (the engine is done, Submit has the handle) answers, on a worker.
  void Arrive();
  void Answer();

  const CallParts& parts_;
  const std::shared_ptr<CallScope> scope_;
  PreparedScore prepared_;
  uint64_t session_revision_ = 0;  // of the session it conditions on
  const Done done_;
  std::atomic<int> arrivals_{0};
  std::mutex mutex_;
  std::shared_ptr<PendingScore> pending_;
  bool cancelled_ = false;
};

}  // namespace hgrn2::server
