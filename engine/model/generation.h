// One sequence at a time in the calling thread: generate a continuation, or score a prompt.
// The offline path of hgrn2-run and of tests; the server's batched path is the scheduler.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/forward_pass.h"
#include "engine/model/state_pool.h"
#include "engine/sampling/sampler.h"

namespace hgrn2 {

// Advances the state in `slot` through `tokens`, in pieces of at most the pass's max_tokens,
// and returns the logits after the last token (device, one row; valid until the next call).
absl::StatusOr<DeviceTensor> PrefillSequence(ForwardPass& pass, SlotId slot,
                                             absl::Span<const int32_t> tokens);

struct GenerationResult {
  std::vector<SampledToken> tokens;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;  // prompt through the first sampled token
  double decode_seconds = 0.0;   // the remaining tokens
};

// Generates from `prompt` (non-empty) in a fresh slot that is freed before returning.
absl::StatusOr<GenerationResult> GenerateSequence(ForwardPass& pass,
                                                  absl::Span<const int32_t> prompt,
                                                  const SamplingParams& sampling,
                                                  const StoppingParams& stopping);

// log p(tokens[t] | tokens[0..t)) for t = 1 .. size-1 (entry t-1 of the result), computed in a
// fresh slot that is freed before returning. `tokens` needs at least 2 ids.
absl::StatusOr<std::vector<float>> ScoreSequence(ForwardPass& pass,
                                                 absl::Span<const int32_t> tokens);

}  // namespace hgrn2
