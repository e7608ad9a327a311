// The field checks shared by every front end (see request_checks.h).
#include "server/core/request_checks.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/engine.h"

namespace hgrn2::server {
namespace {

// Not a flag: session ids name files of the dir store and keys of the redis store, so their
// format is fixed.
constexpr size_t kMaxSessionIdBytes = 128;

}  // namespace

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status OverLimit(absl::string_view field, int64_t size, absl::string_view unit, int64_t limit,
                       absl::string_view flag) {
  return Invalid(field, absl::StrCat(size, " ", unit, ", the limit is ", limit, " (", flag, ")"));
}

absl::Status AboveMaximum(absl::string_view field, uint64_t value, int64_t limit,
                          absl::string_view flag) {
  return Invalid(field, absl::StrCat("must be at most ", limit, " (", flag, "), got ", value));
}

absl::Status CheckTextBytes(absl::string_view text, absl::string_view field,
                            const RequestLimits& limits) {
  if (static_cast<int64_t>(text.size()) > limits.max_text_bytes) {
    return OverLimit(field, static_cast<int64_t>(text.size()), "bytes", limits.max_text_bytes,
                     "--max-text-bytes");
  }
  return absl::OkStatus();
}

absl::Status CheckIds(absl::Span<const int32_t> ids, absl::string_view field,
                      const ModelConfig& config) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] = ", ids[i],
                                                     " is outside the vocabulary [0, ",
                                                     config.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLength(int64_t tokens, absl::string_view field, const ModelContext& model) {
  if (tokens > model.limits.max_prompt_tokens) {
    return OverLimit(field, tokens, "tokens", model.limits.max_prompt_tokens,
                     "--max-prompt-tokens");
  }
  return absl::OkStatus();
}

absl::StatusOr<const Tokenizer*> TokenizerFor(absl::string_view field, const ModelContext& model) {
  if (model.tokenizer == nullptr) {
    return Invalid(field,
                   "this model has no tokenizer (no tokenizer.json or tokenizer.model); "
                   "send token ids");
  }
  return model.tokenizer;
}

absl::StatusOr<std::vector<int32_t>> EncodeText(absl::string_view text, bool add_bos,
                                                absl::string_view field,
                                                const ModelContext& model) {
  HGRN2_ASSIGN_OR_RETURN(const Tokenizer* tokenizer, TokenizerFor(field, model));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, /*add_special=*/false);
  if (!ids.ok()) return Invalid(field, ids.status().message());
  if (add_bos && tokenizer->bos_id().has_value()) ids->insert(ids->begin(), *tokenizer->bos_id());
  return ids;
}

absl::Status CheckStopStrings(absl::Span<const std::string> stops, absl::string_view field,
                              const ModelContext& model) {
  if (stops.empty()) return absl::OkStatus();
  HGRN2_RETURN_IF_ERROR(TokenizerFor(field, model).status());
  const RequestLimits& limits = model.limits;
  if (static_cast<int64_t>(stops.size()) > limits.max_stop_strings) {
    return OverLimit(field, static_cast<int64_t>(stops.size()), "strings", limits.max_stop_strings,
                     "--max-stop-strings");
  }
  int64_t total_bytes = 0;
  for (size_t i = 0; i < stops.size(); ++i) {
    const std::string& stop = stops[i];
    const std::string element = absl::StrCat(field, "[", i, "]");
    if (stop.empty()) return Invalid(element, "empty");
    if (static_cast<int64_t>(stop.size()) > limits.max_stop_string_bytes) {
      return OverLimit(element, static_cast<int64_t>(stop.size()), "bytes",
                       limits.max_stop_string_bytes, "--max-stop-string-bytes");
    }
    total_bytes += static_cast<int64_t>(stop.size());
  }
  if (total_bytes > limits.max_stop_total_bytes) {
    return OverLimit(field, total_bytes, "bytes in all", limits.max_stop_total_bytes,
                     "--max-stop-total-bytes");
  }
  return absl::OkStatus();
}

absl::Status SessionsOff() {
  return absl::FailedPreconditionError("sessions are off on this server (--session-store none)");
}

absl::Status CheckSessionId(absl::string_view id, absl::string_view field) {
  if (id.empty()) return Invalid(field, "empty");
  if (id.size() > kMaxSessionIdBytes) {
    return Invalid(field, absl::StrCat(id.size(), " bytes, the limit is ", kMaxSessionIdBytes));
  }
  if (id.front() == '.') return Invalid(field, "must not start with '.'");
  for (char c : id) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
    if (!allowed) return Invalid(field, "only letters, digits and . _ : - are allowed");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequestIdOf(absl::string_view given, const RequestLimits& limits) {
  if (given.empty()) {
    thread_local std::mt19937_64 random(std::random_device{}());
    return absl::StrFormat("req-%016x", random());
  }
  if (static_cast<int32_t>(given.size()) > limits.max_request_id_bytes) {
    return OverLimit("request_id", static_cast<int64_t>(given.size()), "bytes",
                     limits.max_request_id_bytes, "--max-request-id-bytes");
  }
  for (char c : given) {
    if (c < 0x21 || c > 0x7e) {
      return Invalid("request_id", "only printable ASCII without spaces is allowed");
    }
  }
  return std::string(given);
}

absl::Status CheckLimits(const RequestLimits& limits) {
  const struct {
    const char* flag;
    int64_t value;
  } positive[] = {
      {"--max-prompt-tokens", limits.max_prompt_tokens},
      {"--max-new-tokens", limits.max_new_tokens},
      {"--max-stop-strings", limits.max_stop_strings},
      {"--max-stop-string-bytes", limits.max_stop_string_bytes},
      {"--max-stop-total-bytes", limits.max_stop_total_bytes},
      {"--max-stop-token-ids", limits.max_stop_token_ids},
      {"--max-logit-bias", limits.max_logit_bias},
      {"--max-request-id-bytes", limits.max_request_id_bytes},
      {"--max-text-bytes", limits.max_text_bytes},
      {"--max-n", limits.max_samples},
      {"--max-detokenize-ids", limits.max_detokenize_ids},
  };
  for (const auto& [flag, value] : positive) {
    if (value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " must be >= 1, got ", value));
    }
  }
  if (limits.default_max_new_tokens < 1 || limits.default_max_new_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--default-max-new-tokens must be in [1, --max-new-tokens = ", limits.max_new_tokens,
        "], got ", limits.default_max_new_tokens));
  }
  if (limits.max_logprobs < 0 || limits.max_logprobs > ScoreRequest::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("--max-logprobs must be in [0, ",
                                                   ScoreRequest::kMaxTopLogprobs, "], got ",
                                                   limits.max_logprobs));
  }
  return absl::OkStatus();
}

}  // namespace hgrn2::server
