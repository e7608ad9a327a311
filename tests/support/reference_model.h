// Test oracle: random HGRN2 checkpoints of any shape, and an independent float64 token-by-token
// implementation of ../shared/HGRN2.md. It shares only the loaders with the engine (ModelConfig
// for the derived sizes, WeightFile for reading and BF16/F16 conversion), which have their own
// tests and are checked against fla by the golden fixtures; the math is written separately.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "engine/base/dtype.h"

namespace hgrn2::testing {

struct RandomModelSpec {
  int64_t vocab_size = 97;
  int64_t hidden_size = 60;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t conv_size = 3;  // 0 = use_short_conv false
  bool use_lower_bound = true;
  bool tie_word_embeddings = false;
  int64_t intermediate_size = 0;  // 0 = null in config.json (derived from hidden_ratio 4)
  // Which of num_heads / expand_ratio config.json states.
  enum class HeadsField { kBoth, kNumHeadsOnly, kExpandRatioOnly } heads_field = HeadsField::kBoth;
  DType dtype = DType::kF32;
  uint64_t seed = 1;
};

// Writes config.json and model.safetensors with weights at a scale that keeps outputs far from
// uniform (so errors show).
void WriteRandomModel(const std::filesystem::path& dir, const RandomModelSpec& spec);

// Float64 HGRN2, one token at a time, reading the checkpoint itself (fla's parameter names).
class NaiveHgrn2 {
 public:
  explicit NaiveHgrn2(const std::filesystem::path& dir);
  // Feeds one token; returns the logits after it.
  std::vector<double> Step(int32_t token);
  // Layer l's state as float, [H, dv, dk] (fla's layout).
  std::vector<float> State(int64_t layer) const;

 private:
  struct Layer {
    std::vector<double> attn_norm, q, f, i, q_conv, f_conv, i_conv, g_norm, o, mlp_norm, gate, up,
        down, lower_bound;
    std::vector<double> state;                 // [H, dv, dk]
    std::vector<std::vector<double>> history;  // last K inputs of q | f | i, oldest first
  };
  int64_t v_, d_, h_, dk_, dv_, k_, inter_;
  double eps_;
  double gate_eps_;  // g_norm's, as fla computes it (ModelConfig::gate_norm_eps)
  bool use_lower_bound_;
  std::vector<double> embeddings_, norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace hgrn2::testing
