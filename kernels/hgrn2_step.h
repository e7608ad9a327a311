// Op: one decode step of an HGRN2 layer for a batch of sequences, states updated in place.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/hgrn2_layer.h"

namespace hgrn2::kernels {

// Token b of the batch (row b of qfi and out) advances the state in slot slots[b] by one token.
template <typename T>
struct Hgrn2StepParams {
  int32_t batch = 0;
  Hgrn2LayerParams<T> layer;

  // Optional: the g_norm after the step, normed[b] = rmsnorm(out[b]) · norm_weight over the whole
  // row (all heads), fused into the same launch (the last block of a row to finish normalises
  // it). Scratch: norm_partials [batch, blocks per row] floats, norm_counters [batch] zeroed
  // before the first use and left zeroed after each.
  const T* __restrict__ norm_weight = nullptr;  // null: no norm
  float norm_eps = 1e-6f;
  T* __restrict__ normed = nullptr;
  int64_t normed_stride_token = 0;
  float* __restrict__ norm_partials = nullptr;
  unsigned* __restrict__ norm_counters = nullptr;
};

void Hgrn2StepReference(const Hgrn2StepParams<float>& params);

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half; pointers are device memory.
// Blocks per row of the batch in the CUDA step kernel (the size of norm_partials' rows).
int64_t Hgrn2StepBlocksPerToken(int32_t num_heads, int32_t value_dim);

template <typename T>
cudaError_t LaunchHgrn2Step(const Hgrn2StepParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
