// CUDA launchers of the row-wise ops: embedding gather, RMSNorm (+residual), SwiGLU and the
// log-softmax gather used for scoring.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/gather_rows.h"
#include "kernels/log_softmax_gather.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"

namespace hgrn2::kernels {
namespace {

using cuda::FromFloat;
using cuda::ToFloat;

template <typename T>
__global__ void GatherRowsKernel(GatherRowsParams<T> p) {
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* src = p.table + static_cast<int64_t>(p.indices[r]) * p.table_stride_row;
    T* dst = p.out + r * p.out_stride_row;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = src[c];
  }
}

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

// Block (column block, row): no division per element.
template <typename T>
__global__ void SwiGluKernel(SwiGluParams<T> p) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= p.cols) return;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const T* gate = p.gate_up + r * p.gate_up_stride_row;
    const float g = ToFloat(gate[c]);
    p.out[r * p.out_stride_row + c] =
        FromFloat<T>(g / (1.0f + expf(-g)) * ToFloat(gate[p.cols + c]));
  }
}

// One block per row: max, then the sum of exponentials in double (as the reference does).
template <typename T>
__global__ void LogSoftmaxGatherKernel(LogSoftmaxGatherParams<T> p) {
  __shared__ float max_scratch[32];
  __shared__ double sum_scratch[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* logits = p.logits + r * p.logits_stride_row;
    float max_logit = -INFINITY;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      max_logit = fmaxf(max_logit, ToFloat(logits[c]));
    }
    max_logit = cuda::BlockMax(max_logit, max_scratch);
    double sum = 0.0;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      sum += exp(static_cast<double>(ToFloat(logits[c])) - max_logit);
    }
    sum = cuda::BlockSum(sum, sum_scratch);
    if (threadIdx.x == 0) {
      const double target = ToFloat(logits[p.targets[r]]);
      const double log_sum = log(sum);
      p.out[r] = static_cast<float>(target - max_logit - log_sum);
      if (p.out_max != nullptr) {
        p.out_max[r] = static_cast<float>(static_cast<double>(max_logit) - max_logit - log_sum);
      }
    }
  }
}

// 16-byte vectors of T: 8 bf16/f16 values or 4 floats.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(T);
  T values[kSize];
};

// Whether rows of `cols` elements at `pointer` with `stride` can be read as Vec16.
template <typename T>
bool Vectorizable(const void* pointer, int64_t stride, int64_t cols) {
  constexpr int kSize = Vec16<T>::kSize;
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0 && stride % kSize == 0 && cols % kSize == 0;
}

template <typename T>
__global__ void RmsNormVecKernel(RmsNormParams<T> p) {
  using V = Vec16<T>;
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

// Block (vector block, row).
template <typename T>
__global__ void SwiGluVecKernel(SwiGluParams<T> p) {
  using V = Vec16<T>;
  constexpr int kSize = V::kSize;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= p.cols / kSize) return;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const V* gate = reinterpret_cast<const V*>(p.gate_up + r * p.gate_up_stride_row);
    const V g = gate[c];
    const V u = gate[p.cols / kSize + c];
    V result;
#pragma unroll
    for (int e = 0; e < kSize; ++e) {
      const float x = ToFloat(g.values[e]);
      result.values[e] = FromFloat<T>(x / (1.0f + expf(-x)) * ToFloat(u.values[e]));
    }
    reinterpret_cast<V*>(p.out + r * p.out_stride_row)[c] = result;
  }
}

constexpr int kRowThreads = 256;

}  // namespace

template <typename T>
cudaError_t LaunchGatherRows(const GatherRowsParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  GatherRowsKernel<T><<<cuda::GridFor(params.rows, 1), kRowThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRmsNorm(const RmsNormParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  const bool vectorizable =
      Vectorizable<T>(params.x, params.x_stride_row, params.cols) &&
      Vectorizable<T>(params.out, params.out_stride_row, params.cols) &&
      Vectorizable<T>(params.weight, 0, params.cols) &&
      (params.residual == nullptr ||
       Vectorizable<T>(params.residual, params.residual_stride_row, params.cols));
  if (vectorizable) {
    RmsNormVecKernel<T><<<cuda::GridFor(params.rows, 1), kRowThreads, 0, stream>>>(params);
  } else {
    RmsNormKernel<T><<<cuda::GridFor(params.rows, 1), kRowThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSwiGlu(const SwiGluParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  if (Vectorizable<T>(params.gate_up, params.gate_up_stride_row, 2 * params.cols) &&
      Vectorizable<T>(params.out, params.out_stride_row, params.cols)) {
    const int64_t vectors = params.cols / Vec16<T>::kSize;
    const dim3 grid(static_cast<unsigned>((vectors + kRowThreads - 1) / kRowThreads),
                    cuda::GridFor(params.rows, 1));
    SwiGluVecKernel<T><<<grid, kRowThreads, 0, stream>>>(params);
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((params.cols + kRowThreads - 1) / kRowThreads),
                  cuda::GridFor(params.rows, 1));
  SwiGluKernel<T><<<grid, kRowThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchLogSoftmaxGather(const LogSoftmaxGatherParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  LogSoftmaxGatherKernel<T><<<cuda::GridFor(params.rows, 1), 512, 0, stream>>>(params);
  return cudaGetLastError();
}

#define HGRN2_INSTANTIATE(T)                                                          \
  template cudaError_t LaunchGatherRows<T>(const GatherRowsParams<T>&, cudaStream_t); \
  template cudaError_t LaunchRmsNorm<T>(const RmsNormParams<T>&, cudaStream_t);       \
  template cudaError_t LaunchSwiGlu<T>(const SwiGluParams<T>&, cudaStream_t);         \
  template cudaError_t LaunchLogSoftmaxGather<T>(const LogSoftmaxGatherParams<T>&, cudaStream_t);
HGRN2_INSTANTIATE(float)
HGRN2_INSTANTIATE(__nv_bfloat16)
HGRN2_INSTANTIATE(__half)
#undef HGRN2_INSTANTIATE

}  // namespace hgrn2::kernels
