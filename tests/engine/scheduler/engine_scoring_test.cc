// Scoring beside generation: the log-probabilities of ScoreSequence, the argmax flags and the
// alternatives.
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

TEST(Engine, ScoringRunsBesideGenerationAndMatchesScoreSequence) {
  EngineOptions options;
  options.max_running = 8;
  options.prefill_token_budget = 40;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  std::vector<std::shared_ptr<GenerationStream>> generations;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest request;
    request.prompt = RandomIds(10 + 20 * i, vocab, 70 + static_cast<uint64_t>(i));
    request.sampling = VariedSampling(i);
    request.stopping.max_new_tokens = 16;
    generations.push_back(fixture.Submit(request));
  }
  std::vector<std::vector<int32_t>> texts;
  std::vector<std::shared_ptr<PendingScore>> scores;
  for (int64_t length : {2, 3, 41, 150}) {
    texts.push_back(RandomIds(length, vocab, 80 + static_cast<uint64_t>(length)));
    ScoreRequest request;
    request.tokens = texts.back();
    absl::StatusOr<std::shared_ptr<PendingScore>> pending = fixture.engine->Score(request);
    ASSERT_TRUE(pending.ok()) << pending.status();
    scores.push_back(*pending);
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<ScoreResult> result = scores[i]->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    const std::vector<float>& got = result->logprobs;
    absl::StatusOr<std::vector<float>> want = ScoreSequence(*fixture.oracle_pass, texts[i]);
    ASSERT_TRUE(want.ok()) << want.status();
    if (kOnCuda) {
      ASSERT_EQ(got.size(), want->size()) << "text " << i;
      for (size_t t = 0; t < got.size(); ++t) {
        EXPECT_NEAR(got[t], (*want)[t], kCudaLogprobTolerance) << "text " << i << " token " << t;
      }
    } else {
      EXPECT_EQ(got, *want) << "text " << i;
    }
    EXPECT_EQ(result->is_argmax.size(), got.size());
    EXPECT_TRUE(result->top.empty());
    EXPECT_TRUE(scores[i]->Poll().has_value());
  }
  for (auto& stream : generations) EXPECT_TRUE(WaitFor(*stream).end.status.ok());
  EXPECT_EQ(WaitUntilIdle(*fixture.engine).free_slots, 8);
}

// A greedy continuation scores as all-argmax, a random text mostly not, and the alternatives are
// the sampler's: sorted, led by the argmax, each equal to the scored log-probability where the
// token matches.
TEST(Engine, ScoringReportsArgmaxAndAlternatives) {
  Fixture fixture("tiny-a", EngineOptions{});
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  GenerationRequest generate;
  generate.prompt = RandomIds(7, vocab, 91);
  generate.sampling.temperature = 0.0f;
  generate.stopping.max_new_tokens = 12;
  generate.stopping.ignore_eos = true;
  const Outcome greedy = WaitFor(*fixture.Submit(generate));
  ASSERT_TRUE(greedy.end.status.ok()) << greedy.end.status;

  ScoreRequest request;
  request.tokens = generate.prompt;
  for (const SampledToken& token : greedy.tokens) request.tokens.push_back(token.id);
  request.num_top_logprobs = 4;
  absl::StatusOr<ScoreResult> result = (*fixture.engine->Score(request))->Wait();
  ASSERT_TRUE(result.ok()) << result.status();
  const size_t scored = request.tokens.size() - 1;
  ASSERT_EQ(result->logprobs.size(), scored);
  ASSERT_EQ(result->is_argmax.size(), scored);
  ASSERT_EQ(result->top.size(), scored);
  const size_t first_generated = generate.prompt.size() - 1;  // row predicting token 7
  for (size_t t = 0; t < scored; ++t) {
    const int32_t target = request.tokens[t + 1];
    const std::vector<TokenLogprob>& top = result->top[t];
    ASSERT_EQ(top.size(), 4u) << "position " << t;
    for (size_t k = 1; k < top.size(); ++k) EXPECT_GE(top[k - 1].logprob, top[k].logprob);
    EXPECT_GE(top[0].logprob, result->logprobs[t] - 1e-3f) << "position " << t;
    EXPECT_EQ(result->is_argmax[t], top[0].id == target) << "position " << t;
    for (const TokenLogprob& alternative : top) {
      if (alternative.id == target) {
        EXPECT_NEAR(alternative.logprob, result->logprobs[t], 1e-3) << "position " << t;
      }
    }
    if (t >= first_generated) {
      EXPECT_TRUE(result->is_argmax[t]) << "generated token at position " << t;
      EXPECT_NEAR(result->logprobs[t], greedy.tokens[t - first_generated].logprob, 1e-3);
    }
  }
  int argmax_in_prompt = 0;
  for (size_t t = 0; t < first_generated; ++t) argmax_in_prompt += result->is_argmax[t] ? 1 : 0;
  EXPECT_LT(argmax_in_prompt, static_cast<int>(first_generated));  // random ids: not all

  request.num_top_logprobs = ScoreRequest::kMaxTopLogprobs + 1;
  EXPECT_EQ(fixture.engine->Score(request).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hgrn2
