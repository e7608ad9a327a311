// Model: loading, validating, fusing and uploading HGRN2 weights.
#include "engine/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/model/fp8_weights.h"
#include "kernels/fp8_e4m3.h"

namespace hgrn2 {
namespace {

// Appends `part` to `fused` (concatenation along the output-feature rows).
void Append(std::vector<float>& fused, const std::vector<float>& part) {
  fused.insert(fused.end(), part.begin(), part.end());
}

// A projection stored in FP8 in the checkpoint: `name` (F8_E4M3 [rows, cols]) and the float
// tensor `name`_scale beside it, the multiplier that gives the values (the "weight_scale" of the
// common FP8 formats): one for the tensor ([] or [1]) or one per row ([rows] or [rows, 1]). Adds
// what it reads to `used`, and the tensor's `input_scale` if present (for activation quantization,
// which weight-only FP8 does not do).
absl::StatusOr<Fp8Rows> ReadFp8Checkpoint(const WeightFile& weights, const std::string& name,
                                          int64_t rows, int64_t cols,
                                          std::set<std::string, std::less<>>& used) {
  HGRN2_ASSIGN_OR_RETURN(const TensorView codes, weights.Tensor(name));
  auto fail = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(codes.file, ": FP8 tensor \"", name, "\": ", what));
  };
  if (codes.shape != std::vector<int64_t>{rows, cols}) {
    return fail(absl::StrCat("shape [", absl::StrJoin(codes.shape, ", "), "], expected [", rows,
                             ", ", cols, "]"));
  }
  const std::string scale_name = name + "_scale";
  if (!weights.Contains(scale_name)) {
    return fail(absl::StrCat("no \"", scale_name, "\" beside it (FP8 weights need their scale)"));
  }
  HGRN2_ASSIGN_OR_RETURN(const TensorView scale_view, weights.Tensor(scale_name));
  const int64_t count = scale_view.num_elements();
  const bool per_tensor = count == 1 && scale_view.shape.size() <= 1;
  const bool per_row = count == rows && (scale_view.shape == std::vector<int64_t>{rows} ||
                                         scale_view.shape == std::vector<int64_t>{rows, 1});
  if (!per_tensor && !per_row) {
    return fail(absl::StrCat("\"", scale_name, "\" has shape [",
                             absl::StrJoin(scale_view.shape, ", "), "], expected [], [1], [", rows,
                             "] or [", rows, ", 1]"));
  }
  HGRN2_ASSIGN_OR_RETURN(std::vector<float> scale, weights.ReadFloat(scale_name, scale_view.shape));
  Fp8Rows fp8;
  fp8.rows = rows;
  fp8.cols = cols;
  fp8.scales.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float value = scale[per_tensor ? 0 : static_cast<size_t>(r)];
    if (!std::isfinite(value) || value <= 0.0f) {
      return fail(absl::StrCat("scale ", value, per_tensor ? "" : absl::StrCat(" of row ", r),
                               " is not a positive finite number"));
    }
    fp8.scales[static_cast<size_t>(r)] = value;
  }
  fp8.codes.resize(static_cast<size_t>(rows * cols));
  std::memcpy(fp8.codes.data(), codes.bytes.data(), fp8.codes.size());
  for (size_t i = 0; i < fp8.codes.size(); ++i) {
    if ((fp8.codes[i] & 0x7f) == kernels::kE4M3Nan) {
      return fail(absl::StrCat("NaN at row ", static_cast<int64_t>(i) / cols, ", column ",
                               static_cast<int64_t>(i) % cols));
    }
  }
  used.insert(scale_name);
  const std::string input_scale =
      name.substr(0, name.size() - std::string("weight").size()) + "input_scale";
  if (weights.Contains(input_scale)) used.insert(input_scale);
  return fp8;
}

// The fingerprint tag of weights rounded to FP8 at load (session::FingerprintRounded).
std::string RoundingTag(bool projections, bool embeddings) {
  return absl::StrCat("fp8-e4m3 per output channel:", projections ? " projections" : "",
                      embeddings ? " embeddings" : "");
}

}  // namespace

