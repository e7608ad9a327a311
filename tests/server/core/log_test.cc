// The log's text and JSON lines, the access log record's fields in both, and the traceparent
// parser against the W3C Trace Context rules.
#include "server/core/log.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/core/access_log.h"
#include "server/core/traceparent.h"

namespace hgrn2::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::Time FixedTime() {
  return absl::FromCivil(absl::CivilSecond(2026, 11, 23, 19, 58, 1), absl::UTCTimeZone()) +
         absl::Milliseconds(123);
}

nlohmann::json ParseJsonLine(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line: " << line;
  return nlohmann::json::parse(line);
}

// The keys of a JSON object in the order written.
std::vector<std::string> Keys(const std::string& line) {
  const nlohmann::ordered_json object = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys;
}

TEST(LogTest, TextLineHasTimeLevelMessageAndFields) {
  const std::string line =
      FormatLogLine(LogFormat::kText, FixedTime(), LogLevel::kWarning, "health probe failed",
                    {{"port", 50051}, {"model", "hgrn2-demo"}, {"ratio", 0.25}, {"tls", false}});
  EXPECT_EQ(line,
            "2026-11-23T19:58:01.123Z WARNING hgrn2-server: health probe failed port=50051 "
            "model=hgrn2-demo ratio=0.25 tls=false\n");
}

TEST(LogTest, TextQuotesValuesThatNeedIt) {
  const std::string line =
      FormatLogLine(LogFormat::kText, FixedTime(), LogLevel::kInfo, "m",
                    {{"a", "two words"}, {"b", ""}, {"c", "x=y"}, {"d", "say \"hi\"\n\\"}});
  EXPECT_EQ(line,
            "2026-11-23T19:58:01.123Z INFO hgrn2-server: m a=\"two words\" b=\"\" c=\"x=y\" "
            "d=\"say \\\"hi\\\"\\n\\\\\"\n");
  // A control character cannot break the line.
  const std::string control =
      FormatLogLine(LogFormat::kText, FixedTime(), LogLevel::kInfo, "m", {{"a", "x\ry"}});
  EXPECT_EQ(control, "2026-11-23T19:58:01.123Z INFO hgrn2-server: m a=\"x\\x0dy\"\n");
}

TEST(LogTest, JsonLineIsOneObjectWithTypedFields) {
  const std::string line =
      FormatLogLine(LogFormat::kJson, FixedTime(), LogLevel::kError, "warm-up failed",
                    {{"port", 50051},
                     {"model", "hgrn2-demo"},
                     {"seconds", absl::Milliseconds(1500)},
                     {"tls", true},
                     {"big", int64_t{1} << 40}});
  const nlohmann::json object = ParseJsonLine(line);
  EXPECT_EQ(object["time"], "2026-11-23T19:58:01.123Z");
  EXPECT_EQ(object["level"], "error");
  EXPECT_EQ(object["message"], "warm-up failed");
  EXPECT_TRUE(object["port"].is_number_integer());
  EXPECT_EQ(object["port"], 50051);
  EXPECT_EQ(object["model"], "hgrn2-demo");
  EXPECT_TRUE(object["seconds"].is_number_float());
  EXPECT_DOUBLE_EQ(object["seconds"].get<double>(), 1.5);
  EXPECT_EQ(object["tls"], true);
  EXPECT_EQ(object["big"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_THAT(Keys(line),
              ElementsAre("time", "level", "message", "port", "model", "seconds", "tls", "big"));
}

TEST(LogTest, JsonSurvivesInvalidUtf8AndNonFiniteNumbers) {
  const std::string line = FormatLogLine(
      LogFormat::kJson, FixedTime(), LogLevel::kInfo, "bad \xff bytes",
      {{"peer", std::string("a\xc3\x28z")}, {"nan", std::nan("")}, {"newline", "a\nb"}});
  const nlohmann::json object = ParseJsonLine(line);
  EXPECT_EQ(object["message"], "bad \xef\xbf\xbd bytes");  // U+FFFD
  EXPECT_EQ(object["peer"], "a\xef\xbf\xbd(z");
  EXPECT_EQ(object["nan"], "NaN");
  EXPECT_EQ(object["newline"], "a\nb");
}

TEST(LogTest, ParseLogFormat) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  const absl::StatusOr<LogFormat> bad = ParseLogFormat("JSON");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "--log-format JSON: expected text or json");
}

