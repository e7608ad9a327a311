// The session stores: memory, dir and Redis (a real redis-server on a loopback port) alone and
// chained: put/get/replace/delete/list, tenants, refusals, LRU eviction by bytes, TTLs, restarts,
// concurrent replacement, two replicas sharing Redis, Redis down, and kill -9 durability.
#include "engine/session/session_store.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/session/store_internal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/session_test_support.h"
#include "tests/support/test_support.h"

namespace hgrn2::session {
namespace {

namespace fs = std::filesystem;
using ::hgrn2::testing::ExpectError;
using ::hgrn2::testing::TestSnapshotBytes;

std::shared_ptr<const std::string> Blob(uint64_t seed) {
  return std::make_shared<const std::string>(TestSnapshotBytes(seed));
}
const size_t kBlobBytes = TestSnapshotBytes(0).size();
// A snapshot of `seed` as revision `revision`.
std::shared_ptr<const std::string> Rev(uint64_t seed, uint64_t revision) {
  return std::make_shared<const std::string>(TestSnapshotBytes(seed, DType::kF32, revision));
}

// This host's name as the dir store writes it into temp file names.
std::string HostInTempNames() {
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  std::string host;
  for (const char* c = name; *c != '\0' && host.size() < 64; ++c) {
    host.push_back(std::isalnum(static_cast<unsigned char>(*c)) || *c == '-' ? *c : '-');
  }
  return host;
}

// A pid no process has now: a child's, after it exited and was reaped.
pid_t DeadPid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

// Runs redis-cli with `args` against `port`; its output.
std::string RedisCli(int port, const std::string& args) {
  const std::string command = absl::StrCat("redis-cli -p ", port, " ", args, " 2>&1");
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[256];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) out += buffer;
    ::pclose(pipe);
  }
  return std::string(absl::StripTrailingAsciiWhitespace(out));
}

// Every session of `tenant`, listed two at a time as ListSessions pages through them: each page
// holds at most two, the next page starts after the last id the previous one looked at, and
// only the last page has no next_after.
absl::StatusOr<std::vector<SessionRecord>> ListAll(SessionStore& store, absl::string_view tenant) {
  std::vector<SessionRecord> all;
  std::string after;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<SessionPage> page = store.List(tenant, after, 2);
    if (!page.ok()) return page.status();
    EXPECT_LE(page->records.size(), 2u);
    for (SessionRecord& record : page->records) {
      EXPECT_GT(record.key.id, after);
      EXPECT_TRUE(page->next_after.empty() || record.key.id <= page->next_after);
      EXPECT_EQ(record.key.tenant, tenant);
      all.push_back(std::move(record));
    }
    if (page->next_after.empty()) return all;
    EXPECT_GT(page->next_after, after);
    after = page->next_after;
  }
  return absl::InternalError("more than 1000 pages");
}

std::vector<std::string> Ids(const absl::StatusOr<std::vector<SessionRecord>>& records) {
  EXPECT_TRUE(records.ok()) << records.status();
  std::vector<std::string> ids;
  if (records.ok()) {
    for (const SessionRecord& r : *records) ids.push_back(r.key.id);
  }
  return ids;
}

// A redis-server of its own on a free loopback port, no persistence; stopped with the object.
class RedisServer {
 public:
  static bool Installed() { return ::access(Binary().c_str(), X_OK) == 0; }
  static std::string Binary() {
    for (const char* dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
      const std::string path = absl::StrCat(dir, "/redis-server");
      if (::access(path.c_str(), X_OK) == 0) return path;
    }
    return "/usr/bin/redis-server";
  }

  explicit RedisServer(int port = 0) : port_(port == 0 ? testing::FreeLoopbackPort() : port) {
    Start();
  }
  ~RedisServer() { Stop(); }

  void Start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string port = absl::StrCat(port_);
      ::execl(Binary().c_str(), "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", "/tmp",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && !Accepting(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(Accepting()) << "redis-server did not start on port " << port_;
  }
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
  int port() const { return port_; }
  std::string url() const { return absl::StrCat("redis://127.0.0.1:", port_); }

 private:
  bool Accepting() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    return ok;
  }

  int port_;
  pid_t pid_ = 0;
};

// A clock the tests move by hand, on top of the real one (the dir store compares with mtimes).
struct TestClock {
  std::shared_ptr<std::atomic<int64_t>> offset_s = std::make_shared<std::atomic<int64_t>>(0);
  std::function<absl::Time()> fn() const {
    auto offset = offset_s;
    return [offset] { return absl::Now() + absl::Seconds(offset->load()); };
  }
  void Advance(absl::Duration d) { offset_s->fetch_add(absl::ToInt64Seconds(d)); }
};

