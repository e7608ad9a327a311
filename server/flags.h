// hgrn2-server's command line: its flags, their HGRN2_* variables and the --config file.
#ifndef HGRN2_SERVER_FLAGS_H_
#define HGRN2_SERVER_FLAGS_H_

#include <optional>

#include "server/options.h"

namespace hgrn2::server {

// Exit status of a command line that cannot be used.
inline constexpr int kExitUsage = 2;

// Reads argv (and the variables and config file it falls back on) into `options`, and sets the
// log format. Returns nothing when the server should start, else the status to exit with: 0 after
// --help, kExitUsage after an error, which it has printed.
std::optional<int> ParseServerFlags(int argc, char** argv, ServerOptions& options);

}  // namespace hgrn2::server

#endif  // HGRN2_SERVER_FLAGS_H_
