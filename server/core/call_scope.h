// CallScope: what every call of every front end does on entry and exit, written once: the
// caller's key and tenant, admission (tenant limits, a draining server), the request id, the
// deadline, and at the end the request metrics and the access log record.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/access_control.h"
#include "server/core/call_parts.h"

namespace hgrn2::server {

// What a front end reads off a call before it is admitted.
struct CallInfo {
  std::string method;  // the metrics' and the access log's name: "Generate", "POST /v1/..."
  std::string peer;    // the client's address as the transport gives it
  // The "authorization" metadata or header as sent ("Bearer <key>"); unset when absent.
  std::optional<std::string> authorization;
  std::string request_id;   // the client's; empty: the scope makes one
  std::string traceparent;  // a W3C traceparent as sent, or empty
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time start = absl::Now();
};

// What the access log records of a call beyond CallInfo, filled in as the call goes.
struct CallOutcome {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  std::optional<absl::Duration> time_to_first_token;
  std::string finish_reason;  // "length", "eos", "stop", or empty
  std::string session_id;
  std::string save_session_as;
};

// Thread-safety: one call at a time may use it (a front end's call holds it and calls it from
// whichever thread runs the call's next step); End() once.
class CallScope {
 public:
  // Admits a call: the caller's tenant from its key (UNAUTHENTICATED for a missing, malformed or
  // unknown key; RESOURCE_EXHAUSTED naming a tenant limit), the request id (INVALID_ARGUMENT when
  // the client's is too long or not printable), and a place among the calls in progress
  // (UNAVAILABLE once the server drains). A refused call is recorded at once (metrics, access
  // log) and holds nothing.
  static absl::StatusOr<std::unique_ptr<CallScope>> Begin(const CallParts& parts, CallInfo info);
  // End(CANCELLED) when End was not called.
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  const std::string& tenant() const { return admission_.tenant(); }
  const std::string& request_id() const { return request_id_; }
  const std::string& method() const { return info_.method; }
  absl::Time deadline() const { return info_.deadline; }
  absl::Time start() const { return info_.start; }
  // Model tokens against the tenant's tokens per minute.
  void ChargeTokens(int64_t tokens) const { admission_.ChargeTokens(tokens); }
  CallOutcome& outcome() { return outcome_; }

  // The call's end: the tenant's slot back, the request counted (method, code, duration), the
  // access log record written, and the call off the list of calls in progress. Once.
  void End(const absl::Status& status);

 private:
  CallScope(const CallParts& parts, CallInfo info, std::string request_id, Admission admission)
      : parts_(parts),
        info_(std::move(info)),
        request_id_(std::move(request_id)),
        admission_(std::move(admission)) {}
  // Metrics and the access log of a finished or refused call.
  static void Record(const CallParts& parts, const CallInfo& info, const std::string& request_id,
                     const std::string& tenant, const CallOutcome& outcome,
                     const absl::Status& status);

  const CallParts& parts_;
  const CallInfo info_;
  const std::string request_id_;
  Admission admission_;
  CallOutcome outcome_;
  bool ended_ = false;
};

}  // namespace hgrn2::server
