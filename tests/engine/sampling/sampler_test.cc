// Tests of the sampler: logit processing, filters, the seeded draw and its distribution,
// log-probabilities, validation, stopping rules and the Philox generator.
#include "engine/sampling/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace hgrn2 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams Greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

SamplingParams Seeded(uint64_t seed, float temperature = 1.0f) {
  SamplingParams params;
  params.temperature = temperature;
  params.seed = seed;
  return params;
}

int32_t SampleOnce(const SamplingParams& params, const std::vector<float>& logits,
                   const std::vector<int32_t>& prompt = {}) {
  Sampler sampler(params, static_cast<int64_t>(logits.size()), prompt);
  return sampler.Sample(logits).id;
}

std::vector<float> RandomLogits(int32_t vocab, uint32_t seed, float stddev = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = normal(rng);
  return logits;
}

// softmax(logits / temperature) in double.
std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = -std::numeric_limits<double>::infinity();
  for (float x : logits) max = std::max(max, static_cast<double>(x));
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((logits[i] - max) / temperature);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

// An independent statement of steps 4-7 of the header (no bias or penalties): the ids a draw
// may return.
std::set<int32_t> KeptSet(const std::vector<float>& logits, const SamplingParams& params) {
  const std::vector<double> p = Softmax(logits, params.temperature);
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::sort(ids.begin(), ids.end(),
            [&p](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
  std::vector<int32_t> kept = ids;
  if (params.top_k > 0 && params.top_k < static_cast<int32_t>(ids.size())) {
    const double kth = p[ids[params.top_k - 1]];
    kept.clear();
    for (int32_t id : ids) {
      if (p[id] >= kth) kept.push_back(id);
    }
  }
  if (params.top_p < 1.0f) {
    double total = 0.0;
    for (int32_t id : kept) total += p[id];
    double cumulative = 0.0;
    size_t keep = kept.size();
    for (size_t j = 0; j < kept.size(); ++j) {
      cumulative += p[kept[j]] / total;
      if (cumulative >= params.top_p) {
        keep = j + 1;
        break;
      }
    }
    kept.resize(keep);
  }
  std::set<int32_t> result;
  const double max = p[ids[0]];
  for (int32_t id : kept) {
    if (p[id] >= params.min_p * max) result.insert(id);
  }
  return result;
}

// Pearson's chi-square statistic of observed counts against expected probabilities.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& p) {
  double total = 0.0;
  for (int c : counts) total += c;
  double statistic = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = total * p[i];
    statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return statistic;
}

std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).id];
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Philox and the uniform.

