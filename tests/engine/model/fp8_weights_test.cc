// FP8 weight quantization (engine/model/fp8_weights.h) and models loaded with it
// (ModelLoadOptions): scales, rounding, errors, and the fingerprint and outputs of such a model;
// models that keep their projections in FP8 (fp8_weights, the CPU backend's F8_E4M3 Gemm) and FP8
// checkpoints (codes with a weight_scale), with the errors of a malformed one.
#include "engine/model/fp8_weights.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/checkpoint/weight_file.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "kernels/fp8_e4m3.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

TEST(Fp8Weights, EachRowsLargestMapsTo448AndEveryValueRoundsToItsNearestCode) {
  const int64_t rows = 5;
  const int64_t cols = 37;  // awkward
  std::mt19937 rng(7);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    // Rows of very different magnitudes: each gets its own scale.
    std::normal_distribution<float> normal(0.0f, std::ldexp(1.0f, static_cast<int>(4 * r) - 10));
    for (int64_t c = 0; c < cols; ++c) values[static_cast<size_t>(r * cols + c)] = normal(rng);
  }
  absl::StatusOr<Fp8Rows> q = QuantizeFp8Rows(values, rows, cols);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->codes.size(), values.size());
  ASSERT_EQ(q->scales.size(), static_cast<size_t>(rows));
  const std::vector<float> back = DequantizeFp8Rows(*q);
  for (int64_t r = 0; r < rows; ++r) {
    float largest = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      largest = std::fmax(largest, std::fabs(values[static_cast<size_t>(r * cols + c)]));
    }
    const float scale = q->scales[static_cast<size_t>(r)];
    EXPECT_EQ(scale, largest / kernels::kE4M3Max) << "row " << r;
    bool reaches_448 = false;
    for (int64_t c = 0; c < cols; ++c) {
      const size_t at = static_cast<size_t>(r * cols + c);
      const uint8_t code = q->codes[at];
      reaches_448 |= (code & 0x7f) == 0x7e;
      EXPECT_EQ(code, kernels::FloatToE4M3(values[at] / scale)) << "row " << r << " col " << c;
      EXPECT_EQ(back[at], kernels::E4M3ToFloat(code) * scale);
      // Three mantissa bits: within 1/16 of the value for normals, half the subnormal step below.
      const double tolerance = std::fmax(std::fabs(values[at]) / 16.0, std::ldexp(scale, -10));
      EXPECT_LE(std::fabs(static_cast<double>(back[at]) - values[at]), tolerance * (1 + 1e-6))
          << "row " << r << " col " << c;
    }
    EXPECT_TRUE(reaches_448) << "row " << r;
  }
}

TEST(Fp8Weights, ARowOfZerosGetsScaleOne) {
  absl::StatusOr<Fp8Rows> q = QuantizeFp8Rows(std::vector<float>{0, 0, 0, 1, -2, 0}, 2, 3);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->scales[0], 1.0f);
  EXPECT_EQ(q->codes[0], 0);
  EXPECT_EQ(q->scales[1], 2.0f / 448.0f);
  EXPECT_EQ(DequantizeFp8Rows(*q), (std::vector<float>{0, 0, 0, 1, -2, 0}));
  // So does a row whose scale would underflow to 0: it rounds to zeros, not to NaN.
  const float tiny = std::numeric_limits<float>::denorm_min();
  absl::StatusOr<Fp8Rows> small = QuantizeFp8Rows(std::vector<float>{tiny, -tiny}, 1, 2);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->scales[0], 1.0f);
  EXPECT_EQ(DequantizeFp8Rows(*small), (std::vector<float>{0.0f, -0.0f}));
}

