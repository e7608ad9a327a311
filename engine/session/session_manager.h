// SessionManager: sessions as the server uses them — load a saved state to resume from, save a
// final state under an id (one save per id at a time), export and import snapshots — over a
// SessionStore, checking every snapshot against the serving model.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "engine/scheduler/request.h"
#include "engine/session/session_store.h"
#include "engine/session/snapshot.h"

namespace hgrn2::session {

// A session read back for a request: the state to start from and how many tokens it holds.
struct LoadedSession {
  std::shared_ptr<const SequenceState> state;
  int64_t num_tokens = 0;
};

// Counters beside the store's own.
struct SessionManagerStats {
  int64_t export_bytes = 0;
  int64_t import_bytes = 0;
  int64_t save_conflicts = 0;  // saves refused with ABORTED
};

class SessionManager;

// The right to save one session id, held from a request's start to its end so two requests
// cannot save the same id at once. Released when destroyed.
class SaveReservation {
 public:
  SaveReservation() = default;
  SaveReservation(SaveReservation&& other) noexcept { *this = std::move(other); }
  SaveReservation& operator=(SaveReservation&& other) noexcept;
  ~SaveReservation() { Release(); }

  const SessionKey& key() const { return key_; }
  bool held() const { return manager_ != nullptr; }
  void Release();

 private:
  friend class SessionManager;
  SaveReservation(SessionManager* manager, SessionKey key)
      : manager_(manager), key_(std::move(key)) {}

  SessionManager* manager_ = nullptr;
  SessionKey key_;
};

// Thread-safety: any thread; the store's I/O blocks the calling thread.
class SessionManager {
 public:
  // `expected` describes the serving model's states (fingerprint, dtype, sizes); snapshots of
  // anything else are refused.
  SessionManager(std::unique_ptr<SessionStore> store, SnapshotExpectation expected);

  // What a server serving `model` with `state_dtype` states accepts.
  static SnapshotExpectation ExpectationFor(const Model& model, DType state_dtype);
  // The largest snapshot of such a model (header and state).
  static size_t MaxSnapshotBytes(const SnapshotExpectation& expected);

  // NOT_FOUND when there is no such session; FAILED_PRECONDITION when it was saved by another
  // model; DATA_LOSS / INVALID_ARGUMENT when the stored bytes are damaged.
  absl::StatusOr<LoadedSession> Load(const SessionKey& key);
  // ABORTED while another request holds the id.
  absl::StatusOr<SaveReservation> Reserve(const SessionKey& key);
  // Stores `state` (after `num_tokens` tokens, the pending one included) under the reserved id;
  // durable as the store is when this returns OK.
  absl::StatusOr<SessionRecord> Save(const SaveReservation& reservation, const SequenceState& state,
                                     int64_t num_tokens);
  // The stored snapshot, as bytes to send.
  absl::StatusOr<std::shared_ptr<const std::string>> Export(const SessionKey& key);
  // Checks `snapshot` completely (format, checksums, model) and stores it under `key`; nothing is
  // stored when it fails. ABORTED while a request is saving the same id.
  absl::StatusOr<SessionRecord> Import(const SessionKey& key, std::string snapshot);
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

  std::unique_ptr<SessionStore> store_;
  const SnapshotExpectation expected_;
  mutable std::mutex mutex_;
  std::set<std::pair<std::string, std::string>> reserved_;  // (tenant, id) being saved
  SessionManagerStats stats_;
};

}  // namespace hgrn2::session
