// The requests the engine takes and the handles they are read through: generation and scoring
// requests, a session's state, the token stream and the pending score. No proto types.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"

namespace hgrn2 {

// Assigned by the engine, unique for its lifetime, never 0.
using RequestId = uint64_t;

// A sequence's state between two requests (a session): the pool slot's bytes (StatePool layout,
// Engine::state_bytes() of them) after every token but the last, and that last token, not yet
// fed. Keeping the last token out means a resumed request starts by feeding it, so resuming
// gives exactly the tokens one uninterrupted run would.
//
// The bytes live in one of two places; read them through view(). A state the engine hands out
// (a final state) or one a HostStatePool lends (a session loaded to resume) holds them in
// `pinned`: host memory the device copies at full speed (page-locked on CUDA), so the scheduler
// thread copies a slot straight into or out of it, with no copy through a staging buffer. A state
// built by its user holds them in `bytes` (any memory; the scheduler stages it).
struct SequenceState {
  std::vector<std::byte> bytes;  // used when pinned_lease is null
  int32_t pending_token = 0;
  // With pinned_lease set: the state's bytes, valid while pinned_lease is held; the lease gives
  // the memory back to its pool when the last copy of it goes (it holds the pool, and the pool
  // does not need the engine or its backend: the state may outlive both). A copy of the state
  // shares the memory, as it shares the lease.
  absl::Span<std::byte> pinned;
  std::shared_ptr<void> pinned_lease;

  absl::Span<const std::byte> view() const {
    return pinned_lease != nullptr ? absl::Span<const std::byte>(pinned)
                                   : absl::MakeConstSpan(bytes);
  }

  // Empty, the memory of `bytes` kept (for a Recycler); pinned memory goes back to its pool.
  void Clear() {
    bytes.clear();
    pending_token = 0;
    pinned = {};
    pinned_lease.reset();
  }
};

struct GenerationRequest {
  // Fed after `initial_state`'s pending token; may be empty only when there is an initial state
  // (or a parked one to resume). Ids in [0, vocab_size).
  std::vector<int32_t> prompt;
  SamplingParams sampling;  // give a seed for reproducible draws (see SamplingParams)
  StoppingParams stopping;
  // A stop condition the engine cannot see (the server's stop strings): called on the scheduler
  // thread with each sampled token, in order, when no other condition ended the request; true
  // ends it after that token with FinishReason::kStop (the token is delivered, and a final state
  // is one of exactly the tokens delivered). Must return quickly. Not with GenerateMany.
  std::function<bool(const SampledToken&)> stops_after;
  int32_t priority = 0;                          // higher first; first come, first served within
  absl::Time deadline = absl::InfiniteFuture();  // past it: DEADLINE_EXCEEDED
  // Start from this state instead of a zeroed one. The sampler sees only this request: its
  // penalties count this prompt and output, and its seeded draws start from counter 0, so a
  // resumed request gives the tokens of an uninterrupted run exactly when it samples greedily
  // without penalties (the state itself resumes exactly).
  std::shared_ptr<const SequenceState> initial_state;
  // Start from the state parked on the device under this key (see park_as), which is faster than
  // initial_state (no copy). When nothing is parked under it any more (its slot was needed), the
  // request starts from initial_state if given and otherwise ends with NOT_FOUND.
  std::string resume_parked;
  // Hand back the final state in GenerationEnd (to save the session).
  bool return_final_state = false;
  // After an OK finish, keep the final state on the device under this key until its slot is
  // needed (least recently parked goes first), replacing whatever was parked under it.
  std::string park_as;
  // Called on the scheduler thread each time new tokens or the end are ready to read. It must
  // return quickly and must not block (a gRPC reactor starts a write or remembers to); it may call
  // the stream's Poll(), Generate, Score and Cancel, never Stop(). Not called again after the
  // call that reports the end.
  std::function<void()> on_update;
};

struct GenerationEnd {
  // OK, or CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE (the engine stopped), NOT_FOUND (a parked
  // state is gone), INTERNAL (a device failure).
  absl::Status status;
  FinishReason finish_reason = FinishReason::kNone;  // kNone unless status is OK
  int64_t prompt_tokens = 0;                         // tokens fed before the first generated one
  int64_t generated_tokens = 0;                      // all of them, read or not
  // From submission to the first admission (a slot and a start in prefill).
  absl::Duration queue_time = absl::ZeroDuration();
  // Prompt tokens whose state came from the prefix cache instead of being fed (counted in
  // prompt_tokens too): P - 1 for a cached prompt P that prefixes this one.
  int64_t cached_prompt_tokens = 0;
  std::shared_ptr<const SequenceState> final_state;  // with return_final_state and OK status
};

// What a stream has for its reader: the tokens not read before, in order, and the end once the
// request has ended (on the update with its last tokens and on every later one).
struct StreamUpdate {
  std::vector<SampledToken> tokens;
  std::optional<GenerationEnd> end;
};

// One request's handle, shared by its client and the scheduler. Any thread may call it; the
// engine may be destroyed before it (the request then ends with UNAVAILABLE).
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  RequestId id() const { return id_; }
  // Asks the scheduler to end the request with CANCELLED; it does within one iteration, freeing
  // its slot. No effect once the request has ended.
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancel_requested() const { return cancelled_.load(std::memory_order_relaxed); }

