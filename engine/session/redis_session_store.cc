// The Redis session store: one key per session (hgrn2:session:<hex tenant>:<id>), shared by every
// replica that points at the same server; TTLs kept by Redis itself (SET ... PX). A Put is one
// Lua script (EVALSHA, EVAL when Redis does not have it): it compares the stored snapshot's
// revision, which lies in its header, with the one expected and sets the new snapshot, as one
// step on the Redis server. The revision is inside the value, so the two are never torn.
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "engine/session/session_store.h"
#include "engine/session/store_internal.h"
#include "hiredis/hiredis.h"

namespace hgrn2::session {
namespace {

constexpr absl::string_view kKeyPrefix = "hgrn2:session:";

// SessionStore::Put's condition, checked where the session is: the header's revision bytes
// (docs/snapshot-format.md: offset 104, 1-based 105..112 in Lua) against the expected ones, so no
// number is parsed in Lua. Changing a byte of it changes kRedisPutScriptSha1 (a test checks).
}  // namespace

namespace internal {
const char kRedisPutScript[] =
    R"lua(-- hgrn2 session put: KEYS[1] the session; ARGV[1] the condition (any, absent, revision),
-- ARGV[2] the expected revision as the header holds it (8 bytes, little-endian), ARGV[3] the
-- snapshot, ARGV[4] the TTL in milliseconds (0: none). {1} when stored, else {0, the header now}.
local header = redis.call('GETRANGE', KEYS[1], 0, 127)
if ARGV[1] == 'absent' then
  if header ~= '' then return {0, header} end
elseif ARGV[1] == 'revision' then
  if header == '' or string.sub(header, 105, 112) ~= ARGV[2] then return {0, header} end
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return {1, ''}
)lua";
const char kRedisPutScriptSha1[] = "00495d8c93301a68bcca692358356075420dcbfd";
}  // namespace internal

namespace {

// The revision as a header holds it: 8 bytes, little-endian.
std::string RevisionBytes(uint64_t revision) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(revision >> (8 * i));
  return bytes;
}

struct RedisAddress {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string user;      // ACL user (Redis 6), with password
  std::string password;  // empty: no AUTH
};

// redis://[[user]:password@]host[:port][/db]
absl::StatusOr<RedisAddress> ParseRedisUrl(absl::string_view url) {
  const std::string whole(url);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("session store redis_url \"", whole, "\": ", why,
                     " (expected redis://[[user]:password@]host[:port][/db])"));
  };
  if (!absl::ConsumePrefix(&url, "redis://")) return bad("not a redis:// URL");
  RedisAddress address;
  if (const size_t at = url.rfind('@'); at != absl::string_view::npos) {
    absl::string_view credentials = url.substr(0, at);
    url.remove_prefix(at + 1);
    const size_t colon = credentials.find(':');
    if (colon == absl::string_view::npos) return bad("credentials need a ':' before the password");
    address.user = std::string(credentials.substr(0, colon));
    address.password = std::string(credentials.substr(colon + 1));
  }
  if (const size_t slash = url.find('/'); slash != absl::string_view::npos) {
    absl::string_view db = url.substr(slash + 1);
    url = url.substr(0, slash);
    if (!db.empty() && (!absl::SimpleAtoi(db, &address.db) || address.db < 0)) {
      return bad("the database is not a number");
    }
  }
  if (const size_t colon = url.rfind(':'); colon != absl::string_view::npos) {
    if (!absl::SimpleAtoi(url.substr(colon + 1), &address.port) || address.port <= 0 ||
        address.port > 65535) {
      return bad("the port is not a number in [1, 65535]");
    }
    url = url.substr(0, colon);
  }
  if (url.empty()) return bad("no host");
  address.host = std::string(url);
  return address;
}

struct FreeReply {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;

struct FreeContext {
  void operator()(redisContext* context) const { redisFree(context); }
};
using Context = std::unique_ptr<redisContext, FreeContext>;

class RedisSessionStore final : public SessionStore {
 public:
  RedisSessionStore(const SessionStoreOptions& options, RedisAddress address)
      : options_(options),
        address_(std::move(address)),
        where_(absl::StrCat(address_.host, ":", address_.port)) {}

  absl::StatusOr<SessionRecord> Put(const SessionKey& key,
                                    std::shared_ptr<const std::string> snapshot,
                                    const PutCondition& condition) override {
    absl::StatusOr<SessionRecord> record = PutImpl(key, snapshot, condition);
    counters_.CountPut(record.status());
    return record;
  }

