// Lifecycle: thousands of requests with cancellations and deadlines all end and free their slots; a
// full queue refuses; Stop ends everything; callbacks return before the end is read; bad requests,
// device failures and bad options are refused or contained, naming the problem.
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

TEST(Engine, TwoThousandRequestsWithCancellationsAndDeadlinesAllEndAndFreeTheirSlots) {
  EngineOptions options;
  options.max_running = 16;
  options.prefill_token_budget = 64;
  options.max_queued = 4096;
  options.swap_slots = 8;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  struct Submitted {
    std::shared_ptr<GenerationStream> stream;
    std::shared_ptr<PendingScore> score;
    bool cancelled = false;
  };
  std::vector<std::vector<Submitted>> submitted(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(500 + static_cast<uint64_t>(t));
      auto uniform = [&](int lo, int hi) {
        return std::uniform_int_distribution<int>(lo, hi)(rng);
      };
      // Threads 1-3 queue low-priority work at once; thread 0 sends high-priority requests in
      // bursts of 10 every 10 engine steps, more than the seats that free up in a step, so they
      // preempt lower priorities however fast or slow this build runs.
      const bool urgent = t == 0;
      int64_t next_burst = 0;
      for (int i = 0; i < kPerThread; ++i) {
        if (urgent && i % 10 == 0) {
          // (Or until the engine has nothing left, when steps stop.)
          for (EngineStats stats = fixture.engine->Stats();
               stats.steps < next_burst && stats.queued + stats.running > 0;
               stats = fixture.engine->Stats()) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
          }
          next_burst = fixture.engine->Stats().steps + 10;
        }
        Submitted entry;
        const int priority = urgent ? 2 : uniform(0, 1);
        const int kind = uniform(0, 99);
        const absl::Time deadline =
            kind < 20 ? absl::Now() + absl::Milliseconds(uniform(0, 30)) : absl::InfiniteFuture();
        if (kind % 10 == 9) {
          ScoreRequest request;
          request.tokens = RandomIds(uniform(2, 24), vocab, rng());
          request.priority = priority;
          request.deadline = deadline;
          entry.score = *fixture.engine->Score(request);
        } else {
          GenerationRequest request;
          request.prompt = RandomIds(uniform(1, 16), vocab, rng());
          request.sampling = VariedSampling(i);
          request.stopping.max_new_tokens = uniform(1, 8);
          request.priority = priority;
          request.deadline = deadline;
          entry.stream = *fixture.engine->Generate(request);
        }
        submitted[t].push_back(entry);
        // Cancel an earlier request now and then, through the engine or its handle.
        if (uniform(0, 3) == 0) {
          Submitted& victim = submitted[t][uniform(0, static_cast<int>(submitted[t].size()) - 1)];
          RequestHandle& handle =
              victim.stream ? static_cast<RequestHandle&>(*victim.stream) : *victim.score;
          if (uniform(0, 1) == 0) {
            handle.Cancel();
          } else {
            fixture.engine->Cancel(handle.id()).IgnoreError();  // NOT_FOUND once it ended
          }
          victim.cancelled = true;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  int ok = 0, cancelled = 0, expired = 0;
  for (const auto& entries : submitted) {
    for (const Submitted& entry : entries) {
      absl::Status status;
      if (entry.stream) {
        const Outcome outcome = WaitFor(*entry.stream);
        status = outcome.end.status;
        if (status.ok()) {
          EXPECT_NE(outcome.end.finish_reason, FinishReason::kNone);
          EXPECT_EQ(outcome.end.generated_tokens, static_cast<int64_t>(outcome.tokens.size()));
        }
      } else {
        status = entry.score->Wait().status();
      }
      switch (status.code()) {
        case absl::StatusCode::kOk:
          ++ok;
          break;
        case absl::StatusCode::kCancelled:
          EXPECT_TRUE(entry.cancelled) << status;
          ++cancelled;
          break;
        case absl::StatusCode::kDeadlineExceeded:
          ++expired;
          break;
        default:
          ADD_FAILURE() << "unexpected final status " << status;
      }
    }
  }
  EXPECT_EQ(ok + cancelled + expired, kThreads * kPerThread);
  EXPECT_GT(ok, 0);
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(expired, 0);
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_GT(stats.preemptions, 0);
  EXPECT_EQ(stats.requests_finished, kThreads * kPerThread);
  EXPECT_EQ(stats.free_slots, stats.num_slots);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.swapped, 0);
  EXPECT_EQ(stats.free_swap_slots, 8);
  std::cout << "ok " << ok << ", cancelled " << cancelled << ", past deadline " << expired
            << ", preemptions " << stats.preemptions << ", steps " << stats.steps
            << ", tokens per step " << stats.mean_tokens_per_step << "\n";
}

TEST(Engine, AFullQueueRefusesAndCancellationEndsWaitingAndRunningRequests) {
  EngineOptions options;
  options.max_running = 1;
  options.max_queued = 2;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  GenerationRequest request;
  request.prompt = {3, 4};
  request.stopping.max_new_tokens = 100000;
  request.stopping.ignore_eos = true;
  auto running = fixture.Submit(request);
  ASSERT_NE(running, nullptr);
  ASSERT_FALSE(running->Next().tokens.empty());  // admitted: it no longer counts as queued
  auto waiting0 = fixture.Submit(request);
  auto waiting1 = fixture.Submit(request);
  ASSERT_TRUE(waiting0 && waiting1);
  ExpectError(fixture.engine->Generate(request).status(), absl::StatusCode::kResourceExhausted,
              {"queue is full", "2 requests waiting"});
  ScoreRequest score;
  score.tokens = {1, 2, 3};
  ExpectError(fixture.engine->Score(score).status(), absl::StatusCode::kResourceExhausted,
              {"queue is full"});
  EXPECT_EQ(fixture.engine->Stats().queued, 2);

  ASSERT_TRUE(fixture.engine->Cancel(waiting1->id()).ok());
  waiting0->Cancel();
  ASSERT_TRUE(fixture.engine->Cancel(running->id()).ok());
  for (auto* stream : {running.get(), waiting0.get(), waiting1.get()}) {
    const Outcome outcome = WaitFor(*stream);
    ExpectError(outcome.end.status, absl::StatusCode::kCancelled,
                {absl::StrCat("request ", stream->id(), " cancelled")});
    EXPECT_EQ(outcome.end.finish_reason, FinishReason::kNone);
  }
  ExpectError(fixture.engine->Cancel(running->id()), absl::StatusCode::kNotFound,
              {absl::StrCat("no request ", running->id(), " in progress")});
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.free_slots, 1);
  EXPECT_EQ(stats.queued, 0);
}

