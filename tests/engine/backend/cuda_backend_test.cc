// Every op of the CUDA backend against the CPU backend (the float32 reference) at awkward sizes,
// in float32 and bf16, with states addressed through random slots; bystander slots must stay
// bit-identical. Skips itself where there is no CUDA device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/base/dtype.h"
#include "engine/model/fp8_weights.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2 {
namespace {

using ::hgrn2::testing::RandomNormal;
using ::hgrn2::testing::RelativeL2Error;

// Relative L2 error allowed against the float32 reference: float32 kernels differ only in
// summation order; bf16 rounds every stored activation (8 mantissa bits).
double Tolerance(DType dtype) { return dtype == DType::kF32 ? 2e-5 : 2e-2; }

// A tensor on one backend, uploaded from host floats in that backend's dtype.
struct Uploaded {
  DeviceBuffer buffer;
  DeviceTensor tensor;
};

Uploaded Upload(Backend& backend, const std::vector<float>& values, int64_t rows, int64_t cols,
                DType dtype) {
  Uploaded u;
  const size_t bytes = values.size() * DTypeSize(dtype);
  u.buffer = *backend.Allocate(bytes);
  std::vector<std::byte> encoded(bytes);
  EXPECT_TRUE(ConvertFromFloat(values.data(), values.size(), dtype, encoded.data()).ok());
  EXPECT_TRUE(backend.CopyToDevice(u.buffer.data(), encoded.data(), bytes).ok());
  u.tensor = u.buffer.Matrix(dtype, rows, cols);
  return u;
}

Uploaded Poisoned(Backend& backend, int64_t rows, int64_t cols, DType dtype) {
  Uploaded u;
  u.buffer = *backend.Allocate(static_cast<size_t>(rows * cols) * DTypeSize(dtype));
  EXPECT_TRUE(backend.Fill(u.buffer.data(), 0xFF, u.buffer.size()).ok());  // NaN in every dtype
  u.tensor = u.buffer.Matrix(dtype, rows, cols);
  return u;
}

std::vector<float> Download(Backend& backend, const DeviceTensor& t) {
  std::vector<std::byte> bytes(static_cast<size_t>(t.rows * t.cols) * DTypeSize(t.dtype));
  EXPECT_TRUE(backend.CopyToHost(bytes.data(), t.data, bytes.size()).ok());
  std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
  EXPECT_TRUE(ConvertToFloat(t.dtype, bytes.data(), out.size(), out.data()).ok());
  return out;
}

// Values as the bf16 path sees them, so both sides start from the same inputs.
std::vector<float> Rounded(std::vector<float> values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  EXPECT_TRUE(ConvertFromFloat(values.data(), values.size(), dtype, bytes.data()).ok());
  EXPECT_TRUE(ConvertToFloat(dtype, bytes.data(), values.size(), values.data()).ok());
  return values;
}

void ExpectAllFinite(const std::vector<float>& values, const std::string& what) {
  const auto bad =
      std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
  EXPECT_EQ(bad, values.end()) << what << ": element " << (bad - values.begin())
                               << " not written or not finite";
}

class CudaBackendTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend({.compute_dtype = GetParam()});
    if (absl::IsUnavailable(cuda.status())) GTEST_SKIP() << cuda.status();
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    cuda_ = *std::move(cuda);
    cpu_ = MakeCpuBackend();
  }
  DType dtype() const { return GetParam(); }

  std::unique_ptr<Backend> cuda_;
  std::unique_ptr<Backend> cpu_;
};

