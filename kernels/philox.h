// Philox4x32-10 and the uniform draw of the sampler: one implementation for the host sampler
// (engine/sampling/sampler.cc) and the CUDA sampler (kernels/cuda/sample.cu), so both draw the same
// bits.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HGRN2_HOST_DEVICE __host__ __device__
#else
#define HGRN2_HOST_DEVICE
#endif

namespace hgrn2::kernels {

// A plain array type: std::array's members are not callable from device code without
// --expt-relaxed-constexpr.
struct PhiloxWords {
  uint32_t w[4];
};

// The Philox4x32-10 block function (Salmon et al. 2011; Random123's multipliers, Weyl key
// increments and round structure, as in cuRAND): 4 output words for a 4-word counter and a
// 2-word key.
HGRN2_HOST_DEVICE constexpr PhiloxWords Philox4x32_10(PhiloxWords counter, uint32_t key0,
                                                      uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53;
  constexpr uint32_t kM1 = 0xCD9E8D57;
  constexpr uint32_t kW0 = 0x9E3779B9;
  constexpr uint32_t kW1 = 0xBB67AE85;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kW0;
      key1 += kW1;
    }
    const uint64_t product0 = uint64_t{kM0} * counter.w[0];
    const uint64_t product1 = uint64_t{kM1} * counter.w[2];
    counter = PhiloxWords{{static_cast<uint32_t>(product1 >> 32) ^ counter.w[1] ^ key0,
                           static_cast<uint32_t>(product1),
                           static_cast<uint32_t>(product0 >> 32) ^ counter.w[3] ^ key1,
                           static_cast<uint32_t>(product0)}};
  }
  return counter;
}

// (2·(x >> 9) + 1) · 2^-24: the odd multiples of 2^-24, from 2^-24 to 1 - 2^-24, each exactly a
// float, so host and device get the same bits. Never 0 or 1: the exponential race takes
// -log(u), and u = 1 would give an infinite score to whichever token drew it.
HGRN2_HOST_DEVICE constexpr float UnitIntervalFromBits(uint32_t x) {
  return static_cast<float>(2 * (x >> 9) + 1) * 0x1p-24f;
}

// A uniform in (0, 1) for (seed, counter, index). Key = {seed lo, seed hi}, counter = {index lo,
// index hi, counter lo, counter hi}; the first output word becomes the uniform.
HGRN2_HOST_DEVICE constexpr float PhiloxUniform(uint64_t seed, uint64_t counter, uint64_t index) {
  const PhiloxWords block = Philox4x32_10(
      PhiloxWords{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                   static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32)}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return UnitIntervalFromBits(block.w[0]);
}

}  // namespace hgrn2::kernels
