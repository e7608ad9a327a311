// The engine tests' fixture: an engine over a fixture model beside an oracle (the same model
// generating one sequence at a time), and the helpers the engine_*_test.cc files share. Built
// twice: engine_test on the CPU backend, where batched and alone agree bit for bit, and
// cuda_engine_test on the CUDA backend in float32 (HGRN2_ENGINE_ON_CUDA; skipped without a GPU),
// where the GEMMs' algorithms differ with the batch size: ids must agree, log-probabilities to
// rounding.
#pragma once

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
#include "engine/engine.h"
#include "engine/model/generation.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/failing_backend.h"
#include "tests/support/test_support.h"

namespace hgrn2::engine_testing {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::FailingBackend;
using ::hgrn2::testing::TestDataDir;

inline std::vector<int32_t> RandomIds(int64_t count, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

#ifdef HGRN2_ENGINE_ON_CUDA
inline constexpr bool kOnCuda = true;
inline std::unique_ptr<Backend> MakeTestBackend() {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend({.compute_dtype = DType::kF32});
  return cuda.ok() ? *std::move(cuda) : nullptr;
}
#else
inline constexpr bool kOnCuda = false;
inline std::unique_ptr<Backend> MakeTestBackend() { return MakeCpuBackend(); }
#endif
inline constexpr float kCudaLogprobTolerance = 1e-3f;

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
inline Outcome WaitFor(GenerationStream& stream, std::vector<SampledToken> read = {}) {
  StreamUpdate rest = stream.Wait();
  read.insert(read.end(), rest.tokens.begin(), rest.tokens.end());
  return Outcome{std::move(read), *rest.end};
}

// Bit-exact on the CPU: ids, log-probabilities and alternatives. On CUDA: ids, and
// log-probabilities to rounding (alternatives with equal values may swap places).
inline void ExpectSameTokens(const std::vector<SampledToken>& got,
                             const std::vector<SampledToken>& want, const std::string& what) {
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
inline EngineStats WaitUntilIdle(const Engine& engine) {
  EngineStats stats = engine.Stats();
  for (int i = 0; i < 2000 && (stats.queued + stats.running + stats.swapped) > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stats = engine.Stats();
  }
  return stats;
}

// Greedy (a resumed request's random draws restart their counter, so exact resumption is
// checked greedily), to a fixed length.
inline GenerationRequest GreedyRequest(std::vector<int32_t> prompt, int32_t max_new_tokens) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.sampling.temperature = 0.0f;
  request.stopping.ignore_eos = true;
  request.stopping.max_new_tokens = max_new_tokens;
  return request;
}

// A different sampling setting per request: greedy, plain, filtered, penalised, biased.
inline SamplingParams VariedSampling(int i) {
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

// The log-probabilities of `tokens`, scored on the oracle as one text.
inline std::vector<float> ScoreAlone(Fixture& fixture, const std::vector<int32_t>& tokens) {
  absl::StatusOr<std::vector<float>> scored = ScoreSequence(*fixture.oracle_pass, tokens);
  EXPECT_TRUE(scored.ok()) << scored.status();
  return scored.ok() ? *scored : std::vector<float>{};
}

inline void ExpectSameLogprobs(const std::vector<float>& got, const std::vector<float>& want,
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

// Runs `request` on the engine and checks it against the oracle, bit for bit on the CPU.
inline Outcome RunAndCompare(Fixture& fixture, const GenerationRequest& request,
                             const std::string& what) {
  Outcome outcome = WaitFor(*fixture.Submit(request));
  EXPECT_TRUE(outcome.end.status.ok()) << what << ": " << outcome.end.status;
  const GenerationResult alone = fixture.Alone(request);
  ExpectSameTokens(outcome.tokens, alone.tokens, what);
  EXPECT_EQ(outcome.end.finish_reason, alone.finish_reason) << what;
  EXPECT_EQ(outcome.end.prompt_tokens, static_cast<int64_t>(request.prompt.size())) << what;
  return outcome;
}

}  // namespace hgrn2::engine_testing
