// Op: the linear layer for a few rows of activations, out[m, n] = x[m, k] · w[n, k]ᵀ (the layout
// of gemm.h), each weight row streamed once with 16-byte loads: the decode step's products at
// small batch, where a tensor-core GEMM tiled for large m leaves bandwidth unused. The weights may
// be FP8 (E4M3 codes with a scale per row), widened in registers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/limits.h"

namespace hgrn2::kernels {

enum class GemvType { kBF16, kF16, kF32 };

// x and w in `in` (bf16 or f16), out in `out` (the same or f32; LaunchGemv refuses other
// types). Row strides in elements. With `w_scales` set, w holds E4M3 codes (one byte each) and
// w[r, c] stands for E4M3ToFloat(code) · w_scales[r] (kernels/fp8_e4m3.h).
struct GemvParams {
  int64_t m = 0;  // rows of x and out: 1 to kGemvMaxRows
  int64_t n = 0;  // rows of w, columns of out
  int64_t k = 0;  // columns of x and w: a multiple of 8
  GemvType in = GemvType::kBF16;
  GemvType out = GemvType::kBF16;
  const void* x = nullptr;
  int64_t x_stride_row = 0;
  const void* w = nullptr;
  int64_t w_stride_row = 0;
  void* c = nullptr;
  int64_t c_stride_row = 0;
  const float* w_scales = nullptr;  // device float32 [n]: w is FP8
};

// Elements of k (and of the weights' row stride) per 16-byte load of FP8 codes.
inline constexpr int64_t kGemvFp8VectorElements = 16;

// The kernel's variants: weight rows a block works on (2 or 4), picked per shape by timing
// (engine/backend/cuda_gemm.cc); with FP8 weights, weight rows a warp works on (1 or 2).
inline constexpr int kGemvVariants = 2;

// The sizes, strides and alignments LaunchGemv cannot take, named; ok() when it can.
inline LimitViolation CheckGemvParams(const GemvParams& p) {
  using limits_internal::AtLeast;
  using limits_internal::AtMost;
  constexpr const char* kOp = "gemv";
  for (const LimitViolation& v :
       {AtLeast(kOp, "m", p.m, 1), AtMost(kOp, "m", p.m, kGemvMaxRows), AtLeast(kOp, "n", p.n, 1),
        AtLeast(kOp, "k", p.k, 8), AtLeast(kOp, "x_stride_row", p.x_stride_row, p.k),
        AtLeast(kOp, "w_stride_row", p.w_stride_row, p.k),
        AtLeast(kOp, "c_stride_row", p.c_stride_row, p.n)}) {
    if (!v.ok()) return v;
  }
  // 16-byte loads of 8 elements (16 FP8 codes): k, the strides and the addresses are multiples
  // of them.
  const int64_t w_elements = p.w_scales != nullptr ? kGemvFp8VectorElements : kGemvVectorElements;
  const struct {
    const char* name;
    int64_t value;
    int64_t multiple;
  } aligned[] = {{"k", p.k, w_elements},
                 {"x_stride_row", p.x_stride_row, kGemvVectorElements},
                 {"w_stride_row", p.w_stride_row, w_elements},
                 {"x address", static_cast<int64_t>(reinterpret_cast<uintptr_t>(p.x) % 16), 16},
                 {"w address", static_cast<int64_t>(reinterpret_cast<uintptr_t>(p.w) % 16), 16}};
  for (const auto& a : aligned) {
    if (a.value % a.multiple != 0) return {kOp, a.name, "a multiple of", a.multiple, a.value};
  }
  return {};
}

#ifdef HGRN2_HAVE_CUDA
// `variant` in [0, kGemvVariants). cudaErrorInvalidValue, launching nothing, when
// CheckGemvParams says why or the variant is out of range.
cudaError_t LaunchGemv(const GemvParams& params, int variant, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
