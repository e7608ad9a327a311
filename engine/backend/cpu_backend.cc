// The CPU backend: host memory and the float32 reference ops of kernels/reference.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/backend/layer_params.h"
#include "engine/backend/op_checks.h"
#include "engine/base/status_macros.h"
#include "engine/sampling/sampler.h"
#include "kernels/fp8_e4m3.h"
#include "kernels/gather_rows.h"
#include "kernels/gemm.h"
#include "kernels/hgrn2_prefill.h"
#include "kernels/hgrn2_step.h"
#include "kernels/log_softmax_gather.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"

namespace hgrn2 {

namespace {

absl::Status CheckF32(const DeviceTensor& t, absl::string_view what) {
  return CheckTensor(t, DType::kF32, what);
}

absl::Status CheckShape(const DeviceTensor& t, int64_t rows, int64_t cols, absl::string_view what) {
  return hgrn2::CheckShape(t, DType::kF32, rows, cols, what);
}

absl::Status CheckLayer(const Hgrn2LayerOp& layer, const DeviceTensor& qfi,
                        const DeviceTensor& out) {
  HGRN2_RETURN_IF_ERROR(hgrn2::CheckLayer(layer, DType::kF32, qfi, out));
  if (layer.states.state_bf16 != nullptr) {
    return absl::InvalidArgumentError("hgrn2 layer: the CPU backend keeps float32 states only");
  }
  return absl::OkStatus();
}

// out = x · weightᵀ for F8_E4M3 weights, widened to float32 a block of rows at a time (so only the
// codes stay resident): each widened value is E4M3ToFloat(code) · scale, exactly what
// DequantizeFp8Rows gives, and GemmReference sums every output alone, so the result is bitwise
// that of the same model with the rounded weights stored in float32.
void GemmFp8(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& out) {
  constexpr int64_t kBlockRows = 64;
  static const std::array<float, 256> decoded = [] {
    std::array<float, 256> table;
    for (int code = 0; code < 256; ++code)
      table[code] = kernels::E4M3ToFloat(static_cast<uint8_t>(code));
    return table;
  }();
  std::vector<float> block(static_cast<size_t>(std::min(kBlockRows, weight.rows) * weight.cols));
  for (int64_t n0 = 0; n0 < weight.rows; n0 += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, weight.rows - n0);
    for (int64_t r = 0; r < rows; ++r) {
      const auto* codes = weight.As<const uint8_t>() + (n0 + r) * weight.row_stride;
      const float scale = weight.scales[n0 + r];
      float* widened = block.data() + r * weight.cols;
      for (int64_t c = 0; c < weight.cols; ++c) widened[c] = decoded[codes[c]] * scale;
    }
    kernels::GemmReference({.m = x.rows,
                            .n = rows,
                            .k = x.cols,
                            .a = x.As<const float>(),
                            .a_stride_row = x.row_stride,
                            .b = block.data(),
                            .b_stride_row = weight.cols,
                            .c = out.As<float>() + n0,
                            .c_stride_row = out.row_stride});
  }
}

// The slot indices are host-readable here (device memory is host memory on this backend).
absl::Status CheckSlots(const Hgrn2LayerOp& layer, const int32_t* slots, int64_t count) {
  for (int64_t b = 0; b < count; ++b) {
    if (slots[b] < 0 || slots[b] >= layer.states.num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("hgrn2 layer: slot ", slots[b],
                                                     " outside [0, ", layer.states.num_slots, ")"));
    }
  }
  return absl::OkStatus();
}

