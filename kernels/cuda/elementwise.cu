// CUDA launchers of the row-wise ops: embedding gather, RMSNorm (+residual), SwiGLU and the
// log-softmax gather used for scoring.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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
      p.out[r] = static_cast<float>(target - max_logit - log(sum));
    }
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
  RmsNormKernel<T><<<cuda::GridFor(params.rows, 1), kRowThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSwiGlu(const SwiGluParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
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
