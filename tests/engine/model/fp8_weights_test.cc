// FP8 weight quantization (engine/model/fp8_weights.h) and models loaded with it
// (ModelLoadOptions): scales, rounding, errors, and the fingerprint and outputs of such a model.
#include "engine/model/fp8_weights.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

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

// The log-probabilities of a fixed sequence under the fixture model loaded with `options`.
std::vector<float> ScoreFixture(const ModelLoadOptions& options, std::string* fingerprint) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(testing::TestDataDir() / "u-k3-nolb", *backend, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  *fingerprint = (*model)->fingerprint().ToHex();
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
  return result.ok() ? result->logprobs : std::vector<float>{};
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
  std::string plain_id;
  std::string projections_id;
  std::string all_id;
  const std::vector<float> plain = ScoreFixture({}, &plain_id);
  const std::vector<float> projections = ScoreFixture({.fp8_projections = true}, &projections_id);
  const std::vector<float> all =
      ScoreFixture({.fp8_projections = true, .fp8_embeddings = true}, &all_id);
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

}  // namespace
}  // namespace hgrn2
