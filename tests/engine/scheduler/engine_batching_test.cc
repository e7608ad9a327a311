// Batching: many requests at once give exactly the tokens of each alone; step reports add up; the
// token budget keeps decoding going while a long prompt is prefilled, and grows for a burst of
// prompts; warming the decode batches changes nothing.
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

TEST(Engine, SixtyFourConcurrentRequestsGiveExactlyTheTokensOfEachAlone) {
  EngineOptions options;
  options.max_running = 64;
  options.prefill_token_budget = 96;  // prompts up to 300 tokens take several iterations
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  constexpr int kRequests = 64;
  std::vector<GenerationRequest> requests(kRequests);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest& request = requests[i];
    const int64_t length = 1 + (i * 299) / (kRequests - 1);  // 1 ... 300
    request.prompt = RandomIds(length, vocab, 50 + static_cast<uint64_t>(i));
    request.sampling = VariedSampling(i);
    request.stopping.max_new_tokens = 4 + (i * 7) % 17;
    request.stopping.ignore_eos = i % 3 != 0;
    streams.push_back(fixture.Submit(request));
    ASSERT_NE(streams.back(), nullptr);
  }
  for (int i = 0; i < kRequests; ++i) {
    const Outcome outcome = WaitFor(*streams[i]);
    const GenerationResult alone = fixture.Alone(requests[i]);
    const std::string what = absl::StrCat("request ", i);
    ASSERT_TRUE(outcome.end.status.ok()) << what << ": " << outcome.end.status;
    ExpectSameTokens(outcome.tokens, alone.tokens, what);
    EXPECT_EQ(outcome.end.finish_reason, alone.finish_reason) << what;
    EXPECT_EQ(outcome.end.prompt_tokens, static_cast<int64_t>(requests[i].prompt.size()));
    EXPECT_EQ(outcome.end.generated_tokens, static_cast<int64_t>(alone.tokens.size()));
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.free_slots, 64);
  EXPECT_EQ(stats.requests_finished, kRequests);
  // Batching happened: more tokens per step than a lone sequence's one.
  EXPECT_GT(stats.mean_tokens_per_step, 8.0);
}

// on_step sees every model iteration: the prompt tokens fed add up to the engine's count, and the
// decode steps advance each sequence once per token after its first (which prefill samples).
TEST(Engine, StepReportsAddUpToTheTokens) {
  std::atomic<int64_t> steps{0}, prefill_tokens{0}, decode_sequences{0};
  EngineOptions options;
  options.prefill_token_budget = 16;
  options.on_step = [&](const StepReport& report) {
    steps.fetch_add(1);
    prefill_tokens.fetch_add(report.prefill_tokens);
    decode_sequences.fetch_add(report.decode_sequences);
    EXPECT_GE(report.seconds, 0.0);
  };
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < 3; ++i) {
    GenerationRequest request;
    request.prompt = RandomIds(5 + 11 * i, vocab, 200 + static_cast<uint64_t>(i));
    request.stopping.max_new_tokens = 6 + i;
    request.stopping.ignore_eos = true;
    streams.push_back(fixture.Submit(request));
  }
  int64_t generated = 0;
  for (auto& stream : streams) {
    const Outcome outcome = WaitFor(*stream);
    ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
    EXPECT_GE(outcome.end.queue_time, absl::ZeroDuration());
    generated += outcome.end.generated_tokens;
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(steps.load(), stats.steps);
  EXPECT_EQ(prefill_tokens.load(), stats.prompt_tokens);
  EXPECT_EQ(decode_sequences.load(), generated - 3);
}

