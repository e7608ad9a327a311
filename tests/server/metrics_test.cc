// ServerMetrics without a server: the model_name label on every series (registered families and
// those collected at scrape), the opt-in tenant label and its cap, and the served model's default
// name.
#include "server/core/metrics.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The sample lines of a scrape (no comments).
std::vector<std::string> Samples(const std::string& scrape) {
  std::vector<std::string> samples;
  for (absl::string_view line : absl::StrSplit(scrape, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "#")) samples.emplace_back(line);
  }
  return samples;
}

TEST(MetricsTest, EverySeriesCarriesTheServedModelName) {
  ServerMetrics metrics("demo-7m");
  metrics.SetModelInfo("models/hgrn2-demo", "cpu", "f32");
  metrics.SetServing(true);
  metrics.RecordRequest("Generate", absl::StatusCode::kOk, 0.25);
  metrics.RecordTimeToFirstToken(0.01);
  metrics.RecordRefusedCall("missing_api_key", "");
  EngineStats stats;
  stats.generated_tokens = 42;
  stats.num_slots = 8;
  metrics.SetEngineStatsSource([stats] { return stats; });
  metrics.SetSessionStatsSource([] { return SessionMetrics{}; });

  const std::string scrape = metrics.Render();
  const std::vector<std::string> samples = Samples(scrape);
  ASSERT_GT(samples.size(), 50u);
  for (const std::string& sample : samples) {
    EXPECT_THAT(sample, HasSubstr("model_name=\"demo-7m\"")) << sample;
  }
  // In the place a constant label would have: the labels stay sorted by name.
  EXPECT_THAT(scrape, HasSubstr("hgrn2_requests_total{code=\"OK\",model_name=\"demo-7m\","
                                "rpc=\"Generate\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_generated_tokens_total{model_name=\"demo-7m\"} 42\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_serving{model_name=\"demo-7m\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_model_info{backend=\"cpu\",dtype=\"f32\",model=\"models/"
                                "hgrn2-demo\",model_name=\"demo-7m\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_time_to_first_token_seconds_bucket{model_name=\"demo-7m\","
                                "le=\"0.01\"} 1\n"));
  // No tenant label unless asked for.
  EXPECT_THAT(scrape, HasSubstr("hgrn2_refused_calls_total{model_name=\"demo-7m\",reason=\""
                                "missing_api_key\"} 1\n"));
  EXPECT_THAT(scrape, Not(HasSubstr("tenant=")));
}

// With a limit of 2, the first two tenants seen keep their names and every later one is "other";
// calls without a tenant stay "".
TEST(MetricsTest, TenantLabelIsOptInAndCapped) {
  ServerMetrics metrics("m", /*tenant_label_limit=*/2);
  metrics.RecordRefusedCall("tokens_per_minute", "acme");
  metrics.RecordRefusedCall("tokens_per_minute", "lab");
  metrics.RecordRefusedCall("tokens_per_minute", "third");
  metrics.RecordRefusedCall("tokens_per_minute", "fourth");
  metrics.RecordRefusedCall("tokens_per_minute", "acme");
  metrics.RecordRefusedCall("missing_api_key", "");
  metrics.RecordRequest("Generate", absl::StatusCode::kOk, 0.1, "lab");
  metrics.RecordRequest("Generate", absl::StatusCode::kOk, 0.1, "fifth");
  metrics.RecordRequest("Score", absl::StatusCode::kOk, 0.1);
  const std::string scrape = metrics.Render();
  const std::string refused = "hgrn2_refused_calls_total{model_name=\"m\",";
  EXPECT_THAT(scrape, HasSubstr(refused + "reason=\"tokens_per_minute\",tenant=\"acme\"} 2\n"));
  EXPECT_THAT(scrape, HasSubstr(refused + "reason=\"tokens_per_minute\",tenant=\"lab\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr(refused + "reason=\"tokens_per_minute\",tenant=\"other\"} 2\n"));
  EXPECT_THAT(scrape, HasSubstr(refused + "reason=\"missing_api_key\",tenant=\"\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_requests_total{code=\"OK\",model_name=\"m\",rpc=\""
                                "Generate\",tenant=\"lab\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_requests_total{code=\"OK\",model_name=\"m\",rpc=\""
                                "Generate\",tenant=\"other\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("hgrn2_requests_total{code=\"OK\",model_name=\"m\",rpc=\""
                                "Score\",tenant=\"\"} 1\n"));
  for (const char* name : {"third", "fourth", "fifth"}) {
    EXPECT_THAT(scrape, Not(HasSubstr(absl::StrCat("tenant=\"", name, "\""))));
  }
}

TEST(MetricsTest, ServedModelNameDefaultsToTheModelFolder) {
  ServerOptions options;
  options.model_dir = "/models/hgrn2-1.3b";
  EXPECT_EQ(Server::ServedModelName(options), "hgrn2-1.3b");
  options.model_dir = "models/hgrn2-demo/";
  EXPECT_EQ(Server::ServedModelName(options), "hgrn2-demo");
  options.served_model_name = "demo";
  EXPECT_EQ(Server::ServedModelName(options), "demo");
  options.served_model_name.clear();
  options.model_dir.clear();
  options.preset = "1.3b";
  EXPECT_EQ(Server::ServedModelName(options), "random:1.3b");
}

}  // namespace
}  // namespace hgrn2::server
