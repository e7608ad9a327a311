// LogAccess: an access record as one line of key=value fields.
#include "server/core/access_log.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/core/log.h"

namespace hgrn2::server {
namespace {

// A field's value, quoted when it holds a space, a quote, '=' or a control character (so the
// record stays one line that splits cleanly); control characters as \xNN.
std::string Value(const std::string& value) {
  bool plain = !value.empty();
  for (unsigned char c : value) plain = plain && c > 0x20 && c != '"' && c != '=' && c != '\\';
  if (plain) return value;
  std::string quoted = "\"";
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&quoted, absl::StrFormat("\\x%02x", c));
      continue;
    }
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += static_cast<char>(c);
  }
  return quoted + "\"";
}

}  // namespace

void LogAccess(const AccessLogRecord& record) {
  std::string line = absl::StrCat("access method=", Value(record.method),
                                  " request_id=", Value(record.request_id));
  if (!record.tenant.empty()) absl::StrAppend(&line, " tenant=", Value(record.tenant));
  absl::StrAppend(&line, " peer=", Value(record.peer),
                  " code=", absl::StatusCodeToString(record.code));
  absl::StrAppend(&line, " prompt_tokens=", record.prompt_tokens,
                  " generated_tokens=", record.generated_tokens);
  if (record.time_to_first_token) {
    absl::StrAppend(
        &line,
        absl::StrFormat(" ttft_ms=%.3f", absl::ToDoubleMilliseconds(*record.time_to_first_token)));
  }
  absl::StrAppend(
      &line, absl::StrFormat(" duration_ms=%.3f", absl::ToDoubleMilliseconds(record.duration)));
  if (!record.finish_reason.empty()) absl::StrAppend(&line, " finish=", record.finish_reason);
  if (!record.session_id.empty()) absl::StrAppend(&line, " session_id=", record.session_id);
  if (!record.save_session_as.empty()) {
    absl::StrAppend(&line, " save_session_as=", record.save_session_as);
  }
  if (!record.traceparent.empty()) {
    absl::StrAppend(&line, " traceparent=", Value(record.traceparent));
  }
  if (!record.message.empty()) absl::StrAppend(&line, " error=", Value(record.message));
  Log(line);
}

}  // namespace hgrn2::server
