// Request validation under fuzzing: the first byte picks the call (Generate, Score, Tokenize,
// Detokenize) and the tokenizer, the rest is parsed as that call's request message and checked
// against a small model (tests/data/u-k3-nolb, V = 1000, with a fixture tokenizer.json). Nothing
// crashes, and whatever is accepted is within the vocabulary and every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "google/protobuf/stubs/logging.h"
#include "hgrn2/v1/inference.pb.h"
#include "server/core/request_checks.h"
#include "server/grpc/requests.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using hgrn2::server::ModelContext;
using hgrn2::server::RequestLimits;

struct Models {
  hgrn2::ModelConfig config;
  std::unique_ptr<hgrn2::Tokenizer> tokenizers[2];
  ModelContext contexts[3];  // llama-sp, bytelevel-splits, no tokenizer
};

const Models& LoadModels() {
  static const Models* models = [] {
    // Messages with invalid UTF-8 in a string field fail to parse, as they do in the server;
    // protobuf's log line for each would drown the fuzzer's output.
    google::protobuf::SetLogHandler(nullptr);
    auto* m = new Models;
    const std::string data = HGRN2_FUZZ_DATA_DIR;
    absl::StatusOr<hgrn2::ModelConfig> config =
        hgrn2::ModelConfig::Load(data + "/u-k3-nolb/config.json");
    if (!config.ok()) std::abort();
    m->config = *config;
    const char* names[] = {"llama-sp", "bytelevel-splits"};
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::unique_ptr<hgrn2::Tokenizer>> tokenizer =
          hgrn2::Tokenizer::Load(data + "/tokenizers/" + names[i] + "/tokenizer.json");
      if (!tokenizer.ok()) std::abort();
      m->tokenizers[i] = *std::move(tokenizer);
    }
    RequestLimits limits;
    limits.max_prompt_tokens = 512;  // small enough that inputs reach it
    limits.max_text_bytes = 2048;
    for (int i = 0; i < 3; ++i) {
      m->contexts[i] = ModelContext{.config = &m->config,
                                    .tokenizer = i < 2 ? m->tokenizers[i].get() : nullptr,
                                    .limits = limits};
    }
    return m;
  }();
  return *models;
}

void CheckIds(absl::Span<const int32_t> ids, const ModelContext& model) {
  for (int32_t id : ids) {
    if (id < 0 || id >= model.config->vocab_size) std::abort();
  }
}

void Generate(absl::string_view bytes, const ModelContext& model) {
  hgrn2::v1::GenerateRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  (void)hgrn2::server::RequestIdOf(request.request_id(), model.limits);
  const absl::StatusOr<hgrn2::server::PreparedGeneration> prepared =
      hgrn2::server::PrepareGenerate(request, model);
  if (!prepared.ok()) return;
  const RequestLimits& limits = model.limits;
  const hgrn2::GenerationRequest& engine = prepared->engine;
  if (static_cast<int64_t>(engine.prompt.size()) > limits.max_prompt_tokens) std::abort();
  if (engine.prompt.empty() && prepared->session_id.empty()) std::abort();
  CheckIds(engine.prompt, model);
  CheckIds(engine.stopping.stop_token_ids, model);
  if (static_cast<int32_t>(engine.stopping.stop_token_ids.size()) > limits.max_stop_token_ids ||
      engine.stopping.max_new_tokens < 1 ||
      engine.stopping.max_new_tokens > limits.max_new_tokens || prepared->num_samples < 1 ||
      prepared->num_samples > limits.max_samples ||
      static_cast<int32_t>(engine.sampling.logit_bias.size()) > limits.max_logit_bias ||
      engine.sampling.num_top_logprobs > limits.max_logprobs ||
      static_cast<int32_t>(prepared->stop_strings.size()) > limits.max_stop_strings) {
    std::abort();
  }
  int64_t stop_bytes = 0;
  for (const std::string& stop : prepared->stop_strings) {
    if (stop.empty() || static_cast<int32_t>(stop.size()) > limits.max_stop_string_bytes) {
      std::abort();
    }
    stop_bytes += static_cast<int64_t>(stop.size());
  }
  if (stop_bytes > limits.max_stop_total_bytes) std::abort();
  for (const auto& [id, bias] : engine.sampling.logit_bias) {
    if (id < 0 || id >= model.config->vocab_size) std::abort();
  }
}

