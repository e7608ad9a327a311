// The CPU reference ops at odd sizes: against naive double-precision loops, batch invariance of
// the GEMM, and the HGRN2 ops leaving slots outside the batch untouched.
#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/gather_rows.h"
#include "kernels/gemm.h"
#include "kernels/hgrn2_prefill.h"
#include "kernels/hgrn2_step.h"
#include "kernels/log_softmax_gather.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"
#include "tests/support/test_support.h"

namespace hgrn2::kernels {
namespace {

using ::hgrn2::testing::RelativeL2Error;

std::vector<float> Random(size_t count, uint64_t seed, float scale = 1.0f) {
  return testing::RandomNormal(count, seed, scale);
}

// C [m, n] = A [m, k] · B [n, k]ᵀ with dense rows.
void Gemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  GemmReference({.m = m,
                 .n = n,
                 .k = k,
                 .a = a,
                 .a_stride_row = k,
                 .b = b,
                 .b_stride_row = k,
                 .c = c,
                 .c_stride_row = n});
}

TEST(GemmReference, MatchesDoubleLoopsAtOddSizes) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 5, 7}, {17, 13, 31}, {2, 130, 67}, {9, 4, 8}}) {
    const std::vector<float> a = Random(m * k, 1), b = Random(n * k, 2);
    std::vector<float> c(m * n, NAN);
    Gemm(m, n, k, a.data(), b.data(), c.data());
    std::vector<float> expected(m * n);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int p = 0; p < k; ++p) sum += double(a[i * k + p]) * b[j * k + p];
        expected[i * n + j] = static_cast<float>(sum);
      }
    }
    EXPECT_LT(RelativeL2Error(c, expected), 1e-6) << m << "x" << n << "x" << k;
  }
}

TEST(GemmReference, EachRowIsBitIdenticalWhateverTheBatch) {
  const int m = 11, n = 37, k = 45;
  const std::vector<float> a = Random(m * k, 3), b = Random(n * k, 4);
  std::vector<float> batched(m * n);
  Gemm(m, n, k, a.data(), b.data(), batched.data());
  for (int i = 0; i < m; ++i) {
    std::vector<float> alone(n);
    Gemm(1, n, k, a.data() + i * k, b.data(), alone.data());
    EXPECT_EQ(alone, std::vector<float>(batched.begin() + i * n, batched.begin() + (i + 1) * n));
  }
}

TEST(RmsNormReference, PlainAndFusedWithResidual) {
  const int rows = 3, cols = 37;
  const std::vector<float> x = Random(rows * cols, 5), w = Random(cols, 6);
  std::vector<float> residual = Random(rows * cols, 7);
  const std::vector<float> residual_before = residual;
  std::vector<float> out(rows * cols), fused(rows * cols);
  RmsNormReference({.rows = rows,
                    .cols = cols,
                    .x = x.data(),
                    .x_stride_row = cols,
                    .weight = w.data(),
                    .out = out.data(),
                    .out_stride_row = cols,
                    .eps = 1e-6f});
  RmsNormReference({.rows = rows,
                    .cols = cols,
                    .x = x.data(),
                    .x_stride_row = cols,
                    .residual = residual.data(),
                    .residual_stride_row = cols,
                    .weight = w.data(),
                    .out = fused.data(),
                    .out_stride_row = cols,
                    .eps = 1e-6f});
  for (int r = 0; r < rows; ++r) {
    double sq = 0.0, sq_sum = 0.0;
    for (int c = 0; c < cols; ++c) {
      sq += double(x[r * cols + c]) * x[r * cols + c];
      const double s = double(x[r * cols + c]) + residual_before[r * cols + c];
      sq_sum += s * s;
    }
    for (int c = 0; c < cols; ++c) {
      const double s = double(x[r * cols + c]) + residual_before[r * cols + c];
      EXPECT_NEAR(out[r * cols + c], x[r * cols + c] / std::sqrt(sq / cols + 1e-6) * w[c], 1e-5);
      EXPECT_NEAR(fused[r * cols + c], s / std::sqrt(sq_sum / cols + 1e-6) * w[c], 1e-5);
      EXPECT_FLOAT_EQ(residual[r * cols + c], static_cast<float>(s));
    }
  }
}