// Every store and chain through the same behaviour. The parameter is the kinds, joined by '+'.
class SessionStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (RedisServer::Installed()) redis_ = new RedisServer();
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  void SetUp() override {
    if (absl::StrContains(GetParam(), "redis") && redis_ == nullptr) {
      GTEST_SKIP() << "redis-server is not installed (apt-get install redis-server)";
    }
    if (redis_ != nullptr) FlushRedis();
  }

  SessionStoreOptions Options() {
    SessionStoreOptions options;
    options.kinds = absl::StrSplit(GetParam(), '+');
    options.dir = (hgrn2::testing::MakeTempDir() / "sessions").string();
    if (redis_ != nullptr) options.redis_url = redis_->url();
    options.clock = clock_.fn();
    return options;
  }
  std::unique_ptr<SessionStore> Make(const SessionStoreOptions& options) {
    absl::StatusOr<std::unique_ptr<SessionStore>> store = MakeSessionStore(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  void FlushRedis() { ASSERT_EQ(RedisCli(redis_->port(), "FLUSHALL"), "OK"); }

  static RedisServer* redis_;
  TestClock clock_;
};
RedisServer* SessionStoreTest::redis_ = nullptr;

TEST_P(SessionStoreTest, PutGetReplaceDeleteList) {
  auto store = Make(Options());
  const SessionKey a{"", "chat-1"}, b{"", "chat:2"}, c{"", "a.b_c-3"};
  ExpectError(store->Get(a).status(), absl::StatusCode::kNotFound, {"session \"chat-1\""});
  ASSERT_TRUE(store->Put(a, Blob(1)).ok());
  ASSERT_TRUE(store->Put(b, Blob(2)).ok());
  ASSERT_TRUE(store->Put(c, Blob(3)).ok());
  EXPECT_EQ(**store->Get(a), *Blob(1));
  EXPECT_EQ(**store->Get(b), *Blob(2));

  absl::StatusOr<SessionRecord> record = store->Info(a);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->key, a);
  EXPECT_EQ(record->size_bytes, kBlobBytes);
  EXPECT_EQ(record->num_tokens, 101u);
  EXPECT_EQ(record->saved_at, absl::FromUnixMicros(1700000000000001));
  EXPECT_EQ(record->expires_at, absl::InfiniteFuture());
  EXPECT_EQ(record->model_fingerprint, hgrn2::testing::TestFingerprint().ToHex());
  EXPECT_EQ(record->state_dtype, "f32");

  ASSERT_TRUE(store->Put(a, Blob(4)).ok());  // replace
  EXPECT_EQ(**store->Get(a), *Blob(4));
  EXPECT_EQ(store->Info(a)->num_tokens, 104u);
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("a.b_c-3", "chat-1", "chat:2"));

  ASSERT_TRUE(store->Delete(b).ok());
  ExpectError(store->Delete(b), absl::StatusCode::kNotFound, {"chat:2"});
  ExpectError(store->Get(b).status(), absl::StatusCode::kNotFound, {"chat:2"});
  ExpectError(store->Info(b).status(), absl::StatusCode::kNotFound, {"chat:2"});
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("a.b_c-3", "chat-1"));

  const SessionStoreStats stats = store->Stats();
  EXPECT_EQ(stats.saves, 4);
  EXPECT_EQ(stats.errors, 0);
  EXPECT_GE(stats.hits, 3);
  EXPECT_GE(stats.misses, 2);
  if (stats.sessions >= 0) {
    EXPECT_EQ(stats.sessions, 2);
    EXPECT_EQ(stats.bytes, static_cast<int64_t>(2 * kBlobBytes));
  }
}

// A page holds the sessions after `after`, by id, at most `limit` (at least one), and names
// where the next page starts while more follow.
TEST_P(SessionStoreTest, ListsAPageAtATime) {
  auto store = Make(Options());
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(store->Put({"t", absl::StrCat("s", i)}, Blob(i)).ok());
  ASSERT_TRUE(store->Put({"u", "s0"}, Blob(9)).ok());
  auto page_ids = [&](absl::string_view tenant, absl::string_view after, size_t limit) {
    absl::StatusOr<SessionPage> page = store->List(tenant, after, limit);
    EXPECT_TRUE(page.ok()) << page.status();
    std::vector<std::string> ids;
    if (!page.ok()) return ids;
    for (const SessionRecord& r : page->records) ids.push_back(r.key.id);
    ids.push_back(absl::StrCat("next=", page->next_after));
    return ids;
  };
  EXPECT_THAT(page_ids("t", "", 2), ::testing::ElementsAre("s1", "s2", "next=s2"));
  EXPECT_THAT(page_ids("t", "s2", 2), ::testing::ElementsAre("s3", "s4", "next=s4"));
  EXPECT_THAT(page_ids("t", "s4", 2), ::testing::ElementsAre("s5", "next="));
  EXPECT_THAT(page_ids("t", "s5", 2), ::testing::ElementsAre("next="));
  EXPECT_THAT(page_ids("t", "s10", 2), ::testing::ElementsAre("s2", "s3", "next=s3"));
  EXPECT_THAT(page_ids("t", "", 0), ::testing::ElementsAre("s1", "next=s1"));
  EXPECT_THAT(page_ids("t", "", 5), ::testing::ElementsAre("s1", "s2", "s3", "s4", "s5", "next="));
  EXPECT_THAT(page_ids("u", "", 100), ::testing::ElementsAre("s0", "next="));
  EXPECT_THAT(page_ids("v", "", 100), ::testing::ElementsAre("next="));
  ASSERT_TRUE(store->Delete({"t", "s3"}).ok());
  EXPECT_THAT(page_ids("t", "s2", 2), ::testing::ElementsAre("s4", "s5", "next="));
}