absl::StatusOr<WeightPrecision> ParseWeightPrecision(absl::string_view name) {
  if (name == "bf16") return WeightPrecision{.compute_dtype = DType::kBF16};
  if (name == "f16") return WeightPrecision{.compute_dtype = DType::kF16};
  if (name == "f32") return WeightPrecision{.compute_dtype = DType::kF32};
  if (name == "fp8") return WeightPrecision{.compute_dtype = DType::kBF16, .fp8_weights = true};
  return absl::InvalidArgumentError(absl::StrCat("\"", name, "\": expected bf16, f16, f32 or fp8"));
}

std::string WeightPrecisionName(const WeightPrecision& precision) {
  if (precision.fp8_weights) return "fp8";
  switch (precision.compute_dtype) {
    case DType::kF16:
      return "f16";
    case DType::kF32:
      return "f32";
    default:
      return "bf16";
  }
}

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
  bool rounded_projections = false;
  bool rounded_embeddings = false;
  auto is_fp8 = [&](const std::string& name) {
    absl::StatusOr<TensorView> view = weights.Tensor(name);
    return view.ok() && view->dtype == DType::kF8E4M3;
  };
  // Codes and scales as stored in an FP8 checkpoint, or rounded from a float one.
  const Fp8Source read_fp8 = [&](const std::string& name,
                                 std::initializer_list<int64_t> shape) -> absl::StatusOr<Fp8Rows> {
    used.insert(name);
    const int64_t rows = *shape.begin();
    const int64_t cols = *(shape.begin() + 1);
    if (is_fp8(name)) return ReadFp8Checkpoint(weights, name, rows, cols, used);
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> values, weights.ReadFloat(name, shape));
    absl::StatusOr<Fp8Rows> fp8 = QuantizeFp8Rows(values, rows, cols);
    if (!fp8.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights: \"", name, "\": ", fp8.status().message()));
    }
    (name.ends_with("_proj.weight") ? rounded_projections : rounded_embeddings) = true;
    return fp8;
  };
  const TensorSource read =
      [&](const std::string& name,
          std::initializer_list<int64_t> shape) -> absl::StatusOr<std::vector<float>> {
    const bool projection = name.ends_with("_proj.weight");
    const bool embedding = name == "model.embeddings.weight" || name == "lm_head.weight";
    if (shape.size() == 2 && (is_fp8(name) || (projection && options.fp8_projections) ||
                              (embedding && options.fp8_embeddings))) {
      HGRN2_ASSIGN_OR_RETURN(Fp8Rows fp8, read_fp8(name, shape));
      return DequantizeFp8Rows(fp8);
    }
    used.insert(name);
    return weights.ReadFloat(name, shape);
  };
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                         Build(config, backend, read, options.fp8_weights ? &read_fp8 : nullptr));
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
  if (rounded_projections || rounded_embeddings) {
    model->fingerprint_ = session::FingerprintRounded(
        model->fingerprint_, RoundingTag(rounded_projections, rounded_embeddings));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::CreateRandom(const ModelConfig& config,
                                                           Backend& backend, uint64_t seed,
                                                           const ModelLoadOptions& options) {
  const TensorSource read =
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
  };
  const Fp8Source read_fp8 = [&](const std::string& name,
                                 std::initializer_list<int64_t> shape) -> absl::StatusOr<Fp8Rows> {
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> values, read(name, shape));
    return QuantizeFp8Rows(values, *shape.begin(), *(shape.begin() + 1));
  };
  HGRN2_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                         Build(config, backend, read, options.fp8_weights ? &read_fp8 : nullptr));
  model->fingerprint_ = session::FingerprintRandomModel(config, seed);
  if (options.fp8_weights) {
    model->fingerprint_ =
        session::FingerprintRounded(model->fingerprint_, RoundingTag(true, false));
  }
  return model;
}