void Score(absl::string_view bytes, const ModelContext& model) {
  hgrn2::v1::ScoreRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  (void)hgrn2::server::RequestIdOf(request.request_id(), model.limits);
  const absl::StatusOr<hgrn2::server::PreparedScore> prepared =
      hgrn2::server::PrepareScore(request, model);
  if (!prepared.ok()) return;
  const std::vector<int32_t>& tokens = prepared->engine.tokens;
  if (static_cast<int64_t>(tokens.size()) > model.limits.max_prompt_tokens) std::abort();
  CheckIds(tokens, model);
  if (prepared->scored_ids.empty() || prepared->context_tokens < 0 ||
      prepared->unscored_tokens < 0 ||
      static_cast<size_t>(prepared->context_tokens + prepared->unscored_tokens) +
              prepared->scored_ids.size() !=
          tokens.size() ||
      prepared->engine.num_top_logprobs > model.limits.max_logprobs) {
    std::abort();
  }
  // The scored ids are the last tokens.
  if (!std::equal(prepared->scored_ids.rbegin(), prepared->scored_ids.rend(), tokens.rbegin())) {
    std::abort();
  }
}

void Tokenize(absl::string_view bytes, const ModelContext& model) {
  hgrn2::v1::TokenizeRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  const absl::StatusOr<std::vector<int32_t>> ids = hgrn2::server::PrepareTokenize(request, model);
  if (!ids.ok()) return;
  for (int32_t id : *ids) {
    if (id < 0 || id >= model.tokenizer->vocab_size()) std::abort();
    (void)model.tokenizer->PieceOf(id);
  }
  if (!model.tokenizer->Decode(*ids, false).ok()) std::abort();
}

void Detokenize(absl::string_view bytes, const ModelContext& model) {
  hgrn2::v1::DetokenizeRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  const absl::StatusOr<std::vector<int32_t>> ids = hgrn2::server::PrepareDetokenize(request, model);
  if (!ids.ok()) return;
  if (static_cast<int32_t>(ids->size()) > model.limits.max_detokenize_ids) std::abort();
  (void)model.tokenizer->Decode(
      *ids, !request.has_skip_special_tokens() || request.skip_special_tokens());
}

std::string Seed(uint8_t selector, const google::protobuf::Message& request) {
  return std::string(1, static_cast<char>(selector)) + request.SerializeAsString();
}

}  // namespace

std::vector<std::string> FuzzBuiltInSeeds() {
  std::vector<std::string> seeds;
  hgrn2::v1::GenerateRequest generate;
  generate.set_text("Once upon a time");
  generate.set_max_new_tokens(16);
  generate.add_stop(".");
  generate.add_stop("\n\n");
  generate.add_stop_token_ids(2);
  generate.set_logprobs(3);
  generate.set_n(2);
  generate.set_request_id("req-1");
  auto* sampling = generate.mutable_sampling();
  sampling->set_temperature(0.7f);
  sampling->set_top_k(40);
  sampling->set_top_p(0.9f);
  sampling->set_seed(7);
  (*sampling->mutable_logit_bias())[5] = -1e30f;
  (*sampling->mutable_logit_bias())[6] = 2.5f;
  seeds.push_back(Seed(0, generate));
  seeds.push_back(Seed(4, generate));  // the other tokenizer
  hgrn2::v1::GenerateRequest ids;
  for (int32_t id : {1, 17, 300, 999}) ids.mutable_token_ids()->add_ids(id);
  ids.set_session_id("chat-1");
  ids.set_save_session_as("chat-2");
  seeds.push_back(Seed(8, ids));  // no tokenizer

  hgrn2::v1::ScoreRequest score;
  score.set_context_text("The capital of France is");
  score.set_continuation_text(" Paris");
  score.set_top_logprobs(2);
  seeds.push_back(Seed(1, score));
  hgrn2::v1::ScoreRequest score_ids;
  for (int32_t id : {1, 2, 3}) score_ids.mutable_context_ids()->add_ids(id);
  for (int32_t id : {4, 5}) score_ids.mutable_continuation_ids()->add_ids(id);
  seeds.push_back(Seed(5, score_ids));

  hgrn2::v1::TokenizeRequest tokenize;
  tokenize.set_text("caf\xc3\xa9 <s> 123\n");
  seeds.push_back(Seed(2, tokenize));
  hgrn2::v1::DetokenizeRequest detokenize;
  for (int32_t id : {1, 3, 100, 259, 999}) detokenize.add_token_ids(id);
  detokenize.set_skip_special_tokens(false);
  seeds.push_back(Seed(7, detokenize));
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Models& models = LoadModels();
  const uint8_t selector = data[0];
  const ModelContext& model = models.contexts[(selector >> 2) % 3];
  const absl::string_view message(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (selector & 3) {
    case 0:
      Generate(message, model);
      break;
    case 1:
      Score(message, model);
      break;
    case 2:
      if (model.tokenizer != nullptr) Tokenize(message, model);
      break;
    default:
      if (model.tokenizer != nullptr) Detokenize(message, model);
      break;
  }
  return 0;
}
