// FP8 E4M3 (OCP "e4m3fn"): the codec that FP8 weight quantization and its kernels share.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace hgrn2::kernels {

// E4M3: a sign, 4 exponent bits (bias 7) and 3 mantissa bits; no infinities, and one NaN pattern
// a sign (0x7f, 0xff). The largest finite magnitude is 448 (0x7e), the smallest normal 2^-6 and
// the smallest subnormal 2^-9.
inline constexpr float kE4M3Max = 448.0f;
inline constexpr uint8_t kE4M3Nan = 0x7f;

// The value of `code`: NaN for 0x7f and 0xff, -0 for 0x80.
inline float E4M3ToFloat(uint8_t code) {
  const bool negative = (code & 0x80) != 0;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m · 2^-9
  } else {
    magnitude = std::ldexp(static_cast<float>(8 + mantissa), exponent - 7 - 3);
  }
  return negative ? -magnitude : magnitude;
}

// The code nearest to `x`, ties to the even code (IEEE round to nearest even, as ml_dtypes and
// the hardware's cvt.rn convert). Magnitudes above 448, infinities included, saturate to ±448 (the
// "satfinite" conversion weight quantizers use, where the scale keeps values in range anyway);
// NaN gives 0x7f. The sign of zero is kept.
inline uint8_t FloatToE4M3(float x) {
  if (std::isnan(x)) return kE4M3Nan;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double magnitude = std::fabs(static_cast<double>(x));
  if (magnitude >= kE4M3Max) return sign | 0x7e;
  if (magnitude == 0.0) return sign;
  // Codes are ordered like magnitudes: code = 8 · (exponent field) + mantissa, so a mantissa that
  // rounds up to 8 carries into the exponent, and the subnormals (exponent field 0, steps of
  // 2^-9) continue into the normals (steps of 2^(e-3)) without a seam.
  int exponent = 0;
  std::frexp(magnitude, &exponent);                 // magnitude in [2^(exponent-1), 2^exponent)
  const int unbiased = std::max(exponent - 1, -6);  // subnormals share the smallest normal's step
  const double steps = std::ldexp(magnitude, 3 - unbiased);  // in [0, 16): exact
  const double rounded = std::nearbyint(steps);              // the current mode: to nearest even
  // Below 448 nothing rounds past 0x7e (448 = 14 steps of 32 is itself a code).
  const int code = (unbiased + 7 - 1) * 8 + static_cast<int>(rounded);
  return sign | static_cast<uint8_t>(code);
}

}  // namespace hgrn2::kernels
