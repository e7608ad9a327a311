// Tests of dtype names and sizes and of the bf16 / f16 conversions, exhaustively where cheap.
#include "engine/base/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace hgrn2 {
namespace {

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t ToBits(float value) { return std::bit_cast<uint32_t>(value); }

TEST(DTypeTest, ParsesEveryNameAndRoundTrips) {
  struct Expected {
    const char* name;
    DType dtype;
    size_t size;
  };
  const Expected expected[] = {
      {"F64", DType::kF64, 8},   {"F32", DType::kF32, 4},        {"F16", DType::kF16, 2},
      {"BF16", DType::kBF16, 2}, {"I64", DType::kI64, 8},        {"I32", DType::kI32, 4},
      {"I16", DType::kI16, 2},   {"I8", DType::kI8, 1},          {"U8", DType::kU8, 1},
      {"BOOL", DType::kBool, 1}, {"F8_E4M3", DType::kF8E4M3, 1},
  };
  for (const Expected& e : expected) {
    absl::StatusOr<DType> parsed = ParseDType(e.name);
    ASSERT_TRUE(parsed.ok()) << e.name << ": " << parsed.status();
    EXPECT_EQ(*parsed, e.dtype) << e.name;
    EXPECT_EQ(DTypeName(e.dtype), e.name);
    EXPECT_EQ(DTypeSize(e.dtype), e.size) << e.name;
  }
}

TEST(DTypeTest, UnknownNameIsInvalidArgumentNamingIt) {
  for (const char* name : {"F8_E5M2", "f32", "", "FLOAT32", "F32 "}) {
    absl::StatusOr<DType> parsed = ParseDType(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(parsed.status().message()).find(absl::StrCat("\"", name, "\"")),
              std::string::npos)
        << parsed.status();
  }
}

// --- bf16 ------------------------------------------------------------------------------------

TEST(Bf16Test, ExactValues) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Bf16ToFloat(0x3e80), 0.25f);
  EXPECT_EQ(Bf16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(Bf16ToFloat(0x8000)));
  EXPECT_EQ(Bf16ToFloat(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(Bf16ToFloat(0xff80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(Bf16ToFloat(0x7fc0)));
  EXPECT_EQ(Bf16ToFloat(0x0001), FromBits(0x00010000));  // smallest subnormal, 2^-133
  EXPECT_EQ(Bf16ToFloat(0x7f7f), FromBits(0x7f7f0000));  // largest finite

  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(FloatToBf16(FromBits(0x00010000)), 0x0001);
}

TEST(Bf16Test, RoundsToNearestEven) {
  // Halfway, lower neighbour even: stays down.
  EXPECT_EQ(FloatToBf16(FromBits(0x3f808000)), 0x3f80);
  // Halfway, lower neighbour odd: goes up to the even one.
  EXPECT_EQ(FloatToBf16(FromBits(0x3f818000)), 0x3f82);
  // Just above and below halfway.
  EXPECT_EQ(FloatToBf16(FromBits(0x3f808001)), 0x3f81);
  EXPECT_EQ(FloatToBf16(FromBits(0x3f807fff)), 0x3f80);
  // Negative values round on magnitude.
  EXPECT_EQ(FloatToBf16(FromBits(0xbf818000)), 0xbf82);
  // Rounding carries into the exponent.
  EXPECT_EQ(FloatToBf16(FromBits(0x3fffffff)), 0x4000);
  // Subnormals round the same way.
  EXPECT_EQ(FloatToBf16(FromBits(0x00008000)), 0x0000);
  EXPECT_EQ(FloatToBf16(FromBits(0x00018000)), 0x0002);
  // The largest float is past the last bf16 halfway point: infinity.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(FloatToBf16(FromBits(0x7f7f7fff)), 0x7f7f);
}

TEST(Bf16Test, NanStaysNan) {
  // A signalling NaN whose payload lies only in the dropped low bits must not become infinity.
  for (uint32_t bits : {0x7f800001u, 0x7fc00000u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t out = FloatToBf16(FromBits(bits));
    EXPECT_TRUE(std::isnan(Bf16ToFloat(out))) << std::hex << bits << " -> " << out;
    EXPECT_EQ(out & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
  }
}

TEST(Bf16Test, EveryValueRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = Bf16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(value))));
    } else {
      ASSERT_EQ(FloatToBf16(value), bits) << std::hex << bits;
    }
  }
}

// --- f16 -------------------------------------------------------------------------------------

