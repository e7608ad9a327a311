// Element types of weights, activations and states, and conversions between the float formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hgrn2 {

// The safetensors element types. Weights may be F32, BF16 or F16, or F8_E4M3 codes with a scale
// (FP8 checkpoints; FP8 weights on a device, see DeviceTensor::scales); the others appear in
// auxiliary files (token ids in I32 / I64).
enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3 };

// Bytes per element.
size_t DTypeSize(DType dtype);

// The safetensors spelling: "F32", "BF16", ...
absl::string_view DTypeName(DType dtype);

// Parses a safetensors dtype string; InvalidArgument naming the string if unknown.
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float Bf16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// IEEE binary16 to float, including subnormals, infinities and NaN.
float F16ToFloat(uint16_t bits);

// float to IEEE binary16, round to nearest even (overflow to infinity).
uint16_t FloatToF16(float value);

// Encodes `count` floats as `dtype` (F32, F16 or BF16; 16-bit formats round to nearest even) into
// `dst` (count · DTypeSize(dtype) bytes, no alignment needed). InvalidArgument for other dtypes.
absl::Status ConvertFromFloat(const float* src, size_t count, DType dtype, void* dst);

// Converts `count` elements of a floating-point `dtype` (F32, F16, BF16, F64, or F8_E4M3 codes,
// unscaled) at `src` to float. InvalidArgument for a non-float dtype.
absl::Status ConvertToFloat(DType dtype, const void* src, size_t count, float* dst);

}  // namespace hgrn2
