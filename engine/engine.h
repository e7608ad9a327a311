// The engine's C++ API, the one the server calls: submit generation and scoring requests, read
// their tokens as they come, cancel them, and read the counters to export. No proto types.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/model/model.h"
#include "engine/scheduler/host_state_pool.h"
#include "engine/scheduler/options.h"
#include "engine/scheduler/request.h"

namespace hgrn2 {

class Scheduler;
struct Sequence;

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
  // A pool of up to `max_states` states in the memory this engine's device copies at full speed
  // (page-locked on CUDA), for a caller that fills states to start from (a session loaded to
  // resume): the scheduler then writes one to the device with a single copy, none staged on its
  // thread. The pool and its states may outlive the engine.
  std::shared_ptr<HostStatePool> MakeHostStatePool(size_t max_states) const;

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
