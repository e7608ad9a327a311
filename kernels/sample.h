// Op: choosing the next token of each row of logits on the device, exactly as the host Sampler
// (engine/sampling/sampler.cc) does, so that only ids and log-probabilities travel to the host.
#pragma once

#include <cstdint>
#include <initializer_list>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/limits.h"

namespace hgrn2::kernels {

// One row's request parameters (engine SamplingParams, already validated) and draw counter.
struct SampleRowParams {
  uint64_t seed = 0;
  uint64_t counter = 0;  // tokens this request sampled before this one
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t num_top_logprobs = 0;  // clamped to SampleParams::top_capacity and the vocabulary
};

inline constexpr uint32_t kSampleAddBias = 1;     // logit += bias
inline constexpr uint32_t kSampleRepetition = 2;  // logit > 0 ? logit / rep : logit * rep

// One change to one token's logit before the choice (engine LogitAdjustment). Applied in float,
// in this order: the bias (kSampleAddBias), the repetition penalty (kSampleRepetition), then, if
// count > 0, logit -= frequency_penalty · count and logit -= presence_penalty. A row's entries
// for one token must be adjacent; they are applied in order, by one thread.
struct SampleAdjustment {
  int32_t token = 0;  // in [0, vocab); others are ignored
  float bias = 0.0f;
  int32_t count = 0;
  uint32_t flags = 0;
};

// The host packs these and the device reads them: the sizes pin the layout (and the staging
// bytes per row and per entry).
static_assert(sizeof(SampleRowParams) == 48);
static_assert(sizeof(SampleAdjustment) == 16);

// Which kernel samples: kAuto resolves on the host, from the device and the vocabulary, to the
// one-pass cluster sampler where it fits (Hopper, vocab up to 131,072) and to the one-block
// sampler elsewhere; kBlock always takes the one-block sampler. Both give the same tokens.
enum class SampleVariant { kAuto, kBlock };

struct SampleParams {
  SampleVariant variant = SampleVariant::kAuto;
  int64_t batch = 0;  // rows
  int64_t vocab = 0;  // in [1, kSampleMaxVocab]
  // [batch][logits_stride_batch]; values at [vocab, logits_stride_batch) are padding.
  const float* __restrict__ logits = nullptr;
  int64_t logits_stride_batch = 0;                     // >= vocab
  const SampleRowParams* __restrict__ rows = nullptr;  // [batch]
  // Row r's entries are adjustments[adjustment_offsets[r], adjustment_offsets[r + 1]).
  const int32_t* __restrict__ adjustment_offsets = nullptr;    // [batch + 1]
  const SampleAdjustment* __restrict__ adjustments = nullptr;  // may be null if all rows have none
  // [batch][vocab] floats of scratch, needed only when SampleWorkspaceBytes says so (a row that
  // does not fit in shared memory); may be null otherwise.
  float* __restrict__ workspace = nullptr;

  int32_t* __restrict__ out_ids = nullptr;     // [batch]
  float* __restrict__ out_logprobs = nullptr;  // [batch], log-softmax of the raw logits
  // Every row gets exactly top_capacity entries (<= kSampleMaxTopLogprobs): its
  // min(num_top_logprobs, top_capacity, vocab) most probable tokens by (logprob desc, id asc),
  // then id -1 with logprob -inf.
  int32_t top_capacity = 0;
  int32_t* __restrict__ out_top_ids = nullptr;     // [batch][out_top_stride_batch]
  float* __restrict__ out_top_logprobs = nullptr;  // [batch][out_top_stride_batch]
  int64_t out_top_stride_batch = 0;                // >= top_capacity
};

// The sizes LaunchSample cannot take, named (kernels/limits.h); ok() when it can. (Pointers and the
// workspace are the launcher's to check.)
inline LimitViolation CheckSampleParams(const SampleParams& p) {
  using limits_internal::AtLeast;
  using limits_internal::AtMost;
  constexpr const char* kOp = "sample";
  for (const LimitViolation& v :
       {AtLeast(kOp, "batch", p.batch, 0), AtMost(kOp, "batch", p.batch, kSampleMaxBatch),
        AtLeast(kOp, "vocab", p.vocab, 1), AtMost(kOp, "vocab", p.vocab, kSampleMaxVocab),
        AtLeast(kOp, "logits_stride_batch", p.logits_stride_batch, p.vocab),
        AtLeast(kOp, "top_capacity", p.top_capacity, 0),
        AtMost(kOp, "top_capacity", p.top_capacity, kSampleMaxTopLogprobs)}) {
    if (!v.ok()) return v;
  }
  if (p.top_capacity > 0) {
    return AtLeast(kOp, "out_top_stride_batch", p.out_top_stride_batch, p.top_capacity);
  }
  return {};
}

#ifdef HGRN2_HAVE_CUDA
// The bytes of SampleParams::workspace that LaunchSample needs for (batch, vocab) on the current
// device: 0 when a row fits in shared memory (on Hopper: a cluster's up to 131,072 tokens; on
// older cards a block's, about 48k).
cudaError_t SampleWorkspaceBytes(int64_t batch, int64_t vocab, size_t* bytes,
                                 SampleVariant variant = SampleVariant::kAuto);

// cudaErrorInvalidValue, launching nothing, when CheckSampleParams says why or a pointer is
// missing (the workspace included).
cudaError_t LaunchSample(const SampleParams& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
