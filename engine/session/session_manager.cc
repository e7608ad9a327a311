// SessionManager: loads and saves sessions through a store, one save per id at a time in this
// process, each save the session's next revision, stored only if the stored session is still at
// the revision the save expects.
#include "engine/session/session_manager.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/base/status_macros.h"

namespace hgrn2::session {

namespace {

// How often a save without a condition reads the stored revision again when other saves keep
// landing between its read and its write.
constexpr int kUnconditionalAttempts = 8;

}  // namespace

SaveReservation::SaveReservation(SessionManager* manager, SessionKey key,
                                 const SaveOptions& options)
    : manager_(manager), key_(std::move(key)) {
  if (options.if_revision.has_value()) {
    condition_ = *options.if_revision == 0 ? PutCondition::Absent()
                                           : PutCondition::AtRevision(*options.if_revision);
    from_options_ = true;
  } else if (options.overwrite) {
    from_options_ = true;  // PutCondition::Any()
  }
}

SaveReservation& SaveReservation::operator=(SaveReservation&& other) noexcept {
  if (this != &other) {
    Release();
    manager_ = std::exchange(other.manager_, nullptr);
    key_ = std::move(other.key_);
    condition_ = other.condition_;
    from_options_ = other.from_options_;
    from_resume_ = other.from_resume_;
  }
  return *this;
}

void SaveReservation::Resumed(const SessionKey& resumed, uint64_t revision) {
  if (!held() || from_options_ || !(resumed == key_)) return;
  condition_ = PutCondition::AtRevision(revision);
  from_resume_ = true;
}

void SaveReservation::Release() {
  if (manager_ == nullptr) return;
  std::exchange(manager_, nullptr)->Unreserve(key_);
}

SessionManager::SessionManager(std::unique_ptr<SessionStore> store, SnapshotExpectation expected,
                               std::shared_ptr<HostStatePool> host_states)
    : store_(std::move(store)),
      expected_(std::move(expected)),
      host_states_(std::move(host_states)) {}

SnapshotExpectation SessionManager::ExpectationFor(const Model& model, DType state_dtype) {
  return SnapshotExpectation{model.fingerprint(), StateLayout::For(model.config(), state_dtype)};
}

size_t SessionManager::MaxSnapshotBytes(const SnapshotExpectation& expected) {
  return kSnapshotHeaderBytes + static_cast<size_t>(expected.layout.state_bytes());
}

absl::StatusOr<LoadedSession> SessionManager::Load(const SessionKey& key) {
  HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> bytes, store_->Get(key));
  std::shared_ptr<SequenceState> pinned =
      host_states_ != nullptr && host_states_->state_bytes() == expected_.layout.state_bytes()
          ? host_states_->Take()
          : nullptr;
  if (pinned != nullptr) {
    // Checked as it is copied, once, into memory the engine writes to the device directly.
    HGRN2_ASSIGN_OR_RETURN(SnapshotHeader header, ParseInto(*bytes, expected_, pinned->pinned));
    pinned->pending_token = header.pending_token;
    return LoadedSession{std::move(pinned), static_cast<int64_t>(header.num_tokens),
                         header.revision};
  }
  // Checked in place, then copied once into a recycled state.
  HGRN2_ASSIGN_OR_RETURN(SnapshotView view, ParseView(*bytes, expected_));
  std::shared_ptr<SequenceState> state = loaded_states_.Take();
  CopyState(view, *state);
  return LoadedSession{std::move(state), static_cast<int64_t>(view.header.num_tokens),
                       view.header.revision};
}

absl::StatusOr<SaveReservation> SessionManager::Reserve(const SessionKey& key,
                                                        const SaveOptions& options) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!reserved_.emplace(key.tenant, key.id).second) {
    ++stats_.save_conflicts;
    return absl::AbortedError("another request is saving this session; try again when it ends");
  }
  return SaveReservation(this, key, options);
}

void SessionManager::CountConflict() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.save_conflicts;
}

