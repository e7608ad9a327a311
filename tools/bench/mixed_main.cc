// hgrn2-bench-mixed: the mixed serving scenario (tools/bench/mixed_scenario.h) on the CPU backend
// with a model folder, for a quick look and for CI; hgrn2-bench runs the same scenario on the GPU.
//
// Usage: hgrn2-bench-mixed --model DIR [--requests N] [--rate R] [--prompt-min A --prompt-max B]
//                          [--output-min C --output-max D] [--max-running M] [--prefill-budget T]
// Exit codes: 0 every request completed; 1 some failed or the run failed; 2 bad arguments or a
// model that cannot be loaded.
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "tools/bench/mixed_scenario.h"

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "hgrn2-bench-mixed: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  hgrn2::bench::MixedScenario scenario;
  hgrn2::EngineOptions options;
  CLI::App app{"hgrn2-bench-mixed: Poisson arrivals of mixed requests at an in-process engine"};
  app.add_option("--model", model_dir, "model folder (config.json + safetensors)")->required();
  app.add_option("--requests", scenario.num_requests, "requests in all")->capture_default_str();
  app.add_option("--rate", scenario.arrivals_per_second, "arrivals per second (Poisson)")
      ->capture_default_str();
  app.add_option("--prompt-min", scenario.min_prompt_tokens)->capture_default_str();
  app.add_option("--prompt-max", scenario.max_prompt_tokens)->capture_default_str();
  app.add_option("--output-min", scenario.min_output_tokens)->capture_default_str();
  app.add_option("--output-max", scenario.max_output_tokens)->capture_default_str();
  app.add_option("--seed", scenario.seed)->capture_default_str();
  app.add_option("--max-running", options.max_running, "sequences advanced together")
      ->capture_default_str();
  app.add_option("--prefill-budget", options.prefill_token_budget, "prompt tokens per iteration")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-bench-mixed: %s (see --help)\n", e.what());
    return kExitUsage;
  }
  if (absl::Status valid = scenario.Validate(); !valid.ok()) {
    return Fail(kExitUsage, std::string(valid.message()));
  }
  options.max_queued = std::max(options.max_queued, scenario.num_requests);
  std::unique_ptr<hgrn2::Backend> backend = hgrn2::MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<hgrn2::Model>> model = hgrn2::Model::Load(model_dir, *backend);
  if (!model.ok()) return Fail(kExitUsage, model.status().ToString());
  absl::StatusOr<std::unique_ptr<hgrn2::Engine>> engine = hgrn2::Engine::Create(**model, options);
  if (!engine.ok()) return Fail(kExitUsage, engine.status().ToString());
  absl::StatusOr<hgrn2::bench::MixedResult> result =
      hgrn2::bench::RunMixedScenario(**engine, scenario);
  if (!result.ok()) return Fail(kExitFailed, result.status().ToString());
  std::fputs(hgrn2::bench::FormatMixedResult(scenario, *result).c_str(), stdout);
  if (result->failed > 0) {
    return Fail(kExitFailed, std::to_string(result->failed) + " requests did not complete");
  }
  return 0;
}
