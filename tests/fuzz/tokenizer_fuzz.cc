// The tokenizer loaders under fuzzing: any bytes, as a tokenizer.json (when they start with '{')
// or a SentencePiece tokenizer.model, load without a crash or an out-of-bounds read; a tokenizer
// that loads encodes awkward texts to ids inside its vocabulary and decodes any ids.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

// Texts that reach the pre-tokenizers', normalizers' and special tokens' corners.
constexpr const char* kTexts[] = {
    "",
    "Hello, world! 123  tabs\tand\nnewlines",
    " leading and trailing ",
    "<s>special</s><unk><|endoftext|>",
    "caf\xc3\xa9 \xe2\x96\x81 \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87",
    "\xff\xfe invalid UTF-8 \xc3",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

void Exercise(const hgrn2::Tokenizer& tokenizer) {
  const int32_t vocab = tokenizer.vocab_size();
  if (vocab < 0) std::abort();
  for (const char* text : kTexts) {
    for (bool add_special : {false, true}) {
      const absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, add_special);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) {
        if (id < 0 || id >= vocab) std::abort();
        (void)tokenizer.PieceOf(id);
      }
      (void)tokenizer.Decode(*ids, /*skip_special=*/false);
      (void)tokenizer.Decode(*ids, /*skip_special=*/true);
    }
  }
  // Ids the tokenizer may not have: out of range, negative, every one of a small vocabulary.
  std::vector<int32_t> ids = {-1, vocab, vocab + 1, 0};
  (void)tokenizer.Decode(ids, false);
  ids.clear();
  for (int32_t id = 0; id < std::min<int32_t>(vocab, 4096); ++id) ids.push_back(id);
  (void)tokenizer.Decode(ids, false);
  (void)tokenizer.Decode(ids, true);
  (void)tokenizer.PieceOf(-1);
  (void)tokenizer.PieceOf(vocab);
  for (std::optional<int32_t> id : {tokenizer.bos_id(), tokenizer.eos_id()}) {
    if (id.has_value() && (*id < 0 || *id >= vocab)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<std::unique_ptr<hgrn2::Tokenizer>> tokenizer =
      !bytes.empty() && bytes.front() == '{' ? hgrn2::Tokenizer::FromJson(bytes)
                                             : hgrn2::Tokenizer::FromSentencePiece(bytes);
  if (tokenizer.ok()) Exercise(**tokenizer);
  return 0;
}
