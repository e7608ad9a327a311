// Session ids, store options, the checks every store makes on Put, paging a listing, and
// MakeSessionStore.
#include "engine/session/session_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/session/store_internal.h"

namespace hgrn2::session {

absl::Status ValidateSessionId(absl::string_view id) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id must be 1 to 128 bytes, got ", id.size()));
  }
  if (id.front() == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id must not start with '.', got \"", id, "\""));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
    if (!allowed) {
      return absl::InvalidArgumentError(
          absl::StrFormat("session_id may hold only [A-Za-z0-9._:-]; byte %d is 0x%02x", i,
                          static_cast<unsigned char>(c)));
    }
  }
  return absl::OkStatus();
}

absl::Status SessionStoreOptions::Validate() const {
  if (kinds.empty()) return absl::InvalidArgumentError("session store kinds: none given");
  for (size_t i = 0; i < kinds.size(); ++i) {
    const std::string& kind = kinds[i];
    if (kind != "memory" && kind != "dir" && kind != "redis") {
      return absl::InvalidArgumentError(absl::StrCat("session store kinds: unknown kind \"", kind,
                                                     "\" (expected memory, dir or redis)"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (kinds[j] == kind) {
        return absl::InvalidArgumentError(
            absl::StrCat("session store kinds: \"", kind, "\" appears twice"));
      }
    }
    if (kind == "dir" && dir.empty()) {
      return absl::InvalidArgumentError("session store dir: required by the dir store");
    }
    if (kind == "redis" && redis_url.empty()) {
      return absl::InvalidArgumentError("session store redis_url: required by the redis store");
    }
  }
  if (memory_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("session store memory_bytes must be positive, got ", memory_bytes));
  }
  if (dir_max_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session store dir_max_bytes must be 0 (no cap) or positive, got ", dir_max_bytes));
  }
  if (ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session store ttl must be 0 (none) or positive, got ", absl::FormatDuration(ttl)));
  }
  if (max_session_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("session store max_session_bytes must be positive, got ", max_session_bytes));
  }
  if (redis_timeout <= absl::ZeroDuration() || redis_connections <= 0) {
    return absl::InvalidArgumentError(
        "session store redis_timeout and redis_connections must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SessionStore>> MakeSessionStore(const SessionStoreOptions& options) {
  if (absl::Status valid = options.Validate(); !valid.ok()) return valid;
  std::vector<std::unique_ptr<SessionStore>> stores;
  for (const std::string& kind : options.kinds) {
    absl::StatusOr<std::unique_ptr<SessionStore>> store =
        kind == "memory" ? MakeMemorySessionStore(options)
        : kind == "dir"  ? MakeDirSessionStore(options)
                         : MakeRedisSessionStore(options);
    if (!store.ok()) return store.status();
    stores.push_back(*std::move(store));
  }
  if (stores.size() == 1) return std::move(stores.front());
  return MakeChainSessionStore(std::move(stores));
}

namespace internal {

absl::StatusOr<SnapshotHeader> CheckPut(const SessionKey& key, const std::string* snapshot,
                                        const PutCondition& condition, int64_t max_session_bytes,
                                        absl::string_view store) {
  if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
  if (snapshot == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(store, ": no snapshot to store"));
  }
  if (snapshot->size() > static_cast<uint64_t>(max_session_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(store, ": a snapshot of ", snapshot->size(),
                                                     " bytes is larger than the store takes (",
                                                     max_session_bytes, ")"));
  }
  absl::StatusOr<SnapshotHeader> header = ParseHeader(*snapshot);
  if (!header.ok()) return header.status();
  if (header->total_bytes() != snapshot->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot of ", snapshot->size(), " bytes, its header says ", header->total_bytes()));
  }
  const bool goes_up = condition.kind == PutCondition::Kind::kRevision
                           ? header->revision > condition.revision
                           : condition.kind != PutCondition::Kind::kAbsent || header->revision > 0;
  if (!goes_up) {
    return absl::InvalidArgumentError(absl::StrCat(store, ": a snapshot of revision ",
                                                   header->revision, " cannot replace ",
                                                   condition.ToString()));
  }
  return header;
}

SessionRecord MakeRecord(const SessionKey& key, const SnapshotHeader& header, uint64_t size_bytes,
                         absl::Time expires_at) {
  SessionRecord record;
  record.key = key;
  record.size_bytes = size_bytes;
  record.num_tokens = header.num_tokens;
  record.saved_at = header.saved_at;
  record.expires_at = expires_at;
  record.model_fingerprint = header.model_fingerprint.ToHex();
  record.state_dtype = StateDTypeName(header.layout.dtype);
  record.header_checksum = header.header_checksum;
  record.revision = header.revision;
  return record;
}

absl::StatusOr<SessionPage> ReadPage(
    const std::vector<std::string>& sorted_ids, absl::string_view after, size_t limit,
    const std::function<absl::StatusOr<std::optional<SessionRecord>>(const std::string& id)>&
        read) {
  limit = std::max<size_t>(limit, 1);
  SessionPage page;
  auto it = std::upper_bound(sorted_ids.begin(), sorted_ids.end(), after,
                             [](absl::string_view a, const std::string& b) { return a < b; });
  for (; it != sorted_ids.end() && page.records.size() < limit; ++it) {
    absl::StatusOr<std::optional<SessionRecord>> record = read(*it);
    if (!record.ok()) return record.status();
    if (record->has_value()) page.records.push_back(**std::move(record));
    page.next_after = *it;
  }
  if (it == sorted_ids.end()) page.next_after.clear();
  return page;
}

absl::Status SessionNotFound(const SessionKey& key) {
  return absl::NotFoundError(absl::StrCat("session \"", key.id, "\" not found"));
}

absl::Status CheckCondition(const SessionKey& key, const PutCondition& condition,
                            std::optional<uint64_t> current) {
  switch (condition.kind) {
    case PutCondition::Kind::kAny:
      return absl::OkStatus();
    case PutCondition::Kind::kAbsent:
      if (!current.has_value()) return absl::OkStatus();
      return absl::AbortedError(absl::StrCat("session \"", key.id, "\" already exists (revision ",
                                             *current,
                                             "), and this save was only for a new "
                                             "session; nothing was saved"));
    case PutCondition::Kind::kRevision:
      if (current == condition.revision) return absl::OkStatus();
      if (!current.has_value()) {
        return absl::AbortedError(absl::StrCat(
            "session \"", key.id, "\" no longer exists (deleted or expired since revision ",
            condition.revision, ", which this save expected); nothing was saved"));
      }
      return absl::AbortedError(absl::StrCat("session \"", key.id, "\" is at revision ", *current,
                                             ", not revision ", condition.revision,
                                             " as this save expected: another request saved it "
                                             "in between; nothing was saved"));
  }
  return absl::InternalError("unknown PutCondition kind");
}

}  // namespace internal

std::string PutCondition::ToString() const {
  switch (kind) {
    case Kind::kAny:
      return "any version";
    case Kind::kAbsent:
      return "no session";
    case Kind::kRevision:
      return absl::StrCat("revision ", revision);
  }
  return "?";
}
}  // namespace hgrn2::session
