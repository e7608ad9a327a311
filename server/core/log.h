// One-line log messages on standard error, with a UTC timestamp, from any thread.
#pragma once

#include "absl/strings/string_view.h"

namespace hgrn2::server {

// "2026-11-23T19:58:01.123Z hgrn2-server: <message>"
void Log(absl::string_view message);

}  // namespace hgrn2::server
