// CUDA launcher of the FP8 widening: each thread turns one 16-byte load of codes into 16 values.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/fp8_widen.h"

namespace hgrn2::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kCodesPerLoad = 16;

template <typename T>
__global__ void __launch_bounds__(kThreads) WidenFp8Kernel(WidenFp8Params<T> p) {
  const int64_t loads_per_row = p.cols / kCodesPerLoad;
  const int64_t total = p.rows * loads_per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / loads_per_row;
    const int64_t col = (i % loads_per_row) * kCodesPerLoad;
    const uint4 v = *reinterpret_cast<const uint4*>(p.codes + row * p.codes_stride_row + col);
    const float scale = p.scales[row];
    float values[kCodesPerLoad];
    cuda::E4M3x16ToFloat(v, values);
    T* out = p.out + row * p.out_stride_row + col;
#pragma unroll
    for (int e = 0; e < kCodesPerLoad; ++e) out[e] = cuda::FromFloat<T>(values[e] * scale);
  }
}

// Any sizes and alignments: one code a thread.
template <typename T>
__global__ void __launch_bounds__(kThreads) WidenFp8ScalarKernel(WidenFp8Params<T> p) {
  const int64_t total = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / p.cols;
    const int64_t col = i % p.cols;
    const __half_raw raw = __nv_cvt_fp8_to_halfraw(
        static_cast<__nv_fp8_storage_t>(p.codes[row * p.codes_stride_row + col]), __NV_E4M3);
    const float value = __half2float(*reinterpret_cast<const __half*>(&raw)) * p.scales[row];
    p.out[row * p.out_stride_row + col] = cuda::FromFloat<T>(value);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchWidenFp8(const WidenFp8Params<T>& p, cudaStream_t stream) {
  if (p.rows < 0 || p.cols < 0 || p.codes_stride_row < p.cols || p.out_stride_row < p.cols ||
      (p.rows > 0 && p.cols > 0 &&
       (p.codes == nullptr || p.scales == nullptr || p.out == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  const bool vectorized = p.cols % kCodesPerLoad == 0 && p.codes_stride_row % kCodesPerLoad == 0 &&
                          reinterpret_cast<uintptr_t>(p.codes) % 16 == 0;
  if (vectorized) {
    WidenFp8Kernel<T>
        <<<cuda::GridFor(p.rows * p.cols / kCodesPerLoad, kThreads), kThreads, 0, stream>>>(p);
  } else {
    WidenFp8ScalarKernel<T><<<cuda::GridFor(p.rows * p.cols, kThreads), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchWidenFp8<float>(const WidenFp8Params<float>&, cudaStream_t);
template cudaError_t LaunchWidenFp8<__nv_bfloat16>(const WidenFp8Params<__nv_bfloat16>&,
                                                   cudaStream_t);
template cudaError_t LaunchWidenFp8<__half>(const WidenFp8Params<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