TEST(Engine, DeadlinesEndRequestsWithDeadlineExceeded) {
  Fixture fixture("tiny-a", EngineOptions{});
  ASSERT_NE(fixture.engine, nullptr);
  GenerationRequest request;
  request.prompt = {3, 4};
  request.stopping.max_new_tokens = 100000;
  request.stopping.ignore_eos = true;
  request.deadline = absl::Now() + absl::Milliseconds(50);
  const Outcome outcome = WaitFor(*fixture.Submit(request));
  ExpectError(outcome.end.status, absl::StatusCode::kDeadlineExceeded, {"passed its deadline"});
  EXPECT_GT(outcome.tokens.size(), 0u);  // it ran until then
  ScoreRequest score;
  score.tokens = {1, 2, 3};
  score.deadline = absl::Now() - absl::Seconds(1);
  ExpectError((*fixture.engine->Score(score))->Wait().status(), absl::StatusCode::kDeadlineExceeded,
              {"passed its deadline"});
}

TEST(Engine, StopEndsEveryOutstandingRequestAndRefusesNewOnes) {
  EngineOptions options;
  options.max_running = 2;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  GenerationRequest request;
  request.prompt = {3, 4};
  request.stopping.max_new_tokens = 100000;
  request.stopping.ignore_eos = true;
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < 6; ++i) streams.push_back(fixture.Submit(request));
  ScoreRequest score;
  score.tokens = RandomIds(4000, fixture.model->config().vocab_size, 5);
  auto pending = *fixture.engine->Score(score);
  fixture.engine->Stop();
  for (auto& stream : streams) {
    ExpectError(WaitFor(*stream).end.status, absl::StatusCode::kUnavailable, {"engine: stopped"});
  }
  ExpectError(pending->Wait().status(), absl::StatusCode::kUnavailable, {"engine: stopped"});
  ExpectError(fixture.engine->Generate(request).status(), absl::StatusCode::kUnavailable,
              {"not taking requests"});
  fixture.engine->Stop();  // idempotent
  EXPECT_EQ(fixture.engine->Stats().free_slots, 2);
}

