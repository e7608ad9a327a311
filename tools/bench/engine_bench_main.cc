// hgrn2-bench-engine: the engine benchmarks of tools/bench/scenarios.h on the CPU backend with a
// model folder, for a quick look and for CI; hgrn2-bench runs the same scenarios on the GPU.
//
// Usage: hgrn2-bench-engine --model DIR [--scenario mixed|decode] [--max-running M]
//          [--prefill-budget T]
//   mixed:  [--requests N] [--rate R] [--prompt-min A --prompt-max B] [--output-min C
//           --output-max D] [--seed S]
//   decode: [--batch B] [--steps S]
// Exit codes: 0 success; 1 a request failed or the run failed; 2 bad arguments or a model that
// cannot be loaded.
#include <algorithm>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "tools/bench/scenarios.h"

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "hgrn2-bench-engine: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  std::string scenario_name = "mixed";
  hgrn2::bench::MixedScenario mixed;
  int32_t batch = 64;
  int32_t steps = 64;
  hgrn2::EngineOptions options;
  CLI::App app{"hgrn2-bench-engine: serving scenarios against an in-process engine"};
  app.add_option("--model", model_dir, "model folder (config.json + safetensors)")->required();
  app.add_option("--scenario", scenario_name, "mixed or decode")
      ->check(CLI::IsMember({"mixed", "decode"}))
      ->capture_default_str();
  app.add_option("--requests", mixed.num_requests, "mixed: requests in all")->capture_default_str();
  app.add_option("--rate", mixed.arrivals_per_second, "mixed: arrivals per second (Poisson)")
      ->capture_default_str();
  app.add_option("--prompt-min", mixed.min_prompt_tokens)->capture_default_str();
  app.add_option("--prompt-max", mixed.max_prompt_tokens)->capture_default_str();
  app.add_option("--output-min", mixed.min_output_tokens)->capture_default_str();
  app.add_option("--output-max", mixed.max_output_tokens)->capture_default_str();
  app.add_option("--seed", mixed.seed)->capture_default_str();
  app.add_option("--batch", batch, "decode: sequences")->capture_default_str();
  app.add_option("--steps", steps, "decode: tokens per sequence")->capture_default_str();
  app.add_option("--max-running", options.max_running, "sequences advanced together")
      ->capture_default_str();
  app.add_option("--prefill-budget", options.prefill_token_budget, "prompt tokens per iteration")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-bench-engine: %s (see --help)\n", e.what());
    return kExitUsage;
  }
  if (absl::Status valid = mixed.Validate(); !valid.ok()) {
    return Fail(kExitUsage, std::string(valid.message()));
  }
  std::unique_ptr<hgrn2::Backend> backend = hgrn2::MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<hgrn2::Model>> model = hgrn2::Model::Load(model_dir, *backend);
  if (!model.ok()) return Fail(kExitUsage, model.status().ToString());

  if (scenario_name == "decode") {
    absl::StatusOr<hgrn2::bench::DecodeComparison> comparison =
        hgrn2::bench::CompareDecode(**model, options, batch, steps);
    if (!comparison.ok()) return Fail(kExitFailed, comparison.status().ToString());
    std::fputs(hgrn2::bench::FormatDecodeComparison(*comparison).c_str(), stdout);
    return 0;
  }
  options.max_queued = std::max(options.max_queued, mixed.num_requests);
  absl::StatusOr<std::unique_ptr<hgrn2::Engine>> engine = hgrn2::Engine::Create(**model, options);
  if (!engine.ok()) return Fail(kExitUsage, engine.status().ToString());
  absl::StatusOr<hgrn2::bench::MixedResult> result =
      hgrn2::bench::RunMixedScenario(**engine, mixed);
  if (!result.ok()) return Fail(kExitFailed, result.status().ToString());
  std::fputs(hgrn2::bench::FormatMixedResult(mixed, *result).c_str(), stdout);
  if (result->failed > 0) {
    return Fail(kExitFailed, std::to_string(result->failed) + " requests did not complete");
  }
  return 0;
}
