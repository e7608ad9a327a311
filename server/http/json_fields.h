// Reading a JSON request body: parsed with a nesting limit, then typed readers of its fields
// whose every refusal is INVALID_ARGUMENT naming the field (server/core/request_checks.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace hgrn2::server {

using Json = nlohmann::ordered_json;

namespace json_fields {

// JSON nesting beyond this is refused before parsing: copying, converting or printing a value
// recurses once per level (a chat message's extra keys reach the template), so a deep body could
// exhaust the stack. Real requests nest a few levels.
inline constexpr int kMaxDepth = 64;

// `body` parsed; it must be an object nested at most kMaxDepth deep (field "body" in errors).
absl::StatusOr<Json> ParseBody(absl::string_view body);

// The field, or null when absent.
const Json& Field(const Json& body, const char* name);

// Readers: absent or null gives nullopt; another type, INVALID_ARGUMENT naming the field.
absl::StatusOr<std::optional<bool>> Bool(const Json& body, const char* name);
// An integer; 3.0 counts as one, as Python's json writes some.
absl::StatusOr<std::optional<int64_t>> IntegerValue(const Json& value, const std::string& name);
absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const char* name);
absl::StatusOr<std::optional<double>> Number(const Json& body, const char* name);
absl::StatusOr<std::optional<std::string>> String(const Json& body, const char* name);
// An integer in [lowest, highest].
absl::StatusOr<std::optional<int64_t>> IntegerIn(const Json& body, const char* name, int64_t lowest,
                                                 int64_t highest);

}  // namespace json_fields
}  // namespace hgrn2::server
