// The FP8 E4M3 codec (kernels/fp8_e4m3.h) against ml_dtypes' float8_e4m3fn and its own format.
#include "kernels/fp8_e4m3.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_support.h"

namespace hgrn2::kernels {
namespace {

float FromBits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// Every case of tests/data/fp8/e4m3_reference.json (make_e4m3_reference.py): codes, midpoints
// and the floats beside them, and values spread over the range, as ml_dtypes rounds them.
TEST(Fp8E4M3, RoundsAsMlDtypesDoes) {
  std::ifstream in(testing::TestDataDir() / "fp8" / "e4m3_reference.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json reference = nlohmann::json::parse(in);
  const nlohmann::json& cases = reference["cases"];
  ASSERT_GT(cases.size(), 9000u);
  int wrong = 0;
  for (const nlohmann::json& c : cases) {
    const uint32_t bits = static_cast<uint32_t>(std::stoul(c[0].get<std::string>(), nullptr, 16));
    const float x = FromBits(bits);
    const int want = c[1].get<int>();
    const int got = FloatToE4M3(x);
    if (got != want && ++wrong <= 10) {
      ADD_FAILURE() << "x = " << x << " (bits " << c[0] << "): want code " << want << ", got "
                    << got;
    }
  }
  EXPECT_EQ(wrong, 0) << "of " << cases.size() << " (" << reference["generator"] << ")";
}

TEST(Fp8E4M3, EveryFiniteCodeRoundTrips) {
  int finite = 0;
  for (int code = 0; code < 256; ++code) {
    const float value = E4M3ToFloat(static_cast<uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(value)) << code;
      continue;
    }
    ++finite;
    EXPECT_EQ(FloatToE4M3(value), code) << "value " << value;
  }
  EXPECT_EQ(finite, 254);
}

TEST(Fp8E4M3, TheFormatsLandmarks) {
  EXPECT_EQ(E4M3ToFloat(0x7e), 448.0f);                // the largest
  EXPECT_EQ(E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // the smallest normal
  EXPECT_EQ(E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(E4M3ToFloat(0x38), 1.0f);                  // exponent 7 = bias
  EXPECT_EQ(E4M3ToFloat(0xb8), -1.0f);
  EXPECT_TRUE(std::signbit(E4M3ToFloat(0x80)));  // -0
  EXPECT_EQ(FloatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE4M3(1.0625f), 0x38);                // the tie below 1.125 goes to even 1
  EXPECT_EQ(FloatToE4M3(1.1875f), 0x3a);                // the tie above 1.125 goes to even 1.25
  EXPECT_EQ(FloatToE4M3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest: to even 0
  EXPECT_EQ(FloatToE4M3(std::ldexp(3.0f, -11)), 0x01);  // three quarters of it: up
}

TEST(Fp8E4M3, SaturatesBeyondTheRangeAndMapsNanToNan) {
  EXPECT_EQ(FloatToE4M3(449.0f), 0x7e);
  EXPECT_EQ(FloatToE4M3(1e30f), 0x7e);
  EXPECT_EQ(FloatToE4M3(-1e30f), 0xfe);
  EXPECT_EQ(FloatToE4M3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(FloatToE4M3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(FloatToE4M3(std::numeric_limits<float>::quiet_NaN()), kE4M3Nan);
  EXPECT_EQ(FloatToE4M3(std::numeric_limits<float>::denorm_min()), 0x00);
}

}  // namespace
}  // namespace hgrn2::kernels
