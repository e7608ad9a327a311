// Serving benchmarks of an Engine: "mixed" (requests with mixed prompt and output lengths arrive
// at random, a Poisson process; throughput and per-request latencies) and "decode" (scheduled
// decoding against a plain decode loop).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/model/model.h"

namespace hgrn2::bench {

struct MixedScenario {
  int32_t num_requests = 200;
  double arrivals_per_second = 20.0;  // the Poisson rate; times between arrivals are exponential
  // Lengths are drawn uniformly from [min, max]; outputs run to their length (EOS ignored).
  int32_t min_prompt_tokens = 16;
  int32_t max_prompt_tokens = 1024;
  int32_t min_output_tokens = 16;
  int32_t max_output_tokens = 256;
  float temperature = 1.0f;  // seeded per request, so a run is reproducible on the CPU
  uint64_t seed = 1;
  // > 0: a closed loop instead of arrivals: `concurrency` requests in flight, a new one submitted
  // as soon as one ends (what hgrn2-loadgen --concurrency does through the server), for
  // warmup_seconds and then duration_seconds; num_requests and the rate are not used. Throughput
  // counts the tokens delivered inside the measured window; latencies are those of the requests
  // that arrived in it.
  int32_t concurrency = 0;
  double warmup_seconds = 3.0;
  double duration_seconds = 10.0;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// Percentiles (nearest rank) and mean of a set of durations, in seconds; zeros when empty.
struct LatencySummary {
  int64_t count = 0;
  double mean = 0.0, p50 = 0.0, p90 = 0.0, p99 = 0.0, max = 0.0;
};
LatencySummary Summarize(std::vector<double> seconds);

struct MixedResult {
  int32_t completed = 0;      // ended OK
  int32_t failed = 0;         // refused at submission or ended with another status
  double wall_seconds = 0.0;  // first arrival to last end
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double output_tokens_per_second = 0.0;
  double total_tokens_per_second = 0.0;  // prompt and output
  double requests_per_second = 0.0;
  LatencySummary time_to_first_token;  // arrival to first token
  LatencySummary inter_token;          // between consecutive tokens of one request
  LatencySummary end_to_end;           // arrival to last token
  EngineStats engine;                  // at the end
};

// Submits the scenario's requests at their arrival times from the calling thread and waits for
// all of them. The engine is shared: its counters include whatever else it runs.
absl::StatusOr<MixedResult> RunMixedScenario(Engine& engine, const MixedScenario& scenario);

// A few lines for a terminal or bench/RESULTS.md.
std::string FormatMixedResult(const MixedScenario& scenario, const MixedResult& result);

// Scheduled against pure decoding: `batch` one-token prompts decoded for `steps` tokens each
// through an Engine, then the same batch through ForwardPass::Decode and Backend::Sample in a
// plain loop on a pool of its own: what the scheduler costs per step. The engine is created
// here and stopped before the plain loop runs, so only one thread drives the backend at a time.
struct DecodeComparison {
  int32_t batch = 0;
  int32_t steps = 0;
  double engine_tokens_per_second = 0.0;
  double direct_tokens_per_second = 0.0;
  double ratio = 0.0;  // engine / direct
};
absl::StatusOr<DecodeComparison> CompareDecode(const Model& model, EngineOptions options,
                                               int32_t batch, int32_t steps);
std::string FormatDecodeComparison(const DecodeComparison& comparison);

}  // namespace hgrn2::bench