// Log() writes whole lines in the chosen format, one call of the sink each.
TEST(LogTest, LogWritesInTheChosenFormat) {
  std::vector<std::string> lines;
  SetLogSinkForTesting([&lines](absl::string_view line) { lines.emplace_back(line); });
  SetLogFormat(LogFormat::kJson);
  LogInfo("serving", {{"port", 50051}});
  Log("plain");
  SetLogFormat(LogFormat::kText);
  LogError("stopped", {{"code", "INTERNAL"}});
  SetLogSinkForTesting(nullptr);
  ASSERT_EQ(lines.size(), 3u);
  const nlohmann::json first = ParseJsonLine(lines[0]);
  EXPECT_EQ(first["level"], "info");
  EXPECT_EQ(first["message"], "serving");
  EXPECT_EQ(first["port"], 50051);
  EXPECT_EQ(ParseJsonLine(lines[1])["message"], "plain");
  EXPECT_THAT(lines[2], HasSubstr(" ERROR hgrn2-server: stopped code=INTERNAL\n"));
  EXPECT_EQ(lines[2].find('{'), std::string::npos);
}

AccessLogRecord FullRecord() {
  AccessLogRecord record;
  record.method = "Generate";
  record.request_id = "req-42";
  record.tenant = "acme";
  record.peer = "ipv4:127.0.0.1:41234";
  record.prompt_tokens = 11;
  record.generated_tokens = 24;
  record.time_to_first_token = absl::Microseconds(12500);
  record.duration = absl::Milliseconds(250);
  record.finish_reason = "length";
  record.code = absl::StatusCode::kOk;
  record.session_id = "alice";
  record.save_session_as = "alice-2";
  record.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  return record;
}

std::string Line(LogFormat format, const AccessLogRecord& record) {
  return FormatLogLine(format, FixedTime(), AccessLogLevel(record.code), "access",
                       AccessLogFields(record));
}

TEST(AccessLogTest, JsonRecordHasEveryField) {
  const std::string line = Line(LogFormat::kJson, FullRecord());
  const nlohmann::json object = ParseJsonLine(line);
  EXPECT_EQ(object["level"], "info");
  EXPECT_EQ(object["message"], "access");
  EXPECT_EQ(object["method"], "Generate");
  EXPECT_EQ(object["request_id"], "req-42");
  EXPECT_EQ(object["tenant"], "acme");
  EXPECT_EQ(object["peer"], "ipv4:127.0.0.1:41234");
  EXPECT_EQ(object["code"], "OK");
  EXPECT_EQ(object["prompt_tokens"], 11);
  EXPECT_EQ(object["generated_tokens"], 24);
  EXPECT_DOUBLE_EQ(object["time_to_first_token_ms"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(object["duration_ms"].get<double>(), 250.0);
  EXPECT_EQ(object["finish_reason"], "length");
  EXPECT_EQ(object["session_id"], "alice");
  EXPECT_EQ(object["save_session_as"], "alice-2");
  EXPECT_EQ(object["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(object["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_FALSE(object.contains("error"));
  EXPECT_THAT(Keys(line), ElementsAre("time", "level", "message", "method", "request_id", "tenant",
                                      "peer", "code", "prompt_tokens", "generated_tokens",
                                      "time_to_first_token_ms", "duration_ms", "finish_reason",
                                      "session_id", "save_session_as", "traceparent", "trace_id"));
}

TEST(AccessLogTest, TextRecordHasEveryField) {
  EXPECT_EQ(Line(LogFormat::kText, FullRecord()),
            "2026-11-23T19:58:01.123Z INFO hgrn2-server: access method=Generate request_id=req-42 "
            "tenant=acme peer=ipv4:127.0.0.1:41234 code=OK prompt_tokens=11 generated_tokens=24 "
            "time_to_first_token_ms=12.5 duration_ms=250 finish_reason=length session_id=alice "
            "save_session_as=alice-2 "
            "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 "
            "trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n");
}

// A refused call: its code and message; no request id, tenant, first token, finish or trace
// (left out, not written empty).
TEST(AccessLogTest, RefusedCallRecord) {
  AccessLogRecord record;
  record.method = "Score";
  record.peer = "ipv6:[::1]:5000";
  record.duration = absl::Microseconds(1500);
  record.code = absl::StatusCode::kInvalidArgument;
  record.message = "sampling.top_p must be in (0, 1], got 2";
  const std::string line = Line(LogFormat::kJson, record);
  const nlohmann::json object = ParseJsonLine(line);
  EXPECT_EQ(object["level"], "info");
  EXPECT_EQ(object["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(object["error"], "sampling.top_p must be in (0, 1], got 2");
  EXPECT_EQ(object["prompt_tokens"], 0);
  EXPECT_DOUBLE_EQ(object["duration_ms"].get<double>(), 1.5);
  EXPECT_THAT(Keys(line), ElementsAre("time", "level", "message", "method", "peer", "code",
                                      "prompt_tokens", "generated_tokens", "duration_ms", "error"));
  EXPECT_EQ(Line(LogFormat::kText, record),
            "2026-11-23T19:58:01.123Z INFO hgrn2-server: access method=Score "
            "peer=ipv6:[::1]:5000 code=INVALID_ARGUMENT prompt_tokens=0 generated_tokens=0 "
            "duration_ms=1.5 error=\"sampling.top_p must be in (0, 1], got 2\"\n");
}

// A traceparent that breaks the rules is dropped from the record; a later version's is logged
// in version 00's form.
TEST(AccessLogTest, OnlyAValidTraceparentIsLogged) {
  AccessLogRecord record = FullRecord();
  record.traceparent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
  nlohmann::json object = ParseJsonLine(Line(LogFormat::kJson, record));
  EXPECT_FALSE(object.contains("traceparent"));
  EXPECT_FALSE(object.contains("trace_id"));
  record.traceparent = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
  object = ParseJsonLine(Line(LogFormat::kJson, record));
  EXPECT_EQ(object["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

TEST(AccessLogTest, ServerFailuresAreErrors) {
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kOk), LogLevel::kInfo);
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kCancelled), LogLevel::kInfo);
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kResourceExhausted), LogLevel::kInfo);
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kInternal), LogLevel::kError);
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kUnknown), LogLevel::kError);
  EXPECT_EQ(AccessLogLevel(absl::StatusCode::kDataLoss), LogLevel::kError);
}

