// The request core's tests' fixture: an engine on the CPU backend over a fixture model with a
// fixture tokenizer (V = 1000 both), and the CallParts the core runs on, without any front end;
// beside it an oracle (the same model generating one sequence at a time).
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/model/generation.h"
#include "engine/model/model.h"
#include "engine/model/state_pool.h"
#include "engine/session/session_manager.h"
#include "engine/session/session_store.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "server/core/call_parts.h"
#include "server/core/call_scope.h"
#include "server/core/generation.h"
#include "tests/support/test_support.h"

namespace hgrn2::server::core_testing {

struct CoreFixture {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<StatePool> oracle_pool;
  std::unique_ptr<ForwardPass> oracle_pass;
  ServerMetrics metrics;
  CallTracker calls;
  std::unique_ptr<AccessControl> access;
  ModelContext model_context;
  WorkerPool workers{2};
  WorkerPool session_workers{2};
  std::unique_ptr<session::SessionManager> sessions;
  std::unique_ptr<Engine> engine;  // stopped before the model goes
  CallParts parts;

  // `with_sessions`: a memory session store; `api_keys_file`: AccessControl's file ("" = none).
  explicit CoreFixture(bool with_sessions = true, const std::string& api_keys_file = "") {
    const std::filesystem::path data = testing::TestDataDir();
    model = *Model::Load(data / "u-k3-nolb", *backend);
    tokenizer = *Tokenizer::Load(data / "tokenizers" / "llama-sp" / "tokenizer.json");
    oracle_pool = *StatePool::Create(*backend, model->config(), 2);
    ForwardPass::Options pass_options;
    pass_options.max_tokens = 256;
    pass_options.max_sequences = 1;
    oracle_pass = *ForwardPass::Create(*model, *oracle_pool, pass_options);
    access = *AccessControl::Create(api_keys_file, &metrics);
    model_context = ModelContext{
        .config = &model->config(), .tokenizer = tokenizer.get(), .limits = RequestLimits()};
    EngineOptions options;
    options.max_running = 8;
    engine = *Engine::Create(*model, options);
    parts = CallParts{.engine = engine.get(),
                      .model = &model_context,
                      .metrics = &metrics,
                      .calls = &calls,
                      .access = access.get(),
                      .workers = &workers};
    if (with_sessions) {
      session::SessionStoreOptions store_options;
      sessions = std::make_unique<session::SessionManager>(
          *session::MakeSessionStore(store_options),
          session::SessionManager::ExpectationFor(*model, DType::kF32));
      parts.session_workers = &session_workers;
      parts.sessions = sessions.get();
    }
  }
  ~CoreFixture() { engine->Stop(); }

  std::shared_ptr<CallScope> Scope(const std::string& method = "Test") {
    CallInfo info;
    info.method = method;
    info.peer = "test";
    absl::StatusOr<std::unique_ptr<CallScope>> scope = CallScope::Begin(parts, std::move(info));
    EXPECT_TRUE(scope.ok()) << scope.status();
    return scope.ok() ? std::shared_ptr<CallScope>(*std::move(scope)) : nullptr;
  }

  // The oracle's tokens for `request` alone.
  GenerationResult Alone(const GenerationRequest& request) {
    absl::StatusOr<GenerationResult> result =
        GenerateSequence(*oracle_pass, request.prompt, request.sampling, request.stopping);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : GenerationResult{};
  }
};

// Everything a generation handed out, in order, and how it ended.
struct GenerationRun {
  std::vector<SampleUpdate> updates;
  absl::Status end;
  // Sample i's tokens, text and finish, joined from its updates.
  std::vector<int32_t> Ids(int32_t sample) const {
    std::vector<int32_t> ids;
    for (const SampleUpdate& update : updates) {
      if (update.index != sample) continue;
      for (const SampledToken& token : update.tokens) ids.push_back(token.id);
    }
    return ids;
  }
  std::string Text(int32_t sample) const {
    std::string text;
    for (const SampleUpdate& update : updates) {
      if (update.index == sample) text += update.text;
    }
    return text;
  }
  std::optional<SampleFinish> Finish(int32_t sample) const {
    for (const SampleUpdate& update : updates) {
      if (update.index == sample && update.finish) return update.finish;
    }
    return std::nullopt;
  }
};

// Starts `prepared` and calls Next, as a front end does, each time the generation has news,
// until its end. `before_next` runs before each Next (e.g. to cancel after the first update);
// `on_update` as each update is handed out (before the next Next).
inline GenerationRun RunGeneration(
    CoreFixture& fixture, std::shared_ptr<CallScope> scope, PreparedGeneration prepared,
    const std::function<void(Generation&, const GenerationRun&)>& before_next = {},
    const std::function<void(const SampleUpdate&)>& on_update = {}) {
  struct Signal {
    std::mutex mutex;
    std::condition_variable changed;
    int news = 0;
  };
  auto signal = std::make_shared<Signal>();
  std::shared_ptr<Generation> generation =
      Generation::Start(fixture.parts, scope, std::move(prepared), [signal] {
        std::lock_guard<std::mutex> lock(signal->mutex);
        ++signal->news;
        signal->changed.notify_all();
      });
  GenerationRun run;
  int seen = 0;
  while (true) {
    if (before_next) before_next(*generation, run);
    Generation::Event event = generation->Next();
    if (event.update) {
      if (on_update) on_update(*event.update);
      run.updates.push_back(*std::move(event.update));
    }
    if (event.end) {
      run.end = *event.end;
      EXPECT_FALSE(generation->Next().end.has_value()) << "nothing after the end";
      return run;
    }
    if (event.update) continue;
    std::unique_lock<std::mutex> lock(signal->mutex);
    if (!signal->changed.wait_for(lock, std::chrono::seconds(30),
                                  [&] { return signal->news > seen; })) {
      ADD_FAILURE() << "no news for 30 s";
      run.end = absl::DeadlineExceededError("test timeout");
      return run;
    }
    seen = signal->news;
  }
}

// A greedy request for `text` (BOS first), to a fixed length.
inline PreparedGeneration GreedyText(CoreFixture& fixture, const std::string& text,
                                     int32_t max_new_tokens) {
  PreparedGeneration prepared;
  prepared.engine.prompt = *fixture.tokenizer->Encode(text, /*add_special=*/true);
  prepared.engine.sampling.temperature = 0.0f;
  prepared.engine.stopping.max_new_tokens = max_new_tokens;
  prepared.engine.stopping.ignore_eos = true;
  prepared.prompt_tokens = static_cast<int32_t>(prepared.engine.prompt.size());
  return prepared;
}

}  // namespace hgrn2::server::core_testing
