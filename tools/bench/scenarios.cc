// The serving scenarios: Poisson arrivals with timestamps of every token and latency
// percentiles; scheduled against plain decoding.
#include "tools/bench/scenarios.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/model/forward_pass.h"
#include "engine/model/state_pool.h"

namespace hgrn2::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One request's token times, written by the scheduler thread in its callback.
struct Timeline {
  Clock::time_point arrival;
  std::mutex mutex;
  std::vector<Clock::time_point> tokens;
};

// A finished request's time to first token, gaps between tokens and end-to-end time, added to
// the lists once its last token callback has run (just after the end becomes readable); returns
// its last token's time.
Clock::time_point AddLatencies(Timeline& timeline, int64_t generated, std::vector<double>& ttft,
                               std::vector<double>& itl, std::vector<double>& e2e) {
  const auto expected = static_cast<size_t>(generated);
  while (true) {
    {
      std::lock_guard<std::mutex> lock(timeline.mutex);
      if (timeline.tokens.size() >= expected) break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  std::lock_guard<std::mutex> lock(timeline.mutex);
  const std::vector<Clock::time_point>& times = timeline.tokens;
  ttft.push_back(Seconds(times.front() - timeline.arrival));
  for (size_t t = 1; t < times.size(); ++t) itl.push_back(Seconds(times[t] - times[t - 1]));
  e2e.push_back(Seconds(times.back() - timeline.arrival));
  return times.back();
}

}  // namespace

absl::Status MixedScenario::Validate() const {
  if (concurrency < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mixed scenario: concurrency must not be negative, got ", concurrency));
  }
  if (concurrency > 0 && (!(warmup_seconds >= 0.0) || !(duration_seconds > 0.0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mixed scenario: a closed loop needs warmup_seconds >= 0 and duration_seconds > 0, got ",
        warmup_seconds, " and ", duration_seconds));
  }
  if (concurrency == 0 && num_requests <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mixed scenario: num_requests must be positive, got ", num_requests));
  }
  if (concurrency == 0 && (!(arrivals_per_second > 0.0) || !std::isfinite(arrivals_per_second))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mixed scenario: arrivals_per_second must be positive, got ", arrivals_per_second));
  }
  if (min_prompt_tokens < 1 || max_prompt_tokens < min_prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("mixed scenario: prompt lengths need 1 <= min <= max, got [",
                     min_prompt_tokens, ", ", max_prompt_tokens, "]"));
  }
  if (min_output_tokens < 1 || max_output_tokens < min_output_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("mixed scenario: output lengths need 1 <= min <= max, got [",
                     min_output_tokens, ", ", max_output_tokens, "]"));
  }
  return absl::OkStatus();
}

LatencySummary Summarize(std::vector<double> seconds) {
  LatencySummary summary;
  if (seconds.empty()) return summary;
  std::sort(seconds.begin(), seconds.end());
  const size_t n = seconds.size();
  auto rank = [&](double p) {
    const auto index = static_cast<size_t>(std::ceil(p * static_cast<double>(n)));
    return seconds[std::clamp<size_t>(index, 1, n) - 1];
  };
  double sum = 0.0;
  for (double s : seconds) sum += s;
  summary.count = static_cast<int64_t>(n);
  summary.mean = sum / static_cast<double>(n);
  summary.p50 = rank(0.50);
  summary.p90 = rank(0.90);
  summary.p99 = rank(0.99);
  summary.max = seconds.back();
  return summary;
}

