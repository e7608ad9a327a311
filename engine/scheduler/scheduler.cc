// Scheduler: the iteration loop of continuous batching, admission, preemption by swapping,
// parking, the prefix cache's use, GenerateMany's forks, and the hand-off of requests from other
// threads.
#include "engine/scheduler/scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {
namespace {

// Waiting order: higher priority first, then first come, first served.
bool RunsBefore(const Sequence& a, const Sequence& b) {
  if (a.priority != b.priority) return a.priority > b.priority;
  return a.arrival < b.arrival;
}

// Requests are validated before they reach the scheduler, so a failure of the pass, the backend
// or the pool here is the engine's fault, not the request's.
absl::Status DeviceFailure(absl::string_view during, const absl::Status& status) {
  return absl::InternalError(absl::StrCat("engine: ", during, " failed: ", status.ToString()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const Model& model,
                                                             const EngineOptions& options) {
  std::unique_ptr<Scheduler> scheduler(new Scheduler(model, options));
  const int32_t num_slots = options.num_slots > 0 ? options.num_slots : options.max_running;
  HGRN2_ASSIGN_OR_RETURN(scheduler->pool_, StatePool::Create(model.backend(), model.config(),
                                                             num_slots, options.state_dtype));
  // The cache's slots sit in the same pool (so that a state moves by a device copy), beyond
  // num_slots; the slot size is the pool's, known once it exists.
  const int64_t cache_slots =
      options.prefix_cache_bytes / static_cast<int64_t>(scheduler->pool_->slot_bytes());
  if (cache_slots > 0) {
    if (cache_slots > INT32_MAX - num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("engine options: prefix_cache_bytes (",
                                                     options.prefix_cache_bytes,
                                                     ") is too many states"));
    }
    scheduler->pool_.reset();
    HGRN2_ASSIGN_OR_RETURN(
        scheduler->pool_,
        StatePool::Create(model.backend(), model.config(),
                          num_slots + static_cast<int32_t>(cache_slots), options.state_dtype));
    HGRN2_ASSIGN_OR_RETURN(
        scheduler->prefix_cache_,
        PrefixCache::Create(*scheduler->pool_, static_cast<int32_t>(cache_slots)));
  }
  PrefillBudget& budget = scheduler->prefill_budget_;
  budget.base = options.prefill_token_budget;
  budget.ceiling = options.max_prefill_token_budget;
  if (budget.ceiling == EngineOptions::kAutoPrefillBudget) {
    budget.ceiling = model.backend().RecordsWork() ? 8 * budget.base : 0;
  }
  budget.ceiling = std::max(budget.ceiling, budget.base);
  ForwardPass::Options pass_options;
  // A decode step is max_running tokens, a prefill call at most the budget's ceiling.
  pass_options.max_tokens =
      std::max<int64_t>(budget.ceiling, static_cast<int64_t>(options.max_running));
  pass_options.max_sequences = options.max_running;
  pass_options.prefill_chunk_size = options.prefill_chunk_size;
  HGRN2_ASSIGN_OR_RETURN(scheduler->pass_,
                         ForwardPass::Create(model, *scheduler->pool_, pass_options));
  HGRN2_ASSIGN_OR_RETURN(
      scheduler->swap_,
      SwapArea::Create(model.backend(), scheduler->pool_->slot_bytes(), options.swap_slots));
  HGRN2_ASSIGN_OR_RETURN(scheduler->transfer_,
                         model.backend().AllocateHost(scheduler->pool_->slot_bytes()));
  scheduler->final_host_states_ = std::make_shared<HostStatePool>(
      model.backend().shared_host_allocator(), scheduler->pool_->slot_bytes(), kPinnedFinalStates);
  scheduler->stats_.num_slots = num_slots;
  scheduler->stats_.free_slots = num_slots;
  scheduler->stats_.free_swap_slots = options.swap_slots;
  scheduler->stats_.prefix_cache_capacity = cache_slots;
  const int32_t warm = options.warm_decode_batches == EngineOptions::kWarmAllBatches
                           ? (model.backend().RecordsWork() ? options.max_running : 0)
                           : std::min(options.warm_decode_batches, options.max_running);
  HGRN2_RETURN_IF_ERROR(scheduler->WarmDecodeBatches(warm));
  scheduler->thread_ = std::thread([s = scheduler.get()] { s->Run(); });
  // Named for top, perf and /proc: the one thread that owns the device.
  pthread_setname_np(scheduler->thread_.native_handle(), "hgrn2-scheduler");
  return scheduler;
}

Scheduler::Scheduler(const Model& model, const EngineOptions& options)
    : model_(model), options_(options) {}

Scheduler::~Scheduler() { Stop(); }

absl::Status Scheduler::Submit(std::unique_ptr<Sequence> sequence) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("engine: stopped, not taking requests");
    if (queued_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "engine: the queue is full (", queued_, " requests waiting, max_queued); retry later"));
    }
    ++queued_;
    sequence->arrival = next_arrival_++;
    sequence->submitted = std::chrono::steady_clock::now();
    live_[sequence->id] = sequence->stream ? std::weak_ptr<RequestHandle>(sequence->stream)
                                           : std::weak_ptr<RequestHandle>(sequence->score);
    for (const std::unique_ptr<Sequence>& fork : sequence->forks) {
      fork->arrival = sequence->arrival;
      fork->submitted = sequence->submitted;
      fork->counted_as_queued = false;  // the request counts once
      live_[fork->id] = fork->stream;
    }
    inbox_.push_back(std::move(sequence));
  }
  wake_.notify_one();
  return absl::OkStatus();
}

