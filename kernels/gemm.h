// Op: the linear layer C = A · Bᵀ (A activations [m, k], B weights [n, k] as stored, C [m, n]).
#pragma once

#include <cstdint>

namespace hgrn2::kernels {

template <typename T>
struct GemmParams {
  int64_t m = 0;  // rows of A and C (tokens)
  int64_t n = 0;  // rows of B, columns of C (output features)
  int64_t k = 0;  // columns of A and B (input features)
  const T* __restrict__ a = nullptr;
  int64_t a_stride_row = 0;
  const T* __restrict__ b = nullptr;
  int64_t b_stride_row = 0;
  T* __restrict__ c = nullptr;
  int64_t c_stride_row = 0;
};

// CPU reference. Each output element is summed in an order that depends only on k, never on m
// or on the other rows: a row's result is bit-identical whatever batch it is computed in.
void GemmReference(const GemmParams<float>& params);

}  // namespace hgrn2::kernels