TEST(PhiloxTest, KnownAnswerVectorsFromRandom123) {
  EXPECT_EQ(Philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(
      Philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
      (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(
      Philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
      (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, UniformComesFromTheFirstWord) {
  const uint64_t seed = 0x0123456789abcdefULL;
  const uint64_t counter = 0xfedcba9876543210ULL;
  const uint64_t index = 0x1122334455667788ULL;
  const uint32_t x =
      Philox4x32_10({0x55667788, 0x11223344, 0x76543210, 0xfedcba98}, {0x89abcdef, 0x01234567})[0];
  EXPECT_EQ(PhiloxUniform(seed, counter, index), UnitIntervalFromBits(x));
}

TEST(PhiloxTest, UnitIntervalMappingIsOpenAtBothEnds) {
  EXPECT_EQ(UnitIntervalFromBits(0), 0x1p-24f);
  EXPECT_EQ(UnitIntervalFromBits(0xffffffffu), 1.0f - 0x1p-24f);
  EXPECT_LT(UnitIntervalFromBits(0xffffffffu), 1.0f);
  EXPECT_EQ(UnitIntervalFromBits(0x80000000u), 0.5f + 0x1p-24f);
  // Words that share their top 23 bits map to the same value.
  EXPECT_EQ(UnitIntervalFromBits(0x12345600u), UnitIntervalFromBits(0x123457ffu));
}

TEST(PhiloxTest, UniformIsInOpenUnitIntervalAndLooksUniform) {
  constexpr int kDraws = 200000;
  double sum = 0.0;
  double sum_squares = 0.0;
  float min = 2.0f;
  float max = -1.0f;
  for (int i = 0; i < kDraws; ++i) {
    const float u = PhiloxUniform(42, static_cast<uint64_t>(i / 1000), static_cast<uint64_t>(i));
    ASSERT_GT(u, 0.0f) << i;
    ASSERT_LT(u, 1.0f) << i;
    min = std::min(min, u);
    max = std::max(max, u);
    sum += u;
    sum_squares += static_cast<double>(u) * u;
  }
  const double mean = sum / kDraws;
  EXPECT_NEAR(mean, 0.5, 0.005);
  EXPECT_NEAR(sum_squares / kDraws - mean * mean, 1.0 / 12.0, 0.002);
  EXPECT_LT(min, 1e-4f);
  EXPECT_GT(max, 1.0f - 1e-4f);
}

TEST(PhiloxTest, EveryWordOfSeedCounterAndIndexMatters) {
  const float base = PhiloxUniform(1, 1, 1);
  EXPECT_NE(PhiloxUniform(1 + (uint64_t{1} << 32), 1, 1), base);
  EXPECT_NE(PhiloxUniform(2, 1, 1), base);
  EXPECT_NE(PhiloxUniform(1, 1 + (uint64_t{1} << 32), 1), base);
  EXPECT_NE(PhiloxUniform(1, 2, 1), base);
  EXPECT_NE(PhiloxUniform(1, 1, 1 + (uint64_t{1} << 32)), base);
  EXPECT_NE(PhiloxUniform(1, 1, 2), base);
  EXPECT_EQ(PhiloxUniform(1, 1, 1), base);
}

// ---------------------------------------------------------------------------------------------
// LogSoftmax.

TEST(LogSoftmaxTest, MatchesDoubleReference) {
  const std::vector<float> logits = RandomLogits(37, 7, 5.0f);
  std::vector<float> out(logits.size());
  LogSoftmax(logits, absl::MakeSpan(out));
  const std::vector<double> p = Softmax(logits);
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_NEAR(out[i], std::log(p[i]), 1e-5 * std::max(1.0, std::abs(std::log(p[i])))) << i;
    total += std::exp(static_cast<double>(out[i]));
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST(LogSoftmaxTest, LargeLogitsDoNotOverflowAndMinusInfinityStays) {
  const std::vector<float> logits = {1000.0f, 999.0f, -kInf, 998.0f};
  std::vector<float> out(logits.size());
  LogSoftmax(logits, absl::MakeSpan(out));
  const double log_sum = std::log(1.0 + std::exp(-1.0) + std::exp(-2.0));
  EXPECT_NEAR(out[0], -log_sum, 1e-6);
  EXPECT_NEAR(out[1], -1.0 - log_sum, 1e-6);
  EXPECT_EQ(out[2], -kInf);
  EXPECT_NEAR(out[3], -2.0 - log_sum, 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Greedy, bias and penalties.

TEST(SamplerGreedyTest, ArgmaxWithLowestIdOnTies) {
  EXPECT_EQ(SampleOnce(Greedy(), {1.0f, 3.0f, 3.0f, 2.0f}), 1);
  EXPECT_EQ(SampleOnce(Greedy(), {-kInf, -1.0f, -1.0f}), 1);
  EXPECT_EQ(SampleOnce(Greedy(), {-5.0f, -4.0f, -3.0f}), 2);
  std::vector<float> large = RandomLogits(1000, 3);
  large[777] = 100.0f;
  EXPECT_EQ(SampleOnce(Greedy(), large), 777);
}

TEST(SamplerGreedyTest, MinusInfinityBiasBansTheArgmax) {
  SamplingParams params = Greedy();
  params.logit_bias = {{1, -kInf}};
  EXPECT_EQ(SampleOnce(params, {1.0f, 5.0f, 2.0f}), 2);
  params.logit_bias = {{1, -kInf}, {2, -kInf}};
  EXPECT_EQ(SampleOnce(params, {1.0f, 5.0f, 2.0f}), 0);
}

TEST(SamplerGreedyTest, PositiveBiasAndRepeatedEntriesAddUp) {
  SamplingParams params = Greedy();
  params.logit_bias = {{0, 2.5f}};
  EXPECT_EQ(SampleOnce(params, {1.0f, 3.0f}), 0);  // 3.5 > 3
  params.logit_bias = {{0, 1.0f}};
  EXPECT_EQ(SampleOnce(params, {1.0f, 3.0f}), 1);  // 2 < 3
  params.logit_bias = {{0, 1.0f}, {0, 1.5f}};
  EXPECT_EQ(SampleOnce(params, {1.0f, 3.0f}), 0);  // 1 + 1 + 1.5 > 3
}

TEST(SamplerGreedyTest, EverythingBannedFallsBackToRawArgmax) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f};
  for (float temperature : {0.0f, 1.0f}) {
    SamplingParams params = Seeded(5, temperature);
    params.logit_bias = {{0, -kInf}, {1, -kInf}, {2, -kInf}};
    Sampler sampler(params, 3, {});
    const SampledToken token = sampler.Sample(logits);
    EXPECT_EQ(token.id, 1) << temperature;
    std::vector<float> logprobs(3);
    LogSoftmax(logits, absl::MakeSpan(logprobs));
    EXPECT_FLOAT_EQ(token.logprob, logprobs[1]);
    EXPECT_EQ(sampler.num_sampled(), 1);
  }
}

TEST(SamplerPenaltyTest, RepetitionPenaltyDividesPositiveLogits) {
  SamplingParams params = Greedy();
  const std::vector<float> logits = {2.0f, 1.9f, 0.0f};
  EXPECT_EQ(SampleOnce(params, logits, {0}), 0);  // off
  params.repetition_penalty = 1.2f;               // 2 / 1.2 = 1.67 < 1.9
  EXPECT_EQ(SampleOnce(params, logits, {0}), 1);
  EXPECT_EQ(SampleOnce(params, logits, {2}), 0);  // only prompt tokens are penalized
  params.repetition_penalty = 1.04f;              // 2 / 1.04 = 1.923 > 1.9: a division
  EXPECT_EQ(SampleOnce(params, logits, {0}), 0);
}

TEST(SamplerPenaltyTest, RepetitionPenaltyMultipliesNegativeLogits) {
  SamplingParams params = Greedy();
  const std::vector<float> logits = {-1.0f, -1.1f, -5.0f};
  EXPECT_EQ(SampleOnce(params, logits, {0}), 0);
  params.repetition_penalty = 1.2f;  // -1 * 1.2 = -1.2 < -1.1 (dividing would give -0.83)
  EXPECT_EQ(SampleOnce(params, logits, {0}), 1);
  params.repetition_penalty = 1.05f;  // -1.05 > -1.1
  EXPECT_EQ(SampleOnce(params, logits, {0}), 0);
}

TEST(SamplerPenaltyTest, RepetitionPenaltyBelowOneFavoursSeenTokens) {
  SamplingParams params = Greedy();
  params.repetition_penalty = 0.9f;  // 1.9 / 0.9 = 2.11 > 2
  EXPECT_EQ(SampleOnce(params, {1.9f, 2.0f}, {0}), 0);
}

TEST(SamplerPenaltyTest, RepetitionPenaltyCountsGeneratedTokens) {
  SamplingParams params = Greedy();
  params.repetition_penalty = 1.2f;
  Sampler sampler(params, 2, {});
  const std::vector<float> logits = {2.0f, 1.9f};
  EXPECT_EQ(sampler.Sample(logits).id, 0);
  EXPECT_EQ(sampler.Sample(logits).id, 1);  // 1.67 < 1.9
  EXPECT_EQ(sampler.Sample(logits).id, 0);  // 1.67 > 1.58; applied once, not per occurrence
}

TEST(SamplerPenaltyTest, BiasIsAddedBeforeRepetitionPenalty) {
  SamplingParams params = Greedy();
  params.logit_bias = {{0, 1.0f}};
  params.repetition_penalty = 2.0f;
  // (1 + 1) / 2 = 1 < 1.2; penalty first would give 1 / 2 + 1 = 1.5 > 1.2.
  EXPECT_EQ(SampleOnce(params, {1.0f, 1.2f}, {0}), 1);
}

TEST(SamplerPenaltyTest, PresenceOnceAndFrequencyPerOccurrence) {
  SamplingParams params = Greedy();
  params.frequency_penalty = 0.5f;
  params.presence_penalty = 0.3f;
  {
    // Token 0 after n occurrences: 3 - 0.5 n - 0.3; token 1 after m: 2.25 - 0.5 m - 0.3.
    Sampler sampler(params, 3, {});
    const std::vector<float> logits = {3.0f, 2.25f, 0.0f};
    std::vector<int32_t> ids;
    for (int i = 0; i < 5; ++i) ids.push_back(sampler.Sample(logits).id);
    EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 0, 0, 1}));
  }
  {
    // 2.2 > 2.15 after one occurrence, 1.7 < 2.15 after two.
    Sampler sampler(params, 2, {});
    const std::vector<float> logits = {3.0f, 2.15f};
    std::vector<int32_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(sampler.Sample(logits).id);
    EXPECT_EQ(ids, (std::vector<int32_t>{0, 0, 1}));
  }
}

TEST(SamplerPenaltyTest, PresencePenaltyDoesNotGrowWithCount) {
  SamplingParams params = Greedy();
  params.presence_penalty = 2.0f;
  Sampler sampler(params, 2, {});
  const std::vector<float> logits = {3.0f, 1.5f};
  std::vector<int32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(sampler.Sample(logits).id);
  // 3 -> 1 after token 0 appears, 1.5 -> -0.5 after token 1 appears; then 1 > -0.5 forever.
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 0, 0}));
}

