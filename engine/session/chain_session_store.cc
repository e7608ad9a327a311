// The chain session store: caches in front of a durable or shared store (memory before dir or
// Redis). Writes go to every store, reads to the first that has the session.
#include <array>
#include <functional>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/session/session_store.h"
#include "engine/session/store_internal.h"

namespace hgrn2::session {
namespace {

class ChainSessionStore final : public SessionStore {
 public:
  explicit ChainSessionStore(std::vector<std::unique_ptr<SessionStore>> stores)
      : stores_(std::move(stores)) {}

  // The last store first, with the condition: once it has the session, the Put is acknowledged
  // there, and the caches only repeat it. A cache that refuses (a snapshot over its budget) drops
  // its old copy instead, so it never serves the replaced version; so does every cache when the
  // last store refuses (a failed condition says the caches' copies may be old too).
  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot,
                                    const PutCondition& condition) override {
    std::lock_guard<std::mutex> lock(KeyMutex(key));
    absl::StatusOr<SessionRecord> record = back().Put(key, snapshot, condition);
    counters_.CountError(record.status());
    if (!record.ok()) {
      DropFromCaches(key);
      return record;
    }
    for (size_t i = 0; i + 1 < stores_.size(); ++i) {
      if (!stores_[i]->Put(key, snapshot).ok()) stores_[i]->Delete(key).IgnoreError();
    }
    counters_.saves.fetch_add(1, std::memory_order_relaxed);
    return record;
  }

  // Front to back; the stores before the one that has it are filled. Behind a shared store (one
  // that other replicas write), a cache's copy is used only while its revision and header
  // checksum are still the shared store's: one small read (the header) instead of the whole
  // snapshot. A session that another replica saved since, or deleted, is read through.
  absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) override {
    absl::StatusOr<std::shared_ptr<const std::string>> found = GetImpl(key);
    counters_.CountGet(found.status());
    return found;
  }

  absl::StatusOr<SessionRecord> Info(const SessionKey& key) override { return back().Info(key); }

  absl::Status Delete(const SessionKey& key) override {
    std::lock_guard<std::mutex> lock(KeyMutex(key));
    absl::Status status = back().Delete(key);
    DropFromCaches(key);
    counters_.CountError(status);
    return status;
  }

  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                   size_t limit) override {
    return back().List(tenant, after, limit);
  }

  SessionStoreStats Stats() const override {
    SessionStoreStats last = stores_.back()->Stats();
    SessionStoreStats stats = counters_.Snapshot(last.sessions, last.bytes);
    for (const std::unique_ptr<SessionStore>& store : stores_) {
      const SessionStoreStats s = store->Stats();
      stats.evictions += s.evictions;
      stats.expirations += s.expirations;
      stats.errors += s.errors;
    }
    return stats;
  }

  std::string Describe() const override {
    return absl::StrJoin(stores_, " + ", [](std::string* out, const auto& store) {
      out->append(store->Describe());
    });
  }
  bool shared() const override { return back().shared(); }

 private:
  SessionStore& back() const { return *stores_.back(); }

  absl::StatusOr<std::shared_ptr<const std::string>> GetImpl(const SessionKey& key) {
    for (size_t i = 0; i + 1 < stores_.size(); ++i) {
      absl::StatusOr<std::shared_ptr<const std::string>> cached = stores_[i]->Get(key);
      if (!cached.ok()) continue;
      if (!back().shared()) return cached;
      absl::StatusOr<SessionRecord> current = back().Info(key);
      if (!current.ok() && !absl::IsNotFound(current.status())) return current.status();
      absl::StatusOr<SnapshotHeader> header = ParseHeader(**cached);
      if (current.ok() && header.ok() && header->revision == current->revision &&
          header->header_checksum == current->header_checksum) {
        return cached;
      }
      break;  // stale: read through to the shared store
    }
    // Under the key's lock, so a Put cannot land between the read below and the fills, which
    // would leave a cache holding the version it replaced.
    std::lock_guard<std::mutex> lock(KeyMutex(key));
    absl::StatusOr<std::shared_ptr<const std::string>> found = back().Get(key);
    if (!found.ok()) {
      if (absl::IsNotFound(found.status())) DropFromCaches(key);
      return found;
    }
    for (size_t i = 0; i + 1 < stores_.size(); ++i) {
      if (!stores_[i]->Put(key, *found).ok()) stores_[i]->Delete(key).IgnoreError();
    }
    return found;
  }

  void DropFromCaches(const SessionKey& key) {
    for (size_t i = 0; i + 1 < stores_.size(); ++i) stores_[i]->Delete(key).IgnoreError();
  }

  // Puts, Deletes and read-through fills of one key are serialized (keys share 64 mutexes).
  std::mutex& KeyMutex(const SessionKey& key) {
    const size_t hash =
        std::hash<std::string>{}(key.tenant) * 31 + std::hash<std::string>{}(key.id);
    return key_mutexes_[hash % key_mutexes_.size()];
  }

  std::vector<std::unique_ptr<SessionStore>> stores_;
  std::array<std::mutex, 64> key_mutexes_;
  internal::StoreCounters counters_;
};

}  // namespace

std::unique_ptr<SessionStore> MakeChainSessionStore(
    std::vector<std::unique_ptr<SessionStore>> stores) {
  return std::make_unique<ChainSessionStore>(std::move(stores));
}

}  // namespace hgrn2::session
