// Tests of the host half of device sampling (no GPU): the logit adjustments a Sampler lists,
// their packing and unpacking, the shared Philox, and the fixed-point sums of the CUDA sampler.
#include "engine/sampling/device_sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "kernels/fixed_sum.h"
#include "kernels/philox.h"
#include "kernels/sample.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using testing::ExpectError;
using testing::RandomNormal;

constexpr float kInf = std::numeric_limits<float>::infinity();

// What the CUDA sampler does with a row's entries (kernels/sample.h), on the host.
void ApplyAdjustments(const SamplingParams& params, absl::Span<const LogitAdjustment> entries,
                      std::vector<float>& row) {
  for (const LogitAdjustment& a : entries) {
    float& x = row[a.id];
    if (a.add_bias) x += a.bias;
    if (a.repetition) {
      x = x > 0.0f ? x / params.repetition_penalty : x * params.repetition_penalty;
    }
    if (a.count != 0) {
      x -= params.frequency_penalty * static_cast<float>(a.count);
      x -= params.presence_penalty;
    }
  }
}

std::vector<LogitAdjustment> AdjustmentsOf(const Sampler& sampler) {
  std::vector<LogitAdjustment> entries;
  sampler.AppendLogitAdjustments(entries);
  return entries;
}

TEST(LogitAdjustmentsTest, NoneWithoutBiasOrPenalties) {
  Sampler sampler(SamplingParams{}, 10, {1, 2, 3});
  sampler.RecordSampled(4);
  EXPECT_TRUE(AdjustmentsOf(sampler).empty());
  EXPECT_EQ(sampler.num_sampled(), 1);
}

TEST(LogitAdjustmentsTest, BiasesInGivenOrderThenPenaltiesSortedById) {
  SamplingParams params;
  params.repetition_penalty = 1.5f;
  params.presence_penalty = 0.25f;
  params.frequency_penalty = 0.5f;
  params.logit_bias = {{7, 1.0f}, {2, -kInf}, {7, 0.5f}, {9, 3.0f}};
  Sampler sampler(params, 10, {5, 2, 5});
  sampler.RecordSampled(7);
  sampler.RecordSampled(3);
  sampler.RecordSampled(7);
  EXPECT_EQ(sampler.num_sampled(), 3);
  const std::vector<LogitAdjustment> expected = {
      {.id = 2, .bias = -kInf, .add_bias = true}, {.id = 2, .repetition = true},
      {.id = 3, .repetition = true, .count = 1},  {.id = 5, .repetition = true},
      {.id = 7, .bias = 1.0f, .add_bias = true},  {.id = 7, .bias = 0.5f, .add_bias = true},
      {.id = 7, .repetition = true, .count = 2},  {.id = 9, .bias = 3.0f, .add_bias = true},
  };
  EXPECT_EQ(AdjustmentsOf(sampler), expected);
}

TEST(LogitAdjustmentsTest, CountsWithoutRepetitionPenaltyAndPromptIgnored) {
  SamplingParams params;
  params.frequency_penalty = 1.0f;
  Sampler sampler(params, 6, {0, 1});
  sampler.RecordSampled(4);
  sampler.RecordSampled(4);
  sampler.RecordSampled(2);
  const std::vector<LogitAdjustment> expected = {{.id = 2, .count = 1}, {.id = 4, .count = 2}};
  EXPECT_EQ(AdjustmentsOf(sampler), expected);
}

