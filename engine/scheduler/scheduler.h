// The scheduler: the one thread that owns the device and runs continuous batching over it, and
// the queue through which other threads hand it requests. Internal to the engine (engine.h is
// the API).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/base/recycler.h"
#include "engine/model/forward_pass.h"
#include "engine/model/state_pool.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/host_state_pool.h"
#include "engine/scheduler/options.h"
#include "engine/scheduler/prefill_budget.h"
#include "engine/scheduler/prefix_cache.h"
#include "engine/scheduler/request.h"

namespace hgrn2 {

// One request inside the scheduler: what it asked for and how far it has got. Built and
// validated by Engine on the submitting thread, then owned by the scheduler thread.
struct Sequence {
  RequestId id = 0;
  int32_t priority = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // Exactly one of these: a generation or a scoring request.
  std::shared_ptr<GenerationStream> stream;
  std::shared_ptr<PendingScore> score;

  // Tokens to feed through the model in prefill. Generation: the prompt, after the start state's
  // pending token once admitted. Scoring: the text (after the start state's pending token), of
  // which all but the last are fed.
  std::vector<int32_t> input;
  int64_t fed = 0;  // tokens of `input` already in the state (or taken from the prefix cache)

  // Generation only.
  std::optional<Sampler> sampler;
  StoppingParams stopping;
  std::function<bool(const SampledToken&)> stops_after;
  std::shared_ptr<const SequenceState> initial_state;  // let go of once written to the slot
  std::string resume_parked;
  std::string park_as;
  bool return_final_state = false;
  // Prefill feeds all of `input` but its last token, which the decode step feeds as last_token
  // (and samples the first token from): with the prefix cache on, so that the state after
  // input[:-1] can be cached, and in GenerateMany, so that it can be copied for every sample.
  // On the CPU backend both ways of feeding a token give the same floats.
  bool last_input_in_decode = false;
  bool fill_prefix_cache = false;  // cache the state after input[:-1] for `input`
  // The prompt is in; last_token (sampled, or the prompt's last token) is not fed yet.
  bool decoding = false;
  int32_t last_token = 0;
  int64_t generated = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // of `input`, whose state came from the prefix cache
  // GenerateMany: the other samples, each with its stream, sampler and a reserved slot (from
  // admission on), until the prompt is in; then they get a copy of this state and run on their
  // own. They share id order, priority, deadline and prompt with this one.
  std::vector<std::unique_ptr<Sequence>> forks;
  // Scoring only: one entry per fed token so far, and the alternatives asked for.
  ScoreResult scored;
  int32_t num_top_logprobs = 0;
  // Set by Submit; the queue time is measured at the first admission.
  std::chrono::steady_clock::time_point submitted;
  absl::Duration queue_time = absl::ZeroDuration();

  // Where its state is: a device slot (running), a swap slot (preempted), or neither (waiting
  // for its first admission, or ended).
  SlotId slot = -1;
  SwapSlotId swap_slot = -1;
  uint64_t arrival = 0;  // submission order: first come, first served within a priority
  bool counted_as_queued = true;
  bool ended = false;

  RequestHandle& handle() const {
    return stream ? static_cast<RequestHandle&>(*stream) : static_cast<RequestHandle&>(*score);
  }
  // Tokens prefill still has to feed.
  int64_t remaining_prefill() const {
    const int64_t total =
        static_cast<int64_t>(input.size()) - (score || last_input_in_decode ? 1 : 0);
    return total - fed;
  }
  // Running seats (and device slots) it takes: itself and its forks.
  int32_t seats() const { return 1 + static_cast<int32_t>(forks.size()); }
};

// Continuous batching at iteration level. Each iteration: take new requests; end cancelled
// and expired ones; admit waiting ones by priority while slots allow (evicting parked states,
// swapping out lower-priority sequences; a GenerateMany request takes a seat and a slot per
// sample); feed prompts under the token budget, sampling first tokens where a prompt completes
// (or, with the prefix cache on or in GenerateMany, caching and forking the state where all but
// the prompt's last token are in); one decode step for every sequence that has a token to feed;
// deliver tokens; end finished sequences and free or park their slots at once.
//
// Thread-safety: Submit, Cancel, Stats and Stop may be called from any thread; everything else
// runs on the scheduler's own thread, the only one that touches the backend.
class Scheduler {
 public:
  // Builds the pool, pass and swap area (on the calling thread, before the scheduler thread
  // starts and takes them over) and starts the thread. `options` must have passed Validate().
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const Model& model,
                                                           const EngineOptions& options);
  ~Scheduler();

  // Queues a validated request. RESOURCE_EXHAUSTED when max_queued wait, UNAVAILABLE once
  // stopping.
  absl::Status Submit(std::unique_ptr<Sequence> sequence);
  absl::Status Cancel(RequestId id);
  EngineStats Stats() const;
  void Stop();
  size_t state_bytes() const { return pool_->slot_bytes(); }