TEST_P(SessionStoreTest, TenantsAreSeparate) {
  auto store = Make(Options());
  const std::string odd_tenant("key/../\0:*?", 11);
  ASSERT_TRUE(store->Put({"alice", "s"}, Blob(1)).ok());
  ASSERT_TRUE(store->Put({"bob", "s"}, Blob(2)).ok());
  ASSERT_TRUE(store->Put({odd_tenant, "s"}, Blob(3)).ok());
  EXPECT_EQ(**store->Get({"alice", "s"}), *Blob(1));
  EXPECT_EQ(**store->Get({"bob", "s"}), *Blob(2));
  EXPECT_EQ(**store->Get({odd_tenant, "s"}), *Blob(3));
  EXPECT_EQ(store->Get({"", "s"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Ids(ListAll(*store, "alice")), ::testing::ElementsAre("s"));
  EXPECT_THAT(Ids(ListAll(*store, "carol")), ::testing::IsEmpty());
  ASSERT_TRUE(store->Delete({"alice", "s"}).ok());
  EXPECT_EQ(**store->Get({"bob", "s"}), *Blob(2));
}

TEST_P(SessionStoreTest, RefusesBadPuts) {
  SessionStoreOptions options = Options();
  options.max_session_bytes = static_cast<int64_t>(kBlobBytes);
  auto store = Make(options);
  ExpectError(store->Put({"", ".hidden"}, Blob(1)).status(), absl::StatusCode::kInvalidArgument,
              {"must not start with '.'"});
  ExpectError(store->Put({"", "a/b"}, Blob(1)).status(), absl::StatusCode::kInvalidArgument,
              {"[A-Za-z0-9._:-]", "byte 1 is 0x2f"});
  ExpectError(store->Put({"", std::string(129, 'x')}, Blob(1)).status(),
              absl::StatusCode::kInvalidArgument, {"1 to 128 bytes"});
  ExpectError(store->Put({"", "x"}, std::make_shared<const std::string>("hello")).status(),
              absl::StatusCode::kInvalidArgument, {"not an hgrn2 session snapshot"});
  ExpectError(
      store->Put({"", "x"}, std::make_shared<const std::string>(*Blob(1) + std::string(2, '\0')))
          .status(),
      absl::StatusCode::kResourceExhausted, {"larger than the store takes"});
  ExpectError(
      store->Put({"", "x"}, std::make_shared<const std::string>(Blob(1)->substr(0, 200))).status(),
      absl::StatusCode::kInvalidArgument, {"snapshot of 200 bytes, its header says 416"});
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::IsEmpty());
}

TEST_P(SessionStoreTest, ConcurrentReplacementIsNeverTorn) {
  auto store = Make(Options());
  const SessionKey key{"t", "hot"};
  const auto a = Blob(10), b = Blob(11);
  ASSERT_TRUE(store->Put(key, a).ok());
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, bad{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 40 || reads.load() < 200; ++i) {
        EXPECT_TRUE(store->Put(key, (i + w) % 2 ? a : b).ok());
      }
    });
  }
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&] {
      while (!done.load()) {
        absl::StatusOr<std::shared_ptr<const std::string>> got = store->Get(key);
        if (!got.ok() || (**got != *a && **got != *b)) bad.fetch_add(1);
        absl::StatusOr<SessionRecord> info = store->Info(key);
        if (!info.ok() || (info->num_tokens != 110 && info->num_tokens != 111)) bad.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  threads[0].join();
  threads[1].join();
  done.store(true);
  for (size_t i = 2; i < threads.size(); ++i) threads[i].join();
  EXPECT_EQ(bad.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_GT(reads.load(), 0);
}

// A Put's condition is a compare-and-set on the revision: a failed one stores nothing and names
// both revisions; a conflict is not a store error.
TEST_P(SessionStoreTest, ConditionalPutIsACompareAndSet) {
  auto store = Make(Options());
  const SessionKey a{"t", "a"}, b{"t", "b"}, old{"t", "old"};
  absl::StatusOr<SessionRecord> first = store->Put(a, Rev(1, 1), PutCondition::Absent());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->revision, 1u);
  EXPECT_EQ(first->num_tokens, 101u);
  EXPECT_EQ(first->header_checksum, ParseHeader(*Rev(1, 1))->header_checksum);
  ExpectError(store->Put(a, Rev(2, 2), PutCondition::Absent()).status(), absl::StatusCode::kAborted,
              {"session \"a\" already exists (revision 1)", "nothing was saved"});
  ExpectError(store->Put(a, Rev(2, 6), PutCondition::AtRevision(5)).status(),
              absl::StatusCode::kAborted,
              {"session \"a\" is at revision 1, not revision 5", "nothing was saved"});
  EXPECT_EQ(**store->Get(a), *Rev(1, 1));
  absl::StatusOr<SessionRecord> second = store->Put(a, Rev(2, 2), PutCondition::AtRevision(1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->revision, 2u);
  EXPECT_EQ(store->Info(a)->revision, 2u);
  EXPECT_EQ(**store->Get(a), *Rev(2, 2));
  ExpectError(store->Put(b, Rev(3, 3), PutCondition::AtRevision(2)).status(),
              absl::StatusCode::kAborted,
              {"session \"b\" no longer exists", "since revision 2", "nothing was saved"});
  ExpectError(store->Get(b).status(), absl::StatusCode::kNotFound, {"\"b\""});
  EXPECT_EQ(store->Stats().errors, 0);  // a conflict is not a store error
  // The revision must go up from the one expected.
  ExpectError(store->Put(a, Rev(4, 2), PutCondition::AtRevision(2)).status(),
              absl::StatusCode::kInvalidArgument, {"revision 2 cannot replace revision 2"});
  ExpectError(store->Put(b, Rev(4, 0), PutCondition::Absent()).status(),
              absl::StatusCode::kInvalidArgument, {"revision 0 cannot replace no session"});
  // A snapshot of before revisions (version 1) is at revision 0, and can be built on.
  ASSERT_TRUE(store->Put(old, Blob(5)).ok());
  EXPECT_EQ(store->Info(old)->revision, 0u);
  ASSERT_TRUE(store->Put(old, Rev(6, 1), PutCondition::AtRevision(0)).ok());
  // A deleted session is absent again.
  ASSERT_TRUE(store->Delete(a).ok());
  ExpectError(store->Put(a, Rev(7, 3), PutCondition::AtRevision(2)).status(),
              absl::StatusCode::kAborted, {"no longer exists"});
  ASSERT_TRUE(store->Put(a, Rev(7, 1), PutCondition::Absent()).ok());
}

// Threads, each through its own store object where the kind can be shared (a replica each),
// read the revision and save the next one: each revision is won exactly once, the others are
// ABORTED, and the session ends at the last winner's revision.
TEST_P(SessionStoreTest, RacingConditionalPutsWinEachRevisionOnce) {
  const SessionStoreOptions options = Options();
  std::vector<std::unique_ptr<SessionStore>> replicas;
  const int count = GetParam() == "memory" ? 1 : 3;
  for (int i = 0; i < count; ++i) replicas.push_back(Make(options));
  const SessionKey key{"t", "raced"};
  ASSERT_TRUE(replicas[0]->Put(key, Rev(0, 1), PutCondition::Absent()).ok());
  constexpr int kThreads = 6, kAttempts = 15;
  std::mutex mutex;
  std::map<uint64_t, int> wins;  // revision -> saves that stored it
  int conflicts = 0;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SessionStore& store = *replicas[static_cast<size_t>(t) % replicas.size()];
      for (int i = 0; i < kAttempts; ++i) {
        absl::StatusOr<SessionRecord> now = store.Info(key);
        if (!now.ok()) {
          std::lock_guard<std::mutex> lock(mutex);
          errors.push_back(now.status().ToString());
          continue;
        }
        absl::StatusOr<SessionRecord> saved = store.Put(key, Rev(100 * t + i, now->revision + 1),
                                                        PutCondition::AtRevision(now->revision));
        std::lock_guard<std::mutex> lock(mutex);
        if (saved.ok()) {
          ++wins[saved->revision];
        } else if (absl::IsAborted(saved.status()) &&
                   absl::StrContains(saved.status().message(), "as this save expected")) {
          ++conflicts;
        } else {
          errors.push_back(saved.status().ToString());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(errors, ::testing::IsEmpty());
  const uint64_t last = replicas.back()->Info(key)->revision;
  EXPECT_EQ(last, wins.size() + 1);
  for (uint64_t revision = 2; revision <= last; ++revision) {
    EXPECT_EQ(wins[revision], 1) << "revision " << revision;
  }
  EXPECT_EQ(static_cast<int>(wins.size()) + conflicts, kThreads * kAttempts);
  for (const auto& replica : replicas) {
    absl::StatusOr<std::shared_ptr<const std::string>> got = replica->Get(key);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(ParseHeader(**got)->revision, last);  // no replica serves an older copy
  }
  std::printf("%s: %zu saves won, %d refused\n", GetParam().c_str(), wins.size(), conflicts);
}

INSTANTIATE_TEST_SUITE_P(Kinds, SessionStoreTest,
                         ::testing::Values("memory", "dir", "redis", "memory+dir", "memory+redis"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string name = param_info.param;
                           std::replace(name.begin(), name.end(), '+', '_');
                           return name;
                         });

TEST(MemorySessionStore, EvictsLeastRecentlyUsedByBytes) {
  SessionStoreOptions options;
  options.memory_bytes = static_cast<int64_t>(3 * kBlobBytes);
  auto store = *MakeSessionStore(options);
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(store->Put({"", absl::StrCat("s", i)}, Blob(i)).ok());
  ASSERT_TRUE(store->Get({"", "s1"}).ok());  // s2 is now the least recently used
  ASSERT_TRUE(store->Put({"", "s4"}, Blob(4)).ok());
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("s1", "s3", "s4"));
  EXPECT_EQ(store->Stats().evictions, 1);
  EXPECT_EQ(store->Stats().bytes, static_cast<int64_t>(3 * kBlobBytes));
  // A snapshot larger than the whole budget is refused, and the key's old version is gone.
  options.memory_bytes = static_cast<int64_t>(kBlobBytes) - 1;
  auto small = *MakeSessionStore(options);
  ExpectError(small->Put({"", "s"}, Blob(1)).status(), absl::StatusCode::kResourceExhausted,
              {"larger than its budget"});
}

TEST(MemorySessionStore, ForgetsAfterTheTtl) {
  TestClock clock;
  SessionStoreOptions options;
  options.ttl = absl::Seconds(60);
  options.clock = clock.fn();
  auto store = *MakeSessionStore(options);
  ASSERT_TRUE(store->Put({"", "old"}, Blob(1)).ok());
  clock.Advance(absl::Seconds(40));
  ASSERT_TRUE(store->Put({"", "new"}, Blob(2)).ok());
  EXPECT_LT(store->Info({"", "old"})->expires_at, absl::Now() + absl::Seconds(61));
  clock.Advance(absl::Seconds(30));
  ExpectError(store->Get({"", "old"}).status(), absl::StatusCode::kNotFound, {"old"});
  EXPECT_EQ(**store->Get({"", "new"}), *Blob(2));
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("new"));
  EXPECT_EQ(store->Stats().expirations, 1);
}

SessionStoreOptions DirOptions(const fs::path& dir) {
  SessionStoreOptions options;
  options.kinds = {"dir"};
  options.dir = dir.string();
  return options;
}

TEST(DirSessionStore, ANewInstanceSeesEverythingAndCleansTempFiles) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  {
    auto store = *MakeSessionStore(DirOptions(dir));
    ASSERT_TRUE(store->Put({"", "a"}, Blob(1)).ok());
    ASSERT_TRUE(store->Put({"alice", "b"}, Blob(2)).ok());
    ASSERT_TRUE(store->Put({"alice", "b"}, Blob(3)).ok());
  }
  // What a crash mid-Put leaves: a temp file, whole or partial, named by its writer. Removed: a
  // dead process's of this host, and anyone's older than an hour. Kept: a living process's, and
  // a recent one of another host (another replica on the shared folder may be writing it).
  const std::string host = HostInTempNames();
  const fs::path leftover = dir / "t" / absl::StrCat(".c~", host, "~", DeadPid(), "~0.tmp");
  const fs::path live = dir / "t" / absl::StrCat(".c~", host, "~1~0.tmp");  // init is alive
  const fs::path other_host = dir / "t" / ".c~another-host~1234~0.tmp";
  const fs::path old_other_host = dir / "t" / ".d~another-host~1234~0.tmp";
  const fs::path old_format = dir / "t" / ".e.1234.0.tmp";
  for (const fs::path& temp : {leftover, live, other_host, old_other_host, old_format}) {
    hgrn2::testing::WriteFile(temp, Blob(4)->substr(0, 100));
  }
  for (const fs::path& temp : {old_other_host, old_format}) {
    fs::last_write_time(temp, fs::file_time_type::clock::now() - std::chrono::hours(2));
  }
  hgrn2::testing::WriteFile(dir / "t" / "notes.txt", "not a session");
  auto store = *MakeSessionStore(DirOptions(dir));
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_FALSE(fs::exists(old_other_host));
  EXPECT_FALSE(fs::exists(old_format));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other_host));
  EXPECT_EQ(**store->Get({"", "a"}), *Blob(1));
  EXPECT_EQ(**store->Get({"alice", "b"}), *Blob(3));
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("a"));
  EXPECT_THAT(Ids(ListAll(*store, "alice")), ::testing::ElementsAre("b"));
  EXPECT_EQ(store->Stats().sessions, 2);
  EXPECT_TRUE(fs::exists(dir / ("t" + std::string("616c696365")) / "b.hgrn2s"));
}