// Greedy choices depend only on the processed logits, so the entries applied as the device does
// must choose what Sample() chooses, step after step, with every kind of adjustment.
TEST(LogitAdjustmentsTest, AppliedAsTheDeviceDoesTheyReproduceGreedySampling) {
  constexpr int64_t kVocab = 50;
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    SamplingParams params;
    params.temperature = 0.0f;
    params.repetition_penalty = trial % 3 == 0 ? 1.0f : 1.3f;
    params.presence_penalty = trial % 2 == 0 ? 0.0f : 0.7f;
    params.frequency_penalty = trial % 4 == 0 ? 0.0f : 0.4f;
    params.logit_bias = {{static_cast<int32_t>(rng() % kVocab), 2.0f},
                         {static_cast<int32_t>(rng() % kVocab), -kInf},
                         {3, 0.25f},
                         {3, 0.125f}};
    const std::vector<int32_t> prompt = {1, 2, 3, static_cast<int32_t>(rng() % kVocab)};
    Sampler reference(params, kVocab, prompt);
    Sampler packed(params, kVocab, prompt);
    for (int step = 0; step < 12; ++step) {
      const std::vector<float> row = RandomNormal(kVocab, rng(), 1.0f);
      const int32_t want = reference.Sample(row).id;
      std::vector<float> adjusted = row;
      ApplyAdjustments(params, AdjustmentsOf(packed), adjusted);
      int32_t got = 0;
      for (int32_t i = 1; i < kVocab; ++i) {
        if (adjusted[i] > adjusted[got]) got = i;
      }
      ASSERT_EQ(got, want) << "trial " << trial << " step " << step;
      packed.RecordSampled(got);
    }
  }
}

// Steps 1 and 2 written out densely, as Sampler::Sample does them, against the entries applied
// as the device does: the same bits for every token, step after step.
TEST(LogitAdjustmentsTest, AppliedAsTheDeviceDoesTheyGiveTheDenseProcessedLogitsBitForBit) {
  constexpr int32_t kVocab = 40;
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 30; ++trial) {
    SamplingParams params;
    params.repetition_penalty = trial % 3 == 0 ? 1.0f : 0.9f + 0.1f * static_cast<float>(trial % 5);
    params.presence_penalty = trial % 2 == 0 ? 0.0f : -0.3f;
    params.frequency_penalty = trial % 4 == 0 ? 0.0f : 0.45f;
    for (int j = 0; j < 6; ++j) {
      params.logit_bias.emplace_back(static_cast<int32_t>(rng() % kVocab),
                                     j == 2 ? -kInf : static_cast<float>(rng() % 100) / 7.0f);
    }
    std::vector<int32_t> prompt;
    for (int j = 0; j < 8; ++j) prompt.push_back(static_cast<int32_t>(rng() % kVocab));
    Sampler sampler(params, kVocab, prompt);
    std::vector<uint8_t> seen(kVocab, 0);
    for (int32_t id : prompt) seen[id] = 1;
    std::vector<int32_t> counts(kVocab, 0);
    for (int step = 0; step < 15; ++step) {
      const std::vector<float> row = RandomNormal(kVocab, rng(), 2.0f);
      std::vector<float> want = row;
      for (const auto& [id, bias] : params.logit_bias) want[id] += bias;
      if (params.repetition_penalty != 1.0f) {
        for (int32_t i = 0; i < kVocab; ++i) {
          if (seen[i]) {
            want[i] = want[i] > 0.0f ? want[i] / params.repetition_penalty
                                     : want[i] * params.repetition_penalty;
          }
        }
      }
      if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
        for (int32_t i = 0; i < kVocab; ++i) {
          if (counts[i] == 0) continue;
          want[i] -= params.frequency_penalty * static_cast<float>(counts[i]);
          want[i] -= params.presence_penalty;
        }
      }
      std::vector<float> got = row;
      ApplyAdjustments(params, AdjustmentsOf(sampler), got);
      for (int32_t i = 0; i < kVocab; ++i) {
        ASSERT_EQ(std::memcmp(&want[i], &got[i], sizeof(float)), 0)
            << "trial " << trial << " step " << step << " token " << i << ": " << want[i] << " vs "
            << got[i];
      }
      const int32_t next = static_cast<int32_t>(rng() % kVocab);
      sampler.RecordSampled(next);
      seen[next] = 1;
      ++counts[next];
    }
  }
}

