// The engine and its scheduler on the CPU backend: batched results equal each request alone (bit
// for bit), preemption and saved states resume exactly, the prefill budget keeps decoding going,
// thousands of requests with cancellations and deadlines all end and free their slots, and bad
// requests are refused at submission.
#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "engine/model/generation.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/failing_backend.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::FailingBackend;
using ::hgrn2::testing::TestDataDir;

std::vector<int32_t> RandomIds(int64_t count, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

// Built twice: engine_test on the CPU backend, where batched and alone agree bit for bit, and
// cuda_engine_test on the CUDA backend in float32 (skipped without a GPU), where the GEMMs'
// algorithms differ with the batch size: ids must agree, log-probabilities to rounding.
#ifdef HGRN2_ENGINE_ON_CUDA
constexpr bool kOnCuda = true;
std::unique_ptr<Backend> MakeTestBackend() {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend({.compute_dtype = DType::kF32});
  return cuda.ok() ? *std::move(cuda) : nullptr;
}
// Skips every test where there is no CUDA device.
class CudaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend({});
    if (!cuda.ok()) GTEST_SKIP() << cuda.status();
  }
};
const ::testing::Environment* const kCudaEnvironment =
    ::testing::AddGlobalTestEnvironment(new CudaEnvironment);
#else
constexpr bool kOnCuda = false;
std::unique_ptr<Backend> MakeTestBackend() { return MakeCpuBackend(); }
#endif
constexpr float kCudaLogprobTolerance = 1e-3f;

// An engine over a fixture model, and beside it an oracle: the same model on its own backend,
// pool and pass, generating one sequence at a time on the test thread.
struct Fixture {
  std::unique_ptr<Backend> oracle_backend = MakeTestBackend();
  std::unique_ptr<Model> oracle_model;
  std::unique_ptr<StatePool> oracle_pool;
  std::unique_ptr<ForwardPass> oracle_pass;
  std::unique_ptr<Backend> backend = MakeTestBackend();
  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;  // last: stopped before the model goes

  Fixture(const std::string& name, const EngineOptions& options) {
    const std::filesystem::path dir = TestDataDir() / name;
    oracle_model = *Model::Load(dir, *oracle_backend);
    oracle_pool = *StatePool::Create(*oracle_backend, oracle_model->config(), 1);
    ForwardPass::Options pass_options;
    pass_options.max_tokens = 512;
    pass_options.max_sequences = 1;
    oracle_pass = *ForwardPass::Create(*oracle_model, *oracle_pool, pass_options);
    model = *Model::Load(dir, *backend);
    absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(*model, options);
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) engine = *std::move(created);
  }

  // The request's prompt, sampling and stopping through GenerateSequence.
  GenerationResult Alone(const GenerationRequest& request) {
    absl::StatusOr<GenerationResult> result =
        GenerateSequence(*oracle_pass, request.prompt, request.sampling, request.stopping);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : GenerationResult{};
  }

  std::shared_ptr<GenerationStream> Submit(GenerationRequest request) {
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine->Generate(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *stream : nullptr;
  }
};

// Every token of `stream` (those read before included in `read`) and its end.
struct Outcome {
  std::vector<SampledToken> tokens;
  GenerationEnd end;
};
Outcome WaitFor(GenerationStream& stream, std::vector<SampledToken> read = {}) {
  StreamUpdate rest = stream.Wait();
  read.insert(read.end(), rest.tokens.begin(), rest.tokens.end());
  return Outcome{std::move(read), *rest.end};
}

// Bit-exact on the CPU: ids, log-probabilities and alternatives. On CUDA: ids, and
// log-probabilities to rounding (alternatives with equal values may swap places).
void ExpectSameTokens(const std::vector<SampledToken>& got, const std::vector<SampledToken>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t t = 0; t < got.size(); ++t) {
    ASSERT_EQ(got[t].id, want[t].id) << what << ", token " << t;
    ASSERT_EQ(got[t].top.size(), want[t].top.size()) << what << ", token " << t;
    if (kOnCuda) {
      ASSERT_NEAR(got[t].logprob, want[t].logprob, kCudaLogprobTolerance)
          << what << ", token " << t;
      for (size_t k = 0; k < got[t].top.size(); ++k) {
        ASSERT_NEAR(got[t].top[k].logprob, want[t].top[k].logprob, kCudaLogprobTolerance)
            << what << ", token " << t;
      }
      continue;
    }
    ASSERT_EQ(got[t].logprob, want[t].logprob) << what << ", token " << t;
    for (size_t k = 0; k < got[t].top.size(); ++k) {
      ASSERT_EQ(got[t].top[k].id, want[t].top[k].id) << what << ", token " << t;
      ASSERT_EQ(got[t].top[k].logprob, want[t].top[k].logprob) << what << ", token " << t;
    }
  }
}

