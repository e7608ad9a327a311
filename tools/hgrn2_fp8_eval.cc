// hgrn2-fp8-eval: how far FP8 (E4M3) weights move a model from its checkpoint, on held-out text.
//
// Loads the model three times on the CPU (float32 math): as stored, with every projection rounded
// to FP8 with a scale per output channel, and with the embedding table and output head rounded
// too (ModelLoadOptions). Scores the held-out chapters of an eval folder (heldout_ids.json: the
// ids the training run scored) with each, and greedily continues one prompt for --greedy-tokens
// tokens with each. Reports, against the model as stored: perplexity and its relative change, the
// largest and mean |Δ log-probability| of the text's tokens, the share of positions where the
// most probable token is the same (teacher-forced top-1 agreement), and in the free-running
// continuation how many tokens agree before the first difference and in all.
//
// Usage: hgrn2-fp8-eval [--model models/hgrn2-demo] [--eval-dir tests/data/hgrn2-demo-eval]
//                       [--chapters N] [--greedy-tokens 1000] [--json FILE]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"

namespace hgrn2 {
namespace {

struct Variant {
  const char* name;
  ModelLoadOptions options;
};

// One variant's outputs: per scored position of every chapter, the text token's log-probability
// and the most probable token; the greedy continuation.
struct Outputs {
  std::vector<float> logprobs;
  std::vector<int32_t> top1;
  std::vector<int32_t> greedy;
};

absl::StatusOr<Outputs> Run(const std::filesystem::path& model_dir, const ModelLoadOptions& options,
                            const std::vector<std::vector<int32_t>>& chapters,
                            const std::vector<int32_t>& prompt, int32_t greedy_tokens) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(model_dir, *backend, options);
  if (!model.ok()) return model.status();
  EngineOptions engine_options;
  engine_options.max_running = 16;
  engine_options.prefill_token_budget = 4096;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(**model, engine_options);
  if (!engine.ok()) return engine.status();
  std::vector<std::shared_ptr<PendingScore>> pending;
  for (const std::vector<int32_t>& ids : chapters) {
    ScoreRequest request;
    request.tokens = ids;
    request.num_top_logprobs = 1;
    absl::StatusOr<std::shared_ptr<PendingScore>> score = (*engine)->Score(std::move(request));
    if (!score.ok()) return score.status();
    pending.push_back(*std::move(score));
  }
  Outputs out;
  for (const std::shared_ptr<PendingScore>& score : pending) {
    absl::StatusOr<ScoreResult> result = score->Wait();
    if (!result.ok()) return result.status();
    out.logprobs.insert(out.logprobs.end(), result->logprobs.begin(), result->logprobs.end());
    for (const std::vector<TokenLogprob>& top : result->top) out.top1.push_back(top.at(0).id);
  }
  if (greedy_tokens > 0) {
    GenerationRequest request;
    request.prompt = prompt;
    request.sampling.temperature = 0.0f;
    request.stopping.max_new_tokens = greedy_tokens;
    request.stopping.ignore_eos = true;
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream =
        (*engine)->Generate(std::move(request));
    if (!stream.ok()) return stream.status();
    for (;;) {
      StreamUpdate update = (*stream)->Wait();
      for (const SampledToken& token : update.tokens) out.greedy.push_back(token.id);
      if (update.end) {
        if (!update.end->status.ok()) return update.end->status;
        break;
      }
    }
  }
  return out;
}

double Perplexity(const std::vector<float>& logprobs) {
  double nll = 0.0;
  for (float logprob : logprobs) nll -= logprob;
  return std::exp(nll / static_cast<double>(logprobs.size()));
}

int Main(int argc, char** argv) {
  CLI::App app{"How far FP8 weights move a model from its checkpoint, on held-out text"};
  std::string model_dir = std::string(HGRN2_SOURCE_DIR) + "/models/hgrn2-demo";
  std::string eval_dir = std::string(HGRN2_SOURCE_DIR) + "/tests/data/hgrn2-demo-eval";
  int chapters_wanted = 0;
  int32_t greedy_tokens = 1000;
  std::string json_path;
  app.add_option("--model", model_dir, "A checkpoint folder");
  app.add_option("--eval-dir", eval_dir, "A folder with heldout_ids.json");
  app.add_option("--chapters", chapters_wanted, "Score only the first N chapters (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--greedy-tokens", greedy_tokens, "Tokens of the greedy continuation (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--json", json_path, "Also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(std::filesystem::path(eval_dir) / "heldout_ids.json");
  if (!in.good()) {
    std::fprintf(stderr, "hgrn2-fp8-eval: cannot read %s/heldout_ids.json\n", eval_dir.c_str());
    return 1;
  }
  std::vector<std::vector<int32_t>> chapters;
  try {
    const nlohmann::json heldout = nlohmann::json::parse(in);
    for (const nlohmann::json& document : heldout.at("documents")) {
      if (chapters_wanted > 0 && static_cast<int>(chapters.size()) == chapters_wanted) break;
      chapters.push_back(document.at("ids").get<std::vector<int32_t>>());
    }
  } catch (const nlohmann::json::exception& e) {
    // Not JSON, or not {"documents": [{"ids": [...]}, ...]}.
    std::fprintf(stderr, "hgrn2-fp8-eval: heldout_ids.json: %s\n", e.what());
    return 1;
  }
  if (chapters.empty() || chapters[0].size() < 65) {
    std::fprintf(stderr, "hgrn2-fp8-eval: no chapter of at least 65 ids in heldout_ids.json\n");
    return 1;
  }
  // The greedy continuation's prompt: the first chapter's first 64 ids.
  const std::vector<int32_t> prompt(chapters[0].begin(), chapters[0].begin() + 64);

  const Variant variants[] = {
      {"as stored", {}},
      {"fp8 projections", {.fp8_projections = true}},
      {"fp8 projections + embeddings", {.fp8_projections = true, .fp8_embeddings = true}},
  };
  std::vector<Outputs> outputs;
  for (const Variant& variant : variants) {
    absl::StatusOr<Outputs> out = Run(model_dir, variant.options, chapters, prompt, greedy_tokens);
    if (!out.ok()) {
      std::fprintf(stderr, "hgrn2-fp8-eval: %s: %s\n", variant.name,
                   out.status().ToString().c_str());
      return 1;
    }
    outputs.push_back(*std::move(out));
  }

  const Outputs& base = outputs[0];
  const double base_perplexity = Perplexity(base.logprobs);
  nlohmann::json report = {{"model", model_dir},
                           {"chapters", chapters.size()},
                           {"positions", base.logprobs.size()},
                           {"greedy_tokens", base.greedy.size()},
                           {"variants", nlohmann::json::array()}};
  std::printf("%zu chapters, %zu scored positions; greedy continuation of %zu tokens\n",
              chapters.size(), base.logprobs.size(), base.greedy.size());
  std::printf(
      "| weights | perplexity | vs as stored | max abs Δ logprob | mean abs Δ logprob | "
      "top-1 agreement | greedy: same before first difference | greedy: same in all |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (size_t v = 0; v < outputs.size(); ++v) {
    const Outputs& out = outputs[v];
    double largest = 0.0;
    double total = 0.0;
    size_t same_top1 = 0;
    for (size_t t = 0; t < out.logprobs.size(); ++t) {
      const double delta = std::fabs(static_cast<double>(out.logprobs[t]) - base.logprobs[t]);
      largest = std::max(largest, delta);
      total += delta;
      same_top1 += out.top1[t] == base.top1[t];
    }
    size_t prefix = 0;
    while (prefix < out.greedy.size() && out.greedy[prefix] == base.greedy[prefix]) ++prefix;
    size_t same_greedy = 0;
    for (size_t t = 0; t < out.greedy.size(); ++t) same_greedy += out.greedy[t] == base.greedy[t];
    const double perplexity = Perplexity(out.logprobs);
    const double positions = static_cast<double>(out.logprobs.size());
    std::printf("| %s | %.4f | %+.3f%% | %.4f | %.5f | %.2f%% | %zu | %zu of %zu |\n",
                variants[v].name, perplexity, 100.0 * (perplexity / base_perplexity - 1.0), largest,
                total / positions, 100.0 * static_cast<double>(same_top1) / positions, prefix,
                same_greedy, out.greedy.size());
    report["variants"].push_back({{"weights", variants[v].name},
                                  {"perplexity", perplexity},
                                  {"perplexity_change", perplexity / base_perplexity - 1.0},
                                  {"max_abs_logprob_delta", largest},
                                  {"mean_abs_logprob_delta", total / positions},
                                  {"top1_agreement", static_cast<double>(same_top1) / positions},
                                  {"greedy_same_prefix", prefix},
                                  {"greedy_same", same_greedy}});
  }
  if (!json_path.empty()) {
    std::ofstream json(json_path);
    json << report.dump(2) << "\n";
    if (!json.good()) {
      std::fprintf(stderr, "hgrn2-fp8-eval: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace hgrn2

int main(int argc, char** argv) { return hgrn2::Main(argc, argv); }
