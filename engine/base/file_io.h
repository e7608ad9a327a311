// Reading small files (config.json, safetensors indexes) with errors that name the path.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace hgrn2 {

// The whole file. Errors carry errno's code (NotFound for a missing file) and read
// "PATH: cannot open: REASON" or "PATH: cannot read: REASON".
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

}  // namespace hgrn2