// A corrupt file is left out of a listing, and the page goes on past it.
TEST(DirSessionStore, ListingPassesOverACorruptFile) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  auto store = *MakeSessionStore(DirOptions(dir));
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(store->Put({"", absl::StrCat("s", i)}, Blob(i)).ok());
  {
    std::ofstream corrupt(dir / "t" / "s2.hgrn2s", std::ios::binary | std::ios::trunc);
    corrupt << "not a snapshot";
  }
  absl::StatusOr<SessionPage> first = store->List("", "", 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(Ids(first->records), ::testing::ElementsAre("s1"));
  EXPECT_EQ(first->next_after, "s1");
  absl::StatusOr<SessionPage> second = store->List("", "s1", 1);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Ids(second->records), ::testing::ElementsAre("s3"));
  EXPECT_EQ(second->next_after, "");
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("s1", "s3"));
}

TEST(DirSessionStore, EvictsLeastRecentlyUsedBeyondItsCap) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  SessionStoreOptions options = DirOptions(dir);
  options.dir_max_bytes = static_cast<int64_t>(3 * kBlobBytes);
  auto store = *MakeSessionStore(options);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(store->Put({"", absl::StrCat("s", i)}, Blob(i)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(store->Get({"", "s1"}).ok());
  ASSERT_TRUE(store->Put({"", "s4"}, Blob(4)).ok());
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("s1", "s3", "s4"));
  EXPECT_EQ(store->Stats().evictions, 1);
  EXPECT_FALSE(fs::exists(dir / "t" / "s2.hgrn2s"));
}

