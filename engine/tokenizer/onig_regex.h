// A compiled Oniguruma regular expression (the engine Hugging Face's tokenizers uses), for the
// patterns of tokenizer.json: GPT-2's byte-level split, Split pre-tokenizers, Replace.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hgrn2 {

// Thread-safe after construction: searches do not modify the compiled pattern.
class OnigRegex {
 public:
  // Compiles `pattern` (UTF-8, Oniguruma's default syntax, as the `onig` crate does). Errors name
  // the pattern and Oniguruma's message.
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Compile(absl::string_view pattern);
  ~OnigRegex();
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // Appends the non-empty, non-overlapping matches in `text` as [begin, end) byte offsets,
  // leftmost first; the search resumes at each match's end (one character on after an empty
  // match), as the `onig` crate's find_iter does.
  void FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit OnigRegex(void* regex) : regex_(regex) {}
  void* regex_;  // regex_t*; void keeps oniguruma.h out of this header
};

}  // namespace hgrn2