absl::StatusOr<DeviceTensor> Model::UploadProjection(std::initializer_list<std::string> names,
                                                     int64_t rows_each, int64_t cols,
                                                     const TensorSource& read,
                                                     const Fp8Source* read_fp8) {
  const int64_t rows = rows_each * static_cast<int64_t>(names.size());
  if (read_fp8 == nullptr) {
    std::vector<float> fused;
    for (const std::string& name : names) {
      HGRN2_ASSIGN_OR_RETURN(std::vector<float> part, read(name, {rows_each, cols}));
      Append(fused, part);
    }
    return Upload(fused, rows, cols);
  }
  // Scales are per row, so fusing is concatenating codes and scales alike.
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  for (const std::string& name : names) {
    HGRN2_ASSIGN_OR_RETURN(Fp8Rows part, (*read_fp8)(name, {rows_each, cols}));
    codes.insert(codes.end(), part.codes.begin(), part.codes.end());
    scales.insert(scales.end(), part.scales.begin(), part.scales.end());
  }
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer code_buffer, backend_.Allocate(codes.size()));
  HGRN2_RETURN_IF_ERROR(backend_.CopyToDevice(code_buffer.data(), codes.data(), codes.size()));
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer scale_buffer,
                         backend_.Allocate(scales.size() * sizeof(float)));
  HGRN2_RETURN_IF_ERROR(
      backend_.CopyToDevice(scale_buffer.data(), scales.data(), scales.size() * sizeof(float)));
  DeviceTensor tensor = code_buffer.Matrix(DType::kF8E4M3, rows, cols);
  tensor.scales = static_cast<const float*>(scale_buffer.data());
  buffers_.push_back(std::move(code_buffer));
  buffers_.push_back(std::move(scale_buffer));
  return tensor;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Build(const ModelConfig& config, Backend& backend,
                                                    const TensorSource& read,
                                                    const Fp8Source* read_fp8) {
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

    HGRN2_ASSIGN_OR_RETURN(layer.qfi_proj, model->UploadProjection({prefix + "attn.q_proj.weight",
                                                                    prefix + "attn.f_proj.weight",
                                                                    prefix + "attn.i_proj.weight"},
                                                                   d, d, read, read_fp8));
    std::vector<float> conv;
    for (const char* name : {"q", "f", "i"}) {
      if (config.use_short_conv) {
        HGRN2_ASSIGN_OR_RETURN(
            std::vector<float> taps,
            read(absl::StrCat(prefix, "attn.", name, "_conv1d.weight"), {d, 1, k}));
        Append(conv, taps);
      }
    }
    if (config.use_short_conv) {
      HGRN2_ASSIGN_OR_RETURN(layer.conv, model->Upload(conv, 3 * d, k));
    }
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> g_norm, read(prefix + "attn.g_norm.weight", {d}));
    HGRN2_ASSIGN_OR_RETURN(layer.g_norm, model->Upload(g_norm, 1, d));
    HGRN2_ASSIGN_OR_RETURN(layer.o_proj, model->UploadProjection({prefix + "attn.o_proj.weight"}, d,
                                                                 d, read, read_fp8));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> mlp_norm, read(prefix + "mlp_norm.weight", {d}));
    HGRN2_ASSIGN_OR_RETURN(layer.mlp_norm, model->Upload(mlp_norm, 1, d));
    HGRN2_ASSIGN_OR_RETURN(
        layer.gate_up_proj,
        model->UploadProjection({prefix + "mlp.gate_proj.weight", prefix + "mlp.up_proj.weight"},
                                inter, d, read, read_fp8));
    HGRN2_ASSIGN_OR_RETURN(
        layer.down_proj,
        model->UploadProjection({prefix + "mlp.down_proj.weight"}, d, inter, read, read_fp8));
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
  if (read_fp8 != nullptr) {
    HGRN2_RETURN_IF_ERROR(backend.ReserveFp8Widening(std::max({3 * d * d, 2 * inter * d})));
  }
  return model;
}

}  // namespace hgrn2