TEST(Fp8Weights, NonFiniteValuesAndWrongSizesAreRefusedByName) {
  std::vector<float> values(6, 1.0f);
  values[4] = std::numeric_limits<float>::infinity();
  absl::StatusOr<Fp8Rows> q = QuantizeFp8Rows(values, 2, 3);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("row 1, column 1"), std::string::npos) << q.status();
  values[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(QuantizeFp8Rows(values, 2, 3).ok());
  absl::StatusOr<Fp8Rows> sized = QuantizeFp8Rows(std::vector<float>(5, 1.0f), 2, 3);
  ASSERT_FALSE(sized.ok());
  EXPECT_NE(sized.status().message().find("5 values for a [2, 3] matrix"), std::string::npos)
      << sized.status();
}

const char* const kFixture = "u-k3-nolb";

struct Scored {
  std::vector<float> logprobs;
  std::string fingerprint;
};

// The log-probabilities of a fixed sequence under the model in `dir` loaded with `options`.
Scored ScoreModel(const std::filesystem::path& dir, const ModelLoadOptions& options) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(dir, *backend, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(**model, EngineOptions{});
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  ScoreRequest request;
  for (int i = 0; i < 40; ++i) {
    request.tokens.push_back(static_cast<int32_t>((i * 37 + 5) % (*model)->config().vocab_size));
  }
  absl::StatusOr<std::shared_ptr<PendingScore>> pending = (*engine)->Score(request);
  EXPECT_TRUE(pending.ok()) << pending.status();
  if (!pending.ok()) return {};
  absl::StatusOr<ScoreResult> result = (*pending)->Wait();
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  return {result->logprobs, (*model)->fingerprint().ToHex()};
}

// The values a tensor of the model holds, as float32 (the CPU backend's compute dtype).
std::vector<float> Held(const Model& model, const DeviceTensor& tensor) {
  std::vector<float> out(static_cast<size_t>(tensor.rows * tensor.cols));
  EXPECT_EQ(tensor.dtype, DType::kF32);
  EXPECT_TRUE(model.backend().CopyToHost(out.data(), tensor.data, out.size() * sizeof(float)).ok());
  return out;
}

// What the checkpoint's tensor `name` becomes rounded to FP8 row by row.
std::vector<float> Rounded(const WeightFile& weights, const std::string& name, int64_t rows,
                           int64_t cols) {
  absl::StatusOr<std::vector<float>> values = weights.ReadFloat(name, {rows, cols});
  EXPECT_TRUE(values.ok()) << values.status();
  absl::StatusOr<Fp8Rows> q = QuantizeFp8Rows(*values, rows, cols);
  EXPECT_TRUE(q.ok()) << q.status();
  return DequantizeFp8Rows(*q);
}

std::vector<float> Slice(const std::vector<float>& values, int64_t begin, int64_t count) {
  return {values.begin() + begin, values.begin() + begin + count};
}

