// The one Status → HTTP mapping: every code's status and type, the field as param.
#include "server/http/openai_errors.h"

#include "gtest/gtest.h"

namespace hgrn2::server {
namespace {

TEST(OpenAiErrors, EveryCodeHasItsStatusAndType) {
  const struct {
    absl::Status status;
    int http;
    const char* type;
  } cases[] = {
      {absl::InvalidArgumentError("n: must be at least 1"), 400, "invalid_request_error"},
      {absl::FailedPreconditionError("sessions are off"), 400, "invalid_request_error"},
      {absl::OutOfRangeError("x"), 400, "invalid_request_error"},
      {absl::UnauthenticatedError("missing API key"), 401, "authentication_error"},
      {absl::PermissionDeniedError("x"), 403, "permission_error"},
      {absl::NotFoundError("model: \"x\" is not served here"), 404, "not_found_error"},
      {absl::AlreadyExistsError("x"), 409, "conflict_error"},
      {absl::ResourceExhaustedError("queue full"), 429, "rate_limit_error"},
      {absl::UnavailableError("draining"), 503, "service_unavailable_error"},
      {absl::DeadlineExceededError("x"), 504, "timeout_error"},
      {absl::InternalError("x"), 500, "server_error"},
      {absl::DataLossError("x"), 500, "server_error"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.status.ToString());
    const HttpResponse response = ErrorResponse(c.status);
    EXPECT_EQ(response.status, c.http);
    const nlohmann::json body = nlohmann::json::parse(response.body);
    EXPECT_EQ(body["error"]["type"], c.type);
    EXPECT_EQ(body["error"]["message"], std::string(c.status.message()));
    const bool retry = c.http == 429 || c.http == 503;
    EXPECT_EQ(response.headers.size(), retry ? 1u : 0u);
  }
}

TEST(OpenAiErrors, TheFieldAMessageStartsWithIsTheParam) {
  nlohmann::json body = ErrorBody(absl::InvalidArgumentError("messages[0].content: must be text"));
  EXPECT_EQ(body["error"]["param"], "messages[0].content");
  EXPECT_TRUE(body["error"]["code"].is_null());
  body = ErrorBody(absl::InvalidArgumentError("--max-n must be >= 1: bad"));
  EXPECT_TRUE(body["error"]["param"].is_null());
  body = ErrorBody(absl::InvalidArgumentError("prompt[2] = 9 is outside the vocabulary"));
  EXPECT_EQ(body["error"]["param"], "prompt[2]");
  body = ErrorBody(absl::InvalidArgumentError("the server says: no"));
  EXPECT_TRUE(body["error"]["param"].is_null());
  body = ErrorBody(absl::NotFoundError("model: \"gpt-4\" is not served here"));
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_EQ(body["error"]["code"], "model_not_found");
  body = ErrorBody(absl::UnauthenticatedError("missing API key"));
  EXPECT_EQ(body["error"]["code"], "invalid_api_key");
  // Long messages are cut; bytes that are not UTF-8 do not break the body.
  const HttpResponse long_one = ErrorResponse(absl::InvalidArgumentError(std::string(5000, 'x')));
  EXPECT_LT(long_one.body.size(), 2200u);
  const HttpResponse bytes = ErrorResponse(absl::InvalidArgumentError("prompt: \xff\xfe bad"));
  EXPECT_FALSE(nlohmann::json::parse(bytes.body, nullptr, false).is_discarded());
}

}  // namespace
}  // namespace hgrn2::server
