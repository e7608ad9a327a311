// Page-locked states (HostStatePool): the pool lends at most its size and reuses buffers; a state
// saved from the engine's pinned final state and loaded into a pinned state resumes to the state
// and tokens of one uninterrupted run, bit for bit; the engine falls back to pageable states when
// its pinned ones are all lent; and states, like the pool, stay valid after the engine, model and
// backend are gone (run under ASan by scripts/test-sanitizers).
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/scheduler/host_state_pool.h"
#include "engine/session/session_manager.h"
#include "engine/session/session_store.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::TestDataDir;

std::vector<std::byte> Copy(absl::Span<const std::byte> bytes) {
  return std::vector<std::byte>(bytes.begin(), bytes.end());
}

TEST(HostStatePool, LendsAtMostItsSizeAndReusesBuffers) {
  HostStatePool pool(MakeCpuBackend()->shared_host_allocator(), 1000, 2);
  EXPECT_EQ(pool.allocated(), 0u);  // nothing until needed
  std::shared_ptr<SequenceState> a = pool.Take();
  std::shared_ptr<SequenceState> b = pool.Take();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a->pinned_lease, nullptr);
  EXPECT_EQ(a->pinned.size(), 1000u);
  EXPECT_EQ(a->view().data(), a->pinned.data());
  EXPECT_NE(a->pinned.data(), b->pinned.data());
  EXPECT_EQ(pool.Take(), nullptr);  // both lent: the caller falls back to pageable bytes
  EXPECT_EQ(pool.lent(), 2u);

  // A copy of the lease keeps the buffer lent after the state goes.
  std::byte* const a_data = a->pinned.data();
  std::shared_ptr<void> lease = a->pinned_lease;
  a.reset();
  EXPECT_EQ(pool.Take(), nullptr);
  lease.reset();
  EXPECT_EQ(pool.lent(), 1u);
  std::shared_ptr<SequenceState> again = pool.Take();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->pinned.data(), a_data);  // the same buffer, not a new one
  EXPECT_EQ(pool.allocated(), 2u);

  // Clear() (a Recycler's) gives the buffer back too.
  again->Clear();
  EXPECT_EQ(again->pinned_lease, nullptr);
  EXPECT_TRUE(again->view().empty());
  EXPECT_EQ(pool.lent(), 1u);
}

TEST(HostStatePool, StatesOutliveThePool) {
  std::shared_ptr<SequenceState> state;
  {
    HostStatePool pool(MakeCpuBackend()->shared_host_allocator(), 64, 1);  // the backend goes
    state = pool.Take();
  }
  ASSERT_NE(state, nullptr);
  std::fill(state->pinned.begin(), state->pinned.end(), std::byte{7});
  EXPECT_EQ(state->view()[63], std::byte{7});
}

// An engine over the tiny-conv fixture model on the CPU backend, and a session manager over a
// memory store that loads into the engine's page-locked states.
struct Served {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<session::SessionManager> sessions;

  explicit Served(const EngineOptions& options = {}) {
    model = *Model::Load(TestDataDir() / "tiny-conv", *backend);
    absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(*model, options);
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) engine = *std::move(created);
    sessions = std::make_unique<session::SessionManager>(
        *session::MakeMemorySessionStore(session::SessionStoreOptions{}),
        session::SessionManager::ExpectationFor(*model, DType::kF32),
        engine->MakeHostStatePool(session::SessionManager::kHostStatesForLoads));
  }
  ~Served() {
    if (engine != nullptr) engine->Stop();
  }

  struct Run {
    std::vector<SampledToken> tokens;
    GenerationEnd end;
  };
  Run Generate(std::vector<int32_t> prompt, int32_t tokens,
               std::shared_ptr<const SequenceState> from = nullptr) {
    GenerationRequest request;
    request.prompt = std::move(prompt);
    request.sampling.temperature = 0.0f;
    request.stopping.ignore_eos = true;
    request.stopping.max_new_tokens = tokens;
    request.return_final_state = true;
    request.initial_state = std::move(from);
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream = engine->Generate(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) return {};
    StreamUpdate all = (*stream)->Wait();
    EXPECT_TRUE(all.end->status.ok()) << all.end->status;
    return Run{std::move(all.tokens), *std::move(all.end)};
  }
};

