// The JSON body readers (see json_fields.h).
#include "server/http/json_fields.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "server/core/request_checks.h"

namespace hgrn2::server::json_fields {
namespace {

// The deepest nesting of arrays and objects in `body` (strings skipped).
int Depth(absl::string_view body) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

absl::StatusOr<Json> ParseBody(absl::string_view body) {
  if (Depth(body) > kMaxDepth) {
    return Invalid("body", absl::StrCat("nested deeper than ", kMaxDepth, " levels"));
  }
  Json parsed;
  try {
    parsed = Json::parse(body);
  } catch (const std::exception& e) {
    return Invalid("body", absl::StrCat("not valid JSON (", e.what(), ")"));
  }
  if (!parsed.is_object()) return Invalid("body", "must be a JSON object");
  return parsed;
}

const Json& Field(const Json& body, const char* name) {
  static const Json kNull;
  const auto found = body.find(name);
  return found == body.end() ? kNull : *found;
}

absl::StatusOr<std::optional<bool>> Bool(const Json& body, const char* name) {
  const Json& value = Field(body, name);
  if (value.is_null()) return std::nullopt;
  if (!value.is_boolean()) return Invalid(name, "must be true or false");
  return value.get<bool>();
}

absl::StatusOr<std::optional<int64_t>> IntegerValue(const Json& value, const std::string& name) {
  if (value.is_null()) return std::nullopt;
  if (value.is_number_integer()) return value.get<int64_t>();
  // 3.0 is an integer too, as Python's json writes some.
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::trunc(d) == d && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return Invalid(name, "must be an integer");
}
absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const char* name) {
  return IntegerValue(Field(body, name), name);
}

absl::StatusOr<std::optional<double>> Number(const Json& body, const char* name) {
  const Json& value = Field(body, name);
  if (value.is_null()) return std::nullopt;
  if (!value.is_number()) return Invalid(name, "must be a number");
  return value.get<double>();
}

absl::StatusOr<std::optional<std::string>> String(const Json& body, const char* name) {
  const Json& value = Field(body, name);
  if (value.is_null()) return std::nullopt;
  if (!value.is_string()) return Invalid(name, "must be a string");
  return value.get<std::string>();
}

absl::StatusOr<std::optional<int64_t>> IntegerIn(const Json& body, const char* name, int64_t lowest,
                                                 int64_t highest) {
  HGRN2_ASSIGN_OR_RETURN(std::optional<int64_t> value, Integer(body, name));
  if (value && (*value < lowest || *value > highest)) {
    return Invalid(name, absl::StrCat("must be in [", lowest, ", ", highest, "], got ", *value));
  }
  return value;
}

}  // namespace hgrn2::server::json_fields
