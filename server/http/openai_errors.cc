// absl::Status → HTTP status and OpenAI error body (see openai_errors.h).
#include "server/http/openai_errors.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace hgrn2::server {
namespace {

constexpr size_t kMaxMessageBytes = 2048;

// "field: why" or "field[3] = 7 is ..." → the field, when the part before ": " or " = " reads as
// a field name (no spaces).
std::optional<std::string> ParamOf(absl::string_view message) {
  const size_t colon = std::min(message.find(": "), message.find(" = "));
  if (colon == absl::string_view::npos || colon == 0) return std::nullopt;
  const absl::string_view field = message.substr(0, colon);
  if (absl::StrContains(field, ' ') || absl::StartsWith(field, "-")) return std::nullopt;
  return std::string(field);
}

}  // namespace

HttpError HttpErrorOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return {400, "invalid_request_error", std::nullopt};
    case absl::StatusCode::kUnauthenticated:
      return {401, "authentication_error", "invalid_api_key"};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error", std::nullopt};
    case absl::StatusCode::kNotFound:
      return {404, "not_found_error", std::nullopt};
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return {409, "conflict_error", std::nullopt};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", "rate_limit_exceeded"};
    case absl::StatusCode::kUnavailable:
      return {503, "service_unavailable_error", std::nullopt};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "timeout_error", std::nullopt};
    case absl::StatusCode::kCancelled:
      return {499, "cancelled", std::nullopt};
    default:
      return {500, "server_error", std::nullopt};
  }
}

nlohmann::json ErrorBody(const absl::Status& status) {
  const HttpError error = HttpErrorOf(status);
  std::string message(status.message());
  if (message.size() > kMaxMessageBytes) {
    message.resize(kMaxMessageBytes);
    message += "...";
  }
  const std::optional<std::string> param = ParamOf(status.message());
  std::optional<std::string> code = error.code;
  if (error.status == 404 && param == "model") code = "model_not_found";
  nlohmann::json body = {{"message", message},
                         {"type", error.type},
                         {"param", param ? nlohmann::json(*param) : nlohmann::json(nullptr)},
                         {"code", code ? nlohmann::json(*code) : nlohmann::json(nullptr)}};
  return {{"error", std::move(body)}};
}

HttpResponse ErrorResponse(const absl::Status& status) {
  HttpResponse response;
  response.status = HttpErrorOf(status).status;
  // Invalid UTF-8 in a message (a client's bytes quoted back) becomes U+FFFD rather than failing.
  response.body = ErrorBody(status).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (response.status == 429 || response.status == 503) {
    response.headers.emplace_back("Retry-After", "1");
  }
  return response;
}

}  // namespace hgrn2::server
