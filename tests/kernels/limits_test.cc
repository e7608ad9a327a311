// The CUDA kernels' limits (kernels/limits.h) as their launchers and the CUDA backend report
// them: each unsupported size names its parameter, the limit and the value. CPU only: the checks
// are host code shared by the launchers and the backend.
#include "kernels/limits.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "kernels/hgrn2_prefill.h"
#include "kernels/hgrn2_step.h"
#include "kernels/sample.h"

namespace hgrn2::kernels {
namespace {

// The 1.3B model's layer: 16 heads of dk = dv = 128, no short conv.
Hgrn2LayerParams<float> GoodLayer() {
  Hgrn2LayerParams<float> p;
  p.num_heads = 16;
  p.key_dim = 128;
  p.value_dim = 128;
  return p;
}

TEST(KernelLimits, TheModelsOfTheProjectAreSupported) {
  EXPECT_TRUE(CheckHgrn2StepParams<float>({.batch = 1024, .layer = GoodLayer()}).ok());
  EXPECT_TRUE(CheckHgrn2PrefillParams<float>({.num_seqs = 8, .layer = GoodLayer()}).ok());
  Hgrn2LayerParams<float> conv = GoodLayer();
  conv.key_dim = 256;
  conv.conv_size = 4;
  EXPECT_TRUE(CheckHgrn2StepParams<float>({.batch = 0, .layer = conv}).ok());
  EXPECT_EQ(Describe(CheckHgrn2StepParams<float>({.batch = 1, .layer = conv})), "");
}

TEST(KernelLimits, EachRecurrenceLimitNamesItsParameter) {
  struct Case {
    void (*change)(Hgrn2LayerParams<float>&);
    const char* message;  // after "hgrn2 step: " / "hgrn2 prefill: "
  };
  static uint16_t bf16_state[1];
  const Case cases[] = {
      {[](auto& p) { p.key_dim = 257; },
       "key_dim must be at most 256 for the CUDA kernels, got 257"},
      {[](auto& p) { p.key_dim = 0; }, "key_dim must be at least 1 for the CUDA kernels, got 0"},
      {[](auto& p) { p.conv_size = 9; }, "conv_size must be at most 8 for the CUDA kernels, got 9"},
      {[](auto& p) { p.num_heads = 70000; },
       "num_heads must be at most 65535 for the CUDA kernels, got 70000"},
      {[](auto& p) { p.value_dim = -1; },
       "value_dim must be at least 1 for the CUDA kernels, got -1"},
      {[](auto& p) {
         p.state_bf16 = bf16_state;
         p.conv_size = 4;
       },
       "conv_size must be exactly 0 with bf16 states for the CUDA kernels, got 4"},
      {[](auto& p) {
         p.state_bf16 = bf16_state;
         p.key_dim = 30;
       },
       "key_dim must be a multiple of 4 with bf16 states for the CUDA kernels, got 30"},
      {[](auto& p) {
         p.state_bf16 = bf16_state;
         p.key_dim = 132;
       },
       "key_dim must be at most 128 with bf16 states for the CUDA kernels, got 132"},
  };
  for (const Case& c : cases) {
    Hgrn2LayerParams<float> layer = GoodLayer();
    c.change(layer);
    EXPECT_EQ(Describe(CheckHgrn2StepParams<float>({.batch = 3, .layer = layer})),
              std::string("hgrn2 step: ") + c.message);
    EXPECT_EQ(Describe(CheckHgrn2PrefillParams<float>({.num_seqs = 3, .layer = layer})),
              std::string("hgrn2 prefill: ") + c.message);
  }
}

TEST(KernelLimits, BatchesBeyondTheGridAreRefused) {
  const LimitViolation step = CheckHgrn2StepParams<float>({.batch = 65536, .layer = GoodLayer()});
  EXPECT_EQ(std::string(step.parameter), "batch");
  EXPECT_EQ(step.limit, kMaxGridYZ);
  EXPECT_EQ(step.value, 65536);
  EXPECT_EQ(Describe(step),
            "hgrn2 step: batch must be at most 65535 for the CUDA kernels, got 65536");
  EXPECT_EQ(Describe(CheckHgrn2PrefillParams<float>({.num_seqs = -1, .layer = GoodLayer()})),
            "hgrn2 prefill: num_seqs must be at least 0 for the CUDA kernels, got -1");
}

TEST(KernelLimits, SamplerSizes) {
  SampleParams good;
  good.batch = 4;
  good.vocab = 32000;
  good.logits_stride_batch = 32000;
  good.top_capacity = 5;
  good.out_top_stride_batch = 5;
  EXPECT_TRUE(CheckSampleParams(good).ok());
  SampleParams p = good;
  p.vocab = kSampleMaxVocab + 1;
  p.logits_stride_batch = p.vocab;
  EXPECT_EQ(Describe(CheckSampleParams(p)),
            "sample: vocab must be at most 16777216 for the CUDA kernels, got 16777217");
  p = good;
  p.vocab = 0;
  EXPECT_EQ(Describe(CheckSampleParams(p)),
            "sample: vocab must be at least 1 for the CUDA kernels, got 0");
  p = good;
  p.logits_stride_batch = 31999;
  EXPECT_EQ(Describe(CheckSampleParams(p)),
            "sample: logits_stride_batch must be at least 32000 for the CUDA kernels, got 31999");
  p = good;
  p.top_capacity = 21;
  p.out_top_stride_batch = 21;
  EXPECT_EQ(Describe(CheckSampleParams(p)),
            "sample: top_capacity must be at most 20 for the CUDA kernels, got 21");
  p = good;
  p.out_top_stride_batch = 4;
  EXPECT_EQ(Describe(CheckSampleParams(p)),
            "sample: out_top_stride_batch must be at least 5 for the CUDA kernels, got 4");
  p = good;
  p.top_capacity = 0;
  p.out_top_stride_batch = 0;  // unused without alternatives
  EXPECT_TRUE(CheckSampleParams(p).ok());
  p = good;
  p.batch = kSampleMaxBatch + 1;
  EXPECT_EQ(std::string(CheckSampleParams(p).parameter), "batch");
}

}  // namespace
}  // namespace hgrn2::kernels