// Exactly the projections (and with fp8_embeddings the embedding table and the head) hold their
// rounded values, one scale per output row; the norms and conv taps are as stored.
TEST(Fp8Weights, AModelLoadedWithFp8HoldsTheRoundedWeights) {
  const std::filesystem::path dir = testing::TestDataDir() / "u-k3-nolb";
  absl::StatusOr<WeightFile> weights = WeightFile::Open(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  for (const bool embeddings : {false, true}) {
    SCOPED_TRACE(embeddings ? "projections and embeddings" : "projections");
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::Load(dir, *backend, {.fp8_projections = true, .fp8_embeddings = embeddings});
    ASSERT_TRUE(model.ok()) << model.status();
    const Model& m = **model;
    const int64_t d = m.config().hidden_size;
    const int64_t v = m.config().vocab_size;
    const int64_t inter = m.config().intermediate_size;
    for (int64_t l = 0; l < m.config().num_layers; ++l) {
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      const std::vector<float> qfi = Held(m, m.layer(l).qfi_proj);
      EXPECT_EQ(Slice(qfi, 0, d * d), Rounded(*weights, prefix + "attn.q_proj.weight", d, d));
      EXPECT_EQ(Slice(qfi, d * d, d * d), Rounded(*weights, prefix + "attn.f_proj.weight", d, d));
      EXPECT_EQ(Slice(qfi, 2 * d * d, d * d),
                Rounded(*weights, prefix + "attn.i_proj.weight", d, d));
      EXPECT_EQ(Held(m, m.layer(l).o_proj), Rounded(*weights, prefix + "attn.o_proj.weight", d, d));
      const std::vector<float> gate_up = Held(m, m.layer(l).gate_up_proj);
      EXPECT_EQ(Slice(gate_up, 0, inter * d),
                Rounded(*weights, prefix + "mlp.gate_proj.weight", inter, d));
      EXPECT_EQ(Slice(gate_up, inter * d, inter * d),
                Rounded(*weights, prefix + "mlp.up_proj.weight", inter, d));
      EXPECT_EQ(Held(m, m.layer(l).down_proj),
                Rounded(*weights, prefix + "mlp.down_proj.weight", d, inter));
      EXPECT_EQ(Held(m, m.layer(l).attn_norm),
                *weights->ReadFloat(prefix + "attn_norm.weight", {d}));
    }
    const std::vector<float> table = *weights->ReadFloat("model.embeddings.weight", {v, d});
    EXPECT_EQ(Held(m, m.embeddings()),
              embeddings ? Rounded(*weights, "model.embeddings.weight", v, d) : table);
    const std::vector<float> head = *weights->ReadFloat("lm_head.weight", {v, d});
    EXPECT_EQ(Held(m, m.lm_head()), embeddings ? Rounded(*weights, "lm_head.weight", v, d) : head);
  }
}

// Rounding changes the function the model computes, and so its identity: a session saved on one
// does not resume on another.
TEST(Fp8Weights, AModelWithFp8WeightsIsNamedApartAndComputesWithThem) {
  const std::filesystem::path dir = testing::TestDataDir() / kFixture;
  const auto [plain, plain_id] = ScoreModel(dir, {});
  const auto [projections, projections_id] = ScoreModel(dir, {.fp8_projections = true});
  const auto [all, all_id] = ScoreModel(dir, {.fp8_projections = true, .fp8_embeddings = true});
  ASSERT_EQ(plain.size(), 39u);
  ASSERT_EQ(projections.size(), plain.size());
  ASSERT_EQ(all.size(), plain.size());
  EXPECT_NE(plain_id, projections_id);
  EXPECT_NE(plain_id, all_id);
  EXPECT_NE(projections_id, all_id);
  EXPECT_NE(projections, plain);
  EXPECT_NE(all, projections);
  for (size_t t = 0; t < plain.size(); ++t) {
    EXPECT_TRUE(std::isfinite(projections[t]) && projections[t] <= 0.0f) << t;
    EXPECT_TRUE(std::isfinite(all[t]) && all[t] <= 0.0f) << t;
  }
  // How close FP8 stays to the checkpoint is measured on the trained demo model
  // (tools/hgrn2_fp8_eval.cc, bench/RESULTS.md); this fixture's weights are random.
}

TEST(Fp8Storage, ParsesThePrecisionsOfDtype) {
  EXPECT_EQ(ParseWeightPrecision("bf16")->compute_dtype, DType::kBF16);
  EXPECT_FALSE(ParseWeightPrecision("bf16")->fp8_weights);
  EXPECT_EQ(ParseWeightPrecision("f32")->compute_dtype, DType::kF32);
  EXPECT_EQ(ParseWeightPrecision("f16")->compute_dtype, DType::kF16);
  EXPECT_TRUE(ParseWeightPrecision("fp8")->fp8_weights);
  EXPECT_EQ(ParseWeightPrecision("fp8")->compute_dtype, DType::kBF16);
  const absl::StatusOr<WeightPrecision> bad = ParseWeightPrecision("int4");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("int4"), absl::string_view::npos) << bad.status();
  for (const char* name : {"bf16", "f16", "f32", "fp8"}) {
    EXPECT_EQ(WeightPrecisionName(*ParseWeightPrecision(name)), name);
  }
}

