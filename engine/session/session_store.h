// SessionStore: where saved sessions (serialized snapshots) live between requests — host memory,
// a directory, Redis, or a chain of them — and MakeSessionStore, which builds one from options.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hgrn2::session {

// Names one session. Tenants are separate namespaces: another tenant's session is NOT_FOUND.
struct SessionKey {
  std::string tenant;  // any bytes; "" when the server has no API keys
  std::string id;      // 1 to 128 bytes of [A-Za-z0-9._:-], not starting with '.'

  friend bool operator==(const SessionKey&, const SessionKey&) = default;
};

// OK for a valid session id; INVALID_ARGUMENT saying what is wrong otherwise.
absl::Status ValidateSessionId(absl::string_view id);

// What a store knows of one session without reading its state (sessions.proto's SessionInfo).
struct SessionRecord {
  SessionKey key;
  uint64_t size_bytes = 0;  // of the snapshot
  uint64_t num_tokens = 0;
  absl::Time saved_at = absl::UnixEpoch();         // from the snapshot's header
  absl::Time expires_at = absl::InfiniteFuture();  // when the store forgets it
  std::string model_fingerprint;                   // hex
  std::string state_dtype;                         // "f32" or "bf16"
  uint64_t header_checksum = 0;  // the snapshot's header checksum: tells two versions apart
  uint64_t revision = 0;         // the snapshot's revision: 1 for the first save of the id, +1 each
};

// What a Put requires of the version it replaces: a compare-and-set on the revision.
struct PutCondition {
  enum class Kind {
    kAny,       // whatever is there, or nothing
    kAbsent,    // only when there is no such session (none saved, or deleted, or expired)
    kRevision,  // only when the session is there at `revision`
  };
  Kind kind = Kind::kAny;
  uint64_t revision = 0;  // kRevision's

  static PutCondition Any() { return {}; }
  static PutCondition Absent() { return {Kind::kAbsent, 0}; }
  static PutCondition AtRevision(uint64_t revision) { return {Kind::kRevision, revision}; }
  // For messages: "any version", "no session", "revision 7".
  std::string ToString() const;
};

// One page of a tenant's sessions (SessionStore::List).
struct SessionPage {
  std::vector<SessionRecord> records;  // sorted by id
  // The `after` that continues the listing: the last id this page looked at (a session that
  // could not be read is left out of `records` but still passed). Empty when nothing follows.
  std::string next_after;
};

// Counters since the store was made. For a chain: sessions and bytes of its last store, the
// calls as the chain's caller saw them (a Get that hit any store is a hit), and evictions,
// expirations and errors summed over the stores.
struct SessionStoreStats {
  int64_t sessions = 0;     // held now; -1 where the store cannot tell (Redis)
  int64_t bytes = 0;        // held now; -1 where the store cannot tell (Redis)
  int64_t saves = 0;        // successful Puts
  int64_t loads = 0;        // Get calls
  int64_t hits = 0;         // Gets that returned a snapshot
  int64_t misses = 0;       // Gets that returned NOT_FOUND
  int64_t evictions = 0;    // sessions dropped to stay within a byte budget
  int64_t expirations = 0;  // sessions dropped because their TTL passed (where the store sees it)
  int64_t errors = 0;       // calls that failed other than with NOT_FOUND
};

// Thread-safety: every method may be called from any number of threads at once; calls block on
// I/O. A Put that returned OK is what every later Get, Info and List sees (until replaced,
// deleted, evicted or expired); a Get concurrent with a Put of the same key returns the whole old
// snapshot or the whole new one, never a mix. The stores shared by several processes (dir, Redis)
// keep these promises across processes too, and a Put's condition is checked and the snapshot
// stored as one step in every store: no other Put of the key lands between.
class SessionStore {
 public:
  virtual ~SessionStore() = default;

