// SessionManager: loads and saves sessions through a store, one save per id at a time.
#include "engine/session/session_manager.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/base/status_macros.h"

namespace hgrn2::session {

SaveReservation& SaveReservation::operator=(SaveReservation&& other) noexcept {
  if (this != &other) {
    Release();
    manager_ = std::exchange(other.manager_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

void SaveReservation::Release() {
  if (manager_ == nullptr) return;
  std::exchange(manager_, nullptr)->Unreserve(key_);
}

SessionManager::SessionManager(std::unique_ptr<SessionStore> store, SnapshotExpectation expected)
    : store_(std::move(store)), expected_(std::move(expected)) {}

SnapshotExpectation SessionManager::ExpectationFor(const Model& model, DType state_dtype) {
  return SnapshotExpectation{model.fingerprint(), StateLayout::For(model.config(), state_dtype)};
}

size_t SessionManager::MaxSnapshotBytes(const SnapshotExpectation& expected) {
  return kSnapshotHeaderBytes + static_cast<size_t>(expected.layout.state_bytes());
}

absl::StatusOr<LoadedSession> SessionManager::Load(const SessionKey& key) {
  HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> bytes, store_->Get(key));
  HGRN2_ASSIGN_OR_RETURN(Snapshot snapshot, Parse(*bytes, expected_));
  const int64_t num_tokens = static_cast<int64_t>(snapshot.num_tokens);
  return LoadedSession{std::make_shared<const SequenceState>(std::move(snapshot.state)),
                       num_tokens};
}

absl::StatusOr<SaveReservation> SessionManager::Reserve(const SessionKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!reserved_.emplace(key.tenant, key.id).second) {
    ++stats_.save_conflicts;
    return absl::AbortedError("another request is saving this session; try again when it ends");
  }
  return SaveReservation(this, key);
}

void SessionManager::Unreserve(const SessionKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  reserved_.erase({key.tenant, key.id});
}

absl::StatusOr<SessionRecord> SessionManager::Save(const SaveReservation& reservation,
                                                   const SequenceState& state, int64_t num_tokens) {
  if (!reservation.held()) return absl::FailedPreconditionError("saving without a reservation");
  auto bytes = std::make_shared<const std::string>(
      Serialize(expected_.model_fingerprint, expected_.layout, static_cast<uint64_t>(num_tokens),
                absl::Now(), state.pending_token, state.bytes));
  HGRN2_RETURN_IF_ERROR(store_->Put(reservation.key(), bytes));
  return store_->Info(reservation.key());
}

absl::StatusOr<std::shared_ptr<const std::string>> SessionManager::Export(const SessionKey& key) {
  HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> bytes, store_->Get(key));
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.export_bytes += static_cast<int64_t>(bytes->size());
  return bytes;
}

absl::StatusOr<SessionRecord> SessionManager::Import(const SessionKey& key, std::string snapshot) {
  // Checked in place (ParseView): the bytes are stored as they came, so nothing is copied.
  HGRN2_RETURN_IF_ERROR(ParseView(snapshot, expected_).status());
  HGRN2_ASSIGN_OR_RETURN(SaveReservation reservation, Reserve(key));
  const int64_t size = static_cast<int64_t>(snapshot.size());
  HGRN2_RETURN_IF_ERROR(store_->Put(key, std::make_shared<const std::string>(std::move(snapshot))));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.import_bytes += size;
  }
  return store_->Info(key);
}

absl::StatusOr<SessionRecord> SessionManager::Info(const SessionKey& key) {
  return store_->Info(key);
}

absl::Status SessionManager::Delete(const SessionKey& key) { return store_->Delete(key); }

absl::StatusOr<SessionPage> SessionManager::List(absl::string_view tenant, absl::string_view after,
                                                 size_t limit) {
  return store_->List(tenant, after, limit);
}

SessionManagerStats SessionManager::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace hgrn2::session
