// The parsed, validated config.json of an fla HGRN2 checkpoint and the sizes derived from it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hgrn2 {

// Field meanings follow ../shared/HGRN2.md. Absent fields take fla's HGRN2Config defaults.
struct ModelConfig {
  int64_t vocab_size = 32000;        // V
  int64_t hidden_size = 2048;        // D
  int64_t num_layers = 24;           // L (`num_hidden_layers`)
  int64_t num_heads = 16;            // H (`num_heads`, or D / `expand_ratio`)
  int64_t key_dim = 128;             // dk = `expand_ratio`
  int64_t value_dim = 128;           // dv = D / H
  int64_t intermediate_size = 5632;  // I (given, or derived from `hidden_ratio`)
  bool use_short_conv = false;
  int64_t conv_size = 4;  // K; only meaningful with use_short_conv
  bool use_lower_bound = true;
  float norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // `eos_token_id` may be one id or a list
  std::optional<int32_t> pad_token_id;

  // Parses config.json text. `source` names the file in error messages. Refuses, with an
  // InvalidArgument naming the field: a model_type other than "hgrn2", a hidden_act other than
  // swish/silu, non-null `attn` or `attnres_block_size`, `elementwise_affine` false, missing or
  // non-positive sizes, H·dk != D, D not divisible by H, conv_size < 1, fields of the wrong type.
  static absl::StatusOr<ModelConfig> Parse(absl::string_view json_text, absl::string_view source);

  // Reads `path` (a config.json, or a folder containing one) and parses it.
  static absl::StatusOr<ModelConfig> Load(const std::filesystem::path& path);

  // Epsilon of the gate norm (g_norm) as fla computes it, which is not norm_eps: fla's HGRN2 layer
  // calls its fused norm without an eps (so 1e-5) on o·dk^-0.5 (its GLA kernels' default query
  // scale), and rmsnorm(o·s, e) = rmsnorm(o, e / s²). Only a trained model's small outputs show
  // the difference.
  float gate_norm_eps() const { return 1e-5f * static_cast<float>(key_dim); }

  // Width of the conv window kept per layer (0 without short conv).
  int64_t conv_window() const { return use_short_conv ? conv_size : 0; }
  // Float32 values of one layer's recurrent state: H · dv · dk.
  int64_t state_floats_per_layer() const { return num_heads * value_dim * key_dim; }
  // Values of one layer's conv windows (q, f and i): 3 · D · K, or 0.
  int64_t conv_floats_per_layer() const { return 3 * hidden_size * conv_window(); }
  // Parameters of the checkpoint (fla's count): embeddings, the lm_head unless tied, each layer's
  // norms, projections and conv taps, the lower bounds, the final norm.
  int64_t num_parameters() const {
    const int64_t d = hidden_size;
    int64_t layer = 3 * d + 4 * d * d + 3 * d * intermediate_size;  // 3 norms, q f i o, MLP
    if (use_short_conv) layer += 3 * d * conv_size;
    int64_t total = vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_layers * layer + d;
    if (use_lower_bound) total += num_layers * d;
    return total;
  }
  // Bytes of one sequence's whole state in float32: every layer's recurrent state and windows.
  int64_t state_bytes() const {
    return num_layers * (state_floats_per_layer() + conv_floats_per_layer()) * 4;
  }
};

}  // namespace hgrn2
