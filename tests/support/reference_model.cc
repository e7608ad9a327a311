// Random checkpoints and the float64 oracle for tests.
#include "tests/support/reference_model.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/model_config.h"
#include "engine/checkpoint/weight_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace hgrn2::testing {
namespace {

std::vector<std::byte> Encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  const absl::Status status = ConvertFromFloat(values.data(), values.size(), dtype, bytes.data());
  EXPECT_TRUE(status.ok()) << status;
  return bytes;
}

std::vector<double> ReadAll(const WeightFile& file, const std::string& name,
                            std::initializer_list<int64_t> shape) {
  absl::StatusOr<std::vector<float>> values = file.ReadFloat(name, shape);
  EXPECT_TRUE(values.ok()) << values.status();
  if (!values.ok()) return std::vector<double>();
  return std::vector<double>(values->begin(), values->end());
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w,
                            double eps) {
  double sum = 0.0;
  for (double value : x) sum += value * value;
  const double scale = 1.0 / std::sqrt(sum / static_cast<double>(x.size()) + eps);
  std::vector<double> out(x.size());
  for (size_t c = 0; c < x.size(); ++c) out[c] = x[c] * scale * w[c];
  return out;
}

// y = W x for W [rows, cols].
std::vector<double> MatVec(const std::vector<double>& w, const std::vector<double>& x) {
  const size_t cols = x.size();
  std::vector<double> y(w.size() / cols);
  for (size_t r = 0; r < y.size(); ++r) {
    double sum = 0.0;
    for (size_t c = 0; c < cols; ++c) sum += w[r * cols + c] * x[c];
    y[r] = sum;
  }
  return y;
}

}  // namespace

void WriteRandomModel(const std::filesystem::path& dir, const RandomModelSpec& spec) {
  std::filesystem::create_directories(dir);
  const int64_t v = spec.vocab_size, d = spec.hidden_size, k = spec.conv_size;
  int64_t inter = spec.intermediate_size;
  if (inter == 0) {
    inter = static_cast<int64_t>(static_cast<double>(d) * 4 * 2 / 3);
    inter = 256 * ((inter + 255) / 256);
  }
  nlohmann::json config = {
      {"model_type", "hgrn2"},
      {"vocab_size", v},
      {"hidden_size", d},
      {"num_hidden_layers", spec.num_layers},
      {"use_short_conv", k > 0},
      {"conv_size", k > 0 ? k : 4},
      {"use_lower_bound", spec.use_lower_bound},
      {"hidden_ratio", 4},
      {"hidden_act", "swish"},
      {"norm_eps", 1e-6},
      {"tie_word_embeddings", spec.tie_word_embeddings},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"pad_token_id", nullptr},
      {"attn", nullptr},
      {"elementwise_affine", true},
  };
  config["intermediate_size"] =
      spec.intermediate_size == 0 ? nlohmann::json(nullptr) : nlohmann::json(inter);
  using HeadsField = RandomModelSpec::HeadsField;
  config["num_heads"] = spec.heads_field == HeadsField::kExpandRatioOnly
                            ? nlohmann::json(nullptr)
                            : nlohmann::json(spec.num_heads);
  config["expand_ratio"] = spec.heads_field == HeadsField::kNumHeadsOnly
                               ? nlohmann::json(nullptr)
                               : nlohmann::json(d / spec.num_heads);
  std::ofstream(dir / "config.json") << config.dump(2);

  std::mt19937_64 rng(spec.seed);
  auto random = [&](std::vector<int64_t> shape, double scale, double offset) {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(count));
    for (float& value : values) value = static_cast<float>(offset + scale * normal(rng));
    return TensorToWrite{"", spec.dtype, std::move(shape), Encode(values, spec.dtype)};
  };
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, TensorToWrite tensor) {
    tensor.name = name;
    tensors.push_back(std::move(tensor));
  };
  const double proj = 1.5 / std::sqrt(static_cast<double>(d));
  add("model.embeddings.weight", random({v, d}, 1.0, 0.0));
  if (spec.use_lower_bound) add("model.lower_bounds", random({spec.num_layers, d}, 1.0, 0.0));
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "attn_norm.weight", random({d}, 0.2, 1.0));
    for (const char* name : {"q", "f", "i"}) {
      add(absl::StrCat(p, "attn.", name, "_proj.weight"), random({d, d}, proj, 0.0));
      if (k > 0) add(absl::StrCat(p, "attn.", name, "_conv1d.weight"), random({d, 1, k}, 0.6, 0.0));
    }
    add(p + "attn.g_norm.weight", random({d}, 0.2, 1.0));
    add(p + "attn.o_proj.weight", random({d, d}, proj, 0.0));
    add(p + "mlp_norm.weight", random({d}, 0.2, 1.0));
    add(p + "mlp.gate_proj.weight", random({inter, d}, proj, 0.0));
    add(p + "mlp.up_proj.weight", random({inter, d}, proj, 0.0));
    add(p + "mlp.down_proj.weight", random({d, inter}, 1.5 / std::sqrt(double(inter)), 0.0));
  }
  add("model.norm.weight", random({d}, 0.2, 1.0));
  if (!spec.tie_word_embeddings)
    add("lm_head.weight", random({v, d}, 2.0 / std::sqrt(double(d)), 0.0));
  absl::Status status = WriteSafetensors(dir / "model.safetensors", tensors);
  ASSERT_TRUE(status.ok()) << status;
}

