// hgrn2-run: offline generation and scoring with the engine in-process (no server).
//
// Generate:  hgrn2-run --model DIR --prompt-ids 1,2,3 [--max-new-tokens N] [--print-ids] ...
//            hgrn2-run --model DIR --prompt "text" [...]   (the model folder's tokenizer)
// Score:     hgrn2-run --model DIR --prompt-ids 1,2,3 --score
//
// Output: with --prompt, the generated text (special tokens left out) and a newline; with
// --prompt-ids or --print-ids, the generated ids, comma-separated on one line.
// Exit codes: 0 success; 2 bad arguments or a model that cannot be loaded (one line on stderr);
// 1 a failure while running.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/backend/backend.h"
#include "engine/model/forward_pass.h"
#include "engine/model/generation.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"

namespace hgrn2 {
namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitUsage = 2;

struct RunOptions {
  std::string model_dir;
  std::string prompt_ids;
  std::optional<std::string> prompt;  // text, encoded with the model folder's tokenizer
  std::string device = "cpu";
  int32_t max_new_tokens = 32;
  SamplingParams sampling;
  std::string seed;  // parsed as uint64 when given
  std::vector<std::string> logit_bias;
  std::string stop_ids;
  bool ignore_eos = false;
  bool print_ids = false;
  bool score = false;
  int32_t logprobs = 0;
  std::string prefill_mode = "auto";
  std::string dtype = "bf16";
};

int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "hgrn2-run: %.*s\n", static_cast<int>(message.size()), message.data());
  return code;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", part, "\" is not an integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<std::pair<int32_t, float>>> ParseLogitBias(
    const std::vector<std::string>& entries) {
  std::vector<std::pair<int32_t, float>> bias;
  for (const std::string& entry : entries) {
    const std::vector<absl::string_view> parts = absl::StrSplit(entry, '=');
    int32_t id;
    float value;
    const absl::string_view text =
        parts.size() == 2 ? absl::StripAsciiWhitespace(parts[1]) : absl::string_view();
    const bool is_ban = text == "-inf";
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id) ||
        (!is_ban && !absl::SimpleAtof(text, &value))) {
      return absl::InvalidArgumentError(
          absl::StrCat("--logit-bias: \"", entry, "\" is not ID=VALUE (VALUE may be -inf)"));
    }
    bias.emplace_back(id, is_ban ? -std::numeric_limits<float>::infinity() : value);
  }
  return bias;
}