class CpuBackend final : public Backend {
 public:
  absl::string_view name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }
  // Measured with bench/cpu_hgrn2_run.sh: token by token prefills 1.4-1.5x faster here
  // (bench/RESULTS.md).
  int32_t preferred_prefill_chunk_size() const override { return 0; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    if (bytes == 0) return DeviceBuffer();
    // 64-byte alignment for vector loads; calloc-like zeroing.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* data = std::aligned_alloc(64, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    }
    std::memset(data, 0, rounded);
    return DeviceBuffer(this, data, bytes);
  }
  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override {
    if (bytes == 0) return HostBuffer();
    void* data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " host bytes"));
    }
    return HostBuffer(this, data, bytes);
  }
  SharedHostAllocator shared_host_allocator() const override {
    return [](size_t bytes) -> absl::StatusOr<std::shared_ptr<std::byte>> {
      void* data = std::aligned_alloc(64, std::max<size_t>(1, (bytes + 63) / 64) * 64);
      if (data == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " host bytes"));
      }
      return std::shared_ptr<std::byte>(static_cast<std::byte*>(data),
                                        [](std::byte* released) { std::free(released); });
    };
  }
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Fill(void* dst, uint8_t byte, size_t bytes) override {
    if (bytes > 0) std::memset(dst, byte, bytes);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status GatherRows(const DeviceTensor& table, const int32_t* indices,
                          DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(table, "gather table"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, out.rows, table.cols, "gather out"));
    for (int64_t r = 0; r < out.rows; ++r) {
      if (indices[r] < 0 || indices[r] >= table.rows) {
        return absl::InvalidArgumentError(
            absl::StrCat("gather: index ", indices[r], " outside [0, ", table.rows, ")"));
      }
    }
    kernels::GatherRowsReference({.rows = out.rows,
                                  .cols = out.cols,
                                  .table = table.As<const float>(),
                                  .table_stride_row = table.row_stride,
                                  .table_rows = table.rows,
                                  .indices = indices,
                                  .out = out.As<float>(),
                                  .out_stride_row = out.row_stride});
    return absl::OkStatus();
  }

  absl::Status RmsNorm(const DeviceTensor& x, const DeviceTensor& weight, float eps,
                       DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(x, "rmsnorm x"));
    HGRN2_RETURN_IF_ERROR(CheckShape(weight, 1, x.cols, "rmsnorm weight"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, x.rows, x.cols, "rmsnorm out"));
    kernels::RmsNormReference({.rows = x.rows,
                               .cols = x.cols,
                               .x = x.As<const float>(),
                               .x_stride_row = x.row_stride,
                               .weight = weight.As<const float>(),
                               .out = out.As<float>(),
                               .out_stride_row = out.row_stride,
                               .eps = eps});
    return absl::OkStatus();
  }

  absl::Status AddRmsNorm(DeviceTensor residual, const DeviceTensor& delta,
                          const DeviceTensor& weight, float eps, DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(residual, "add-rmsnorm residual"));
    HGRN2_RETURN_IF_ERROR(CheckShape(delta, residual.rows, residual.cols, "add-rmsnorm delta"));
    HGRN2_RETURN_IF_ERROR(CheckShape(weight, 1, residual.cols, "add-rmsnorm weight"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, residual.rows, residual.cols, "add-rmsnorm out"));
    kernels::RmsNormReference({.rows = residual.rows,
                               .cols = residual.cols,
                               .x = delta.As<const float>(),
                               .x_stride_row = delta.row_stride,
                               .residual = residual.As<float>(),
                               .residual_stride_row = residual.row_stride,
                               .weight = weight.As<const float>(),
                               .out = out.As<float>(),
                               .out_stride_row = out.row_stride,
                               .eps = eps});
    return absl::OkStatus();
  }

  absl::Status Gemm(const DeviceTensor& x, const DeviceTensor& weight, DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(x, "gemm x"));
    HGRN2_RETURN_IF_ERROR(CheckGemmWeight(weight, DType::kF32, x.cols));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, x.rows, weight.rows, "gemm out"));
    if (weight.dtype == DType::kF8E4M3) {
      GemmFp8(x, weight, out);
      return absl::OkStatus();
    }
    kernels::GemmReference({.m = x.rows,
                            .n = weight.rows,
                            .k = x.cols,
                            .a = x.As<const float>(),
                            .a_stride_row = x.row_stride,
                            .b = weight.As<const float>(),
                            .b_stride_row = weight.row_stride,
                            .c = out.As<float>(),
                            .c_stride_row = out.row_stride});
    return absl::OkStatus();
  }

  absl::Status SwiGlu(const DeviceTensor& gate_up, DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(gate_up, "swiglu gate_up"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, gate_up.rows, gate_up.cols / 2, "swiglu out"));
    if (gate_up.cols % 2 != 0) return absl::InvalidArgumentError("swiglu: odd gate_up width");
    kernels::SwiGluReference({.rows = out.rows,
                              .cols = out.cols,
                              .gate_up = gate_up.As<const float>(),
                              .gate_up_stride_row = gate_up.row_stride,
                              .out = out.As<float>(),
                              .out_stride_row = out.row_stride});
    return absl::OkStatus();
  }

  absl::Status Hgrn2Step(const Hgrn2LayerOp& layer, const int32_t* slots, const DeviceTensor& qfi,
                         DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckLayer(layer, qfi, out));
    HGRN2_RETURN_IF_ERROR(CheckSlots(layer, slots, qfi.rows));
    kernels::Hgrn2StepReference({.batch = static_cast<int32_t>(qfi.rows),
                                 .layer = LayerParams<float>(layer, slots, qfi, out)});
    return absl::OkStatus();
  }

  absl::Status Hgrn2Prefill(const Hgrn2LayerOp& layer, int32_t num_seqs, const int32_t* slots,
                            const int32_t* seq_offsets, int32_t chunk_size, const DeviceTensor& qfi,
                            DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckLayer(layer, qfi, out));
    if (num_seqs < 0 || seq_offsets[0] != 0 || seq_offsets[num_seqs] != qfi.rows) {
      return absl::InvalidArgumentError("hgrn2 prefill: sequence offsets do not cover the tokens");
    }
    HGRN2_RETURN_IF_ERROR(CheckSlots(layer, slots, num_seqs));
    for (int32_t b = 0; b < num_seqs; ++b) {
      if (seq_offsets[b + 1] < seq_offsets[b]) {
        return absl::InvalidArgumentError("hgrn2 prefill: sequence offsets decrease");
      }
    }
    kernels::Hgrn2PrefillReference({.num_seqs = num_seqs,
                                    .seq_offsets = seq_offsets,
                                    .chunk_size = chunk_size,
                                    .layer = LayerParams<float>(layer, slots, qfi, out)});
    return absl::OkStatus();
  }

  absl::Status LogSoftmaxGather(const DeviceTensor& logits, const int32_t* targets, float* out,
                                float* out_max) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(logits, "log-softmax logits"));
    for (int64_t r = 0; r < logits.rows; ++r) {
      if (targets[r] < 0 || targets[r] >= logits.cols) {
        return absl::InvalidArgumentError(
            absl::StrCat("log-softmax: target ", targets[r], " outside [0, ", logits.cols, ")"));
      }
    }
    kernels::LogSoftmaxGatherReference({.rows = logits.rows,
                                        .cols = logits.cols,
                                        .logits = logits.As<const float>(),
                                        .logits_stride_row = logits.row_stride,
                                        .targets = targets,
                                        .out = out,
                                        .out_max = out_max});
    return absl::OkStatus();
  }

  absl::Status Sample(const DeviceTensor& logits, absl::Span<Sampler* const> samplers,
                      absl::Span<SampledToken> out) override {
    HGRN2_RETURN_IF_ERROR(CheckF32(logits, "sample logits"));
    if (static_cast<int64_t>(samplers.size()) != logits.rows || out.size() != samplers.size()) {
      return absl::InvalidArgumentError("sample: one sampler and one output per row expected");
    }
    for (int64_t r = 0; r < logits.rows; ++r) {
      if (samplers[r]->vocab_size() > logits.cols) {
        return absl::InvalidArgumentError(absl::StrCat("sample: row ", r, " has ", logits.cols,
                                                       " logits for a vocabulary of ",
                                                       samplers[r]->vocab_size()));
      }
      const float* row = logits.As<const float>() + r * logits.row_stride;
      out[r] = samplers[r]->Sample(absl::MakeConstSpan(row, logits.cols));
    }
    return absl::OkStatus();
  }

 protected:
  void Release(void* data, size_t /*bytes*/) override { std::free(data); }
  void ReleaseHost(void* data, size_t /*bytes*/) override { std::free(data); }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace hgrn2