namespace {

// The engine's counters once it has nothing left to run. They are published at the end of each
// iteration, after its streams were delivered to: read just after the last stream ended, they
// may predate that stream's last tokens.
EngineStats StatsOnceIdle(const Engine& engine) {
  EngineStats stats = engine.Stats();
  for (int i = 0; i < 10000 && stats.queued + stats.running + stats.swapped > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stats = engine.Stats();
  }
  return stats;
}

// The closed loop of MixedScenario::concurrency: the calling thread keeps that many requests in
// flight, woken by their on_update callbacks.
absl::StatusOr<MixedResult> RunClosedLoop(Engine& engine, const MixedScenario& scenario) {
  const int64_t vocab = engine.config().vocab_size;
  std::mt19937_64 rng(scenario.seed);
  std::uniform_int_distribution<int32_t> prompt_length(scenario.min_prompt_tokens,
                                                       scenario.max_prompt_tokens);
  std::uniform_int_distribution<int32_t> output_length(scenario.min_output_tokens,
                                                       scenario.max_output_tokens);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab) - 1);
  std::mutex wake_mutex;
  std::condition_variable wake;
  bool woken = false;
  struct InFlight {
    std::shared_ptr<GenerationStream> stream;
    std::unique_ptr<Timeline> timeline;
    int64_t generated = 0;
  };
  uint64_t submitted = 0;
  auto submit = [&]() -> absl::StatusOr<InFlight> {
    GenerationRequest request;
    request.prompt.resize(static_cast<size_t>(prompt_length(rng)));
    for (int32_t& id : request.prompt) id = token(rng);
    request.sampling.temperature = scenario.temperature;
    request.sampling.seed = scenario.seed * 1000003 + submitted++;
    request.stopping.max_new_tokens = output_length(rng);
    request.stopping.ignore_eos = true;
    InFlight in_flight;
    in_flight.timeline = std::make_unique<Timeline>();
    in_flight.timeline->arrival = Clock::now();
    request.on_update = [t = in_flight.timeline.get(), &wake_mutex, &wake, &woken] {
      const Clock::time_point now = Clock::now();
      {
        std::lock_guard<std::mutex> lock(t->mutex);
        t->tokens.push_back(now);
      }
      {
        std::lock_guard<std::mutex> lock(wake_mutex);
        woken = true;
      }
      wake.notify_one();
    };
    HGRN2_ASSIGN_OR_RETURN(in_flight.stream, engine.Generate(std::move(request)));
    return in_flight;
  };

  const Clock::time_point start = Clock::now();
  const Clock::time_point window_start =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(scenario.warmup_seconds));
  const Clock::time_point window_end =
      window_start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(scenario.duration_seconds));
  std::vector<InFlight> in_flight;
  // The callbacks use this frame (wake_mutex, wake, woken, the timelines): on every way out, each
  // stream ends and its last on_update returns (Wait) before they go.
  absl::Cleanup end_in_flight = [&in_flight] {
    for (InFlight& request : in_flight) {
      request.stream->Cancel();
      request.stream->Wait();
    }
  };
  for (int32_t i = 0; i < scenario.concurrency; ++i) {
    HGRN2_ASSIGN_OR_RETURN(InFlight next, submit());
    in_flight.push_back(std::move(next));
  }
  MixedResult result;
  std::vector<double> ttft, itl, e2e;
  int64_t window_tokens = 0;
  auto tokens_in_window = [&](Timeline& timeline) {
    std::lock_guard<std::mutex> lock(timeline.mutex);
    int64_t count = 0;
    for (const Clock::time_point at : timeline.tokens) {
      count += at >= window_start && at < window_end;
    }
    return count;
  };
  while (Clock::now() < window_end) {
    {
      std::unique_lock<std::mutex> lock(wake_mutex);
      wake.wait_for(lock, std::chrono::milliseconds(5), [&] { return woken; });
      woken = false;
    }
    for (InFlight& request : in_flight) {
      StreamUpdate update = request.stream->Poll();
      request.generated += static_cast<int64_t>(update.tokens.size());
      if (!update.end) continue;
      // Poll can see the end before the callback that reports it has stamped its time and
      // returned; Wait returns after it, and then the InFlight may be replaced.
      request.stream->Wait();
      Timeline& timeline = *request.timeline;
      const bool measured = timeline.arrival >= window_start && timeline.arrival < window_end;
      if (!update.end->status.ok()) {
        ++result.failed;
      } else if (measured) {
        AddLatencies(timeline, update.end->generated_tokens, ttft, itl, e2e);
        ++result.completed;
        result.prompt_tokens += update.end->prompt_tokens;
      }
      window_tokens += tokens_in_window(timeline);
      HGRN2_ASSIGN_OR_RETURN(request, submit());
    }
  }
  for (InFlight& request : in_flight) {
    request.stream->Cancel();
    request.stream->Wait();
    window_tokens += tokens_in_window(*request.timeline);
  }
  result.wall_seconds = scenario.duration_seconds;
  result.generated_tokens = window_tokens;
  result.output_tokens_per_second = static_cast<double>(window_tokens) / result.wall_seconds;
  result.total_tokens_per_second =
      static_cast<double>(window_tokens + result.prompt_tokens) / result.wall_seconds;
  result.requests_per_second = result.completed / result.wall_seconds;
  result.time_to_first_token = Summarize(std::move(ttft));
  result.inter_token = Summarize(std::move(itl));
  result.end_to_end = Summarize(std::move(e2e));
  result.engine = StatsOnceIdle(engine);
  return result;
}

}  // namespace