TEST(F16Test, ExactValues) {
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
  EXPECT_EQ(F16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7c01)));

  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
}

TEST(F16Test, RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even (1) wins.
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3·2^-11 is halfway between 0x3c01 and 0x3c02: even (0x3c02) wins.
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToF16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  EXPECT_EQ(FloatToF16(-1.0f - 3 * std::ldexp(1.0f, -11)), 0xbc02);
  // Carry into the exponent: just below 2 rounds to 2.
  EXPECT_EQ(FloatToF16(std::nextafter(2.0f, 0.0f)), 0x4000);
  // Overflow: 65520 is halfway between 65504 (odd mantissa) and 65536, so infinity.
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToF16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(FloatToF16(1e10f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::max()), 0x7c00);
}

TEST(F16Test, SubnormalsRoundToNearestEven) {
  const float unit = std::ldexp(1.0f, -24);    // smallest f16 subnormal
  EXPECT_EQ(FloatToF16(0.5f * unit), 0x0000);  // halfway to 0 and 1: even
  EXPECT_EQ(FloatToF16(std::nextafter(0.5f * unit, 1.0f)), 0x0001);
  EXPECT_EQ(FloatToF16(1.5f * unit), 0x0002);  // halfway to 1 and 2: even
  EXPECT_EQ(FloatToF16(2.5f * unit), 0x0002);  // halfway to 2 and 3: even
  EXPECT_EQ(FloatToF16(-1.5f * unit), 0x8002);
  // Halfway between the largest subnormal (1023) and the smallest normal (1024): even, normal.
  EXPECT_EQ(FloatToF16(1023.5f * unit), 0x0400);
  EXPECT_EQ(FloatToF16(1022.5f * unit), 0x03fe);
  // Far below: zero of the right sign. Float subnormals too.
  EXPECT_EQ(FloatToF16(1e-10f), 0x0000);
  EXPECT_EQ(FloatToF16(-1e-10f), 0x8000);
  EXPECT_EQ(FloatToF16(FromBits(0x00000001)), 0x0000);
  EXPECT_EQ(FloatToF16(FromBits(0x80000001)), 0x8000);
}

TEST(F16Test, NanStaysNan) {
  for (uint32_t bits : {0x7f800001u, 0x7fc00000u, 0xffc00000u, 0x7f802000u}) {
    const uint16_t out = FloatToF16(FromBits(bits));
    EXPECT_TRUE(std::isnan(F16ToFloat(out))) << std::hex << bits << " -> " << out;
    EXPECT_EQ(out & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
  }
}

TEST(F16Test, EveryValueRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = F16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(value))));
    } else {
      ASSERT_EQ(FloatToF16(value), bits) << std::hex << bits;
    }
  }
}

// Property check against the definition: the result is a nearest f16, and on a tie the even one.
TEST(F16Test, RandomFloatsRoundToNearest) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> exponent(100, 143);  // 2^-27 .. 2^16
  std::uniform_int_distribution<uint32_t> mantissa(0, (1u << 23) - 1);
  for (int i = 0; i < 200000; ++i) {
    const float x = FromBits((exponent(rng) << 23) | mantissa(rng));
    const uint16_t h = FloatToF16(x);
    const double got = F16ToFloat(h);
    if (std::isinf(got)) {
      EXPECT_GE(x, 65520.0f);
      continue;
    }
    const double error = std::fabs(got - x);
    for (const int step : {-1, 1}) {
      if (h == 0 && step < 0) continue;
      const uint16_t neighbour = static_cast<uint16_t>(h + step);
      if ((neighbour & 0x7c00) == 0x7c00) continue;
      const double other = std::fabs(static_cast<double>(F16ToFloat(neighbour)) - x);
      ASSERT_LE(error, other) << std::hex << ToBits(x) << " -> " << h;
      if (error == other) {
        ASSERT_EQ(h & 1, 0) << "tie not to even: " << std::hex << ToBits(x);
      }
    }
  }
}

// --- ConvertToFloat --------------------------------------------------------------------------

