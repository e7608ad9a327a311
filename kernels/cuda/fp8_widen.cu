// CUDA launcher of the FP8 widening: each thread turns one 16-byte load of codes into 16 values.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/fp8_widen.h"

namespace hgrn2::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kCodesPerLoad = 16;

template <typename T>
__global__ void __launch_bounds__(kThreads) WidenFp8Kernel(WidenFp8Params p) {
  const int64_t loads_per_row = p.cols / kCodesPerLoad;
  const int64_t total = p.rows * loads_per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / loads_per_row;
    const int64_t col = (i % loads_per_row) * kCodesPerLoad;
    const uint4 v = *reinterpret_cast<const uint4*>(p.codes + row * p.codes_stride_row + col);
    const float scale = p.scales[row];
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
    T* out = static_cast<T*>(p.out) + row * p.out_stride_row + col;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(words[w] >> (16 * h)), __NV_E4M3);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&raw));
        out[4 * w + 2 * h] = cuda::FromFloat<T>(f.x * scale);
        out[4 * w + 2 * h + 1] = cuda::FromFloat<T>(f.y * scale);
      }
    }
  }
}

// Any sizes and alignments: one code a thread.
template <typename T>
__global__ void __launch_bounds__(kThreads) WidenFp8ScalarKernel(WidenFp8Params p) {
  const int64_t total = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / p.cols;
    const int64_t col = i % p.cols;
    const __half_raw raw = __nv_cvt_fp8_to_halfraw(
        static_cast<__nv_fp8_storage_t>(p.codes[row * p.codes_stride_row + col]), __NV_E4M3);
    const float value = __half2float(*reinterpret_cast<const __half*>(&raw)) * p.scales[row];
    static_cast<T*>(p.out)[row * p.out_stride_row + col] = cuda::FromFloat<T>(value);
  }
}

template <typename T>
void Launch(const WidenFp8Params& p, cudaStream_t stream) {
  const bool vectorized = p.cols % kCodesPerLoad == 0 && p.codes_stride_row % kCodesPerLoad == 0 &&
                          reinterpret_cast<uintptr_t>(p.codes) % 16 == 0;
  const int64_t per_thread = vectorized ? kCodesPerLoad : 1;
  const int64_t threads = p.rows * p.cols / per_thread;
  const auto blocks =
      static_cast<unsigned>(std::min<int64_t>((threads + kThreads - 1) / kThreads, 65535));
  if (vectorized) {
    WidenFp8Kernel<T><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    WidenFp8ScalarKernel<T><<<blocks, kThreads, 0, stream>>>(p);
  }
}

}  // namespace

cudaError_t LaunchWidenFp8(const WidenFp8Params& p, cudaStream_t stream) {
  if (p.rows < 0 || p.cols < 0 || p.codes_stride_row < p.cols || p.out_stride_row < p.cols ||
      (p.rows > 0 && p.cols > 0 &&
       (p.codes == nullptr || p.scales == nullptr || p.out == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  switch (p.out_type) {
    case WidenType::kBF16:
      Launch<__nv_bfloat16>(p, stream);
      break;
    case WidenType::kF16:
      Launch<__half>(p, stream);
      break;
    case WidenType::kF32:
      Launch<float>(p, stream);
      break;
  }
  return cudaGetLastError();
}

}  // namespace hgrn2::kernels