TEST(SamplerPenaltyTest, PresenceAndFrequencyIgnoreThePrompt) {
  SamplingParams params = Greedy();
  params.presence_penalty = 2.0f;
  params.frequency_penalty = 2.0f;
  EXPECT_EQ(SampleOnce(params, {3.0f, 2.9f}, {0, 0, 0}), 0);
}

TEST(SamplerPenaltyTest, NegativePresencePenaltyRewardsRepetition) {
  SamplingParams params = Greedy();
  params.presence_penalty = -1.0f;
  Sampler sampler(params, 2, {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{1.0f, 2.0f}).id, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{2.0f, 1.5f}).id, 1);  // 2.5 > 2
  EXPECT_EQ(SampleOnce(Greedy(), {2.0f, 1.5f}), 0);
}

TEST(SamplerPenaltyTest, RepetitionPenaltyBeforePresencePenalty) {
  SamplingParams params = Greedy();
  params.repetition_penalty = 2.0f;
  params.presence_penalty = 1.0f;
  Sampler sampler(params, 2, {});
  EXPECT_EQ(sampler.Sample(std::vector<float>{3.0f, 0.0f}).id, 0);
  // 3 / 2 - 1 = 0.5 < 0.75; the other order would give (3 - 1) / 2 = 1 > 0.75.
  EXPECT_EQ(sampler.Sample(std::vector<float>{3.0f, 0.75f}).id, 1);
}

