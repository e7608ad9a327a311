// CallScope, what every call of every front end does on entry and exit: admission by key and
// tenant limits, request ids, refusal while draining, the request metrics and the access log.
#include "server/core/call_scope.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/core/core_test_fixture.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using core_testing::CoreFixture;
using ::hgrn2::testing::ExpectError;
using ::testing::HasSubstr;

std::string Sha256Hex(const std::string& key) {
  const KeyHash hash = HashApiKey(key);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(hash.data()), hash.size()));
}

CallInfo Info(const std::string& method, std::optional<std::string> authorization = std::nullopt,
              const std::string& request_id = "") {
  CallInfo info;
  info.method = method;
  info.peer = "ipv4:127.0.0.1:1234";
  info.authorization = std::move(authorization);
  info.request_id = request_id;
  info.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  return info;
}

TEST(CallScope, AdmitsCountsAndLogsOneRecordPerCall) {
  CoreFixture fixture;
  ::testing::internal::CaptureStderr();
  {
    absl::StatusOr<std::unique_ptr<CallScope>> scope =
        CallScope::Begin(fixture.parts, Info("Generate", std::nullopt, "my-id"));
    ASSERT_TRUE(scope.ok()) << scope.status();
    EXPECT_EQ((*scope)->request_id(), "my-id");
    EXPECT_EQ((*scope)->tenant(), "");
    EXPECT_EQ(fixture.calls.active(), 1);
    (*scope)->outcome().prompt_tokens = 7;
    (*scope)->outcome().generated_tokens = 3;
    (*scope)->outcome().finish_reason = "length";
    (*scope)->End(absl::OkStatus());
    EXPECT_EQ(fixture.calls.active(), 0);
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(log, HasSubstr("access method=Generate request_id=my-id peer=ipv4:127.0.0.1:1234 "
                             "code=OK prompt_tokens=7 generated_tokens=3"));
  EXPECT_THAT(log, HasSubstr("finish_reason=length"));
  EXPECT_THAT(log,
              HasSubstr("traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_THAT(fixture.metrics.Render(),
              HasSubstr(R"(hgrn2_requests_total{code="OK",rpc="Generate"} 1)"));
}

TEST(CallScope, MakesARequestIdAndRefusesABadOne) {
  CoreFixture fixture;
  absl::StatusOr<std::unique_ptr<CallScope>> scope = CallScope::Begin(fixture.parts, Info("Score"));
  ASSERT_TRUE(scope.ok()) << scope.status();
  EXPECT_THAT((*scope)->request_id(), ::testing::StartsWith("req-"));
  scope->reset();
  ExpectError(CallScope::Begin(fixture.parts, Info("Score", std::nullopt, "has space")).status(),
              absl::StatusCode::kInvalidArgument, {"request_id", "printable ASCII"});
  EXPECT_EQ(fixture.calls.active(), 0);
  EXPECT_THAT(fixture.metrics.Render(),
              HasSubstr(R"(hgrn2_requests_total{code="INVALID_ARGUMENT",rpc="Score"} 1)"));
}

// A scope let go without End counts as cancelled and gives its place back.
TEST(CallScope, AScopeDroppedWithoutEndCountsAsCancelled) {
  CoreFixture fixture;
  { ASSERT_TRUE(CallScope::Begin(fixture.parts, Info("Tokenize")).ok()); }
  EXPECT_EQ(fixture.calls.active(), 0);
  EXPECT_THAT(fixture.metrics.Render(),
              HasSubstr(R"(hgrn2_requests_total{code="CANCELLED",rpc="Tokenize"} 1)"));
}

TEST(CallScope, RefusesNewCallsOnceDraining) {
  CoreFixture fixture;
  fixture.calls.StartDraining();
  ExpectError(CallScope::Begin(fixture.parts, Info("Generate")).status(),
              absl::StatusCode::kUnavailable, {"shutting down"});
  EXPECT_EQ(fixture.calls.active(), 0);
}

// With API keys: no key, a malformed header and an unknown key are UNAUTHENTICATED; a known key
// names its tenant; the tenant's concurrency limit refuses the call over it until a scope ends.
TEST(CallScope, KeysNameTenantsAndTenantLimitsHold) {
  const std::filesystem::path dir = testing::MakeTempDir();
  testing::WriteFile(
      dir / "keys.json",
      absl::StrCat(R"({"tenants": {"acme": {"max_concurrent_requests": 1}},)",
                   R"( "keys": [{"sha256": ")", Sha256Hex("secret"), R"(", "tenant": "acme"}]})"));
  CoreFixture fixture(/*with_sessions=*/true, (dir / "keys.json").string());
  ExpectError(CallScope::Begin(fixture.parts, Info("Generate")).status(),
              absl::StatusCode::kUnauthenticated, {"no API key"});
  ExpectError(CallScope::Begin(fixture.parts, Info("Generate", "Basic abc")).status(),
              absl::StatusCode::kUnauthenticated, {"not \"Bearer <key>\""});
  ExpectError(CallScope::Begin(fixture.parts, Info("Generate", "Bearer wrong")).status(),
              absl::StatusCode::kUnauthenticated, {"not recognized"});
  absl::StatusOr<std::unique_ptr<CallScope>> first =
      CallScope::Begin(fixture.parts, Info("Generate", "Bearer secret"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->tenant(), "acme");
  ExpectError(CallScope::Begin(fixture.parts, Info("Generate", "Bearer secret")).status(),
              absl::StatusCode::kResourceExhausted, {"max_concurrent_requests"});
  (*first)->End(absl::OkStatus());
  EXPECT_TRUE(CallScope::Begin(fixture.parts, Info("Generate", "Bearer secret")).ok());
  EXPECT_EQ(fixture.calls.active(), 0);
}

}  // namespace
}  // namespace hgrn2::server
