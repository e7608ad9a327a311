// The memory session store: snapshots in host memory, least recently used evicted beyond a byte
// budget, forgotten after the TTL.
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/session/session_store.h"
#include "engine/session/store_internal.h"

namespace hgrn2::session {
namespace {

class MemorySessionStore final : public SessionStore {
 public:
  explicit MemorySessionStore(const SessionStoreOptions& options) : options_(options) {}

  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot,
                                    const PutCondition& condition) override {
    absl::StatusOr<SessionRecord> record = PutImpl(key, std::move(snapshot), condition);
    counters_.CountPut(record.status());
    return record;
  }

  absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = FindLiveLocked(key);
    if (it == entries_.end()) {
      absl::Status missing = internal::SessionNotFound(key);
      counters_.CountGet(missing);
      return missing;
    }
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    counters_.CountGet(absl::OkStatus());
    return it->second.snapshot;
  }

  absl::StatusOr<SessionRecord> Info(const SessionKey& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = FindLiveLocked(key);
    if (it == entries_.end()) return internal::SessionNotFound(key);
    return it->second.record;
  }

  absl::Status Delete(const SessionKey& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = FindLiveLocked(key);
    if (it == entries_.end()) return internal::SessionNotFound(key);
    EraseLocked(it);
    return absl::OkStatus();
  }

  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                   size_t limit) override {
    limit = std::max<size_t>(limit, 1);
    std::lock_guard<std::mutex> lock(mutex_);
    ExpireLocked();
    SessionPage page;
    // Keys sort by (tenant, id), so one tenant's sessions are one run, already sorted by id.
    auto it = entries_.upper_bound({std::string(tenant), std::string(after)});
    for (; it != entries_.end() && it->first.first == tenant && page.records.size() < limit; ++it) {
      page.records.push_back(it->second.record);
    }
    if (it != entries_.end() && it->first.first == tenant) {
      page.next_after = page.records.back().key.id;
    }
    return page;
  }

  SessionStoreStats Stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_.Snapshot(static_cast<int64_t>(entries_.size()), bytes_);
  }

  std::string Describe() const override {
    return absl::StrCat("memory (", options_.memory_bytes >> 20, " MiB)");
  }

 private:
  using Key = std::pair<std::string, std::string>;  // tenant, id
  struct Entry {
    std::shared_ptr<const std::string> snapshot;
    SessionRecord record;
    std::list<Key>::iterator lru;
  };
  using Entries = std::map<Key, Entry>;

  absl::StatusOr<SessionRecord> PutImpl(const SessionKey& key,
                                        std::shared_ptr<const std::string> snapshot,
                                        const PutCondition& condition) {
    absl::StatusOr<SnapshotHeader> header = internal::CheckPut(
        key, snapshot.get(), condition, options_.max_session_bytes, "memory store");
    if (!header.ok()) return header.status();
    const absl::Time now = internal::Now(options_);
    const absl::Time expires_at =
        options_.ttl > absl::ZeroDuration() ? now + options_.ttl : absl::InfiniteFuture();
    const int64_t size = static_cast<int64_t>(snapshot->size());
    std::lock_guard<std::mutex> lock(mutex_);
    auto old = FindLiveLocked(key);
    HGRN2_RETURN_IF_ERROR(internal::CheckCondition(
        key, condition,
        old == entries_.end() ? std::nullopt
                              : std::optional<uint64_t>(old->second.record.revision)));
    // The old version goes even when the new one does not fit, so no Get returns it afterwards.
    if (old != entries_.end()) EraseLocked(old);
    if (size > options_.memory_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("memory store: a snapshot of ", size,
                                                       " bytes is larger than its budget (",
                                                       options_.memory_bytes, ")"));
    }
    ExpireLocked();
    lru_.emplace_front(key.tenant, key.id);
    SessionRecord record = internal::MakeRecord(key, *header, size, expires_at);
    Entry entry{std::move(snapshot), record, lru_.begin()};
    entries_.emplace(lru_.front(), std::move(entry));
    bytes_ += size;
    while (bytes_ > options_.memory_bytes) {
      EraseLocked(entries_.find(lru_.back()));  // never the new one: it fits alone
      counters_.evictions.fetch_add(1, std::memory_order_relaxed);
    }
    return record;
  }

  // The entry of `key` unless absent or expired (then erased).
  Entries::iterator FindLiveLocked(const SessionKey& key) {
    auto it = entries_.find(Key(key.tenant, key.id));
    if (it != entries_.end() && it->second.record.expires_at <= internal::Now(options_)) {
      EraseLocked(it);
      counters_.expirations.fetch_add(1, std::memory_order_relaxed);
      return entries_.end();
    }
    return it;
  }

  void ExpireLocked() {
    if (options_.ttl <= absl::ZeroDuration()) return;
    const absl::Time now = internal::Now(options_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto next = std::next(it);
      if (it->second.record.expires_at <= now) {
        EraseLocked(it);
        counters_.expirations.fetch_add(1, std::memory_order_relaxed);
      }
      it = next;
    }
  }

  void EraseLocked(Entries::iterator it) {
    bytes_ -= static_cast<int64_t>(it->second.snapshot->size());
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }

  const SessionStoreOptions options_;
  mutable std::mutex mutex_;
  Entries entries_;
  std::list<Key> lru_;  // most recently used first
  int64_t bytes_ = 0;
  internal::StoreCounters counters_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> MakeMemorySessionStore(
    const SessionStoreOptions& options) {
  if (options.memory_bytes <= 0) {
    return absl::InvalidArgumentError("session store memory_bytes must be positive");
  }
  return std::make_unique<MemorySessionStore>(options);
}

}  // namespace hgrn2::session