// The projections are codes and scales on the backend; nothing else is.
TEST(Fp8Storage, TheProjectionsAreHeldAsCodesAndScales) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(testing::TestDataDir() / kFixture, *backend, {.fp8_weights = true});
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  const int64_t d = m.config().hidden_size;
  const int64_t inter = m.config().intermediate_size;
  absl::StatusOr<WeightFile> weights = WeightFile::Open(testing::TestDataDir() / kFixture);
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (int64_t l = 0; l < m.config().num_layers; ++l) {
    const LayerWeights& w = m.layer(l);
    for (const DeviceTensor* t : {&w.qfi_proj, &w.o_proj, &w.gate_up_proj, &w.down_proj}) {
      EXPECT_EQ(t->dtype, DType::kF8E4M3);
      EXPECT_NE(t->scales, nullptr);
    }
    EXPECT_EQ(w.qfi_proj.rows, 3 * d);
    EXPECT_EQ(w.gate_up_proj.rows, 2 * inter);
    EXPECT_EQ(w.attn_norm.dtype, DType::kF32);
    // The f rows of qfi hold f_proj's codes and scales, fused in order.
    const std::string f_name = absl::StrCat("model.layers.", l, ".attn.f_proj.weight");
    absl::StatusOr<std::vector<float>> f = weights->ReadFloat(f_name, {d, d});
    ASSERT_TRUE(f.ok()) << f.status();
    absl::StatusOr<Fp8Rows> want = QuantizeFp8Rows(*f, d, d);
    ASSERT_TRUE(want.ok());
    const DeviceTensor f_rows = w.qfi_proj.Rows(d, d);
    std::vector<uint8_t> codes(static_cast<size_t>(d * d));
    std::vector<float> scales(static_cast<size_t>(d));
    ASSERT_TRUE(m.backend().CopyToHost(codes.data(), f_rows.data, codes.size()).ok());
    ASSERT_TRUE(
        m.backend().CopyToHost(scales.data(), f_rows.scales, scales.size() * sizeof(float)).ok());
    EXPECT_EQ(codes, want->codes);
    EXPECT_EQ(scales, want->scales);
  }
  EXPECT_EQ(m.embeddings().dtype, DType::kF32);
  EXPECT_EQ(m.lm_head().dtype, DType::kF32);
}

// Held in FP8 or rounded and held in float32, the model computes the same function, bit for bit
// on the CPU (the same values summed in the same order), and has the same identity: a session
// moves between the two.
TEST(Fp8Storage, ComputesExactlyWhatTheRoundedModelComputes) {
  const std::filesystem::path dir = testing::TestDataDir() / kFixture;
  const Scored stored = ScoreModel(dir, {.fp8_weights = true});
  const Scored rounded = ScoreModel(dir, {.fp8_projections = true});
  const Scored plain = ScoreModel(dir, {});
  ASSERT_EQ(stored.logprobs.size(), 39u);
  EXPECT_EQ(stored.logprobs, rounded.logprobs);
  EXPECT_EQ(stored.fingerprint, rounded.fingerprint);
  EXPECT_NE(stored.logprobs, plain.logprobs);
  EXPECT_NE(stored.fingerprint, plain.fingerprint);
}

// How an FP8 checkpoint stores a projection.
enum class ScaleForm { kPerRow, kPerRowColumn, kPerTensor, kScalar };

