// Request limits at their boundaries: every client-controlled size passes at its limit and is
// refused one past it with INVALID_ARGUMENT naming the field, the limit and the flag.
#include "server/grpc/requests.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/request_checks.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

// INVALID_ARGUMENT with `needle` in the message.
void ExpectInvalid(const absl::Status& status, std::string_view needle) {
  testing::ExpectError(status, absl::StatusCode::kInvalidArgument, {needle});
}

// A V = 1000 model with the llama-sp tokenizer.json, and small limits so each is easy to reach.
class RequestLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ModelConfig> config =
        ModelConfig::Load(testing::TestDataDir() / "u-k3-nolb" / "config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::Load(testing::TestDataDir() / "tokenizers" / "llama-sp" / "tokenizer.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    limits_.max_prompt_tokens = 8;
    limits_.max_new_tokens = 50;
    limits_.default_max_new_tokens = 10;
    limits_.max_stop_strings = 3;
    limits_.max_stop_string_bytes = 5;
    limits_.max_stop_total_bytes = 12;
    limits_.max_stop_token_ids = 4;
    limits_.max_logprobs = 5;
    limits_.max_logit_bias = 6;
    limits_.max_request_id_bytes = 10;
    limits_.max_text_bytes = 16;
    limits_.max_samples = 3;
    limits_.max_detokenize_ids = 7;
  }

  ModelContext Model() const {
    return ModelContext{.config = &config_, .tokenizer = tokenizer_.get(), .limits = limits_};
  }

  // A valid request of `prompt_tokens` ids.
  static v1::GenerateRequest Generate(int prompt_tokens = 3) {
    v1::GenerateRequest request;
    for (int i = 0; i < prompt_tokens; ++i) request.mutable_token_ids()->add_ids(10 + i);
    request.set_max_new_tokens(4);
    return request;
  }

  // OK for `at_limit`; INVALID_ARGUMENT containing `message` for `over_limit`.
  void ExpectBoundary(const v1::GenerateRequest& at_limit, const v1::GenerateRequest& over_limit,
                      const std::string& message) {
    const absl::StatusOr<PreparedGeneration> ok = PrepareGenerate(at_limit, Model());
    EXPECT_TRUE(ok.ok()) << message << ": " << ok.status();
    ExpectInvalid(PrepareGenerate(over_limit, Model()).status(), message);
  }
  void ExpectBoundary(const v1::ScoreRequest& at_limit, const v1::ScoreRequest& over_limit,
                      const std::string& message) {
    const absl::StatusOr<PreparedScore> ok = PrepareScore(at_limit, Model());
    EXPECT_TRUE(ok.ok()) << message << ": " << ok.status();
    ExpectInvalid(PrepareScore(over_limit, Model()).status(), message);
  }

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  RequestLimits limits_;
};

TEST_F(RequestLimitsTest, PromptTokens) {
  ExpectBoundary(Generate(8), Generate(9),
                 "token_ids: 9 tokens, the limit is 8 (--max-prompt-tokens)");
  // Text counts after encoding: 16 bytes of digits are more than 8 tokens.
  v1::GenerateRequest text;
  text.set_text("1 2 3 4 5 6 7 8 ");
  const absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text.text(), true);
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), 8u);
  ExpectInvalid(PrepareGenerate(text, Model()).status(),
                absl::StrCat("prompt: ", ids->size(), " tokens, the limit is 8"));
}

TEST_F(RequestLimitsTest, TextBytes) {
  limits_.max_prompt_tokens = 64;  // so that only the bytes count
  v1::GenerateRequest at = Generate(), over = Generate();
  at.set_text(std::string(16, 'a'));
  over.set_text(std::string(17, 'a'));
  ExpectBoundary(at, over, "text: 17 bytes, the limit is 16 (--max-text-bytes)");

  v1::TokenizeRequest tokenize;
  tokenize.set_text(std::string(16, 'a'));
  EXPECT_TRUE(PrepareTokenize(tokenize, Model()).ok());
  tokenize.set_text(std::string(17, 'a'));
  ExpectInvalid(PrepareTokenize(tokenize, Model()).status(),
                "text: 17 bytes, the limit is 16 (--max-text-bytes)");
}

