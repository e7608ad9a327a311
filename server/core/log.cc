// The log's two formats (text, JSON lines) and the one writer every thread shares.
#include "server/core/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace hgrn2::server {
namespace {

std::atomic<LogFormat> log_format{LogFormat::kText};

struct Sink {
  std::mutex mutex;
  std::function<void(absl::string_view)> replacement;  // tests
};

Sink& TheSink() {
  static Sink* sink = new Sink;  // never destroyed: threads may log during exit
  return *sink;
}

std::string Rfc3339(absl::Time time) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
}

// logfmt's rule: bare unless the value is empty or holds a space, quote, '=' or a control
// character; then in double quotes with \" \\ \n \t and \xHH escapes.
std::string TextValue(absl::string_view value) {
  bool bare = !value.empty();
  for (const char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7f) {
      bare = false;
      break;
    }
  }
  if (bare) return std::string(value);
  std::string out = "\"";
  for (const char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string TextNumber(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf");
  return absl::StrFormat("%.6g", value);
}

std::string FormatText(absl::Time time, LogLevel level, absl::string_view message,
                       const std::vector<LogField>& fields) {
  std::string line = absl::StrCat(Rfc3339(time), " ", absl::AsciiStrToUpper(LogLevelName(level)),
                                  " hgrn2-server: ", message);
  for (const LogField& field : fields) {
    absl::StrAppend(&line, " ", field.key, "=");
    std::visit(
        [&line](const auto& value) {
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, std::string>) {
            line += TextValue(value);
          } else if constexpr (std::is_same_v<T, bool>) {
            line += value ? "true" : "false";
          } else if constexpr (std::is_same_v<T, double>) {
            line += TextNumber(value);
          } else {
            absl::StrAppend(&line, value);
          }
        },
        field.value);
  }
  line += '\n';
  return line;
}

std::string FormatJson(absl::Time time, LogLevel level, absl::string_view message,
                       const std::vector<LogField>& fields) {
  nlohmann::ordered_json object;
  object["time"] = Rfc3339(time);
  object["level"] = std::string(LogLevelName(level));
  object["message"] = std::string(message);
  for (const LogField& field : fields) {
    std::visit(
        [&](const auto& value) {
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, double>) {
            // JSON has no NaN or infinity (nlohmann would write null); a string keeps the value.
            if (!std::isfinite(value)) {
              object[field.key] = TextNumber(value);
              return;
            }
          }
          object[field.key] = value;
        },
        field.value);
  }
  // Client-given strings (request ids, peers) may hold invalid UTF-8: replaced, never thrown.
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

void Write(const std::string& line) {
  Sink& sink = TheSink();
  std::lock_guard<std::mutex> lock(sink.mutex);
  if (sink.replacement) {
    sink.replacement(line);
    return;
  }
  // write(2) directly: one call per line, nothing buffered that a crash could lose.
  absl::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = write(STDERR_FILENO, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to report a broken standard error
    rest.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(absl::StrCat("--log-format ", name, ": expected text or json"));
}

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void SetLogFormat(LogFormat format) { log_format.store(format, std::memory_order_relaxed); }
LogFormat GetLogFormat() { return log_format.load(std::memory_order_relaxed); }

std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view message, const std::vector<LogField>& fields) {
  return format == LogFormat::kJson ? FormatJson(time, level, message, fields)
                                    : FormatText(time, level, message, fields);
}

void Log(LogLevel level, absl::string_view message, const std::vector<LogField>& fields) {
  Write(FormatLogLine(GetLogFormat(), absl::Now(), level, message, fields));
}

void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields) {
  Log(level, message, std::vector<LogField>(fields));
}

void Log(absl::string_view message) { Log(LogLevel::kInfo, message, std::vector<LogField>()); }

void SetLogSinkForTesting(std::function<void(absl::string_view line)> sink) {
  Sink& the_sink = TheSink();
  std::lock_guard<std::mutex> lock(the_sink.mutex);
  the_sink.replacement = std::move(sink);
}

}  // namespace hgrn2::server
