// Op: an HGRN2 layer over whole prompts (a batch of sequences of different lengths), from each
// slot's current state to its state after the last token.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/hgrn2_layer.h"

namespace hgrn2::kernels {

// Sequence b owns token rows [seq_offsets[b], seq_offsets[b + 1]) of qfi and out, and slot
// slots[b]. Its state may be anything (zero for a new sequence, a restored session, or where an
// earlier piece of the same prompt stopped).
template <typename T>
struct Hgrn2PrefillParams {
  int32_t num_seqs = 0;
  const int32_t* __restrict__ seq_offsets = nullptr;  // [num_seqs + 1], non-decreasing
  // Tokens per chunk of the chunked (GLA) form: within a chunk, outputs come from the entering
  // state and a C×C matrix of decayed q·k products; the state is carried once per chunk.
  // 0 = token by token (the recurrence itself).
  int32_t chunk_size = 64;
  Hgrn2LayerParams<T> layer;
};

void Hgrn2PrefillReference(const Hgrn2PrefillParams<float>& params);

// The sizes LaunchHgrn2Prefill cannot take, named (kernels/limits.h); ok() when it can.
template <typename T>
LimitViolation CheckHgrn2PrefillParams(const Hgrn2PrefillParams<T>& params) {
  constexpr const char* kOp = "hgrn2 prefill";
  for (const LimitViolation& v :
       {limits_internal::AtLeast(kOp, "num_seqs", params.num_seqs, 0),
        limits_internal::AtMost(kOp, "num_seqs", params.num_seqs, kMaxGridYZ)}) {
    if (!v.ok()) return v;
  }
  return CheckHgrn2LayerParams(kOp, params.layer);
}

#ifdef HGRN2_HAVE_CUDA
// The CUDA form runs the recurrence token by token with each block's rows of the state in
// registers for the whole prompt (chunk_size is not used there), then updates the conv windows.
// T = float, __nv_bfloat16 or __half; pointers are device memory. cudaErrorInvalidValue, launching
// nothing, when CheckHgrn2PrefillParams says why.
template <typename T>
cudaError_t LaunchHgrn2Prefill(const Hgrn2PrefillParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
