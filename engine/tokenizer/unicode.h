// UTF-8 and Unicode helpers for the tokenizers: validation, code points, character classes, NFC,
// and Rust's lossy UTF-8 decoding (what Hugging Face's tokenizers prints for invalid bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hgrn2::unicode {

// The byte offset of the first invalid UTF-8 sequence in `text`, or nullopt when it is valid.
std::optional<size_t> FindInvalidUtf8(absl::string_view text);

// Length in bytes of the valid UTF-8 character at text[pos] (1 for an invalid byte).
size_t CharLength(absl::string_view text, size_t pos);

// The code point of the valid UTF-8 character at text[pos].
int32_t CodePointAt(absl::string_view text, size_t pos);

// Appends the UTF-8 encoding of `code_point`.
void AppendCodePoint(int32_t code_point, std::string* out);

// Rust's char::is_numeric: general category Nd, Nl or No.
bool IsNumeric(int32_t code_point);
// Rust's char::is_alphanumeric, approximated by general categories L* and N*.
bool IsAlphanumeric(int32_t code_point);
// Rust's char::is_whitespace: the Unicode White_Space property.
bool IsWhitespace(int32_t code_point);

// Canonical composition (NFC) of valid UTF-8 text.
absl::StatusOr<std::string> Nfc(absl::string_view text);

// Bytes to text as Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string DecodeLossy(absl::string_view bytes);

inline constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace hgrn2::unicode
