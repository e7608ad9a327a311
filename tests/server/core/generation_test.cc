// The request core's Generation without a front end: tokens equal the engine's (the oracle's),
// text equals the tokenizer's decode, stop strings end a sample exactly, n samples come in turn,
// cancellation and deadlines end it, a save is durable before the last update, and requests for
// sessions on a server without them fail with FAILED_PRECONDITION.
#include "server/core/generation.h"

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/server/core/core_test_fixture.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using core_testing::CoreFixture;
using core_testing::GenerationRun;
using core_testing::GreedyText;
using core_testing::RunGeneration;
using ::hgrn2::testing::ExpectError;

std::vector<int32_t> IdsOf(const std::vector<SampledToken>& tokens) {
  std::vector<int32_t> ids;
  for (const SampledToken& token : tokens) ids.push_back(token.id);
  return ids;
}

// The text `ids` add after `prompt`: the decode of both with the prompt's removed (special tokens
// skipped), as a reader shown the prompt sees it (a first word keeps its leading space).
std::string TextAfter(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& ids) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), ids.begin(), ids.end());
  const std::string shown = *tokenizer.Decode(prompt, /*skip_special=*/true);
  const std::string whole = *tokenizer.Decode(all, /*skip_special=*/true);
  EXPECT_EQ(whole.compare(0, shown.size(), shown), 0);
  return whole.substr(shown.size());
}

TEST(Generation, TokensAreTheEnginesAndTextIsTheirDecode) {
  CoreFixture fixture;
  PreparedGeneration prepared = GreedyText(fixture, "Hello, world!", 24);
  const std::vector<int32_t> want = IdsOf(fixture.Alone(prepared.engine).tokens);
  std::shared_ptr<CallScope> scope = fixture.Scope();
  const GenerationRun run = RunGeneration(fixture, scope, prepared);
  ASSERT_TRUE(run.end.ok()) << run.end;
  EXPECT_EQ(run.Ids(0), want);
  EXPECT_EQ(run.Text(0), TextAfter(*fixture.tokenizer, prepared.engine.prompt, want));
  // The finish comes once, with the last update, and that update carries the end.
  ASSERT_FALSE(run.updates.empty());
  for (size_t i = 0; i + 1 < run.updates.size(); ++i) EXPECT_FALSE(run.updates[i].finish);
  const std::optional<SampleFinish> finish = run.Finish(0);
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->reason, FinishReason::kLength);
  EXPECT_EQ(finish->generated_tokens, 24);
  EXPECT_EQ(finish->prompt_tokens, static_cast<int64_t>(prepared.engine.prompt.size()));
  // The call's outcome, for the access log.
  EXPECT_EQ(scope->outcome().generated_tokens, 24);
  EXPECT_EQ(scope->outcome().finish_reason, "length");
  EXPECT_TRUE(scope->outcome().time_to_first_token.has_value());
}

// A stop string cut from the middle of the greedy text: the sample's text is everything before
// it, the finish says STOP and which string, and no token after the one that completed it comes.
TEST(Generation, AStopStringEndsTheSampleExactlyBeforeIt) {
  CoreFixture fixture;
  PreparedGeneration prepared = GreedyText(fixture, "The quick brown fox", 40);
  const std::vector<int32_t> all = IdsOf(fixture.Alone(prepared.engine).tokens);
  const std::string full = TextAfter(*fixture.tokenizer, prepared.engine.prompt, all);
  ASSERT_GT(full.size(), 12u) << full;
  const std::string stop = full.substr(full.size() / 2, 3);
  const size_t at = full.find(stop);
  prepared.stop_strings = {stop};
  const GenerationRun run = RunGeneration(fixture, fixture.Scope(), prepared);
  ASSERT_TRUE(run.end.ok()) << run.end;
  EXPECT_EQ(run.Text(0), full.substr(0, at));
  const std::optional<SampleFinish> finish = run.Finish(0);
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->reason, FinishReason::kStop);
  EXPECT_EQ(finish->stop_string, stop);
  // The tokens handed out end at the first whose prefix decode holds the stop string.
  const std::vector<int32_t> ids = run.Ids(0);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids,
            std::vector<int32_t>(all.begin(), all.begin() + static_cast<ptrdiff_t>(ids.size())));
  const std::vector<int32_t>& prompt = prepared.engine.prompt;
  EXPECT_NE(TextAfter(*fixture.tokenizer, prompt, ids).find(stop), std::string::npos);
  const std::vector<int32_t> before(ids.begin(), ids.end() - 1);
  EXPECT_EQ(TextAfter(*fixture.tokenizer, prompt, before).find(stop), std::string::npos);
  EXPECT_EQ(finish->generated_tokens, static_cast<int64_t>(ids.size()));
}

