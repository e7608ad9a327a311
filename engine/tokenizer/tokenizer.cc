// Tokenizer::Load: which tokenizer file of a model folder is used.
#include "engine/tokenizer/tokenizer.h"

#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/base/file_io.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(path, error)) {
    // transformers' fast tokenizers prefer tokenizer.json when both are present.
    file = path / "tokenizer.json";
    if (!std::filesystem::exists(file, error)) file = path / "tokenizer.model";
    if (!std::filesystem::exists(file, error)) {
      return absl::NotFoundError(
          absl::StrCat(path.string(), " has no tokenizer.json or tokenizer.model"));
    }
  } else if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(absl::StrCat(path.string(), " does not exist"));
  }
  HGRN2_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(file));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      file.extension() == ".model" ? FromSentencePiece(bytes) : FromJson(bytes);
  if (!tokenizer.ok()) {
    // The message names the file kind ("tokenizer.json: ..."); name the file's path instead.
    absl::string_view message = tokenizer.status().message();
    absl::ConsumePrefix(&message, absl::StrCat(file.filename().string(), ": "));
    return absl::Status(tokenizer.status().code(), absl::StrCat(file.string(), ": ", message));
  }
  return tokenizer;
}

}  // namespace hgrn2