absl::Status Scheduler::Cancel(RequestId id) {
  std::shared_ptr<RequestHandle> handle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(id);
    if (it != live_.end()) handle = it->second.lock();
  }
  if (!handle) {
    return absl::NotFoundError(absl::StrCat("engine: no request ", id, " in progress"));
  }
  handle->Cancel();
  return absl::OkStatus();
}

EngineStats Scheduler::Stats() const {
  EngineStats stats;
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats = stats_;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats.queued = queued_;
  return stats;
}

void Scheduler::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Run() {
  while (true) {
    std::vector<std::unique_ptr<Sequence>> arrived;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Sleep only with nothing to do; cancellations and deadlines need a live request, and a
      // live request keeps the loop running.
      wake_.wait(lock, [&] {
        return stopping_ || !inbox_.empty() || !waiting_.empty() || !running_.empty();
      });
      arrived.swap(inbox_);
      stopping = stopping_;
    }
    for (std::unique_ptr<Sequence>& sequence : arrived) InsertWaiting(std::move(sequence));
    if (stopping) {
      const absl::Status stopped = absl::UnavailableError("engine: stopped");
      for (auto& sequence : running_) End(*sequence, stopped);
      for (auto& sequence : waiting_) End(*sequence, stopped);
      RemoveEnded();
      for (auto& [key, parked] : parked_) pool_->Free(parked.slot).IgnoreError();
      parked_.clear();
      PublishStats(0.0, 0);
      return;
    }
    if (!Iterate()) {
      // Requests wait that cannot start yet (none can run, e.g. the swap area is full): poll
      // again shortly rather than spin.
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(1));
    }
  }
}

void Scheduler::InsertWaiting(std::unique_ptr<Sequence> sequence) {
  auto at = std::upper_bound(waiting_.begin(), waiting_.end(), sequence,
                             [](const std::unique_ptr<Sequence>& a,
                                const std::unique_ptr<Sequence>& b) { return RunsBefore(*a, *b); });
  waiting_.insert(at, std::move(sequence));
}

bool Scheduler::Iterate() {
  EndCancelledAndExpired();
  Admit();
  if (running_.empty()) {
    PublishStats(0.0, 0);
    return false;
  }
  const auto start = std::chrono::steady_clock::now();
  // Sequences that had a token to feed before this iteration; those whose prompt completes
  // below sample their first token now and decode from the next iteration.
  std::vector<Sequence*> decoders;
  for (const auto& sequence : running_) {
    if (sequence->decoding) decoders.push_back(sequence.get());
  }
  prompt_in_.clear();  // those whose prompt came in at admission are among the decoders already
  const int64_t prefill_tokens = PrefillStep(static_cast<int64_t>(decoders.size()));
  // Prompts whose last token the decode step feeds join it in the iteration their prefill ends,
  // so their first token comes as soon as it would through prefill.
  decoders.insert(decoders.end(), prompt_in_.begin(), prompt_in_.end());
  prompt_in_.clear();
  const int64_t decode_sequences = DecodeStep(decoders);
  const int64_t tokens = prefill_tokens + decode_sequences;
  RemoveEnded();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (tokens > 0 && options_.on_step) {
    options_.on_step(StepReport{.seconds = seconds,
                                .prefill_tokens = prefill_tokens,
                                .decode_sequences = decode_sequences});
  }
  if (tokens > 0) {
    ++steps_;
    step_seconds_total_ += seconds;
    step_tokens_total_ += tokens;
  }
  PublishStats(seconds, tokens);
  return true;
}

