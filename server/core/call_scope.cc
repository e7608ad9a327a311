// CallScope: admission on entry, metrics and the access log on exit.
#include "server/core/call_scope.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/core/access_log.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {

absl::StatusOr<std::unique_ptr<CallScope>> CallScope::Begin(const CallParts& parts, CallInfo info) {
  absl::StatusOr<Admission> admission = parts.access->Admit(info.authorization);
  absl::StatusOr<std::string> request_id = RequestIdOf(info.request_id, parts.model->limits);
  absl::Status refused;
  if (!admission.ok()) {
    refused = admission.status();
  } else if (!request_id.ok()) {
    refused = request_id.status();
  } else if (!parts.calls->TryBegin()) {
    refused = absl::UnavailableError("the server is shutting down and takes no new requests");
  }
  if (!refused.ok()) {
    const std::string tenant = admission.ok() ? admission->tenant() : std::string();
    Record(parts, info, request_id.ok() ? *request_id : std::string(), tenant, CallOutcome(),
           refused);
    return refused;
  }
  return std::unique_ptr<CallScope>(
      new CallScope(parts, std::move(info), *std::move(request_id), *std::move(admission)));
}

CallScope::~CallScope() {
  if (!ended_) End(absl::CancelledError("the call ended without an answer"));
}

void CallScope::End(const absl::Status& status) {
  if (ended_) return;
  ended_ = true;
  const std::string tenant = admission_.tenant();
  admission_.Release();
  Record(parts_, info_, request_id_, tenant, outcome_, status);
  parts_.calls->End();
}

void CallScope::Record(const CallParts& parts, const CallInfo& info, const std::string& request_id,
                       const std::string& tenant, const CallOutcome& outcome,
                       const absl::Status& status) {
  const absl::Duration duration = absl::Now() - info.start;
  parts.metrics->RecordRequest(info.method, status.code(), absl::ToDoubleSeconds(duration), tenant);
  AccessLogRecord record;
  record.method = info.method;
  record.request_id = request_id;
  record.tenant = tenant;
  record.peer = info.peer;
  record.traceparent = info.traceparent;
  record.code = status.code();
  record.message = status.ok() ? std::string() : std::string(status.message());
  record.prompt_tokens = outcome.prompt_tokens;
  record.generated_tokens = outcome.generated_tokens;
  record.time_to_first_token = outcome.time_to_first_token;
  record.duration = duration;
  record.finish_reason = outcome.finish_reason;
  record.session_id = outcome.session_id;
  record.save_session_as = outcome.save_session_as;
  LogAccess(record);
}

}  // namespace hgrn2::server
