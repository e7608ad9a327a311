// The dir session store: one file per session, written atomically and durably (temp file, fsync,
// rename, fsync of the folder), so an acknowledged Put survives kill -9 and power loss; the folder
// may be shared by several processes on several hosts (NFS, CephFS, EFS, ...).
//
// Layout: <dir>/t<hex tenant>/<id>.hgrn2s, and the lock file <dir>/.locks. Temp files start with
// '.' (ids cannot) and name their writer, .<id>~<host>~<pid>~<n>.tmp, so that a store opening the
// folder removes what a dead process of its own host left, and what any process left over an hour
// ago, but never a save another process is writing now.
//
// Across processes, whatever replaces or removes a session file (a Put, which reads the current
// revision, checks it and renames; a Delete; an expiry; an eviction) holds the session's lock: an
// fcntl lock on one byte of <dir>/.locks, the byte of the session's stripe (a stable hash of tenant
// and id, 65536 stripes). Why fcntl locks: they are the locks NFS carries to the server (NLM with
// lockd on NFSv3, LOCK on NFSv4; CephFS and EFS too), and the kernel or the NFS server drops them
// when their holder dies, so a kill -9 never leaves a lock behind; flock is only emulated by fcntl
// locks on Linux NFS, and lock files made with O_EXCL or link() need stale-lock guessing by age.
// Open file description locks (F_OFD_SETLK) where the kernel has them, so that two stores in one
// process exclude each other too; the threads of one store share the description, so a mutex per
// stripe orders them first. A lock is waited for up to dir_lock_timeout (UNAVAILABLE beyond), so a
// stopped but living holder cannot block saves forever. Reads take no lock: a rename replaces a
// file whole, and NFS's close-to-open consistency makes a rename seen by the next open.
//
// The byte cap and the LRU order are each process's own (rebuilt from the files at open, where
// the modification time stands for the last use); an eviction deletes only a file that is still
// the version this process knew.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/base/status_macros.h"
#include "engine/session/session_store.h"
#include "engine/session/store_internal.h"
#include "xxhash.h"

namespace hgrn2::session {
namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kSuffix = ".hgrn2s";
constexpr absl::string_view kLockFile = ".locks";
constexpr uint32_t kLockStripes = 65536;
// A temp file older than this is a dead writer's, whatever host wrote it (a Put writes for
// seconds at most).
constexpr absl::Duration kAbandonedAfter = absl::Hours(1);

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

// This host's name as temp file names carry it: [A-Za-z0-9-] only (so '~' and '.' separate).
std::string HostForFileNames() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  std::string host;
  for (const char* c = name; *c != '\0' && host.size() < 64; ++c) {
    const bool keep = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                      (*c >= '0' && *c <= '9') || *c == '-';
    host.push_back(keep ? *c : '-');
  }
  return host.empty() ? "unknown" : host;
}

