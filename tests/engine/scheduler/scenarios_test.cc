// The serving scenarios: percentiles by nearest rank, a short mixed run on a fixture model whose
// counts must add up, and the decode comparison.
#include "tools/bench/scenarios.h"

#include <memory>

#include "engine/backend/backend.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2::bench {
namespace {

using ::hgrn2::testing::ExpectError;

TEST(MixedScenario, SummarizeTakesNearestRankPercentiles) {
  std::vector<double> values;
  for (int i = 100; i >= 1; --i) values.push_back(i * 0.001);  // unsorted on purpose
  const LatencySummary summary = Summarize(values);
  EXPECT_EQ(summary.count, 100);
  EXPECT_DOUBLE_EQ(summary.p50, 0.050);
  EXPECT_DOUBLE_EQ(summary.p90, 0.090);
  EXPECT_DOUBLE_EQ(summary.p99, 0.099);
  EXPECT_DOUBLE_EQ(summary.max, 0.100);
  EXPECT_NEAR(summary.mean, 0.0505, 1e-12);
  const LatencySummary one = Summarize({0.25});
  EXPECT_DOUBLE_EQ(one.p50, 0.25);
  EXPECT_DOUBLE_EQ(one.p99, 0.25);
  EXPECT_EQ(Summarize({}).count, 0);
}

TEST(MixedScenario, AClosedLoopKeepsItsConcurrencyAndCountsOnlyTheWindow) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto model = *Model::Load(::hgrn2::testing::TestDataDir() / "tiny-a", *backend);
  EngineOptions options;
  options.max_running = 4;
  auto engine = *Engine::Create(*model, options);
  MixedScenario scenario;
  scenario.concurrency = 4;
  scenario.warmup_seconds = 0.2;
  scenario.duration_seconds = 0.5;
  scenario.min_prompt_tokens = 1;
  scenario.max_prompt_tokens = 20;
  scenario.min_output_tokens = 2;
  scenario.max_output_tokens = 8;
  absl::StatusOr<MixedResult> result = RunMixedScenario(*engine, scenario);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->failed, 0);
  EXPECT_GT(result->completed, 4);
  EXPECT_EQ(result->time_to_first_token.count, result->completed);
  // Tokens of the warm-up and of requests cancelled at the end are generated but not all counted.
  EXPECT_GT(result->generated_tokens, 0);
  EXPECT_LT(result->generated_tokens, result->engine.generated_tokens);
  EXPECT_DOUBLE_EQ(result->wall_seconds, 0.5);
  // Never more than the concurrency in flight: nothing waited beyond max_running.
  EXPECT_EQ(result->engine.preemptions, 0);

  scenario.concurrency = -1;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument, {"concurrency"});
  scenario.concurrency = 2;
  scenario.duration_seconds = 0;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument, {"duration_seconds"});
}

TEST(MixedScenario, AShortRunCompletesEveryRequestAndCountsEveryToken) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto model = *Model::Load(::hgrn2::testing::TestDataDir() / "tiny-a", *backend);
  EngineOptions options;
  options.max_running = 8;
  options.prefill_token_budget = 64;
  auto engine = *Engine::Create(*model, options);
  MixedScenario scenario;
  scenario.num_requests = 24;
  scenario.arrivals_per_second = 200.0;
  scenario.min_prompt_tokens = 1;
  scenario.max_prompt_tokens = 100;
  scenario.min_output_tokens = 1;
  scenario.max_output_tokens = 12;
  absl::StatusOr<MixedResult> result = RunMixedScenario(*engine, scenario);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->completed, 24);
  EXPECT_EQ(result->failed, 0);
  EXPECT_EQ(result->generated_tokens, result->engine.generated_tokens);
  EXPECT_EQ(result->prompt_tokens, result->engine.prompt_tokens);
  EXPECT_EQ(result->time_to_first_token.count, 24);
  EXPECT_EQ(result->end_to_end.count, 24);
  // One gap per token after each request's first.
  EXPECT_EQ(result->inter_token.count, result->generated_tokens - 24);
  EXPECT_GT(result->output_tokens_per_second, 0.0);
  EXPECT_LE(result->time_to_first_token.p50, result->time_to_first_token.p90);
  EXPECT_LE(result->time_to_first_token.p90, result->time_to_first_token.p99);
  EXPECT_LE(result->time_to_first_token.p99, result->end_to_end.max);
  const std::string text = FormatMixedResult(scenario, *result);
  EXPECT_NE(text.find("completed 24, failed 0"), std::string::npos) << text;
}

TEST(DecodeComparison, MeasuresBothWaysOfDecodingTheSameBatch) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto model = *Model::Load(::hgrn2::testing::TestDataDir() / "tiny-a", *backend);
  absl::StatusOr<DecodeComparison> comparison = CompareDecode(*model, EngineOptions{}, 8, 6);
  ASSERT_TRUE(comparison.ok()) << comparison.status();
  EXPECT_EQ(comparison->batch, 8);
  EXPECT_GT(comparison->engine_tokens_per_second, 0.0);
  EXPECT_GT(comparison->direct_tokens_per_second, 0.0);
  EXPECT_DOUBLE_EQ(comparison->ratio,
                   comparison->engine_tokens_per_second / comparison->direct_tokens_per_second);
  ExpectError(CompareDecode(*model, EngineOptions{}, 0, 6).status(),
              absl::StatusCode::kInvalidArgument, {"batch must be positive", "got 0 and 6"});
}

TEST(MixedScenario, BadScenariosAreRefusedNamingTheField) {
  MixedScenario scenario;
  scenario.num_requests = 0;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument,
              {"num_requests must be positive, got 0"});
  scenario = MixedScenario{};
  scenario.arrivals_per_second = 0.0;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument,
              {"arrivals_per_second must be positive"});
  scenario = MixedScenario{};
  scenario.min_prompt_tokens = 10;
  scenario.max_prompt_tokens = 5;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument,
              {"prompt lengths", "[10, 5]"});
  scenario = MixedScenario{};
  scenario.min_output_tokens = 0;
  ExpectError(scenario.Validate(), absl::StatusCode::kInvalidArgument,
              {"output lengths", "[0, 256]"});
}

}  // namespace
}  // namespace hgrn2::bench