// ---------------------------------------------------------------------------------------------
// Filters.

TEST(SamplerFilterTest, TopKOneIsGreedyForAnyTemperatureAndSeed) {
  const std::vector<float> logits = RandomLogits(50, 11);
  const int32_t greedy = SampleOnce(Greedy(), logits);
  for (float temperature : {0.1f, 1.0f, 10.0f, 1000.0f}) {
    for (uint64_t seed = 0; seed < 50; ++seed) {
      SamplingParams params = Seeded(seed, temperature);
      params.top_k = 1;
      Sampler sampler(params, 50, {});
      for (int step = 0; step < 3; ++step) {
        ASSERT_EQ(sampler.Sample(logits).id, greedy) << temperature << " " << seed;
      }
    }
  }
}

TEST(SamplerFilterTest, TinyTopPIsGreedy) {
  const std::vector<float> logits = RandomLogits(50, 12);
  const int32_t greedy = SampleOnce(Greedy(), logits);
  for (uint64_t seed = 0; seed < 100; ++seed) {
    SamplingParams params = Seeded(seed, 5.0f);
    params.top_p = 1e-6f;
    ASSERT_EQ(SampleOnce(params, logits), greedy) << seed;
  }
}

TEST(SamplerFilterTest, MinPOneIsGreedy) {
  const std::vector<float> logits = RandomLogits(50, 13);
  const int32_t greedy = SampleOnce(Greedy(), logits);
  for (uint64_t seed = 0; seed < 100; ++seed) {
    SamplingParams params = Seeded(seed, 5.0f);
    params.min_p = 1.0f;
    ASSERT_EQ(SampleOnce(params, logits), greedy) << seed;
  }
}

TEST(SamplerFilterTest, TopKKeepsTiesWithTheKth) {
  SamplingParams params = Seeded(99);
  params.top_k = 3;
  Sampler sampler(params, 5, {});
  const std::vector<int> counts = Histogram(sampler, {5.0f, 4.0f, 3.0f, 3.0f, 1.0f}, 4000);
  EXPECT_GT(counts[2], 0);
  EXPECT_GT(counts[3], 0);
  EXPECT_EQ(counts[4], 0);
}

TEST(SamplerFilterTest, TopPBreaksProbabilityTiesById) {
  const std::vector<float> logits = {2.0f, 2.0f, 0.0f};  // p = 0.468, 0.468, 0.063
  SamplingParams params = Seeded(7);
  params.top_p = 0.4f;
  Sampler only_first(params, 3, {});
  EXPECT_EQ(Histogram(only_first, logits, 500), (std::vector<int>{500, 0, 0}));
  params.top_p = 0.5f;
  Sampler first_two(params, 3, {});
  const std::vector<int> counts = Histogram(first_two, logits, 1000);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[2], 0);
}

