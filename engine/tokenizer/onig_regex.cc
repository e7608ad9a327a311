// Oniguruma wrapper: compile once, search from any thread.
#include "engine/tokenizer/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/unicode.h"

namespace hgrn2 {
namespace {

std::once_flag onig_init_once;

}  // namespace

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Compile(absl::string_view pattern) {
  std::call_once(onig_init_once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
  regex_t* regex = nullptr;
  OnigErrorInfo error_info;
  const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int code = onig_new(&regex, begin, begin + pattern.size(), ONIG_OPTION_NONE,
                            ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &error_info);
  if (code != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, code, &error_info);
    return absl::InvalidArgumentError(
        absl::StrCat("invalid regex \"", pattern, "\": ", reinterpret_cast<char*>(message)));
  }
  return std::unique_ptr<OnigRegex>(new OnigRegex(regex));
}

OnigRegex::~OnigRegex() { onig_free(static_cast<regex_t*>(regex_)); }

void OnigRegex::FindAll(absl::string_view text,
                        std::vector<std::pair<size_t, size_t>>* matches) const {
  auto* regex = static_cast<regex_t*>(regex_);
  OnigRegion* region = onig_region_new();
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const OnigUChar* end = str + text.size();
  size_t start = 0;
  while (start <= text.size()) {
    const int at = onig_search(regex, str, end, str + start, end, region, ONIG_OPTION_NONE);
    if (at < 0) break;  // ONIG_MISMATCH, or an error, which these patterns cannot raise
    const auto begin = static_cast<size_t>(region->beg[0]);
    const auto finish = static_cast<size_t>(region->end[0]);
    if (finish > begin) {
      matches->emplace_back(begin, finish);
      start = finish;
    } else {
      if (begin >= text.size()) break;
      start = begin + unicode::CharLength(text, begin);
    }
  }
  onig_region_free(region, 1);
}

}  // namespace hgrn2
