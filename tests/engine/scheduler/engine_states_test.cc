// States: preempted sequences, saved states and parked states resume with exactly the tokens of an
// uninterrupted run; scoring from a saved state equals scoring the whole text; session requests
// refuse bad arguments.
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

TEST(Engine, PreemptedSequencesResumeWithTheTokensOfAnUninterruptedRun) {
  EngineOptions options;
  options.max_running = 2;
  options.prefill_token_budget = 16;
  options.swap_slots = 2;
  // Every submission after the first comes from the scheduler thread, so the order of events
  // does not depend on the speed of this thread (a slow test thread, as under TSan, once let
  // low0 reach its third token before low1 had arrived).
  std::function<void()> after_first_step;
  std::once_flag first_step;
  options.on_step = [&](const StepReport&) { std::call_once(first_step, after_first_step); };
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  // Two low-priority sequences take both seats: one decoding, one deep in a long prompt.
  std::vector<GenerationRequest> requests(4);
  for (int i = 0; i < 4; ++i) {
    requests[i].sampling = VariedSampling(i + 1);
    requests[i].stopping.max_new_tokens = 40;
    requests[i].stopping.ignore_eos = true;
  }
  requests[0].prompt = RandomIds(5, vocab, 1);
  requests[1].prompt = RandomIds(480, vocab, 2);  // 30 iterations of prefill
  requests[2].prompt = RandomIds(7, vocab, 3);
  requests[3].prompt = RandomIds(9, vocab, 4);
  requests[2].priority = requests[3].priority = 5;
  // low1 comes first; low0 after low1's first prefill step; the high-priority pair at low0's
  // third token, while low1 is still in its prompt.
  std::promise<std::shared_ptr<GenerationStream>> low0_submission;
  after_first_step = [&] { low0_submission.set_value(fixture.Submit(requests[0])); };
  std::promise<std::pair<std::shared_ptr<GenerationStream>, std::shared_ptr<GenerationStream>>>
      high_submission;
  std::atomic<int> low0_updates{0};
  requests[0].on_update = [&] {
    if (++low0_updates == 3) {
      high_submission.set_value({fixture.Submit(requests[2]), fixture.Submit(requests[3])});
    }
  };
  absl::Cleanup stop_engine = [&] { fixture.engine->Stop(); };
  auto low1 = fixture.Submit(requests[1]);
  ASSERT_TRUE(low1);
  auto low0 = low0_submission.get_future().get();
  ASSERT_TRUE(low0);
  const std::vector<SampledToken> low0_read;
  auto [high0, high1] = high_submission.get_future().get();
  ASSERT_TRUE(high0 && high1);

  const Outcome outcomes[] = {WaitFor(*low0, low0_read), WaitFor(*low1), WaitFor(*high0),
                              WaitFor(*high1)};
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(outcomes[i].end.status.ok()) << outcomes[i].end.status;
    const GenerationResult alone = fixture.Alone(requests[i]);
    ExpectSameTokens(outcomes[i].tokens, alone.tokens, absl::StrCat("request ", i));
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.preemptions, 2);  // both low-priority sequences were swapped out and back
  EXPECT_EQ(stats.free_slots, 2);
  EXPECT_EQ(stats.swapped, 0);
  EXPECT_EQ(stats.free_swap_slots, 2);
}

TEST(Engine, ASavedStateResumesWithTheTokensOfOneUninterruptedRun) {
  EngineOptions options;
  options.max_running = 2;
  options.prefill_token_budget = 32;
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  const GenerationRequest whole = GreedyRequest(RandomIds(70, vocab, 9), 30);
  const GenerationResult uninterrupted = fixture.Alone(whole);

  // 12 tokens, the state handed back, then 18 more from it with no new prompt.
  GenerationRequest first = GreedyRequest(whole.prompt, 12);
  first.return_final_state = true;
  const Outcome head = WaitFor(*fixture.Submit(first));
  ASSERT_TRUE(head.end.status.ok()) << head.end.status;
  ASSERT_NE(head.end.final_state, nullptr);
  EXPECT_EQ(head.end.final_state->view().size(), fixture.engine->state_bytes());
  EXPECT_EQ(head.end.final_state->pending_token, head.tokens.back().id);
  GenerationRequest second = GreedyRequest({}, 18);
  second.initial_state = head.end.final_state;
  const Outcome tail = WaitFor(*fixture.Submit(second));
  ASSERT_TRUE(tail.end.status.ok()) << tail.end.status;
  std::vector<SampledToken> joined = head.tokens;
  joined.insert(joined.end(), tail.tokens.begin(), tail.tokens.end());
  ExpectSameTokens(joined, uninterrupted.tokens, "12 + 18 tokens");
  EXPECT_EQ(tail.end.prompt_tokens, 1);  // the pending token

  // A session turn: the saved state plus new text equals the whole conversation in one go.
  const std::vector<int32_t> turn = RandomIds(11, vocab, 10);
  std::vector<int32_t> conversation = whole.prompt;
  for (const SampledToken& token : head.tokens) conversation.push_back(token.id);
  conversation.insert(conversation.end(), turn.begin(), turn.end());
  const GenerationRequest in_one_go = GreedyRequest(conversation, 9);
  const GenerationResult expected = fixture.Alone(in_one_go);
  GenerationRequest resumed = GreedyRequest(turn, 9);
  resumed.initial_state = head.end.final_state;
  const Outcome next_turn = WaitFor(*fixture.Submit(resumed));
  ASSERT_TRUE(next_turn.end.status.ok()) << next_turn.end.status;
  ExpectSameTokens(next_turn.tokens, expected.tokens, "next turn");
}

