// CUDA launcher of the log-softmax gather used for scoring: one chosen column's log-probability
// per row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/log_softmax_gather.h"

namespace hgrn2::kernels {
namespace {

using cuda::ToFloat;

constexpr int kThreads = 512;

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

}  // namespace

template <typename T>
cudaError_t LaunchLogSoftmaxGather(const LogSoftmaxGatherParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  LogSoftmaxGatherKernel<T><<<cuda::GridFor(params.rows, 1), kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template cudaError_t LaunchLogSoftmaxGather<float>(const LogSoftmaxGatherParams<float>&,
                                                   cudaStream_t);
template cudaError_t LaunchLogSoftmaxGather<__nv_bfloat16>(
    const LogSoftmaxGatherParams<__nv_bfloat16>&, cudaStream_t);
template cudaError_t LaunchLogSoftmaxGather<__half>(const LogSoftmaxGatherParams<__half>&,
                                                    cudaStream_t);

}  // namespace hgrn2::kernels