  absl::StatusOr<std::shared_ptr<const std::string>> Get(const SessionKey& key) override {
    absl::StatusOr<std::shared_ptr<const std::string>> snapshot = GetImpl(key);
    counters_.CountGet(snapshot.status());
    return snapshot;
  }

  absl::StatusOr<SessionRecord> Info(const SessionKey& key) override {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    absl::StatusOr<std::optional<SessionRecord>> record = Record(key, /*leave_out_corrupt=*/false);
    if (!record.ok()) return record.status();
    if (!record->has_value()) return internal::SessionNotFound(key);
    return **std::move(record);
  }

  absl::Status Delete(const SessionKey& key) override {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    const std::string redis_key = RedisKey(key);
    absl::StatusOr<std::vector<Reply>> replies = Run({{"DEL", redis_key}});
    if (!replies.ok()) return Count(replies.status());
    if ((*replies)[0]->type != REDIS_REPLY_INTEGER || (*replies)[0]->integer == 0) {
      return internal::SessionNotFound(key);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<SessionPage> List(absl::string_view tenant, absl::string_view after,
                                   size_t limit) override {
    const std::string prefix = absl::StrCat(kKeyPrefix, internal::TenantHex(tenant), ":");
    const std::string pattern = absl::StrCat(prefix, "*");  // hex tenants and ids hold no glob
    std::vector<std::string> ids;
    std::string cursor = "0";
    do {
      absl::StatusOr<std::vector<Reply>> replies =
          Run({{"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}});
      if (!replies.ok()) return Count(replies.status());
      const redisReply* reply = (*replies)[0].get();
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        return Count(absl::UnavailableError(Prefix("unexpected reply to SCAN")));
      }
      cursor = std::string(reply->element[0]->str, reply->element[0]->len);
      const redisReply* batch = reply->element[1];
      for (size_t i = 0; i < batch->elements; ++i) {
        absl::string_view redis_key(batch->element[i]->str, batch->element[i]->len);
        if (!absl::ConsumePrefix(&redis_key, prefix)) continue;
        ids.emplace_back(redis_key);
      }
    } while (cursor != "0");
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());  // SCAN may repeat keys
    return internal::ReadPage(ids, after, limit, [&](const std::string& id) {
      return Record(SessionKey{std::string(tenant), id}, /*leave_out_corrupt=*/true);
    });
  }

  SessionStoreStats Stats() const override { return counters_.Snapshot(-1, -1); }
  std::string Describe() const override { return absl::StrCat("redis ", where_); }
  bool shared() const override { return true; }

 private:
  std::string RedisKey(const SessionKey& key) const {
    return absl::StrCat(kKeyPrefix, internal::TenantHex(key.tenant), ":", key.id);
  }
  std::string Prefix(absl::string_view message) const {
    return absl::StrCat("redis session store ", where_, ": ", message);
  }
  absl::Status Count(absl::Status status) {
    counters_.CountError(status);
    return status;
  }

  absl::StatusOr<SessionRecord> PutImpl(const SessionKey& key,
                                        const std::shared_ptr<const std::string>& snapshot,
                                        const PutCondition& condition) {
    absl::StatusOr<SnapshotHeader> header = internal::CheckPut(
        key, snapshot.get(), condition, options_.max_session_bytes, "redis store");
    if (!header.ok()) return header.status();
    const std::string redis_key = RedisKey(key);
    const absl::string_view kind = condition.kind == PutCondition::Kind::kAbsent     ? "absent"
                                   : condition.kind == PutCondition::Kind::kRevision ? "revision"
                                                                                     : "any";
    const std::string expected = RevisionBytes(condition.revision);
    const std::string ttl_ms =
        options_.ttl > absl::ZeroDuration()
            ? absl::StrCat(std::max<int64_t>(1, options_.ttl / absl::Milliseconds(1)))
            : "0";
    // EVALSHA first: the script's text is not sent with every save. Redis forgets scripts when it
    // restarts (or on SCRIPT FLUSH): then EVAL, which also makes it known again.
    const std::string keys = "1";
    absl::StatusOr<std::vector<Reply>> replies =
        Run({{"EVALSHA", internal::kRedisPutScriptSha1, keys, redis_key, kind, expected, *snapshot,
              ttl_ms}});
    if (!replies.ok() && absl::StrContains(replies.status().message(), "NOSCRIPT")) {
      replies = Run({{"EVAL", internal::kRedisPutScript, keys, redis_key, kind, expected, *snapshot,
                      ttl_ms}});
    }
    if (!replies.ok()) return replies.status();
    const redisReply* reply = (*replies)[0].get();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
      return absl::UnavailableError(Prefix("unexpected reply to the put script"));
    }
    if (reply->element[0]->integer != 1) {
      const absl::string_view now(reply->element[1]->str, reply->element[1]->len);
      if (now.empty()) return internal::CheckCondition(key, condition, std::nullopt);
      absl::StatusOr<SnapshotHeader> current = ParseHeader(now);
      if (!current.ok()) {
        return absl::AbortedError(absl::StrCat(
            Prefix(redis_key), " holds no readable snapshot (", current.status().message(),
            "), so it has no revision to compare; only a save without a condition replaces it"));
      }
      absl::Status conflict = internal::CheckCondition(key, condition, current->revision);
      if (conflict.ok()) return absl::InternalError(Prefix("the put script refused a match"));
      return conflict;
    }
    const absl::Time expires_at =
        options_.ttl > absl::ZeroDuration() ? absl::Now() + options_.ttl : absl::InfiniteFuture();
    return internal::MakeRecord(key, *header, snapshot->size(), expires_at);
  }

  absl::StatusOr<std::shared_ptr<const std::string>> GetImpl(const SessionKey& key) {
    if (absl::Status valid = ValidateSessionId(key.id); !valid.ok()) return valid;
    const std::string redis_key = RedisKey(key);
    absl::StatusOr<std::vector<Reply>> replies = Run({{"GET", redis_key}});
    if (!replies.ok()) return replies.status();
    const redisReply* reply = (*replies)[0].get();
    if (reply->type == REDIS_REPLY_NIL) return internal::SessionNotFound(key);
    if (reply->type != REDIS_REPLY_STRING) {
      return absl::UnavailableError(Prefix("unexpected reply to GET"));
    }
    return std::make_shared<const std::string>(reply->str, reply->len);
  }

  // The record of `key`, nothing when it does not exist: header, size and TTL read in one
  // MULTI/EXEC, so the three agree even while the session is being replaced. A corrupt value is
  // nothing with `leave_out_corrupt` (a listing), an error naming it otherwise.
  absl::StatusOr<std::optional<SessionRecord>> Record(const SessionKey& key,
                                                      bool leave_out_corrupt) {
    const std::string header_end = absl::StrCat(kSnapshotHeaderBytes - 1);
    const std::string redis_key = RedisKey(key);
    absl::StatusOr<std::vector<Reply>> replies = Run({{"MULTI"},
                                                      {"GETRANGE", redis_key, "0", header_end},
                                                      {"STRLEN", redis_key},
                                                      {"PTTL", redis_key},
                                                      {"EXEC"}});
    if (!replies.ok()) return Count(replies.status());
    const redisReply* exec = replies->back().get();
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 3 ||
        exec->element[0]->type != REDIS_REPLY_STRING ||
        exec->element[1]->type != REDIS_REPLY_INTEGER ||
        exec->element[2]->type != REDIS_REPLY_INTEGER) {
      return Count(absl::UnavailableError(Prefix("unexpected reply to MULTI/EXEC")));
    }
    const redisReply* header_reply = exec->element[0];
    if (header_reply->len == 0) return std::nullopt;  // gone (deleted, expired, never there)
    absl::StatusOr<SnapshotHeader> header =
        ParseHeader(absl::string_view(header_reply->str, header_reply->len));
    if (!header.ok()) {
      if (leave_out_corrupt) return std::nullopt;
      return absl::Status(header.status().code(),
                          absl::StrCat(Prefix(redis_key), ": ", header.status().message()));
    }
    const long long ttl_ms = exec->element[2]->integer;
    const absl::Time expires_at =
        ttl_ms >= 0 ? absl::Now() + absl::Milliseconds(ttl_ms) : absl::InfiniteFuture();
    return internal::MakeRecord(key, *header, static_cast<uint64_t>(exec->element[1]->integer),
                                expires_at);
  }

  // Sends the commands in one round trip on a pooled connection and returns their replies. Any
  // failure is UNAVAILABLE naming the server; the connection is dropped and the next call
  // reconnects.
  absl::StatusOr<std::vector<Reply>> Run(
      const std::vector<std::vector<absl::string_view>>& commands) {
    absl::StatusOr<Context> context = Acquire();
    if (!context.ok()) return context.status();
    for (const std::vector<absl::string_view>& command : commands) {
      std::vector<const char*> argv;
      std::vector<size_t> lengths;
      for (absl::string_view arg : command) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
      }
      if (redisAppendCommandArgv(context->get(), static_cast<int>(argv.size()), argv.data(),
                                 lengths.data()) != REDIS_OK) {
        return Broken(std::move(*context));
      }
    }
    std::vector<Reply> replies;
    for (size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(context->get(), &raw) != REDIS_OK || raw == nullptr) {
        return Broken(std::move(*context), /*waited_for_reply=*/true);
      }
      replies.emplace_back(static_cast<redisReply*>(raw));
    }
    Release(std::move(*context));
    for (const Reply& reply : replies) {
      if (reply->type == REDIS_REPLY_ERROR) {
        const std::string error(reply->str, reply->len);
        if (absl::StartsWith(error, "OOM")) {
          return absl::ResourceExhaustedError(Prefix(error));
        }
        return absl::UnavailableError(Prefix(error));
      }
    }
    return replies;
  }