// Polls until the engine is idle: nothing queued, running or swapped.
EngineStats WaitUntilIdle(const Engine& engine) {
  EngineStats stats = engine.Stats();
  for (int i = 0; i < 2000 && (stats.queued + stats.running + stats.swapped) > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stats = engine.Stats();
  }
  return stats;
}

// Greedy (a resumed request's random draws restart their counter, so exact resumption is
// checked greedily), to a fixed length.
GenerationRequest GreedyRequest(std::vector<int32_t> prompt, int32_t max_new_tokens) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.sampling.temperature = 0.0f;
  request.stopping.ignore_eos = true;
  request.stopping.max_new_tokens = max_new_tokens;
  return request;
}

// A different sampling setting per request: greedy, plain, filtered, penalised, biased.
SamplingParams VariedSampling(int i) {
  SamplingParams params;
  params.seed = 1000 + static_cast<uint64_t>(i);
  switch (i % 6) {
    case 0:
      params.temperature = 0.0f;
      break;
    case 1:
      params.temperature = 1.0f;
      params.num_top_logprobs = 3;
      break;
    case 2:
      params.temperature = 0.7f;
      params.top_k = 20;
      params.top_p = 0.9f;
      break;
    case 3:
      params.temperature = 1.3f;
      params.min_p = 0.05f;
      params.repetition_penalty = 1.2f;
      break;
    case 4:
      params.temperature = 0.9f;
      params.presence_penalty = 0.5f;
      params.frequency_penalty = 0.3f;
      params.logit_bias = {{7, 2.0f}, {9, -std::numeric_limits<float>::infinity()}};
      break;
    default:
      params.temperature = 0.5f;
      params.top_p = 0.5f;
      params.num_top_logprobs = 1;
      break;
  }
  return params;
}

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
  EXPECT_EQ(head.end.final_state->bytes.size(), fixture.engine->state_bytes());
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

// Log of stream events in the order the scheduler delivered them.
struct EventLog {
  std::mutex mutex;
  std::vector<std::string> events;
  void Add(std::string event) {
    std::lock_guard<std::mutex> lock(mutex);
    events.push_back(std::move(event));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mutex);
    return events.size();
  }
};

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

// An on_update or on_done that, on its `nth` call, blocks until Release(). Its state is shared
// with the function given to the engine, so a call still running after the test let go of it
// touches nothing freed.
class BlockingCallback {
 public:
  explicit BlockingCallback(int nth) : state_(std::make_shared<State>()) { state_->nth = nth; }

  std::function<void()> Function() const {
    return [state = state_] {
      if (++state->calls != state->nth) return;
      state->blocked.set_value();
      state->released_future.wait();
      state->returned = true;
    };
  }
  void WaitUntilBlocked() const { state_->blocked.get_future().wait(); }
  void Release() const {
    std::call_once(state_->release_once, [&] { state_->released.set_value(); });
  }
  bool returned() const { return state_->returned; }

 private:
  struct State {
    int nth = 0;
    std::atomic<int> calls{0};
    std::promise<void> blocked;
    std::promise<void> released;
    std::shared_future<void> released_future = released.get_future().share();
    std::once_flag release_once;
    std::atomic<bool> returned{false};
  };
  std::shared_ptr<State> state_;
};

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
}

// ---- Sessions (E6): scoring from a saved state, the prefix state cache, GenerateMany. ----

// The log-probabilities of `tokens`, scored on the oracle as one text.
std::vector<float> ScoreAlone(Fixture& fixture, const std::vector<int32_t>& tokens) {
  absl::StatusOr<std::vector<float>> scored = ScoreSequence(*fixture.oracle_pass, tokens);
  EXPECT_TRUE(scored.ok()) << scored.status();
  return scored.ok() ? *scored : std::vector<float>{};
}

void ExpectSameLogprobs(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t t = 0; t < got.size(); ++t) {
    if (kOnCuda) {
      ASSERT_NEAR(got[t], want[t], kCudaLogprobTolerance) << what << ", token " << t;
    } else {
      ASSERT_EQ(got[t], want[t]) << what << ", token " << t;
    }
  }
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

