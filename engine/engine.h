// The engine's C++ API, the one the server calls: submit generation and scoring requests, read
// their tokens as they come, cancel them, and read the counters to export. No proto types.
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
#include "engine/forward_pass.h"
#include "engine/model.h"
#include "engine/sampler.h"

namespace hgrn2 {

class Scheduler;
struct Sequence;

// Assigned by the engine, unique for its lifetime, never 0.
using RequestId = uint64_t;

// A sequence's state between two requests (a session): the pool slot's bytes (StatePool layout,
// Engine::state_bytes() of them) after every token but the last, and that last token, not yet
// fed. Keeping the last token out means a resumed request starts by feeding it, so resuming
// gives exactly the tokens one uninterrupted run would.
struct SequenceState {
  std::vector<std::byte> bytes;
  int32_t pending_token = 0;
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

// One iteration of the scheduler that ran the model, for metrics.
struct StepReport {
  double seconds = 0.0;        // wall time of the iteration's model work
  int64_t prefill_tokens = 0;  // prompt tokens fed by prefill (generation and scoring)
  // Sequences advanced by one token in the decode step (with the prefix cache on, or in
  // GenerateMany, a prompt's last token is fed here too).
  int64_t decode_sequences = 0;
};

struct EngineOptions {
  // Sequences advanced together (generation and scoring), the decode batch; a device slot each.
  // 64 serves the CPU and a GPU alike; a GPU with room raises it (B=256 for the 1.3B model is
  // 6 GiB of state).
  int32_t max_running = 64;
  // Device state slots; 0 = max_running. Slots beyond max_running hold parked states longer.
  int32_t num_slots = 0;
  // Prompt tokens (generation and scoring) advanced per iteration, beside the decode step: small
  // enough that decoding sequences wait one short prefill per token, large enough that prefill
  // runs as matrix products. 512 is about 2 ms of prefill for the 1.3B model on an H100.
  int64_t prefill_token_budget = 512;
  // Requests waiting for admission; beyond it Generate and Score return RESOURCE_EXHAUSTED.
  int32_t max_queued = 1024;
  // Host slots for swapped-out sequences, allocated (page-locked) once: 16 are 384 MiB for the
  // 1.3B model. 0 turns preemption off.
  int32_t swap_slots = 16;
  // Longest prompt (or scored text) accepted, in tokens. The state does not grow with length, so
  // this only bounds the time one request can hold a slot in prefill.
  int64_t max_prompt_tokens = 65536;
  // The pass's chunk size; kBackendDefault = the backend's faster form.
  int32_t prefill_chunk_size = ForwardPass::Options::kBackendDefault;
  // Recurrent states in float32, or bf16 (CUDA backend; half the memory and traffic).
  DType state_dtype = DType::kF32;
  // Called on the scheduler thread after each iteration that ran the model; must return quickly
  // and not call into the engine.
  std::function<void(const StepReport&)> on_step;
  // Prefix state cache: device memory for the states at the ends of recent prompts (LRU), so a
  // prompt that extends one of them (or equals it) starts from a device copy of its state and
  // feeds only the rest. 0 = off. Rounded down to whole states; each takes one state slot beside
  // num_slots. Only generation requests from a zero state use and fill it (not initial_state,
  // resume_parked or scoring). With it on, such a request's prefill feeds its prompt but the last
  // token (the state then cached), and the decode step of the same iteration feeds the last
  // token and samples the first: on the CPU backend (token-by-token prefill, batch-invariant
  // GEMMs) results are bit for bit those with it off; on CUDA, to rounding.
  int64_t prefix_cache_bytes = 0;
  // Largest n of GenerateMany.
  int32_t max_samples = 16;
  // Decode batch sizes run once at start-up, so that no request waits while a new size's step is
  // recorded and its matrix products tuned (10-50 ms each for the 1.3B model on an H200):
  // kWarmAllBatches = every size up to max_running when the backend records steps (CUDA graphs)
  // and none otherwise; N = sizes 1..min(N, max_running); 0 = none.
  static constexpr int32_t kWarmAllBatches = -1;
  int32_t warm_decode_batches = kWarmAllBatches;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// A snapshot of the counters, consistent as of the end of one iteration (queued: of the call).
struct EngineStats {
  int64_t queued = 0;   // waiting for a first admission
  int64_t running = 0;  // in prefill or decode
  int64_t swapped = 0;  // preempted, state in host memory
  int64_t parked = 0;   // finished, state kept on the device for its session
  int64_t free_slots = 0;
  int64_t num_slots = 0;
  int64_t free_swap_slots = 0;
  int64_t steps = 0;  // iterations that ran the model
  // Prompt tokens taken in, generation and scoring, once per request (GenerateMany included):
  // fed by prefill or by the decode step, or taken from the prefix cache.
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;   // sampled
  int64_t requests_finished = 0;  // ended with any status
  int64_t preemptions = 0;
  // Prefix state cache.
  int64_t prefix_cache_entries = 0;
  int64_t prefix_cache_capacity = 0;  // entries it can hold
  // Requests that started from a cached state; those that looked and found none. A request
  // looks when the cache is on, it starts from a zero state and its prompt has 2 tokens or more.
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  int64_t prefix_cache_evictions = 0;
  int64_t prefix_cache_tokens = 0;  // prompt tokens not fed thanks to it (a hit on an entry of
                                    // P tokens saves P - 1: P's last is fed again)
  double last_step_seconds = 0.0;
  double mean_step_seconds = 0.0;
  double mean_tokens_per_step = 0.0;  // prompt and decode tokens through the model per step
  double last_tokens_per_step = 0.0;
};

// The engine: one scheduler thread owns the device (the model's backend, the state pool, the
// forward pass); requests come and go from any thread.
// Thread-safety: every method may be called from any thread. The model must outlive the engine,
// and no other thread may use its backend while the engine runs.
class Engine {
 public:
  // Builds the state pool, the pass and the swap area on the model's backend and starts the
  // scheduler. InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Model& model,
                                                        const EngineOptions& options);
  // Stop().
  ~Engine();

