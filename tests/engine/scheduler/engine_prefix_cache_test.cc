// The prefix state cache: exactly the tokens of an uncached run, also with one entry under
// concurrent requests; its timing on the demo model (disabled).
// The shared fixture (an engine beside a one-sequence oracle) is in engine_test_fixture.h; this
// file is built into engine_test (CPU) and cuda_engine_test (CUDA, float32).
#include "tests/engine/scheduler/engine_test_fixture.h"

namespace hgrn2 {
namespace {

using namespace ::hgrn2::engine_testing;  // NOLINT: the fixture's helpers

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