void Scheduler::EndCancelledAndExpired() {
  const absl::Time now = absl::Now();
  auto check = [&](Sequence& sequence) {
    if (!sequence.forks.empty()) EndCancelledForks(sequence);
    if (sequence.handle().cancel_requested()) {
      End(sequence, absl::CancelledError(absl::StrCat("request ", sequence.id, " cancelled")));
    } else if (now >= sequence.deadline) {
      End(sequence, absl::DeadlineExceededError(
                        absl::StrCat("request ", sequence.id, " passed its deadline")));
    }
  };
  for (auto& sequence : waiting_) check(*sequence);
  for (auto& sequence : running_) check(*sequence);
  RemoveEnded();
}

void Scheduler::EndCancelledForks(Sequence& sequence) {
  for (auto& fork : sequence.forks) {
    if (fork->handle().cancel_requested()) {
      End(*fork, absl::CancelledError(absl::StrCat("request ", fork->id, " cancelled")));
    }
  }
  std::erase_if(sequence.forks, [](const std::unique_ptr<Sequence>& fork) { return fork->ended; });
  if (!sequence.handle().cancel_requested() || sequence.forks.empty()) return;
  // The first sample is cancelled and others are not: the next one takes its stream's place in
  // the prefill, and the cancelled stream ends with that sample's reserved slot.
  std::unique_ptr<Sequence> heir = std::move(sequence.forks.front());
  sequence.forks.erase(sequence.forks.begin());
  std::swap(sequence.id, heir->id);
  std::swap(sequence.stream, heir->stream);
  std::swap(sequence.sampler, heir->sampler);
  End(*heir, absl::CancelledError(absl::StrCat("request ", heir->id, " cancelled")));
}

int32_t Scheduler::RunningSeats() const {
  int32_t seats = 0;
  for (const auto& sequence : running_) seats += sequence->seats();
  return seats;
}

void Scheduler::Admit() {
  while (!waiting_.empty()) {
    Sequence& next = *waiting_.front();
    // A GenerateMany request needs a seat and a slot for every sample at once: it waits at the
    // head of the queue (taking seats by preemption where its priority allows) until it has them.
    const int32_t need = next.seats();
    bool seated = true;
    while (RunningSeats() + need > options_.max_running) {
      if (!Preempt(next.priority)) {
        seated = false;
        break;
      }
    }
    if (!seated) break;
    // Slots hold running and parked states, and there are at least max_running of them (the
    // prefix cache has its own), so with running seats free, slots are free or parked.
    const bool takes_parked_slot =
        next.swap_slot < 0 && !next.resume_parked.empty() && parked_.count(next.resume_parked) > 0;
    bool slotted = true;
    while (!takes_parked_slot && pool_->num_free() < need) {
      if (!EvictParked()) {
        slotted = false;
        break;
      }
    }
    if (!slotted) break;
    std::unique_ptr<Sequence> sequence = std::move(waiting_.front());
    waiting_.erase(waiting_.begin());
    if (absl::Status started = Start(*sequence); !started.ok()) {
      // NOT_FOUND (a parked state gone) is the request's; anything else is a device failure.
      End(*sequence, started.code() == absl::StatusCode::kNotFound
                         ? std::move(started)
                         : DeviceFailure("starting a sequence", started));
      continue;
    }
    running_.push_back(std::move(sequence));
  }
}

