// Op: the log-probability of one chosen column per row, logits[r][targets[r]] -
// logsumexp(logits[r]), and optionally that of the row's largest logit.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hgrn2::kernels {

template <typename T>
struct LogSoftmaxGatherParams {
  int64_t rows = 0;
  int64_t cols = 0;  // vocabulary size
  const T* __restrict__ logits = nullptr;
  int64_t logits_stride_row = 0;
  const int32_t* __restrict__ targets = nullptr;  // [rows], each in [0, cols)
  float* __restrict__ out = nullptr;              // [rows]
  // [rows] or null: the log-probability of the row's largest logit, computed with the same
  // expression as `out`, so out[r] == out_max[r] exactly when targets[r] holds a largest logit.
  float* __restrict__ out_max = nullptr;
};

void LogSoftmaxGatherReference(const LogSoftmaxGatherParams<float>& params);

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half (the logits).
template <typename T>
cudaError_t LaunchLogSoftmaxGather(const LogSoftmaxGatherParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