TEST_P(CudaBackendTest, RowOpsMatchReference) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 7}, {5, 300}, {33, 2048}}) {
    SCOPED_TRACE(absl::StrCat("rows ", rows, " cols ", cols));
    const auto x = Rounded(RandomNormal(rows * cols, 1), dtype());
    const auto delta = Rounded(RandomNormal(rows * cols, 2), dtype());
    const auto weight = Rounded(RandomNormal(cols, 3, 0.5f), dtype());
    // RmsNorm.
    {
      Uploaded gx = Upload(*cuda_, x, rows, cols, dtype()),
               gw = Upload(*cuda_, weight, 1, cols, dtype());
      Uploaded cx = Upload(*cpu_, x, rows, cols, DType::kF32),
               cw = Upload(*cpu_, weight, 1, cols, DType::kF32);
      Uploaded gout = Poisoned(*cuda_, rows, cols, dtype()),
               cout = Poisoned(*cpu_, rows, cols, DType::kF32);
      ASSERT_TRUE(cuda_->RmsNorm(gx.tensor, gw.tensor, 1e-6f, gout.tensor).ok());
      ASSERT_TRUE(cpu_->RmsNorm(cx.tensor, cw.tensor, 1e-6f, cout.tensor).ok());
      const auto got = Download(*cuda_, gout.tensor);
      ExpectAllFinite(got, "rmsnorm");
      EXPECT_LT(RelativeL2Error(got, Download(*cpu_, cout.tensor)), Tolerance(dtype()));
      // AddRmsNorm: residual updated in place, then normalised.
      Uploaded gd = Upload(*cuda_, delta, rows, cols, dtype()),
               cd = Upload(*cpu_, delta, rows, cols, DType::kF32);
      ASSERT_TRUE(cuda_->AddRmsNorm(gx.tensor, gd.tensor, gw.tensor, 1e-5f, gout.tensor).ok());
      ASSERT_TRUE(cpu_->AddRmsNorm(cx.tensor, cd.tensor, cw.tensor, 1e-5f, cout.tensor).ok());
      EXPECT_LT(RelativeL2Error(Download(*cuda_, gx.tensor), Download(*cpu_, cx.tensor)),
                Tolerance(dtype()));
      EXPECT_LT(RelativeL2Error(Download(*cuda_, gout.tensor), Download(*cpu_, cout.tensor)),
                Tolerance(dtype()));
    }
    // SwiGlu over [rows, 2·cols].
    {
      const auto gate_up = Rounded(RandomNormal(rows * 2 * cols, 4, 2.0f), dtype());
      Uploaded g = Upload(*cuda_, gate_up, rows, 2 * cols, dtype()),
               c = Upload(*cpu_, gate_up, rows, 2 * cols, DType::kF32);
      Uploaded gout = Poisoned(*cuda_, rows, cols, dtype()),
               cout = Poisoned(*cpu_, rows, cols, DType::kF32);
      ASSERT_TRUE(cuda_->SwiGlu(g.tensor, gout.tensor).ok());
      ASSERT_TRUE(cpu_->SwiGlu(c.tensor, cout.tensor).ok());
      const auto got = Download(*cuda_, gout.tensor);
      ExpectAllFinite(got, "swiglu");
      EXPECT_LT(RelativeL2Error(got, Download(*cpu_, cout.tensor)), Tolerance(dtype()));
    }
    // GatherRows with repeated and out-of-order indices.
    {
      std::vector<int32_t> indices(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) indices[r] = static_cast<int32_t>((r * 7 + 3) % rows);
      DeviceBuffer gi = *cuda_->Allocate(indices.size() * 4);
      ASSERT_TRUE(cuda_->CopyToDevice(gi.data(), indices.data(), indices.size() * 4).ok());
      Uploaded g = Upload(*cuda_, x, rows, cols, dtype());
      Uploaded gout = Poisoned(*cuda_, rows, cols, dtype());
      ASSERT_TRUE(cuda_->GatherRows(g.tensor, static_cast<int32_t*>(gi.data()), gout.tensor).ok());
      const auto got = Download(*cuda_, gout.tensor);
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_TRUE(std::equal(got.begin() + r * cols, got.begin() + (r + 1) * cols,
                               x.begin() + indices[r] * cols))
            << "row " << r;
      }
    }
  }
}

TEST_P(CudaBackendTest, GemmMatchesReference) {
  for (const auto& [m, n, k] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 33, 17}, {7, 300, 129}, {64, 512, 256}}) {
    SCOPED_TRACE(absl::StrCat("m ", m, " n ", n, " k ", k));
    const auto a = Rounded(RandomNormal(m * k, 5), dtype());
    const auto b = Rounded(RandomNormal(n * k, 6), dtype());
    Uploaded ga = Upload(*cuda_, a, m, k, dtype()), gb = Upload(*cuda_, b, n, k, dtype());
    Uploaded ca = Upload(*cpu_, a, m, k, DType::kF32), cb = Upload(*cpu_, b, n, k, DType::kF32);
    Uploaded cout = Poisoned(*cpu_, m, n, DType::kF32);
    ASSERT_TRUE(cpu_->Gemm(ca.tensor, cb.tensor, cout.tensor).ok());
    const auto expected = Download(*cpu_, cout.tensor);
    for (DType out_dtype : {dtype(), DType::kF32}) {
      Uploaded gout = Poisoned(*cuda_, m, n, out_dtype);
      ASSERT_TRUE(cuda_->Gemm(ga.tensor, gb.tensor, gout.tensor).ok());
      const auto got = Download(*cuda_, gout.tensor);
      ExpectAllFinite(got, "gemm");
      EXPECT_LT(RelativeL2Error(got, expected),
                out_dtype == DType::kF32 ? 1e-5 : Tolerance(dtype()));
    }
  }
}

