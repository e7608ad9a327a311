// Op: out[r] = table[indices[r]] — the embedding lookup, and picking rows (last tokens) of a batch.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hgrn2::kernels {

template <typename T>
struct GatherRowsParams {
  int64_t rows = 0;  // rows of out (= number of indices)
  int64_t cols = 0;
  const T* __restrict__ table = nullptr;
  int64_t table_stride_row = 0;
  int64_t table_rows = 0;  // indices must lie in [0, table_rows): checked by the caller
  const int32_t* __restrict__ indices = nullptr;
  T* __restrict__ out = nullptr;
  int64_t out_stride_row = 0;
};

void GatherRowsReference(const GatherRowsParams<float>& params);

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half; pointers are device memory.
template <typename T>
cudaError_t LaunchGatherRows(const GatherRowsParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