absl::Status Scheduler::Start(Sequence& sequence) {
  if (sequence.swap_slot >= 0) {
    HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->SwapIn(sequence.swap_slot, *swap_));
    sequence.swap_slot = -1;
    return absl::OkStatus();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --queued_;
  }
  sequence.counted_as_queued = false;
  sequence.queue_time = absl::FromChrono(std::chrono::steady_clock::now() - sequence.submitted);
  if (sequence.score) {
    HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->Allocate());
    if (sequence.initial_state) {
      HGRN2_RETURN_IF_ERROR(WriteState(sequence.slot, *sequence.initial_state));
      sequence.input.insert(sequence.input.begin(), sequence.initial_state->pending_token);
      // In the slot now: a page-locked state's buffer goes back to its pool at once, not when
      // the request ends.
      sequence.initial_state.reset();
    }
    return absl::OkStatus();
  }
  std::optional<int32_t> pending;
  auto parked =
      sequence.resume_parked.empty() ? parked_.end() : parked_.find(sequence.resume_parked);
  if (parked != parked_.end()) {
    sequence.slot = parked->second.slot;
    pending = parked->second.pending_token;
    parked_.erase(parked);
  } else if (sequence.initial_state) {
    HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->Allocate());
    HGRN2_RETURN_IF_ERROR(WriteState(sequence.slot, *sequence.initial_state));
    pending = sequence.initial_state->pending_token;
    sequence.initial_state.reset();  // in the slot now: its buffer goes back to its pool
  } else if (!sequence.resume_parked.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no state is parked under '", sequence.resume_parked,
                     "' any more (its slot was needed) and the request has no initial_state"));
  } else if (prefix_cache_ != nullptr) {
    // From a zero state: the prompt's state may be cached, and it may start from a cached one.
    sequence.last_input_in_decode = true;
    sequence.fill_prefix_cache = true;
    std::optional<PrefixCache::Hit> hit;
    if (sequence.input.size() >= 2) {
      hit = prefix_cache_->Lookup(sequence.input);
      ++(hit ? prefix_cache_hits_ : prefix_cache_misses_);
    }
    if (hit) {
      HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->Allocate());
      HGRN2_RETURN_IF_ERROR(pool_->Copy(hit->slot, sequence.slot));
      sequence.fed = hit->length - 1;
      sequence.cached_prompt_tokens = sequence.fed;
      prefix_cache_tokens_ += sequence.fed;
      prompt_tokens_ += sequence.fed;
    } else {
      HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->Allocate());
    }
  } else {
    HGRN2_ASSIGN_OR_RETURN(sequence.slot, pool_->Allocate());
  }
  if (pending) sequence.input.insert(sequence.input.begin(), *pending);
  sequence.prompt_tokens = static_cast<int64_t>(sequence.input.size());
  if (!sequence.forks.empty()) {
    sequence.last_input_in_decode = true;
    for (auto& fork : sequence.forks) {
      // Reserved now (admission counted them); written when the prompt is in.
      HGRN2_ASSIGN_OR_RETURN(fork->slot, pool_->Allocate());
      fork->queue_time = sequence.queue_time;
      fork->prompt_tokens = sequence.prompt_tokens;
      fork->cached_prompt_tokens = sequence.cached_prompt_tokens;
    }
  }
  if (sequence.last_input_in_decode && sequence.remaining_prefill() == 0) {
    // Nothing to prefill (a one-token input, or a cached prefix equal to the prompt): it decodes
    // from this iteration on, with the sequences already decoding.
    return PromptIn(sequence);
  }
  return absl::OkStatus();
}

absl::Status Scheduler::PromptIn(Sequence& sequence) {
  if (sequence.fill_prefix_cache) {
    HGRN2_RETURN_IF_ERROR(prefix_cache_->Insert(sequence.input, sequence.slot));
  }
  ++prompt_tokens_;  // the last input token, fed by the decode step (once for all samples)
  sequence.decoding = true;
  sequence.last_token = sequence.input.back();
  for (std::unique_ptr<Sequence>& fork : sequence.forks) {
    HGRN2_RETURN_IF_ERROR(pool_->Copy(sequence.slot, fork->slot));
    fork->decoding = true;
    fork->last_token = sequence.last_token;
  }
  // Running from now on: after the sequence itself where it runs already (this iteration's
  // decode step takes them through prompt_in_), before it where it is being admitted.
  for (std::unique_ptr<Sequence>& fork : sequence.forks) running_.push_back(std::move(fork));
  sequence.forks.clear();
  return absl::OkStatus();
}