absl::StatusOr<MixedResult> RunMixedScenario(Engine& engine, const MixedScenario& scenario) {
  HGRN2_RETURN_IF_ERROR(scenario.Validate());
  if (scenario.concurrency > 0) return RunClosedLoop(engine, scenario);
  const int64_t vocab = engine.config().vocab_size;
  std::mt19937_64 rng(scenario.seed);
  std::exponential_distribution<double> gap(scenario.arrivals_per_second);
  std::uniform_int_distribution<int32_t> prompt_length(scenario.min_prompt_tokens,
                                                       scenario.max_prompt_tokens);
  std::uniform_int_distribution<int32_t> output_length(scenario.min_output_tokens,
                                                       scenario.max_output_tokens);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab) - 1);

  // Everything is drawn before the clock starts, so submission keeps to the schedule.
  const size_t n = static_cast<size_t>(scenario.num_requests);
  std::vector<GenerationRequest> requests(n);
  std::vector<double> offsets(n);
  double at = 0.0;
  for (size_t i = 0; i < n; ++i) {
    at += gap(rng);
    offsets[i] = at;
    GenerationRequest& request = requests[i];
    request.prompt.resize(static_cast<size_t>(prompt_length(rng)));
    for (int32_t& id : request.prompt) id = token(rng);
    request.sampling.temperature = scenario.temperature;
    request.sampling.seed = scenario.seed * 1000003 + i;
    request.stopping.max_new_tokens = output_length(rng);
    request.stopping.ignore_eos = true;
  }

  std::vector<std::unique_ptr<Timeline>> timelines;
  std::vector<std::shared_ptr<GenerationStream>> streams(n);
  MixedResult result;
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    const Clock::time_point arrival = start + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(offsets[i]));
    std::this_thread::sleep_until(arrival);
    auto timeline = std::make_unique<Timeline>();
    timeline->arrival = Clock::now();
    // Each update brings one token (a decode step delivers one per sequence).
    requests[i].on_update = [t = timeline.get()] {
      const Clock::time_point now = Clock::now();
      std::lock_guard<std::mutex> lock(t->mutex);
      t->tokens.push_back(now);
    };
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream =
        engine.Generate(std::move(requests[i]));
    if (stream.ok()) streams[i] = *std::move(stream);
    timelines.push_back(std::move(timeline));
  }

  std::vector<double> ttft, itl, e2e;
  Clock::time_point last_end = start;
  for (size_t i = 0; i < n; ++i) {
    if (!streams[i]) {
      ++result.failed;
      continue;
    }
    const StreamUpdate update = streams[i]->Wait();
    if (!update.end->status.ok()) {
      ++result.failed;
      continue;
    }
    ++result.completed;
    result.prompt_tokens += update.end->prompt_tokens;
    result.generated_tokens += update.end->generated_tokens;
    last_end = std::max(last_end,
                        AddLatencies(*timelines[i], update.end->generated_tokens, ttft, itl, e2e));
  }
  result.wall_seconds = Seconds(last_end - start);
  if (result.wall_seconds > 0.0) {
    result.output_tokens_per_second =
        static_cast<double>(result.generated_tokens) / result.wall_seconds;
    result.total_tokens_per_second =
        static_cast<double>(result.generated_tokens + result.prompt_tokens) / result.wall_seconds;
    result.requests_per_second = result.completed / result.wall_seconds;
  }
  result.time_to_first_token = Summarize(std::move(ttft));
  result.inter_token = Summarize(std::move(itl));
  result.end_to_end = Summarize(std::move(e2e));
  result.engine = StatsOnceIdle(engine);
  return result;
}

std::string FormatMixedResult(const MixedScenario& scenario, const MixedResult& result) {
  auto ms = [](const LatencySummary& s) {
    return absl::StrFormat("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms", s.p50 * 1e3,
                           s.p90 * 1e3, s.p99 * 1e3, s.max * 1e3);
  };
  const std::string arrivals =
      scenario.concurrency > 0
          ? absl::StrFormat("closed loop of %d for %.1f s after %.1f s", scenario.concurrency,
                            scenario.duration_seconds, scenario.warmup_seconds)
          : absl::StrFormat("%d requests at %.1f/s", scenario.num_requests,
                            scenario.arrivals_per_second);
  return absl::StrCat(
      absl::StrFormat("mixed: %s, prompts %d-%d, outputs %d-%d tokens\n", arrivals,
                      scenario.min_prompt_tokens, scenario.max_prompt_tokens,
                      scenario.min_output_tokens, scenario.max_output_tokens),
      absl::StrFormat("completed %d, failed %d in %.2f s: %.1f output tok/s, %.1f total tok/s, "
                      "%.2f requests/s\n",
                      result.completed, result.failed, result.wall_seconds,
                      result.output_tokens_per_second, result.total_tokens_per_second,
                      result.requests_per_second),
      "time to first token: ", ms(result.time_to_first_token), "\n",
      "inter-token latency: ", ms(result.inter_token), "\n",
      "end to end:          ", ms(result.end_to_end), "\n",
      absl::StrFormat("engine: %d steps, %.1f tokens/step, %.2f ms/step, %d preemptions\n",
                      result.engine.steps, result.engine.mean_tokens_per_step,
                      result.engine.mean_step_seconds * 1e3, result.engine.preemptions));
}

