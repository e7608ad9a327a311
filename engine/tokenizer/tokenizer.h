// The Tokenizer interface: text to token ids and back, special tokens, and the entry points
// that build one from tokenizer.json, tokenizer.model, or a model folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace hgrn2 {

// Immutable after construction; every method may be called from any thread at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // A Hugging Face tokenizer.json with a BPE model. A pure function of the bytes (no file
  // access), for fuzzing. Errors (InvalidArgument) name what is wrong: the JSON parse position,
  // an unknown component type, a merge naming a token outside the vocabulary, a bad regex.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json);

  // A SentencePiece tokenizer.model (serialized ModelProto). A pure function of the bytes.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSentencePiece(
      absl::string_view model_proto);

  // `path` is a tokenizer.json or tokenizer.model file, or a folder holding either. A folder
  // with both uses tokenizer.json, as transformers' fast tokenizers do. NotFound, naming the
  // folder, when it has neither: such a model serves token ids only.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& path);

  // Token ids of `text` (valid UTF-8, else InvalidArgument with the byte offset). Special tokens
  // written in the text (e.g. "<s>") become their ids. `add_special` adds what the tokenizer's
  // post-processor adds (BOS for Llama-style tokenizers; nothing for GPT-2's).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                                      bool add_special) const = 0;

  // Text of `ids`, as the reference library decodes them (bytes that do not form UTF-8 become
  // U+FFFD). `skip_special` leaves out special tokens. InvalidArgument for an id with no token.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                             bool skip_special) const = 0;

  // The token as the vocabulary spells it ("▁the", "Ġthe", "<0x0A>", "<s>"); empty for an id
  // with no token.
  virtual std::string PieceOf(int32_t id) const = 0;

  // One more than the largest token id.
  virtual int32_t vocab_size() const = 0;
  // The ids that `Encode(..., add_special = true)` puts before and after the text's ids.
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // "tokenizer.json (BPE)" or "tokenizer.model (SentencePiece)", for logs and errors.
  virtual std::string kind() const = 0;

  // For StreamDecoder. A token that may join the token after it into one character: a byte
  // fallback piece such as <0xE4>. Text ending in one is not yet final.
  virtual bool MayJoinNext(int32_t id) const = 0;
  // A token at which decoding may restart: an ordinary (not special) token whose text is not
  // empty and begins a character, so the text of the tokens from it on does not depend on the
  // tokens before it, except that a decoder's first-token rule applies to it alone.
  virtual bool IsStreamAnchor(int32_t id) const = 0;
};

}  // namespace hgrn2
