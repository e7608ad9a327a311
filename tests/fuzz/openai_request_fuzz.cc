// The OpenAI-compatible API's request bodies under fuzzing: the first byte picks the route
// (completions, chat, tokenize, detokenize) and the model (tests/data/u-k3-nolb, V = 1000, with
// the llama-sp or bytelevel-splits tokenizer.json and the built-in chat template, or no
// tokenizer); the rest is the body. Nothing crashes (minja and nlohmann-json throw: the planners
// must catch), and whatever is accepted is within the vocabulary and every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/http/chat_template.h"
#include "server/http/openai_requests.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using hgrn2::server::ChatTemplate;
using hgrn2::server::CompletionPlan;
using hgrn2::server::OpenAiModel;
using hgrn2::server::RequestLimits;

struct Models {
  hgrn2::ModelConfig config;
  std::unique_ptr<hgrn2::Tokenizer> tokenizers[2];
  std::unique_ptr<ChatTemplate> chat;
  hgrn2::server::ModelContext contexts[3];  // llama-sp, bytelevel-splits, no tokenizer
  OpenAiModel models[3];
};

const Models& LoadModels() {
  static const Models* models = [] {
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
    absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
        ChatTemplate::FromSource(ChatTemplate::kDefaultSource, "<s>", "</s>", "fuzz");
    if (!chat.ok()) std::abort();
    m->chat = *std::move(chat);
    RequestLimits limits;
    limits.max_prompt_tokens = 512;  // small enough that inputs reach it
    limits.max_text_bytes = 2048;
    for (int i = 0; i < 3; ++i) {
      m->contexts[i] =
          hgrn2::server::ModelContext{.config = &m->config,
                                      .tokenizer = i < 2 ? m->tokenizers[i].get() : nullptr,
                                      .limits = limits};
      m->models[i] = OpenAiModel{.name = "m",
                                 .context = &m->contexts[i],
                                 .chat = i < 2 ? m->chat.get() : nullptr,
                                 .fingerprint = "",
                                 .created = 0};
    }
    return m;
  }();
  return *models;
}

void CheckIds(const std::vector<int32_t>& ids, const hgrn2::ModelConfig& config) {
  for (int32_t id : ids) {
    if (id < 0 || id >= config.vocab_size) std::abort();
  }
}

void CheckPlan(const absl::StatusOr<CompletionPlan>& plan, const OpenAiModel& model) {
  if (!plan.ok()) return;
  const RequestLimits& limits = model.context->limits;
  if (plan->prompts.empty() ||
      static_cast<int>(plan->prompts.size()) > hgrn2::server::kMaxPrompts) {
    std::abort();
  }
  for (const hgrn2::server::PlannedPrompt& prompt : plan->prompts) {
    if (static_cast<int64_t>(prompt.ids.size()) > limits.max_prompt_tokens) std::abort();
    if (prompt.ids.empty() && plan->generation.session_id.empty()) std::abort();
    CheckIds(prompt.ids, *model.context->config);
  }
  const hgrn2::GenerationRequest& engine = plan->generation.engine;
  CheckIds(engine.stopping.stop_token_ids, *model.context->config);
  if (engine.stopping.max_new_tokens < 1 ||
      engine.stopping.max_new_tokens > limits.max_new_tokens || plan->generation.num_samples < 1 ||
      plan->generation.num_samples > limits.max_samples ||
      static_cast<int32_t>(engine.sampling.logit_bias.size()) > limits.max_logit_bias ||
      plan->logprobs.value_or(0) < 0 || plan->logprobs.value_or(0) > limits.max_logprobs ||
      static_cast<int32_t>(plan->generation.stop_strings.size()) > limits.max_stop_strings ||
      !engine.sampling.Validate(model.context->config->vocab_size).ok() ||
      !engine.stopping.Validate(model.context->config->vocab_size).ok()) {
    std::abort();
  }
  if (!plan->generate && !plan->echo) std::abort();
}

}  // namespace

std::vector<std::string> FuzzBuiltInSeeds() {
  return {
      std::string(1, '\0') +
          R"({"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "stop": [".", "\n"],)"
          R"( "logprobs": 3, "n": 2, "seed": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 40,)"
          R"( "logit_bias": {"5": -100, "6": 2.5}, "stream": true,)"
          R"( "stream_options": {"include_usage": true}})",
      std::string(1, '\x08') +
          R"({"prompt": [[1, 17, 300, 999], [5, 6]], "max_tokens": 0, "echo": true, "logprobs": 1})",
      std::string(1, '\x04') + R"({"prompt": ["a", "caf\u00e9 <s>"], "stop_token_ids": [2],)"
                               R"( "session_id": "s-1", "ignore_eos": true, "priority": -3})",
      std::string(1, '\x01') +
          R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user",)"
          R"( "content": [{"type": "text", "text": "Hi"}]}], "max_completion_tokens": 8,)"
          R"( "logprobs": true, "top_logprobs": 2, "chat_template_kwargs": {"x": 1}})",
      std::string(1, '\x01') + R"({"messages": [{"role": "tool", "content": null}]})",
      std::string(1, '\x02') + R"({"prompt": "caf\u00e9 <s> 123\n", "add_special_tokens": false})",
      std::string(1, '\x06') + R"({"messages": [{"role": "user", "content": "x"}]})",
      std::string(1, '\x03') + R"({"tokens": [1, 3, 100, 259, 999]})",
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Models& models = LoadModels();
  const uint8_t selector = data[0];
  const OpenAiModel& model = models.models[(selector >> 2) % 3];
  const absl::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (selector & 3) {
    case 0:
      CheckPlan(hgrn2::server::PlanCompletion(body, model), model);
      break;
    case 1:
      CheckPlan(hgrn2::server::PlanChatCompletion(body, model), model);
      break;
    case 2: {
      const absl::StatusOr<hgrn2::server::TokenizePlan> plan =
          hgrn2::server::PlanTokenize(body, model);
      if (plan.ok()) CheckIds(plan->ids, *model.context->config);
      break;
    }
    default: {
      const absl::StatusOr<std::vector<int32_t>> ids = hgrn2::server::PlanDetokenize(body, model);
      if (ids.ok()) {
        if (static_cast<int32_t>(ids->size()) > model.context->limits.max_detokenize_ids) {
          std::abort();
        }
        CheckIds(*ids, *model.context->config);
        if (model.context->tokenizer == nullptr) std::abort();
        (void)model.context->tokenizer->Decode(*ids, false);
      }
      break;
    }
  }
  return 0;
}