// Runs `request` on the engine and checks it against the oracle, bit for bit on the CPU.
Outcome RunAndCompare(Fixture& fixture, const GenerationRequest& request, const std::string& what) {
  Outcome outcome = WaitFor(*fixture.Submit(request));
  EXPECT_TRUE(outcome.end.status.ok()) << what << ": " << outcome.end.status;
  const GenerationResult alone = fixture.Alone(request);
  ExpectSameTokens(outcome.tokens, alone.tokens, what);
  EXPECT_EQ(outcome.end.finish_reason, alone.finish_reason) << what;
  EXPECT_EQ(outcome.end.prompt_tokens, static_cast<int64_t>(request.prompt.size())) << what;
  return outcome;
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

// One request after another, so the cache's content is known: extend, equal, partly shared,
// shorter, and evicted prompts all give the tokens and log-probabilities of the cache-off oracle;
// hits skip exactly the cached prefix's tokens but its last.
TEST(Engine, ThePrefixCacheGivesExactlyTheTokensOfAnUncachedRun) {
  std::atomic<int64_t> prefill_tokens{0}, decode_sequences{0};
  EngineOptions options;
  options.max_running = 4;
  options.prefill_token_budget = 32;
  options.on_step = [&](const StepReport& report) {
    prefill_tokens.fetch_add(report.prefill_tokens);
    decode_sequences.fetch_add(report.decode_sequences);
  };
  Fixture probe("tiny-conv", EngineOptions{});
  ASSERT_NE(probe.engine, nullptr);
  options.prefix_cache_bytes = 2 * static_cast<int64_t>(probe.engine->state_bytes()) + 100;
  Fixture fixture("tiny-conv", options);
  ASSERT_NE(fixture.engine, nullptr);
  EXPECT_EQ(fixture.engine->Stats().prefix_cache_capacity, 2);
  EXPECT_EQ(fixture.engine->Stats().num_slots, 4);
  EXPECT_EQ(fixture.engine->Stats().free_slots, 4);
  const int64_t vocab = fixture.model->config().vocab_size;
  const std::vector<int32_t> base = RandomIds(40, vocab, 400);
  auto with = [&](std::vector<int32_t> head, const std::vector<int32_t>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  const std::vector<int32_t> head20(base.begin(), base.begin() + 20);
  struct Case {
    std::string name;
    std::vector<int32_t> prompt;
    int64_t cached;  // expected cached_prompt_tokens
  };
  // Capacity 2, least recently used first out.
  const std::vector<Case> cases = {
      {"first", base, 0},
      {"equal", base, 39},
      {"extends", with(base, RandomIds(15, vocab, 401)), 39},
      // Hits the 55-token entry; its own entry evicts `base`'s.
      {"extends the extension", with(with(base, RandomIds(15, vocab, 401)), {5}), 54},
      {"partly shared", with(head20, RandomIds(10, vocab, 402)), 0},  // evicts the 55-token one
      {"shorter", head20, 0},                                         // evicts the 56-token one
      // `base` again: only its first 20 tokens are cached now; evicts the partly shared one.
      {"evicted", base, 19},
      {"one token", {base[0]}, 0},
  };

  int64_t fed_before = 0, decoded_before = 0, hits = 0, misses = 0, cached_total = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    GenerationRequest request;
    request.prompt = c.prompt;
    request.sampling = VariedSampling(static_cast<int>(i));  // greedy, seeded, penalties, bias
    request.stopping.max_new_tokens = 12;
    request.stopping.ignore_eos = true;
    const Outcome outcome = RunAndCompare(fixture, request, c.name);
    EXPECT_EQ(outcome.end.cached_prompt_tokens, c.cached) << c.name;
    const EngineStats stats = WaitUntilIdle(*fixture.engine);
    // Prefill feeds what the cache did not hold but the last token; the decode step the rest.
    const int64_t prompt = static_cast<int64_t>(c.prompt.size());
    EXPECT_EQ(prefill_tokens.load() - fed_before, prompt - 1 - c.cached) << c.name;
    EXPECT_EQ(decode_sequences.load() - decoded_before, 12) << c.name;
    fed_before = prefill_tokens.load();
    decoded_before = decode_sequences.load();
    if (prompt >= 2) ++(c.cached > 0 ? hits : misses);
    cached_total += c.cached;
    EXPECT_EQ(stats.prefix_cache_hits, hits) << c.name;
    EXPECT_EQ(stats.prefix_cache_misses, misses) << c.name;
    EXPECT_EQ(stats.prefix_cache_tokens, cached_total) << c.name;
    EXPECT_LE(stats.prefix_cache_entries, 2) << c.name;
    EXPECT_EQ(stats.free_slots, 4) << c.name;
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.prefix_cache_entries, 2);
  EXPECT_EQ(stats.prefix_cache_evictions, 4);
  int64_t all_prompts = 0;
  for (const Case& c : cases) all_prompts += static_cast<int64_t>(c.prompt.size());
  EXPECT_EQ(stats.prompt_tokens, all_prompts);  // cached tokens count as prompt tokens
}

// A cache of one entry under many concurrent requests from three families of shared prefixes
// (hits, misses and evictions interleave with admission): every request still gives its oracle's
// tokens, and every slot comes back.
TEST(Engine, AOneEntryPrefixCacheUnderConcurrentRequestsStaysExact) {
  EngineOptions options;
  options.max_running = 3;
  options.prefill_token_budget = 16;
  options.swap_slots = 2;
  Fixture probe("tiny-a", EngineOptions{});
  ASSERT_NE(probe.engine, nullptr);
  options.prefix_cache_bytes = static_cast<int64_t>(probe.engine->state_bytes());
  Fixture fixture("tiny-a", options);
  ASSERT_NE(fixture.engine, nullptr);
  const int64_t vocab = fixture.model->config().vocab_size;
  std::vector<std::vector<int32_t>> families;
  for (int f = 0; f < 3; ++f) families.push_back(RandomIds(12 + 9 * f, vocab, 500 + f));
  constexpr int kRequests = 24;
  std::vector<GenerationRequest> requests(kRequests);
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest& request = requests[i];
    request.prompt = families[i % 3];
    if (i % 4 != 0) {
      const std::vector<int32_t> tail = RandomIds(i % 7, vocab, 600 + i);
      request.prompt.insert(request.prompt.end(), tail.begin(), tail.end());
    }
    request.sampling = VariedSampling(i);
    request.priority = i % 5 == 4 ? 1 : 0;  // some preempt others
    request.stopping.max_new_tokens = 3 + i % 6;
    request.stopping.ignore_eos = true;
    streams.push_back(fixture.Submit(request));
    ASSERT_NE(streams.back(), nullptr);
  }
  for (int i = 0; i < kRequests; ++i) {
    const Outcome outcome = WaitFor(*streams[i]);
    ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
    ExpectSameTokens(outcome.tokens, fixture.Alone(requests[i]).tokens,
                     absl::StrCat("request ", i));
  }
  const EngineStats stats = WaitUntilIdle(*fixture.engine);
  EXPECT_EQ(stats.prefix_cache_hits + stats.prefix_cache_misses, kRequests);
  EXPECT_GT(stats.prefix_cache_hits, 0);
  EXPECT_GT(stats.prefix_cache_evictions, 0);
  EXPECT_EQ(stats.prefix_cache_entries, 1);
  EXPECT_EQ(stats.free_slots, 3);
  EXPECT_EQ(stats.free_swap_slots, 2);
}

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