TEST(DirSessionStore, ForgetsAfterTheTtl) {
  TestClock clock;
  SessionStoreOptions options = DirOptions(hgrn2::testing::MakeTempDir() / "sessions");
  options.ttl = absl::Seconds(60);
  options.clock = clock.fn();
  auto store = *MakeSessionStore(options);
  ASSERT_TRUE(store->Put({"", "s"}, Blob(1)).ok());
  EXPECT_LT(store->Info({"", "s"})->expires_at, absl::Now() + absl::Seconds(61));
  clock.Advance(absl::Seconds(61));
  ExpectError(store->Get({"", "s"}).status(), absl::StatusCode::kNotFound, {"\"s\""});
  EXPECT_FALSE(fs::exists(fs::path(options.dir) / "t" / "s.hgrn2s"));
  EXPECT_EQ(store->Stats().expirations, 1);
}

// A child process Puts sessions, each the next revision of its id (a compare-and-set), and
// reports each acknowledged one; it is killed with SIGKILL at an arbitrary moment (holding the
// lock, or writing a temp file, or neither), and a new store must hold every acknowledged session
// intact, take Puts at once (no lock left behind) and have removed the dead child's temp files.
TEST(DirSessionStore, AcknowledgedPutsSurviveKill9) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  int acks[2];
  ASSERT_EQ(::pipe(acks), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(acks[0]);
    auto store = MakeSessionStore(DirOptions(dir));
    if (!store.ok()) ::_exit(1);
    for (uint32_t i = 0;; ++i) {
      const SessionKey key{"", absl::StrCat("s", i % 50)};  // replacements too
      const uint64_t revision = i / 50 + 1;                 // the seed's revision
      const PutCondition condition =
          revision == 1 ? PutCondition::Absent() : PutCondition::AtRevision(revision - 1);
      if (!(*store)->Put(key, Rev(i, revision), condition).ok()) ::_exit(2);
      if (::write(acks[1], &i, sizeof(i)) != sizeof(i)) ::_exit(3);
    }
  }
  ::close(acks[1]);
  std::map<std::string, uint32_t> acknowledged;  // id -> seed of its last acknowledged Put
  uint32_t i = 0;
  while (acknowledged.size() < 50 || i < 80) {
    ASSERT_EQ(::read(acks[0], &i, sizeof(i)), static_cast<ssize_t>(sizeof(i)));
    acknowledged[absl::StrCat("s", i % 50)] = i;
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  // Puts acknowledged after the last one read: the pipe may hold a few more.
  uint32_t late;
  while (::read(acks[0], &late, sizeof(late)) == static_cast<ssize_t>(sizeof(late))) {
    acknowledged[absl::StrCat("s", late % 50)] = late;
  }
  ::close(acks[0]);
  SessionStoreOptions options = DirOptions(dir);
  options.dir_lock_timeout = absl::Seconds(1);
  auto store = *MakeSessionStore(options);
  for (const auto& [id, seed] : acknowledged) {
    absl::StatusOr<std::shared_ptr<const std::string>> got = store->Get({"", id});
    ASSERT_TRUE(got.ok()) << id << ": " << got.status();
    // The acknowledged version, or the next one if its Put finished before the kill.
    const uint64_t revision = seed / 50 + 1;
    const bool acknowledged_or_next =
        **got == *Rev(seed, revision) || **got == *Rev(seed + 50, revision + 1);
    EXPECT_TRUE(acknowledged_or_next) << id;
    EXPECT_TRUE(Parse(**got, hgrn2::testing::TestExpectation()).ok()) << id;
    const uint64_t now = ParseHeader(**got)->revision;
    EXPECT_TRUE(store->Put({"", id}, Rev(seed, now + 1), PutCondition::AtRevision(now)).ok()) << id;
  }
  for (const fs::directory_entry& file : fs::directory_iterator(dir / "t")) {
    EXPECT_NE(file.path().filename().string()[0], '.') << "temp file left: " << file.path();
  }
}