TEST(DeviceSampleBatchTest, PacksRowParamsAndAdjustmentsAsCsr) {
  SamplingParams a;
  a.temperature = 0.7f;
  a.top_k = 5;
  a.top_p = 0.9f;
  a.min_p = 0.05f;
  a.seed = 11;
  a.frequency_penalty = 0.5f;
  a.num_top_logprobs = 3;
  SamplingParams b;
  b.seed = 12;
  b.num_top_logprobs = 20;
  b.logit_bias = {{4, -1.0f}};
  Sampler first(a, 8, {});
  Sampler second(b, 8, {});
  first.RecordSampled(6);
  first.RecordSampled(1);
  Sampler* samplers[] = {&first, &second};

  DeviceSampleBatch batch;
  ASSERT_TRUE(batch.Pack(samplers, 8).ok());
  ASSERT_EQ(batch.rows().size(), 2u);
  EXPECT_EQ(batch.rows()[0].seed, 11u);
  EXPECT_EQ(batch.rows()[0].counter, 2u);
  EXPECT_EQ(batch.rows()[0].temperature, 0.7f);
  EXPECT_EQ(batch.rows()[0].top_k, 5);
  EXPECT_EQ(batch.rows()[0].top_p, 0.9f);
  EXPECT_EQ(batch.rows()[0].min_p, 0.05f);
  EXPECT_EQ(batch.rows()[0].frequency_penalty, 0.5f);
  EXPECT_EQ(batch.rows()[0].num_top_logprobs, 3);
  EXPECT_EQ(batch.rows()[1].seed, 12u);
  EXPECT_EQ(batch.rows()[1].counter, 0u);
  EXPECT_EQ(batch.top_capacity(), 8);  // 20 asked, clamped to the vocabulary
  EXPECT_EQ(
      std::vector<int32_t>(batch.adjustment_offsets().begin(), batch.adjustment_offsets().end()),
      (std::vector<int32_t>{0, 2, 3}));
  const auto entries = batch.adjustments();
  EXPECT_EQ(entries[0].token, 1);
  EXPECT_EQ(entries[0].count, 1);
  EXPECT_EQ(entries[0].flags, 0u);
  EXPECT_EQ(entries[1].token, 6);
  EXPECT_EQ(entries[1].count, 1);
  EXPECT_EQ(entries[2].token, 4);
  EXPECT_EQ(entries[2].bias, -1.0f);
  EXPECT_EQ(entries[2].count, 0);
  EXPECT_EQ(entries[2].flags, kernels::kSampleAddBias);
}

TEST(DeviceSampleBatchTest, PackRefusesTooManyAlternativesAndAnotherVocabulary) {
  SamplingParams params;
  params.num_top_logprobs = DeviceSampleBatch::kMaxTopLogprobs + 1;
  Sampler greedy_many(params, 100, {});
  Sampler* samplers[] = {&greedy_many};
  DeviceSampleBatch batch;
  ExpectError(batch.Pack(samplers, 100), absl::StatusCode::kInvalidArgument,
              {"row 0", "num_top_logprobs must be <= 20", "got 21"});
  ExpectError(batch.Pack(samplers, 99), absl::StatusCode::kInvalidArgument,
              {"row 0", "vocab_size 100", "99"});
}

TEST(DeviceSampleBatchTest, UnpackFillsTokensAndAdvancesSamplers) {
  SamplingParams params;
  params.presence_penalty = 1.0f;
  params.num_top_logprobs = 2;
  SamplingParams none;
  Sampler first(params, 5, {});
  Sampler second(none, 5, {});
  Sampler* samplers[] = {&first, &second};
  DeviceSampleBatch batch;
  ASSERT_TRUE(batch.Pack(samplers, 5).ok());
  ASSERT_EQ(batch.top_capacity(), 2);
  const std::vector<int32_t> ids = {3, 0};
  const std::vector<float> logprobs = {-0.5f, -1.5f};
  const std::vector<int32_t> top_ids = {3, 1, -1, -1};
  const std::vector<float> top_logprobs = {-0.5f, -2.0f, -kInf, -kInf};
  std::vector<SampledToken> out(2);
  ASSERT_TRUE(
      batch.Unpack(samplers, ids, logprobs, top_ids, top_logprobs, 2, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[0].id, 3);
  EXPECT_EQ(out[0].logprob, -0.5f);
  ASSERT_EQ(out[0].top.size(), 2u);
  EXPECT_EQ(out[0].top[1].id, 1);
  EXPECT_EQ(out[0].top[1].logprob, -2.0f);
  EXPECT_EQ(out[1].id, 0);
  EXPECT_TRUE(out[1].top.empty());
  EXPECT_EQ(first.num_sampled(), 1);
  EXPECT_EQ(second.num_sampled(), 1);
  EXPECT_EQ(AdjustmentsOf(first), (std::vector<LogitAdjustment>{{.id = 3, .count = 1}}));
}

TEST(DeviceSampleBatchTest, UnpackRefusesABadIdAndAdvancesNoSampler) {
  Sampler first(SamplingParams{}, 5, {});
  Sampler second(SamplingParams{}, 5, {});
  Sampler* samplers[] = {&first, &second};
  DeviceSampleBatch batch;
  ASSERT_TRUE(batch.Pack(samplers, 5).ok());
  std::vector<SampledToken> out(2);
  ExpectError(batch.Unpack(samplers, std::vector<int32_t>{1, 5}, std::vector<float>{0.0f, 0.0f}, {},
                           {}, 0, absl::MakeSpan(out)),
              absl::StatusCode::kInternal, {"token 5", "row 1"});
  EXPECT_EQ(first.num_sampled(), 0);
  EXPECT_EQ(second.num_sampled(), 0);
}

// The device runs kernels::PhiloxUniform; the known answers of sampler_test pin it, and here the
// same function evaluated at compile time (as constexpr) agrees.
TEST(SharedPhiloxTest, ConstexprKnownAnswerAndSameAsTheSampler) {
  constexpr kernels::PhiloxWords kOut =
      kernels::Philox4x32_10(kernels::PhiloxWords{{0, 0, 0, 0}}, 0, 0);
  static_assert(kOut.w[0] == 0x6627e8d5 && kOut.w[1] == 0xe169c58d && kOut.w[2] == 0xbc57ac4c &&
                kOut.w[3] == 0x9b00dbd8);
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(kernels::PhiloxUniform(i * 977, i / 3, i * 31),
              PhiloxUniform(i * 977, i / 3, i * 31));
  }
}