  absl::StatusOr<Context> Acquire() {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      room_.wait(lock, [&] { return !idle_.empty() || open_ < options_.redis_connections; });
      if (!idle_.empty()) {
        Context context = std::move(idle_.back());
        idle_.pop_back();
        return context;
      }
      ++open_;
    }
    absl::StatusOr<Context> context = Connect();
    if (!context.ok()) {
      std::lock_guard<std::mutex> lock(mutex_);
      --open_;
      room_.notify_one();
    }
    return context;
  }

  absl::StatusOr<Context> Connect() {
    Context context(redisConnectWithTimeout(address_.host.c_str(), address_.port,
                                            absl::ToTimeval(options_.redis_timeout)));
    if (context == nullptr) return absl::UnavailableError(Prefix("cannot allocate a connection"));
    if (context->err != 0) {
      return absl::UnavailableError(Prefix(absl::StrCat("cannot connect: ", context->errstr)));
    }
    if (redisSetTimeout(context.get(), absl::ToTimeval(options_.redis_timeout)) != REDIS_OK) {
      return absl::UnavailableError(Prefix(absl::StrCat("cannot set timeout: ", context->errstr)));
    }
    std::vector<std::vector<std::string>> setup;
    if (!address_.password.empty()) {
      if (address_.user.empty()) {
        setup.push_back({"AUTH", address_.password});
      } else {
        setup.push_back({"AUTH", address_.user, address_.password});
      }
    }
    if (address_.db != 0) setup.push_back({"SELECT", absl::StrCat(address_.db)});
    for (const std::vector<std::string>& command : setup) {
      std::vector<const char*> argv;
      std::vector<size_t> lengths;
      for (const std::string& arg : command) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
      }
      Reply reply(static_cast<redisReply*>(redisCommandArgv(
          context.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
      if (reply == nullptr) {
        return absl::UnavailableError(Prefix(absl::StrCat(command[0], ": ", context->errstr)));
      }
      if (reply->type == REDIS_REPLY_ERROR) {
        return absl::UnavailableError(
            Prefix(absl::StrCat(command[0], ": ", std::string(reply->str, reply->len))));
      }
    }
    return context;
  }

  void Release(Context context) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(context));
    room_.notify_one();
  }

  // waited_for_reply: hiredis reports a reply that did not come within the timeout as an I/O
  // error with EAGAIN ("Resource temporarily unavailable"); that is said plainly instead.
  absl::Status Broken(Context context, bool waited_for_reply = false) {
    const int error_number = errno;
    std::string why =
        context->err != 0 ? std::string(context->errstr) : std::string("connection failed");
    if (waited_for_reply && context->err == REDIS_ERR_IO &&
        (error_number == EAGAIN || error_number == EWOULDBLOCK)) {
      why = absl::StrCat("no reply within ", absl::FormatDuration(options_.redis_timeout));
    }
    absl::Status status = absl::UnavailableError(Prefix(why));
    context.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    --open_;
    room_.notify_one();
    return status;
  }

  const SessionStoreOptions options_;
  const RedisAddress address_;
  const std::string where_;  // host:port, for messages
  std::mutex mutex_;
  std::condition_variable room_;
  std::vector<Context> idle_;
  int32_t open_ = 0;  // connections idle or in use
  internal::StoreCounters counters_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> MakeRedisSessionStore(
    const SessionStoreOptions& options) {
  absl::StatusOr<RedisAddress> address = ParseRedisUrl(options.redis_url);
  if (!address.ok()) return address.status();
  return std::make_unique<RedisSessionStore>(options, *std::move(address));
}

}  // namespace hgrn2::session