bool Scheduler::Preempt(int32_t priority) {
  if (swap_->num_free() == 0) return false;
  // The lowest priority below `priority`, the latest arrival among those: it has waited least.
  auto victim = running_.end();
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    // A GenerateMany request before its fork holds reserved slots: it stays.
    if ((*it)->ended || (*it)->priority >= priority || !(*it)->forks.empty()) continue;
    if (victim == running_.end() || RunsBefore(**victim, **it)) victim = it;
  }
  if (victim == running_.end()) return false;
  Sequence& sequence = **victim;
  absl::StatusOr<SwapSlotId> swap_slot = pool_->SwapOut(sequence.slot, *swap_);
  if (!swap_slot.ok()) {
    End(sequence, DeviceFailure("swap out", swap_slot.status()));
    RemoveEnded();
    return true;  // its slot is free all the same
  }
  sequence.slot = -1;
  sequence.swap_slot = *swap_slot;
  ++preemptions_;
  std::unique_ptr<Sequence> swapped = std::move(*victim);
  running_.erase(victim);
  InsertWaiting(std::move(swapped));
  return true;
}

bool Scheduler::EvictParked() {
  if (parked_.empty()) return false;
  auto oldest = std::min_element(parked_.begin(), parked_.end(), [](const auto& a, const auto& b) {
    return a.second.order < b.second.order;
  });
  pool_->Free(oldest->second.slot).IgnoreError();
  parked_.erase(oldest);
  return true;
}

int64_t Scheduler::PrefillStep(int64_t decoding) {
  std::vector<Sequence*> prefilling;
  int64_t backlog = 0;
  for (const auto& sequence : running_) {
    if (!sequence->ended && !sequence->decoding && sequence->remaining_prefill() > 0) {
      prefilling.push_back(sequence.get());
      backlog += sequence->remaining_prefill();
    }
  }
  if (prefilling.empty()) return 0;
  std::sort(prefilling.begin(), prefilling.end(),
            [](const Sequence* a, const Sequence* b) { return RunsBefore(*a, *b); });
  const int64_t iteration_budget = prefill_budget_.For(backlog, decoding);
  int64_t budget = iteration_budget;
  std::vector<std::pair<Sequence*, int64_t>> generation, scoring;
  for (Sequence* sequence : prefilling) {
    if (budget == 0) break;
    const int64_t count = std::min(budget, sequence->remaining_prefill());
    budget -= count;
    (sequence->score ? scoring : generation).emplace_back(sequence, count);
  }
  if (!generation.empty()) PrefillGeneration(generation);
  if (!scoring.empty()) PrefillScoring(scoring);
  const int64_t fed = iteration_budget - budget;
  prompt_tokens_ += fed;
  return fed;
}

void Scheduler::PrefillGeneration(const std::vector<std::pair<Sequence*, int64_t>>& work) {
  // Prompts that complete go first, so their logits are rows [0, k) for one Sample call.
  std::vector<std::pair<Sequence*, int64_t>> ordered;
  std::vector<Sequence*> completing;
  auto samples_now = [](const Sequence& sequence, int64_t count) {
    return count == sequence.remaining_prefill() && !sequence.last_input_in_decode;
  };
  for (const auto& [sequence, count] : work) {
    if (samples_now(*sequence, count)) {
      ordered.emplace_back(sequence, count);
      completing.push_back(sequence);
    }
  }
  for (const auto& [sequence, count] : work) {
    if (!samples_now(*sequence, count)) ordered.emplace_back(sequence, count);
  }
  std::vector<SequenceTokens> batch;
  for (const auto& [sequence, count] : ordered) {
    batch.push_back(
        {sequence->slot,
         absl::MakeConstSpan(sequence->input).subspan(static_cast<size_t>(sequence->fed), count)});
  }
  absl::StatusOr<DeviceTensor> logits = pass_->Prefill(batch, LogitsFor::kLastToken);
  if (!logits.ok()) {
    const absl::Status failed = DeviceFailure("prefill", logits.status());
    for (const auto& [sequence, count] : ordered) End(*sequence, failed);
    return;
  }
  for (const auto& [sequence, count] : ordered) sequence->fed += count;
  if (!completing.empty()) {
    SampleAndDeliver(logits->Rows(0, static_cast<int64_t>(completing.size())), completing);
  }
  for (const auto& [sequence, count] : ordered) {
    if (!sequence->last_input_in_decode || sequence->remaining_prefill() > 0) continue;
    const size_t first_joining = running_.size();
    if (absl::Status in = PromptIn(*sequence); !in.ok()) {
      End(*sequence, DeviceFailure("caching or forking a prompt's state", in));
      continue;
    }
    prompt_in_.push_back(sequence);
    for (size_t i = first_joining; i < running_.size(); ++i)
      prompt_in_.push_back(running_[i].get());
  }
}

