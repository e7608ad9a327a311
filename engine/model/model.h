// An HGRN2 model's weights resident on a backend, with the projections that share an input fused.
#pragma once

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/backend.h"
#include "engine/checkpoint/fingerprint.h"
#include "engine/checkpoint/model_config.h"
#include "engine/checkpoint/weight_file.h"
#include "engine/model/fp8_weights.h"

namespace hgrn2 {

// One layer's weights, each [out features, in features] in the backend's compute dtype; the
// projections (qfi, o, gate_up, down) in F8_E4M3 with row scales when loaded with fp8_weights.
struct LayerWeights {
  DeviceTensor attn_norm;              // [1, D]
  DeviceTensor qfi_proj;               // [3D, D]: q_proj | f_proj | i_proj
  DeviceTensor conv;                   // [3D, K]: q | f | i conv taps (empty without short conv)
  DeviceTensor g_norm;                 // [1, D]
  DeviceTensor o_proj;                 // [D, D]
  DeviceTensor mlp_norm;               // [1, D]
  DeviceTensor gate_up_proj;           // [2I, D]: gate_proj | up_proj
  DeviceTensor down_proj;              // [D, I]
  const float* lower_bound = nullptr;  // device float32 [D]; null for layer 0 or none
};

// How a model's weights are rounded at load, before the conversion to the backend's compute
// dtype. Either changes the function the model computes, and so its fingerprint
// (session::FingerprintRounded).
struct ModelLoadOptions {
  // Every projection (q, f, i, o, gate, up and down) rounded to FP8 E4M3 with a scale per output
  // channel (QuantizeFp8Rows, then DequantizeFp8Rows): the values an FP8 checkpoint computes
  // with. They are still stored in the compute dtype (the same memory as before); what this
  // gives is FP8's accuracy, measured by tools/hgrn2_fp8_eval.cc.
  bool fp8_projections = false;
  // The embedding table and the output head too (still stored in the compute dtype).
  bool fp8_embeddings = false;
  // The projections kept on the backend as E4M3 codes and row scales (Backend::Gemm's F8_E4M3
  // path): the values of fp8_projections in half of BF16's memory and bytes read per step.
  bool fp8_weights = false;
};

// What a front end's --dtype names: the backend's compute dtype and how the weights are held.
struct WeightPrecision {
  DType compute_dtype = DType::kBF16;
  bool fp8_weights = false;  // ModelLoadOptions::fp8_weights
};
// "bf16", "f16" or "f32" (weights and activations in that type), or "fp8" (projections in FP8
// E4M3 with row scales, activations in bf16). InvalidArgument names anything else.
absl::StatusOr<WeightPrecision> ParseWeightPrecision(absl::string_view name);
// The spelling ParseWeightPrecision takes.
std::string WeightPrecisionName(const WeightPrecision& precision);

// Built once at startup; immutable afterwards, so any thread may read it.
class Model {
 public:
  // Reads `dir`/config.json and the safetensors weights in `dir`.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::filesystem::path& dir,
                                                     Backend& backend,
                                                     const ModelLoadOptions& options = {});
  // Validates every tensor against `config` (present, exact shape, float dtype; no tensor the
  // config does not explain), converts to the backend's compute dtype and uploads.
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config,
                                                       const WeightFile& weights, Backend& backend,
                                                       const ModelLoadOptions& options = {});

  // Random weights of the given shape drawn from `seed` (benchmarks; no checkpoint needed). Norm
  // weights are 1; projections uniform in ±1.7/sqrt(fan in). Of `options`, fp8_weights only.
  static absl::StatusOr<std::unique_ptr<Model>> CreateRandom(const ModelConfig& config,
                                                             Backend& backend, uint64_t seed,
                                                             const ModelLoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  // Identifies the config and weights (see session::ModelFingerprint): a session resumes only on
  // a model with the same one. CreateRandom's comes from the config and the seed.
  const session::ModelFingerprint& fingerprint() const { return fingerprint_; }
  Backend& backend() const { return backend_; }
  const DeviceTensor& embeddings() const { return embeddings_; }  // [V, D]
  const LayerWeights& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const DeviceTensor& final_norm() const { return final_norm_; }  // [1, D]
  const DeviceTensor& lm_head() const { return lm_head_; }        // [V, D]; embeddings when tied

 private:
  Model(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}
  // Host float32 values of a named tensor of the given shape.
  using TensorSource = std::function<absl::StatusOr<std::vector<float>>(
      const std::string& name, std::initializer_list<int64_t> shape)>;
  // A named projection [out, in] as E4M3 codes and row scales.
  using Fp8Source = std::function<absl::StatusOr<Fp8Rows>(const std::string& name,
                                                          std::initializer_list<int64_t> shape)>;
  // Fuses, converts and uploads every tensor that `config` calls for, read through `read`; the
  // projections through `read_fp8` instead when it is set (kept in FP8).
  static absl::StatusOr<std::unique_ptr<Model>> Build(const ModelConfig& config, Backend& backend,
                                                      const TensorSource& read,
                                                      const Fp8Source* read_fp8);
  // Fuses the projections `names` (rows concatenated in order) and uploads them: through
  // `read_fp8` as codes and scales when set, else through `read` in the compute dtype.
  absl::StatusOr<DeviceTensor> UploadProjection(std::initializer_list<std::string> names,
                                                int64_t rows_each, int64_t cols,
                                                const TensorSource& read,
                                                const Fp8Source* read_fp8);
  // Encodes host float32 values as `dtype`, uploads them and keeps the buffer.
  absl::StatusOr<DeviceTensor> Upload(const std::vector<float>& values, int64_t rows, int64_t cols,
                                      DType dtype);
  // Weights go up in the backend's compute dtype.
  absl::StatusOr<DeviceTensor> Upload(const std::vector<float>& values, int64_t rows,
                                      int64_t cols) {
    return Upload(values, rows, cols, backend_.compute_dtype());
  }

  ModelConfig config_;
  session::ModelFingerprint fingerprint_;
  Backend& backend_;
  std::vector<DeviceBuffer> buffers_;
  DeviceTensor embeddings_;
  std::vector<LayerWeights> layers_;
  DeviceTensor final_norm_;
  DeviceTensor lm_head_;
  DeviceTensor lower_bounds_;  // float32 [L, D], already transformed
};

// The per-layer lower bounds from the raw `model.lower_bounds` [L, D]: softmax over layers,
// cumulative sum, minus the first row (so layer 0's bound is 0). Computed in double.
std::vector<float> TransformLowerBounds(const std::vector<float>& raw, int64_t num_layers,
                                        int64_t width);

}  // namespace hgrn2