int Run(const RunOptions& options) {
  if (options.device != "cpu" && options.device != "cuda" && options.device != "auto") {
    return Fail(kExitUsage,
                absl::StrCat("--device ", options.device, ": expected cpu, cuda or auto"));
  }
  if (!options.prompt && options.prompt_ids.empty()) {
    return Fail(kExitUsage, "either --prompt TEXT or --prompt-ids IDS is needed");
  }
  absl::StatusOr<std::vector<int32_t>> prompt = ParseIds(options.prompt_ids, "--prompt-ids");
  if (!prompt.ok()) return Fail(kExitUsage, prompt.status().message());
  if (!options.prompt && prompt->empty()) {
    return Fail(kExitUsage, "--prompt-ids: at least one token id is needed");
  }
  if (options.prefill_mode != "auto" && options.prefill_mode != "chunked" &&
      options.prefill_mode != "recurrent") {
    return Fail(kExitUsage, "--prefill-mode: expected auto, chunked or recurrent");
  }

  CudaBackendOptions cuda_options;
  const absl::StatusOr<WeightPrecision> precision = ParseWeightPrecision(options.dtype);
  if (!precision.ok()) {
    return Fail(kExitUsage, absl::StrCat("--dtype ", precision.status().message()));
  }
  cuda_options.compute_dtype = precision->compute_dtype;
  absl::StatusOr<std::unique_ptr<Backend>> made = MakeBackend(options.device, cuda_options);
  if (!made.ok()) return Fail(kExitUsage, made.status().message());
  std::unique_ptr<Backend> backend = *std::move(made);
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(options.model_dir, *backend, {.fp8_weights = precision->fp8_weights});
  if (!model.ok()) return Fail(kExitUsage, model.status().ToString());
  const ModelConfig& config = (*model)->config();
  std::unique_ptr<Tokenizer> tokenizer;
  if (options.prompt) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(options.model_dir);
    if (absl::IsNotFound(loaded.status())) {
      return Fail(kExitUsage, absl::StrCat("--prompt: ", loaded.status().message(),
                                           "; this model takes --prompt-ids"));
    }
    if (!loaded.ok()) return Fail(kExitUsage, loaded.status().message());
    tokenizer = *std::move(loaded);
    // BOS (or whatever the tokenizer's post-processor adds), as the model was trained.
    prompt = tokenizer->Encode(*options.prompt, /*add_special=*/true);
    if (!prompt.ok())
      return Fail(kExitUsage, absl::StrCat("--prompt: ", prompt.status().message()));
    if (prompt->empty()) return Fail(kExitUsage, "--prompt: the text encodes to no tokens");
  }
  const char* prompt_flag = options.prompt ? "--prompt" : "--prompt-ids";
  for (size_t t = 0; t < prompt->size(); ++t) {
    if ((*prompt)[t] < 0 || (*prompt)[t] >= config.vocab_size) {
      return Fail(kExitUsage,
                  absl::StrCat(prompt_flag, ": id ", (*prompt)[t], " at position ", t,
                               " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  if (options.score && prompt->size() < 2) {
    return Fail(kExitUsage, absl::StrCat("--score: needs at least 2 prompt ids (the first is only "
                                         "context); ",
                                         prompt_flag, " gave ", prompt->size()));
  }

  SamplingParams sampling = options.sampling;
  if (!options.seed.empty()) {
    uint64_t seed;
    if (!absl::SimpleAtoi(options.seed, &seed)) {
      return Fail(kExitUsage,
                  absl::StrCat("--seed: \"", options.seed, "\" is not an integer in [0, 2^64)"));
    }
    sampling.seed = seed;
  }
  sampling.num_top_logprobs = options.logprobs;
  absl::StatusOr<std::vector<std::pair<int32_t, float>>> bias = ParseLogitBias(options.logit_bias);
  if (!bias.ok()) return Fail(kExitUsage, bias.status().message());
  sampling.logit_bias = *bias;
  if (absl::Status status = sampling.Validate(config.vocab_size); !status.ok()) {
    return Fail(kExitUsage, status.message());
  }
  StoppingParams stopping;
  stopping.max_new_tokens = options.max_new_tokens;
  stopping.ignore_eos = options.ignore_eos;
  absl::StatusOr<std::vector<int32_t>> stop_ids = ParseIds(options.stop_ids, "--stop-ids");
  if (!stop_ids.ok()) return Fail(kExitUsage, stop_ids.status().message());
  stopping.stop_token_ids = *stop_ids;
  if (absl::Status status = stopping.Validate(config.vocab_size); !status.ok()) {
    return Fail(kExitUsage, status.message());
  }

  absl::StatusOr<std::unique_ptr<StatePool>> pool = StatePool::Create(*backend, config, 1);
  if (!pool.ok()) return Fail(kExitRuntimeError, pool.status().ToString());
  ForwardPass::Options pass_options;
  pass_options.max_sequences = 1;
  if (options.prefill_mode != "auto") {
    pass_options.prefill_chunk_size = options.prefill_mode == "chunked" ? 64 : 0;
  }
  absl::StatusOr<std::unique_ptr<ForwardPass>> pass =
      ForwardPass::Create(**model, **pool, pass_options);
  if (!pass.ok()) return Fail(kExitRuntimeError, pass.status().ToString());

  if (options.score) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<float>> logprobs = ScoreSequence(**pass, *prompt);
    if (!logprobs.ok()) return Fail(kExitRuntimeError, logprobs.status().ToString());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (size_t t = 1; t < prompt->size(); ++t) {
      std::printf("%zu %d %.6f\n", t, (*prompt)[t], (*logprobs)[t - 1]);
    }
    std::fprintf(stderr, "hgrn2-run: scored %zu tokens in %.1f ms (%.1f tokens/s)\n",
                 prompt->size(), seconds * 1e3, static_cast<double>(prompt->size()) / seconds);
    return 0;
  }

  absl::StatusOr<GenerationResult> result = GenerateSequence(**pass, *prompt, sampling, stopping);
  if (!result.ok()) return Fail(kExitRuntimeError, result.status().ToString());
  std::vector<int32_t> ids;
  for (const SampledToken& token : result->tokens) ids.push_back(token.id);
  if (tokenizer != nullptr && !options.print_ids) {
    // The prompt is the decoder's context, so the first new token keeps its leading space.
    StreamDecoder decoder(*tokenizer, /*skip_special=*/true, *prompt);
    std::string text;
    for (int32_t id : ids) {
      absl::StatusOr<std::string> delta = decoder.Push(id);
      if (!delta.ok()) return Fail(kExitRuntimeError, delta.status().ToString());
      text += *delta;
    }
    absl::StatusOr<std::string> rest = decoder.Finish();
    if (!rest.ok()) return Fail(kExitRuntimeError, rest.status().ToString());
    absl::StrAppend(&text, *rest, "\n");
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    std::printf("%s\n", absl::StrJoin(ids, ",").c_str());
  }
  if (options.logprobs > 0) {
    for (size_t i = 0; i < result->tokens.size(); ++i) {
      const SampledToken& token = result->tokens[i];
      std::string alternatives;
      for (const TokenLogprob& alt : token.top) {
        absl::StrAppend(&alternatives, " ", alt.id, ":", absl::StrFormat("%.6f", alt.logprob));
      }
      std::printf("%zu %d %.6f%s\n", i, token.id, token.logprob, alternatives.c_str());
    }
  }
  const char* reasons[] = {"none", "length", "eos", "stop"};
  const double decoded = static_cast<double>(result->tokens.size() - 1);
  std::fprintf(stderr,
               "hgrn2-run: prompt %lld tokens + first token in %.2f ms (%.1f tokens/s); "
               "%zu more tokens in %.2f ms (%.1f tokens/s); finish: %s\n",
               static_cast<long long>(result->prompt_tokens), result->prefill_seconds * 1e3,
               static_cast<double>(result->prompt_tokens) / result->prefill_seconds,
               result->tokens.size() - 1, result->decode_seconds * 1e3,
               result->decode_seconds > 0 ? decoded / result->decode_seconds : 0.0,
               reasons[static_cast<int>(result->finish_reason)]);
  return 0;
}

// The bundled demo model, relative to the working directory or, failing that, to the source tree
// the binary was built from.
std::string DefaultModel() {
  constexpr const char* kDefaultModel = "models/hgrn2-demo";
  if (std::filesystem::exists(kDefaultModel)) return kDefaultModel;
  const std::filesystem::path built = std::filesystem::path(HGRN2_SOURCE_DIR) / kDefaultModel;
  return std::filesystem::exists(built) ? built.string() : kDefaultModel;
}

}  // namespace
}  // namespace hgrn2