// RESOURCE_EXHAUSTED when the disk (or the user's quota) is full, UNAVAILABLE otherwise.
absl::Status IoError(absl::string_view what, const fs::path& path, int error) {
  const std::string message = absl::StrCat("dir session store: cannot ", what, " ", path.string(),
                                           ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::UnavailableError(message);
}

// The first kSnapshotHeaderBytes of the open file `fd` (fewer when it is shorter), for ParseHeader.
absl::StatusOr<std::string> ReadHeaderBytes(int fd, const fs::path& path) {
  std::string bytes(kSnapshotHeaderBytes, '\0');
  const ssize_t n = ::pread(fd, bytes.data(), bytes.size(), 0);
  if (n < 0) return IoError("read", path, errno);
  bytes.resize(static_cast<size_t>(n));
  return bytes;
}

// The sessions' locks: byte `stripe` of the lock file, each behind a mutex of this process.
// Thread-safety: any thread.
class StripeLocks {
 public:
  // Releases the stripe it holds when destroyed.
  class Held {
   public:
    Held(StripeLocks* locks, uint32_t stripe) : locks_(locks), stripe_(stripe) {}
    Held(Held&& other) noexcept
        : locks_(std::exchange(other.locks_, nullptr)), stripe_(other.stripe_) {}
    Held& operator=(Held&&) = delete;
    ~Held() {
      if (locks_ != nullptr) locks_->Release(stripe_);
    }

   private:
    StripeLocks* locks_;
    uint32_t stripe_;
  };

  absl::Status Open(const fs::path& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return IoError("open the lock file", path, errno);
    return absl::OkStatus();
  }
  ~StripeLocks() {
    if (fd_ >= 0) ::close(fd_);
  }

  static uint32_t Stripe(const SessionKey& key) {
    // Stable across processes, hosts and builds (std::hash is not promised to be).
    const std::string name = absl::StrCat(key.tenant.size(), ":", key.tenant, key.id);
    return static_cast<uint32_t>(XXH3_64bits(name.data(), name.size()) % kLockStripes);
  }

  // Waits up to `timeout` for the stripe of `key`: UNAVAILABLE naming the lock after it. fcntl can
  // wait (F_OFD_SETLKW), but not with a deadline, so both locks are tried again, less often each
  // time; the stripe's mutex is not kept while another process holds the byte.
  absl::StatusOr<Held> Lock(const SessionKey& key, absl::Duration timeout) {
    const uint32_t stripe = Stripe(key);
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    std::mutex& mutex = mutexes_[stripe % mutexes_.size()];
    auto pause = std::chrono::microseconds(100);
    for (;;) {
      if (mutex.try_lock()) {
        absl::StatusOr<bool> taken = TryFileLock(stripe);
        if (taken.ok() && *taken) return Held(this, stripe);
        mutex.unlock();
        if (!taken.ok()) return taken.status();
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return TimedOut(key, stripe, timeout);
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(pause, deadline - now));
      pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(50));
    }
  }

  // The stripe of `key` if no thread or process holds it now.
  std::optional<Held> TryLock(const SessionKey& key) {
    const uint32_t stripe = Stripe(key);
    std::mutex& mutex = mutexes_[stripe % mutexes_.size()];
    if (!mutex.try_lock()) return std::nullopt;
    absl::StatusOr<bool> taken = TryFileLock(stripe);
    if (!taken.ok() || !*taken) {
      mutex.unlock();
      return std::nullopt;
    }
    return Held(this, stripe);
  }

 private:
  // True when this call took the byte's lock; false when another process (or description) holds
  // it; an error when the file system cannot lock (ENOLCK: no lock manager).
  absl::StatusOr<bool> TryFileLock(uint32_t stripe) {
    for (;;) {
      struct flock lock = {};
      lock.l_type = F_WRLCK;
      lock.l_whence = SEEK_SET;
      lock.l_start = stripe;
      lock.l_len = 1;
      const bool ofd = ofd_.load(std::memory_order_relaxed);
      if (::fcntl(fd_, ofd ? F_OFD_SETLK : F_SETLK, &lock) == 0) return true;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EACCES) return false;
      if (errno == EINVAL && ofd) {  // a kernel or file system without OFD locks
        ofd_.store(false, std::memory_order_relaxed);
        continue;
      }
      return IoError(absl::StrCat("lock byte ", stripe, " of"), path_, errno);
    }
  }

  void Release(uint32_t stripe) {
    struct flock lock = {};
    lock.l_type = F_UNLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = stripe;
    lock.l_len = 1;
    while (::fcntl(fd_, ofd_.load(std::memory_order_relaxed) ? F_OFD_SETLK : F_SETLK, &lock) != 0 &&
           errno == EINTR) {
    }
    mutexes_[stripe % mutexes_.size()].unlock();
  }

  absl::Status TimedOut(const SessionKey& key, uint32_t stripe, absl::Duration timeout) const {
    return absl::UnavailableError(absl::StrCat(
        "dir session store: session \"", key.id, "\" is locked (byte ", stripe, " of ",
        path_.string(), ") by another save for longer than ", absl::FormatDuration(timeout)));
  }

  fs::path path_;
  int fd_ = -1;
  std::atomic<bool> ofd_{true};
  std::array<std::mutex, 256> mutexes_;
};

// Numbers this process's temp files: one counter for every store of the process, since two may
// share a folder.
std::atomic<uint64_t>& TempCounter() {
  static std::atomic<uint64_t> counter{0};
  return counter;
}

class DirSessionStore final : public SessionStore {
 public:
  explicit DirSessionStore(const SessionStoreOptions& options)
      : options_(options), root_(options.dir), host_(HostForFileNames()) {}

