// AccessControl: API keys naming tenants, and each tenant's limits (concurrent requests, tokens
// per minute); the --api-keys file's format and parser; Admission, what an admitted call holds.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/metrics.h"

namespace hgrn2::server {

// A tenant's limits; 0 means no limit.
struct TenantLimits {
  // Calls of the tenant in progress at once (every Inference and Sessions RPC, from the handler's
  // start to the call's end).
  int64_t max_concurrent_requests = 0;
  // Model tokens (prompt tokens fed and tokens generated, by Generate and Score) over the last 60
  // seconds, counted in one-second steps. A call arriving while the tenant's count is at or over
  // the limit is refused; a call already admitted runs to its end, so the count may pass the limit
  // by what calls in flight use.
  int64_t tokens_per_minute = 0;
};

using KeyHash = std::array<unsigned char, 32>;  // SHA-256

// The parsed --api-keys file:
//   {"tenants": {"acme": {"max_concurrent_requests": 8, "tokens_per_minute": 100000},
//                "lab": {}},
//    "keys": [{"sha256": "<64 hex digits: SHA-256 of the key>", "tenant": "acme"}, ...]}
// Tenant names are 1-64 of [A-Za-z0-9._-]. Keys are stored only as hashes (`printf %s "$KEY" |
// sha256sum`); a tenant may have several (rotation). Unknown fields are errors (a misspelt limit
// must not silently mean "no limit").
struct ApiKeyConfig {
  std::map<std::string, TenantLimits> tenants;
  std::vector<std::pair<KeyHash, std::string>> keys;  // hash, tenant
};

// InvalidArgument naming the bad entry ("keys[2].tenant: ...").
absl::StatusOr<ApiKeyConfig> ParseApiKeys(absl::string_view json);
// The file read and parsed; messages start with "--api-keys PATH: ".
absl::StatusOr<ApiKeyConfig> LoadApiKeys(const std::string& path);

// SHA-256 of an API key.
KeyHash HashApiKey(absl::string_view key);

// One tenant's counters; shared by AccessControl and the calls it admitted, so it outlives a
// reload that drops the tenant. Thread-safety: any thread.
class TenantUsage {
 public:
  explicit TenantUsage(TenantLimits limits) : limits_(limits) {}
  void SetLimits(TenantLimits limits);
  // Takes a concurrency slot unless a limit is reached: OK, or RESOURCE_EXHAUSTED naming the
  // limit (also set in `reached`, "max_concurrent_requests" or "tokens_per_minute"). `tenant` is
  // for the message.
  absl::Status TryBegin(const std::string& tenant, absl::Time now, absl::string_view& reached);
  void End();
  void Charge(int64_t tokens, absl::Time now);
  // Tokens charged in the minute before `now`.
  int64_t TokensInLastMinute(absl::Time now);
  int64_t active();

 private:
  int64_t TokensLocked(int64_t second) const;

  std::mutex mutex_;
  TenantLimits limits_;
  int64_t active_ = 0;
  // Tokens charged per second: bucket i holds second seconds_[i] (Unix), for i = second % 60.
  std::array<int64_t, 60> tokens_{};
  std::array<int64_t, 60> seconds_{};
};

// What an admitted call holds from its start to its end: the tenant (its sessions' namespace)
// and, with API keys, a concurrency slot, given back by Release() or the destructor. Used by one
// call at a time.
class Admission {
 public:
  Admission() = default;
  Admission(std::string tenant, std::shared_ptr<TenantUsage> usage)
      : tenant_(std::move(tenant)), usage_(std::move(usage)) {}
  Admission(Admission&& other) noexcept = default;
  Admission& operator=(Admission&& other) noexcept {
    Release();
    tenant_ = std::move(other.tenant_);
    usage_ = std::move(other.usage_);
    return *this;
  }
  ~Admission() { Release(); }

  const std::string& tenant() const { return tenant_; }
  // Counts model tokens against the tenant's tokens per minute.
  void ChargeTokens(int64_t tokens) const {
    if (usage_ != nullptr && tokens > 0) usage_->Charge(tokens, absl::Now());
  }
  void Release() {
    if (usage_ != nullptr) usage_->End();
    usage_.reset();
  }

 private:
  std::string tenant_;
  std::shared_ptr<TenantUsage> usage_;  // null: no API keys, nothing to give back
};

// Thread-safety: any thread.
class AccessControl {
 public:
  // Without a file (empty path) every caller is admitted as tenant "" with no limits. `metrics`
  // counts refusals; it must outlive this.
  static absl::StatusOr<std::unique_ptr<AccessControl>> Create(const std::string& api_keys_file,
                                                               ServerMetrics* metrics);

  // The call's tenant, with a concurrency slot taken; or UNAUTHENTICATED (no key, a malformed
  // authorization header, an unknown key; the key is never repeated) or RESOURCE_EXHAUSTED (the
  // tenant's limit named).
  // `authorization` is the call's "authorization" metadata or header as sent (unset: absent).
  absl::StatusOr<Admission> Admit(const std::optional<std::string>& authorization);

  // Reads the keys file again; when it parses, it replaces the keys and limits (counters of
  // tenants still present carry over). A line for the log, or why nothing changed. OK and a note
  // when no file is configured.
  absl::StatusOr<std::string> Reload();

  bool enabled() const { return !path_.empty(); }

 private:
  // The keys in force; the three vectors are parallel.
  struct Table {
    std::vector<KeyHash> hashes;
    std::vector<std::string> tenants;
    std::vector<std::shared_ptr<TenantUsage>> usage;
  };

  AccessControl(std::string path, ServerMetrics* metrics)
      : path_(std::move(path)), metrics_(metrics) {}
  void Install(const ApiKeyConfig& config);

  const std::string path_;
  ServerMetrics* const metrics_;
  std::mutex mutex_;
  std::shared_ptr<const Table> table_;                         // guarded by mutex_
  std::map<std::string, std::shared_ptr<TenantUsage>> usage_;  // guarded by mutex_
};

}  // namespace hgrn2::server
