// CUDA launcher of the small-batch GEMV: each block streams a few weight rows once, 16 bytes a
// load, against up to 16 rows of activations, in float accumulators; FP8 weights widened in
// registers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/gemv.h"

namespace hgrn2::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Eight 16-bit values (one 16-byte load) as floats.
__device__ __forceinline__ void Unpack8(uint4 v, __nv_bfloat16, float (&out)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // bf16 is the top half of a float.
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void Unpack8(uint4 v, __half, float (&out)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Weights are read once: no allocation in L1, so the activations (read by every block) stay.
__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Block b: weight rows [b · kRows, (b + 1) · kRows) against kM rows of x (rows past m and n
// repeat the last one: computed, not written). Thread t takes the 16-byte chunks t, t + 256, ...
// of k; the block's partial sums meet in shared memory.
template <typename T, typename TOut, int kM, int kRows>
__global__ void __launch_bounds__(kThreads) GemvKernel(GemvParams p) {
  __shared__ float partial[kWarps][kM * kRows];
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const uint4* w[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = min(n0 + r, p.n - 1);
    w[r] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.w) + row * p.w_stride_row);
  }
  const uint4* x[kM];
#pragma unroll
  for (int i = 0; i < kM; ++i) {
    const int64_t row = min(static_cast<int64_t>(i), p.m - 1);
    x[i] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + row * p.x_stride_row);
  }
  float acc[kM][kRows];
#pragma unroll
  for (int i = 0; i < kM; ++i) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[i][r] = 0.0f;
  }
  const int chunks = static_cast<int>(p.k / kGemvVectorElements);
  // Two chunks a step, both loads of every weight row in flight before the first use.
  for (int c0 = threadIdx.x; c0 < chunks; c0 += 2 * kThreads) {
    const bool second = c0 + kThreads < chunks;
    uint4 wv[2][kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      wv[0][r] = LoadStreaming(w[r] + c0);
      wv[1][r] = second ? LoadStreaming(w[r] + c0 + kThreads) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (h == 1 && !second) break;
      const int c = c0 + h * kThreads;
      float wf[kRows][8];
#pragma unroll
      for (int r = 0; r < kRows; ++r) Unpack8(wv[h][r], T{}, wf[r]);
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        float xf[8];
        Unpack8(__ldg(x[i] + c), T{}, xf);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[i][r] = fmaf(xf[e], wf[r][e], acc[i][r]);
        }
      }
    }
  }
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < kM; ++i) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = cuda::WarpSum(acc[i][r]);
      if (lane == 0) partial[warp][i * kRows + r] = sum;
    }
  }
  __syncthreads();
  for (int q = threadIdx.x; q < kM * kRows; q += kThreads) {
    const int i = q / kRows;
    const int r = q % kRows;
    if (i >= p.m || n0 + r >= p.n) continue;
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += partial[v][q];
    static_cast<TOut*>(p.c)[i * p.c_stride_row + n0 + r] = cuda::FromFloat<TOut>(sum);
  }
}

// FP8 weights: warp w of block b takes weight rows [(b · kFp8Warps + w) · kRows, + kRows), lane l
// the 16-code chunks l, l + 32, ... of each, kFp8Unroll chunks of every row in flight before the
// first use; codes become floats in registers (cvt e4m3x2 -> f16x2, exact) and each row's scale
// multiplies its finished sum. Rows past n repeat the last one (computed, not written).
constexpr int kFp8Warps = 4;
constexpr int kFp8Unroll = 4;

template <typename T, typename TOut, int kM, int kRows>
__global__ void __launch_bounds__(kFp8Warps * 32) GemvFp8Kernel(GemvParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kFp8Warps + threadIdx.x / 32) * kRows;
  if (n0 >= p.n) return;
  const uint4* w[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = min(n0 + r, p.n - 1);
    w[r] = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + row * p.w_stride_row);
  }
  const uint4* x[kM];
#pragma unroll
  for (int i = 0; i < kM; ++i) {
    const int64_t row = min(static_cast<int64_t>(i), p.m - 1);
    x[i] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + row * p.x_stride_row);
  }
  float acc[kM][kRows];