TEST(Engine, ParkedStatesResumeOnTheDeviceUntilTheirSlotIsNeeded) {
  EngineOptions options;
  options.max_running = 2;  // two slots: a parked state waits in the one not running
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  const GenerationRequest whole = GreedyRequest(RandomIds(33, vocab, 12), 20);
  const GenerationResult uninterrupted = fixture.Alone(whole);

  GenerationRequest first = GreedyRequest(whole.prompt, 8);
  first.park_as = "session-a";
  first.return_final_state = true;
  const Outcome head = WaitFor(*fixture.Submit(first));
  ASSERT_TRUE(head.end.status.ok()) << head.end.status;
  EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.parked, 1);
  EXPECT_EQ(stats.free_slots, 1);

  GenerationRequest second = GreedyRequest({}, 12);
  second.resume_parked = "session-a";
  const Outcome tail = WaitFor(*fixture.Submit(second));
  ASSERT_TRUE(tail.end.status.ok()) << tail.end.status;
  std::vector<SampledToken> joined = head.tokens;
  joined.insert(joined.end(), tail.tokens.begin(), tail.tokens.end());
  ExpectSameTokens(joined, uninterrupted.tokens, "8 parked + 12 tokens");
  stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.parked, 0);
  EXPECT_EQ(stats.free_slots, 2);

  // Parked again; then two sequences run at once and the second needs the parked slot.
  first.return_final_state = false;
  ASSERT_TRUE(WaitFor(*fixture.Submit(first)).end.status.ok());
  auto other0 = fixture.Submit(GreedyRequest({1, 2, 3}, 100000));
  ASSERT_FALSE(other0->Next().tokens.empty());  // running in the free slot
  EXPECT_EQ(fixture.engine->Stats().parked, 1);
  ASSERT_TRUE(WaitFor(*fixture.Submit(GreedyRequest({1, 2, 3}, 3))).end.status.ok());
  other0->Cancel();
  EXPECT_EQ(WaitFor(*other0).end.status.code(), absl::StatusCode::kCancelled);
  stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.parked, 0);
  EXPECT_EQ(stats.free_slots, 2);
  const Outcome gone = WaitFor(*fixture.Submit(second));
  ExpectError(gone.end.status, absl::StatusCode::kNotFound,
              {"no state is parked under 'session-a'", "no initial_state"});
  EXPECT_TRUE(gone.tokens.empty());
  // With the saved state as a fallback the request still resumes exactly.
  second.initial_state = head.end.final_state;
  const Outcome fallback = WaitFor(*fixture.Submit(second));
  ASSERT_TRUE(fallback.end.status.ok()) << fallback.end.status;
  ExpectSameTokens(fallback.tokens, tail.tokens, "resumed from the saved state");
}

TEST(Engine, ScoringFromASavedStateEqualsScoringTheWholeText) {
  EngineOptions options;
  options.max_running = 4;
  options.prefill_token_budget = 24;
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  GenerationRequest first = GreedyRequest(RandomIds(30, vocab, 300), 6);
  first.return_final_state = true;
  const Outcome head = WaitFor(*fixture.Submit(first));
  ASSERT_TRUE(head.end.status.ok()) << head.end.status;
  std::vector<int32_t> history = first.prompt;
  for (const SampledToken& token : head.tokens) history.push_back(token.id);

  for (int64_t length : {1, 2, 57}) {
    ScoreRequest request;
    request.tokens = RandomIds(length, vocab, 310 + static_cast<uint64_t>(length));
    request.initial_state = head.end.final_state;
    request.num_top_logprobs = 2;
    absl::StatusOr<ScoreResult> result = (*fixture.engine->Score(request))->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    std::vector<int32_t> whole = history;
    whole.insert(whole.end(), request.tokens.begin(), request.tokens.end());
    const std::vector<float> all = ScoreAlone(fixture, whole);
    ExpectSameLogprobs(result->logprobs,
                       std::vector<float>(all.end() - static_cast<ptrdiff_t>(length), all.end()),
                       absl::StrCat(length, " tokens after the state"));
    EXPECT_EQ(result->is_argmax.size(), static_cast<size_t>(length));
    EXPECT_EQ(result->top.size(), static_cast<size_t>(length));
  }
  EXPECT_EQ(WaitUntilIdle(*fixture.engine).free_slots, 4);
}