// Writes `dir` as a copy of the fixture whose projections are stored in FP8 (codes and a
// weight_scale of `form`; q_proj also carries an input_scale), and `float_dir` as a copy holding,
// in F32, exactly the values the FP8 one stands for. `edit` may change the FP8 tensors first.
void WriteFp8Checkpoint(const std::filesystem::path& dir, const std::filesystem::path& float_dir,
                        ScaleForm form,
                        const std::function<void(std::vector<TensorToWrite>&)>& edit = {}) {
  const std::filesystem::path fixture = testing::TestDataDir() / kFixture;
  absl::StatusOr<WeightFile> weights = WeightFile::Open(fixture);
  ASSERT_TRUE(weights.ok()) << weights.status();
  std::vector<TensorToWrite> fp8_tensors;
  std::vector<TensorToWrite> float_tensors;
  for (const std::string& name : weights->Names()) {
    absl::StatusOr<TensorView> view = weights->Tensor(name);
    ASSERT_TRUE(view.ok());
    TensorToWrite as_is{name, view->dtype, view->shape,
                        std::vector<std::byte>(view->bytes.begin(), view->bytes.end())};
    if (!name.ends_with("_proj.weight")) {
      fp8_tensors.push_back(as_is);
      float_tensors.push_back(as_is);
      continue;
    }
    const int64_t rows = view->shape[0];
    const int64_t cols = view->shape[1];
    absl::StatusOr<std::vector<float>> values = weights->ReadFloat(name, view->shape);
    ASSERT_TRUE(values.ok());
    Fp8Rows fp8;
    if (form == ScaleForm::kPerTensor || form == ScaleForm::kScalar) {
      float largest = 0.0f;
      for (float v : *values) largest = std::fmax(largest, std::fabs(v));
      const float scale = largest / kernels::kE4M3Max;
      fp8.rows = rows;
      fp8.cols = cols;
      fp8.scales.assign(static_cast<size_t>(rows), scale);
      for (float v : *values) fp8.codes.push_back(kernels::FloatToE4M3(v / scale));
    } else {
      absl::StatusOr<Fp8Rows> q = QuantizeFp8Rows(*values, rows, cols);
      ASSERT_TRUE(q.ok());
      fp8 = *q;
    }
    const std::vector<float> dequantized = DequantizeFp8Rows(fp8);
    std::vector<std::byte> float_bytes(dequantized.size() * sizeof(float));
    std::memcpy(float_bytes.data(), dequantized.data(), float_bytes.size());
    float_tensors.push_back({name, DType::kF32, view->shape, std::move(float_bytes)});

    std::vector<std::byte> codes(fp8.codes.size());
    std::memcpy(codes.data(), fp8.codes.data(), codes.size());
    fp8_tensors.push_back({name, DType::kF8E4M3, view->shape, std::move(codes)});
    std::vector<int64_t> scale_shape;
    std::vector<float> scale_values = fp8.scales;
    switch (form) {
      case ScaleForm::kPerRow:
        scale_shape = {rows};
        break;
      case ScaleForm::kPerRowColumn:
        scale_shape = {rows, 1};
        break;
      case ScaleForm::kPerTensor:
        scale_shape = {1};
        scale_values.resize(1);
        break;
      case ScaleForm::kScalar:
        scale_values.resize(1);
        break;
    }
    std::vector<std::byte> scale_bytes(scale_values.size() * sizeof(float));
    std::memcpy(scale_bytes.data(), scale_values.data(), scale_bytes.size());
    fp8_tensors.push_back({name + "_scale", DType::kF32, scale_shape, std::move(scale_bytes)});
    if (name.ends_with("q_proj.weight")) {
      const float one = 1.0f;
      std::vector<std::byte> input_scale(sizeof(float));
      std::memcpy(input_scale.data(), &one, sizeof(float));
      fp8_tensors.push_back({name.substr(0, name.size() - 6) + "input_scale",
                             DType::kF32,
                             {},
                             std::move(input_scale)});
    }
  }
  if (edit) edit(fp8_tensors);
  for (const auto& [out, tensors] : {std::pair{dir, &fp8_tensors}, {float_dir, &float_tensors}}) {
    std::filesystem::create_directories(out);
    std::filesystem::copy_file(fixture / "config.json", out / "config.json",
                               std::filesystem::copy_options::overwrite_existing);
    const absl::Status written = WriteSafetensors(out / "model.safetensors", *tensors);
    ASSERT_TRUE(written.ok()) << written;
  }
}