TEST(Engine, TheTokenBudgetKeepsDecodingWhileALongPromptIsPrefilled) {
  EngineOptions options;
  options.max_running = 4;
  options.prefill_token_budget = 64;  // a 4,096-token prompt takes 64 iterations
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  EventLog log;
  std::atomic<bool> long_submitted{false};
  std::atomic<int> short_updates{0}, short_tokens_during_prefill{0};

  GenerationRequest long_request;
  long_request.prompt = RandomIds(4096, vocab, 99);
  long_request.stopping.max_new_tokens = 1;
  long_request.on_update = [&] { log.Add("long token"); };
  std::promise<std::shared_ptr<GenerationStream>> long_submission;

  // Each decode step delivers one token, so the 48th update is the short request's end. The long
  // request is submitted from the scheduler thread at the short one's second token, so that how
  // far the short one got first does not depend on how fast this thread wakes up.
  GenerationRequest short_request;
  short_request.prompt = {5, 6, 7, 8};
  short_request.stopping.max_new_tokens = 48;
  short_request.stopping.ignore_eos = true;
  short_request.on_update = [&] {
    if (long_submitted) ++short_tokens_during_prefill;
    const int updates = ++short_updates;
    if (updates == 2) {
      long_submitted = true;
      long_submission.set_value(fixture.Submit(long_request));
    }
    if (updates == 48) log.Add("short ended");
  };
  // The callbacks use the locals above: stop the engine before they go, even on a failure.
  absl::Cleanup stop_engine = [&] { fixture.engine->Stop(); };
  std::shared_ptr<GenerationStream> short_stream = fixture.Submit(short_request);
  ASSERT_NE(short_stream, nullptr);
  std::shared_ptr<GenerationStream> long_stream = long_submission.get_future().get();
  ASSERT_NE(long_stream, nullptr);
  const Outcome long_outcome = WaitFor(*long_stream);
  ASSERT_TRUE(long_outcome.end.status.ok()) << long_outcome.end.status;
  ASSERT_TRUE(WaitFor(*short_stream).end.status.ok());
  // The callbacks run just after the tokens are readable.
  for (int i = 0; i < 1000 && log.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Without the budget the whole prompt would run in one iteration and its token would come
  // while the short request still had dozens to go.
  std::lock_guard<std::mutex> lock(log.mutex);
  ASSERT_EQ(log.events, (std::vector<std::string>{"short ended", "long token"}));
  EXPECT_GE(short_tokens_during_prefill, 30);
  EXPECT_EQ(long_outcome.end.prompt_tokens, 4096);
}

// A burst of prompts under the adaptive budget (max_prefill_token_budget): the first iteration,
// with nothing decoding, feeds up to the ceiling, later ones a share of the backlog; no iteration
// feeds more than the ceiling, and every request gives the oracle's tokens. The same burst with
// the fixed budget never feeds more than the base.
TEST(Engine, ABurstOfPromptsGrowsTheBudgetUpToItsCeiling) {
  for (const int64_t ceiling : {int64_t{0}, int64_t{200}}) {
    const std::string what = absl::StrCat("ceiling ", ceiling);
    std::mutex mutex;
    std::vector<int64_t> fed;  // prompt tokens per iteration that fed some
    EngineOptions options;
    options.max_running = 16;
    options.prefill_token_budget = 16;
    options.max_prefill_token_budget = ceiling;
    options.on_step = [&](const StepReport& report) {
      std::lock_guard<std::mutex> lock(mutex);
      if (report.prefill_tokens > 0) fed.push_back(report.prefill_tokens);
    };
    Fixture fixture("tiny-conv", options);
    ASSERT_NE(fixture.engine, nullptr);
    const int64_t vocab = fixture.model->config().vocab_size;
    constexpr int kRequests = 12;
    std::vector<GenerationRequest> requests(kRequests);
    std::vector<std::shared_ptr<GenerationStream>> streams;
    for (int i = 0; i < kRequests; ++i) {
      requests[i].prompt = RandomIds(30 + 7 * i, vocab, 700 + static_cast<uint64_t>(i));
      requests[i].sampling = VariedSampling(i);
      requests[i].stopping.max_new_tokens = 3 + i % 5;
      streams.push_back(fixture.Submit(requests[i]));
      ASSERT_NE(streams.back(), nullptr) << what;
    }
    for (int i = 0; i < kRequests; ++i) {
      const Outcome outcome = WaitFor(*streams[i]);
      ASSERT_TRUE(outcome.end.status.ok())
          << what << ", request " << i << ": " << outcome.end.status;
      ExpectSameTokens(outcome.tokens, fixture.Alone(requests[i]).tokens,
                       absl::StrCat(what, ", request ", i));
    }
    WaitUntilIdle(*fixture.engine);
    fixture.engine->Stop();
    std::lock_guard<std::mutex> lock(mutex);
    ASSERT_FALSE(fed.empty()) << what;
    const int64_t most = *std::max_element(fed.begin(), fed.end());
    if (ceiling == 0) {
      EXPECT_EQ(most, 16) << what;
    } else {
      // The first iteration that prefills has nothing decoding (every prompt has 30 tokens or
      // more), so it takes the ceiling or every prompt it has.
      EXPECT_GT(fed.front(), 16) << what;
      EXPECT_LE(most, ceiling) << what;
    }
  }
}

// Warming the decode batch sizes at start-up leaves every slot free and zeroed: the requests
// after it give the oracle's tokens.
TEST(Engine, WarmingDecodeBatchesChangesNoResult) {
  EngineOptions options;
  options.max_running = 6;
  options.warm_decode_batches = 6;
  Fixture f("tiny-a", options);
  ASSERT_NE(f.engine, nullptr);
  EXPECT_EQ(f.engine->Stats().free_slots, 6);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest request;
    request.prompt = {1, 17 + i, 42, 7 * i + 3};
    request.sampling.temperature = 0.8f;
    request.sampling.seed = 100 + i;
    request.stopping.max_new_tokens = 9;
    request.stopping.ignore_eos = true;
    requests.push_back(request);
    streams.push_back(f.Submit(request));
  }
  for (int i = 0; i < 6; ++i) {
    ASSERT_NE(streams[i], nullptr);
    const Outcome outcome = WaitFor(*streams[i]);
    ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
    ExpectSameTokens(outcome.tokens, f.Alone(requests[i]).tokens, absl::StrCat("request ", i));
  }
  options.warm_decode_batches = -2;
  EXPECT_FALSE(options.Validate().ok());
}

}  // namespace
}  // namespace hgrn2
