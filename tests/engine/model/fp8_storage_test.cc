// Models that keep their projections in FP8 (ModelLoadOptions::fp8_weights, the CPU backend's
// F8_E4M3 Gemm) and FP8 checkpoints (codes with a weight_scale): what they hold, that they compute
// exactly what the rounded model computes, and the errors of a malformed FP8 checkpoint.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/checkpoint/weight_file.h"
#include "engine/engine.h"
#include "engine/model/fp8_weights.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "kernels/fp8_e4m3.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

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
