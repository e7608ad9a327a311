// The prompt of an OpenAI request: /v1/completions' prompt (text, ids, or lists of them) and
// /v1/chat/completions' messages through the chat template, checked against the request limits.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/model_context.h"
#include "server/http/json_fields.h"
#include "server/http/openai_requests.h"

namespace hgrn2::server {

// A text prompt encoded; `add_special` adds what the tokenizer's post-processor adds (BOS).
// `resumes`: a session goes on, so an empty prompt is allowed. Errors name `field`.
absl::StatusOr<PlannedPrompt> TextPrompt(std::string text, const std::string& field,
                                         bool add_special, bool resumes,
                                         const ModelContext& context);

// prompt: a string, a list of strings, a list of token ids, or a list of such lists (at most
// kMaxPrompts). Absent when resuming a session: one empty prompt.
absl::StatusOr<std::vector<PlannedPrompt>> CompletionPrompts(const Json& body, bool add_special,
                                                             bool resumes,
                                                             const ModelContext& context);

// The chat's prompt text: body's messages (and add_generation_prompt, chat_template_kwargs)
// through the model's template.
absl::StatusOr<std::string> RenderChat(const Json& body, const OpenAiModel& model);

}  // namespace hgrn2::server
