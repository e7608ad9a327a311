// What the session stores share: checking a snapshot on Put, records from headers, counters.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "engine/session/session_store.h"
#include "engine/session/snapshot.h"

namespace hgrn2::session::internal {

// Checks what every store checks on Put: a valid id, a snapshot, a header that parses, a size
// that matches the header, at most `max_session_bytes`, a revision that goes up from what
// `condition` expects. Returns the header. `store` prefixes the messages.
absl::StatusOr<SnapshotHeader> CheckPut(const SessionKey& key, const std::string* snapshot,
                                        const PutCondition& condition, int64_t max_session_bytes,
                                        absl::string_view store);

// The record of a stored snapshot.
SessionRecord MakeRecord(const SessionKey& key, const SnapshotHeader& header, uint64_t size_bytes,
                         absl::Time expires_at);

// Tenants are arbitrary bytes; stores name them in hex (file names, Redis keys).
inline std::string TenantHex(absl::string_view tenant) { return absl::BytesToHexString(tenant); }

// The clock of `options` (absl::Now when unset).
inline absl::Time Now(const SessionStoreOptions& options) {
  return options.clock ? options.clock() : absl::Now();
}

// NOT_FOUND for `key`, worded the same by every store.
absl::Status SessionNotFound(const SessionKey& key);

// OK when a session at revision `current` (nullopt: there is none) meets `condition`; else
// ABORTED naming both revisions, worded the same by every store.
absl::Status CheckCondition(const SessionKey& key, const PutCondition& condition,
                            std::optional<uint64_t> current);

// SessionStore::List over `sorted_ids` (a tenant's ids, sorted, each once): reads the records of
// the ids after `after` with `read`, one at a time, until `limit` (at least 1) are found. `read`
// returns the record, nothing for a session to leave out (gone since it was listed, unreadable),
// or an error that ends the listing.
absl::StatusOr<SessionPage> ReadPage(
    const std::vector<std::string>& sorted_ids, absl::string_view after, size_t limit,
    const std::function<absl::StatusOr<std::optional<SessionRecord>>(const std::string& id)>& read);

// The Redis store's compare-and-set, a Lua script run by EVALSHA with kRedisPutScriptSha1 (what
// Redis's SCRIPT LOAD answers for it), by EVAL when Redis does not know it.
extern const char kRedisPutScript[];
extern const char kRedisPutScriptSha1[];

// The counters of SessionStoreStats that calls bump (sessions and bytes are the store's own).
struct StoreCounters {
  std::atomic<int64_t> saves{0}, loads{0}, hits{0}, misses{0}, evictions{0}, expirations{0},
      errors{0};

  // Counts a call's outcome: NOT_FOUND is not an error, nor is a Put's condition that failed
  // (ABORTED: another request saved the session first).
  void CountError(const absl::Status& status) {
    if (!status.ok() && !absl::IsNotFound(status) && !absl::IsAborted(status)) {
      errors.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // A Put's outcome: a save, or an error.
  void CountPut(const absl::Status& status) {
    CountError(status);
    if (status.ok()) saves.fetch_add(1, std::memory_order_relaxed);
  }
  // A Get's outcome: a load, and then a hit, a miss (NOT_FOUND) or an error.
  void CountGet(const absl::Status& status) {
    loads.fetch_add(1, std::memory_order_relaxed);
    CountError(status);
    if (status.ok()) {
      hits.fetch_add(1, std::memory_order_relaxed);
    } else if (absl::IsNotFound(status)) {
      misses.fetch_add(1, std::memory_order_relaxed);
    }
  }
  SessionStoreStats Snapshot(int64_t sessions, int64_t bytes) const {
    SessionStoreStats s;
    s.sessions = sessions;
    s.bytes = bytes;
    s.saves = saves.load(std::memory_order_relaxed);
    s.loads = loads.load(std::memory_order_relaxed);
    s.hits = hits.load(std::memory_order_relaxed);
    s.misses = misses.load(std::memory_order_relaxed);
    s.evictions = evictions.load(std::memory_order_relaxed);
    s.expirations = expirations.load(std::memory_order_relaxed);
    s.errors = errors.load(std::memory_order_relaxed);
    return s;
  }
};

}  // namespace hgrn2::session::internal