// The folder's lock holds across processes: while another process holds a session's lock, a Put
// waits dir_lock_timeout and then is UNAVAILABLE naming the lock (reads go on); once the holder
// is killed (kill -9: no chance to unlock), the kernel has dropped its lock and Puts go through.
TEST(DirSessionStore, TheLockHoldsAcrossProcessesAndDiesWithItsHolder) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  SessionStoreOptions options = DirOptions(dir);
  options.dir_lock_timeout = absl::Milliseconds(300);
  auto store = *MakeSessionStore(options);
  ASSERT_TRUE(store->Put({"", "s"}, Rev(1, 1), PutCondition::Absent()).ok());
  int locked[2];
  ASSERT_EQ(::pipe(locked), 0);
  const pid_t holder = ::fork();
  if (holder == 0) {
    const int fd = ::open((dir / ".locks").c_str(), O_RDWR);
    struct flock whole = {};
    whole.l_type = F_WRLCK;
    whole.l_whence = SEEK_SET;  // l_len 0: every byte, so every session's lock
    if (fd < 0 || ::fcntl(fd, F_SETLKW, &whole) != 0) ::_exit(1);
    const char ready = 'L';
    if (::write(locked[1], &ready, 1) != 1) ::_exit(2);
    ::pause();
    ::_exit(0);
  }
  char ready = 0;
  ASSERT_EQ(::read(locked[0], &ready, 1), 1);
  const absl::Time start = absl::Now();
  ExpectError(store->Put({"", "s"}, Rev(2, 2), PutCondition::AtRevision(1)).status(),
              absl::StatusCode::kUnavailable,
              {"session \"s\" is locked", ".locks", "longer than 300ms"});
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(**store->Get({"", "s"}), *Rev(1, 1));  // the old version, whole
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ::close(locked[0]);
  ::close(locked[1]);
  ASSERT_TRUE(store->Put({"", "s"}, Rev(2, 2), PutCondition::AtRevision(1)).ok());
  ASSERT_TRUE(store->Delete({"", "s"}).ok());
}