// FP8 weights (codes and row scales) on both backends: through the small-batch GEMV up to 16
// rows and through the widened weight and cuBLAS beyond, and with k that the GEMV's 16-code loads
// cannot take.
TEST_P(CudaBackendTest, Fp8GemmMatchesReference) {
  ASSERT_TRUE(cuda_->ReserveFp8Widening(300 * 2064).ok());
  for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 33, 2064},
                                {5, 300, 2064},
                                {16, 300, 512},
                                {17, 300, 512},
                                {64, 257, 2064},
                                {3, 40, 24}}) {
    SCOPED_TRACE(absl::StrCat("m ", m, " n ", n, " k ", k));
    const auto a = Rounded(RandomNormal(m * k, 5), dtype());
    const auto b = RandomNormal(n * k, 6, 0.05f);
    const absl::StatusOr<Fp8Rows> fp8 = QuantizeFp8Rows(b, n, k);
    ASSERT_TRUE(fp8.ok()) << fp8.status();
    const std::vector<uint8_t>& codes = fp8->codes;
    const std::vector<float>& scales = fp8->scales;
    auto upload_fp8 = [&](Backend& backend, std::vector<DeviceBuffer>& keep) {
      DeviceBuffer code_buffer = *backend.Allocate(codes.size());
      DeviceBuffer scale_buffer = *backend.Allocate(scales.size() * sizeof(float));
      EXPECT_TRUE(backend.CopyToDevice(code_buffer.data(), codes.data(), codes.size()).ok());
      EXPECT_TRUE(backend.CopyToDevice(scale_buffer.data(), scales.data(), scales.size() * 4).ok());
      DeviceTensor t = code_buffer.Matrix(DType::kF8E4M3, n, k);
      t.scales = static_cast<const float*>(scale_buffer.data());
      keep.push_back(std::move(code_buffer));
      keep.push_back(std::move(scale_buffer));
      return t;
    };
    std::vector<DeviceBuffer> keep;
    const DeviceTensor gb = upload_fp8(*cuda_, keep);
    const DeviceTensor cb = upload_fp8(*cpu_, keep);
    Uploaded ga = Upload(*cuda_, a, m, k, dtype());
    Uploaded ca = Upload(*cpu_, a, m, k, DType::kF32);
    Uploaded cout = Poisoned(*cpu_, m, n, DType::kF32);
    ASSERT_TRUE(cpu_->Gemm(ca.tensor, cb, cout.tensor).ok());
    const auto expected = Download(*cpu_, cout.tensor);
    for (DType out_dtype : {dtype(), DType::kF32}) {
      Uploaded gout = Poisoned(*cuda_, m, n, out_dtype);
      const absl::Status ran = cuda_->Gemm(ga.tensor, gb, gout.tensor);
      ASSERT_TRUE(ran.ok()) << ran;
      const auto got = Download(*cuda_, gout.tensor);
      ExpectAllFinite(got, "gemm fp8");
      // Exact weights in float32 (the GEMV, or widened to F32); widened to bf16 they round.
      const bool exact_weights = dtype() == DType::kF32 || (m <= 16 && k % 16 == 0);
      EXPECT_LT(RelativeL2Error(got, expected),
                out_dtype == DType::kF32 && exact_weights ? 1e-5 : Tolerance(dtype()));
    }
  }
}

TEST_P(CudaBackendTest, LogSoftmaxGatherMatchesReference) {
  const int64_t rows = 5, cols = 32001;
  const auto logits = RandomNormal(rows * cols, 7, 4.0f);
  std::vector<int32_t> targets = {0, 32000, 17, 9999, 5};
  // Row 3's target holds its largest logit.
  auto peaked = logits;
  peaked[3 * cols + 9999] = 30.0f;
  Uploaded g = Upload(*cuda_, peaked, rows, cols, DType::kF32);
  DeviceBuffer gt = *cuda_->Allocate(rows * 4), gout = *cuda_->Allocate(rows * 4),
               gmax = *cuda_->Allocate(rows * 4);
  ASSERT_TRUE(cuda_->CopyToDevice(gt.data(), targets.data(), rows * 4).ok());
  ASSERT_TRUE(cuda_
                  ->LogSoftmaxGather(g.tensor, static_cast<int32_t*>(gt.data()),
                                     static_cast<float*>(gout.data()),
                                     static_cast<float*>(gmax.data()))
                  .ok());
  std::vector<float> got(rows), got_max(rows), expected(rows), expected_max(rows);
  ASSERT_TRUE(cuda_->CopyToHost(got.data(), gout.data(), rows * 4).ok());
  ASSERT_TRUE(cuda_->CopyToHost(got_max.data(), gmax.data(), rows * 4).ok());
  Uploaded c = Upload(*cpu_, peaked, rows, cols, DType::kF32);
  ASSERT_TRUE(
      cpu_->LogSoftmaxGather(c.tensor, targets.data(), expected.data(), expected_max.data()).ok());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NEAR(got[r], expected[r], 1e-5) << "row " << r;
    EXPECT_NEAR(got_max[r], expected_max[r], 1e-5) << "row " << r;
    EXPECT_EQ(got[r] == got_max[r], r == 3) << "row " << r;
  }
}

