// SessionManager: sessions as the server uses them — load a saved state to resume from, save a
// final state under an id (one save per id at a time in this process; a compare-and-set on the
// revision across processes), export and import snapshots — over a SessionStore, checking every
// snapshot against the serving model.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/recycler.h"
#include "engine/model/model.h"
#include "engine/scheduler/host_state_pool.h"
#include "engine/scheduler/request.h"
#include "engine/session/session_store.h"
#include "engine/session/snapshot.h"

namespace hgrn2::session {

// A session read back for a request: the state to start from, how many tokens it holds and its
// revision (which a save of the same id then expects: SaveReservation::Resumed).
struct LoadedSession {
  std::shared_ptr<const SequenceState> state;
  int64_t num_tokens = 0;
  uint64_t revision = 0;
};

// What a save may replace (GenerateRequest's save_if_revision and save_overwrite). By default a
// request that resumed the id it saves saves only while the session is still at the revision it
// resumed (ABORTED otherwise: another request saved it in between), and any other save replaces
// whatever is there.
struct SaveOptions {
  // Save only if the session is at this revision now; 0: only if there is no such session.
  std::optional<uint64_t> if_revision;
  // Replace whatever is there, even when this request resumed an older revision of the same id.
  bool overwrite = false;
};

// Counters beside the store's own.
struct SessionManagerStats {
  int64_t export_bytes = 0;
  int64_t import_bytes = 0;
  int64_t save_conflicts = 0;  // saves refused with ABORTED
};

class SessionManager;

// The right to save one session id, held from a request's start to its end so two requests of
// this process cannot save the same id at once, and what the save may replace. Released when
// destroyed.
class SaveReservation {
 public:
  SaveReservation() = default;
  SaveReservation(SaveReservation&& other) noexcept { *this = std::move(other); }
  SaveReservation& operator=(SaveReservation&& other) noexcept;
  ~SaveReservation() { Release(); }

  const SessionKey& key() const { return key_; }
  bool held() const { return manager_ != nullptr; }
  // The request resumed `resumed` at `revision`: when that is the id this reservation saves, the
  // save expects that revision (unless SaveOptions said otherwise). Nothing when not held.
  void Resumed(const SessionKey& resumed, uint64_t revision);
  // What the save will require of the stored session.
  const PutCondition& condition() const { return condition_; }
  void Release();

 private:
  friend class SessionManager;
  SaveReservation(SessionManager* manager, SessionKey key, const SaveOptions& options);

  SessionManager* manager_ = nullptr;
  SessionKey key_;
  PutCondition condition_;
  bool from_options_ = false;  // condition_ was set by SaveOptions: Resumed leaves it
  bool from_resume_ = false;   // condition_ is the resumed revision (for the conflict's message)
};

// Thread-safety: any thread; the store's I/O blocks the calling thread.
class SessionManager {
 public:
  // `expected` describes the serving model's states (fingerprint, dtype, sizes); snapshots of
  // anything else are refused. With `host_states` (Engine::MakeHostStatePool), Load checks and
  // copies a snapshot's state into one of its page-locked buffers in one pass, and the engine
  // writes it to the device from there without another copy; when all are lent, or without it,
  // Load checks, then copies into pageable memory.
  SessionManager(std::unique_ptr<SessionStore> store, SnapshotExpectation expected,
                 std::shared_ptr<HostStatePool> host_states = nullptr);
  // Loads that may hold a page-locked state at once: the size of the pool to give.
  static constexpr size_t kHostStatesForLoads = 4;

  // What a server serving `model` with `state_dtype` states accepts.
  static SnapshotExpectation ExpectationFor(const Model& model, DType state_dtype);
  // The largest snapshot of such a model (header and state).
  static size_t MaxSnapshotBytes(const SnapshotExpectation& expected);

  // NOT_FOUND when there is no such session; FAILED_PRECONDITION when it was saved by another
  // model; DATA_LOSS / INVALID_ARGUMENT when the stored bytes are damaged.
  absl::StatusOr<LoadedSession> Load(const SessionKey& key);
  // ABORTED while another request of this process holds the id.
  absl::StatusOr<SaveReservation> Reserve(const SessionKey& key, const SaveOptions& options = {});
  // Stores `state` (after `num_tokens` tokens, the pending one included) under the reserved id as
  // its next revision, if the stored session meets the reservation's condition; durable as the
  // store is when this returns OK. ABORTED naming both revisions when another request saved the
  // session since the revision this one expects; nothing is saved then.
  absl::StatusOr<SessionRecord> Save(const SaveReservation& reservation, const SequenceState& state,
                                     int64_t num_tokens);
  // The stored snapshot, as bytes to send (its header carries the revision).
  absl::StatusOr<std::shared_ptr<const std::string>> Export(const SessionKey& key);
  // Checks `snapshot` completely (format, checksums, model) and stores it under `key`; nothing is
  // stored when it fails. It keeps its own revision where that is above the stored session's (a
  // session moved between stores keeps its number), else it gets the next one. `if_revision`: as
  // SaveOptions::if_revision. ABORTED while a request is saving the same id, or when the
  // condition fails.
  absl::StatusOr<SessionRecord> Import(const SessionKey& key, std::string snapshot,
                                       std::optional<uint64_t> if_revision = std::nullopt);
  absl::StatusOr<SessionRecord> Info(const SessionKey& key);
  absl::Status Delete(const SessionKey& key);
  // SessionStore::List.
  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after, size_t limit);

  SessionStoreStats StoreStats() const { return store_->Stats(); }
  SessionManagerStats Stats() const;
  const SnapshotExpectation& expected() const { return expected_; }

 private:
  friend class SaveReservation;
  void Unreserve(const SessionKey& key);
  // Stores `bytes` (revision `own` or above) under `key` as its next revision: with `condition`,
  // or, for kAny, after reading the stored revision, again while other saves land in between.
  absl::StatusOr<SessionRecord> StoreNextRevision(const SessionKey& key,
                                                  std::shared_ptr<std::string> bytes,
                                                  const PutCondition& condition);
  void CountConflict();

  std::unique_ptr<SessionStore> store_;
  const SnapshotExpectation expected_;
  // Snapshot blobs for saves and states for loads, their memory reused once stores and requests
  // let go of them (a save or load into fresh memory spends most of its time in page faults).
  static constexpr size_t kKeptBuffers = 4;
  Recycler<SnapshotBuffer> blobs_{kKeptBuffers};
  Recycler<SequenceState> loaded_states_{kKeptBuffers};
  std::shared_ptr<HostStatePool> host_states_;  // null: loads go to loaded_states_
  mutable std::mutex mutex_;
  std::set<std::pair<std::string, std::string>> reserved_;  // (tenant, id) being saved
  SessionManagerStats stats_;
};

}  // namespace hgrn2::session