TEST(SamplerFilterTest, TopPStopsAsSoonAsTheMassIsReached) {
  // Four equal tokens: the sums are exact, and two of them reach 0.5 exactly.
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f};
  SamplingParams params = Seeded(17);
  params.top_p = 0.5f;
  Sampler half(params, 4, {});
  std::vector<int> counts = Histogram(half, logits, 1000);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[2] + counts[3], 0);
  params.top_p = 0.5000001f;
  Sampler over_half(params, 4, {});
  counts = Histogram(over_half, logits, 1000);
  EXPECT_GT(counts[2], 0);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplerFilterTest, MinPKeepsTokensAboveTheScaledMax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.15f),
                                     std::log(0.1f)};
  SamplingParams params = Seeded(3);
  params.min_p = 0.25f;  // threshold 0.125: 0.1 is out
  Sampler sampler(params, 4, {});
  const std::vector<int> counts = Histogram(sampler, logits, 3000);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplerFilterTest, DrawsNeverLeaveTheKeptSet) {
  struct Case {
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const Case cases[] = {{5, 1.0f, 0.0f},  {0, 0.6f, 0.0f}, {0, 1.0f, 0.1f},
                        {8, 0.8f, 0.05f}, {3, 0.9f, 0.5f}, {0, 0.95f, 0.0f}};
  for (const Case& c : cases) {
    for (float temperature : {0.7f, 1.5f}) {
      for (uint32_t seed = 0; seed < 20; ++seed) {
        const std::vector<float> logits = RandomLogits(40, 100 + seed);
        SamplingParams params = Seeded(seed, temperature);
        params.top_k = c.top_k;
        params.top_p = c.top_p;
        params.min_p = c.min_p;
        const std::set<int32_t> kept = KeptSet(logits, params);
        ASSERT_FALSE(kept.empty());
        ASSERT_LT(kept.size(), logits.size());  // the filter does something
        Sampler sampler(params, 40, {});
        std::set<int32_t> seen;
        for (int draw = 0; draw < 200; ++draw) {
          const int32_t id = sampler.Sample(logits).id;
          ASSERT_TRUE(kept.count(id)) << "token " << id << " top_k " << c.top_k << " top_p "
                                      << c.top_p << " min_p " << c.min_p << " seed " << seed;
          seen.insert(id);
        }
        if (kept.size() > 1) {
          EXPECT_GT(seen.size(), 1u);  // not collapsed to greedy
        }
      }
    }
  }
}

TEST(SamplerFilterTest, BannedTokensAreNeverDrawn) {
  std::vector<float> logits = RandomLogits(20, 21);
  logits[4] = -kInf;
  const int32_t greedy = SampleOnce(Greedy(), logits);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SamplingParams params = Seeded(seed, 3.0f);
    params.logit_bias = {{greedy, -kInf}};
    Sampler sampler(params, 20, {});
    for (int draw = 0; draw < 200; ++draw) {
      const int32_t id = sampler.Sample(logits).id;
      ASSERT_NE(id, 4);
      ASSERT_NE(id, greedy);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The random draw.

TEST(SamplerDrawTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = RandomLogits(50, 31, 1.0f);
  const auto run = [&logits](uint64_t seed) {
    Sampler sampler(Seeded(seed), 50, {});
    std::vector<int32_t> ids;
    for (int i = 0; i < 50; ++i) ids.push_back(sampler.Sample(logits).id);
    return ids;
  };
  const std::vector<int32_t> first = run(1234);
  EXPECT_EQ(run(1234), first);
  EXPECT_NE(run(1235), first);
  EXPECT_NE(run(1234 + (uint64_t{1} << 32)), first);
  EXPECT_GT(std::set<int32_t>(first.begin(), first.end()).size(), 5u);
}

TEST(SamplerDrawTest, SequenceDoesNotDependOnOtherSamplers) {
  const std::vector<float> logits = RandomLogits(30, 32, 1.0f);
  Sampler alone(Seeded(77), 30, {});
  std::vector<int32_t> expected;
  for (int i = 0; i < 20; ++i) expected.push_back(alone.Sample(logits).id);
  Sampler mine(Seeded(77), 30, {});
  Sampler other(Seeded(78), 30, {});
  std::vector<int32_t> interleaved;
  for (int i = 0; i < 20; ++i) {
    other.Sample(logits);
    interleaved.push_back(mine.Sample(logits).id);
    other.Sample(logits);
  }
  EXPECT_EQ(interleaved, expected);
}

TEST(SamplerDrawTest, UnseededSamplersGetDistinctSeedsThatReproduce) {
  SamplingParams params;
  Sampler a(params, 10, {});
  Sampler b(params, 10, {});
  EXPECT_NE(a.seed(), b.seed());  // fails with probability 2^-64
  const std::vector<float> logits = RandomLogits(10, 33, 1.0f);
  Sampler replay(Seeded(a.seed()), 10, {});
  for (int i = 0; i < 20; ++i) ASSERT_EQ(a.Sample(logits).id, replay.Sample(logits).id);
  EXPECT_EQ(a.num_sampled(), 20);
}

TEST(SamplerDrawTest, DrawIsTheExponentialRaceKeyedBySeedStepAndId) {
  // The CUDA sampler must reproduce this: argmax over i of log p_i - log(-log(u_i)) with
  // u_i = PhiloxUniform(seed, step, i).
  const std::vector<float> logits = RandomLogits(64, 34, 1.5f);
  const float temperature = 0.8f;
  const uint64_t seed = 0xdeadbeefcafeULL;
  Sampler sampler(Seeded(seed, temperature), 64, {});
  for (uint64_t step = 0; step < 100; ++step) {
    int32_t expected = -1;
    double best = -std::numeric_limits<double>::infinity();
    for (int32_t i = 0; i < 64; ++i) {
      const double e = -std::log(static_cast<double>(PhiloxUniform(seed, step, i)));
      const double score = logits[i] / temperature - std::log(e);
      if (score > best) {
        best = score;
        expected = i;
      }
    }
    ASSERT_EQ(sampler.Sample(logits).id, expected) << step;
  }
}

TEST(SamplerDrawTest, EmpiricalDistributionMatchesSoftmax) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  Sampler sampler(Seeded(2024), 5, {});
  const std::vector<int> counts = Histogram(sampler, logits, 20000);
  const double statistic = ChiSquare(counts, Softmax(logits));
  // 4 degrees of freedom: P(chi2 > 30) is about 5e-6. A greedy sampler would score ~15000.
  EXPECT_LT(statistic, 30.0) << counts[0] << " " << counts[1] << " " << counts[2] << " "
                             << counts[3] << " " << counts[4];
}

TEST(SamplerDrawTest, TemperatureTwoFlattensAndHalfSharpens) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  constexpr int kDraws = 20000;
  Sampler t1(Seeded(5, 1.0f), 5, {});
  Sampler t2(Seeded(5, 2.0f), 5, {});
  Sampler t05(Seeded(5, 0.5f), 5, {});
  const std::vector<int> c1 = Histogram(t1, logits, kDraws);
  const std::vector<int> c2 = Histogram(t2, logits, kDraws);
  const std::vector<int> c05 = Histogram(t05, logits, kDraws);
  EXPECT_LT(ChiSquare(c2, Softmax(logits, 2.0)), 30.0);
  EXPECT_LT(ChiSquare(c05, Softmax(logits, 0.5)), 30.0);
  // p(top) = 0.563 at T = 1, 0.374 at T = 2, 0.839 at T = 0.5; the rarest goes 0.028 -> 0.084.
  EXPECT_LT(c2[0], c1[0] - kDraws / 10);
  EXPECT_GT(c2[4], c1[4] + kDraws / 40);
  EXPECT_GT(c05[0], c1[0] + kDraws / 10);
}

TEST(SamplerDrawTest, TopKRenormalizesTheKeptTokens) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  SamplingParams params = Seeded(6);
  params.top_k = 2;
  Sampler sampler(params, 5, {});
  const std::vector<int> counts = Histogram(sampler, logits, 10000);
  EXPECT_EQ(counts[2] + counts[3] + counts[4], 0);
  const std::vector<double> kept = Softmax({2.0f, 1.0f});
  EXPECT_LT(ChiSquare({counts[0], counts[1]}, kept), 20.0);  // 1 degree of freedom
}