std::vector<int32_t> Prompt(const Model& model) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 5) % model.config().vocab_size);
  return ids;
}

void ExpectBitIdentical(const std::vector<SampledToken>& got,
                        const std::vector<SampledToken>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_EQ(got[t].id, want[t].id) << "token " << t;
    EXPECT_EQ(got[t].logprob, want[t].logprob) << "token " << t;
  }
}

TEST(PinnedStates, ASavedAndResumedSessionGivesTheStateAndTokensOfOneRun) {
  Served served;
  ASSERT_NE(served.engine, nullptr);
  const std::vector<int32_t> prompt = Prompt(*served.model);
  const Served::Run whole = served.Generate(prompt, 30);
  ASSERT_NE(whole.end.final_state, nullptr);

  // 12 tokens, saved through the session manager, loaded, and 18 more.
  const Served::Run head = served.Generate(prompt, 12);
  const std::shared_ptr<const SequenceState> saved = head.end.final_state;
  ASSERT_NE(saved, nullptr);
  EXPECT_NE(saved->pinned_lease, nullptr) << "the engine handed out a pageable final state";
  EXPECT_TRUE(saved->bytes.empty());
  ASSERT_EQ(saved->view().size(), served.engine->state_bytes());
  absl::StatusOr<session::SaveReservation> reservation = served.sessions->Reserve({"", "chat"});
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  ASSERT_TRUE(served.sessions->Save(*reservation, *saved, 52).ok());
  reservation->Release();
  absl::StatusOr<session::LoadedSession> loaded = served.sessions->Load({"", "chat"});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->state->pinned_lease, nullptr) << "the session loaded into pageable memory";
  EXPECT_NE(loaded->state->view().data(), saved->view().data());
  EXPECT_EQ(Copy(loaded->state->view()), Copy(saved->view()));
  EXPECT_EQ(loaded->state->pending_token, saved->pending_token);
  EXPECT_EQ(loaded->num_tokens, 52);

  const Served::Run tail = served.Generate({}, 18, loaded->state);
  std::vector<SampledToken> joined = head.tokens;
  joined.insert(joined.end(), tail.tokens.begin(), tail.tokens.end());
  ExpectBitIdentical(joined, whole.tokens);
  ASSERT_NE(tail.end.final_state, nullptr);
  EXPECT_EQ(tail.end.final_state->pending_token, whole.end.final_state->pending_token);
  EXPECT_EQ(Copy(tail.end.final_state->view()), Copy(whole.end.final_state->view()))
      << "the resumed run's final state differs from the uninterrupted run's";

  // The same state in plain bytes (a state built by an API user) resumes the same way.
  auto plain = std::make_shared<SequenceState>();
  plain->bytes = Copy(saved->view());
  plain->pending_token = saved->pending_token;
  const Served::Run from_plain = served.Generate({}, 18, plain);
  ExpectBitIdentical(from_plain.tokens, tail.tokens);
  EXPECT_EQ(Copy(from_plain.end.final_state->view()), Copy(whole.end.final_state->view()));
}

