// Op: the MLP's gate, out = swish(gate) · up, from the fused gate|up projection.
#pragma once

#include <cstdint>

namespace hgrn2::kernels {

template <typename T>
struct SwiGluParams {
  int64_t rows = 0;
  int64_t cols = 0;                         // I: width of out, half the width of gate_up
  const T* __restrict__ gate_up = nullptr;  // [rows, 2·cols]: gate in [0, I), up in [I, 2I)
  int64_t gate_up_stride_row = 0;
  T* __restrict__ out = nullptr;  // [rows, cols]
  int64_t out_stride_row = 0;
};

void SwiGluReference(const SwiGluParams<float>& params);

}  // namespace hgrn2::kernels
