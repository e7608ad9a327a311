// CUDA launcher of RMSNorm, optionally fused with the residual add before it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/rms_norm.h"

namespace hgrn2::kernels {
namespace {

using cuda::FromFloat;
using cuda::ToFloat;

constexpr int kThreads = 256;

// One block per row. With a residual, the sum is rounded to T before it is normalized, so the
// residual stream holds exactly what the next layer adds to.
template <typename T>
__global__ void RmsNormKernel(RmsNormParams<T> p) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* x = p.x + r * p.x_stride_row;
    T* residual = p.residual != nullptr ? p.residual + r * p.residual_stride_row : nullptr;
    float sum_squares = 0.0f;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      float value = ToFloat(x[c]);
      if (residual != nullptr) {
        const T rounded = FromFloat<T>(ToFloat(residual[c]) + value);
        residual[c] = rounded;
        value = ToFloat(rounded);
      }
      sum_squares += value * value;
    }
    sum_squares = cuda::BlockSum(sum_squares, scratch);
    const float scale = rsqrtf(sum_squares / static_cast<float>(p.cols) + p.eps);
    const T* source = residual != nullptr ? residual : x;
    T* out = p.out + r * p.out_stride_row;
    // Each thread reads back only the residual elements it wrote itself: no barrier needed.
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      out[c] = FromFloat<T>(ToFloat(source[c]) * scale * ToFloat(p.weight[c]));
    }
  }
}

// The same with 16-byte accesses, when every row and the weight are aligned for them.
template <typename T>
__global__ void RmsNormVecKernel(RmsNormParams<T> p) {
  using V = cuda::Vec16<T>;
  constexpr int kSize = V::kSize;
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const V* x = reinterpret_cast<const V*>(p.x + r * p.x_stride_row);
    V* residual = p.residual != nullptr
                      ? reinterpret_cast<V*>(p.residual + r * p.residual_stride_row)
                      : nullptr;
    const int64_t vectors = p.cols / kSize;
    float sum_squares = 0.0f;
    for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) {
      V value = x[c];
      if (residual != nullptr) {
        V sum = residual[c];
#pragma unroll
        for (int e = 0; e < kSize; ++e) {
          sum.values[e] = FromFloat<T>(ToFloat(sum.values[e]) + ToFloat(value.values[e]));
        }
        residual[c] = sum;
        value = sum;
      }
#pragma unroll
      for (int e = 0; e < kSize; ++e) {
        const float v = ToFloat(value.values[e]);
        sum_squares += v * v;
      }
    }
    sum_squares = cuda::BlockSum(sum_squares, scratch);
    const float scale = rsqrtf(sum_squares / static_cast<float>(p.cols) + p.eps);
    const V* source = residual != nullptr ? residual : x;
    const V* weight = reinterpret_cast<const V*>(p.weight);
    V* out = reinterpret_cast<V*>(p.out + r * p.out_stride_row);
    for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) {
      const V value = source[c];
      const V w = weight[c];
      V result;
#pragma unroll
      for (int e = 0; e < kSize; ++e) {
        result.values[e] = FromFloat<T>(ToFloat(value.values[e]) * scale * ToFloat(w.values[e]));
      }
      out[c] = result;
    }
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchRmsNorm(const RmsNormParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  const bool vectorizable =
      cuda::Vectorizable<T>(params.x, params.x_stride_row, params.cols) &&
      cuda::Vectorizable<T>(params.out, params.out_stride_row, params.cols) &&
      cuda::Vectorizable<T>(params.weight, 0, params.cols) &&
      (params.residual == nullptr ||
       cuda::Vectorizable<T>(params.residual, params.residual_stride_row, params.cols));
  if (vectorizable) {
    RmsNormVecKernel<T><<<cuda::GridFor(params.rows, 1), kThreads, 0, stream>>>(params);
  } else {
    RmsNormKernel<T><<<cuda::GridFor(params.rows, 1), kThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchRmsNorm<float>(const RmsNormParams<float>&, cudaStream_t);
template cudaError_t LaunchRmsNorm<__nv_bfloat16>(const RmsNormParams<__nv_bfloat16>&,
                                                  cudaStream_t);
template cudaError_t LaunchRmsNorm<__half>(const RmsNormParams<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