absl::StatusOr<SessionRecord> SessionManager::StoreNextRevision(const SessionKey& key,
                                                                std::shared_ptr<std::string> bytes,
                                                                const PutCondition& condition) {
  HGRN2_ASSIGN_OR_RETURN(SnapshotHeader header, ParseHeader(*bytes));
  const uint64_t own = header.revision;
  // Stores `bytes` as revision max(next, own) if the session meets `put_if`.
  auto put = [&](const PutCondition& put_if, uint64_t next) -> absl::StatusOr<SessionRecord> {
    const uint64_t revision = std::max(next, own);
    if (revision != header.revision) {
      // A store keeps the bytes only when it stored them: after a refusal they are ours again.
      if (bytes.use_count() > 1) bytes = std::make_shared<std::string>(*bytes);
      HGRN2_RETURN_IF_ERROR(SetRevision(*bytes, revision));
      header.revision = revision;
    }
    return store_->Put(key, bytes, put_if);
  };
  auto after = [&](uint64_t revision) -> absl::StatusOr<uint64_t> {
    if (revision == std::numeric_limits<uint64_t>::max()) {
      return absl::OutOfRangeError(
          absl::StrCat("session \"", key.id, "\" is at the last revision there is"));
    }
    return revision + 1;
  };
  if (condition.kind != PutCondition::Kind::kAny) {
    uint64_t next = 1;
    if (condition.kind == PutCondition::Kind::kRevision) {
      HGRN2_ASSIGN_OR_RETURN(next, after(condition.revision));
    }
    absl::StatusOr<SessionRecord> record = put(condition, next);
    if (absl::IsAborted(record.status())) CountConflict();
    return record;
  }
  // No condition: the next revision of whatever is stored, which must still be stored when this
  // one lands (else it is read again), so that revisions only go up.
  for (int attempt = 0; attempt < kUnconditionalAttempts; ++attempt) {
    absl::StatusOr<SessionRecord> current = store_->Info(key);
    PutCondition put_if = PutCondition::Absent();
    uint64_t next = 1;
    if (current.ok()) {
      put_if = PutCondition::AtRevision(current->revision);
      HGRN2_ASSIGN_OR_RETURN(next, after(current->revision));
    } else if (absl::IsInvalidArgument(current.status()) || absl::IsDataLoss(current.status())) {
      put_if = PutCondition::Any();  // damaged: no revision to compare, replaced as it is
    } else if (!absl::IsNotFound(current.status())) {
      return current.status();
    }
    absl::StatusOr<SessionRecord> record = put(put_if, next);
    if (!absl::IsAborted(record.status())) return record;
  }
  CountConflict();
  return absl::AbortedError(
      absl::StrCat("session \"", key.id,
                   "\": other saves kept landing while this one read the revision to follow (",
                   kUnconditionalAttempts, " times); nothing was saved"));
}

void SessionManager::Unreserve(const SessionKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  reserved_.erase({key.tenant, key.id});
}

absl::StatusOr<SessionRecord> SessionManager::Save(const SaveReservation& reservation,
                                                   const SequenceState& state, int64_t num_tokens) {
  if (!reservation.held()) return absl::FailedPreconditionError("saving without a reservation");
  const PutCondition& condition = reservation.condition();
  // Serialized as the revision it most likely gets, so that the header is not rewritten.
  const uint64_t likely = condition.kind == PutCondition::Kind::kRevision &&
                                  condition.revision < std::numeric_limits<uint64_t>::max()
                              ? condition.revision + 1
                              : 1;
  std::shared_ptr<SnapshotBuffer> blob = blobs_.Take();
  std::shared_ptr<std::string> bytes(blob, &blob->bytes);  // the store holds the buffer
  SerializeInto(*bytes, expected_.model_fingerprint, expected_.layout,
                static_cast<uint64_t>(num_tokens), absl::Now(), state.pending_token, state.view(),
                likely);
  absl::StatusOr<SessionRecord> saved =
      StoreNextRevision(reservation.key(), std::move(bytes), condition);
  if (absl::IsAborted(saved.status()) && reservation.from_resume_) {
    return absl::AbortedError(absl::StrCat(saved.status().message(),
                                           " (resume the session again and retry, or set "
                                           "save_overwrite to replace it)"));
  }
  return saved;
}

absl::StatusOr<std::shared_ptr<const std::string>> SessionManager::Export(const SessionKey& key) {
  HGRN2_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> bytes, store_->Get(key));
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.export_bytes += static_cast<int64_t>(bytes->size());
  return bytes;
}

absl::StatusOr<SessionRecord> SessionManager::Import(const SessionKey& key, std::string snapshot,
                                                     std::optional<uint64_t> if_revision) {
  // Checked in place (ParseView): the bytes are stored as they came (but for the revision in
  // their header), so nothing is copied.
  HGRN2_RETURN_IF_ERROR(ParseView(snapshot, expected_).status());
  SaveOptions options;
  options.if_revision = if_revision;
  HGRN2_ASSIGN_OR_RETURN(SaveReservation reservation, Reserve(key, options));
  const int64_t size = static_cast<int64_t>(snapshot.size());
  absl::StatusOr<SessionRecord> record = StoreNextRevision(
      key, std::make_shared<std::string>(std::move(snapshot)), reservation.condition());
  if (!record.ok()) return record;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.import_bytes += size;
  return record;
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
