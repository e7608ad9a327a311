// SessionManager's revisions: a continuation expects the revision it resumed, SaveOptions replace
// that, a save without a condition reads the stored revision and tries again when another save
// lands between its read and its write (forced here by a store that lets one in), imports keep
// their revision when it is the higher one, and refusals are counted as conflicts.
#include "engine/session/session_manager.h"

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/session_test_support.h"
#include "tests/support/test_support.h"

namespace hgrn2::session {
namespace {

using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::TestExpectation;
using ::hgrn2::testing::TestSnapshot;
using ::hgrn2::testing::TestSnapshotBytes;

// A memory store that runs `before_put` (once, then forgets it) before each Put reaches it: the
// save of another replica landing between a save's read of the revision and its write.
class InterleavingStore final : public SessionStore {
 public:
  InterleavingStore() : inner_(*MakeMemorySessionStore(SessionStoreOptions{})) {}

  std::function<void(SessionStore&)> before_put;
  int puts = 0;

  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot,
                                    const PutCondition& condition) override {
    ++puts;
    if (before_put) std::exchange(before_put, nullptr)(*inner_);
    return inner_->Put(key, std::move(snapshot), condition);
  }
  absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) override {
    return inner_->Get(key);
  }
  absl::StatusOr<SessionRecord> Info(const SessionKey& key) override { return inner_->Info(key); }
  absl::Status Delete(const SessionKey& key) override { return inner_->Delete(key); }
  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                   size_t limit) override {
    return inner_->List(tenant, after, limit);
  }
  SessionStoreStats Stats() const override { return inner_->Stats(); }
  std::string Describe() const override { return "interleaving"; }

 private:
  std::unique_ptr<SessionStore> inner_;
};

class SessionManagerTest : public ::testing::Test {
 protected:
  SessionManagerTest() {
    auto store = std::make_unique<InterleavingStore>();
    store_ = store.get();
    manager_ = std::make_unique<SessionManager>(std::move(store), TestExpectation());
  }
  // Saves TestSnapshot(seed)'s state under `key` through a reservation with `options`, after
  // resuming `resumed` at `revision` when given.
  absl::StatusOr<SessionRecord> Save(const SessionKey& key, uint64_t seed,
                                     const SaveOptions& options = {},
                                     const SessionKey* resumed = nullptr, uint64_t revision = 0) {
    absl::StatusOr<SaveReservation> reservation = manager_->Reserve(key, options);
    if (!reservation.ok()) return reservation.status();
    if (resumed != nullptr) reservation->Resumed(*resumed, revision);
    const Snapshot snapshot = TestSnapshot(seed);
    return manager_->Save(*reservation, snapshot.state, static_cast<int64_t>(snapshot.num_tokens));
  }
  // Another replica's save of `key`, straight into the store, as revision `revision`.
  static void SaveElsewhere(SessionStore& store, const SessionKey& key, uint64_t revision) {
    ASSERT_TRUE(
        store
            .Put(key,
                 std::make_shared<const std::string>(TestSnapshotBytes(99, DType::kF32, revision)),
                 revision == 1 ? PutCondition::Absent() : PutCondition::AtRevision(revision - 1))
            .ok());
  }

  InterleavingStore* store_;
  std::unique_ptr<SessionManager> manager_;
};

TEST_F(SessionManagerTest, AContinuationExpectsTheRevisionItResumed) {
  const SessionKey key{"", "chat"};
  ASSERT_EQ(Save(key, 1)->revision, 1u);
  absl::StatusOr<LoadedSession> loaded = manager_->Load(key);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->revision, 1u);
  EXPECT_EQ(loaded->num_tokens, 101);
  ASSERT_EQ(Save(key, 2, {}, &key, loaded->revision)->revision, 2u);
  // Resumed revision 1 again, but revision 2 is there: refused, naming both, with the way out.
  ExpectError(Save(key, 3, {}, &key, 1).status(), absl::StatusCode::kAborted,
              {"session \"chat\" is at revision 2, not revision 1", "nothing was saved",
               "resume the session again and retry, or set save_overwrite"});
  EXPECT_EQ(manager_->Load(key)->revision, 2u);
  EXPECT_EQ(manager_->Stats().save_conflicts, 1);
  // save_overwrite: the last save wins, as the next revision.
  SaveOptions overwrite;
  overwrite.overwrite = true;
  EXPECT_EQ(Save(key, 3, overwrite, &key, 1)->revision, 3u);
  // Resuming another id leaves a save unconditional (a fork replaces what is there).
  const SessionKey other{"", "other"};
  EXPECT_EQ(Save(other, 4, {}, &key, 3)->revision, 1u);
  EXPECT_EQ(Save(other, 5, {}, &key, 3)->revision, 2u);
  // A tenant is part of the id: resuming another tenant's "chat" sets no condition here.
  const SessionKey theirs{"t", "chat"};
  EXPECT_EQ(Save(theirs, 6, {}, &key, 3)->revision, 1u);
}