  // Validates the request (INVALID_ARGUMENT naming the field: sampling or stopping parameters, an
  // empty prompt, an id outside the vocabulary, a prompt over max_prompt_tokens, an initial
  // state of the wrong size) and queues it; RESOURCE_EXHAUSTED when max_queued requests wait,
  // UNAVAILABLE after Stop(). Errors here never reach the stream.
  absl::StatusOr<std::shared_ptr<GenerationStream>> Generate(GenerationRequest request);
  // n (1 .. min(max_samples, max_running)) independent samples of one request sharing one
  // prefill: the prompt but its last token is fed once, its state copied into a slot per sample,
  // and each sample's decode step feeds the last token and samples its first. Stream i samples
  // with seed + i when the request has a seed (unseeded: each draws its own seed); each ends on
  // its own (cancel one, the others go on; the first cancelled before the prompt is in hands the
  // prefill to the next); on_update is called for any of them. It counts once in the queue and in
  // the prompt counters, n times in requests_finished. Admission needs n running seats and n free
  // slots at once: under pressure the request waits at the head of its priority (preempting
  // lower-priority sequences, evicting parked states), holding back requests behind it; until
  // the prompt is in, it is never preempted. Not with return_final_state, park_as or
  // resume_parked (INVALID_ARGUMENT). On the CPU backend sample i equals Generate with seed + i
  // token for token.
  absl::StatusOr<std::vector<std::shared_ptr<GenerationStream>>> GenerateMany(
      GenerationRequest request, int32_t n);
  // Same checks (at least 2 tokens; with an initial_state, at least 1, and the state's size and
  // pending token as Generate checks them).
  absl::StatusOr<std::shared_ptr<PendingScore>> Score(ScoreRequest request);
  // Cancels a request that has not ended; NOT_FOUND otherwise.
  absl::Status Cancel(RequestId id);

  EngineStats Stats() const;
  const ModelConfig& config() const { return model_.config(); }
  // Bytes of a SequenceState (one pool slot).
  size_t state_bytes() const;

  // Ends every outstanding request with UNAVAILABLE, stops the scheduler and waits for it; later
  // submissions get UNAVAILABLE. Idempotent. (A graceful shutdown stops taking new requests and
  // waits for the streams it has before calling this.)
  void Stop();

 private:
  Engine(const Model& model, const EngineOptions& options, std::unique_ptr<Scheduler> scheduler);
  absl::Status ValidateTokens(absl::Span<const int32_t> tokens, absl::string_view what) const;
  absl::Status ValidateInitialState(const SequenceState& state, absl::string_view what) const;
  absl::Status ValidateGeneration(const GenerationRequest& request) const;
  // A sequence for `request`'s prompt and stopping with its own id, stream and sampler.
  std::unique_ptr<Sequence> NewGeneration(const GenerationRequest& request, SamplingParams sampling,
                                          std::function<void()> on_update);

  const Model& model_;
  EngineOptions options_;
  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<RequestId> next_id_{1};
};

}  // namespace hgrn2
