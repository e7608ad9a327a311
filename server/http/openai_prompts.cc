// The prompts of OpenAI requests (see openai_prompts.h).
#include "server/http/openai_prompts.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {
namespace {

using json_fields::Bool;
using json_fields::Field;

absl::StatusOr<PlannedPrompt> IdsPrompt(const Json& ids, const std::string& field, bool resumes,
                                        const ModelContext& context) {
  if (ids.empty() && !resumes) return Invalid(field, "empty prompt");
  HGRN2_RETURN_IF_ERROR(CheckLength(static_cast<int64_t>(ids.size()), field, context));
  PlannedPrompt out;
  out.ids.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i].is_number_integer()) {
      return Invalid(absl::StrCat(field, "[", i, "]"), "must be a token id");
    }
    const int64_t id = ids[i].get<int64_t>();
    out.ids.push_back(id < std::numeric_limits<int32_t>::min() ||
                              id > std::numeric_limits<int32_t>::max()
                          ? -1
                          : static_cast<int32_t>(id));
  }
  HGRN2_RETURN_IF_ERROR(CheckIds(out.ids, field, *context.config));
  return out;
}

// Chat messages as the template gets them: each an object with a string role; content a string,
// or a list of text parts (joined with newlines, as vLLM does), or null (an empty string).
absl::StatusOr<Json> ChatMessages(const Json& body) {
  const Json& messages = Field(body, "messages");
  if (!messages.is_array() || messages.empty()) {
    return Invalid("messages", "must be a non-empty list of messages");
  }
  Json out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const Json& message = messages[i];
    if (!message.is_object()) return Invalid(field, "must be an object");
    if (!Field(message, "role").is_string()) {
      return Invalid(absl::StrCat(field, ".role"), "must be a string");
    }
    Json copy = message;
    const Json& content = Field(message, "content");
    if (content.is_null()) {
      copy["content"] = "";
    } else if (content.is_array()) {
      std::vector<std::string> texts;
      for (size_t j = 0; j < content.size(); ++j) {
        const std::string part = absl::StrCat(field, ".content[", j, "]");
        if (!content[j].is_object() || Field(content[j], "type") != "text" ||
            !Field(content[j], "text").is_string()) {
          return Invalid(part, "only {\"type\": \"text\", \"text\": ...} parts are supported");
        }
        texts.push_back(content[j]["text"].get<std::string>());
      }
      copy["content"] = absl::StrJoin(texts, "\n");
    } else if (!content.is_string()) {
      return Invalid(absl::StrCat(field, ".content"), "must be a string or a list of text parts");
    }
    out.push_back(std::move(copy));
  }
  return out;
}

}  // namespace

absl::StatusOr<PlannedPrompt> TextPrompt(std::string text, const std::string& field,
                                         bool add_special, bool resumes,
                                         const ModelContext& context) {
  HGRN2_ASSIGN_OR_RETURN(const Tokenizer* tokenizer, TokenizerFor(field, context));
  HGRN2_RETURN_IF_ERROR(CheckTextBytes(text, field, context.limits));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, add_special);
  if (!ids.ok()) return Invalid(field, ids.status().message());
  if (ids->empty() && !resumes) return Invalid(field, "encodes to no tokens");
  HGRN2_RETURN_IF_ERROR(CheckLength(static_cast<int64_t>(ids->size()), field, context));
  return PlannedPrompt{std::move(text), *std::move(ids)};
}

absl::StatusOr<std::vector<PlannedPrompt>> CompletionPrompts(const Json& body, bool add_special,
                                                             bool resumes,
                                                             const ModelContext& context) {
  const Json& prompt = Field(body, "prompt");
  std::vector<PlannedPrompt> out;
  if (prompt.is_null()) {
    if (!resumes) return Invalid("prompt", "missing");
    out.emplace_back();  // a session goes on from where it stopped
    return out;
  }
  if (prompt.is_string()) {
    HGRN2_ASSIGN_OR_RETURN(PlannedPrompt one, TextPrompt(prompt.get<std::string>(), "prompt",
                                                         add_special, resumes, context));
    out.push_back(std::move(one));
    return out;
  }
  if (!prompt.is_array() || prompt.empty()) {
    return Invalid("prompt",
                   "must be a string, a list of strings, a list of token ids or a list "
                   "of lists of token ids");
  }
  if (prompt[0].is_number()) {
    HGRN2_ASSIGN_OR_RETURN(PlannedPrompt one, IdsPrompt(prompt, "prompt", resumes, context));
    out.push_back(std::move(one));
    return out;
  }
  if (static_cast<int>(prompt.size()) > kMaxPrompts) {
    return OverLimit("prompt", static_cast<int64_t>(prompt.size()), "prompts", kMaxPrompts,
                     "one request");
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    const std::string field = absl::StrCat("prompt[", i, "]");
    if (prompt[i].is_string()) {
      HGRN2_ASSIGN_OR_RETURN(PlannedPrompt one, TextPrompt(prompt[i].get<std::string>(), field,
                                                           add_special, resumes, context));
      out.push_back(std::move(one));
    } else if (prompt[i].is_array()) {
      HGRN2_ASSIGN_OR_RETURN(PlannedPrompt one, IdsPrompt(prompt[i], field, resumes, context));
      out.push_back(std::move(one));
    } else {
      return Invalid(field, "must be a string or a list of token ids");
    }
  }
  return out;
}

absl::StatusOr<std::string> RenderChat(const Json& body, const OpenAiModel& model) {
  if (model.chat == nullptr) {
    return Invalid("messages", "this model has no tokenizer: use /v1/completions with token ids");
  }
  HGRN2_ASSIGN_OR_RETURN(Json messages, ChatMessages(body));
  HGRN2_ASSIGN_OR_RETURN(std::optional<bool> add_generation_prompt,
                         Bool(body, "add_generation_prompt"));
  const Json& kwargs = Field(body, "chat_template_kwargs");
  if (!kwargs.is_null() && !kwargs.is_object()) {
    return Invalid("chat_template_kwargs", "must be an object");
  }
  return model.chat->Render(messages, add_generation_prompt.value_or(true), kwargs);
}

}  // namespace hgrn2::server