NaiveHgrn2::NaiveHgrn2(const std::filesystem::path& dir) {
  absl::StatusOr<ModelConfig> config = ModelConfig::Load(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  absl::StatusOr<WeightFile> file = WeightFile::Open(dir);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!config.ok() || !file.ok()) return;
  v_ = config->vocab_size;
  d_ = config->hidden_size;
  h_ = config->num_heads;
  dk_ = config->key_dim;
  dv_ = config->value_dim;
  k_ = config->conv_window();
  inter_ = config->intermediate_size;
  eps_ = config->norm_eps;
  gate_eps_ = config->gate_norm_eps();
  use_lower_bound_ = config->use_lower_bound;
  const int64_t num_layers = config->num_layers;
  embeddings_ = ReadAll(*file, "model.embeddings.weight", {v_, d_});
  norm_ = ReadAll(*file, "model.norm.weight", {d_});
  lm_head_ = config->tie_word_embeddings ? embeddings_ : ReadAll(*file, "lm_head.weight", {v_, d_});
  std::vector<double> bounds;
  if (use_lower_bound_) {
    // lb = softmax over layers, cumulative sum, minus the first layer's.
    const std::vector<double> raw = ReadAll(*file, "model.lower_bounds", {num_layers, d_});
    bounds.assign(raw.size(), 0.0);
    for (int64_t c = 0; c < d_; ++c) {
      double sum = 0.0;
      for (int64_t l = 0; l < num_layers; ++l) sum += std::exp(raw[l * d_ + c]);
      double cumulative = 0.0;
      const double first = std::exp(raw[c]) / sum;
      for (int64_t l = 0; l < num_layers; ++l) {
        cumulative += std::exp(raw[l * d_ + c]) / sum;
        bounds[l * d_ + c] = cumulative - first;
      }
    }
  }
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Layer layer;
    layer.attn_norm = ReadAll(*file, p + "attn_norm.weight", {d_});
    layer.q = ReadAll(*file, p + "attn.q_proj.weight", {d_, d_});
    layer.f = ReadAll(*file, p + "attn.f_proj.weight", {d_, d_});
    layer.i = ReadAll(*file, p + "attn.i_proj.weight", {d_, d_});
    if (k_ > 0) {
      layer.q_conv = ReadAll(*file, p + "attn.q_conv1d.weight", {d_, 1, k_});
      layer.f_conv = ReadAll(*file, p + "attn.f_conv1d.weight", {d_, 1, k_});
      layer.i_conv = ReadAll(*file, p + "attn.i_conv1d.weight", {d_, 1, k_});
      layer.history.assign(static_cast<size_t>(k_), std::vector<double>(3 * d_, 0.0));
    }
    layer.g_norm = ReadAll(*file, p + "attn.g_norm.weight", {d_});
    layer.o = ReadAll(*file, p + "attn.o_proj.weight", {d_, d_});
    layer.mlp_norm = ReadAll(*file, p + "mlp_norm.weight", {d_});
    layer.gate = ReadAll(*file, p + "mlp.gate_proj.weight", {inter_, d_});
    layer.up = ReadAll(*file, p + "mlp.up_proj.weight", {inter_, d_});
    layer.down = ReadAll(*file, p + "mlp.down_proj.weight", {d_, inter_});
    if (use_lower_bound_) {
      layer.lower_bound.assign(bounds.begin() + l * d_, bounds.begin() + (l + 1) * d_);
    } else {
      layer.lower_bound.assign(static_cast<size_t>(d_), 0.0);
    }
    layer.state.assign(static_cast<size_t>(h_ * dv_ * dk_), 0.0);
    layers_.push_back(std::move(layer));
  }
}