// n samples share one prefill and come in turn, each with its own finish; with a seed, sample i
// is the single request with seed + i (bit for bit on the CPU).
TEST(Generation, NSamplesComeInTurnAndEachIsItsSeededRequest) {
  CoreFixture fixture;
  PreparedGeneration prepared = GreedyText(fixture, "Once upon a time", 12);
  prepared.engine.sampling.temperature = 1.0f;
  prepared.engine.sampling.seed = 77;
  prepared.num_samples = 3;
  const GenerationRun run = RunGeneration(fixture, fixture.Scope(), prepared);
  ASSERT_TRUE(run.end.ok()) << run.end;
  std::set<int32_t> finished;
  for (int32_t i = 0; i < 3; ++i) {
    GenerationRequest alone = prepared.engine;
    alone.sampling.seed = 77 + static_cast<uint64_t>(i);
    EXPECT_EQ(run.Ids(i), IdsOf(fixture.Alone(alone).tokens)) << "sample " << i;
    if (run.Finish(i)) finished.insert(i);
  }
  EXPECT_EQ(finished.size(), 3u);
  // In turn: the first three updates are three different samples.
  ASSERT_GE(run.updates.size(), 3u);
  EXPECT_EQ((std::set<int32_t>{run.updates[0].index, run.updates[1].index, run.updates[2].index}),
            (std::set<int32_t>{0, 1, 2}));
}

// The client goes away after the first update: the generation ends with CANCELLED (or, when the
// front end says the deadline passed, DEADLINE_EXCEEDED) once the engine has stopped, and every
// slot comes back.
TEST(Generation, CancellingEndsItWithCancelledOrDeadlineExceeded) {
  for (const bool deadline : {false, true}) {
    CoreFixture fixture;
    PreparedGeneration prepared = GreedyText(fixture, "Hello", 100000);
    prepared.engine.stopping.max_new_tokens = 4000;
    bool cancelled = false;
    const GenerationRun run =
        RunGeneration(fixture, fixture.Scope(), prepared,
                      [&](Generation& generation, const GenerationRun& so_far) {
                        if (!cancelled && !so_far.updates.empty()) {
                          cancelled = true;
                          generation.Cancel(deadline);
                        }
                      });
    ExpectError(run.end,
                deadline ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kCancelled,
                {deadline ? "the deadline passed" : "the client went away"});
    EXPECT_LT(run.Ids(0).size(), 4000u);
    for (int i = 0; i < 200 && fixture.engine->Stats().running > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(fixture.engine->Stats().running, 0);
  }
}

// A generation that saves its session: the session is stored before the last update is handed
// out, and a second generation resuming it continues exactly as one uninterrupted request.
TEST(Generation, ASaveIsDurableBeforeTheLastUpdateAndResumesExactly) {
  CoreFixture fixture;
  PreparedGeneration first = GreedyText(fixture, "It was a dark", 10);
  first.save_session_as = "s1";
  std::shared_ptr<CallScope> scope = fixture.Scope();
  int finishes = 0;
  const GenerationRun run =
      RunGeneration(fixture, scope, first, {}, [&](const SampleUpdate& update) {
        if (!update.finish) return;
        ++finishes;
        absl::StatusOr<session::SessionRecord> stored = fixture.sessions->Info({"", "s1"});
        ASSERT_TRUE(stored.ok()) << "not saved when the last update came: " << stored.status();
        EXPECT_EQ(stored->num_tokens, static_cast<int64_t>(first.engine.prompt.size()) + 10);
      });
  ASSERT_TRUE(run.end.ok()) << run.end;
  EXPECT_EQ(finishes, 1);
  EXPECT_EQ(scope->outcome().save_session_as, "s1");

  PreparedGeneration second;
  second.session_id = "s1";
  second.engine.prompt = *fixture.tokenizer->Encode(" and stormy", /*add_special=*/false);
  second.engine.sampling.temperature = 0.0f;
  second.engine.stopping = first.engine.stopping;
  second.prompt_tokens = static_cast<int32_t>(second.engine.prompt.size());
  const GenerationRun resumed = RunGeneration(fixture, fixture.Scope(), second);
  ASSERT_TRUE(resumed.end.ok()) << resumed.end;

  // One request on the whole conversation: the first prompt, the first reply, the new text.
  GenerationRequest whole = first.engine;
  const std::vector<int32_t> reply = run.Ids(0);
  whole.prompt.insert(whole.prompt.end(), reply.begin(), reply.end());
  whole.prompt.insert(whole.prompt.end(), second.engine.prompt.begin(), second.engine.prompt.end());
  EXPECT_EQ(resumed.Ids(0), IdsOf(fixture.Alone(whole).tokens));
}

TEST(Generation, SessionsOnAServerWithoutThemFailWithFailedPrecondition) {
  CoreFixture fixture(/*with_sessions=*/false);
  PreparedGeneration prepared = GreedyText(fixture, "Hello", 4);
  prepared.save_session_as = "s1";
  ExpectError(RunGeneration(fixture, fixture.Scope(), prepared).end,
              absl::StatusCode::kFailedPrecondition, {"sessions are off"});
  prepared.save_session_as.clear();
  prepared.session_id = "s1";
  ExpectError(RunGeneration(fixture, fixture.Scope(), prepared).end,
              absl::StatusCode::kFailedPrecondition, {"sessions are off"});
}

TEST(Generation, AMissingSessionFailsWithNotFoundNamingTheField) {
  CoreFixture fixture;
  PreparedGeneration prepared = GreedyText(fixture, "Hello", 4);
  prepared.session_id = "nobody";
  ExpectError(RunGeneration(fixture, fixture.Scope(), prepared).end, absl::StatusCode::kNotFound,
              {"session_id:"});
}

}  // namespace
}  // namespace hgrn2::server