// Processes (not threads) racing on one session through their own stores on one folder: each
// revision is won by exactly one of them.
TEST(DirSessionStore, ConditionalPutsRaceAcrossProcesses) {
  const fs::path dir = hgrn2::testing::MakeTempDir() / "sessions";
  const SessionKey key{"", "raced"};
  ASSERT_TRUE(
      (*MakeSessionStore(DirOptions(dir)))->Put(key, Rev(0, 1), PutCondition::Absent()).ok());
  int wins[2];
  ASSERT_EQ(::pipe(wins), 0);
  constexpr int kProcesses = 3, kAttempts = 40;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    if (child == 0) {
      ::close(wins[0]);
      auto store = MakeSessionStore(DirOptions(dir));
      if (!store.ok()) ::_exit(1);
      for (int i = 0; i < kAttempts; ++i) {
        absl::StatusOr<SessionRecord> now = (*store)->Info(key);
        if (!now.ok()) ::_exit(2);
        absl::StatusOr<SessionRecord> saved = (*store)->Put(
            key, Rev(100 * p + i, now->revision + 1), PutCondition::AtRevision(now->revision));
        if (saved.ok()) {
          const uint64_t revision = saved->revision;
          if (::write(wins[1], &revision, sizeof(revision)) != sizeof(revision)) ::_exit(3);
        } else if (!absl::IsAborted(saved.status())) {
          ::_exit(4);
        }
      }
      ::_exit(0);
    }
    children.push_back(child);
  }
  ::close(wins[1]);
  std::map<uint64_t, int> won;
  uint64_t revision;
  while (::read(wins[0], &revision, sizeof(revision)) == static_cast<ssize_t>(sizeof(revision))) {
    ++won[revision];
  }
  ::close(wins[0]);
  for (pid_t child : children) {
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  const uint64_t last = (*MakeSessionStore(DirOptions(dir)))->Info(key)->revision;
  EXPECT_EQ(last, won.size() + 1);
  for (uint64_t r = 2; r <= last; ++r) EXPECT_EQ(won[r], 1) << "revision " << r;
  std::printf("%zu of %d conditional saves won\n", won.size(), kProcesses * kAttempts);
}

// Two replicas' chains (a memory cache each) on one folder: a cached copy that the other
// replica has replaced since is never served (a stale resume), nor one it deleted.
TEST(ChainSessionStore, ACacheInFrontOfASharedFolderServesNoStaleCopy) {
  SessionStoreOptions options = DirOptions(hgrn2::testing::MakeTempDir() / "sessions");
  options.kinds = {"memory", "dir"};
  auto replica_a = *MakeSessionStore(options);
  auto replica_b = *MakeSessionStore(options);
  EXPECT_TRUE(replica_a->shared());
  ASSERT_TRUE(replica_a->Put({"", "s"}, Rev(1, 1), PutCondition::Absent()).ok());
  EXPECT_EQ(**replica_b->Get({"", "s"}), *Rev(1, 1));  // now cached in b too
  EXPECT_EQ(**replica_a->Get({"", "s"}), *Rev(1, 1));  // and in a
  ASSERT_TRUE(replica_b->Put({"", "s"}, Rev(2, 2), PutCondition::AtRevision(1)).ok());
  EXPECT_EQ(**replica_a->Get({"", "s"}), *Rev(2, 2));  // a's copy is stale: not served
  ExpectError(replica_a->Put({"", "s"}, Rev(3, 2), PutCondition::AtRevision(1)).status(),
              absl::StatusCode::kAborted, {"is at revision 2, not revision 1"});
  ASSERT_TRUE(replica_a->Delete({"", "s"}).ok());
  ExpectError(replica_b->Get({"", "s"}).status(), absl::StatusCode::kNotFound, {"\"s\""});
}

TEST(ChainSessionStore, FillsTheCacheAndDeletesEverywhere) {
  SessionStoreOptions options = DirOptions(hgrn2::testing::MakeTempDir() / "sessions");
  options.kinds = {"memory", "dir"};
  options.memory_bytes = static_cast<int64_t>(2 * kBlobBytes);
  auto store = *MakeSessionStore(options);
  EXPECT_THAT(store->Describe(), ::testing::HasSubstr("memory (0 MiB) + dir "));
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(store->Put({"", absl::StrCat("s", i)}, Blob(i)).ok());
  // s1 fell out of the memory store; the dir store has it and refills the cache.
  EXPECT_EQ(**store->Get({"", "s1"}), *Blob(1));
  EXPECT_THAT(Ids(ListAll(*store, "")), ::testing::ElementsAre("s1", "s2", "s3"));
  const SessionStoreStats stats = store->Stats();
  EXPECT_EQ(stats.sessions, 3);  // the last store's
  EXPECT_EQ(stats.saves, 3);
  EXPECT_EQ(stats.hits, 1);
  EXPECT_GE(stats.evictions, 1);
  ASSERT_TRUE(store->Delete({"", "s1"}).ok());
  ExpectError(store->Get({"", "s1"}).status(), absl::StatusCode::kNotFound, {"s1"});
}

class RedisSessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::Installed()) {
      GTEST_SKIP() << "redis-server is not installed (apt-get install redis-server)";
    }
    redis_ = std::make_unique<RedisServer>();
  }
  SessionStoreOptions Options(std::vector<std::string> kinds = {"redis"}) {
    SessionStoreOptions options;
    options.kinds = std::move(kinds);
    options.redis_url = redis_->url();
    options.redis_timeout = absl::Seconds(1);
    return options;
  }
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(RedisSessionStoreTest, TwoReplicasShareSessions) {
  // Each replica has a memory cache in front of the shared Redis.
  auto replica_a = *MakeSessionStore(Options({"memory", "redis"}));
  auto replica_b = *MakeSessionStore(Options({"memory", "redis"}));
  ASSERT_TRUE(replica_a->Put({"", "s"}, Blob(1)).ok());
  EXPECT_EQ(**replica_b->Get({"", "s"}), *Blob(1));  // now cached in b too
  ASSERT_TRUE(replica_a->Put({"", "s"}, Blob(2)).ok());
  EXPECT_EQ(**replica_b->Get({"", "s"}), *Blob(2));  // b's cached copy is stale: not served
  ASSERT_TRUE(replica_a->Delete({"", "s"}).ok());
  ExpectError(replica_b->Get({"", "s"}).status(), absl::StatusCode::kNotFound, {"\"s\""});
  EXPECT_THAT(Ids(ListAll(*replica_b, "")), ::testing::IsEmpty());
}