absl::StatusOr<DecodeComparison> CompareDecode(const Model& model, EngineOptions options,
                                               int32_t batch, int32_t steps) {
  if (batch <= 0 || steps <= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode comparison: batch must be positive and steps above 1, got ", batch,
                     " and ", steps));
  }
  DecodeComparison comparison;
  comparison.batch = batch;
  comparison.steps = steps;
  SamplingParams sampling;
  sampling.temperature = 1.0f;
  const int64_t vocab = model.config().vocab_size;

  {
    options.max_running = std::max(options.max_running, batch);
    options.prefill_token_budget = std::max<int64_t>(options.prefill_token_budget, batch);
    options.max_queued = std::max(options.max_queued, batch);
    HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(model, options));
    std::vector<std::shared_ptr<GenerationStream>> streams;
    for (int32_t b = 0; b < batch; ++b) {
      GenerationRequest request;
      request.prompt = {static_cast<int32_t>(b % vocab)};
      request.sampling = sampling;
      request.sampling.seed = static_cast<uint64_t>(b);
      // The first comes from the prompt's prefill, the second from the untimed first step.
      request.stopping.max_new_tokens = steps + 2;
      request.stopping.ignore_eos = true;
      HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<GenerationStream> stream,
                             engine->Generate(std::move(request)));
      streams.push_back(std::move(stream));
    }
    // Timing starts once every sequence has decoded one token: the first decode step records the
    // step and tunes its GEMMs, as the plain loop's untimed warm-up step does below.
    while (engine->Stats().generated_tokens < 2 * int64_t{batch}) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    const int64_t start_tokens = engine->Stats().generated_tokens;
    const Clock::time_point start = Clock::now();
    for (const auto& stream : streams) {
      const StreamUpdate update = stream->Wait();
      HGRN2_RETURN_IF_ERROR(update.end->status);
    }
    const double seconds = Seconds(Clock::now() - start);
    comparison.engine_tokens_per_second =
        static_cast<double>(engine->Stats().generated_tokens - start_tokens) / seconds;
  }

  HGRN2_ASSIGN_OR_RETURN(
      std::unique_ptr<StatePool> pool,
      StatePool::Create(model.backend(), model.config(), batch, options.state_dtype));
  ForwardPass::Options pass_options;
  pass_options.max_tokens = batch;
  pass_options.max_sequences = batch;
  pass_options.prefill_chunk_size = options.prefill_chunk_size;
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<ForwardPass> pass,
                         ForwardPass::Create(model, *pool, pass_options));
  std::vector<SlotId> slots;
  std::vector<int32_t> tokens;
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<Sampler*> sampler_ptrs;
  for (int32_t b = 0; b < batch; ++b) {
    HGRN2_ASSIGN_OR_RETURN(SlotId slot, pool->Allocate());
    slots.push_back(slot);
    tokens.push_back(static_cast<int32_t>(b % vocab));
    SamplingParams seeded = sampling;
    seeded.seed = static_cast<uint64_t>(b);
    samplers.push_back(std::make_unique<Sampler>(seeded, vocab, absl::Span<const int32_t>()));
    sampler_ptrs.push_back(samplers.back().get());
  }
  std::vector<SampledToken> sampled(static_cast<size_t>(batch));
  auto step = [&]() -> absl::Status {
    HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, pass->Decode(slots, tokens));
    HGRN2_RETURN_IF_ERROR(model.backend().Sample(logits, sampler_ptrs, absl::MakeSpan(sampled)));
    for (int32_t b = 0; b < batch; ++b) tokens[b] = sampled[b].id;
    return absl::OkStatus();
  };
  HGRN2_RETURN_IF_ERROR(step());  // warm-up, as the engine's prefill step is not timed
  const Clock::time_point start = Clock::now();
  for (int32_t s = 0; s < steps; ++s) HGRN2_RETURN_IF_ERROR(step());
  comparison.direct_tokens_per_second =
      static_cast<double>(batch) * steps / Seconds(Clock::now() - start);
  comparison.ratio = comparison.engine_tokens_per_second / comparison.direct_tokens_per_second;
  return comparison;
}

std::string FormatDecodeComparison(const DecodeComparison& comparison) {
  return absl::StrFormat(
      "decode, batch %d, %d steps: engine %.1f tok/s, plain loop %.1f tok/s (%.1f%%)\n",
      comparison.batch, comparison.steps, comparison.engine_tokens_per_second,
      comparison.direct_tokens_per_second, comparison.ratio * 100.0);
}

}  // namespace hgrn2::bench
