// Op: the MLP's gate, out = swish(gate) · up, from the fused gate|up projection.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hgrn2::kernels {

template <typename T>
struct SwiGluParams {
  int64_t rows = 0;
  int64_t cols = 0;                         // I: width of out, half the width of gate_up
  const T* __restrict__ gate_up = nullptr;  // [rows, 2·cols]: gate in [0, I), up in [I, 2I)
  int64_t gate_up_stride_row = 0;
  T* __restrict__ out = nullptr;  // [rows, cols]
  int64_t out_stride_row = 0;
};

void SwiGluReference(const SwiGluParams<float>& params);

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half; pointers are device memory.
template <typename T>
cudaError_t LaunchSwiGlu(const SwiGluParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