// A session turn with seeded sampling: the saved state plus new text, sampled with a seed and no
// penalties (the sampler sees only its own request), equals one request on the whole
// conversation with that seed.
TEST(Engine, ASeededSessionTurnEqualsOneRequestOnTheConversation) {
  for (const int64_t cache_bytes : {int64_t{0}, int64_t{1} << 22}) {
    EngineOptions options;
    options.max_running = 2;
    options.prefix_cache_bytes = cache_bytes;
    Fixture fixture("tiny-conv", options);
    ASSERT_NE(fixture.engine, nullptr);
    const int64_t vocab = fixture.model->config().vocab_size;
    GenerationRequest first = GreedyRequest(RandomIds(21, vocab, 320), 7);
    first.sampling.temperature = 0.8f;
    first.sampling.top_k = 50;
    first.sampling.seed = 77;
    first.return_final_state = true;
    const Outcome head = WaitFor(*fixture.Submit(first));
    ASSERT_TRUE(head.end.status.ok()) << head.end.status;
    ExpectSameTokens(head.tokens, fixture.Alone(first).tokens, "first turn");

    std::vector<int32_t> conversation = first.prompt;
    for (const SampledToken& token : head.tokens) conversation.push_back(token.id);
    GenerationRequest turn = first;
    turn.return_final_state = false;
    turn.sampling.seed = 78;
    turn.prompt = RandomIds(9, vocab, 321);
    turn.initial_state = head.end.final_state;
    GenerationRequest in_one_go = turn;
    in_one_go.initial_state = nullptr;
    in_one_go.prompt = conversation;
    in_one_go.prompt.insert(in_one_go.prompt.end(), turn.prompt.begin(), turn.prompt.end());
    const Outcome resumed = WaitFor(*fixture.Submit(turn));
    ASSERT_TRUE(resumed.end.status.ok()) << resumed.end.status;
    EXPECT_EQ(resumed.end.prompt_tokens, 10);  // the pending token and the turn
    const std::string what = absl::StrCat("second turn, prefix cache ", cache_bytes, " bytes");
    ExpectSameTokens(resumed.tokens, fixture.Alone(in_one_go).tokens, what);
    // And through the engine (with the cache on, from the first turn's cached prompt).
    ExpectSameTokens(WaitFor(*fixture.Submit(in_one_go)).tokens, resumed.tokens, what);
  }
}

TEST(Engine, SessionRequestsRefuseBadArgumentsNamingTheProblem) {
  EngineOptions options;
  options.max_running = 8;
  options.max_samples = 4;
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  Engine& engine = *fixture.engine;
  GenerationRequest good;
  good.prompt = {1, 2};
  ExpectError(engine.GenerateMany(good, 0).status(), absl::StatusCode::kInvalidArgument,
              {"n must be in [1, 4]", "got 0"});
  ExpectError(engine.GenerateMany(good, 5).status(), absl::StatusCode::kInvalidArgument,
              {"n must be in [1, 4]", "max_samples 4", "got 5"});
  for (int field = 0; field < 3; ++field) {
    GenerationRequest bad = good;
    if (field == 0) bad.return_final_state = true;
    if (field == 1) bad.park_as = "s";
    if (field == 2) bad.resume_parked = "s";
    ExpectError(engine.GenerateMany(bad, 2).status(), absl::StatusCode::kInvalidArgument,
                {"return_final_state, park_as or resume_parked"});
  }
  GenerationRequest bad = good;
  bad.prompt = {1, 512};
  ExpectError(engine.GenerateMany(bad, 2).status(), absl::StatusCode::kInvalidArgument,
              {"token id 512 at position 1"});

  ScoreRequest score;
  score.initial_state = std::make_shared<SequenceState>();
  ExpectError(engine.Score(score).status(), absl::StatusCode::kInvalidArgument,
              {"at least 1 token after an initial_state"});
  score.tokens = {4};
  ExpectError(engine.Score(score).status(), absl::StatusCode::kInvalidArgument,
              {"score: initial_state has 0 bytes", absl::StrCat("has ", engine.state_bytes())});
  auto state = std::make_shared<SequenceState>();
  state->bytes.resize(engine.state_bytes());
  state->pending_token = -3;
  score.initial_state = state;
  ExpectError(engine.Score(score).status(), absl::StatusCode::kInvalidArgument,
              {"pending token -3"});
  EXPECT_EQ(engine.Stats().requests_finished, 0);
  EXPECT_EQ(engine.Stats().queued, 0);

  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto model = *Model::Load(TestDataDir() / "tiny-a", *backend);
  EngineOptions bad_options;
  bad_options.prefix_cache_bytes = -1;
  ExpectError(Engine::Create(*model, bad_options).status(), absl::StatusCode::kInvalidArgument,
              {"prefix_cache_bytes must not be negative"});
  bad_options = EngineOptions{};
  bad_options.max_samples = 0;
  ExpectError(Engine::Create(*model, bad_options).status(), absl::StatusCode::kInvalidArgument,
              {"max_samples must be positive"});
}

}  // namespace
}  // namespace hgrn2
