// The dir session store: one file per session, written atomically and durably (temp file, fsync,
// rename, fsync of the folder), so an acknowledged Put survives kill -9 and power loss.
//
// Layout: <dir>/t<hex tenant>/<id>.hgrn2s. Temp files start with '.' (ids cannot), so any left by
// a crash are recognized and removed when a store opens the folder. One process per folder: the
// byte cap and the LRU order are kept in this process's memory (rebuilt from the files at open,
// where the modification time stands for the last use).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/session/session_store.h"
#include "engine/session/store_internal.h"

namespace hgrn2::session {
namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kSuffix = ".hgrn2s";

// Closes a file descriptor when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Time ModificationTime(const struct stat& st) {
  return absl::FromUnixNanos(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                             st.st_mtim.tv_nsec);
}

class DirSessionStore final : public SessionStore {
 public:
  explicit DirSessionStore(const SessionStoreOptions& options)
      : options_(options), root_(options.dir) {}

  // Creates the folder if needed, removes leftover temp files and indexes the sessions.
  absl::Status Open() {
    std::error_code error;
    fs::create_directories(root_, error);
    if (error) return IoError("create the folder", root_, error.value());
    for (const fs::directory_entry& tenant_dir : fs::directory_iterator(root_, error)) {
      const std::string name = tenant_dir.path().filename().string();
      if (!tenant_dir.is_directory() || name.empty() || name[0] != 't') continue;
      const std::string hex = name.substr(1);
      if (hex.size() % 2 != 0 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
        continue;
      }
      const std::string tenant = absl::HexStringToBytes(hex);
      for (const fs::directory_entry& file : fs::directory_iterator(tenant_dir.path(), error)) {
        const std::string file_name = file.path().filename().string();
        if (absl::StartsWith(file_name, ".")) {  // a Put that never finished
          fs::remove(file.path(), error);
          continue;
        }
        if (!absl::EndsWith(file_name, kSuffix)) continue;
        SessionKey key{tenant, file_name.substr(0, file_name.size() - kSuffix.size())};
        struct stat st;
        if (!ValidateSessionId(key.id).ok() || ::stat(file.path().c_str(), &st) != 0) continue;
        IndexLocked(key, static_cast<int64_t>(st.st_size), ModificationTime(st));
      }
      if (error) return IoError("list", tenant_dir.path(), error.value());
    }
    if (error) return IoError("list", root_, error.value());
    return absl::OkStatus();
  }

  absl::Status Put(const SessionKey& key, std::shared_ptr<const std::string> snapshot) override {
    absl::Status status = PutImpl(key, snapshot);
    counters_.CountPut(status);
    return status;
  }

  absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) override {
    absl::StatusOr<std::shared_ptr<const std::string>> snapshot = GetImpl(key);
    counters_.CountGet(snapshot.status());
    return snapshot;
  }

  absl::StatusOr<SessionRecord> Info(const SessionKey& key) override {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    return ReadRecord(key, SessionPath(key));
  }

  absl::Status Delete(const SessionKey& key) override {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    const fs::path path = SessionPath(key);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT) return internal::SessionNotFound(key);
        return IoError("delete", path, errno);
      }
      UnindexLocked(key);
    }
    return SyncFolder(path.parent_path());
  }

  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                   size_t limit) override {
    const fs::path folder = TenantFolder(tenant);
    std::error_code error;
    if (!fs::exists(folder, error)) return SessionPage{};
    std::vector<std::string> ids;
    for (const fs::directory_entry& file : fs::directory_iterator(folder, error)) {
      const std::string name = file.path().filename().string();
      if (absl::StartsWith(name, ".") || !absl::EndsWith(name, kSuffix)) continue;
      std::string id = name.substr(0, name.size() - kSuffix.size());
      if (ValidateSessionId(id).ok()) ids.push_back(std::move(id));
    }
    if (error) return IoError("list", folder, error.value());
    std::sort(ids.begin(), ids.end());
    return internal::ReadPage(
        ids, after, limit,
        [&](const std::string& id) -> absl::StatusOr<std::optional<SessionRecord>> {
          SessionKey key{std::string(tenant), id};
          absl::StatusOr<SessionRecord> record = ReadRecord(key, SessionPath(key));
          if (record.ok()) return *std::move(record);
          // A corrupt file is left out of the list, a failing disk is not.
          if (absl::IsNotFound(record.status()) || absl::IsInvalidArgument(record.status())) {
            return std::nullopt;
          }
          return record.status();
        });
  }

  SessionStoreStats Stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_.Snapshot(static_cast<int64_t>(index_.size()), bytes_);
  }

  std::string Describe() const override { return absl::StrCat("dir ", root_.string()); }

 private:
  using Key = std::pair<std::string, std::string>;  // tenant, id
  struct Indexed {
    int64_t size = 0;
    absl::Time last_used;
  };

  fs::path TenantFolder(absl::string_view tenant) const {
    return root_ / absl::StrCat("t", internal::TenantHex(tenant));
  }
  fs::path SessionPath(const SessionKey& key) const {
    return TenantFolder(key.tenant) / absl::StrCat(key.id, kSuffix);
  }

  // RESOURCE_EXHAUSTED when the disk (or the user's quota) is full, UNAVAILABLE otherwise.
  absl::Status IoError(absl::string_view what, const fs::path& path, int error) const {
    const std::string message = absl::StrCat("dir session store: cannot ", what, " ", path.string(),
                                             ": ", std::strerror(error));
    if (error == ENOSPC || error == EDQUOT) return absl::ResourceExhaustedError(message);
    return absl::UnavailableError(message);
  }

  absl::Status PutImpl(const SessionKey& key, const std::shared_ptr<const std::string>& snapshot) {
    absl::StatusOr<SnapshotHeader> header =
        internal::CheckPut(key, snapshot.get(), options_.max_session_bytes, "dir store");
    if (!header.ok()) return header.status();
    const int64_t size = static_cast<int64_t>(snapshot->size());
    if (options_.dir_max_bytes > 0 && size > options_.dir_max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("dir store: a snapshot of ", size,
                                                       " bytes is larger than its cap (",
                                                       options_.dir_max_bytes, ")"));
    }
    const fs::path folder = TenantFolder(key.tenant);
    std::error_code error;
    if (!fs::is_directory(folder, error)) {
      fs::create_directories(folder, error);
      if (error) return IoError("create", folder, error.value());
      if (absl::Status synced = SyncFolder(root_); !synced.ok()) return synced;
    }
    const fs::path temp = folder / absl::StrCat(".", key.id, ".", ::getpid(), ".",
                                                temp_counter_.fetch_add(1), ".tmp");
    if (absl::Status written = WriteDurably(temp, *snapshot); !written.ok()) {
      ::unlink(temp.c_str());
      return written;
    }
    const fs::path path = SessionPath(key);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (::rename(temp.c_str(), path.c_str()) != 0) {
        const int rename_error = errno;
        ::unlink(temp.c_str());
        return IoError("rename into", path, rename_error);
      }
      UnindexLocked(key);
      IndexLocked(key, size, internal::Now(options_));
      EvictLocked(key);
    }
    return SyncFolder(folder);  // the rename is durable only once the folder is
  }

  absl::Status WriteDurably(const fs::path& path, const std::string& bytes) const {
    FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) return IoError("create", path, errno);
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return IoError("write", path, errno);
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) return IoError("fsync", path, errno);
    return absl::OkStatus();
  }

  absl::Status SyncFolder(const fs::path& folder) const {
    FileDescriptor fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return IoError("open", folder, errno);
    if (::fsync(fd.get()) != 0) return IoError("fsync", folder, errno);
    return absl::OkStatus();
  }

  // Opens the session's file; NOT_FOUND when absent or expired (an expired file is removed).
  absl::StatusOr<std::pair<int, struct stat>> OpenLive(const SessionKey& key,
                                                       const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return internal::SessionNotFound(key);
      return IoError("open", path, errno);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int stat_error = errno;
      ::close(fd);
      return IoError("stat", path, stat_error);
    }
    if (options_.ttl > absl::ZeroDuration() &&
        ModificationTime(st) + options_.ttl <= internal::Now(options_)) {
      ::close(fd);
      std::lock_guard<std::mutex> lock(mutex_);
      // Only this version: a Put may have renamed a new file into place since the open.
      struct stat now_there;
      if (::stat(path.c_str(), &now_there) == 0 && now_there.st_ino == st.st_ino &&
          ::unlink(path.c_str()) == 0) {
        UnindexLocked(key);
        counters_.expirations.fetch_add(1, std::memory_order_relaxed);
      }
      return internal::SessionNotFound(key);
    }
    return std::make_pair(fd, st);
  }

  absl::StatusOr<std::shared_ptr<const std::string>> GetImpl(const SessionKey& key) {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    const fs::path path = SessionPath(key);
    absl::StatusOr<std::pair<int, struct stat>> opened = OpenLive(key, path);
    if (!opened.ok()) return opened.status();
    FileDescriptor fd(opened->first);
    // Files are replaced by rename, never written in place, so this reads one whole version.
    auto bytes = std::make_shared<std::string>(static_cast<size_t>(opened->second.st_size), '\0');
    size_t done = 0;
    while (done < bytes->size()) {
      const ssize_t n = ::read(fd.get(), bytes->data() + done, bytes->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return IoError("read", path, errno);
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    if (done != bytes->size()) {
      return absl::DataLossError(absl::StrCat("dir session store: ", path.string(), " has ", done,
                                              " bytes, its size said ", bytes->size()));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(Key(key.tenant, key.id));
    if (it != index_.end()) it->second.last_used = internal::Now(options_);
    return std::shared_ptr<const std::string>(std::move(bytes));
  }

  absl::StatusOr<SessionRecord> ReadRecord(const SessionKey& key, const fs::path& path) {
    absl::StatusOr<std::pair<int, struct stat>> opened = OpenLive(key, path);
    if (!opened.ok()) return opened.status();
    FileDescriptor fd(opened->first);
    std::string header_bytes(kSnapshotHeaderBytes, '\0');
    const ssize_t n = ::pread(fd.get(), header_bytes.data(), header_bytes.size(), 0);
    if (n < 0) return IoError("read", path, errno);
    header_bytes.resize(static_cast<size_t>(n));
    absl::StatusOr<SnapshotHeader> header = ParseHeader(header_bytes);
    if (!header.ok()) {
      return absl::Status(header.status().code(),
                          absl::StrCat(path.string(), ": ", header.status().message()));
    }
    const absl::Time expires_at = options_.ttl > absl::ZeroDuration()
                                      ? ModificationTime(opened->second) + options_.ttl
                                      : absl::InfiniteFuture();
    return internal::MakeRecord(key, *header, static_cast<uint64_t>(opened->second.st_size),
                                expires_at);
  }

  void IndexLocked(const SessionKey& key, int64_t size, absl::Time last_used) {
    index_[Key(key.tenant, key.id)] = Indexed{size, last_used};
    bytes_ += size;
  }
  void UnindexLocked(const SessionKey& key) {
    auto it = index_.find(Key(key.tenant, key.id));
    if (it == index_.end()) return;
    bytes_ -= it->second.size;
    index_.erase(it);
  }

  // Deletes least recently used sessions other than `keep` until the folder is within its cap.
  void EvictLocked(const SessionKey& keep) {
    if (options_.dir_max_bytes <= 0) return;
    while (bytes_ > options_.dir_max_bytes && index_.size() > 1) {
      auto victim = index_.end();
      for (auto it = index_.begin(); it != index_.end(); ++it) {
        if (it->first.first == keep.tenant && it->first.second == keep.id) continue;
        if (victim == index_.end() || it->second.last_used < victim->second.last_used) {
          victim = it;
        }
      }
      if (victim == index_.end()) return;
      const SessionKey key{victim->first.first, victim->first.second};
      ::unlink(SessionPath(key).c_str());
      UnindexLocked(key);
      counters_.evictions.fetch_add(1, std::memory_order_relaxed);
    }
  }

  const SessionStoreOptions options_;
  const fs::path root_;
  std::atomic<uint64_t> temp_counter_{0};
  mutable std::mutex mutex_;  // the index, and renames and unlinks of session files
  std::map<Key, Indexed> index_;
  int64_t bytes_ = 0;
  internal::StoreCounters counters_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> MakeDirSessionStore(
    const SessionStoreOptions& options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("session store dir: required by the dir store");
  }
  auto store = std::make_unique<DirSessionStore>(options);
  if (absl::Status opened = store->Open(); !opened.ok()) return opened;
  return store;
}

}  // namespace hgrn2::session
