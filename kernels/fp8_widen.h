// Op: FP8 weights (E4M3 codes with a scale per row) widened to bf16, f16 or f32: the operand of a
// tensor-core GEMM for products too large for the small-batch GEMV (kernels/gemv.h).
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hgrn2::kernels {

// out[r, c] = E4M3ToFloat(codes[r, c]) · scales[r], rounded to T (to nearest even).
template <typename T>
struct WidenFp8Params {
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* codes = nullptr;
  int64_t codes_stride_row = 0;   // bytes; with cols, a multiple of 16 and a 16-byte aligned
                                  // address, codes are read 16 at a time (else one at a time)
  const float* scales = nullptr;  // [rows]
  T* out = nullptr;
  int64_t out_stride_row = 0;  // elements
};

#ifdef HGRN2_HAVE_CUDA
// T is float, __nv_bfloat16 or __half. cudaErrorInvalidValue, launching nothing, for negative
// sizes, strides below cols or null pointers.
template <typename T>
cudaError_t LaunchWidenFp8(const WidenFp8Params<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
