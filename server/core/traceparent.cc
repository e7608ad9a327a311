// ParseTraceParent: the W3C Trace Context rules for the traceparent header.
#include "server/core/traceparent.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace hgrn2::server {
namespace {

constexpr size_t kVersion00Length = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2

bool IsLowerHex(absl::string_view text) {
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZero(absl::string_view text) { return text.find_first_not_of('0') == text.npos; }

uint8_t HexByte(absl::string_view two) {
  const auto digit = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  return static_cast<uint8_t>(digit(two[0]) * 16 + digit(two[1]));
}

}  // namespace

std::string TraceParent::ToString() const {
  return absl::StrFormat("00-%s-%s-%02x", trace_id, parent_id, flags);
}

std::optional<TraceParent> ParseTraceParent(absl::string_view header) {
  header = absl::StripAsciiWhitespace(header);
  if (header.size() < kVersion00Length) return std::nullopt;
  const absl::string_view version = header.substr(0, 2);
  if (!IsLowerHex(version) || version == "ff") return std::nullopt;
  if (version == "00" ? header.size() != kVersion00Length
                      : header.size() > kVersion00Length && header[kVersion00Length] != '-') {
    return std::nullopt;
  }
  if (header[2] != '-' || header[35] != '-' || header[52] != '-') return std::nullopt;
  const absl::string_view trace_id = header.substr(3, 32);
  const absl::string_view parent_id = header.substr(36, 16);
  const absl::string_view flags = header.substr(53, 2);
  if (!IsLowerHex(trace_id) || !IsLowerHex(parent_id) || !IsLowerHex(flags)) return std::nullopt;
  if (AllZero(trace_id) || AllZero(parent_id)) return std::nullopt;
  return TraceParent{.version = HexByte(version),
                     .trace_id = std::string(trace_id),
                     .parent_id = std::string(parent_id),
                     .flags = HexByte(flags)};
}

}  // namespace hgrn2::server
