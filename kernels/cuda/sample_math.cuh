// What the two CUDA samplers (sample.cu, one block a row; sample_cluster.cu, one cluster a row)
// share: the keys and orders of their selections, the logit adjustments and the race's score.
//
// Exactness against the host Sampler (engine/sampling/sampler.cc): every float step (bias,
// penalties, x - max, / temperature) uses the _rn intrinsics so no multiply-add is contracted into
// an fma that the host does not do. Comparisons and selections (argmax, k-th largest, ties by id)
// are exact, and the top_p masses are exact 128-bit fixed-point sums rounded once, on the host too
// (kernels/fixed_sum.h). What can differ from the host in the last bits: the log-sum-exp of the
// log-probabilities (a tree sum here, in id order there), and CUDA's double exp/log may differ
// from glibc's by one ulp. Build without --use_fast_math (-ftz=true would flush denormal
// differences to zero).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "kernels/philox.h"
#include "kernels/sample.h"

namespace hgrn2::kernels::cuda {

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();
inline constexpr double kNegInfD = -std::numeric_limits<double>::infinity();
// -log(-log(1 - 2^-24)) = 16.64 bounds the race's noise (as kMaxNoise in
// engine/sampling/sampler.cc).
inline constexpr double kMaxNoise = 16.7;

// The order of floats as unsigned integers (-inf lowest). Callers pass no NaN and no -0.
__device__ __forceinline__ uint32_t OrderedKey(float x) {
  const uint32_t bits = __float_as_uint(x);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float FloatFromKey(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// -0 becomes +0: the host compares floats, where they are equal; the radix keys would not be.
__device__ __forceinline__ float CanonicalZero(float x) { return x == 0.0f ? 0.0f : x; }

// Whether candidate (a, ia) beats (b, ib): the larger value, then the lower index; index -1 is
// "none" and never wins. Values are never NaN here.
__device__ __forceinline__ bool Beats(double a, int32_t ia, double b, int32_t ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return a > b || (a == b && ia < ib);
}

// One adjustment, in float without contraction, in the order of Sampler::Sample.
__device__ __forceinline__ float Adjust(float x, const SampleAdjustment& a,
                                        const SampleRowParams& p) {
  if (a.flags & kSampleAddBias) x = __fadd_rn(x, a.bias);
  if (a.flags & kSampleRepetition) {
    x = x > 0.0f ? __fdiv_rn(x, p.repetition_penalty) : __fmul_rn(x, p.repetition_penalty);
  }
  if (a.count != 0) {
    x = __fsub_rn(x, __fmul_rn(p.frequency_penalty, __int2float_rn(a.count)));
    x = __fsub_rn(x, p.presence_penalty);
  }
  return x;
}

// The race score of token i: z_i - log(-log(u_i)), in double as DrawToken computes it.
__device__ __forceinline__ double RaceScore(const SampleRowParams& p, int32_t i, float zi) {
  const double exponential =
      -log(static_cast<double>(PhiloxUniform(p.seed, p.counter, static_cast<uint64_t>(i))));
  return static_cast<double>(zi) - log(exponential);
}

}  // namespace hgrn2::kernels::cuda
