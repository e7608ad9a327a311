// GPU test of the CUDA sampler (kernels/cuda/sample.cu) through the host glue
// (engine/sampling/device_sampling.h): token for token against the CPU Sampler on the same rows,
// over many parameter mixes, vocabularies and steps. Skipped where there is no GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sampling/device_sampling.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "kernels/sample.h"

namespace hgrn2 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kPoisonId = -777;
constexpr uint32_t kPoisonBits = 0x7fa5a5a5;  // a NaN no arithmetic produces

#define CUDA_OK(expr)                                                                            \
  do {                                                                                           \
    const cudaError_t cuda_ok_error = (expr);                                                    \
    ASSERT_EQ(cuda_ok_error, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_ok_error); \
  } while (0)

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

float PoisonFloat() {
  float x;
  std::memcpy(&x, &kPoisonBits, sizeof(x));
  return x;
}

bool IsPoison(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits == kPoisonBits;
}

template <typename T>
struct DeviceArray {
  T* data = nullptr;
  size_t size = 0;
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (data != nullptr) cudaFree(data);
  }
  cudaError_t Resize(size_t n) {
    if (n <= size && data != nullptr) return cudaSuccess;
    if (data != nullptr) cudaFree(data);
    data = nullptr;
    size = std::max<size_t>(n, 1);
    return cudaMalloc(&data, size * sizeof(T));
  }
  cudaError_t Upload(const std::vector<T>& host) {
    const cudaError_t error = Resize(host.size());
    if (error != cudaSuccess || host.empty()) return error;
    return cudaMemcpy(data, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  cudaError_t Download(std::vector<T>& host) const {
    return cudaMemcpy(host.data(), data, host.size() * sizeof(T), cudaMemcpyDeviceToHost);
  }
};

// A row's request: one of a list of mixes, by the row's index.
SamplingParams Mix(int index, int64_t vocab, uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  const int32_t v = static_cast<int32_t>(vocab);
  switch (index % 14) {
    case 0:
      p.temperature = 0.0f;
      break;
    case 1:
      p.temperature = 1.0f;
      break;
    case 2:
      p.temperature = 0.7f;
      p.top_k = 50;
      break;
    case 3:
      p.temperature = 1.3f;
      p.top_p = 0.9f;
      break;
    case 4:
      p.top_k = 1;
      break;
    case 5:
      p.top_k = 5;
      p.top_p = 0.5f;
      break;
    case 6:
      p.temperature = 0.7f;
      p.top_p = 0.99f;
      p.min_p = 0.05f;
      break;
    case 7:
      p.min_p = 0.05f;
      break;
    case 8:  // greedy with every adjustment
      p.temperature = 0.0f;
      p.repetition_penalty = 1.3f;
      p.presence_penalty = 0.5f;
      p.frequency_penalty = 0.3f;
      p.logit_bias = {{v / 2, 2.5f}, {1 % v, -kInf}, {v / 3, 0.75f}, {v / 2, -0.5f}};
      break;
    case 9:  // sampled with penalties below one and bans
      p.repetition_penalty = 0.8f;
      p.presence_penalty = -0.5f;
      p.frequency_penalty = 1.0f;
      p.top_p = 0.9f;
      p.logit_bias = {{0, -kInf}, {v - 1, 5.0f}, {v / 4, -kInf}, {v - 1, -1.0f}};
      break;
    case 10:  // everything banned: the raw argmax
    case 11:
      p.temperature = index % 14 == 10 ? 1.0f : 0.0f;
      for (int32_t id = 0; id < v; ++id) p.logit_bias.emplace_back(id, -kInf);
      break;
    case 12:
      p.temperature = 1.3f;
      p.top_k = 5;
      p.top_p = 0.5f;
      p.repetition_penalty = 1.2f;
      p.frequency_penalty = 0.2f;
      break;
    case 13:  // a tiny temperature: the max becomes exactly 0, others -inf-ish
      p.temperature = 1e-6f;
      p.top_p = 0.99f;
      break;
  }
  const int tops[] = {0, 5, 20};
  p.num_top_logprobs = tops[(index / 14 + index) % 3];
  return p;
}

// Logits of one row (the first `vocab` of `stride`): normal with scale 3, or a row with many
// exact ties, -inf entries, a flat row, a peaked row, or a row of -inf only. Padding is
// garbage the sampler must ignore.
void FillRow(int kind, int64_t vocab, int64_t stride, std::mt19937_64& rng, float* row) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int64_t i = 0; i < vocab; ++i) {
    float x = normal(rng);
    switch (kind % 7) {
      case 1:
        x = std::round(x * 2.0f) / 2.0f;  // ties everywhere, at the top too
        break;
      case 2:
        if (unit(rng) < 0.1f) x = -kInf;
        break;
      case 3:
        x = 0.25f;
        break;
      case 4:
        x *= 10.0f;
        break;
      case 5:
        x = std::round(x);
        if (unit(rng) < 0.3f) x = -kInf;
        break;
      case 6:
        if (kind % 21 == 6) x = -kInf;  // now and then a row with nothing finite
        break;
    }
    row[i] = x;
  }
  for (int64_t i = vocab; i < stride; ++i) {
    row[i] = i % 2 == 0 ? std::numeric_limits<float>::quiet_NaN() : 1e30f;
  }
}