// ---------------------------------------------------------------------------------------------
// Reported log-probabilities.

TEST(SamplerLogprobTest, LogprobIsFromRawLogitsWhateverTheProcessing) {
  const std::vector<float> logits = RandomLogits(30, 41);
  const int32_t raw_argmax = SampleOnce(Greedy(), logits);
  const int32_t favoured = (raw_argmax + 7) % 30;
  SamplingParams params = Seeded(8, 0.7f);
  params.logit_bias = {{favoured, 30.0f}, {raw_argmax, -5.0f}};
  params.repetition_penalty = 1.3f;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.3f;
  params.num_top_logprobs = 3;
  Sampler sampler(params, 30, {1, 2, 3});
  std::vector<float> expected(30);
  LogSoftmax(logits, absl::MakeSpan(expected));
  const std::vector<double> p = Softmax(logits);
  for (int step = 0; step < 10; ++step) {
    const SampledToken token = sampler.Sample(logits);
    ASSERT_EQ(token.id, favoured);                       // the processing changed the choice...
    EXPECT_FLOAT_EQ(token.logprob, expected[favoured]);  // ...not the reported logprob
    EXPECT_NEAR(token.logprob, std::log(p[favoured]), 1e-5);
    ASSERT_EQ(token.top.size(), 3u);
    EXPECT_EQ(token.top[0].id, raw_argmax);
    EXPECT_FLOAT_EQ(token.top[0].logprob, expected[raw_argmax]);
  }
}

TEST(SamplerLogprobTest, TopAlternativesSortedByLogprobThenId) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -kInf, 0.5f};
  std::vector<float> expected(logits.size());
  LogSoftmax(logits, absl::MakeSpan(expected));
  SamplingParams params = Greedy();
  params.num_top_logprobs = 4;
  Sampler sampler(params, 6, {});
  const SampledToken token = sampler.Sample(logits);
  EXPECT_EQ(token.id, 1);
  ASSERT_EQ(token.top.size(), 4u);
  const int32_t ids[] = {1, 3, 2, 0};
  for (size_t j = 0; j < 4; ++j) {
    EXPECT_EQ(token.top[j].id, ids[j]) << j;
    EXPECT_FLOAT_EQ(token.top[j].logprob, expected[ids[j]]) << j;
  }
  EXPECT_NEAR(
      token.top[0].logprob,
      std::log(std::exp(3.0) / (std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0) + std::exp(0.5))),
      1e-6);
}

