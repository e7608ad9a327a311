// CUDA launcher of the MLP's gate, out = swish(gate) · up.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/swiglu.h"

namespace hgrn2::kernels {
namespace {

using cuda::FromFloat;
using cuda::ToFloat;

constexpr int kThreads = 256;

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

// Block (vector block, row), 16-byte accesses.
template <typename T>
__global__ void SwiGluVecKernel(SwiGluParams<T> p) {
  using V = cuda::Vec16<T>;
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

}  // namespace

template <typename T>
cudaError_t LaunchSwiGlu(const SwiGluParams<T>& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  if (cuda::Vectorizable<T>(params.gate_up, params.gate_up_stride_row, 2 * params.cols) &&
      cuda::Vectorizable<T>(params.out, params.out_stride_row, params.cols)) {
    const int64_t vectors = params.cols / cuda::Vec16<T>::kSize;
    const dim3 grid(static_cast<unsigned>((vectors + kThreads - 1) / kThreads),
                    cuda::GridFor(params.rows, 1));
    SwiGluVecKernel<T><<<grid, kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((params.cols + kThreads - 1) / kThreads),
                  cuda::GridFor(params.rows, 1));
  SwiGluKernel<T><<<grid, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template cudaError_t LaunchSwiGlu<float>(const SwiGluParams<float>&, cudaStream_t);
template cudaError_t LaunchSwiGlu<__nv_bfloat16>(const SwiGluParams<__nv_bfloat16>&, cudaStream_t);
template cudaError_t LaunchSwiGlu<__half>(const SwiGluParams<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
