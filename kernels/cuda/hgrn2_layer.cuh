// Device pieces of the HGRN2 token mixer that the decode step and prefill share: the short conv
// of one channel and the gate activations.
#pragma once

#include "kernels/cuda/device_math.cuh"
#include "kernels/hgrn2_layer.h"
#include "kernels/limits.h"

namespace hgrn2::kernels::cuda {

// The conv output of `channel` for the input x_t, whose K - 1 predecessors are inputs(-1) (the
// newest) ... inputs(-(K - 1)). Summed oldest tap first, as the reference does.
template <typename T, typename Inputs>
__device__ __forceinline__ float ConvOutput(const Hgrn2LayerParams<T>& p, int64_t channel,
                                            Inputs inputs) {
  const int kernel = p.conv_size;
  const T* taps = p.conv_weight + channel * kernel;
  float sum = 0.0f;
  for (int j = 0; j < kernel; ++j) sum += ToFloat(taps[j]) * inputs(j - (kernel - 1));
  return sum;
}

// The layer's states as S (float or __nv_bfloat16), whichever the params carry.
template <typename S, typename T>
__device__ __forceinline__ S* StateBase(const Hgrn2LayerParams<T>& p) {
  if constexpr (sizeof(S) == 2) {
    return reinterpret_cast<S*>(p.state_bf16);
  } else {
    return p.state;
  }
}

struct ActivatedQf {
  float q;  // swish(q)
  float g;  // forget gate, lb + (1 - lb) · sigmoid(f)
  float k;  // 1 - g, computed as (1 - lb) · sigmoid(-f) so it stays exact where g is near 1
};

// With e = exp(-f): sigmoid(f) = 1 / (1 + e) and sigmoid(-f) = e · sigmoid(f), one exponential
// and one division for both gates, and k keeps its precision where g is close to 1.
__device__ __forceinline__ ActivatedQf ActivateQf(float q, float f, float lower_bound) {
  const float e = __expf(-f);
  const float sigmoid_f = __fdividef(1.0f, 1.0f + e);
  const float rest = 1.0f - lower_bound;
  // e = inf (f very negative): sigmoid(f) = 0 and sigmoid(-f) = 1.
  const float sigmoid_minus_f = isinf(e) ? 1.0f : e * sigmoid_f;
  return {q * Sigmoid(q), lower_bound + rest * sigmoid_f, rest * sigmoid_minus_f};
}

// Advances the conv windows of every channel past the tokens of each sequence: the new window is
// the last K values of (old window, the sequence's inputs). Sequence b owns rows
// [offsets[b], offsets[b + 1]) of qfi, or row b alone when `offsets` is null (a decode step).
// Runs after the kernel that read the old windows, so no block reads a window another advanced.
template <typename T>
__global__ void AdvanceConvWindowsKernel(Hgrn2LayerParams<T> p, int32_t num_seqs,
                                         const int32_t* __restrict__ offsets) {
  const int64_t channels = p.channels();
  const int kernel = p.conv_size;
  const int64_t total = static_cast<int64_t>(num_seqs) * channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / channels;
    const int64_t c = i - b * channels;
    const int64_t begin = offsets != nullptr ? offsets[b] : b;
    const int64_t length = offsets != nullptr ? offsets[b + 1] - begin : 1;
    if (length == 0) continue;
    float* win = p.conv_state + p.slots[b] * p.conv_state_stride_slot + c * kernel;
    // Input at position t of the sequence; negative t reaches into the old window.
    float history[kMaxConvSize];
    for (int j = 0; j < kernel; ++j) {
      const int64_t t = length - kernel + j;
      history[j] = t >= 0 ? ToFloat(p.qfi[(begin + t) * p.qfi_stride_token + c]) : win[kernel + t];
    }
    for (int j = 0; j < kernel; ++j) win[j] = history[j];
  }
}

}  // namespace hgrn2::kernels::cuda
