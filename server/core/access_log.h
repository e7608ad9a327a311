// The access log: one record for every finished (or refused) call of every front end, written
// by the call scope, in the log's format (text or JSON lines, server/core/log.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/log.h"

namespace hgrn2::server {

struct AccessLogRecord {
  std::string method;      // "Generate", "POST /v1/completions"
  std::string request_id;  // empty when the call was refused before it had one
  std::string tenant;
  std::string peer;
  // The W3C traceparent the client sent, or empty. Logged only when valid
  // (server/core/traceparent.h); an invalid one is dropped, as the specification asks.
  std::string traceparent;
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

// The record's fields in the order they are written: method, request_id, tenant, peer, code
// (the canonical name: "OK", "INVALID_ARGUMENT"), prompt_tokens, generated_tokens,
// time_to_first_token_ms, duration_ms, finish_reason, session_id, save_session_as, traceparent
// and trace_id (normalized to version 00), error. Empty strings, an absent time to first token
// and an invalid traceparent are left out.
std::vector<LogField> AccessLogFields(const AccessLogRecord& record);
// info, or error for the codes that mean the server failed (INTERNAL, UNKNOWN, DATA_LOSS).
LogLevel AccessLogLevel(absl::StatusCode code);
// Writes one record as one log line, message "access": in text "... INFO hgrn2-server: access
// method=Generate request_id=... code=OK ...", in JSON {"message":"access","method":...}.
void LogAccess(const AccessLogRecord& record);

}  // namespace hgrn2::server