void Scheduler::PrefillScoring(const std::vector<std::pair<Sequence*, int64_t>>& work) {
  std::vector<SequenceTokens> batch;
  std::vector<int32_t> targets;
  for (const auto& [sequence, count] : work) {
    const auto input = absl::MakeConstSpan(sequence->input);
    const auto begin = static_cast<size_t>(sequence->fed);
    batch.push_back({sequence->slot, input.subspan(begin, count)});
    // Row t of a run predicts the token after it.
    targets.insert(targets.end(), input.begin() + begin + 1, input.begin() + begin + 1 + count);
  }
  std::vector<float> logprobs, max_logprobs;
  absl::Status status = [&]() -> absl::Status {
    HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, pass_->Prefill(batch, LogitsFor::kEveryToken));
    HGRN2_ASSIGN_OR_RETURN(logprobs, pass_->TargetLogprobs(logits, targets, &max_logprobs));
    // Alternatives: a greedy sampler per row reports the most probable tokens.
    int64_t row = 0;
    for (const auto& [sequence, count] : work) {
      if (sequence->num_top_logprobs > 0) {
        SamplingParams greedy;
        greedy.temperature = 0.0f;
        greedy.num_top_logprobs = sequence->num_top_logprobs;
        std::vector<Sampler> samplers(static_cast<size_t>(count),
                                      Sampler(greedy, model_.config().vocab_size, {}));
        std::vector<Sampler*> pointers;
        for (Sampler& sampler : samplers) pointers.push_back(&sampler);
        std::vector<SampledToken> sampled(static_cast<size_t>(count));
        HGRN2_RETURN_IF_ERROR(
            model_.backend().Sample(logits.Rows(row, count), pointers, absl::MakeSpan(sampled)));
        for (SampledToken& token : sampled) sequence->scored.top.push_back(std::move(token.top));
      }
      row += count;
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    const absl::Status failed = DeviceFailure("scoring", status);
    for (const auto& [sequence, count] : work) End(*sequence, failed);
    return;
  }
  size_t row = 0;
  for (const auto& [sequence, count] : work) {
    ScoreResult& scored = sequence->scored;
    for (size_t r = row; r < row + static_cast<size_t>(count); ++r) {
      scored.logprobs.push_back(logprobs[r]);
      scored.is_argmax.push_back(logprobs[r] == max_logprobs[r]);
    }
    row += static_cast<size_t>(count);
    sequence->fed += count;
    if (sequence->remaining_prefill() == 0) End(*sequence, absl::OkStatus());
  }
}

int64_t Scheduler::DecodeStep(const std::vector<Sequence*>& decoders) {
  std::vector<Sequence*> batch;
  std::vector<SlotId> slots;
  std::vector<int32_t> tokens;
  for (Sequence* sequence : decoders) {
    if (sequence->ended) continue;
    batch.push_back(sequence);
    slots.push_back(sequence->slot);
    tokens.push_back(sequence->last_token);
  }
  if (batch.empty()) return 0;
  absl::StatusOr<DeviceTensor> logits = pass_->Decode(slots, tokens);
  if (!logits.ok()) {
    const absl::Status failed = DeviceFailure("decode", logits.status());
    for (Sequence* sequence : batch) End(*sequence, failed);
    return 0;
  }
  SampleAndDeliver(*logits, batch);
  return static_cast<int64_t>(batch.size());
}

