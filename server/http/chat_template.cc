// ChatTemplate: where a model's template comes from, and rendering it with minja.
#include "server/http/chat_template.h"

#include <chrono>
#include <exception>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
// minja's headers (vendored, third_party/minja) are included as system headers: their warnings
// are not ours.
#include "chat-template.hpp"  // NOLINT(build/include_subdir)

namespace hgrn2::server {
namespace {

absl::StatusOr<std::string> ReadText(const std::filesystem::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path.string(), ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A special token in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::string TokenText(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return {};
  const nlohmann::json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return {};
}

}  // namespace

const char* const ChatTemplate::kDefaultSource =
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ raise_exception('only system, user and assistant messages are supported') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Load(
    const std::filesystem::path& model_dir, const std::string& file, const Tokenizer* tokenizer) {
  std::string bos, eos;
  nlohmann::json config;
  const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
  if (!model_dir.empty() && std::filesystem::exists(config_path)) {
    absl::StatusOr<std::string> text = ReadText(config_path, "tokenizer_config.json");
    if (!text.ok()) return text.status();
    config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
    }
    bos = TokenText(config, "bos_token");
    eos = TokenText(config, "eos_token");
  }
  if (tokenizer != nullptr) {
    if (bos.empty() && tokenizer->bos_id()) bos = tokenizer->PieceOf(*tokenizer->bos_id());
    if (eos.empty() && tokenizer->eos_id()) eos = tokenizer->PieceOf(*tokenizer->eos_id());
    // A Llama-style tokenizer adds no EOS after a text: the model's config names it.
    const std::filesystem::path model_config = model_dir / "config.json";
    if ((bos.empty() || eos.empty()) && !model_dir.empty() &&
        std::filesystem::exists(model_config)) {
      absl::StatusOr<std::string> text = ReadText(model_config, "config.json");
      const nlohmann::json parsed =
          text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
      auto first_id = [&](const char* key) -> std::optional<int32_t> {
        if (!parsed.is_object() || !parsed.contains(key)) return std::nullopt;
        const nlohmann::json& id =
            parsed[key].is_array() && !parsed[key].empty() ? parsed[key][0] : parsed[key];
        if (!id.is_number_integer()) return std::nullopt;
        return id.get<int32_t>();
      };
      if (bos.empty() && first_id("bos_token_id"))
        bos = tokenizer->PieceOf(*first_id("bos_token_id"));
      if (eos.empty() && first_id("eos_token_id"))
        eos = tokenizer->PieceOf(*first_id("eos_token_id"));
    }
  }
  if (!file.empty()) {
    absl::StatusOr<std::string> source = ReadText(file, "--chat-template");
    if (!source.ok()) return source.status();
    return FromSource(*source, bos, eos, absl::StrCat("--chat-template ", file));
  }
  if (config.contains("chat_template")) {
    const nlohmann::json& value = config["chat_template"];
    if (value.is_string()) {
      return FromSource(value.get<std::string>(), bos, eos, "tokenizer_config.json");
    }
    if (value.is_array()) {
      for (const nlohmann::json& named : value) {
        if (named.is_object() && named.value("name", "") == "default" &&
            named.contains("template") && named["template"].is_string()) {
          return FromSource(named["template"].get<std::string>(), bos, eos,
                            "tokenizer_config.json (\"default\")");
        }
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        config_path.string(),
        ": chat_template is neither a string nor a list holding one named \"default\""));
  }
  const std::filesystem::path jinja = model_dir / "chat_template.jinja";
  if (!model_dir.empty() && std::filesystem::exists(jinja)) {
    absl::StatusOr<std::string> source = ReadText(jinja, "chat template");
    if (!source.ok()) return source.status();
    return FromSource(*source, bos, eos, "chat_template.jinja");
  }
  return FromSource(kDefaultSource, bos, eos, "the built-in default (the model ships none)");
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromSource(const std::string& source,
                                                                       const std::string& bos_token,
                                                                       const std::string& eos_token,
                                                                       const std::string& origin) {
  std::unique_ptr<ChatTemplate> out(new ChatTemplate());
  out->source_ = source;
  out->bos_token_ = bos_token;
  out->eos_token_ = eos_token;
  out->origin_ = origin;
  try {
    out->template_ = std::make_unique<minja::chat_template>(source, bos_token, eos_token);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template from ", origin, " does not parse: ", e.what()));
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::ordered_json& extra) const {
  minja::chat_template_inputs inputs;
  inputs.messages = messages;
  inputs.add_generation_prompt = add_generation_prompt;
  inputs.extra_context = extra;
  minja::chat_template_options options;
  // As transformers renders: the template sees the messages as sent (no system-role or tool
  // rewriting of minja's own).
  options.apply_polyfills = false;
  std::lock_guard<std::mutex> lock(mutex_);
  try {
    return template_->apply(inputs, options);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("messages: the chat template says: ", e.what()));
  }
}

}  // namespace hgrn2::server