TEST(SwiGluGatherLogSoftmax, MatchFormulas) {
  const int rows = 2, inter = 5;
  const std::vector<float> gate_up = Random(rows * 2 * inter, 8);
  std::vector<float> out(rows * inter);
  SwiGluReference({.rows = rows,
                   .cols = inter,
                   .gate_up = gate_up.data(),
                   .gate_up_stride_row = 2 * inter,
                   .out = out.data(),
                   .out_stride_row = inter});
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < inter; ++c) {
      const double g = gate_up[r * 2 * inter + c], u = gate_up[r * 2 * inter + inter + c];
      EXPECT_NEAR(out[r * inter + c], g / (1 + std::exp(-g)) * u, 1e-6);
    }
  }
  const std::vector<float> table = Random(7 * 3, 9);
  const std::vector<int32_t> indices = {6, 0, 6, 2};
  std::vector<float> gathered(4 * 3);
  GatherRowsReference({.rows = 4,
                       .cols = 3,
                       .table = table.data(),
                       .table_stride_row = 3,
                       .table_rows = 7,
                       .indices = indices.data(),
                       .out = gathered.data(),
                       .out_stride_row = 3});
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(gathered[r * 3 + c], table[indices[r] * 3 + c]);
  }
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, -1000.0f, 0.0f, 1000.0f};
  const std::vector<int32_t> targets = {2, 0};
  std::vector<float> logprobs(2), max_logprobs(2);
  LogSoftmaxGatherReference({.rows = 2,
                             .cols = 3,
                             .logits = logits.data(),
                             .logits_stride_row = 3,
                             .targets = targets.data(),
                             .out = logprobs.data(),
                             .out_max = max_logprobs.data()});
  EXPECT_NEAR(logprobs[0], 3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-6);
  EXPECT_NEAR(logprobs[1], -2000.0, 1e-3);  // stable at extreme logits
  EXPECT_EQ(max_logprobs[0], logprobs[0]);  // the target is the largest logit
  EXPECT_NEAR(max_logprobs[1], 0.0, 1e-6);
  EXPECT_LT(logprobs[1], max_logprobs[1]);
}

// A pool of 6 slots for a layer with H 3, K 3 and the given dk and dv; random states everywhere.
struct LayerFixture {
  static constexpr int kSlots = 6, kHeads = 3, kConv = 3;
  const int dk, dv;  // declared first: the sizes below are derived from them
  const int qf = kHeads * dk, channels = 2 * qf + kHeads * dv, out_width = kHeads * dv;
  const int state_stride = kHeads * dv * dk, conv_stride = channels * kConv;
  std::vector<float> states = Random(kSlots * state_stride, 20, 0.5f);
  std::vector<float> conv_states = Random(kSlots * conv_stride, 21, 0.5f);
  std::vector<float> conv_weight = Random(channels * kConv, 22, 0.6f);
  std::vector<float> lower_bound;

  explicit LayerFixture(int key_dim = 5, int value_dim = 5) : dk(key_dim), dv(value_dim) {
    std::mt19937_64 rng(23);
    std::uniform_real_distribution<float> unit(0.0f, 0.9f);
    for (int c = 0; c < qf; ++c) lower_bound.push_back(unit(rng));
  }
  Hgrn2LayerParams<float> Params(const float* qfi, const int32_t* slots, float* out) {
    Hgrn2LayerParams<float> p;
    p.num_heads = kHeads;
    p.key_dim = dk;
    p.value_dim = dv;
    p.conv_size = kConv;
    p.qfi = qfi;
    p.qfi_stride_token = channels;
    p.conv_weight = conv_weight.data();
    p.lower_bound = lower_bound.data();
    p.slots = slots;
    p.state = states.data();
    p.state_stride_slot = state_stride;
    p.conv_state = conv_states.data();
    p.conv_state_stride_slot = conv_stride;
    p.out = out;
    p.out_stride_token = out_width;
    return p;
  }
};

// dk == dv, and dk != dv both ways, so that a dk/dv mix-up in strides or loops shows.
struct HeadDims {
  int dk, dv;
};

class Hgrn2ReferenceAtHeadDims : public ::testing::TestWithParam<HeadDims> {};

TEST_P(Hgrn2ReferenceAtHeadDims, StepTouchesOnlyItsSlotsAndEqualsOneTokenPrefill) {
  const auto [dk, dv] = GetParam();
  LayerFixture step_layer(dk, dv), prefill_layer(dk, dv);
  const int out_width = step_layer.out_width;
  const std::vector<int32_t> slots = {4, 1, 3};  // slots 0, 2 and 5 are not in the batch
  const std::vector<float> qfi = Random(3 * step_layer.channels, 24, 2.0f);
  std::vector<float> step_out(3 * out_width), prefill_out(3 * out_width);
  Hgrn2StepReference(
      {.batch = 3, .layer = step_layer.Params(qfi.data(), slots.data(), step_out.data())});
  const std::vector<int32_t> offsets = {0, 1, 2, 3};
  Hgrn2PrefillReference(
      {.num_seqs = 3,
       .seq_offsets = offsets.data(),
       .chunk_size = 64,
       .layer = prefill_layer.Params(qfi.data(), slots.data(), prefill_out.data())});
  EXPECT_LT(RelativeL2Error(step_out, prefill_out), 1e-6);
  EXPECT_LT(RelativeL2Error(step_layer.states, prefill_layer.states), 1e-6);
  EXPECT_EQ(step_layer.conv_states, prefill_layer.conv_states);
  const LayerFixture untouched(dk, dv);
  EXPECT_NE(step_layer.states, untouched.states);  // the batch's slots did move
  for (int slot : {0, 2, 5}) {
    for (int i = 0; i < untouched.state_stride; ++i) {
      const int index = slot * untouched.state_stride + i;
      ASSERT_EQ(step_layer.states[index], untouched.states[index]) << "slot " << slot;
      ASSERT_EQ(prefill_layer.states[index], untouched.states[index]) << "slot " << slot;
    }
    for (int i = 0; i < untouched.conv_stride; ++i) {
      const int index = slot * untouched.conv_stride + i;
      ASSERT_EQ(step_layer.conv_states[index], untouched.conv_states[index]) << "slot " << slot;
      ASSERT_EQ(prefill_layer.conv_states[index], untouched.conv_states[index]) << "slot " << slot;
    }
  }
}