using kernels::FixedSum;
// The exact reference of the fixed-point sums (a GCC extension; -Wpedantic is silenced for it).
__extension__ typedef unsigned __int128 Uint128;

Uint128 AsInt(FixedSum a) { return (static_cast<Uint128>(a.hi) << 64) | a.lo; }

TEST(FixedSumTest, ConversionIsTheTruncatedValueAndBackIsCorrectlyRounded) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < 100000; ++i) {
    const double x = i % 3 == 0 ? std::exp(-40.0 * unit(rng)) : unit(rng);
    const FixedSum f = kernels::ToFixedSum(x);
    // x · 2^100 truncated, computed in long double (64-bit mantissa: exact for a double).
    const long double scaled = std::ldexp(static_cast<long double>(x), 100);
    const Uint128 want = static_cast<Uint128>(scaled);
    ASSERT_EQ(AsInt(f), want) << x;
    // Doubles above 2^-47 are multiples of 2^-100, so they come back unchanged.
    if (x > 0x1p-47) {
      ASSERT_EQ(kernels::ToDouble(f), x) << x;
    }
  }
  EXPECT_EQ(AsInt(kernels::ToFixedSum(1.0)), static_cast<Uint128>(1) << 100);
  EXPECT_EQ(AsInt(kernels::ToFixedSum(0.0)), 0u);
  EXPECT_EQ(AsInt(kernels::ToFixedSum(0x1p-101)), 0u);
  EXPECT_EQ(AsInt(kernels::ToFixedSum(0x1p-100)), 1u);
}

TEST(FixedSumTest, SumsAreExactAndRoundOnce) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  FixedSum sum{};
  Uint128 want = 0;
  long double approx = 0.0L;
  for (int i = 0; i < 200000; ++i) {
    const FixedSum term = kernels::ToFixedSum(unit(rng));
    sum = kernels::Add(sum, term);
    want += AsInt(term);
    approx += kernels::ToDouble(term);
    ASSERT_EQ(AsInt(sum), want);
  }
  EXPECT_NEAR(static_cast<double>(kernels::ToDouble(sum)), static_cast<double>(approx),
              1e-9 * static_cast<double>(approx));
  // Correct rounding at a tie: 2^53 + 1 (in units of 2^-100 · 2^k) rounds to even, one more
  // unit below rounds up.
  const FixedSum tie{0, (uint64_t{1} << 53) + 1};  // (2^53 + 1) · 2^64 · 2^-100
  EXPECT_EQ(kernels::ToDouble(tie), std::ldexp(0x1p53, -36));
  const FixedSum above_tie{1, (uint64_t{1} << 53) + 1};
  EXPECT_EQ(kernels::ToDouble(above_tie), std::ldexp(0x1p53 + 2.0, -36));
  // Multiply by counts up to 2^24.
  const FixedSum each = kernels::ToFixedSum(0.7390851332151607);
  for (uint32_t n : {0u, 1u, 2u, 12345u, 1u << 24}) {
    EXPECT_EQ(AsInt(kernels::Multiply(each, n)), AsInt(each) * n) << n;
  }
  EXPECT_TRUE(kernels::Less(FixedSum{5, 0}, FixedSum{0, 1}));
  EXPECT_FALSE(kernels::Less(FixedSum{0, 1}, FixedSum{0, 1}));
}