void Scheduler::SampleAndDeliver(const DeviceTensor& logits,
                                 const std::vector<Sequence*>& sequences) {
  std::vector<Sampler*> samplers;
  samplers.reserve(sequences.size());
  for (Sequence* sequence : sequences) samplers.push_back(&*sequence->sampler);
  std::vector<SampledToken> sampled(sequences.size());
  if (absl::Status status = model_.backend().Sample(logits, samplers, absl::MakeSpan(sampled));
      !status.ok()) {
    const absl::Status failed = DeviceFailure("sampling", status);
    for (Sequence* sequence : sequences) End(*sequence, failed);
    return;
  }
  for (size_t i = 0; i < sequences.size(); ++i) Deliver(*sequences[i], sampled[i]);
}

void Scheduler::Deliver(Sequence& sequence, const SampledToken& token) {
  ++sequence.generated;
  ++generated_tokens_;
  sequence.last_token = token.id;
  sequence.decoding = true;
  FinishReason reason =
      CheckFinish(sequence.stopping, model_.config().eos_token_ids, token.id,
                  static_cast<int32_t>(std::min<int64_t>(sequence.generated, INT32_MAX)));
  if (reason == FinishReason::kNone && sequence.stops_after && sequence.stops_after(token)) {
    reason = FinishReason::kStop;
  }
  if (reason == FinishReason::kNone) {
    sequence.stream->Deliver({&token, 1}, std::nullopt);
    return;
  }
  End(sequence, absl::OkStatus(), reason, &token);
}

void Scheduler::End(Sequence& sequence, absl::Status status, FinishReason reason,
                    const SampledToken* last) {
  if (sequence.ended) return;
  sequence.ended = true;
  // GenerateMany's other samples, not running yet, end with it (a cancellation of one sample
  // never gets here with others left: EndCancelledForks).
  for (std::unique_ptr<Sequence>& fork : sequence.forks) End(*fork, status);
  sequence.forks.clear();
  std::shared_ptr<const SequenceState> final_state;
  if (sequence.slot >= 0) {
    if (status.ok() && sequence.return_final_state) {
      std::shared_ptr<SequenceState> state = final_host_states_->Take();
      if (state == nullptr) state = final_states_.Take();
      state->pending_token = sequence.last_token;
      status = ReadState(sequence.slot, *state);
      if (status.ok()) {
        final_state = std::move(state);
      } else {
        status = DeviceFailure("reading the final state", status);
      }
    }
    if (status.ok() && !sequence.park_as.empty()) {
      auto [it, inserted] = parked_.try_emplace(sequence.park_as);
      if (!inserted) pool_->Free(it->second.slot).IgnoreError();
      it->second = Parked{sequence.slot, sequence.last_token, park_counter_++};
    } else {
      pool_->Free(sequence.slot).IgnoreError();
    }
    sequence.slot = -1;
  }
  if (sequence.swap_slot >= 0) {
    swap_->Free(sequence.swap_slot).IgnoreError();
    sequence.swap_slot = -1;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sequence.counted_as_queued) --queued_;
    live_.erase(sequence.id);
  }
  sequence.counted_as_queued = false;
  ++requests_finished_;
  if (sequence.score) {
    if (status.ok()) {
      sequence.scored.queue_time = sequence.queue_time;
      sequence.score->Finish(std::move(sequence.scored));
    } else {
      sequence.score->Finish(std::move(status));
    }
    return;
  }
  GenerationEnd end;
  end.status = std::move(status);
  end.finish_reason = end.status.ok() ? reason : FinishReason::kNone;
  end.prompt_tokens = sequence.prompt_tokens;
  end.cached_prompt_tokens = sequence.cached_prompt_tokens;
  end.generated_tokens = sequence.generated;
  end.queue_time = sequence.queue_time;
  end.final_state = std::move(final_state);
  if (last != nullptr) {
    sequence.stream->Deliver({last, 1}, std::move(end));
  } else {
    sequence.stream->Deliver({}, std::move(end));
  }
}

