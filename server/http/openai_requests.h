// The OpenAI-compatible request bodies (and vLLM's extensions) checked and turned into the request
// core's types: /v1/completions and /v1/chat/completions into a CompletionPlan, /tokenize and
// /detokenize into ids. Every refusal is INVALID_ARGUMENT naming the field as the client spelt it
// (NOT_FOUND naming "model" for a model this server does not serve).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/model_context.h"
#include "server/core/prepared_request.h"
#include "server/http/chat_template.h"

namespace hgrn2::server {

// What every OpenAI route knows of the served model.
struct OpenAiModel {
  std::string name;  // the id in /v1/models and in every response's "model"
  const ModelContext* context = nullptr;
  const ChatTemplate* chat = nullptr;  // null: the model has no tokenizer (no chat)
  std::string fingerprint;             // the model's, as each response's system_fingerprint
  int64_t created = 0;                 // Unix seconds the server started (/v1/models)
};

enum class ApiKind { kCompletion, kChat };

struct PlannedPrompt {
  std::string text;  // as given (text prompts, rendered chats); empty for id prompts
  std::vector<int32_t> ids;
};

struct CompletionPlan {
  ApiKind kind = ApiKind::kCompletion;
  std::vector<PlannedPrompt> prompts;  // one or more (completions), one (chat)
  // Everything but the prompt: sampling, stopping, stop strings, n, priority, sessions.
  PreparedGeneration generation;
  bool generate = true;  // false: max_tokens 0 with echo, the prompt is only scored
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  bool continuous_usage = false;    // stream_options.continuous_usage_stats (vLLM): every event
  bool echo = false;                // completions: the prompt goes before the text
  std::optional<int32_t> logprobs;  // set: log-probabilities with this many alternatives
};

// Most prompts one /v1/completions request may list (each is its own engine request).
inline constexpr int kMaxPrompts = 64;

absl::StatusOr<CompletionPlan> PlanCompletion(absl::string_view body, const OpenAiModel& model);
absl::StatusOr<CompletionPlan> PlanChatCompletion(absl::string_view body, const OpenAiModel& model);

// POST /tokenize (vLLM's shape: {"prompt", "add_special_tokens"} or {"messages", ...}).
struct TokenizePlan {
  std::vector<int32_t> ids;
  bool return_token_strs = false;
};
absl::StatusOr<TokenizePlan> PlanTokenize(absl::string_view body, const OpenAiModel& model);
// POST /detokenize ({"tokens": [...]}): the ids, checked.
absl::StatusOr<std::vector<int32_t>> PlanDetokenize(absl::string_view body,
                                                    const OpenAiModel& model);

}  // namespace hgrn2::server