TEST_F(RequestLimitsTest, ScoreTextsAndIdsEachHaveTheirLimit) {
  limits_.max_prompt_tokens = 64;  // so that only the bytes count
  v1::ScoreRequest at, over;
  at.set_context_text(std::string(16, 'a'));
  at.set_continuation_text(" b");
  over = at;
  over.set_context_text(std::string(17, 'a'));
  ExpectBoundary(at, over, "context_text: 17 bytes, the limit is 16 (--max-text-bytes)");
  // The continuation is judged on its own bytes, not on context + continuation.
  at.set_context_text("a");
  at.set_continuation_text(std::string(16, 'b'));
  over = at;
  over.set_continuation_text(std::string(17, 'b'));
  ExpectBoundary(at, over, "continuation_text: 17 bytes, the limit is 16 (--max-text-bytes)");

  limits_.max_prompt_tokens = 8;
  v1::ScoreRequest ids_at, ids_over;
  for (int i = 0; i < 8; ++i) ids_at.mutable_continuation_ids()->add_ids(10 + i);
  ids_over = ids_at;
  ids_over.mutable_continuation_ids()->add_ids(5);
  ExpectBoundary(ids_at, ids_over,
                 "continuation_ids: 9 tokens, the limit is 8 (--max-prompt-tokens)");
  ids_at.mutable_continuation_ids()->mutable_ids()->Truncate(2);
  for (int i = 0; i < 6; ++i) ids_at.mutable_context_ids()->add_ids(10 + i);
  ids_over = ids_at;
  ids_over.mutable_context_ids()->add_ids(5);
  ExpectBoundary(ids_at, ids_over,
                 "context + continuation: 9 tokens, the limit is 8 (--max-prompt-tokens)");
  ids_over.mutable_context_ids()->add_ids(5);
  ids_over.mutable_context_ids()->add_ids(5);
  ids_over.mutable_context_ids()->add_ids(5);
  ExpectInvalid(PrepareScore(ids_over, Model()).status(),
                "context_ids: 10 tokens, the limit is 8 (--max-prompt-tokens)");
}

TEST_F(RequestLimitsTest, StopStrings) {
  v1::GenerateRequest at = Generate(), over = Generate();
  for (const char* stop : {"ab", "cd", "ef"}) at.add_stop(stop);
  over = at;
  over.add_stop("gh");
  ExpectBoundary(at, over, "stop: 4 strings, the limit is 3 (--max-stop-strings)");

  at = Generate();
  at.add_stop("12345");
  over = Generate();
  over.add_stop("x");
  over.add_stop("123456");
  ExpectBoundary(at, over, "stop[1]: 6 bytes, the limit is 5 (--max-stop-string-bytes)");

  // 5 + 5 + 2 = 12 bytes in all pass; 5 + 5 + 3 do not.
  at = Generate();
  for (const char* stop : {"aaaaa", "bbbbb", "cc"}) at.add_stop(stop);
  over = Generate();
  for (const char* stop : {"aaaaa", "bbbbb", "ccc"}) over.add_stop(stop);
  ExpectBoundary(at, over, "stop: 13 bytes in all, the limit is 12 (--max-stop-total-bytes)");
}

TEST_F(RequestLimitsTest, StopTokenIds) {
  v1::GenerateRequest at = Generate();
  for (int id : {5, 6, 7, 8}) at.add_stop_token_ids(id);
  v1::GenerateRequest over = at;
  over.add_stop_token_ids(9);
  ExpectBoundary(at, over, "stop_token_ids: 5 ids, the limit is 4 (--max-stop-token-ids)");
}

TEST_F(RequestLimitsTest, LogprobsAndTopLogprobs) {
  v1::GenerateRequest at = Generate(), over = Generate();
  at.set_logprobs(5);
  over.set_logprobs(6);
  ExpectBoundary(at, over, "logprobs: must be at most 5 (--max-logprobs), got 6");

  v1::ScoreRequest score_at;
  score_at.mutable_continuation_ids()->add_ids(10);
  score_at.mutable_continuation_ids()->add_ids(11);
  score_at.set_top_logprobs(5);
  v1::ScoreRequest score_over = score_at;
  score_over.set_top_logprobs(6);
  ExpectBoundary(score_at, score_over, "top_logprobs: must be at most 5 (--max-logprobs), got 6");
}

