// The request core's Scoring without a front end: log-probabilities equal ScoreSequence's, the
// greedy flag and the alternatives are right, and a session on a server without sessions fails.
#include "server/core/scoring.h"

#include <future>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/core/core_test_fixture.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using core_testing::CoreFixture;
using ::hgrn2::testing::ExpectError;

absl::StatusOr<ScoreOutcome> RunScoring(CoreFixture& fixture, PreparedScore prepared) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ScoreOutcome>>>();
  std::future<absl::StatusOr<ScoreOutcome>> done = promise->get_future();
  Scoring::Start(
      fixture.parts, fixture.Scope("Score"), std::move(prepared),
      [promise](absl::StatusOr<ScoreOutcome> outcome) { promise->set_value(std::move(outcome)); });
  return done.get();
}

TEST(Scoring, LogprobsAreScoreSequencesAndTheGreedyTextIsGreedy) {
  CoreFixture fixture;
  const std::vector<int32_t> prompt = *fixture.tokenizer->Encode("Hello, world!", true);
  // The greedy continuation, then scored: every token held the largest logit.
  GenerationRequest greedy;
  greedy.prompt = prompt;
  greedy.sampling.temperature = 0.0f;
  greedy.stopping.max_new_tokens = 8;
  greedy.stopping.ignore_eos = true;
  std::vector<int32_t> text = prompt;
  for (const SampledToken& token : fixture.Alone(greedy).tokens) text.push_back(token.id);

  PreparedScore prepared;
  prepared.engine.tokens = text;
  prepared.engine.num_top_logprobs = 2;
  prepared.context_tokens = static_cast<int32_t>(prompt.size());
  prepared.scored_ids.assign(text.begin() + static_cast<ptrdiff_t>(prompt.size()), text.end());
  absl::StatusOr<ScoreOutcome> outcome = RunScoring(fixture, prepared);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const std::vector<float> want = *ScoreSequence(*fixture.oracle_pass, text);
  ASSERT_EQ(outcome->tokens.size(), 8u);
  double total = 0.0;
  for (size_t i = 0; i < 8; ++i) {
    const ScoredToken& token = outcome->tokens[i];
    EXPECT_EQ(token.id, prepared.scored_ids[i]);
    EXPECT_EQ(token.logprob, want[prompt.size() - 1 + i]) << i;
    ASSERT_EQ(token.top.size(), 2u);
    EXPECT_EQ(token.top[0].id, token.id) << "greedy: the scored token leads its alternatives";
    total += token.logprob;
  }
  EXPECT_DOUBLE_EQ(outcome->total_logprob, total);
  EXPECT_TRUE(outcome->is_greedy);
  EXPECT_EQ(outcome->context_tokens, static_cast<int32_t>(prompt.size()));

  // A token swapped for another is not greedy any more.
  prepared.engine.tokens.back() = (prepared.engine.tokens.back() + 1) % 1000;
  prepared.scored_ids.back() = prepared.engine.tokens.back();
  outcome = RunScoring(fixture, prepared);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_FALSE(outcome->is_greedy);
}

TEST(Scoring, ASessionOnAServerWithoutThemFailsWithFailedPrecondition) {
  CoreFixture fixture(/*with_sessions=*/false);
  PreparedScore prepared;
  prepared.engine.tokens = {5, 6};
  prepared.scored_ids = {5, 6};
  prepared.session_id = "s1";
  ExpectError(RunScoring(fixture, prepared).status(), absl::StatusCode::kFailedPrecondition,
              {"sessions are off"});
}

}  // namespace
}  // namespace hgrn2::server