// A reader that has the end frees what the callbacks use (tools/bench/scenarios.cc freed a
// request's timeline, and AddressSanitizer caught the end's on_update writing into it): Wait(),
// and Next() when it returns the end, come only after the callback that reported the end has
// returned, and so does PendingScore::Wait() after on_done.
TEST(Engine, WaitAndNextReturnTheEndOnlyAfterItsCallbackReturned) {
  Fixture fixture("tiny-a", EngineOptions{});
  ASSERT_NE(fixture.engine, nullptr);
  constexpr auto kLongEnoughToReturn = std::chrono::milliseconds(300);
  for (const bool use_next : {false, true}) {
    SCOPED_TRACE(use_next ? "Next" : "Wait");
    // Each decode step delivers one token, so the third update of three tokens is the end.
    const BlockingCallback callback(3);
    GenerationRequest request;
    request.prompt = {5, 6, 7};
    request.stopping.max_new_tokens = 3;
    request.stopping.ignore_eos = true;
    request.on_update = callback.Function();
    std::shared_ptr<GenerationStream> stream = fixture.Submit(request);
    ASSERT_NE(stream, nullptr);
    std::future<bool> reader = std::async(std::launch::async, [&] {
      if (use_next) {
        while (!stream->Next().end) {
        }
      } else {
        stream->Wait();
      }
      return callback.returned();
    });
    absl::Cleanup release = [&] { callback.Release(); };  // before `reader` waits, on any exit
    callback.WaitUntilBlocked();
    EXPECT_EQ(reader.wait_for(kLongEnoughToReturn), std::future_status::timeout)
        << "the end was read while its on_update was still running";
    callback.Release();
    EXPECT_TRUE(reader.get());
  }

  const BlockingCallback callback(1);
  ScoreRequest request;
  request.tokens = {5, 6, 7};
  request.on_done = callback.Function();
  absl::StatusOr<std::shared_ptr<PendingScore>> pending = fixture.engine->Score(request);
  ASSERT_TRUE(pending.ok()) << pending.status();
  std::future<bool> reader = std::async(std::launch::async, [&] {
    EXPECT_TRUE((*pending)->Wait().ok());
    return callback.returned();
  });
  absl::Cleanup release = [&] { callback.Release(); };
  callback.WaitUntilBlocked();
  EXPECT_EQ(reader.wait_for(kLongEnoughToReturn), std::future_status::timeout)
      << "the result was read while on_done was still running";
  callback.Release();
  EXPECT_TRUE(reader.get());
}

