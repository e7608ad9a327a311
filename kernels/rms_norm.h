// Op: RMSNorm over each row, optionally fused with the residual add that precedes it.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hgrn2::kernels {

// Without `residual`: out = x · rsqrt(mean(x²) + eps) · weight.
// With `residual`:    residual += x, then out = rmsnorm(residual) · weight (the residual stream
//                     is updated in place, as between the blocks of a layer).
template <typename T>
struct RmsNormParams {
  int64_t rows = 0;
  int64_t cols = 0;
  const T* __restrict__ x = nullptr;
  int64_t x_stride_row = 0;
  T* __restrict__ residual = nullptr;  // optional
  int64_t residual_stride_row = 0;
  const T* __restrict__ weight = nullptr;  // [cols]
  T* __restrict__ out = nullptr;
  int64_t out_stride_row = 0;
  float eps = 1e-6f;
};

void RmsNormReference(const RmsNormParams<float>& params);

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half; pointers are device memory.
template <typename T>
cudaError_t LaunchRmsNorm(const RmsNormParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