TEST(SamplerLogprobTest, TopAlternativesClampToVocabularyAndCanBeOff) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -kInf, 0.5f};
  SamplingParams params = Greedy();
  params.num_top_logprobs = 10;
  Sampler all(params, 6, {});
  const SampledToken token = all.Sample(logits);
  ASSERT_EQ(token.top.size(), 6u);
  EXPECT_EQ(token.top[4].id, 5);
  EXPECT_EQ(token.top[5].id, 4);
  EXPECT_EQ(token.top[5].logprob, -kInf);
  params.num_top_logprobs = 0;
  Sampler none(params, 6, {});
  EXPECT_TRUE(none.Sample(logits).top.empty());
}

TEST(SamplerLogprobTest, TopAlternativesOnALargeVocabularyMatchAFullSort) {
  const std::vector<float> logits = RandomLogits(5000, 42);
  std::vector<float> expected(logits.size());
  LogSoftmax(logits, absl::MakeSpan(expected));
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::sort(ids.begin(), ids.end(), [&expected](int32_t a, int32_t b) {
    return expected[a] != expected[b] ? expected[a] > expected[b] : a < b;
  });
  SamplingParams params = Seeded(9);
  params.num_top_logprobs = 20;
  Sampler sampler(params, 5000, {});
  const SampledToken token = sampler.Sample(logits);
  ASSERT_EQ(token.top.size(), 20u);
  for (size_t j = 0; j < 20; ++j) {
    EXPECT_EQ(token.top[j].id, ids[j]) << j;
    EXPECT_EQ(token.top[j].logprob, expected[ids[j]]) << j;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation.

void ExpectInvalid(const absl::Status& status, const std::string& field, const std::string& value) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  const std::string message(status.message());
  EXPECT_NE(message.find(field), std::string::npos) << message;
  EXPECT_NE(message.find(absl::StrCat("got ", value)), std::string::npos) << message;
}

TEST(SamplingParamsTest, ValidateRejectsEachBadField) {
  struct Case {
    std::function<void(SamplingParams&)> mutate;
    std::string field;
    std::string value;
  };
  const std::vector<Case> cases = {
      {[](SamplingParams& p) { p.temperature = -1.0f; }, "temperature must be >= 0", "-1"},
      {[](SamplingParams& p) { p.temperature = kNaN; }, "temperature", "nan"},
      {[](SamplingParams& p) { p.temperature = kInf; }, "temperature", "inf"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k", "-1"},
      {[](SamplingParams& p) { p.top_p = 0.0f; }, "top_p", "0"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p", "1.5"},
      {[](SamplingParams& p) { p.top_p = kNaN; }, "top_p", "nan"},
      {[](SamplingParams& p) { p.min_p = -0.25f; }, "min_p", "-0.25"},
      {[](SamplingParams& p) { p.min_p = 1.25f; }, "min_p", "1.25"},
      {[](SamplingParams& p) { p.min_p = kNaN; }, "min_p", "nan"},
      {[](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty", "0"},
      {[](SamplingParams& p) { p.repetition_penalty = -2.0f; }, "repetition_penalty", "-2"},
      {[](SamplingParams& p) { p.repetition_penalty = kNaN; }, "repetition_penalty", "nan"},
      {[](SamplingParams& p) { p.repetition_penalty = kInf; }, "repetition_penalty", "inf"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty", "2.5"},
      {[](SamplingParams& p) { p.presence_penalty = -3.0f; }, "presence_penalty", "-3"},
      {[](SamplingParams& p) { p.presence_penalty = kNaN; }, "presence_penalty", "nan"},
      {[](SamplingParams& p) { p.frequency_penalty = 2.5f; }, "frequency_penalty", "2.5"},
      {[](SamplingParams& p) { p.frequency_penalty = -kInf; }, "frequency_penalty", "-inf"},
      {[](SamplingParams& p) { p.frequency_penalty = kNaN; }, "frequency_penalty", "nan"},
      {[](SamplingParams& p) { p.num_top_logprobs = -1; }, "num_top_logprobs", "-1"},
      {[](SamplingParams& p) {
         p.logit_bias = {{-1, 1.0f}};
       },
       "logit_bias token id", "-1"},
      {[](SamplingParams& p) {
         p.logit_bias = {{2, 0.0f}, {100, 1.0f}};
       },
       "logit_bias token id must be in [0, 100)", "100"},
      {[](SamplingParams& p) {
         p.logit_bias = {{3, kNaN}};
       },
       "logit_bias value for token 3", "nan"},
      {[](SamplingParams& p) {
         p.logit_bias = {{3, kInf}};
       },
       "logit_bias value for token 3", "inf"},
  };
  for (const Case& c : cases) {
    SamplingParams params;
    c.mutate(params);
    SCOPED_TRACE(c.field + " = " + c.value);
    ExpectInvalid(params.Validate(100), c.field, c.value);
  }
}

TEST(SamplingParamsTest, ValidateAcceptsTheBoundaries) {
  EXPECT_TRUE(SamplingParams().Validate(100).ok());
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = 100000;
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.repetition_penalty = 1e-3f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.num_top_logprobs = 0;
  params.logit_bias = {{0, -kInf}, {99, 100.0f}, {5, -1e30f}};
  EXPECT_TRUE(params.Validate(100).ok()) << params.Validate(100);
  params.top_p = 1e-6f;
  params.min_p = 0.0f;
  params.presence_penalty = 2.0f;
  params.frequency_penalty = -2.0f;
  EXPECT_TRUE(params.Validate(100).ok()) << params.Validate(100);
}

TEST(StoppingParamsTest, ValidateRejectsBadFields) {
  StoppingParams params;
  EXPECT_TRUE(params.Validate(50).ok());
  params.max_new_tokens = 0;
  ExpectInvalid(params.Validate(50), "max_new_tokens must be >= 1", "0");
  params.max_new_tokens = -5;
  ExpectInvalid(params.Validate(50), "max_new_tokens", "-5");
  params.max_new_tokens = 1;
  params.stop_token_ids = {0, 49};
  EXPECT_TRUE(params.Validate(50).ok());
  params.stop_token_ids = {3, -1};
  ExpectInvalid(params.Validate(50), "stop_token_ids[1] must be in [0, 50)", "-1");
  params.stop_token_ids = {50};
  ExpectInvalid(params.Validate(50), "stop_token_ids[0]", "50");
}

// ---------------------------------------------------------------------------------------------
// Stopping.

TEST(CheckFinishTest, EosStopAndLengthInThatOrder) {
  const std::vector<int32_t> eos = {2, 7};
  StoppingParams params;
  params.max_new_tokens = 5;
  params.stop_token_ids = {4};
  EXPECT_EQ(CheckFinish(params, eos, 3, 1), FinishReason::kNone);
  EXPECT_EQ(CheckFinish(params, eos, 2, 1), FinishReason::kEos);
  EXPECT_EQ(CheckFinish(params, eos, 7, 3), FinishReason::kEos);
  EXPECT_EQ(CheckFinish(params, eos, 4, 1), FinishReason::kStop);
  EXPECT_EQ(CheckFinish(params, eos, 3, 4), FinishReason::kNone);
  EXPECT_EQ(CheckFinish(params, eos, 3, 5), FinishReason::kLength);
  EXPECT_EQ(CheckFinish(params, eos, 3, 6), FinishReason::kLength);
  EXPECT_EQ(CheckFinish(params, eos, 2, 5), FinishReason::kEos);   // EOS before length
  EXPECT_EQ(CheckFinish(params, eos, 4, 5), FinishReason::kStop);  // stop before length
  EXPECT_EQ(CheckFinish(params, {}, 2, 1), FinishReason::kNone);   // no EOS ids
  params.stop_token_ids = {4, 2};
  EXPECT_EQ(CheckFinish(params, eos, 2, 1), FinishReason::kEos);  // EOS before stop
}

TEST(CheckFinishTest, IgnoreEosSkipsOnlyEos) {
  const std::vector<int32_t> eos = {2};
  StoppingParams params;
  params.max_new_tokens = 3;
  params.ignore_eos = true;
  EXPECT_EQ(CheckFinish(params, eos, 2, 1), FinishReason::kNone);
  EXPECT_EQ(CheckFinish(params, eos, 2, 3), FinishReason::kLength);
  params.stop_token_ids = {2};
  EXPECT_EQ(CheckFinish(params, eos, 2, 1), FinishReason::kStop);
}

}  // namespace
}  // namespace hgrn2

namespace hgrn2 {
namespace {

TEST(SamplerTest, ImprobableTokensStayImprobableInALargeVocabulary) {
  // One token holds all the mass but 32000·e^-30 ≈ 3e-9 of it. A draw that could reach an
  // infinite score (a uniform of exactly 1) would pick another token about once per 1000 steps.
  constexpr int kVocab = 32000;
  std::vector<float> logits(kVocab, -30.0f);
  logits[7] = 0.0f;
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 5;
  Sampler sampler(params, kVocab, {});
  int others = 0;
  for (int step = 0; step < 5000; ++step) others += sampler.Sample(logits).id != 7;
  EXPECT_EQ(others, 0);
}

TEST(SamplerTest, UsesOnlyTheFirstVocabSizeLogitsOfAPaddedRow) {
  // Device backends may pad the vocabulary; the padding must never be chosen or counted.
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 1.3f;
  params.presence_penalty = 0.5f;
  Sampler sampler(params, 4, std::vector<int32_t>{1});
  const std::vector<float> padded = {0.1f, 0.2f, 0.3f, 0.0f, 100.0f, 100.0f};
  const SampledToken token = sampler.Sample(padded);
  EXPECT_EQ(token.id, 2);
  EXPECT_NEAR(token.logprob,
              0.3 - std::log(std::exp(0.1) + std::exp(0.2) + std::exp(0.3) + std::exp(0.0)), 1e-6);
}

}  // namespace
}  // namespace hgrn2