TEST(Engine, BadRequestsAreRefusedAtSubmissionNamingTheProblem) {
  EngineOptions options;
  options.max_prompt_tokens = 100;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  Engine& engine = *fixture.engine;
  GenerationRequest good;
  good.prompt = {1, 2};

  GenerationRequest bad = good;
  bad.prompt.clear();
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument, {"empty prompt"});
  bad.prompt = {1, 512};
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"token id 512 at position 1", "[0, 512)"});
  bad.prompt = {-1};
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"token id -1 at position 0"});
  bad.prompt.assign(101, 1);
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"101 tokens", "max_prompt_tokens (100)"});
  bad = good;
  bad.sampling.temperature = -1.0f;
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument, {"temperature"});
  bad = good;
  bad.stopping.max_new_tokens = 0;
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"max_new_tokens"});
  bad = good;
  auto state = std::make_shared<SequenceState>();
  state->bytes.resize(12);
  bad.initial_state = state;
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"initial_state has 12 bytes", absl::StrCat("has ", engine.state_bytes())});
  state->bytes.resize(engine.state_bytes());
  state->pending_token = 600;
  ExpectError(engine.Generate(bad).status(), absl::StatusCode::kInvalidArgument,
              {"pending token 600"});

  ScoreRequest score;
  score.tokens = {1};
  ExpectError(engine.Score(score).status(), absl::StatusCode::kInvalidArgument,
              {"at least 2 tokens", "got 1"});
  score.tokens = {1, 9999};
  ExpectError(engine.Score(score).status(), absl::StatusCode::kInvalidArgument,
              {"score: text: token id 9999 at position 1"});
  // Nothing bad reached the scheduler.
  EXPECT_EQ(engine.Stats().requests_finished, 0);
  EXPECT_EQ(engine.Stats().queued, 0);
}

// The CPU backend with failures on demand: the recurrence ops fail while a flag is set.
TEST(Engine, DeviceFailuresEndTheAffectedRequestsWithInternalAndTheEngineGoesOn) {
  FailingBackend backend;
  auto model = *Model::Load(TestDataDir() / "tiny-a", backend);
  EngineOptions options;
  options.max_running = 4;
  auto engine = *Engine::Create(*model, options);
  GenerationRequest request;
  request.prompt = {3, 4, 5};
  request.stopping.max_new_tokens = 100000;
  request.stopping.ignore_eos = true;
  auto decoding = *engine->Generate(request);
  ASSERT_FALSE(decoding->Next().tokens.empty());
  backend.fail_step = true;
  ExpectError(WaitFor(*decoding).end.status, absl::StatusCode::kInternal,
              {"engine: decode failed", "injected step failure"});
  backend.fail_step = false;

  backend.fail_prefill = true;
  ExpectError(WaitFor(**engine->Generate(request)).end.status, absl::StatusCode::kInternal,
              {"engine: prefill failed", "injected prefill failure"});
  ScoreRequest score;
  score.tokens = {1, 2, 3};
  ExpectError((*engine->Score(score))->Wait().status(), absl::StatusCode::kInternal,
              {"engine: scoring failed", "injected prefill failure"});
  backend.fail_prefill = false;

  request.stopping.max_new_tokens = 5;
  const Outcome after = WaitFor(**engine->Generate(request));
  ASSERT_TRUE(after.end.status.ok()) << after.end.status;
  EXPECT_EQ(after.tokens.size(), 5u);
  const EngineStats stats = WaitUntilIdle(*engine);
  EXPECT_EQ(stats.free_slots, 4);
}

TEST(Engine, BadOptionsAreRefusedNamingTheField) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto model = *Model::Load(TestDataDir() / "tiny-a", *backend);
  EngineOptions options;
  options.max_running = 0;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"max_running must be positive, got 0"});
  options = EngineOptions{};
  options.prefill_token_budget = -5;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"prefill_token_budget must be positive, got -5"});
  options = EngineOptions{};
  options.num_slots = 3;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"num_slots (3)", "max_running (64)"});
  options = EngineOptions{};
  options.swap_slots = -1;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"swap_slots must not be negative"});
  options = EngineOptions{};
  options.max_queued = 0;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"max_queued must be positive"});
  options = EngineOptions{};
  options.max_prefill_token_budget = 100;  // below the 512 of prefill_token_budget
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"max_prefill_token_budget must be 0, -1 (auto) or at least prefill_token_budget "
               "(512), got 100"});
  options.max_prefill_token_budget = -2;
  ExpectError(Engine::Create(*model, options).status(), absl::StatusCode::kInvalidArgument,
              {"max_prefill_token_budget", "got -2"});
  // The auto ceiling on the CPU backend is the budget itself: the engine starts.
  options.max_prefill_token_budget = EngineOptions::kAutoPrefillBudget;
  EXPECT_TRUE(Engine::Create(*model, options).ok());
}

}  // namespace
}  // namespace hgrn2
