// W3C Trace Context: the `traceparent` a caller sends in its metadata, parsed and checked, so that
// a call's log lines can be joined to the caller's trace.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace hgrn2::server {

// A valid traceparent (https://www.w3.org/TR/trace-context/#traceparent-header):
// "00-<trace-id: 32 lowercase hex>-<parent-id: 16 lowercase hex>-<trace-flags: 2 lowercase hex>".
struct TraceParent {
  uint8_t version = 0;
  std::string trace_id;   // 32 hex digits, not all zero
  std::string parent_id;  // 16 hex digits, not all zero
  uint8_t flags = 0;      // bit 0: sampled

  bool sampled() const { return (flags & 1) != 0; }
  // The header in version 00's form, which is what the log shows.
  std::string ToString() const;
};

// Parses `header` as the specification says a receiver must: version 00 is exactly 55 characters;
// a later version (01 to fe) may be longer, with a '-' after the first 55 characters, and only
// its version-00 fields are read; version ff, uppercase hex, wrong lengths or separators, and an
// all-zero trace-id or parent-id are invalid. Invalid: nullopt (the header is dropped, as the
// specification asks, and the call goes on without one). Surrounding spaces and tabs (optional
// white space in HTTP) are ignored.
std::optional<TraceParent> ParseTraceParent(absl::string_view header);

}  // namespace hgrn2::server
