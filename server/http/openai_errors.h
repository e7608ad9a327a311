// The one mapping from absl::Status to an HTTP status and an error body in OpenAI's shape,
// {"error": {"message", "type", "param", "code"}}, which the openai SDKs turn into their
// exception classes (BadRequestError, AuthenticationError, NotFoundError, RateLimitError, ...).
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/http/http_exchange.h"

namespace hgrn2::server {

struct HttpError {
  int status = 500;
  std::string type;                 // "invalid_request_error", "authentication_error", ...
  std::optional<std::string> code;  // "invalid_api_key", "model_not_found", ...
};

// INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION: 400; UNAUTHENTICATED: 401;
// PERMISSION_DENIED: 403; NOT_FOUND: 404; ALREADY_EXISTS, ABORTED: 409; RESOURCE_EXHAUSTED (queue
// full, tenant limits): 429; UNAVAILABLE (draining, stopped): 503; DEADLINE_EXCEEDED: 504;
// CANCELLED: 499 (the client went away; nobody reads it); anything else: 500.
HttpError HttpErrorOf(const absl::Status& status);
// {"error": {...}}: the message (at most 2 KiB), the type, the field the message starts with
// ("n: must be at most 16" names "n") as param, and the code.
nlohmann::json ErrorBody(const absl::Status& status);
// The whole response: status, body, and Retry-After for 429 and 503.
HttpResponse ErrorResponse(const absl::Status& status);

}  // namespace hgrn2::server