TEST(PinnedStates, FinalStatesArePageableOnceThePinnedOnesAreAllLent) {
  Served served;
  ASSERT_NE(served.engine, nullptr);
  const std::vector<int32_t> prompt = Prompt(*served.model);
  std::vector<std::shared_ptr<const SequenceState>> held;
  // More than the scheduler's pinned final states (8), all held.
  for (int i = 0; i < 10; ++i) held.push_back(served.Generate(prompt, 3).end.final_state);
  int pinned = 0;
  for (const auto& state : held) {
    ASSERT_NE(state, nullptr);
    pinned += state->pinned_lease != nullptr ? 1 : 0;
    EXPECT_EQ(Copy(state->view()), Copy(held[0]->view()));
    EXPECT_EQ(state->pending_token, held[0]->pending_token);
  }
  EXPECT_EQ(pinned, 8);
  EXPECT_EQ(held.back()->pinned_lease, nullptr);
  EXPECT_EQ(held.back()->bytes.size(), served.engine->state_bytes());
  // One let go: the next final state is pinned again, in the buffer it gave back.
  const std::byte* const freed = held[0]->view().data();
  held.erase(held.begin());
  const std::shared_ptr<const SequenceState> next = served.Generate(prompt, 3).end.final_state;
  ASSERT_NE(next, nullptr);
  EXPECT_NE(next->pinned_lease, nullptr);
  EXPECT_EQ(next->view().data(), freed);
}

TEST(PinnedStates, AnInitialStateGoesBackToItsPoolOnceInTheSlot) {
  Served served;
  ASSERT_NE(served.engine, nullptr);
  const std::shared_ptr<const SequenceState> head =
      served.Generate(Prompt(*served.model), 4).end.final_state;
  ASSERT_NE(head, nullptr);
  std::shared_ptr<HostStatePool> pool = served.engine->MakeHostStatePool(1);
  std::shared_ptr<SequenceState> state = pool->Take();
  ASSERT_NE(state, nullptr);
  std::copy(head->view().begin(), head->view().end(), state->pinned.begin());
  state->pending_token = head->pending_token;
  GenerationRequest request;
  request.sampling.temperature = 0.0f;
  request.stopping.ignore_eos = true;
  request.stopping.max_new_tokens = 40;
  request.initial_state = std::move(state);
  absl::StatusOr<std::shared_ptr<GenerationStream>> stream =
      served.engine->Generate(std::move(request));
  ASSERT_TRUE(stream.ok()) << stream.status();
  StreamUpdate first = (*stream)->Next();  // a token: the state was written to a slot
  ASSERT_FALSE(first.tokens.empty() && first.end.has_value());
  EXPECT_EQ(pool->lent(), 0u) << "the request held its initial state after writing it";
  EXPECT_NE(pool->Take(), nullptr);
  EXPECT_TRUE((*stream)->Wait().end->status.ok());
}

TEST(PinnedStates, StatesOutliveTheEngineModelAndBackend) {
  std::shared_ptr<const SequenceState> final_state;
  std::shared_ptr<const SequenceState> loaded_state;
  std::shared_ptr<HostStatePool> pool;
  std::vector<std::byte> expected;
  {
    Served served;
    ASSERT_NE(served.engine, nullptr);
    final_state = served.Generate(Prompt(*served.model), 5).end.final_state;
    ASSERT_NE(final_state, nullptr);
    ASSERT_NE(final_state->pinned_lease, nullptr);
    expected = Copy(final_state->view());
    absl::StatusOr<session::SaveReservation> reservation = served.sessions->Reserve({"", "s"});
    ASSERT_TRUE(reservation.ok());
    ASSERT_TRUE(served.sessions->Save(*reservation, *final_state, 45).ok());
    reservation->Release();
    absl::StatusOr<session::LoadedSession> loaded = served.sessions->Load({"", "s"});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_NE(loaded->state->pinned_lease, nullptr);
    loaded_state = loaded->state;
    pool = served.engine->MakeHostStatePool(1);
  }  // engine, session manager, model and backend destroyed
  EXPECT_EQ(Copy(final_state->view()), expected);
  EXPECT_EQ(Copy(loaded_state->view()), expected);
  // The pool still lends (its allocator needs no backend object) and frees what it lent.
  std::shared_ptr<SequenceState> taken = pool->Take();
  ASSERT_NE(taken, nullptr);
  std::fill(taken->pinned.begin(), taken->pinned.end(), std::byte{1});
  pool.reset();
  taken.reset();
  final_state.reset();
  loaded_state.reset();
}

}  // namespace
}  // namespace hgrn2