// The recurrence ops over a pool of slots. Sizes: heads, dk, dv, conv size.
struct LayerShape {
  int32_t heads, key_dim, value_dim, conv_size;
  bool lower_bound;
};

class Hgrn2OpTest : public CudaBackendTest {
 protected:
  static constexpr int32_t kSlots = 9;

  // Fills both pools with the same random states and conv windows.
  void MakeLayer(const LayerShape& shape) {
    shape_ = shape;
    const int64_t qf = int64_t{shape.heads} * shape.key_dim;
    const int64_t vw = int64_t{shape.heads} * shape.value_dim;
    channels_ = 2 * qf + vw;
    state_floats_ = int64_t{shape.heads} * shape.value_dim * shape.key_dim;
    conv_floats_ = channels_ * shape.conv_size;
    const auto states = RandomNormal(kSlots * (state_floats_ + conv_floats_), 8, 0.5f);
    const auto conv_weight =
        Rounded(RandomNormal(std::max<int64_t>(1, channels_ * shape.conv_size), 9, 0.5f), dtype());
    std::vector<float> lower(static_cast<size_t>(qf));
    std::mt19937 rng(10);
    for (float& v : lower) v = std::uniform_real_distribution<float>(0.0f, 0.9f)(rng);
    for (int side = 0; side < 2; ++side) {
      Backend& b = side == 0 ? *cuda_ : *cpu_;
      Side& s = sides_[side];
      s.pool = Upload(b, states, kSlots, state_floats_ + conv_floats_, DType::kF32);
      s.conv = Upload(b, conv_weight, channels_, std::max(1, shape.conv_size),
                      side == 0 ? dtype() : DType::kF32);
      s.lower = Upload(b, lower, 1, qf, DType::kF32);
      s.op = Hgrn2LayerOp{};
      s.op.num_heads = shape.heads;
      s.op.key_dim = shape.key_dim;
      s.op.value_dim = shape.value_dim;
      s.op.conv_size = shape.conv_size;
      if (shape.conv_size > 0) s.op.conv_weight = s.conv.tensor.Rows(0, channels_);
      if (shape.conv_size > 0) s.op.conv_weight.cols = shape.conv_size;
      s.op.lower_bound = shape.lower_bound ? s.lower.tensor.As<const float>() : nullptr;
      auto* base = s.pool.tensor.As<float>();
      const int64_t stride = state_floats_ + conv_floats_;
      s.op.states = {.num_slots = kSlots,
                     .state = base,
                     .state_stride_slot = stride,
                     .conv_state = shape.conv_size > 0 ? base + state_floats_ : nullptr,
                     .conv_state_stride_slot = stride};
    }
  }

  // Compares every slot's state and window on both sides (all slots, so bystanders too).
  void ExpectSameStates(const std::vector<int32_t>& touched) {
    const auto got = Download(*cuda_, sides_[0].pool.tensor);
    const auto expected = Download(*cpu_, sides_[1].pool.tensor);
    const int64_t stride = state_floats_ + conv_floats_;
    for (int32_t slot = 0; slot < kSlots; ++slot) {
      const bool in_batch = std::find(touched.begin(), touched.end(), slot) != touched.end();
      const auto first = got.begin() + slot * stride;
      const auto ref = expected.begin() + slot * stride;
      if (!in_batch) {
        EXPECT_TRUE(std::equal(first, first + stride, ref))
            << "bystander slot " << slot << " changed";
        continue;
      }
      const std::vector<float> state(first, first + state_floats_),
          ref_state(ref, ref + state_floats_);
      EXPECT_LT(RelativeL2Error(state, ref_state), Tolerance(dtype())) << "state of slot " << slot;
      if (conv_floats_ > 0) {
        const std::vector<float> win(first + state_floats_, first + stride),
            ref_win(ref + state_floats_, ref + stride);
        EXPECT_LT(RelativeL2Error(win, ref_win), Tolerance(dtype()))
            << "conv window of slot " << slot;
      }
    }
  }