  // Stores `snapshot` (a serialized snapshot: its header must parse and its size match the
  // header) under `key` if the session there now meets `condition`, replacing it, and returns the
  // record of what was stored. The snapshot is stored as it is, revision included: the caller
  // chooses the revision (SessionManager gives the next one), which must be above a kRevision
  // condition's and at least 1 for kAbsent. ABORTED when the condition fails, naming the revision
  // found and the one expected; nothing is stored then. INVALID_ARGUMENT for a bad id or snapshot;
  // RESOURCE_EXHAUSTED when it is larger than max_session_bytes or the store's whole budget;
  // UNAVAILABLE when the backing storage fails (the message names it).
  virtual absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                            std::shared_ptr<const std::string> snapshot,
                                            const PutCondition& condition) = 0;
  // Put with PutCondition::Any(): replaces whatever is there.
  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot) {
    return Put(key, std::move(snapshot), PutCondition::Any());
  }
  // The snapshot stored under `key`; NOT_FOUND when there is none (or it expired).
  virtual absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) = 0;
  // The record of `key`, from the snapshot's header alone; NOT_FOUND when there is none.
  virtual absl::StatusOr<SessionRecord> Info(const SessionKey& key) = 0;
  // Removes the session; NOT_FOUND when there was none.
  virtual absl::Status Delete(const SessionKey& key) = 0;
  // Live sessions of `tenant` whose ids sort after `after` ("" = from the first), by id: at most
  // `limit` of them (at least 1 is asked for). Only the page's sessions are read, so a page costs
  // the same however many sessions the tenant has (but for listing their names).
  virtual absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                           size_t limit) = 0;
  virtual SessionStoreStats Stats() const = 0;
  // For logs: "memory", "dir /var/lib/hgrn2/sessions", "redis 10.0.0.5:6379", "memory+redis ...".
  virtual std::string Describe() const = 0;
  // True when other processes may write what this store holds (Redis, a directory): a cache in
  // front of it must check that its copy is still the current one.
  virtual bool shared() const { return false; }
};

struct SessionStoreOptions {
  // The stores, front (fastest) to back (durable or shared): "memory", "dir", "redis", or a chain
  // such as {"memory", "dir"} or {"memory", "redis"}.
  std::vector<std::string> kinds = {"memory"};
  // memory: the byte budget; least recently used sessions are evicted beyond it.
  int64_t memory_bytes = int64_t{1} << 30;
  // dir: the folder (created if absent; several processes, on several hosts, may share it) and
  // its byte cap (0 = none), beyond which least recently used sessions are deleted (each process
  // counts the sessions it has seen).
  std::string dir;
  int64_t dir_max_bytes = 0;
  // dir: how long a Put or Delete waits for another process's lock on the same session (a live
  // process holds it for one rename; a dead one's lock is released by the kernel or the NFS
  // server). UNAVAILABLE beyond.
  absl::Duration dir_lock_timeout = absl::Seconds(10);
  // redis: redis://[[user]:password@]host[:port][/db]; port 6379 and db 0 when left out.
  std::string redis_url;
  // Connection and per-command timeout, and how many connections to keep.
  absl::Duration redis_timeout = absl::Seconds(5);
  int32_t redis_connections = 8;
  // Sessions are forgotten this long after their last Put (0 = never). Measured from the Put, not
  // from the snapshot's saved_at, so an imported old snapshot gets a full TTL.
  absl::Duration ttl = absl::ZeroDuration();
  // Largest snapshot accepted (RESOURCE_EXHAUSTED beyond).
  int64_t max_session_bytes = int64_t{256} << 20;
  // The clock for TTLs (tests move it); absl::Now when empty. Redis keeps its own time.
  std::function<absl::Time()> clock;

  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// The store (or chain of stores) that `options` describe. INVALID_ARGUMENT for bad options;
// the dir store's errors opening its folder (UNAVAILABLE naming it). The Redis store connects on
// first use, so a server starts while Redis is down (its calls are UNAVAILABLE until it is up).
absl::StatusOr<std::unique_ptr<SessionStore>> MakeSessionStore(const SessionStoreOptions& options);

// The single stores and the chain, for tests and for callers that assemble their own.
absl::StatusOr<std::unique_ptr<SessionStore>> MakeMemorySessionStore(
    const SessionStoreOptions& options);
absl::StatusOr<std::unique_ptr<SessionStore>> MakeDirSessionStore(
    const SessionStoreOptions& options);
absl::StatusOr<std::unique_ptr<SessionStore>> MakeRedisSessionStore(
    const SessionStoreOptions& options);
// `stores` front to back (at least one); see SessionStoreOptions::kinds.
std::unique_ptr<SessionStore> MakeChainSessionStore(
    std::vector<std::unique_ptr<SessionStore>> stores);

}  // namespace hgrn2::session
