// EngineOptions::Validate.
#include "engine/scheduler/options.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {

absl::Status EngineOptions::Validate() const {
  auto positive = [](absl::string_view field, int64_t value) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("engine options: ", field, " must be positive, got ", value));
  };
  HGRN2_RETURN_IF_ERROR(positive("max_running", max_running));
  HGRN2_RETURN_IF_ERROR(positive("prefill_token_budget", prefill_token_budget));
  HGRN2_RETURN_IF_ERROR(positive("max_queued", max_queued));
  HGRN2_RETURN_IF_ERROR(positive("max_prompt_tokens", max_prompt_tokens));
  HGRN2_RETURN_IF_ERROR(positive("max_samples", max_samples));
  if (max_prefill_token_budget != kAutoPrefillBudget && max_prefill_token_budget != 0 &&
      max_prefill_token_budget < prefill_token_budget) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine options: max_prefill_token_budget must be 0, -1 (auto) or at least "
                     "prefill_token_budget (",
                     prefill_token_budget, "), got ", max_prefill_token_budget));
  }
  if (prefix_cache_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine options: prefix_cache_bytes must not be negative, got ", prefix_cache_bytes));
  }
  if (num_slots != 0 && num_slots < max_running) {
    return absl::InvalidArgumentError(absl::StrCat("engine options: num_slots (", num_slots,
                                                   ") must be 0 or at least ", "max_running (",
                                                   max_running, ")"));
  }
  if (swap_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine options: swap_slots must not be negative, got ", swap_slots));
  }
  if (warm_decode_batches < kWarmAllBatches) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine options: warm_decode_batches must be >= 0 (or kWarmAllBatches), got ",
                     warm_decode_batches));
  }
  if (prefill_chunk_size < ForwardPass::Options::kBackendDefault) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine options: prefill_chunk_size must be >= 0 (or kBackendDefault), got ",
                     prefill_chunk_size));
  }
  return absl::OkStatus();
}

}  // namespace hgrn2