absl::Status Scheduler::WarmDecodeBatches(int32_t up_to) {
  if (up_to <= 0) return absl::OkStatus();
  std::vector<SlotId> slots;
  absl::Cleanup free_slots = [&] {
    for (SlotId slot : slots) pool_->Free(slot).IgnoreError();
  };
  for (int32_t i = 0; i < up_to; ++i) {
    HGRN2_ASSIGN_OR_RETURN(const SlotId slot, pool_->Allocate());
    slots.push_back(slot);
  }
  const std::vector<int32_t> tokens(static_cast<size_t>(up_to), 0);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<Sampler> samplers;
  samplers.reserve(static_cast<size_t>(up_to));
  for (int32_t i = 0; i < up_to; ++i) {
    samplers.emplace_back(greedy, model_.config().vocab_size, absl::Span<const int32_t>());
  }
  std::vector<Sampler*> sampler_ptrs;
  for (Sampler& sampler : samplers) sampler_ptrs.push_back(&sampler);
  std::vector<SampledToken> sampled(static_cast<size_t>(up_to));
  for (int32_t batch = 1; batch <= up_to; ++batch) {
    const auto n = static_cast<size_t>(batch);
    HGRN2_ASSIGN_OR_RETURN(
        DeviceTensor logits,
        pass_->Decode(absl::MakeConstSpan(slots).first(n), absl::MakeConstSpan(tokens).first(n)));
    HGRN2_RETURN_IF_ERROR(model_.backend().Sample(logits, absl::MakeSpan(sampler_ptrs).first(n),
                                                  absl::MakeSpan(sampled).first(n)));
  }
  return model_.backend().Synchronize();
}

absl::Status Scheduler::WriteState(SlotId slot, const SequenceState& state) {
  const absl::Span<const std::byte> bytes = state.view();
  if (bytes.size() != transfer_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("state pool write: ", bytes.size(),
                                                   " bytes given, a slot has ", transfer_.size()));
  }
  if (state.pinned_lease != nullptr) return pool_->WriteHost(slot, bytes);
  std::memcpy(transfer_.data(), bytes.data(), bytes.size());
  return pool_->WriteHost(
      slot, absl::MakeConstSpan(static_cast<const std::byte*>(transfer_.data()), transfer_.size()));
}

absl::Status Scheduler::ReadState(SlotId slot, SequenceState& state) {
  if (state.pinned_lease != nullptr) return pool_->ReadHost(slot, state.pinned);
  auto* staged = static_cast<std::byte*>(transfer_.data());
  HGRN2_RETURN_IF_ERROR(pool_->ReadHost(slot, absl::MakeSpan(staged, transfer_.size())));
  state.bytes.assign(staged, staged + transfer_.size());  // one pass: no zeroing before the copy
  return absl::OkStatus();
}

void Scheduler::RemoveEnded() {
  auto ended = [](const std::unique_ptr<Sequence>& sequence) { return sequence->ended; };
  std::erase_if(running_, ended);
  std::erase_if(waiting_, ended);
}

void Scheduler::PublishStats(double step_seconds, int64_t step_tokens) {
  int64_t swapped = 0;
  for (const auto& sequence : waiting_) swapped += sequence->swap_slot >= 0 ? 1 : 0;
  std::lock_guard<std::mutex> lock(stats_mutex_);
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.swapped = swapped;
  stats_.parked = static_cast<int64_t>(parked_.size());
  stats_.free_slots = pool_->num_free();
  stats_.free_swap_slots = swap_->num_free();
  stats_.steps = steps_;
  stats_.prompt_tokens = prompt_tokens_;
  stats_.generated_tokens = generated_tokens_;
  stats_.requests_finished = requests_finished_;
  stats_.preemptions = preemptions_;
  if (prefix_cache_ != nullptr) {
    stats_.prefix_cache_entries = prefix_cache_->size();
    stats_.prefix_cache_evictions = prefix_cache_->evictions();
  }
  stats_.prefix_cache_hits = prefix_cache_hits_;
  stats_.prefix_cache_misses = prefix_cache_misses_;
  stats_.prefix_cache_tokens = prefix_cache_tokens_;
  if (step_tokens > 0) {
    stats_.last_step_seconds = step_seconds;
    stats_.last_tokens_per_step = static_cast<double>(step_tokens);
  }
  if (steps_ > 0) {
    stats_.mean_step_seconds = step_seconds_total_ / static_cast<double>(steps_);
    stats_.mean_tokens_per_step =
        static_cast<double>(step_tokens_total_) / static_cast<double>(steps_);
  }
}

}  // namespace hgrn2