TEST_F(SessionManagerTest, SaveIfRevisionReplacesTheDefault) {
  const SessionKey key{"", "s"};
  SaveOptions only_new;
  only_new.if_revision = 0;
  EXPECT_EQ(Save(key, 1, only_new)->revision, 1u);
  ExpectError(Save(key, 2, only_new).status(), absl::StatusCode::kAborted,
              {"already exists (revision 1)"});
  SaveOptions at_one;
  at_one.if_revision = 1;
  // It wins over the revision resumed (a stale 7 here).
  EXPECT_EQ(Save(key, 2, at_one, &key, 7)->revision, 2u);
  ExpectError(Save(key, 3, at_one).status(), absl::StatusCode::kAborted,
              {"is at revision 2, not revision 1"});
  EXPECT_EQ(manager_->Stats().save_conflicts, 2);
}

// A save without a condition reads the revision, then compare-and-sets the next one; when another
// replica's save lands in between, it reads again and saves the one after that: revisions only go
// up and no save is lost.
TEST_F(SessionManagerTest, AnUnconditionalSaveReadsAgainWhenAnotherLandsInBetween) {
  const SessionKey key{"", "busy"};
  ASSERT_EQ(Save(key, 1)->revision, 1u);
  store_->puts = 0;
  store_->before_put = [&](SessionStore& store) { SaveElsewhere(store, key, 2); };
  absl::StatusOr<SessionRecord> saved = Save(key, 2);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->revision, 3u);
  EXPECT_EQ(store_->puts, 2);  // refused once, then stored
  EXPECT_EQ(manager_->Load(key)->num_tokens, 102);
  // A new id that another replica creates in between.
  const SessionKey fresh{"", "fresh"};
  store_->before_put = [&](SessionStore& store) { SaveElsewhere(store, fresh, 1); };
  EXPECT_EQ(Save(fresh, 3)->revision, 2u);
}

// An import keeps its snapshot's revision when that is above the stored session's, else takes
// the next one; if_revision makes it a compare-and-set; a snapshot of before revisions (version 1)
// becomes revision 1.
TEST_F(SessionManagerTest, ImportsKeepTheHigherRevision) {
  const SessionKey key{"", "moved"};
  EXPECT_EQ(manager_->Import(key, TestSnapshotBytes(1, DType::kF32, 7))->revision, 7u);
  EXPECT_EQ(manager_->Import(key, TestSnapshotBytes(1, DType::kF32, 3))->revision, 8u);
  EXPECT_EQ(manager_->Import(key, TestSnapshotBytes(1, DType::kF32, 20))->revision, 20u);
  ExpectError(manager_->Import(key, TestSnapshotBytes(1), 19).status(), absl::StatusCode::kAborted,
              {"is at revision 20, not revision 19"});
  EXPECT_EQ(manager_->Import(key, TestSnapshotBytes(1), 20)->revision, 21u);
  const SessionKey old{"", "old"};
  EXPECT_EQ(manager_->Import(old, TestSnapshotBytes(2))->revision, 1u);
  absl::StatusOr<std::shared_ptr<const std::string>> exported = manager_->Export(old);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(ParseHeader(**exported)->revision, 1u);
  EXPECT_EQ(ParseHeader(**exported)->format_version, kSnapshotFormatVersion);
}

}  // namespace
}  // namespace hgrn2::session