TEST_F(RedisSessionStoreTest, TtlIsRedisOwn) {
  SessionStoreOptions options = Options();
  options.ttl = absl::Milliseconds(300);
  auto store = *MakeSessionStore(options);
  ASSERT_TRUE(store->Put({"", "s"}, Rev(1, 1), PutCondition::Absent()).ok());
  ASSERT_TRUE(store->Put({"", "s"}, Rev(2, 2), PutCondition::AtRevision(1)).ok());
  absl::StatusOr<SessionRecord> record = store->Info({"", "s"});
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->revision, 2u);
  EXPECT_GT(record->expires_at, absl::Now());  // the conditional save set a TTL too
  EXPECT_LT(record->expires_at, absl::Now() + absl::Milliseconds(400));
  std::this_thread::sleep_for(std::chrono::milliseconds(450));
  ExpectError(store->Get({"", "s"}).status(), absl::StatusCode::kNotFound, {"\"s\""});
}

TEST_F(RedisSessionStoreTest, DownIsUnavailableAndReconnects) {
  auto store = *MakeSessionStore(Options());
  ASSERT_TRUE(store->Put({"", "s"}, Blob(1)).ok());
  redis_->Stop();
  const std::string where = absl::StrCat("127.0.0.1:", redis_->port());
  ExpectError(store->Get({"", "s"}).status(), absl::StatusCode::kUnavailable,
              {"redis session store", where});
  ExpectError(store->Put({"", "s"}, Blob(2)).status(), absl::StatusCode::kUnavailable, {where});
  ExpectError(ListAll(*store, "").status(), absl::StatusCode::kUnavailable, {where});
  ExpectError(store->Delete({"", "s"}), absl::StatusCode::kUnavailable, {where});
  EXPECT_GE(store->Stats().errors, 4);
  redis_->Start();  // the same port, empty (no persistence)
  ExpectError(store->Get({"", "s"}).status(), absl::StatusCode::kNotFound, {"\"s\""});
  ASSERT_TRUE(store->Put({"", "s"}, Blob(3)).ok());
  EXPECT_EQ(**store->Get({"", "s"}), *Blob(3));
}

// A Put runs the compare-and-set script by its SHA-1 (EVALSHA); a Redis that does not know it
// (restarted, SCRIPT FLUSH) gets it with EVAL, which teaches it again. kRedisPutScriptSha1 is the
// SHA-1 Redis computes for the script.
TEST_F(RedisSessionStoreTest, PutsRunTheScriptBySha1AndTeachItAfterAFlush) {
  auto store = *MakeSessionStore(Options());
  const std::string sha1 = internal::kRedisPutScriptSha1;
  EXPECT_EQ(RedisCli(redis_->port(), "SCRIPT EXISTS " + sha1), "0");
  ASSERT_TRUE(store->Put({"", "s"}, Rev(1, 1), PutCondition::Absent()).ok());
  EXPECT_EQ(RedisCli(redis_->port(), "SCRIPT EXISTS " + sha1), "1");
  EXPECT_EQ(RedisCli(redis_->port(), "SCRIPT FLUSH"), "OK");
  ASSERT_TRUE(store->Put({"", "s"}, Rev(2, 2), PutCondition::AtRevision(1)).ok());
  EXPECT_EQ(RedisCli(redis_->port(), "SCRIPT EXISTS " + sha1), "1");
  ExpectError(store->Put({"", "s"}, Rev(3, 2), PutCondition::AtRevision(1)).status(),
              absl::StatusCode::kAborted, {"is at revision 2, not revision 1"});
  EXPECT_EQ(store->Info({"", "s"})->revision, 2u);
  // A value that is not a snapshot has no revision: only a Put without a condition replaces it.
  EXPECT_EQ(RedisCli(redis_->port(), "SET hgrn2:session::junk not-a-snapshot"), "OK");
  ExpectError(store->Put({"", "junk"}, Rev(4, 1), PutCondition::Absent()).status(),
              absl::StatusCode::kAborted, {"holds no readable snapshot"});
  ASSERT_TRUE(store->Put({"", "junk"}, Rev(4, 1)).ok());
}

TEST(RedisSessionStore, BadUrlsAreRefused) {
  SessionStoreOptions options;
  options.kinds = {"redis"};
  for (const char* url : {"http://x:1", "redis://", "redis://h:99999", "redis://h:1/x"}) {
    options.redis_url = url;
    ExpectError(MakeSessionStore(options).status(), absl::StatusCode::kInvalidArgument,
                {"redis_url", url});
  }
  options.redis_url = "redis://:secret@127.0.0.1:1/2";
  EXPECT_TRUE(MakeSessionStore(options).ok());  // connects on first use
}

TEST(SessionStoreOptions, ValidateNamesTheField) {
  SessionStoreOptions options;
  options.kinds = {"memory", "disk"};
  ExpectError(options.Validate(), absl::StatusCode::kInvalidArgument, {"unknown kind \"disk\""});
  options.kinds = {"dir"};
  ExpectError(options.Validate(), absl::StatusCode::kInvalidArgument, {"dir"});
  options.kinds = {"memory"};
  options.ttl = absl::Seconds(-1);
  ExpectError(options.Validate(), absl::StatusCode::kInvalidArgument, {"ttl"});
}

}  // namespace
}  // namespace hgrn2::session