// The top_p selection of the CUDA sampler, step for step on the host (radix passes over ordered
// keys with exact fixed-point masses, then the ties at the boundary by id), against the sort of
// DrawToken: the kept sets must be the same. This checks the method; the GPU test checks the
// kernel.
uint32_t OrderedKey(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

float FloatFromKey(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

std::vector<bool> KeptByRadixSelection(const std::vector<float>& z, float top_p) {
  uint32_t prefix = 0;
  uint32_t mask = 0;
  FixedSum above{};
  double target = 0.0;
  int32_t count_equal = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    std::vector<int32_t> counts(256, 0);
    std::vector<FixedSum> mass(256, FixedSum{});
    for (float v : z) {
      if (!(v > -kInf)) continue;
      const uint32_t key = OrderedKey(v);
      if ((key & mask) != prefix) continue;
      const int b = static_cast<int>((key >> shift) & 0xffu);
      ++counts[b];
      mass[b] = kernels::Add(mass[b], kernels::ToFixedSum(std::exp(static_cast<double>(v))));
    }
    if (shift == 24) {
      FixedSum total{};
      for (const FixedSum& m : mass) total = kernels::Add(total, m);
      target = static_cast<double>(top_p) * kernels::ToDouble(total);
    }
    int chosen = -1;
    for (int b = 255; b >= 0; --b) {
      if (counts[b] == 0) continue;
      if (kernels::ToDouble(kernels::Add(above, mass[b])) >= target) {
        chosen = b;
        break;
      }
      above = kernels::Add(above, mass[b]);
    }
    EXPECT_GE(chosen, 0);
    prefix |= static_cast<uint32_t>(chosen) << shift;
    mask |= 0xffu << shift;
    count_equal = counts[chosen];
  }
  const float boundary = FloatFromKey(prefix);
  const FixedSum each = kernels::ToFixedSum(std::exp(static_cast<double>(boundary)));
  int32_t lo = 1;
  int32_t hi = count_equal;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (kernels::ToDouble(kernels::Add(above, kernels::Multiply(each, mid))) >= target) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  std::vector<bool> kept(z.size());
  int32_t ties = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    kept[i] = z[i] > boundary || (z[i] == boundary && ++ties <= lo);
  }
  return kept;
}

std::vector<bool> KeptBySort(const std::vector<float>& z, float top_p) {
  std::vector<int32_t> order;
  for (size_t i = 0; i < z.size(); ++i) {
    if (z[i] > -kInf) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(),
            [&z](int32_t a, int32_t b) { return z[a] != z[b] ? z[a] > z[b] : a < b; });
  double total = 0.0;
  for (int32_t id : order) total += std::exp(static_cast<double>(z[id]));
  const double target = static_cast<double>(top_p) * total;
  double cumulative = 0.0;
  std::vector<bool> kept(z.size(), false);
  for (int32_t id : order) {
    kept[id] = true;
    cumulative += std::exp(static_cast<double>(z[id]));
    if (cumulative >= target) break;
  }
  return kept;
}