  struct Side {
    Uploaded pool, conv, lower;
    Hgrn2LayerOp op;
  };
  LayerShape shape_{};
  int64_t channels_ = 0, state_floats_ = 0, conv_floats_ = 0;
  Side sides_[2];
};

const LayerShape kShapes[] = {
    {2, 15, 15, 0, true},    // dk not a multiple of 4
    {3, 32, 20, 4, true},    // short conv, dv < 32
    {2, 128, 128, 0, true},  // the 1.3B model's head
    {1, 64, 100, 3, false},  // dv not a multiple of the row block
    {2, 130, 40, 2, true},   // dk above 128
    {3, 64, 36, 0, true},    // prefill's fast path, dv not a multiple of its 8 rows
    {1, 12, 20, 0, false},   // prefill's fast path with a small dk
    {16, 64, 128, 0, true},  // many heads
};

TEST_P(Hgrn2OpTest, DecodeStepMatchesReference) {
  for (const LayerShape& shape : kShapes) {
    SCOPED_TRACE(absl::StrCat("H ", shape.heads, " dk ", shape.key_dim, " dv ", shape.value_dim,
                              " K ", shape.conv_size));
    MakeLayer(shape);
    const std::vector<int32_t> slots = {6, 2, 7, 0};
    const int64_t rows = static_cast<int64_t>(slots.size());
    const auto qfi = Rounded(RandomNormal(rows * channels_, 11), dtype());
    DeviceBuffer gslots = *cuda_->Allocate(rows * 4);
    ASSERT_TRUE(cuda_->CopyToDevice(gslots.data(), slots.data(), rows * 4).ok());
    Uploaded gq = Upload(*cuda_, qfi, rows, channels_, dtype()),
             cq = Upload(*cpu_, qfi, rows, channels_, DType::kF32);
    const int64_t vw = int64_t{shape.heads} * shape.value_dim;
    Uploaded gout = Poisoned(*cuda_, rows, vw, dtype()),
             cout = Poisoned(*cpu_, rows, vw, DType::kF32);
    // Two steps, so the second one reads the windows and states the first one wrote.
    for (int step = 0; step < 2; ++step) {
      ASSERT_TRUE(cuda_
                      ->Hgrn2Step(sides_[0].op, static_cast<int32_t*>(gslots.data()), gq.tensor,
                                  gout.tensor)
                      .ok());
      ASSERT_TRUE(cpu_->Hgrn2Step(sides_[1].op, slots.data(), cq.tensor, cout.tensor).ok());
    }
    const auto got = Download(*cuda_, gout.tensor);
    ExpectAllFinite(got, "step out");
    EXPECT_LT(RelativeL2Error(got, Download(*cpu_, cout.tensor)), Tolerance(dtype()));
    ExpectSameStates(slots);
  }
}