 private:
  Scheduler(const Model& model, const EngineOptions& options);
  void Run();
  // One iteration; false when nothing ran.
  bool Iterate();
  void InsertWaiting(std::unique_ptr<Sequence> sequence);
  void EndCancelledAndExpired();
  void Admit();
  absl::Status Start(Sequence& sequence);
  // Where prefill has fed input[:-1] of a sequence that feeds its last input token in decode:
  // caches the state, forks the other samples (into running_, decoding), and makes it decode.
  absl::Status PromptIn(Sequence& sequence);
  // GenerateMany before the fork: ends the cancelled samples; a cancelled first sample hands its
  // place (and prefill) to the next.
  void EndCancelledForks(Sequence& sequence);
  int32_t RunningSeats() const;
  bool Preempt(int32_t priority);
  bool EvictParked();
  // Feeds prompts (generation and scoring) under the iteration's budget (prefill_budget_, with
  // `decoding` sequences waiting for the decode step); returns the tokens fed.
  int64_t PrefillStep(int64_t decoding);
  void PrefillGeneration(const std::vector<std::pair<Sequence*, int64_t>>& work);
  void PrefillScoring(const std::vector<std::pair<Sequence*, int64_t>>& work);
  // One token for each of `decoders`; returns how many were fed.
  int64_t DecodeStep(const std::vector<Sequence*>& decoders);
  // Samples one token per row of `logits` for `sequences` and delivers them.
  void SampleAndDeliver(const DeviceTensor& logits, const std::vector<Sequence*>& sequences);
  void Deliver(Sequence& sequence, const SampledToken& token);
  // Ends the request: releases or parks its state, reports `status` (and `last` token).
  void End(Sequence& sequence, absl::Status status, FinishReason reason = FinishReason::kNone,
           const SampledToken* last = nullptr);
  // Runs a decode step (and greedy sampling) at every batch size 1..up_to on zeroed slots, before
  // the scheduler thread starts: see EngineOptions::warm_decode_batches.
  absl::Status WarmDecodeBatches(int32_t up_to);
  void RemoveEnded();
  void PublishStats(double step_seconds, int64_t step_tokens);
  // A slot's state from or to a SequenceState: straight from or into its pinned memory when it
  // has some (one device copy), else through transfer_ (a device copy and a host copy): on CUDA a
  // copy from or to pageable memory runs at a fraction of a page-locked one's rate, and the
  // scheduler thread waits for it. ReadState fills `state`'s pinned span when it has a lease,
  // else its bytes.
  absl::Status WriteState(SlotId slot, const SequenceState& state);
  absl::Status ReadState(SlotId slot, SequenceState& state);

  const Model& model_;
  const EngineOptions options_;
  std::unique_ptr<StatePool> pool_;
  std::unique_ptr<PrefixCache> prefix_cache_;  // null when off
  std::unique_ptr<ForwardPass> pass_;
  PrefillBudget prefill_budget_;  // the options' bounds, the auto ceiling resolved
  std::unique_ptr<SwapArea> swap_;
  // Final states handed to callers come from final_host_states_ (page-locked: ReadState copies
  // the slot straight in) and go back when they let go; when all of those are lent, from
  // final_states_ (pageable, through transfer_), recycled too, so that reading one out writes
  // warm memory instead of faulting in a fresh buffer on this thread.
  static constexpr size_t kKeptFinalStates = 4;
  static constexpr size_t kPinnedFinalStates = 8;
  std::shared_ptr<HostStatePool> final_host_states_;
  Recycler<SequenceState> final_states_{kKeptFinalStates};
  HostBuffer transfer_;  // one slot's bytes, page-locked on CUDA: WriteState and ReadState

  // Shared with submitting threads, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::unordered_map<RequestId, std::weak_ptr<RequestHandle>> live_;
  int64_t queued_ = 0;  // submitted and not yet admitted or ended
  bool stopping_ = false;
  uint64_t next_arrival_ = 0;

  // The scheduler thread's own.
  std::vector<std::unique_ptr<Sequence>> waiting_;  // by priority (desc), then arrival
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  // Sequences whose prompt came in during this iteration's prefill: they join its decode step.
  std::vector<Sequence*> prompt_in_;
  struct Parked {
    SlotId slot = -1;
    int32_t pending_token = 0;
    uint64_t order = 0;  // eviction: lowest first
  };
  std::map<std::string, Parked> parked_;
  uint64_t park_counter_ = 0;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0, requests_finished_ = 0, preemptions_ = 0,
          steps_ = 0, step_tokens_total_ = 0;
  int64_t prefix_cache_hits_ = 0, prefix_cache_misses_ = 0, prefix_cache_tokens_ = 0;
  double step_seconds_total_ = 0.0;

  mutable std::mutex stats_mutex_;
  EngineStats stats_;  // under stats_mutex_, but queued comes from queued_

  std::mutex stop_mutex_;  // one Stop() joins
  std::thread thread_;
};

}  // namespace hgrn2
