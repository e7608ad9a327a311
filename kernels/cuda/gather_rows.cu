// CUDA launcher of the row gather: the embedding lookup, and picking rows of a batch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/gather_rows.h"

namespace hgrn2::kernels {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void GatherRowsKernel(GatherRowsParams<T> p) {
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* src = p.table + static_cast<int64_t>(p.indices[r]) * p.table_stride_row;
    T* dst = p.out + r * p.out_stride_row;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = src[c];
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchGatherRows(const GatherRowsParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  GatherRowsKernel<T><<<cuda::GridFor(params.rows, 1), kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template cudaError_t LaunchGatherRows<float>(const GatherRowsParams<float>&, cudaStream_t);
template cudaError_t LaunchGatherRows<__nv_bfloat16>(const GatherRowsParams<__nv_bfloat16>&,
                                                     cudaStream_t);
template cudaError_t LaunchGatherRows<__half>(const GatherRowsParams<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