std::vector<double> NaiveHgrn2::Step(int32_t token) {
  std::vector<double> x(embeddings_.begin() + token * d_, embeddings_.begin() + (token + 1) * d_);
  for (Layer& layer : layers_) {
    const std::vector<double> a = RmsNorm(x, layer.attn_norm, eps_);
    std::vector<double> q = MatVec(layer.q, a);
    std::vector<double> f = MatVec(layer.f, a);
    std::vector<double> v = MatVec(layer.i, a);
    if (k_ > 0) {
      std::vector<double> current(3 * d_);
      for (int64_t c = 0; c < d_; ++c) {
        current[c] = q[c];
        current[d_ + c] = f[c];
        current[2 * d_ + c] = v[c];
      }
      layer.history.erase(layer.history.begin());
      layer.history.push_back(current);
      for (int64_t c = 0; c < d_; ++c) {
        double sq = 0.0, sf = 0.0, sv = 0.0;
        for (int64_t j = 0; j < k_; ++j) {
          sq += layer.q_conv[c * k_ + j] * layer.history[j][c];
          sf += layer.f_conv[c * k_ + j] * layer.history[j][d_ + c];
          sv += layer.i_conv[c * k_ + j] * layer.history[j][2 * d_ + c];
        }
        q[c] = sq;
        f[c] = sf;
        v[c] = sv;
      }
    }
    std::vector<double> o(static_cast<size_t>(d_));
    for (int64_t h = 0; h < h_; ++h) {
      for (int64_t i = 0; i < dv_; ++i) {
        double sum = 0.0;
        for (int64_t j = 0; j < dk_; ++j) {
          const int64_t c = h * dk_ + j;
          const double qs = q[c] * Sigmoid(q[c]);
          const double lb = layer.lower_bound[c];
          const double g = lb + (1.0 - lb) * Sigmoid(f[c]);
          double& s = layer.state[(h * dv_ + i) * dk_ + j];
          s = s * g + v[h * dv_ + i] * (1.0 - g);
          sum += s * qs;
        }
        o[h * dv_ + i] = sum;
      }
    }
    const std::vector<double> y = MatVec(layer.o, RmsNorm(o, layer.g_norm, gate_eps_));
    for (int64_t c = 0; c < d_; ++c) x[c] += y[c];
    const std::vector<double> m = RmsNorm(x, layer.mlp_norm, eps_);
    const std::vector<double> gate = MatVec(layer.gate, m);
    const std::vector<double> up = MatVec(layer.up, m);
    std::vector<double> act(static_cast<size_t>(inter_));
    for (int64_t c = 0; c < inter_; ++c) act[c] = gate[c] * Sigmoid(gate[c]) * up[c];
    const std::vector<double> down = MatVec(layer.down, act);
    for (int64_t c = 0; c < d_; ++c) x[c] += down[c];
  }
  return MatVec(lm_head_, RmsNorm(x, norm_, eps_));
}

std::vector<float> NaiveHgrn2::State(int64_t layer) const {
  const std::vector<double>& s = layers_[static_cast<size_t>(layer)].state;
  return std::vector<float>(s.begin(), s.end());
}

}  // namespace hgrn2::testing
