// 128-bit fixed-point sums of doubles in [0, 1] (probability masses): integer adds are exact
// and associative, so a sum gathered by atomic adds in any order is always the same number.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/philox.h"  // HGRN2_HOST_DEVICE

namespace hgrn2::kernels {

// value = (hi · 2^64 + lo) · 2^-kFixedSumFractionBits. A term is truncated to a multiple of
// 2^-100 (error below 8e-31); 2^24 terms of at most 1 stay below 2^124, so nothing overflows.
inline constexpr int kFixedSumFractionBits = 100;

// No default member initializers: it lives in __shared__ memory, which takes no constructors.
// FixedSum{} is zero.
struct FixedSum {
  uint64_t lo;
  uint64_t hi;
};

HGRN2_HOST_DEVICE inline FixedSum Add(FixedSum a, FixedSum b) {
  FixedSum sum{};
  sum.lo = a.lo + b.lo;
  sum.hi = a.hi + b.hi + (sum.lo < a.lo ? 1 : 0);
  return sum;
}

// a · n, exact while the product stays below 2^128.
HGRN2_HOST_DEVICE inline FixedSum Multiply(FixedSum a, uint32_t n) {
  const uint64_t p0 = (a.lo & 0xffffffffu) * n;
  const uint64_t p1 = (a.lo >> 32) * n;
  FixedSum product{};
  product.lo = p0 + (p1 << 32);
  product.hi = a.hi * n + (p1 >> 32) + (product.lo < p0 ? 1 : 0);
  return product;
}

HGRN2_HOST_DEVICE inline bool Less(FixedSum a, FixedSum b) {
  return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
}

HGRN2_HOST_DEVICE inline uint64_t DoubleBits(double x) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

HGRN2_HOST_DEVICE inline double DoubleFromBits(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
#endif
}

// x in [0, 1] (not NaN), truncated to a multiple of 2^-100.
HGRN2_HOST_DEVICE inline FixedSum ToFixedSum(double x) {
  const uint64_t bits = DoubleBits(x);
  const int exponent = static_cast<int>((bits >> 52) & 0x7ff);
  if (exponent == 0) return {};  // zero or subnormal: below 2^-1022, so 0 at 2^-100 resolution
  const uint64_t mantissa = (bits & ((uint64_t{1} << 52) - 1)) | (uint64_t{1} << 52);
  // x = mantissa · 2^(exponent - 1075), so x · 2^100 = mantissa · 2^shift; shift <= 48 for x <= 1.
  const int shift = exponent - 1075 + kFixedSumFractionBits;
  if (shift >= 64) return {};  // x >= 2^12: outside the domain, never passed
  if (shift > 0) return {mantissa << shift, mantissa >> (64 - shift)};
  if (shift > -64) return {mantissa >> -shift, 0};
  return {};
}

HGRN2_HOST_DEVICE inline int CountLeadingZeros(uint64_t x) {
#ifdef __CUDA_ARCH__
  return __clzll(static_cast<long long>(x));
#else
  return __builtin_clzll(x);
#endif
}

// The value rounded once to the nearest double (ties to even): monotone, so a larger sum never
// becomes a smaller double.
HGRN2_HOST_DEVICE inline double ToDouble(FixedSum a) {
  // 2^-100 and 2^(64 - 100 - lz), built from their bits: exact powers of two.
  if (a.hi == 0) {
    return static_cast<double>(a.lo) * DoubleFromBits(uint64_t{1023 - kFixedSumFractionBits} << 52);
  }
  const int lz = CountLeadingZeros(a.hi);
  uint64_t top = lz == 0 ? a.hi : (a.hi << lz) | (a.lo >> (64 - lz));
  const uint64_t rest = lz == 0 ? a.lo : a.lo << lz;
  // The dropped bits lie below the rounding bit of top (bit 10), so one sticky bit keeps the
  // conversion correctly rounded.
  if (rest != 0) top |= 1;
  const int scale = 64 - lz - kFixedSumFractionBits;
  return static_cast<double>(top) * DoubleFromBits(static_cast<uint64_t>(1023 + scale) << 52);
}

}  // namespace hgrn2::kernels
