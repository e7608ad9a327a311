// CPU reference of C = A · Bᵀ, batch-invariant: each element's summation order depends on k only.
#include "kernels/gemm.h"

namespace hgrn2::kernels {
namespace {

constexpr int kLanes = 8;  // partial sums per dot product, combined in a fixed tree
constexpr int kRowsB = 4;  // weight rows processed together, so each A row is loaded once

// Sums of a[j]·b_r[j] for kRowsB weight rows at once. The order of every sum is: lane
// l accumulates j ≡ l (mod kLanes) over the full blocks in order; lanes combine pairwise;
// the tail (k mod kLanes) is added last, in order.
inline void DotRows(const float* a, const float* const* b, int64_t k, float* out) {
  float acc[kRowsB][kLanes] = {};
  const int64_t full = k - k % kLanes;
  for (int64_t j = 0; j < full; j += kLanes) {
    for (int r = 0; r < kRowsB; ++r) {
      for (int l = 0; l < kLanes; ++l) acc[r][l] += a[j + l] * b[r][j + l];
    }
  }
  for (int r = 0; r < kRowsB; ++r) {
    float* lane = acc[r];
    float sum =
        ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    for (int64_t j = full; j < k; ++j) sum += a[j] * b[r][j];
    out[r] = sum;
  }
}

}  // namespace

void GemmReference(const GemmParams<float>& p) {
  for (int64_t n0 = 0; n0 < p.n; n0 += kRowsB) {
    const int rows_b = static_cast<int>(p.n - n0 < kRowsB ? p.n - n0 : kRowsB);
    const float* b[kRowsB];
    for (int r = 0; r < kRowsB; ++r) {
      // Past the last weight row, repeat it: the extra sums are computed and dropped.
      b[r] = p.b + (n0 + (r < rows_b ? r : rows_b - 1)) * p.b_stride_row;
    }
    for (int64_t m = 0; m < p.m; ++m) {
      float sums[kRowsB];
      DotRows(p.a + m * p.a_stride_row, b, p.k, sums);
      float* c = p.c + m * p.c_stride_row + n0;
      for (int r = 0; r < rows_b; ++r) c[r] = sums[r];
    }
  }
}

}  // namespace hgrn2::kernels
