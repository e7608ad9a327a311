// GenerateMany: one prefill shared by n samples, each equal to its own single request, each ending
// on its own.
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

// GenerateMany: sample i is the single request with seed + i, the prompt is fed once (prefill
// feeds all of it but its last token, which each sample's decode step feeds), and it counts once.
TEST(Engine, GenerateManySharesOnePrefillAndEachSampleEqualsItsSingleRequest) {
  std::atomic<int64_t> prefill_tokens{0};
  EngineOptions options;
  options.max_running = 6;
  options.prefill_token_budget = 16;
  options.on_step = [&](const StepReport& report) {
    prefill_tokens.fetch_add(report.prefill_tokens);
  };
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  for (int setting : {1, 3, 4}) {  // plain; min-p with repetition penalty; penalties and bias
    GenerationRequest request;
    request.prompt = RandomIds(45, vocab, 700 + static_cast<uint64_t>(setting));
    request.sampling = VariedSampling(setting);
    request.sampling.temperature = 6.0f;  // the fixture's logits are steep: make draws differ
    request.stopping.max_new_tokens = 10;
    request.stopping.ignore_eos = true;
    const int64_t fed_before = prefill_tokens.load();
    const EngineStats before = WaitUntilIdle(*fixture.engine);
    constexpr int32_t kSamples = 5;
    absl::StatusOr<std::vector<std::shared_ptr<GenerationStream>>> streams =
        fixture.engine->GenerateMany(request, kSamples);
    ASSERT_TRUE(streams.ok()) << streams.status();
    ASSERT_EQ(streams->size(), static_cast<size_t>(kSamples));
    std::vector<std::vector<int32_t>> ids;
    for (int32_t i = 0; i < kSamples; ++i) {
      const Outcome outcome = WaitFor(*(*streams)[i]);
      ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
      EXPECT_EQ(outcome.end.prompt_tokens, 45);
      GenerationRequest single = request;
      *single.sampling.seed += static_cast<uint64_t>(i);
      ExpectSameTokens(outcome.tokens, fixture.Alone(single).tokens,
                       absl::StrCat("setting ", setting, ", sample ", i));
      ids.emplace_back();
      for (const SampledToken& token : outcome.tokens) ids.back().push_back(token.id);
    }
    EXPECT_NE(ids[0], ids[1]);  // else seed + i would not be checked
    const EngineStats after = WaitUntilIdle(*fixture.engine);
    EXPECT_EQ(prefill_tokens.load() - fed_before, 44);
    EXPECT_EQ(after.prompt_tokens - before.prompt_tokens, 45);
    EXPECT_EQ(after.generated_tokens - before.generated_tokens, kSamples * 10);
    EXPECT_EQ(after.requests_finished - before.requests_finished, kSamples);
    EXPECT_EQ(after.free_slots, 6);
  }
  // Unseeded: independent draws.
  GenerationRequest unseeded;
  unseeded.prompt = {1, 2, 3};
  unseeded.sampling.temperature = 6.0f;
  unseeded.stopping.max_new_tokens = 24;
  unseeded.stopping.ignore_eos = true;
  auto streams = *fixture.engine->GenerateMany(unseeded, 2);
  const Outcome a = WaitFor(*streams[0]), b = WaitFor(*streams[1]);
  ASSERT_TRUE(a.end.status.ok() && b.end.status.ok());
  std::vector<int32_t> a_ids, b_ids;
  for (const SampledToken& token : a.tokens) a_ids.push_back(token.id);
  for (const SampledToken& token : b.tokens) b_ids.push_back(token.id);
  EXPECT_NE(a_ids, b_ids);
}

// Each sample ends on its own: one cancelled while running, and the first cancelled while the
// request waits for its seats (the next sample takes over its prefill).
TEST(Engine, GenerateManySamplesEndOnTheirOwn) {
  EngineOptions options;
  options.max_running = 3;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  GenerationRequest request;
  request.prompt = RandomIds(20, vocab, 800);
  request.sampling = VariedSampling(1);
  request.stopping.max_new_tokens = 30;
  request.stopping.ignore_eos = true;
  auto expected = [&](int32_t i) {
    GenerationRequest single = request;
    *single.sampling.seed += static_cast<uint64_t>(i);
    return fixture.Alone(single).tokens;
  };

  GenerationRequest endless = request;
  endless.stopping.max_new_tokens = 100000;
  {
    auto streams = *fixture.engine->GenerateMany(endless, 3);
    ASSERT_FALSE(streams[1]->Next().tokens.empty());
    streams[1]->Cancel();
    EXPECT_EQ(WaitFor(*streams[1]).end.status.code(), absl::StatusCode::kCancelled);
    EXPECT_TRUE(streams[0]->Poll().end == std::nullopt);
    EXPECT_TRUE(streams[2]->Poll().end == std::nullopt);
    ASSERT_TRUE(fixture.engine->Cancel(streams[0]->id()).ok());
    ASSERT_TRUE(fixture.engine->Cancel(streams[2]->id()).ok());
    EXPECT_EQ(WaitFor(*streams[0]).end.status.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(WaitFor(*streams[2]).end.status.code(), absl::StatusCode::kCancelled);
  }
  // One seat is taken: three samples wait for three.
  auto blocker = fixture.Submit(endless);
  ASSERT_FALSE(blocker->Next().tokens.empty());
  auto streams = *fixture.engine->GenerateMany(request, 3);
  EXPECT_EQ(fixture.engine->Stats().queued, 1);  // the request counts once
  streams[0]->Cancel();
  const Outcome cancelled = WaitFor(*streams[0]);
  ExpectError(cancelled.end.status, absl::StatusCode::kCancelled,
              {absl::StrCat("request ", streams[0]->id(), " cancelled")});
  EXPECT_TRUE(cancelled.tokens.empty());
  blocker->Cancel();
  for (int32_t i = 1; i < 3; ++i) {
    const Outcome outcome = WaitFor(*streams[i]);
    ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
    ExpectSameTokens(outcome.tokens, expected(i), absl::StrCat("sample ", i));
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.free_slots, 3);
  EXPECT_EQ(stats.queued, 0);
}

}  // namespace
}  // namespace hgrn2