  // Creates the folder if needed, removes abandoned temp files and indexes the sessions.
  absl::Status Open() {
    std::error_code error;
    fs::create_directories(root_, error);
    if (error) return IoError("create the folder", root_, error.value());
    HGRN2_RETURN_IF_ERROR(locks_.Open(root_ / std::string(kLockFile)));
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
        struct stat st;
        if (::stat(file.path().c_str(), &st) != 0) continue;
        if (absl::StartsWith(file_name, ".")) {  // a Put that never finished, or one going on
          if (Abandoned(file_name, ModificationTime(st))) fs::remove(file.path(), error);
          continue;
        }
        if (!absl::EndsWith(file_name, kSuffix)) continue;
        SessionKey key{tenant, file_name.substr(0, file_name.size() - kSuffix.size())};
        if (!ValidateSessionId(key.id).ok()) continue;
        IndexLocked(key, st, ModificationTime(st));
      }
      if (error) return IoError("list", tenant_dir.path(), error.value());
    }
    if (error) return IoError("list", root_, error.value());
    return absl::OkStatus();
  }

  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot,
                                    const PutCondition& condition) override {
    absl::StatusOr<SessionRecord> record = PutImpl(key, snapshot, condition);
    counters_.CountPut(record.status());
    if (record.ok()) Evict(key);
    return record;
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
      HGRN2_ASSIGN_OR_RETURN(StripeLocks::Held held, locks_.Lock(key, options_.dir_lock_timeout));
      if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT) return internal::SessionNotFound(key);
        return IoError("delete", path, errno);
      }
      std::lock_guard<std::mutex> lock(mutex_);
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
  // Other processes may share the folder: a cache in front checks its copies.
  bool shared() const override { return true; }

 private:
  using Key = std::pair<std::string, std::string>;  // tenant, id
  struct Indexed {
    int64_t size = 0;
    absl::Time last_used;
    // The version this process knew (it wrote or found it): an eviction deletes only that one.
    dev_t device = 0;
    ino_t inode = 0;
  };

  fs::path TenantFolder(absl::string_view tenant) const {
    return root_ / absl::StrCat("t", internal::TenantHex(tenant));
  }
  fs::path SessionPath(const SessionKey& key) const {
    return TenantFolder(key.tenant) / absl::StrCat(key.id, kSuffix);
  }

  // A temp file no Put will rename any more: one of this host whose writer is not running (or is
  // this process's pid, which a store just opening has not used yet: an earlier incarnation in a
  // container), or any one older than kAbandonedAfter.
  bool Abandoned(const std::string& name, absl::Time modified) const {
    if (modified + kAbandonedAfter <= absl::Now()) return true;
    if (!absl::EndsWith(name, ".tmp")) return false;
    const std::vector<absl::string_view> parts =
        absl::StrSplit(absl::string_view(name).substr(0, name.size() - 4), '~');
    int pid = 0;
    if (parts.size() != 4 || parts[1] != host_ || !absl::SimpleAtoi(parts[2], &pid) || pid <= 0) {
      return false;
    }
    return pid == ::getpid() || (::kill(pid, 0) != 0 && errno == ESRCH);
  }

  absl::StatusOr<SessionRecord> PutImpl(const SessionKey& key,
                                        const std::shared_ptr<const std::string>& snapshot,
                                        const PutCondition& condition) {
    absl::StatusOr<SnapshotHeader> header =
        internal::CheckPut(key, snapshot.get(), condition, options_.max_session_bytes, "dir store");
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
    // Written before the lock is taken: the lock is held for a rename, not for the write.
    const fs::path temp = folder / absl::StrCat(".", key.id, "~", host_, "~", ::getpid(), "~",
                                                TempCounter().fetch_add(1), ".tmp");
    if (absl::Status written = WriteDurably(temp, *snapshot); !written.ok()) {
      ::unlink(temp.c_str());
      return written;
    }
    absl::StatusOr<SessionRecord> record = RenameIfCondition(key, temp, *header, condition);
    if (!record.ok()) ::unlink(temp.c_str());
    return record;
  }

  // Under the session's lock: checks `condition` against the file there now and renames `temp`
  // over it.
  absl::StatusOr<SessionRecord> RenameIfCondition(const SessionKey& key, const fs::path& temp,
                                                  const SnapshotHeader& header,
                                                  const PutCondition& condition) {
    const fs::path path = SessionPath(key);
    HGRN2_ASSIGN_OR_RETURN(StripeLocks::Held held, locks_.Lock(key, options_.dir_lock_timeout));
    if (condition.kind != PutCondition::Kind::kAny) {
      HGRN2_ASSIGN_OR_RETURN(std::optional<uint64_t> current, CurrentRevision(path));
      HGRN2_RETURN_IF_ERROR(internal::CheckCondition(key, condition, current));
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) return IoError("rename into", path, errno);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return IoError("stat", path, errno);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      UnindexLocked(key);
      IndexLocked(key, st, internal::Now(options_));
    }
    // The rename is durable only once the folder is; the lock is held until then, so no other
    // replica builds on a version a power loss could still take back.
    HGRN2_RETURN_IF_ERROR(SyncFolder(path.parent_path()));
    const absl::Time expires_at = options_.ttl > absl::ZeroDuration()
                                      ? ModificationTime(st) + options_.ttl
                                      : absl::InfiniteFuture();
    return internal::MakeRecord(key, header, static_cast<uint64_t>(st.st_size), expires_at);
  }

  // The revision of the session file now (nothing when there is none or it expired). A file that
  // holds no readable snapshot has no revision: only a Put without a condition replaces it.
  absl::StatusOr<std::optional<uint64_t>> CurrentRevision(const fs::path& path) const {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      if (errno == ENOENT) return std::nullopt;
      return IoError("open", path, errno);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return IoError("stat", path, errno);
    if (Expired(st)) return std::nullopt;
    absl::StatusOr<std::string> header_bytes = ReadHeaderBytes(fd.get(), path);
    if (!header_bytes.ok()) return header_bytes.status();
    absl::StatusOr<SnapshotHeader> header = ParseHeader(*header_bytes);
    if (!header.ok()) {
      return absl::AbortedError(absl::StrCat(
          "dir session store: ", path.string(), " holds no readable snapshot (",
          header.status().message(),
          "), so it has no revision to compare; only a save without a condition replaces it"));
    }
    return header->revision;
  }

  bool Expired(const struct stat& st) const {
    return options_.ttl > absl::ZeroDuration() &&
           ModificationTime(st) + options_.ttl <= internal::Now(options_);
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

  // Opens the session's file; NOT_FOUND when absent or expired (an expired file is removed, unless
  // a Put is replacing it right now).
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
    if (Expired(st)) {
      ::close(fd);
      if (std::optional<StripeLocks::Held> held = locks_.TryLock(key)) {
        // Only this version: a Put may have renamed a new file into place since the open.
        struct stat now_there;
        if (::stat(path.c_str(), &now_there) == 0 && now_there.st_ino == st.st_ino &&
            now_there.st_dev == st.st_dev && ::unlink(path.c_str()) == 0) {
          std::lock_guard<std::mutex> lock(mutex_);
          UnindexLocked(key);
          counters_.expirations.fetch_add(1, std::memory_order_relaxed);
        }
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
    absl::StatusOr<std::string> header_bytes = ReadHeaderBytes(fd.get(), path);
    if (!header_bytes.ok()) return header_bytes.status();
    absl::StatusOr<SnapshotHeader> header = ParseHeader(*header_bytes);
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

  void IndexLocked(const SessionKey& key, const struct stat& st, absl::Time last_used) {
    const int64_t size = static_cast<int64_t>(st.st_size);
    index_[Key(key.tenant, key.id)] = Indexed{size, last_used, st.st_dev, st.st_ino};
    bytes_ += size;
  }
  void UnindexLocked(const SessionKey& key) {
    auto it = index_.find(Key(key.tenant, key.id));
    if (it == index_.end()) return;
    bytes_ -= it->second.size;
    index_.erase(it);
  }

  // Deletes least recently used sessions other than `keep` until the folder is within its cap, each
  // under its lock and only while it is the version this process indexed (another replica's newer
  // save of it is indexed instead and kept).
  void Evict(const SessionKey& keep) {
    if (options_.dir_max_bytes <= 0) return;
    for (size_t tries = 0;; ++tries) {
      SessionKey victim;
      Indexed known;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (bytes_ <= options_.dir_max_bytes || index_.size() <= 1 || tries > index_.size()) {
          return;
        }
        auto oldest = index_.end();
        for (auto it = index_.begin(); it != index_.end(); ++it) {
          if (it->first.first == keep.tenant && it->first.second == keep.id) continue;
          if (oldest == index_.end() || it->second.last_used < oldest->second.last_used) {
            oldest = it;
          }
        }
        if (oldest == index_.end()) return;
        victim = SessionKey{oldest->first.first, oldest->first.second};
        known = oldest->second;
      }
      std::optional<StripeLocks::Held> held = locks_.TryLock(victim);
      const fs::path path = SessionPath(victim);
      struct stat st;
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = index_.find(Key(victim.tenant, victim.id));
      if (it == index_.end() || it->second.inode != known.inode) continue;  // changed meanwhile
      if (!held.has_value()) {
        it->second.last_used = internal::Now(options_);  // being saved now: not the oldest
        continue;
      }
      if (::stat(path.c_str(), &st) != 0) {
        UnindexLocked(victim);
        continue;
      }
      if (st.st_ino != known.inode || st.st_dev != known.device) {
        UnindexLocked(victim);  // replaced by another process: that version is kept
        IndexLocked(victim, st, internal::Now(options_));
        continue;
      }
      if (::unlink(path.c_str()) == 0) {
        UnindexLocked(victim);
        counters_.evictions.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  const SessionStoreOptions options_;
  const fs::path root_;
  const std::string host_;  // in temp file names
  StripeLocks locks_;
  mutable std::mutex mutex_;  // the index
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