TEST_P(Hgrn2OpTest, Bf16StatesFollowTheFloatReference) {
  // States kept in bf16 on the device (no short conv, dk % 4 == 0, dk <= 128): a ragged prefill
  // then three decode steps, against the CPU on float32 states starting from the same values.
  for (const LayerShape& shape :
       {LayerShape{2, 128, 128, 0, true}, LayerShape{3, 64, 36, 0, true},
        LayerShape{1, 12, 20, 0, false}, LayerShape{16, 64, 128, 0, true}}) {
    SCOPED_TRACE(absl::StrCat("H ", shape.heads, " dk ", shape.key_dim, " dv ", shape.value_dim));
    MakeLayer(shape);
    // The device pool in bf16, from the same (rounded) initial states as the CPU's.
    const std::vector<float> initial = Download(*cpu_, sides_[1].pool.tensor);
    const std::vector<float> rounded = Rounded(initial, DType::kBF16);
    Uploaded cpu_pool = Upload(*cpu_, rounded, kSlots, state_floats_, DType::kF32);
    Uploaded gpu_pool = Upload(*cuda_, rounded, kSlots, state_floats_, DType::kBF16);
    Hgrn2LayerOp gpu_op = sides_[0].op, cpu_op = sides_[1].op;
    gpu_op.states = {.num_slots = kSlots,
                     .state_bf16 = static_cast<uint16_t*>(gpu_pool.buffer.data()),
                     .state_stride_slot = state_floats_};
    cpu_op.states = {.num_slots = kSlots,
                     .state = cpu_pool.tensor.As<float>(),
                     .state_stride_slot = state_floats_};
    const std::vector<int32_t> lengths = {1, 65, 300};
    const std::vector<int32_t> slots = {5, 0, 7};
    std::vector<int32_t> offsets = {0};
    for (int32_t n : lengths) offsets.push_back(offsets.back() + n);
    const int32_t seqs = static_cast<int32_t>(lengths.size());
    const int64_t tokens = offsets.back();
    const int64_t vw = int64_t{shape.heads} * shape.value_dim;
    const auto qfi = Rounded(RandomNormal(tokens * channels_, 17), dtype());
    DeviceBuffer gslots = *cuda_->Allocate(seqs * 4), goffsets = *cuda_->Allocate((seqs + 1) * 4);
    ASSERT_TRUE(cuda_->CopyToDevice(gslots.data(), slots.data(), seqs * 4).ok());
    ASSERT_TRUE(cuda_->CopyToDevice(goffsets.data(), offsets.data(), (seqs + 1) * 4).ok());
    Uploaded gq = Upload(*cuda_, qfi, tokens, channels_, dtype()),
             cq = Upload(*cpu_, qfi, tokens, channels_, DType::kF32);
    Uploaded gout = Poisoned(*cuda_, tokens, vw, dtype()),
             cout = Poisoned(*cpu_, tokens, vw, DType::kF32);
    ASSERT_TRUE(cuda_
                    ->Hgrn2Prefill(gpu_op, seqs, static_cast<int32_t*>(gslots.data()),
                                   static_cast<int32_t*>(goffsets.data()), 0, gq.tensor,
                                   gout.tensor)
                    .ok());
    ASSERT_TRUE(
        cpu_->Hgrn2Prefill(cpu_op, seqs, slots.data(), offsets.data(), 0, cq.tensor, cout.tensor)
            .ok());
    EXPECT_LT(RelativeL2Error(Download(*cuda_, gout.tensor), Download(*cpu_, cout.tensor)), 2e-2);
    for (int step = 0; step < 3; ++step) {
      const DeviceTensor gstep = gq.tensor.Rows(step * seqs, seqs);
      const DeviceTensor cstep = cq.tensor.Rows(step * seqs, seqs);
      ASSERT_TRUE(cuda_
                      ->Hgrn2Step(gpu_op, static_cast<int32_t*>(gslots.data()), gstep,
                                  gout.tensor.Rows(0, seqs))
                      .ok());
      ASSERT_TRUE(cpu_->Hgrn2Step(cpu_op, slots.data(), cstep, cout.tensor.Rows(0, seqs)).ok());
    }
    EXPECT_LT(RelativeL2Error(Download(*cuda_, gout.tensor.Rows(0, seqs)),
                              Download(*cpu_, cout.tensor.Rows(0, seqs))),
              2e-2);
    const std::vector<float> got = Download(*cuda_, gpu_pool.tensor);
    const std::vector<float> want = Download(*cpu_, cpu_pool.tensor);
    for (int32_t slot = 0; slot < kSlots; ++slot) {
      const std::vector<float> g(got.begin() + slot * state_floats_,
                                 got.begin() + (slot + 1) * state_floats_);
      const std::vector<float> w(want.begin() + slot * state_floats_,
                                 want.begin() + (slot + 1) * state_floats_);
      if (std::find(slots.begin(), slots.end(), slot) == slots.end()) {
        EXPECT_EQ(g, std::vector<float>(rounded.begin() + slot * state_floats_,
                                        rounded.begin() + (slot + 1) * state_floats_))
            << "bystander slot " << slot << " changed";
      } else {
        EXPECT_LT(RelativeL2Error(g, w), 1e-2) << "state of slot " << slot;
      }
    }
  }
}