TEST_P(Hgrn2ReferenceAtHeadDims, ChunkedPrefillOfRaggedBatchEqualsStepsAtAwkwardLengths) {
  const auto [dk, dv] = GetParam();
  // Sequence lengths 1, 15, 63, 64, 65, 130 in one launch, into shuffled slots.
  const std::vector<int> lengths = {1, 15, 63, 64, 65, 130};
  const std::vector<int32_t> slots = {5, 0, 3, 1, 4, 2};
  std::vector<int32_t> offsets = {0};
  for (int length : lengths) offsets.push_back(offsets.back() + length);
  const int total = offsets.back();
  const LayerFixture sizes(dk, dv);
  const int channels = sizes.channels, out_width = sizes.out_width;
  const std::vector<float> qfi = Random(total * channels, 25, 2.0f);
  for (int chunk : {64, 16, 7}) {
    SCOPED_TRACE(chunk);
    LayerFixture chunked(dk, dv), stepped(dk, dv);
    std::vector<float> chunked_out(total * out_width), stepped_out(total * out_width);
    Hgrn2PrefillReference({.num_seqs = 6,
                           .seq_offsets = offsets.data(),
                           .chunk_size = chunk,
                           .layer = chunked.Params(qfi.data(), slots.data(), chunked_out.data())});
    for (int b = 0; b < 6; ++b) {
      for (int t = offsets[b]; t < offsets[b + 1]; ++t) {
        Hgrn2StepReference({.batch = 1,
                            .layer = stepped.Params(qfi.data() + t * channels, &slots[b],
                                                    stepped_out.data() + t * out_width)});
      }
    }
    EXPECT_LT(RelativeL2Error(chunked_out, stepped_out), 1e-5);
    EXPECT_LT(RelativeL2Error(chunked.states, stepped.states), 1e-5);
    EXPECT_EQ(chunked.conv_states, stepped.conv_states);
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDims, Hgrn2ReferenceAtHeadDims,
                         ::testing::Values(HeadDims{5, 5}, HeadDims{5, 3}, HeadDims{3, 7}),
                         [](const ::testing::TestParamInfo<HeadDims>& param_info) {
                           return absl::StrCat("dk", param_info.param.dk, "_dv",
                                               param_info.param.dv);
                         });

TEST(Hgrn2Reference, StrongDecayDoesNotOverflowTheChunkedForm) {
  // Forget-gate inputs near -40: log g ~ -40 per token, B reaches -2600 within a chunk.
  LayerFixture chunked, stepped;
  const int qf = chunked.qf, channels = chunked.channels;
  chunked.lower_bound.assign(qf, 0.0f);
  stepped.lower_bound.assign(qf, 0.0f);
  const int tokens = 64;
  std::vector<float> qfi = Random(tokens * channels, 26, 1.0f);
  for (int t = 0; t < tokens; ++t) {
    for (int c = qf; c < 2 * qf; ++c) qfi[t * channels + c] = -40.0f + (t % 3);
  }
  chunked.conv_weight.assign(chunked.conv_weight.size(), 0.0f);
  for (int c = 0; c < channels; ++c) chunked.conv_weight[c * 3 + 2] = 1.0f;
  stepped.conv_weight = chunked.conv_weight;
  const int32_t slot = 2;
  const std::vector<int32_t> offsets = {0, tokens};
  std::vector<float> chunked_out(tokens * chunked.out_width),
      stepped_out(tokens * chunked.out_width);
  Hgrn2PrefillReference({.num_seqs = 1,
                         .seq_offsets = offsets.data(),
                         .chunk_size = 64,
                         .layer = chunked.Params(qfi.data(), &slot, chunked_out.data())});
  const std::vector<int32_t> recurrent_offsets = {0, tokens};
  Hgrn2PrefillReference({.num_seqs = 1,
                         .seq_offsets = recurrent_offsets.data(),
                         .chunk_size = 0,
                         .layer = stepped.Params(qfi.data(), &slot, stepped_out.data())});
  for (float value : chunked_out) ASSERT_TRUE(std::isfinite(value));
  EXPECT_LT(RelativeL2Error(chunked_out, stepped_out), 1e-5);
  EXPECT_LT(RelativeL2Error(chunked.states, stepped.states), 1e-5);
}

}  // namespace
}  // namespace hgrn2::kernels
