// ChatTemplate: a model's chat template (Jinja, with Hugging Face's conventions: `messages`,
// `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`) rendered by minja, the
// engine llama.cpp's server uses (third_party/minja/); the choice is in docs/openai-api.md.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace minja {
class chat_template;
}  // namespace minja

namespace hgrn2::server {

// Thread-safety: Render from any thread.
class ChatTemplate {
 public:
  // The template of the served model, the first of: `file` (--chat-template), `chat_template` in
  // tokenizer_config.json (a string, or a list of named templates: the one named "default"),
  // chat_template.jinja in the model folder, and kDefaultSource. bos_token and eos_token come from
  // tokenizer_config.json, else from the tokenizer's BOS and EOS pieces, else from config.json's
  // bos_token_id and eos_token_id (the first of a list). InvalidArgument naming
  // the file when one cannot be read or the template does not parse.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Load(const std::filesystem::path& model_dir,
                                                            const std::string& file,
                                                            const Tokenizer* tokenizer);
  // `origin` says where the source came from (for the log and /tokenizer_info).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromSource(const std::string& source,
                                                                  const std::string& bos_token,
                                                                  const std::string& eos_token,
                                                                  const std::string& origin);
  ~ChatTemplate();

  // The prompt text of `messages` (a JSON array of objects with "role" and "content"), as
  // transformers' apply_chat_template(tokenize=False) renders it. `extra` (an object, or null)
  // adds variables (vLLM's chat_template_kwargs). InvalidArgument with the template's own message
  // when it raises or fails.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages,
                                     bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra) const;

  const std::string& source() const { return source_; }
  const std::string& origin() const { return origin_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  // For models that ship no template (the demo model among them): "User: ...\nAssistant: ..."
  // turns, BOS first, each assistant turn ended by EOS.
  static const char* const kDefaultSource;

 private:
  ChatTemplate() = default;

  std::string source_, bos_token_, eos_token_, origin_;
  std::unique_ptr<minja::chat_template> template_;
  mutable std::mutex mutex_;  // one render at a time: minja does not promise more
};

}  // namespace hgrn2::server