TEST(AccessLogTest, LogAccessWritesOneLine) {
  std::vector<std::string> lines;
  SetLogSinkForTesting([&lines](absl::string_view line) { lines.emplace_back(line); });
  SetLogFormat(LogFormat::kJson);
  AccessLogRecord record = FullRecord();
  record.code = absl::StatusCode::kInternal;
  record.message = "device failure";
  LogAccess(record);
  SetLogFormat(LogFormat::kText);
  SetLogSinkForTesting(nullptr);
  ASSERT_EQ(lines.size(), 1u);
  const nlohmann::json object = ParseJsonLine(lines[0]);
  EXPECT_EQ(object["level"], "error");
  EXPECT_EQ(object["message"], "access");
  EXPECT_EQ(object["code"], "INTERNAL");
  EXPECT_EQ(object["error"], "device failure");
}

// The examples of https://www.w3.org/TR/trace-context/ and each rule broken once.
TEST(TraceParentTest, ParsesAValidHeader) {
  const std::optional<TraceParent> parsed =
      ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->version, 0);
  EXPECT_EQ(parsed->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(parsed->parent_id, "00f067aa0ba902b7");
  EXPECT_EQ(parsed->flags, 1);
  EXPECT_TRUE(parsed->sampled());
  EXPECT_EQ(parsed->ToString(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

  const std::optional<TraceParent> unsampled =
      ParseTraceParent(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled());
}

TEST(TraceParentTest, ReadsTheKnownFieldsOfALaterVersion) {
  const std::optional<TraceParent> longer =
      ParseTraceParent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next");
  ASSERT_TRUE(longer.has_value());
  EXPECT_EQ(longer->version, 0xcc);
  EXPECT_EQ(longer->flags, 9);
  EXPECT_EQ(longer->ToString(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09");
  EXPECT_TRUE(
      ParseTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").has_value());
}

TEST(TraceParentTest, DropsInvalidHeaders) {
  for (const char* invalid : {
           "",
           "00",
           // version 00 must be exactly 55 characters
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
           // a later version: the 56th character must be '-'
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
           // version ff is forbidden; versions are hex
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           // uppercase hex is invalid
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
           // all-zero ids are invalid
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
           // separators and field lengths
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
           "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
       }) {
    EXPECT_FALSE(ParseTraceParent(invalid).has_value()) << invalid;
  }
}

}  // namespace
}  // namespace hgrn2::server