TEST_P(Hgrn2OpTest, PrefillMatchesReference) {
  for (const LayerShape& shape : kShapes) {
    SCOPED_TRACE(absl::StrCat("H ", shape.heads, " dk ", shape.key_dim, " dv ", shape.value_dim,
                              " K ", shape.conv_size));
    MakeLayer(shape);
    // One ragged batch: lengths 1, 15, 63, 64, 65, 300 in random slots (two slots untouched).
    const std::vector<int32_t> lengths = {1, 15, 63, 64, 65, 300};
    const std::vector<int32_t> slots = {4, 0, 8, 2, 5, 1};
    std::vector<int32_t> offsets = {0};
    for (int32_t n : lengths) offsets.push_back(offsets.back() + n);
    const int64_t tokens = offsets.back();
    const auto qfi = Rounded(RandomNormal(tokens * channels_, 12), dtype());
    const int32_t seqs = static_cast<int32_t>(lengths.size());
    DeviceBuffer gslots = *cuda_->Allocate(seqs * 4), goffsets = *cuda_->Allocate((seqs + 1) * 4);
    ASSERT_TRUE(cuda_->CopyToDevice(gslots.data(), slots.data(), seqs * 4).ok());
    ASSERT_TRUE(cuda_->CopyToDevice(goffsets.data(), offsets.data(), (seqs + 1) * 4).ok());
    Uploaded gq = Upload(*cuda_, qfi, tokens, channels_, dtype()),
             cq = Upload(*cpu_, qfi, tokens, channels_, DType::kF32);
    const int64_t vw = int64_t{shape.heads} * shape.value_dim;
    Uploaded gout = Poisoned(*cuda_, tokens, vw, dtype()),
             cout = Poisoned(*cpu_, tokens, vw, DType::kF32);
    ASSERT_TRUE(cuda_
                    ->Hgrn2Prefill(sides_[0].op, seqs, static_cast<int32_t*>(gslots.data()),
                                   static_cast<int32_t*>(goffsets.data()), 64, gq.tensor,
                                   gout.tensor)
                    .ok());
    ASSERT_TRUE(cpu_->Hgrn2Prefill(sides_[1].op, seqs, slots.data(), offsets.data(), 0, cq.tensor,
                                   cout.tensor)
                    .ok());
    const auto got = Download(*cuda_, gout.tensor);
    const auto expected = Download(*cpu_, cout.tensor);
    ExpectAllFinite(got, "prefill out");
    for (int32_t b = 0; b < seqs; ++b) {
      const std::vector<float> g(got.begin() + offsets[b] * vw, got.begin() + offsets[b + 1] * vw);
      const std::vector<float> e(expected.begin() + offsets[b] * vw,
                                 expected.begin() + offsets[b + 1] * vw);
      EXPECT_LT(RelativeL2Error(g, e), Tolerance(dtype()))
          << "sequence " << b << " of length " << lengths[b];
    }
    ExpectSameStates(slots);
  }
}

TEST_P(Hgrn2OpTest, UnsupportedSizesAreRefusedInTheKernelsWords) {
  // A key_dim above the kernels' limit, and bf16 states with a short conv: InvalidArgument with
  // the message of kernels/limits.h, nothing launched (the outputs stay poisoned).
  for (const bool bf16_states : {false, true}) {
    const LayerShape shape =
        bf16_states ? LayerShape{2, 32, 20, 4, true} : LayerShape{1, 300, 8, 0, false};
    MakeLayer(shape);
    Hgrn2LayerOp op = sides_[0].op;
    DeviceBuffer bf16_pool = *cuda_->Allocate(static_cast<size_t>(kSlots * state_floats_) * 2);
    if (bf16_states) {
      op.states.state = nullptr;
      op.states.state_bf16 = static_cast<uint16_t*>(bf16_pool.data());
    }
    const std::string message =
        bf16_states ? "conv_size must be exactly 0 with bf16 states for the CUDA kernels, got 4"
                    : "key_dim must be at most 256 for the CUDA kernels, got 300";
    const std::vector<int32_t> slots = {3};
    const std::vector<int32_t> offsets = {0, 1};
    DeviceBuffer gslots = *cuda_->Allocate(4), goffsets = *cuda_->Allocate(8);
    ASSERT_TRUE(cuda_->CopyToDevice(gslots.data(), slots.data(), 4).ok());
    ASSERT_TRUE(cuda_->CopyToDevice(goffsets.data(), offsets.data(), 8).ok());
    Uploaded qfi = Upload(*cuda_, RandomNormal(channels_, 14), 1, channels_, dtype());
    Uploaded out = Poisoned(*cuda_, 1, int64_t{shape.heads} * shape.value_dim, dtype());
    const absl::Status step =
        cuda_->Hgrn2Step(op, static_cast<int32_t*>(gslots.data()), qfi.tensor, out.tensor);
    EXPECT_TRUE(absl::IsInvalidArgument(step)) << step;
    EXPECT_EQ(step.message(), "hgrn2 step: " + message);
    const absl::Status prefill =
        cuda_->Hgrn2Prefill(op, 1, static_cast<int32_t*>(gslots.data()),
                            static_cast<int32_t*>(goffsets.data()), 0, qfi.tensor, out.tensor);
    EXPECT_TRUE(absl::IsInvalidArgument(prefill)) << prefill;
    EXPECT_EQ(prefill.message(), "hgrn2 prefill: " + message);
    for (float v : Download(*cuda_, out.tensor)) ASSERT_TRUE(std::isnan(v)) << "output written";
  }
}