// Log-probabilities: both NaN, equal, or within one float ulp plus what a different summation
// order of the log-sum-exp can move (the host sums exp in id order, the device in a tree; each
// double sum is within vocab · 2^-53 relative of the exact one, and log(sum) moves by that much
// absolutely).
bool LogprobClose(float want, float got, int64_t vocab) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (want == got) return true;
  if (std::isinf(want) || std::isinf(got)) return false;
  const float larger = std::max(std::fabs(want), std::fabs(got));
  const double ulp = std::nextafter(larger, kInf) - larger;
  return std::fabs(static_cast<double>(want) - got) <= ulp + static_cast<double>(vocab) * 0x1p-52;
}

std::string Describe(const SamplingParams& p) {
  return absl::StrCat("temperature=", p.temperature, " top_k=", p.top_k, " top_p=", p.top_p,
                      " min_p=", p.min_p, " rep=", p.repetition_penalty,
                      " presence=", p.presence_penalty, " frequency=", p.frequency_penalty,
                      " biases=", p.logit_bias.size(), " num_top=", p.num_top_logprobs,
                      " seed=", p.seed.value_or(0));
}

std::string DescribeTop(const std::vector<TokenLogprob>& top) {
  std::string s = "[";
  for (const TokenLogprob& t : top) absl::StrAppend(&s, "(", t.id, ", ", t.logprob, ") ");
  return s + "]";
}

struct Case {
  int64_t vocab;
  int64_t stride;
  int64_t batch;
  int steps;
};