TEST(TopPMethodTest, RadixSelectionKeepsWhatTheSortKeeps) {
  std::mt19937_64 rng(17);
  int compared = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const size_t vocab = trial % 4 == 0 ? 5 : (trial % 4 == 1 ? 1000 : 32000);
    std::vector<float> z = RandomNormal(vocab, rng(), 3.0f);
    if (trial % 5 == 1) {
      for (float& x : z) x = std::round(x * 2.0f) / 2.0f;  // ties, the boundary among them
    }
    if (trial % 5 == 2) {
      for (size_t i = 0; i < vocab; i += 3) z[i] = -kInf;
    }
    if (trial % 5 == 3) std::fill(z.begin(), z.end(), 0.25f);
    // As DrawToken leaves them: the max at exactly 0, the rest scaled by a temperature.
    const float temperature = trial % 3 == 0 ? 0.7f : 1.3f;
    const float max = *std::max_element(z.begin(), z.end());
    for (float& x : z) {
      const float scaled = x == max ? 0.0f : (x - max) / temperature;
      x = std::isnan(scaled) ? -kInf : (scaled == 0.0f ? 0.0f : scaled);
    }
    for (float top_p : {0.05f, 0.5f, 0.9f, 0.99f, 0.999999f}) {
      ASSERT_EQ(KeptByRadixSelection(z, top_p), KeptBySort(z, top_p))
          << "trial " << trial << " vocab " << vocab << " top_p " << top_p;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 2000);
}

// The count-only radix selection of the CUDA sampler (top_k's threshold, the top alternatives):
// the key of the rank-th largest, and the count of larger keys and of equal ones.
struct CountSelection {
  float value;
  int32_t above;
  int32_t equal;
};

CountSelection SelectByCount(const std::vector<float>& keys, int32_t rank) {
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int32_t above = 0;
  int32_t equal = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    std::vector<int32_t> counts(256, 0);
    for (float v : keys) {
      const uint32_t key = OrderedKey(v);
      if ((key & mask) == prefix) ++counts[(key >> shift) & 0xffu];
    }
    int chosen = -1;
    for (int b = 255; b >= 0; --b) {
      if (counts[b] == 0) continue;
      if (above + counts[b] >= rank) {
        chosen = b;
        break;
      }
      above += counts[b];
    }
    EXPECT_GE(chosen, 0);
    prefix |= static_cast<uint32_t>(chosen) << shift;
    mask |= 0xffu << shift;
    equal = counts[chosen];
  }
  return {FloatFromKey(prefix), above, equal};
}

TEST(CountSelectionMethodTest, KthLargestAndTopAlternativesMatchTheSorts) {
  std::mt19937_64 rng(23);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t vocab = trial % 3 == 0 ? 7 : (trial % 3 == 1 ? 1000 : 32000);
    std::vector<float> keys = RandomNormal(vocab, rng(), 3.0f);
    if (trial % 4 == 1) {
      // Rounding gives -0 too; the kernel's keys have no -0 (CanonicalZero), as here.
      for (float& x : keys) x = std::round(x) + 0.0f;
    }
    if (trial % 4 == 2) {
      for (size_t i = 0; i < vocab; i += 2) keys[i] = -kInf;
    }
    if (trial % 4 == 3) std::fill(keys.begin(), keys.end(), -1.5f);
    for (int32_t rank : {1, 2, 5, 20, 50}) {
      if (rank > static_cast<int32_t>(vocab)) continue;
      const CountSelection got = SelectByCount(keys, rank);
      std::vector<float> sorted = keys;
      std::nth_element(sorted.begin(), sorted.begin() + (rank - 1), sorted.end(),
                       std::greater<float>());
      ASSERT_EQ(got.value, sorted[rank - 1]) << "trial " << trial << " rank " << rank;
      // The top `rank` by (key desc, id asc): larger keys, then the lowest ids of the equal ones.
      std::vector<int32_t> order(vocab);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(
          order.begin(), order.begin() + rank, order.end(),
          [&](int32_t a, int32_t b) { return keys[a] != keys[b] ? keys[a] > keys[b] : a < b; });
      std::vector<int32_t> want(order.begin(), order.begin() + rank);
      std::sort(want.begin(), want.end());
      std::vector<int32_t> chosen;
      int32_t ties = 0;
      for (size_t i = 0; i < vocab; ++i) {
        if (keys[i] > got.value || (keys[i] == got.value && ++ties <= rank - got.above)) {
          chosen.push_back(static_cast<int32_t>(i));
        }
      }
      ASSERT_EQ(chosen, want) << "trial " << trial << " rank " << rank;
      ASSERT_LE(rank - got.above, got.equal);
    }
  }
}

}  // namespace
}  // namespace hgrn2