TEST_P(CudaBackendTest, RecordedWorkReplaysWithNewInputs) {
  // A recorded copy-and-gather replays on the contents the inputs hold at replay time.
  const int64_t rows = 3, cols = 64;
  const auto table = RandomNormal(rows * cols, 13);
  Uploaded t = Upload(*cuda_, table, rows, cols, dtype());
  Uploaded out = Poisoned(*cuda_, rows, cols, dtype());
  DeviceBuffer indices = *cuda_->Allocate(rows * 4);
  for (const std::vector<int32_t>& order : {std::vector<int32_t>{0, 1, 2}, {2, 0, 1}}) {
    ASSERT_TRUE(cuda_->CopyToDevice(indices.data(), order.data(), rows * 4).ok());
    ASSERT_TRUE(cuda_
                    ->RunRecorded(this, 7,
                                  [&] {
                                    return cuda_->GatherRows(t.tensor,
                                                             static_cast<int32_t*>(indices.data()),
                                                             out.tensor);
                                  })
                    .ok());
    const auto got = Download(*cuda_, out.tensor);
    const auto rounded = Rounded(table, dtype());
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_TRUE(std::equal(got.begin() + r * cols, got.begin() + (r + 1) * cols,
                             rounded.begin() + order[r] * cols))
          << "row " << r;
    }
  }
}

TEST_P(CudaBackendTest, ForgottenRecordingsAreRecordedAgain) {
  // Two owners with the same key get their own recordings; after ForgetRecordings the owner's
  // next call records afresh with its new pointers.
  const int64_t rows = 2, cols = 32;
  const auto table = RandomNormal(rows * cols, 16);
  Uploaded t = Upload(*cuda_, table, rows, cols, dtype());
  DeviceBuffer indices = *cuda_->Allocate(rows * 4);
  const std::vector<int32_t> order = {1, 0};
  ASSERT_TRUE(cuda_->CopyToDevice(indices.data(), order.data(), rows * 4).ok());
  const int owner_a = 0, owner_b = 0;
  Uploaded first = Poisoned(*cuda_, rows, cols, dtype()),
           second = Poisoned(*cuda_, rows, cols, dtype());
  auto gather_into = [&](Uploaded& out) {
    return [&] {
      return cuda_->GatherRows(t.tensor, static_cast<int32_t*>(indices.data()), out.tensor);
    };
  };
  ASSERT_TRUE(cuda_->RunRecorded(&owner_a, 3, gather_into(first)).ok());
  ASSERT_TRUE(cuda_->RunRecorded(&owner_b, 3, gather_into(second)).ok());
  ExpectAllFinite(Download(*cuda_, second.tensor), "second owner's output");
  Uploaded third = Poisoned(*cuda_, rows, cols, dtype());
  cuda_->ForgetRecordings(&owner_a);
  ASSERT_TRUE(cuda_->RunRecorded(&owner_a, 3, gather_into(third)).ok());
  ExpectAllFinite(Download(*cuda_, third.tensor), "output after forgetting");
}

TEST_P(CudaBackendTest, PinnedHostMemoryRoundTrips) {
  absl::StatusOr<HostBuffer> host = cuda_->AllocateHost(1 << 20);
  ASSERT_TRUE(host.ok()) << host.status();
  auto* bytes = static_cast<uint8_t*>(host->data());
  for (int i = 0; i < (1 << 20); ++i) bytes[i] = static_cast<uint8_t>(i * 31);
  DeviceBuffer device = *cuda_->Allocate(1 << 20);
  ASSERT_TRUE(cuda_->CopyToDevice(device.data(), host->data(), 1 << 20).ok());
  std::memset(host->data(), 0, 1 << 20);  // the copy has completed: the source may be reused
  std::vector<uint8_t> back(1 << 20);
  ASSERT_TRUE(cuda_->CopyToHost(back.data(), device.data(), 1 << 20).ok());
  for (int i = 0; i < (1 << 20); ++i) ASSERT_EQ(back[i], static_cast<uint8_t>(i * 31)) << i;
}

std::string DTypeTestName(const ::testing::TestParamInfo<DType>& info) {
  return std::string(DTypeName(info.param));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaBackendTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeTestName);
INSTANTIATE_TEST_SUITE_P(Dtypes, Hgrn2OpTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeTestName);

}  // namespace
}  // namespace hgrn2