// An FP8 checkpoint computes with exactly the values its codes and scales stand for, whether it
// is kept in FP8 or widened at load, and whatever form its scales take.
TEST(Fp8Storage, AnFp8CheckpointComputesWithTheValuesItStandsFor) {
  for (const ScaleForm form :
       {ScaleForm::kPerRow, ScaleForm::kPerRowColumn, ScaleForm::kPerTensor, ScaleForm::kScalar}) {
    SCOPED_TRACE(static_cast<int>(form));
    const std::filesystem::path root = testing::MakeTempDir();
    WriteFp8Checkpoint(root / "fp8", root / "float", form);
    const Scored want = ScoreModel(root / "float", {});
    const Scored widened = ScoreModel(root / "fp8", {});
    const Scored kept = ScoreModel(root / "fp8", {.fp8_weights = true});
    ASSERT_EQ(want.logprobs.size(), 39u);
    EXPECT_EQ(widened.logprobs, want.logprobs);
    EXPECT_EQ(kept.logprobs, want.logprobs);
    // Nothing was rounded at load: the checkpoint's own identity, however it is held.
    EXPECT_EQ(widened.fingerprint, kept.fingerprint);
    std::filesystem::remove_all(root);
  }
}

// A malformed FP8 checkpoint is refused with an error naming the tensor and what is wrong.
TEST(Fp8Storage, AMalformedFp8CheckpointIsRefusedByName) {
  const std::string o_proj = "model.layers.0.attn.o_proj.weight";
  auto find = [](std::vector<TensorToWrite>& tensors, const std::string& name) -> TensorToWrite& {
    for (TensorToWrite& t : tensors) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no " << name;
    return tensors.front();
  };
  struct Case {
    const char* what;
    std::function<void(std::vector<TensorToWrite>&)> edit;
    const char* message;
  };
  const Case cases[] = {
      {"no scale",
       [&](std::vector<TensorToWrite>& t) {
         std::erase_if(t, [&](const TensorToWrite& x) { return x.name == o_proj + "_scale"; });
       },
       "o_proj.weight_scale\" beside it"},
      {"a scale of the wrong shape",
       [&](std::vector<TensorToWrite>& t) {
         TensorToWrite& s = find(t, o_proj + "_scale");
         s.shape = {s.shape[0] / 2, 2};
       },
       "expected [], [1]"},
      {"a zero scale",
       [&](std::vector<TensorToWrite>& t) {
         TensorToWrite& s = find(t, o_proj + "_scale");
         std::memset(s.bytes.data() + 4 * 3, 0, 4);
       },
       "of row 3 is not a positive finite number"},
      {"a NaN code",
       [&](std::vector<TensorToWrite>& t) {
         TensorToWrite& w = find(t, o_proj);
         w.bytes[static_cast<size_t>(w.shape[1]) * 2 + 5] = std::byte{0xff};
       },
       "NaN at row 2, column 5"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::filesystem::path root = testing::MakeTempDir();
    WriteFp8Checkpoint(root / "fp8", root / "float", ScaleForm::kPerRow, c.edit);
    std::unique_ptr<Backend> backend = MakeCpuBackend();
    for (const bool keep : {false, true}) {
      absl::StatusOr<std::unique_ptr<Model>> model =
          Model::Load(root / "fp8", *backend, {.fp8_weights = keep});
      ASSERT_FALSE(model.ok());
      EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(model.status().message().find(o_proj), absl::string_view::npos) << model.status();
      EXPECT_NE(model.status().message().find(c.message), absl::string_view::npos)
          << model.status();
    }
    std::filesystem::remove_all(root);
  }
}

}  // namespace
}  // namespace hgrn2