#pragma unroll
  for (int i = 0; i < kM; ++i) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[i][r] = 0.0f;
  }
  const int chunks = static_cast<int>(p.k / kGemvFp8VectorElements);
  for (int c0 = lane; c0 < chunks; c0 += 32 * kFp8Unroll) {
    uint4 wv[kFp8Unroll][kRows];
#pragma unroll
    for (int u = 0; u < kFp8Unroll; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        wv[u][r] = c < chunks ? LoadStreaming(w[r] + c) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kFp8Unroll; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      float wf[kRows][16];
#pragma unroll
      for (int r = 0; r < kRows; ++r) cuda::E4M3x16ToFloat(wv[u][r], wf[r]);
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        // The chunk's 16 activations: two 16-byte loads of 8.
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float xf[8];
          Unpack8(__ldg(x[i] + 2 * c + half), T{}, xf);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[i][r] = fmaf(xf[e], wf[r][8 * half + e], acc[i][r]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kM; ++i) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = cuda::WarpSum(acc[i][r]);
      if (lane == 0 && i < p.m && n0 + r < p.n) {
        static_cast<TOut*>(p.c)[i * p.c_stride_row + n0 + r] =
            cuda::FromFloat<TOut>(sum * p.w_scales[n0 + r]);
      }
    }
  }
}

template <typename T, typename TOut, int kM>
cudaError_t LaunchFp8Rows(const GemvParams& p, int variant, cudaStream_t stream) {
  const int rows = variant == 0 ? 1 : 2;
  const int64_t rows_per_block = static_cast<int64_t>(kFp8Warps) * rows;
  const auto blocks = static_cast<unsigned>((p.n + rows_per_block - 1) / rows_per_block);
  if (variant == 0) {
    GemvFp8Kernel<T, TOut, kM, 1><<<blocks, kFp8Warps * 32, 0, stream>>>(p);
  } else {
    GemvFp8Kernel<T, TOut, kM, 2><<<blocks, kFp8Warps * 32, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T, typename TOut, int kM>
cudaError_t LaunchRows(const GemvParams& p, int variant, cudaStream_t stream) {
  if (p.w_scales != nullptr) return LaunchFp8Rows<T, TOut, kM>(p, variant, stream);
  if (variant == 0) {
    constexpr int kRows = 2;
    GemvKernel<T, TOut, kM, kRows>
        <<<static_cast<unsigned>((p.n + kRows - 1) / kRows), kThreads, 0, stream>>>(p);
  } else {
    constexpr int kRows = 4;
    GemvKernel<T, TOut, kM, kRows>
        <<<static_cast<unsigned>((p.n + kRows - 1) / kRows), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T, typename TOut>
cudaError_t LaunchTyped(const GemvParams& p, int variant, cudaStream_t stream) {
  if (p.m <= 1) return LaunchRows<T, TOut, 1>(p, variant, stream);
  if (p.m <= 2) return LaunchRows<T, TOut, 2>(p, variant, stream);
  if (p.m <= 4) return LaunchRows<T, TOut, 4>(p, variant, stream);
  if (p.m <= 8) return LaunchRows<T, TOut, 8>(p, variant, stream);
  return LaunchRows<T, TOut, 16>(p, variant, stream);
}

}  // namespace

cudaError_t LaunchGemv(const GemvParams& p, int variant, cudaStream_t stream) {
  if (!CheckGemvParams(p).ok() || variant < 0 || variant >= kGemvVariants || p.c == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (p.in) {
    case GemvType::kBF16:
      if (p.out == GemvType::kBF16)
        return LaunchTyped<__nv_bfloat16, __nv_bfloat16>(p, variant, stream);
      if (p.out == GemvType::kF32) return LaunchTyped<__nv_bfloat16, float>(p, variant, stream);
      break;
    case GemvType::kF16:
      if (p.out == GemvType::kF16) return LaunchTyped<__half, __half>(p, variant, stream);
      if (p.out == GemvType::kF32) return LaunchTyped<__half, float>(p, variant, stream);
      break;
    case GemvType::kF32:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace hgrn2::kernels
