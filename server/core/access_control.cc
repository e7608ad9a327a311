// AccessControl: the --api-keys parser, key checks in constant time, and the tenants' counters.
#include "server/core/access_control.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace hgrn2::server {
namespace {

constexpr absl::string_view kBearer = "Bearer ";
constexpr size_t kMaxTenantName = 64;

bool ValidTenantName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxTenantName) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// A limit: a non-negative integer.
absl::StatusOr<int64_t> LimitOf(const nlohmann::json& value, absl::string_view where) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0) {
    return Bad(where, absl::StrCat("expected an integer >= 0 (0 = no limit), got ", value.dump()));
  }
  return value.get<int64_t>();
}

absl::StatusOr<KeyHash> HashOf(const nlohmann::json& value, absl::string_view where) {
  if (!value.is_string()) return Bad(where, "expected a string of 64 hex digits");
  const std::string& hex = value.get_ref<const std::string&>();
  const bool hex_digits = std::all_of(hex.begin(), hex.end(), [](char c) {
    return absl::ascii_isxdigit(static_cast<unsigned char>(c));
  });
  if (hex.size() != 64 || !hex_digits) {
    // Not shown: a key pasted here by mistake must not reach the log.
    return Bad(where, absl::StrCat("expected 64 hex digits (the SHA-256 of the key), got ",
                                   hex.size(), " characters", hex_digits ? "" : ", not all hex"));
  }
  const std::string bytes = absl::HexStringToBytes(hex);
  KeyHash hash;
  std::copy(bytes.begin(), bytes.end(), hash.begin());
  return hash;
}

int64_t UnixSecond(absl::Time now) { return absl::ToUnixSeconds(now); }

}  // namespace

absl::StatusOr<ApiKeyConfig> ParseApiKeys(absl::string_view text) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Bad("the file", "not valid JSON");
  if (!json.is_object()) return Bad("the file", "expected a JSON object");
  for (const auto& [name, value] : json.items()) {
    if (name != "tenants" && name != "keys") {
      return Bad(name, "unknown field (expected \"tenants\" and \"keys\")");
    }
  }
  ApiKeyConfig config;
  const auto tenants = json.find("tenants");
  if (tenants == json.end() || !tenants->is_object() || tenants->empty()) {
    return Bad("tenants", "expected an object of one tenant or more, name: {limits}");
  }
  for (const auto& [name, limits] : tenants->items()) {
    const std::string where = absl::StrCat("tenants.", name);
    if (!ValidTenantName(name)) {
      return Bad(where, "a tenant name is 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'");
    }
    if (!limits.is_object()) return Bad(where, "expected an object of limits (may be {})");
    TenantLimits parsed;
    for (const auto& [field, value] : limits.items()) {
      const std::string field_where = absl::StrCat(where, ".", field);
      int64_t* target = field == "max_concurrent_requests" ? &parsed.max_concurrent_requests
                        : field == "tokens_per_minute"     ? &parsed.tokens_per_minute
                                                           : nullptr;
      if (target == nullptr) {
        return Bad(field_where,
                   "unknown limit (expected max_concurrent_requests, tokens_per_minute)");
      }
      absl::StatusOr<int64_t> limit = LimitOf(value, field_where);
      if (!limit.ok()) return limit.status();
      *target = *limit;
    }
    config.tenants.emplace(name, parsed);
  }
  const auto keys = json.find("keys");
  if (keys == json.end() || !keys->is_array() || keys->empty()) {
    return Bad("keys", "expected an array of one key or more, {\"sha256\": ..., \"tenant\": ...}");
  }
  for (size_t i = 0; i < keys->size(); ++i) {
    const nlohmann::json& entry = (*keys)[i];
    const std::string where = absl::StrCat("keys[", i, "]");
    if (!entry.is_object()) return Bad(where, "expected {\"sha256\": ..., \"tenant\": ...}");
    for (const auto& [field, value] : entry.items()) {
      if (field != "sha256" && field != "tenant" && field != "name") {
        return Bad(absl::StrCat(where, ".", field),
                   "unknown field (expected sha256, tenant and optionally name)");
      }
    }
    if (!entry.contains("sha256")) return Bad(absl::StrCat(where, ".sha256"), "missing");
    absl::StatusOr<KeyHash> hash = HashOf(entry["sha256"], absl::StrCat(where, ".sha256"));
    if (!hash.ok()) return hash.status();
    const auto tenant = entry.find("tenant");
    if (tenant == entry.end() || !tenant->is_string()) {
      return Bad(absl::StrCat(where, ".tenant"), "expected the name of a tenant");
    }
    const std::string& name = tenant->get_ref<const std::string&>();
    if (config.tenants.count(name) == 0) {
      return Bad(absl::StrCat(where, ".tenant"), absl::StrCat("\"", name, "\" is not in tenants"));
    }
    for (size_t j = 0; j < config.keys.size(); ++j) {
      if (config.keys[j].first == *hash) {
        return Bad(absl::StrCat(where, ".sha256"), absl::StrCat("the same key as keys[", j, "]"));
      }
    }
    config.keys.emplace_back(*hash, name);
  }
  return config;
}

absl::StatusOr<ApiKeyConfig> LoadApiKeys(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-keys ", path, ": cannot read it (", std::strerror(errno), ")"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<ApiKeyConfig> config = ParseApiKeys(text.str());
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-keys ", path, ": ", config.status().message()));
  }
  return config;
}

KeyHash HashApiKey(absl::string_view key) {
  KeyHash hash{};
  unsigned int size = 0;
  EVP_Digest(key.data(), key.size(), hash.data(), &size, EVP_sha256(), nullptr);
  return hash;
}