void RunCase(const Case& c, int* failures) {
  SCOPED_TRACE(absl::StrCat("vocab=", c.vocab, " stride=", c.stride, " batch=", c.batch));
  std::mt19937_64 rng(c.vocab * 131 + c.batch);
  std::vector<std::unique_ptr<Sampler>> reference;
  std::vector<std::unique_ptr<Sampler>> device;
  std::vector<Sampler*> device_ptrs;
  for (int64_t r = 0; r < c.batch; ++r) {
    const SamplingParams params = Mix(static_cast<int>(r * 5 + c.batch), c.vocab, 1000 + r);
    ASSERT_TRUE(params.Validate(c.vocab).ok()) << params.Validate(c.vocab);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 12; ++i) prompt.push_back(static_cast<int32_t>(rng() % c.vocab));
    reference.push_back(std::make_unique<Sampler>(params, c.vocab, prompt));
    device.push_back(std::make_unique<Sampler>(params, c.vocab, prompt));
    device_ptrs.push_back(device.back().get());
  }

  const int64_t top_stride = kernels::kSampleMaxTopLogprobs + 3;  // 3 columns nobody writes
  DeviceArray<float> logits;
  DeviceArray<kernels::SampleRowParams> rows;
  DeviceArray<int32_t> offsets;
  DeviceArray<kernels::SampleAdjustment> adjustments;
  DeviceArray<float> workspace;
  DeviceArray<int32_t> out_ids;
  DeviceArray<float> out_logprobs;
  DeviceArray<int32_t> out_top_ids;
  DeviceArray<float> out_top_logprobs;
  size_t workspace_bytes = 0;
  CUDA_OK(kernels::SampleWorkspaceBytes(c.batch, c.vocab, &workspace_bytes));
  CUDA_OK(workspace.Resize(workspace_bytes / sizeof(float)));

  DeviceSampleBatch batch;
  std::vector<float> host_logits(static_cast<size_t>(c.batch * c.stride));
  for (int step = 0; step < c.steps; ++step) {
    for (int64_t r = 0; r < c.batch; ++r) {
      FillRow(static_cast<int>(r * 3 + step), c.vocab, c.stride, rng,
              host_logits.data() + r * c.stride);
    }
    ASSERT_TRUE(batch.Pack(device_ptrs, c.vocab).ok());
    CUDA_OK(logits.Upload(host_logits));
    CUDA_OK(rows.Upload({batch.rows().begin(), batch.rows().end()}));
    CUDA_OK(offsets.Upload({batch.adjustment_offsets().begin(), batch.adjustment_offsets().end()}));
    CUDA_OK(adjustments.Upload({batch.adjustments().begin(), batch.adjustments().end()}));
    const size_t b = static_cast<size_t>(c.batch);
    CUDA_OK(out_ids.Upload(std::vector<int32_t>(b, kPoisonId)));
    CUDA_OK(out_logprobs.Upload(std::vector<float>(b, PoisonFloat())));
    CUDA_OK(out_top_ids.Upload(std::vector<int32_t>(b * top_stride, kPoisonId)));
    CUDA_OK(out_top_logprobs.Upload(std::vector<float>(b * top_stride, PoisonFloat())));

    kernels::SampleParams params;
    params.batch = c.batch;
    params.vocab = c.vocab;
    params.logits = logits.data;
    params.logits_stride_batch = c.stride;
    params.rows = rows.data;
    params.adjustment_offsets = offsets.data;
    params.adjustments = adjustments.data;
    params.workspace = workspace_bytes > 0 ? workspace.data : nullptr;
    params.out_ids = out_ids.data;
    params.out_logprobs = out_logprobs.data;
    params.top_capacity = batch.top_capacity();
    params.out_top_ids = out_top_ids.data;
    params.out_top_logprobs = out_top_logprobs.data;
    params.out_top_stride_batch = top_stride;
    CUDA_OK(kernels::LaunchSample(params, nullptr));
    CUDA_OK(cudaDeviceSynchronize());

    std::vector<int32_t> ids(b);
    std::vector<float> logprobs(b);
    std::vector<int32_t> top_ids(b * top_stride);
    std::vector<float> top_logprobs(b * top_stride);
    CUDA_OK(out_ids.Download(ids));
    CUDA_OK(out_logprobs.Download(logprobs));
    CUDA_OK(out_top_ids.Download(top_ids));
    CUDA_OK(out_top_logprobs.Download(top_logprobs));

    // Every output written, the columns past top_capacity untouched.
    for (size_t r = 0; r < b; ++r) {
      ASSERT_NE(ids[r], kPoisonId) << "row " << r << " step " << step << ": id not written";
      ASSERT_FALSE(IsPoison(logprobs[r])) << "row " << r << ": logprob not written";
      for (int64_t j = 0; j < top_stride; ++j) {
        const size_t at = r * top_stride + j;
        const bool written = j < params.top_capacity;
        ASSERT_EQ(top_ids[at] != kPoisonId, written) << "row " << r << " top column " << j;
        ASSERT_EQ(!IsPoison(top_logprobs[at]), written) << "row " << r << " top column " << j;
        if (written && j >= std::min<int64_t>(reference[r]->params().num_top_logprobs, c.vocab)) {
          ASSERT_EQ(top_ids[at], -1) << "row " << r << " padding column " << j;
          ASSERT_EQ(top_logprobs[at], -kInf) << "row " << r << " padding column " << j;
        }
      }
    }

    std::vector<SampledToken> got(b);
    ASSERT_TRUE(batch
                    .Unpack(device_ptrs, ids, logprobs, top_ids, top_logprobs, top_stride,
                            absl::MakeSpan(got))
                    .ok());
    for (size_t r = 0; r < b; ++r) {
      const absl::Span<const float> row(host_logits.data() + r * c.stride,
                                        static_cast<size_t>(c.stride));
      const SampledToken want = reference[r]->Sample(row);
      bool same = want.id == got[r].id && LogprobClose(want.logprob, got[r].logprob, c.vocab) &&
                  want.top.size() == got[r].top.size();
      for (size_t j = 0; same && j < want.top.size(); ++j) {
        same = want.top[j].id == got[r].top[j].id &&
               LogprobClose(want.top[j].logprob, got[r].top[j].logprob, c.vocab);
      }
      if (!same) {
        ++*failures;
        ADD_FAILURE() << "step " << step << " row " << r << " (logits kind "
                      << (static_cast<int>(r) * 3 + step) % 7 << ", "
                      << Describe(reference[r]->params()) << ", counter "
                      << reference[r]->num_sampled() - 1 << "): want id " << want.id << " logprob "
                      << want.logprob << " top " << DescribeTop(want.top) << "; got id "
                      << got[r].id << " logprob " << got[r].logprob << " top "
                      << DescribeTop(got[r].top);
        ASSERT_LT(*failures, 20) << "stopping after 20 mismatches";
      }
      // The reference advances by its own choice; on a mismatch the device sampler is brought
      // into line so that later steps stay comparable.
      if (want.id != got[r].id) {
        device[r] = std::make_unique<Sampler>(*reference[r]);
        device_ptrs[r] = device[r].get();
      }
    }
  }
}

class CudaSampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaSampleTest, MatchesTheCpuSamplerTokenForToken) {
  const Case cases[] = {
      {32000, 32000, 64, 4},   // the 1.3B model's vocabulary
      {32000, 32000, 1, 6},    //
      {1000, 1000, 7, 8},      // an awkward size
      {1000, 1027, 7, 8},      // padded rows
      {5, 8, 7, 6},            // fewer tokens than alternatives asked for
      {100000, 100003, 7, 3},  // the cluster sampler's larger slices
      {140000, 140001, 3, 2},  // beyond the cluster sampler: the block sampler's workspace path
  };
  int failures = 0;
  for (const Case& c : cases) {
    RunCase(c, &failures);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(failures, 0);
}

// Draws of many seeds on one row, each row of the batch its own seed, against the exact
// distribution: softmax(z / T) renormalized over the kept set of SamplingParams (top_k, top_p,
// min_p computed here in double from the definitions). A tight top_p on a flat row makes the race's
// first winner fall outside the kept set most of the time, so the rejection rounds are exercised.
// Every draw is also the CPU sampler's.
TEST_F(CudaSampleTest, DrawsFollowTheExactFilteredDistribution) {
  struct Mix {
    int64_t vocab;
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const Mix mixes[] = {{40, 1.0f, 0, 1.0f, 0.0f},    {1000, 1.0f, 0, 0.3f, 0.0f},
                       {1000, 0.8f, 50, 0.9f, 0.0f}, {1000, 1.5f, 0, 0.5f, 0.02f},
                       {300, 1.0f, 8, 1.0f, 0.0f},   {32000, 1.0f, 0, 0.05f, 0.0f}};
  constexpr int64_t kDraws = 16384;
  for (const Mix& m : mixes) {
    // Each row is a copy of the same logits; at most 2^24 logits a launch.
    const int64_t kRows = std::min<int64_t>(kDraws, (int64_t{1} << 24) / m.vocab);
    const int kLaunches = static_cast<int>((kDraws + kRows - 1) / kRows);
    SCOPED_TRACE(absl::StrCat("vocab ", m.vocab, " T ", m.temperature, " top_k ", m.top_k,
                              " top_p ", m.top_p, " min_p ", m.min_p));
    std::mt19937_64 rng(m.vocab + m.top_k);
    std::normal_distribution<float> normal(0.0f, m.vocab > 1000 ? 1.0f : 1.5f);
    std::vector<float> row(static_cast<size_t>(m.vocab));
    for (float& x : row) x = normal(rng);
    // The exact kept set and probabilities.
    std::vector<double> p(row.size());
    double max = -kInf;
    for (float x : row) max = std::max<double>(max, x);
    double total = 0.0;
    for (size_t i = 0; i < row.size(); ++i)
      total += p[i] = std::exp((row[i] - max) / m.temperature);
    for (double& x : p) x /= total;
    std::vector<int32_t> order(row.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
    size_t keep = order.size();
    if (m.top_k > 0) keep = std::min<size_t>(keep, m.top_k);
    double kept_mass = 0.0;
    for (size_t j = 0; j < keep; ++j) kept_mass += p[order[j]];
    if (m.top_p < 1.0f) {
      double cumulative = 0.0;
      for (size_t j = 0; j < keep; ++j) {
        cumulative += p[order[j]];
        if (cumulative >= m.top_p * kept_mass) {
          keep = j + 1;
          break;
        }
      }
    }
    while (keep > 1 && p[order[keep - 1]] < m.min_p * p[order[0]]) --keep;
    std::vector<double> want(row.size(), 0.0);
    double sum = 0.0;
    for (size_t j = 0; j < keep; ++j) sum += p[order[j]];
    for (size_t j = 0; j < keep; ++j) want[order[j]] = p[order[j]] / sum;

    std::vector<float> logits(static_cast<size_t>(kRows * m.vocab));
    for (int64_t r = 0; r < kRows; ++r)
      std::copy(row.begin(), row.end(), logits.begin() + r * m.vocab);
    DeviceArray<float> device_logits;
    CUDA_OK(device_logits.Upload(logits));
    std::vector<int> counts(row.size(), 0);
    int mismatches = 0;
    for (int launch = 0; launch < kLaunches; ++launch) {
      std::vector<std::unique_ptr<Sampler>> samplers;
      std::vector<Sampler*> ptrs;
      for (int64_t r = 0; r < kRows; ++r) {
        SamplingParams params;
        params.temperature = m.temperature;
        params.top_k = m.top_k;
        params.top_p = m.top_p;
        params.min_p = m.min_p;
        params.seed = 1 + launch * kRows + r;
        samplers.push_back(std::make_unique<Sampler>(params, m.vocab, std::vector<int32_t>()));
        ptrs.push_back(samplers.back().get());
      }
      DeviceSampleBatch batch;
      ASSERT_TRUE(batch.Pack(ptrs, m.vocab).ok());
      DeviceArray<kernels::SampleRowParams> rows;
      DeviceArray<int32_t> offsets;
      DeviceArray<int32_t> ids;
      DeviceArray<float> logprobs;
      CUDA_OK(rows.Upload({batch.rows().begin(), batch.rows().end()}));
      CUDA_OK(
          offsets.Upload({batch.adjustment_offsets().begin(), batch.adjustment_offsets().end()}));
      CUDA_OK(ids.Upload(std::vector<int32_t>(kRows, kPoisonId)));
      CUDA_OK(logprobs.Resize(kRows));
      kernels::SampleParams params;
      params.batch = kRows;
      params.vocab = m.vocab;
      params.logits = device_logits.data;
      params.logits_stride_batch = m.vocab;
      params.rows = rows.data;
      params.adjustment_offsets = offsets.data;
      params.out_ids = ids.data;
      params.out_logprobs = logprobs.data;
      CUDA_OK(kernels::LaunchSample(params, nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      std::vector<int32_t> got(kRows);
      CUDA_OK(ids.Download(got));
      for (int64_t r = 0; r < kRows; ++r) {
        ASSERT_GE(got[r], 0);
        ASSERT_LT(got[r], m.vocab);
        ++counts[got[r]];
        if (launch * kRows + r >= 512) continue;  // the CPU's sort of the row is slow
        const int32_t cpu = samplers[r]->Sample(row).id;
        if (cpu != got[r] && ++mismatches <= 5) {
          ADD_FAILURE() << "seed " << 1 + launch * kRows + r << ": cpu " << cpu << ", gpu "
                        << got[r];
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
    // Pearson's statistic over the kept tokens (nothing outside them may be drawn), those
    // expected fewer than 5 times pooled in one bin, against the chi-square with bins - 1 degrees
    // of freedom: mean df, sd sqrt(2 df); 6 sd is a false alarm rate far below one in a million.
    double statistic = 0.0;
    const double draws = static_cast<double>(kRows) * kLaunches;
    double pooled_expected = 0.0;
    int pooled_count = 0;
    int bins = 0;
    for (size_t i = 0; i < row.size(); ++i) {
      if (want[i] == 0.0) {
        EXPECT_EQ(counts[i], 0) << "token " << i << " is not in the kept set";
        continue;
      }
      const double expected = draws * want[i];
      if (expected < 5.0) {
        pooled_expected += expected;
        pooled_count += counts[i];
        continue;
      }
      statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
      ++bins;
    }
    if (pooled_expected > 0.0) {
      statistic +=
          (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected;
      ++bins;
    }
    const double df = bins - 1.0;
    std::printf("distribution: vocab %ld kept %zu: chi-square %.1f (df %.0f)\n",
                static_cast<long>(m.vocab), keep, statistic, df);
    if (bins > 1) {
      EXPECT_LT(statistic, df + 6.0 * std::sqrt(2.0 * df));
    }
  }
}

TEST_F(CudaSampleTest, LauncherRefusesBadParamsAndLaunchesNothing) {
  DeviceArray<float> logits;
  CUDA_OK(logits.Resize(16));
  DeviceArray<kernels::SampleRowParams> rows;
  CUDA_OK(rows.Resize(1));
  DeviceArray<int32_t> ints;
  CUDA_OK(ints.Resize(64));
  DeviceArray<float> floats;
  CUDA_OK(floats.Resize(64));
  kernels::SampleParams good;
  good.batch = 1;
  good.vocab = 16;
  good.logits = logits.data;
  good.logits_stride_batch = 16;
  good.rows = rows.data;
  good.adjustment_offsets = ints.data;
  good.out_ids = ints.data + 8;
  good.out_logprobs = floats.data;
  good.top_capacity = 20;
  good.out_top_ids = ints.data + 16;
  good.out_top_logprobs = floats.data + 16;
  good.out_top_stride_batch = 20;
  auto expect_invalid = [](kernels::SampleParams p, const char* what) {
    EXPECT_EQ(kernels::LaunchSample(p, nullptr), cudaErrorInvalidValue) << what;
  };
  kernels::SampleParams p = good;
  p.logits_stride_batch = 15;
  expect_invalid(p, "stride below vocab");
  p = good;
  p.top_capacity = 21;
  p.out_top_stride_batch = 21;
  expect_invalid(p, "more than 20 alternatives");
  p = good;
  p.out_top_stride_batch = 19;
  expect_invalid(p, "top stride below capacity");
  p = good;
  p.vocab = 0;
  expect_invalid(p, "empty vocabulary");
  p = good;
  p.rows = nullptr;
  expect_invalid(p, "no row params");
  p = good;
  p.vocab = 1 << 22;
  p.logits_stride_batch = 1 << 22;
  expect_invalid(p, "no workspace for a row that does not fit");
  p = good;
  p.batch = 0;
  EXPECT_EQ(kernels::LaunchSample(p, nullptr), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Not a check: the time of one launch at the decode batch sizes, for bench/RESULTS.md.
TEST_F(CudaSampleTest, TimingForTheRecord) {
  for (const int64_t b : {1, 64, 256, 512}) {
    const int64_t vocab = 32000;
    std::mt19937_64 rng(9);
    std::vector<float> host(static_cast<size_t>(b * vocab));
    for (int64_t r = 0; r < b; ++r) FillRow(0, vocab, vocab, rng, host.data() + r * vocab);
    std::vector<kernels::SampleRowParams> row_params(static_cast<size_t>(b));
    for (int64_t r = 0; r < b; ++r) {
      row_params[r].seed = static_cast<uint64_t>(r);
      row_params[r].temperature = 0.8f;
      row_params[r].top_k = 50;
      row_params[r].top_p = 0.9f;
      row_params[r].num_top_logprobs = 5;
    }
    DeviceArray<float> logits;
    DeviceArray<kernels::SampleRowParams> rows;
    DeviceArray<int32_t> offsets;
    DeviceArray<int32_t> ids;
    DeviceArray<float> logprobs;
    DeviceArray<int32_t> top_ids;
    DeviceArray<float> top_logprobs;
    CUDA_OK(logits.Upload(host));
    CUDA_OK(rows.Upload(row_params));
    CUDA_OK(offsets.Upload(std::vector<int32_t>(static_cast<size_t>(b + 1), 0)));
    CUDA_OK(ids.Resize(b));
    CUDA_OK(logprobs.Resize(b));
    CUDA_OK(top_ids.Resize(b * 5));
    CUDA_OK(top_logprobs.Resize(b * 5));
    kernels::SampleParams p;
    p.batch = b;
    p.vocab = vocab;
    p.logits = logits.data;
    p.logits_stride_batch = vocab;
    p.rows = rows.data;
    p.adjustment_offsets = offsets.data;
    p.out_ids = ids.data;
    p.out_logprobs = logprobs.data;
    p.top_capacity = 5;
    p.out_top_ids = top_ids.data;
    p.out_top_logprobs = top_logprobs.data;
    p.out_top_stride_batch = 5;
    for (const kernels::SampleVariant variant :
         {kernels::SampleVariant::kAuto, kernels::SampleVariant::kBlock}) {
      p.variant = variant;
      for (int i = 0; i < 3; ++i) CUDA_OK(kernels::LaunchSample(p, nullptr));
      cudaEvent_t start;
      cudaEvent_t stop;
      CUDA_OK(cudaEventCreate(&start));
      CUDA_OK(cudaEventCreate(&stop));
      constexpr int kRepeats = 20;
      CUDA_OK(cudaEventRecord(start));
      for (int i = 0; i < kRepeats; ++i) CUDA_OK(kernels::LaunchSample(p, nullptr));
      CUDA_OK(cudaEventRecord(stop));
      CUDA_OK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
      std::printf(
          "sample (%s): batch %ld vocab %ld (T=0.8 top_k=50 top_p=0.9 5 alternatives): %.1f us\n",
          variant == kernels::SampleVariant::kAuto ? "auto" : "block", static_cast<long>(b),
          static_cast<long>(vocab), 1000.0 * ms / kRepeats);
      CUDA_OK(cudaEventDestroy(start));
      CUDA_OK(cudaEventDestroy(stop));
    }
  }
}

}  // namespace
}  // namespace hgrn2