// On demand (--gtest_also_run_disabled_tests): the bundled demo model on the CPU, eight requests
// that share a 1,000-token context, with the prefix cache off and on: wall time, prompt tokens
// prefilled, and the same tokens both ways.
TEST(Engine, DISABLED_PrefixCacheTimingOnTheDemoModel) {
  const std::filesystem::path dir =
      TestDataDir().parent_path().parent_path() / "models" / "hgrn2-demo";
  std::unique_ptr<Backend> backend = MakeTestBackend();
  auto model = *Model::Load(dir, *backend);
  const int64_t vocab = model->config().vocab_size;
  const std::vector<int32_t> context = RandomIds(1000, vocab, 900);
  std::vector<std::vector<int32_t>> outputs[2];
  for (int on = 0; on < 2; ++on) {
    std::atomic<int64_t> prefilled{0};
    EngineOptions options;
    options.max_running = 8;
    options.prefix_cache_bytes = on ? int64_t{1} << 26 : 0;
    options.on_step = [&](const StepReport& report) { prefilled += report.prefill_tokens; };
    auto engine = *Engine::Create(*model, options);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<GenerationStream>> streams;
    for (int i = 0; i < 8; ++i) {
      std::vector<int32_t> prompt = context;
      const std::vector<int32_t> question = RandomIds(16, vocab, 910 + static_cast<uint64_t>(i));
      prompt.insert(prompt.end(), question.begin(), question.end());
      if (i == 0) prompt = context;  // the first request's prompt is the context itself
      streams.push_back(*engine->Generate(GreedyRequest(prompt, 8)));
      if (i == 0) WaitFor(*streams[0]);  // it fills the cache before the others come
    }
    for (auto& stream : streams) {
      const Outcome outcome = WaitFor(*stream);
      ASSERT_TRUE(outcome.end.status.ok()) << outcome.end.status;
      outputs[on].emplace_back();
      for (const SampledToken& token : outcome.tokens) outputs[on].back().push_back(token.id);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const EngineStats stats = engine->Stats();
    std::cout << "[prefix cache " << (on ? "on" : "off") << "] " << seconds << " s, "
              << prefilled.load() << " prompt tokens prefilled of " << stats.prompt_tokens
              << ", hits " << stats.prefix_cache_hits << ", tokens from the cache "
              << stats.prefix_cache_tokens << "\n";
  }
  EXPECT_EQ(outputs[0], outputs[1]);
}

}  // namespace
}  // namespace hgrn2