TEST(ConvertToFloatTest, ConvertsFloatTypesFromUnalignedBuffers) {
  std::vector<std::byte> buffer(1 + 3 * 8);
  std::byte* unaligned = buffer.data() + 1;
  float out[3];

  const float f32[3] = {1.5f, -0.25f, 1e30f};
  std::memcpy(unaligned, f32, sizeof(f32));
  ASSERT_TRUE(ConvertToFloat(DType::kF32, unaligned, 3, out).ok());
  EXPECT_EQ(std::vector<float>(out, out + 3), std::vector<float>(f32, f32 + 3));

  const double f64[3] = {2.0, -3.5, 0.1};
  std::memcpy(unaligned, f64, sizeof(f64));
  ASSERT_TRUE(ConvertToFloat(DType::kF64, unaligned, 3, out).ok());
  EXPECT_EQ(std::vector<float>(out, out + 3), (std::vector<float>{2.0f, -3.5f, 0.1f}));

  const uint16_t bf16[3] = {0x3f80, 0xc040, 0x7f80};
  std::memcpy(unaligned, bf16, sizeof(bf16));
  ASSERT_TRUE(ConvertToFloat(DType::kBF16, unaligned, 3, out).ok());
  EXPECT_EQ(std::vector<float>(out, out + 3),
            (std::vector<float>{1.0f, -3.0f, std::numeric_limits<float>::infinity()}));

  const uint16_t f16[3] = {0x3c00, 0xc200, 0x0001};
  std::memcpy(unaligned, f16, sizeof(f16));
  ASSERT_TRUE(ConvertToFloat(DType::kF16, unaligned, 3, out).ok());
  EXPECT_EQ(std::vector<float>(out, out + 3),
            (std::vector<float>{1.0f, -3.0f, std::ldexp(1.0f, -24)}));
}

TEST(ConvertToFloatTest, ZeroElementsMayComeWithNullPointers) {
  // An empty tensor's vector has a null data(); nothing may be read or written.
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16}) {
    EXPECT_TRUE(ConvertToFloat(dtype, nullptr, 0, nullptr).ok()) << DTypeName(dtype);
  }
}

TEST(ConvertToFloatTest, DecodesE4M3CodesWithoutAScale) {
  // 0x38 = 1.0, 0x7e = 448 (the largest), 0x01 = 2^-9 (the smallest subnormal), 0xb8 = -1.0.
  const uint8_t codes[5] = {0x38, 0x7e, 0x01, 0xb8, 0x00};
  float out[5] = {};
  ASSERT_TRUE(ConvertToFloat(DType::kF8E4M3, codes, 5, out).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 448.0f);
  EXPECT_EQ(out[2], 0x1p-9f);
  EXPECT_EQ(out[3], -1.0f);
  EXPECT_EQ(out[4], 0.0f);
}

TEST(ConvertToFloatTest, RefusesNonFloatTypesNamingThem) {
  const int32_t ids[2] = {1, 2};
  float out[2] = {7.0f, 7.0f};
  for (DType dtype : {DType::kI32, DType::kI64, DType::kU8, DType::kBool}) {
    const absl::Status status = ConvertToFloat(dtype, ids, 1, out);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << DTypeName(dtype);
    EXPECT_NE(std::string(status.message()).find(std::string(DTypeName(dtype))), std::string::npos)
        << status;
  }
  EXPECT_EQ(out[0], 7.0f);  // nothing written on failure
}

}  // namespace
}  // namespace hgrn2

namespace hgrn2 {
namespace {

TEST(ConvertFromFloatTest, InvertsConvertToFloatForEveryFloatFormat) {
  const std::vector<float> values = {0.0f, -1.5f, 3.140625f, 65504.0f, 1e-7f};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<std::byte> encoded(values.size() * DTypeSize(dtype));
    ASSERT_TRUE(ConvertFromFloat(values.data(), values.size(), dtype, encoded.data()).ok());
    std::vector<float> decoded(values.size());
    ASSERT_TRUE(ConvertToFloat(dtype, encoded.data(), values.size(), decoded.data()).ok());
    for (size_t i = 0; i < values.size(); ++i) {
      const float rounded = dtype == DType::kF32    ? values[i]
                            : dtype == DType::kBF16 ? Bf16ToFloat(FloatToBf16(values[i]))
                                                    : F16ToFloat(FloatToF16(values[i]));
      EXPECT_EQ(decoded[i], rounded) << DTypeName(dtype) << " " << values[i];
    }
  }
}

TEST(ConvertFromFloatTest, RefusesNonFloatFormats) {
  const float value = 1.0f;
  int32_t out = 0;
  const absl::Status status = ConvertFromFloat(&value, 1, DType::kI32, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find("I32"), std::string::npos) << status;
}

}  // namespace
}  // namespace hgrn2
