// The access log: one record for every finished (or refused) call of every front end, written
// by the call scope.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace hgrn2::server {

struct AccessLogRecord {
  std::string method;      // "Generate", "POST /v1/completions"
  std::string request_id;  // empty when the call was refused before it had one
  std::string tenant;
  std::string peer;
  std::string traceparent;  // the W3C traceparent the client sent, or empty
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;  // the error's, when not OK
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  std::optional<absl::Duration> time_to_first_token;
  absl::Duration duration;
  std::string finish_reason;
  std::string session_id;
  std::string save_session_as;
};

// Writes one record as a log line ("access method=Generate request_id=... code=OK ...").
void LogAccess(const AccessLogRecord& record);

}  // namespace hgrn2::server
