// Model: loading, validating, fusing and uploading HGRN2 weights.
#include "engine/model/model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/fp8_weights.h"

namespace hgrn2 {
namespace {

// Appends `part` to `fused` (concatenation along the output-feature rows).
void Append(std::vector<float>& fused, const std::vector<float>& part) {
  fused.insert(fused.end(), part.begin(), part.end());
}

}  // namespace

std::vector<float> TransformLowerBounds(const std::vector<float>& raw, int64_t num_layers,
                                        int64_t width) {
  std::vector<float> out(static_cast<size_t>(num_layers * width));
  std::vector<double> column(static_cast<size_t>(num_layers));
  for (int64_t c = 0; c < width; ++c) {
    double max_value = -INFINITY;
    for (int64_t l = 0; l < num_layers; ++l) max_value = std::fmax(max_value, raw[l * width + c]);
    double sum = 0.0;
    for (int64_t l = 0; l < num_layers; ++l) {
      column[l] = std::exp(static_cast<double>(raw[l * width + c]) - max_value);
      sum += column[l];
    }
    double cumulative = 0.0;
    for (int64_t l = 0; l < num_layers; ++l) {
      cumulative += column[l] / sum;
      out[l * width + c] = static_cast<float>(cumulative - column[0] / sum);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::filesystem::path& dir,
                                                   Backend& backend,
                                                   const ModelLoadOptions& options) {
  HGRN2_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::Load(dir));
  HGRN2_ASSIGN_OR_RETURN(WeightFile weights, WeightFile::Open(dir));
  return Create(config, weights, backend, options);
}

absl::StatusOr<DeviceTensor> Model::Upload(const std::vector<float>& values, int64_t rows,
                                           int64_t cols, DType dtype) {
  const size_t count = static_cast<size_t>(rows * cols);
  std::vector<std::byte> encoded(count * DTypeSize(dtype));
  HGRN2_RETURN_IF_ERROR(ConvertFromFloat(values.data(), count, dtype, encoded.data()));
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer buffer, backend_.Allocate(encoded.size()));
  HGRN2_RETURN_IF_ERROR(backend_.CopyToDevice(buffer.data(), encoded.data(), encoded.size()));
  DeviceTensor tensor = buffer.Matrix(dtype, rows, cols);
  buffers_.push_back(std::move(buffer));
  return tensor;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelConfig& config,
                                                     const WeightFile& weights, Backend& backend,
                                                     const ModelLoadOptions& options) {
  std::set<std::string, std::less<>> used;
  HGRN2_ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Build(config, backend,
            [&](const std::string& name,
                std::initializer_list<int64_t> shape) -> absl::StatusOr<std::vector<float>> {
              used.insert(name);
              HGRN2_ASSIGN_OR_RETURN(std::vector<float> values, weights.ReadFloat(name, shape));
              const bool projection = name.ends_with("_proj.weight");
              const bool embedding = name == "model.embeddings.weight" || name == "lm_head.weight";
              if ((projection && options.fp8_projections) ||
                  (embedding && options.fp8_embeddings)) {
                const int64_t rows = *shape.begin();
                absl::StatusOr<Fp8Rows> fp8 =
                    QuantizeFp8Rows(values, rows, static_cast<int64_t>(values.size()) / rows);
                if (!fp8.ok()) {
                  return absl::InvalidArgumentError(
                      absl::StrCat("weights: \"", name, "\": ", fp8.status().message()));
                }
                values = DequantizeFp8Rows(*fp8);
              }
              return values;
            }));
  if (config.tie_word_embeddings) used.insert("lm_head.weight");
  for (const std::string& name : weights.Names()) {
    if (!used.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights: unexpected tensor \"", name,
          "\" that config.json does not account for (check use_short_conv, use_lower_bound, "
          "tie_word_embeddings and num_hidden_layers)"));
    }
  }
  model->fingerprint_ = session::FingerprintCheckpoint(config, weights);
  if (options.fp8_projections || options.fp8_embeddings) {
    model->fingerprint_ = session::FingerprintRounded(
        model->fingerprint_,
        absl::StrCat("fp8-e4m3 per output channel:", options.fp8_projections ? " projections" : "",
                     options.fp8_embeddings ? " embeddings" : ""));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::CreateRandom(const ModelConfig& config,
                                                           Backend& backend, uint64_t seed) {
  HGRN2_ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Build(config, backend,
            [&](const std::string& name,
                std::initializer_list<int64_t> shape) -> absl::StatusOr<std::vector<float>> {
              int64_t count = 1;
              for (int64_t extent : shape) count *= extent;
              std::vector<float> values(static_cast<size_t>(count));
              if (name.ends_with("norm.weight")) {
                std::fill(values.begin(), values.end(), 1.0f);
                return values;
              }
              // Uniform in ±1/sqrt(fan in) keeps activations O(1) through the layers.
              const int64_t fan_in = shape.size() >= 2 ? *(shape.begin() + 1) : 1;
              const float scale = name.find("proj") != std::string::npos || name == "lm_head.weight"
                                      ? 1.7f / std::sqrt(static_cast<float>(fan_in))
                                      : 1.0f;
              uint64_t state = seed ^ std::hash<std::string>{}(name);
              for (float& value : values) {
                // splitmix64: fast, and good enough for weights nobody trains.
                uint64_t z = (state += 0x9E3779B97F4A7C15ull);
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                z ^= z >> 31;
                value = scale * (static_cast<float>(z >> 40) * 0x1p-23f - 1.0f);
              }
              return values;
            }));
  model->fingerprint_ = session::FingerprintRandomModel(config, seed);
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Build(const ModelConfig& config, Backend& backend,
                                                    const TensorSource& read) {
  std::unique_ptr<Model> model(new Model(config, backend));
  const int64_t v = config.vocab_size;
  const int64_t d = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const int64_t k = config.conv_window();

  HGRN2_ASSIGN_OR_RETURN(std::vector<float> embeddings, read("model.embeddings.weight", {v, d}));
  HGRN2_ASSIGN_OR_RETURN(model->embeddings_, model->Upload(embeddings, v, d));

  if (config.use_lower_bound) {
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> raw,
                           read("model.lower_bounds", {config.num_layers, d}));
    // Float32 whatever the compute dtype: the gates are computed in float32.
    HGRN2_ASSIGN_OR_RETURN(model->lower_bounds_,
                           model->Upload(TransformLowerBounds(raw, config.num_layers, d),
                                         config.num_layers, d, DType::kF32));
  }

  for (int64_t l = 0; l < config.num_layers; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    LayerWeights layer;
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> attn_norm, read(prefix + "attn_norm.weight", {d}));
    HGRN2_ASSIGN_OR_RETURN(layer.attn_norm, model->Upload(attn_norm, 1, d));

    std::vector<float> qfi;
    std::vector<float> conv;
    for (const char* name : {"q", "f", "i"}) {
      HGRN2_ASSIGN_OR_RETURN(std::vector<float> proj,
                             read(absl::StrCat(prefix, "attn.", name, "_proj.weight"), {d, d}));
      Append(qfi, proj);
      if (config.use_short_conv) {
        HGRN2_ASSIGN_OR_RETURN(
            std::vector<float> taps,
            read(absl::StrCat(prefix, "attn.", name, "_conv1d.weight"), {d, 1, k}));
        Append(conv, taps);
      }
    }
    HGRN2_ASSIGN_OR_RETURN(layer.qfi_proj, model->Upload(qfi, 3 * d, d));
    if (config.use_short_conv) {
      HGRN2_ASSIGN_OR_RETURN(layer.conv, model->Upload(conv, 3 * d, k));
    }
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> g_norm, read(prefix + "attn.g_norm.weight", {d}));
    HGRN2_ASSIGN_OR_RETURN(layer.g_norm, model->Upload(g_norm, 1, d));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> o_proj, read(prefix + "attn.o_proj.weight", {d, d}));
    HGRN2_ASSIGN_OR_RETURN(layer.o_proj, model->Upload(o_proj, d, d));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> mlp_norm, read(prefix + "mlp_norm.weight", {d}));
    HGRN2_ASSIGN_OR_RETURN(layer.mlp_norm, model->Upload(mlp_norm, 1, d));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> gate_up,
                           read(prefix + "mlp.gate_proj.weight", {inter, d}));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> up, read(prefix + "mlp.up_proj.weight", {inter, d}));
    Append(gate_up, up);
    HGRN2_ASSIGN_OR_RETURN(layer.gate_up_proj, model->Upload(gate_up, 2 * inter, d));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> down,
                           read(prefix + "mlp.down_proj.weight", {d, inter}));
    HGRN2_ASSIGN_OR_RETURN(layer.down_proj, model->Upload(down, d, inter));
    if (config.use_lower_bound && l > 0) {
      layer.lower_bound = model->lower_bounds_.As<const float>() + l * d;
    }
    model->layers_.push_back(layer);
  }

  HGRN2_ASSIGN_OR_RETURN(std::vector<float> final_norm, read("model.norm.weight", {d}));
  HGRN2_ASSIGN_OR_RETURN(model->final_norm_, model->Upload(final_norm, 1, d));
  if (config.tie_word_embeddings) {
    // Some exports keep a copy of the tied matrix; the embeddings are what the model uses.
    model->lm_head_ = model->embeddings_;
  } else {
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> lm_head, read("lm_head.weight", {v, d}));
    HGRN2_ASSIGN_OR_RETURN(model->lm_head_, model->Upload(lm_head, v, d));
  }
  return model;
}

}  // namespace hgrn2