void TenantUsage::SetLimits(TenantLimits limits) {
  std::lock_guard<std::mutex> lock(mutex_);
  limits_ = limits;
}

absl::Status TenantUsage::TryBegin(const std::string& tenant, absl::Time now,
                                   absl::string_view& reached) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (limits_.max_concurrent_requests > 0 && active_ >= limits_.max_concurrent_requests) {
    reached = "max_concurrent_requests";
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant \"", tenant, "\" has ", active_,
                     " calls in progress, its limit (max_concurrent_requests ",
                     limits_.max_concurrent_requests, "); retry when one ends"));
  }
  if (limits_.tokens_per_minute > 0) {
    const int64_t used = TokensLocked(UnixSecond(now));
    if (used >= limits_.tokens_per_minute) {
      reached = "tokens_per_minute";
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant \"", tenant, "\" used ", used, " tokens in the last minute, its limit ",
          "(tokens_per_minute ", limits_.tokens_per_minute, "); retry later"));
    }
  }
  ++active_;
  return absl::OkStatus();
}

void TenantUsage::End() {
  std::lock_guard<std::mutex> lock(mutex_);
  --active_;
}

void TenantUsage::Charge(int64_t tokens, absl::Time now) {
  const int64_t second = UnixSecond(now);
  const size_t bucket = static_cast<size_t>(second % 60);
  std::lock_guard<std::mutex> lock(mutex_);
  if (seconds_[bucket] != second) {
    seconds_[bucket] = second;
    tokens_[bucket] = 0;
  }
  tokens_[bucket] += tokens;
}

int64_t TenantUsage::TokensInLastMinute(absl::Time now) {
  std::lock_guard<std::mutex> lock(mutex_);
  return TokensLocked(UnixSecond(now));
}

int64_t TenantUsage::TokensLocked(int64_t second) const {
  int64_t total = 0;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (seconds_[i] > second - 60 && seconds_[i] <= second) total += tokens_[i];
  }
  return total;
}

int64_t TenantUsage::active() {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_;
}

absl::StatusOr<std::unique_ptr<AccessControl>> AccessControl::Create(
    const std::string& api_keys_file, ServerMetrics* metrics) {
  std::unique_ptr<AccessControl> access(new AccessControl(api_keys_file, metrics));
  if (api_keys_file.empty()) return access;
  absl::StatusOr<ApiKeyConfig> config = LoadApiKeys(api_keys_file);
  if (!config.ok()) return config.status();
  access->Install(*config);
  return access;
}

absl::StatusOr<std::string> AccessControl::Reload() {
  if (path_.empty()) return std::string("no --api-keys: every caller stays admitted");
  absl::StatusOr<ApiKeyConfig> config = LoadApiKeys(path_);
  if (!config.ok()) return config.status();
  Install(*config);
  return absl::StrCat("--api-keys ", path_, ": ", config->keys.size(), " keys of ",
                      config->tenants.size(), " tenants");
}

void AccessControl::Install(const ApiKeyConfig& config) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, std::shared_ptr<TenantUsage>> usage;
  for (const auto& [name, limits] : config.tenants) {
    auto found = usage_.find(name);
    if (found != usage_.end()) {
      found->second->SetLimits(limits);
      usage.emplace(name, found->second);
    } else {
      usage.emplace(name, std::make_shared<TenantUsage>(limits));
    }
  }
  auto table = std::make_shared<Table>();
  for (const auto& [hash, tenant] : config.keys) {
    table->hashes.push_back(hash);
    table->tenants.push_back(tenant);
    table->usage.push_back(usage.at(tenant));
  }
  usage_ = std::move(usage);
  table_ = std::move(table);
}

absl::StatusOr<Admission> AccessControl::Admit(const std::optional<std::string>& authorization) {
  if (path_.empty()) return Admission();
  if (!authorization.has_value()) {
    metrics_->RecordRefusedCall("missing_api_key", "");
    return absl::UnauthenticatedError(
        "no API key: send \"authorization: Bearer <key>\" (gRPC metadata or HTTP header)");
  }
  const absl::string_view value(*authorization);
  if (!absl::StartsWith(value, kBearer) || value.size() == kBearer.size()) {
    metrics_->RecordRefusedCall("malformed_api_key", "");
    return absl::UnauthenticatedError(
        "the authorization metadata is not \"Bearer <key>\" (the API key is not shown)");
  }
  const KeyHash presented = HashApiKey(value.substr(kBearer.size()));
  std::shared_ptr<const Table> table;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    table = table_;
  }
  // Every stored hash is compared, in constant time each, whatever matched before: the time taken
  // says nothing about which key (or how much of one) was close.
  size_t match = table->hashes.size();
  for (size_t i = 0; i < table->hashes.size(); ++i) {
    const int differs = CRYPTO_memcmp(presented.data(), table->hashes[i].data(), presented.size());
    match = differs == 0 ? i : match;
  }
  if (match == table->hashes.size()) {
    metrics_->RecordRefusedCall("unknown_api_key", "");
    return absl::UnauthenticatedError("the API key is not recognized");
  }
  const std::string& tenant = table->tenants[match];
  const std::shared_ptr<TenantUsage>& usage = table->usage[match];
  absl::string_view reached;
  if (absl::Status admitted = usage->TryBegin(tenant, absl::Now(), reached); !admitted.ok()) {
    metrics_->RecordRefusedCall(std::string(reached), tenant);
    return admitted;
  }
  return Admission(tenant, usage);
}

}  // namespace hgrn2::server
