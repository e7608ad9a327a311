// The access log's fields and level, written through the log in either format.
#include "server/core/access_log.h"

#include <optional>

#include "server/core/traceparent.h"

namespace hgrn2::server {

std::vector<LogField> AccessLogFields(const AccessLogRecord& record) {
  std::vector<LogField> fields;
  const auto text = [&fields](const char* key, const std::string& value) {
    if (!value.empty()) fields.emplace_back(key, value);
  };
  text("method", record.method);
  text("request_id", record.request_id);
  text("tenant", record.tenant);
  text("peer", record.peer);
  fields.emplace_back("code", absl::StatusCodeToString(record.code));
  fields.emplace_back("prompt_tokens", record.prompt_tokens);
  fields.emplace_back("generated_tokens", record.generated_tokens);
  if (record.time_to_first_token.has_value()) {
    fields.emplace_back("time_to_first_token_ms",
                        absl::ToDoubleMilliseconds(*record.time_to_first_token));
  }
  fields.emplace_back("duration_ms", absl::ToDoubleMilliseconds(record.duration));
  text("finish_reason", record.finish_reason);
  text("session_id", record.session_id);
  text("save_session_as", record.save_session_as);
  if (const std::optional<TraceParent> trace = ParseTraceParent(record.traceparent)) {
    fields.emplace_back("traceparent", trace->ToString());
    fields.emplace_back("trace_id", trace->trace_id);
  }
  if (record.code != absl::StatusCode::kOk) text("error", record.message);
  return fields;
}

LogLevel AccessLogLevel(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return LogLevel::kError;
    default:
      return LogLevel::kInfo;
  }
}

void LogAccess(const AccessLogRecord& record) {
  Log(AccessLogLevel(record.code), "access", AccessLogFields(record));
}

}  // namespace hgrn2::server
