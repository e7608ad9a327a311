// The server's log: one line per event on standard error, as text or as one JSON object, from any
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hgrn2::server {

enum class LogLevel { kDebug, kInfo, kWarning, kError };
// kText: "2026-11-23T19:58:01.123Z INFO hgrn2-server: <message> key=value key=\"a value\""
// kJson: {"time":"2026-11-23T19:58:01.123Z","level":"info","message":"<message>","key":value,...}
enum class LogFormat { kText, kJson };

// "text" or "json" (--log-format); InvalidArgument naming the value otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
// "debug", "info", "warning", "error": the JSON spelling (text writes it in capitals).
absl::string_view LogLevelName(LogLevel level);

// One typed key/value of a log line. JSON keeps the type (strings, integers, floating-point
// numbers, booleans); text writes key=value, the value quoted when it holds a space, a quote, an
// equals sign or a control character. A duration is written as seconds (a number). Keys are
// snake_case and never "time", "level" or "message".
struct LogField {
  using Value = std::variant<std::string, int64_t, double, bool>;

  LogField(absl::string_view name, absl::string_view v) : key(name), value(std::string(v)) {}
  LogField(absl::string_view name, const char* v) : key(name), value(std::string(v)) {}
  LogField(absl::string_view name, const std::string& v) : key(name), value(v) {}
  LogField(absl::string_view name, int v) : key(name), value(int64_t{v}) {}
  LogField(absl::string_view name, int64_t v) : key(name), value(v) {}
  LogField(absl::string_view name, uint64_t v) : key(name), value(static_cast<int64_t>(v)) {}
  LogField(absl::string_view name, double v) : key(name), value(v) {}
  LogField(absl::string_view name, bool v) : key(name), value(v) {}
  LogField(absl::string_view name, absl::Duration v) : key(name), value(absl::ToDoubleSeconds(v)) {}

  std::string key;
  Value value;
};

// Chooses the format of every later line. main() calls it once, before other threads start.
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

// Writes one line (one write(2), so lines of different threads never interleave).
void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields = {});
inline void LogInfo(absl::string_view message, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, message, fields);
}
inline void LogWarning(absl::string_view message, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarning, message, fields);
}
inline void LogError(absl::string_view message, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, message, fields);
}
// The same with fields built at run time (the access log).
void Log(LogLevel level, absl::string_view message, const std::vector<LogField>& fields);
// An info line without fields (the callers from before levels existed).
void Log(absl::string_view message);

// The line Log writes, newline included; for tests and for Log itself. Invalid UTF-8 in a JSON
// value is replaced by U+FFFD, so a line is always valid JSON.
std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view message, const std::vector<LogField>& fields);

// Tests: every line goes to `sink` instead of standard error (an empty function restores it).
void SetLogSinkForTesting(std::function<void(absl::string_view line)> sink);

}  // namespace hgrn2::server
