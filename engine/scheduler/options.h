// The engine's options (batching, slots, prefill budget, caches) and the counters it exports.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "engine/base/dtype.h"
#include "engine/model/forward_pass.h"

namespace hgrn2 {

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
  // The most prompt tokens one iteration may take when prompts pile up (engine/scheduler/
  // prefill_budget.h): with no sequence decoding, this many; with some, a quarter of the prompt
  // tokens waiting in prefill, between prefill_token_budget and this. A burst of prompts then
  // gets its first tokens in a few long iterations instead of many short ones, at the price of
  // longer gaps between the running sequences' tokens while it lasts; in steady traffic the
  // budget stays at prefill_token_budget. 0 = always prefill_token_budget (the library's
  // default); kAutoPrefillBudget (the server's) = 8 * prefill_token_budget when the backend
  // records steps (a GPU, where a long prefill runs as large matrix products), 0 otherwise.
  static constexpr int64_t kAutoPrefillBudget = -1;
  int64_t max_prefill_token_budget = 0;
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

}  // namespace hgrn2
