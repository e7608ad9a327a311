// Short renderings of JSON values for error messages about config and safetensors files.
#pragma once

#include <cstddef>
#include <string>

#include "nlohmann/json.hpp"

namespace hgrn2 {

// `value` as compact JSON, cut to at most `max_chars` characters ("..." marks a cut); invalid
// UTF-8 is replaced, so the result is always printable.
inline std::string JsonExcerpt(const nlohmann::json& value, size_t max_chars) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > max_chars) text = text.substr(0, max_chars - 3) + "...";
  return text;
}

}  // namespace hgrn2
