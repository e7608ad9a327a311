// DType names, sizes and float conversions.
#include "engine/base/dtype.h"

#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/fp8_e4m3.h"

namespace hgrn2 {
namespace {

struct DTypeInfo {
  DType dtype;
  absl::string_view name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4},        {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8},        {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},          {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1},
};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // unreachable: every enumerator is listed
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }

absl::string_view DTypeName(DType dtype) { return Info(dtype).name; }

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\""));
}

float F16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0) {
    if (mantissa == 0) {
      out = sign;
    } else {  // subnormal: value = mantissa * 2^-24
      const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
      return sign ? -magnitude : magnitude;
    }
  } else if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(out);
}

uint16_t FloatToF16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity
  if (abs_bits < 0x38800000u) {                        // subnormal or zero in f16
    const float magnitude = std::bit_cast<float>(abs_bits);
    const float scaled = magnitude * 16777216.0f;  // 2^24: units of the smallest subnormal
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: rebias the exponent and round the mantissa to 10 bits, ties to even.
  const uint32_t rebased = abs_bits - (112u << 23);
  const uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return sign | static_cast<uint16_t>((rebased + rounding) >> 13);
}

absl::Status ConvertFromFloat(const float* src, size_t count, DType dtype, void* dst) {
  auto* out = static_cast<std::byte*>(dst);
  switch (dtype) {
    case DType::kF32:
      if (count > 0) std::memcpy(out, src, count * sizeof(float));
      return absl::OkStatus();
    case DType::kBF16:
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        const uint16_t bits = dtype == DType::kBF16 ? FloatToBf16(src[i]) : FloatToF16(src[i]);
        std::memcpy(out + 2 * i, &bits, sizeof(bits));
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot encode float as ", DTypeName(dtype), ": not F32, F16 or BF16"));
  }
}

absl::Status ConvertToFloat(DType dtype, const void* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::kF32:
      // memcpy with a null pointer is undefined even for 0 bytes, and empty tensors have one.
      if (count > 0) std::memcpy(dst, src, count * sizeof(float));
      return absl::OkStatus();
    case DType::kF64: {
      const auto* in = static_cast<const std::byte*>(src);
      for (size_t i = 0; i < count; ++i) {
        double value;
        std::memcpy(&value, in + i * sizeof(double), sizeof(double));
        dst[i] = static_cast<float>(value);
      }
      return absl::OkStatus();
    }
    case DType::kBF16:
    case DType::kF16: {
      // The mmap'd payload has no alignment guarantee: read each element with memcpy.
      const auto* in = static_cast<const std::byte*>(src);
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, in + 2 * i, sizeof(bits));
        dst[i] = dtype == DType::kBF16 ? Bf16ToFloat(bits) : F16ToFloat(bits);
      }
      return absl::OkStatus();
    }
    case DType::kF8E4M3: {
      const auto* in = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = kernels::E4M3ToFloat(in[i]);
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("cannot convert ", DTypeName(dtype),
                                                     " to float: not a floating-point type"));
  }
}

}  // namespace hgrn2