TEST_F(RequestLimitsTest, LogitBiasEntries) {
  v1::GenerateRequest at = Generate();
  for (int id = 0; id < 6; ++id) (*at.mutable_sampling()->mutable_logit_bias())[id] = 1.0f;
  v1::GenerateRequest over = at;
  (*over.mutable_sampling()->mutable_logit_bias())[6] = 1.0f;
  ExpectBoundary(at, over, "sampling.logit_bias: 7 entries, the limit is 6 (--max-logit-bias)");
}

TEST_F(RequestLimitsTest, SamplesAndNewTokens) {
  v1::GenerateRequest at = Generate(), over = Generate();
  at.set_n(3);
  over.set_n(4);
  ExpectBoundary(at, over, "n: must be at most 3 (--max-n), got 4");
  at = Generate();
  over = Generate();
  at.set_max_new_tokens(50);
  over.set_max_new_tokens(51);
  ExpectBoundary(at, over, "max_new_tokens: must be at most 50 (--max-new-tokens), got 51");
}

TEST_F(RequestLimitsTest, RequestId) {
  EXPECT_EQ(*RequestIdOf("abcdefghij", limits_), "abcdefghij");
  ExpectInvalid(RequestIdOf("abcdefghijk", limits_).status(),
                "request_id: 11 bytes, the limit is 10 (--max-request-id-bytes)");
  ExpectInvalid(RequestIdOf("a\x7f", limits_).status(), "request_id: only printable ASCII");
  EXPECT_FALSE(RequestIdOf("", limits_)->empty());  // a new one
}

TEST_F(RequestLimitsTest, SessionIdLengthAndAlphabet) {
  EXPECT_TRUE(CheckSessionId(std::string(128, 'x'), "session_id").ok());
  ExpectInvalid(CheckSessionId(std::string(129, 'x'), "session_id"),
                "session_id: 129 bytes, the limit is 128");
  EXPECT_TRUE(CheckSessionId("Az09._:-", "session_id").ok());
  for (const std::string& bad :
       std::vector<std::string>{"a/b", "a b", "a\xc3\xa9", std::string("a\0b", 3)}) {
    ExpectInvalid(CheckSessionId(bad, "save_session_as"),
                  "save_session_as: only letters, digits and . _ : - are allowed");
  }
  ExpectInvalid(CheckSessionId(".hidden", "session_id"), "session_id: must not start with '.'");
  ExpectInvalid(CheckSessionId("", "session_id"), "session_id: empty");
  v1::GenerateRequest over = Generate();
  over.set_session_id(std::string(129, 's'));
  ExpectInvalid(PrepareGenerate(over, Model()).status(), "session_id: 129 bytes");
}

TEST_F(RequestLimitsTest, DetokenizeIds) {
  v1::DetokenizeRequest request;
  for (int i = 0; i < 7; ++i) request.add_token_ids(10 + i);
  const absl::StatusOr<std::vector<int32_t>> ids = PrepareDetokenize(request, Model());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 7u);
  request.add_token_ids(17);
  ExpectInvalid(PrepareDetokenize(request, Model()).status(),
                "token_ids: 8 ids, the limit is 7 (--max-detokenize-ids)");
}

TEST(CheckLimitsTest, EveryLimitMustBeUsable) {
  EXPECT_TRUE(CheckLimits(RequestLimits{}).ok());
  RequestLimits limits;
  limits.max_stop_total_bytes = 0;
  ExpectInvalid(CheckLimits(limits), "--max-stop-total-bytes must be >= 1, got 0");
  limits = RequestLimits{};
  limits.max_logprobs = 21;
  ExpectInvalid(CheckLimits(limits), "--max-logprobs must be in [0, 20], got 21");
  limits = RequestLimits{};
  limits.default_max_new_tokens = limits.max_new_tokens + 1;
  ExpectInvalid(CheckLimits(limits), "--default-max-new-tokens must be in [1, --max-new-tokens");
}

}  // namespace
}  // namespace hgrn2::server
