// What the HGRN2 recurrence ops share: a layer's sizes, gate inputs and where states live.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "kernels/limits.h"

// Sizes derived in params structs are computed on the host and in kernels alike.
#ifdef __CUDACC__
#define HGRN2_HOST_DEVICE __host__ __device__
#else
#define HGRN2_HOST_DEVICE
#endif

namespace hgrn2::kernels {

// One HGRN2 layer's token mixer after the q/f/i projections (../shared/HGRN2.md):
//   q, f, v = causal depthwise conv of the projections over their last K values (if K > 0)
//   q = swish(q);  g = lb + (1 - lb) · sigmoid(f) (lb = 0 without a lower bound);  k = 1 - g
//   per head: S = S · g[None, :] + v[:, None] · k[None, :];  o = S q
// States live in a pool of slots and are read and written in place through slot indices.
template <typename T>
struct Hgrn2LayerParams {
  int32_t num_heads = 0;  // H
  int32_t key_dim = 0;    // dk: q, f (and k, g) channels per head
  int32_t value_dim = 0;  // dv: v and o channels per head
  int32_t conv_size = 0;  // K; 0 = no short conv

  // Projections before the conv, per token: q [H·dk] | f [H·dk] | v [H·dv].
  const T* __restrict__ qfi = nullptr;
  int64_t qfi_stride_token = 0;
  // Depthwise conv taps [2·H·dk + H·dv, K] in the same channel order, oldest tap first.
  const T* __restrict__ conv_weight = nullptr;
  // Per-channel lower bound of the forget gate [H·dk], or null for none (layer 0, or the model
  // has none).
  const float* __restrict__ lower_bound = nullptr;

  // The sequences' slots in the pool.
  const int32_t* __restrict__ slots = nullptr;
  // Recurrent state of slot s, head h: state + s·state_stride_slot + h·dv·dk, a [dv, dk]
  // row-major float32 matrix (fla's value-major layout).
  float* __restrict__ state = nullptr;
  int64_t state_stride_slot = 0;  // in elements of the state's type
  // When set, the states are bf16 (raw bits) here instead, laid out as above, and `state` is
  // unused: half the memory and traffic. The CUDA step and prefill's fast path support it.
  uint16_t* __restrict__ state_bf16 = nullptr;
  // Conv window of slot s: conv_state + s·conv_state_stride_slot, [channels, K] float32 with the
  // newest input last (fla's conv cache). Unused when conv_size is 0.
  float* __restrict__ conv_state = nullptr;
  int64_t conv_state_stride_slot = 0;

  // Output o per token [H·dv] (before g_norm).
  T* __restrict__ out = nullptr;
  int64_t out_stride_token = 0;

  HGRN2_HOST_DEVICE int64_t qf_width() const { return static_cast<int64_t>(num_heads) * key_dim; }
  HGRN2_HOST_DEVICE int64_t v_width() const { return static_cast<int64_t>(num_heads) * value_dim; }
  HGRN2_HOST_DEVICE int64_t channels() const { return 2 * qf_width() + v_width(); }
};

// What the CUDA recurrence kernels (step and prefill alike) need of a layer's sizes and state
// dtype (kernels/limits.h), as `op`'s violation; ok() when they take it.
template <typename T>
LimitViolation CheckHgrn2LayerParams(const char* op, const Hgrn2LayerParams<T>& p) {
  using limits_internal::AtLeast;
  using limits_internal::AtMost;
  for (const LimitViolation& v :
       {AtLeast(op, "num_heads", p.num_heads, 1), AtMost(op, "num_heads", p.num_heads, kMaxGridYZ),
        AtLeast(op, "key_dim", p.key_dim, 1), AtMost(op, "key_dim", p.key_dim, kMaxKeyDim),
        AtLeast(op, "value_dim", p.value_dim, 1), AtLeast(op, "conv_size", p.conv_size, 0),
        AtMost(op, "conv_size", p.conv_size, kMaxConvSize)}) {
    if (!v.ok()) return v;
  }
  if (p.state_bf16 == nullptr) return {};
  constexpr const char* kBf16 = "with bf16 states";
  if (p.conv_size != 0) return {op, "conv_size", "exactly", 0, p.conv_size, kBf16};
  if (p.key_dim % kBf16StateKeyDimMultiple != 0) {
    return {op, "key_dim", "a multiple of", kBf16StateKeyDimMultiple, p.key_dim, kBf16};
  }
  return AtMost(op, "key_dim", p.key_dim, kMaxBf16StateKeyDim, kBf16);
}

}  // namespace hgrn2::kernels