int main(int argc, char** argv) {
  hgrn2::RunOptions options;
  CLI::App app{"hgrn2-run: generate or score with an HGRN2 model, in-process"};
  options.model_dir = hgrn2::DefaultModel();
  app.add_option("--model", options.model_dir,
                 "model folder (config.json + safetensors; default: the bundled demo model)")
      ->capture_default_str();
  CLI::Option* prompt_ids =
      app.add_option("--prompt-ids", options.prompt_ids, "prompt token ids, comma-separated");
  app.add_option("--prompt", options.prompt,
                 "prompt text, encoded with the model folder's tokenizer (BOS added); the output "
                 "is then text")
      ->excludes(prompt_ids);
  app.add_option("--max-new-tokens", options.max_new_tokens, "tokens to generate at most")
      ->capture_default_str();
  app.add_option("--temperature", options.sampling.temperature, "0 = greedy")
      ->capture_default_str();
  app.add_option("--top-k", options.sampling.top_k, "0 = off")->capture_default_str();
  app.add_option("--top-p", options.sampling.top_p, "nucleus mass in (0, 1]")
      ->capture_default_str();
  app.add_option("--min-p", options.sampling.min_p, "in [0, 1]")->capture_default_str();
  app.add_option("--repetition-penalty", options.sampling.repetition_penalty, "1 = off")
      ->capture_default_str();
  app.add_option("--presence-penalty", options.sampling.presence_penalty, "in [-2, 2]")
      ->capture_default_str();
  app.add_option("--frequency-penalty", options.sampling.frequency_penalty, "in [-2, 2]")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "random seed in [0, 2^64): same seed, same output");
  app.add_option("--logit-bias", options.logit_bias, "ID=VALUE added to a logit (-inf bans)");
  app.add_option("--stop-ids", options.stop_ids, "token ids that end generation, comma-separated");
  app.add_flag("--ignore-eos", options.ignore_eos, "do not stop at the model's EOS token");
  app.add_option("--logprobs", options.logprobs, "print each token's logprob and N alternatives");
  app.add_option("--device", options.device,
                 "cpu, cuda (bf16 weights) or auto (cuda when a GPU is present)")
      ->capture_default_str();
  app.add_option("--dtype", options.dtype,
                 "weights and activations on the cuda backend: bf16, f16 or f32 (the cpu backend "
                 "always computes in f32); or fp8: the projections in FP8 (E4M3, a scale per "
                 "output channel), on either backend")
      ->capture_default_str();
  app.add_option("--prefill-mode", options.prefill_mode,
                 "auto (the backend's faster form), chunked or recurrent")
      ->capture_default_str();
  app.add_flag("--print-ids", options.print_ids,
               "print the generated ids comma-separated (also the output with --prompt-ids)");
  app.add_flag("--score", options.score,
               "print 't id logprob' for each prompt position t >= 1 instead of generating");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hgrn2-run: %s (see --help)\n", e.what());
    return hgrn2::kExitUsage;
  }
  return hgrn2::Run(options);
}