 protected:
  explicit RequestHandle(RequestId id) : id_(id) {}

 private:
  const RequestId id_;
  std::atomic<bool> cancelled_{false};
};

// The tokens of one generation request as they are produced.
// Thread-safety: any thread; the scheduler writes, one or more readers read (each token is
// returned once, to whichever reader takes it).
class GenerationStream : public RequestHandle {
 public:
  GenerationStream(RequestId id, std::function<void()> on_update)
      : RequestHandle(id), on_update_(std::move(on_update)) {}

  // Blocks until there is an unread token or the end. An update with the end comes only once
  // on_update has returned from the call that reported it (as from Wait()).
  StreamUpdate Next();
  // Returns at once with whatever there is (perhaps nothing). The end may be seen here while
  // on_update is still running (on_update itself polls): call Wait() before freeing what
  // on_update uses.
  StreamUpdate Poll();
  // Blocks until the end and until on_update has returned from the call that reported it;
  // returns every unread token and the end. Afterwards the scheduler no longer touches anything
  // on_update uses. Not from inside on_update.
  StreamUpdate Wait();

  // The scheduler's side: appends tokens and, with `end`, ends the stream, then calls on_update.
  // Called by the scheduler thread only; nothing after an end.
  void Deliver(absl::Span<const SampledToken> tokens, std::optional<GenerationEnd> end);

 private:
  StreamUpdate TakeLocked();

  std::function<void()> on_update_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<SampledToken> unread_;
  std::optional<GenerationEnd> end_;
  bool end_reported_ = false;  // end_ is set and on_update has returned from reporting it
};

struct ScoreRequest {
  // At least 2 ids in [0, vocab_size); the first is context only. With initial_state, at least 1,
  // and every one is scored (the state's pending token is their context).
  std::vector<int32_t> tokens;
  // Start from this state (a session) instead of a zeroed one.
  std::shared_ptr<const SequenceState> initial_state;
  // Most probable alternatives to report at every scored position, 0 .. kMaxTopLogprobs.
  int32_t num_top_logprobs = 0;
  static constexpr int32_t kMaxTopLogprobs = 20;
  int32_t priority = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // Called once on the scheduler thread when the result is ready; must return quickly.
  std::function<void()> on_done;
};

// What a scoring request gives, for t = 1 .. n-1 (one entry per scored token).
struct ScoreResult {
  std::vector<float> logprobs;  // log p(tokens[t] | tokens[0..t))
  // tokens[t] held the largest logit at its position (ties count).
  std::vector<bool> is_argmax;
  // With num_top_logprobs > 0: the most probable tokens at each position, by logprob
  // (descending) then id; otherwise empty.
  std::vector<std::vector<TokenLogprob>> top;
  absl::Duration queue_time = absl::ZeroDuration();  // submission to admission
};

// The result of a scoring request, or why not.
// Thread-safety: any thread.
class PendingScore : public RequestHandle {
 public:
  PendingScore(RequestId id, std::function<void()> on_done)
      : RequestHandle(id), on_done_(std::move(on_done)) {}

  // Blocks until the result is there and on_done has returned. Not from inside on_done.
  absl::StatusOr<ScoreResult> Wait();
  // The result if it is there (on_done may still be running).
  std::optional<absl::StatusOr<ScoreResult>> Poll();

  // The scheduler's side (scheduler thread only, once).
  void Finish(absl::StatusOr<ScoreResult> result);

 private:
  std::function<void()> on_done_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<absl::StatusOr<ScoreResult>> result_;
  bool done_reported_ = false;  // result_ is set and on_done has returned
};

}  // namespace hgrn2
