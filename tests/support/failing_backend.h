// FailingBackend: a backend that forwards to another and fails the recurrence ops on demand, for
// tests of device failures (the engine's and the server's health probe).
#pragma once

#include <atomic>
#include <memory>
#include <utility>

#include "engine/backend/backend.h"

namespace hgrn2::testing {

// Buffers come from the inner backend (a CPU one by default). Thread-safety: the flags may be set
// from any thread.
class FailingBackend final : public Backend {
 public:
  explicit FailingBackend(std::unique_ptr<Backend> inner = MakeCpuBackend())
      : inner_(std::move(inner)) {}

  std::atomic<bool> fail_step{false};
  std::atomic<bool> fail_prefill{false};

  absl::string_view name() const override { return inner_->name(); }
  DType compute_dtype() const override { return inner_->compute_dtype(); }
  int32_t preferred_prefill_chunk_size() const override {
    return inner_->preferred_prefill_chunk_size();
  }
  // Buffers come from the inner backend and go back to it when released.
  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToDevice(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToHost(dst, src, bytes);
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyOnDevice(dst, src, bytes);
  }
  absl::Status Fill(void* dst, uint8_t byte, size_t bytes) override {
    return inner_->Fill(dst, byte, bytes);
  }
  absl::Status Synchronize() override { return inner_->Synchronize(); }
  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override {
    return inner_->AllocateHost(bytes);
  }
  SharedHostAllocator shared_host_allocator() const override {
    return inner_->shared_host_allocator();
  }
  absl::Status GatherRows(const DeviceTensor& table, const int32_t* indices,
                          DeviceTensor out) override {
    return inner_->GatherRows(table, indices, out);
  }
  absl::Status RmsNorm(const DeviceTensor& x, const DeviceTensor& weight, float eps,
                       DeviceTensor out) override {
    return inner_->RmsNorm(x, weight, eps, out);
  }
  absl::Status AddRmsNorm(DeviceTensor residual, const DeviceTensor& delta,
                          const DeviceTensor& weight, float eps, DeviceTensor out) override {
    return inner_->AddRmsNorm(residual, delta, weight, eps, out);
  }
  absl::Status Gemm(const DeviceTensor& x, const DeviceTensor& weight, DeviceTensor out) override {
    return inner_->Gemm(x, weight, out);
  }
  absl::Status SwiGlu(const DeviceTensor& gate_up, DeviceTensor out) override {
    return inner_->SwiGlu(gate_up, out);
  }
  absl::Status Hgrn2Step(const Hgrn2LayerOp& layer, const int32_t* slots, const DeviceTensor& qfi,
                         DeviceTensor out) override {
    if (fail_step) return absl::InternalError("injected step failure");
    return inner_->Hgrn2Step(layer, slots, qfi, out);
  }
  absl::Status Hgrn2Prefill(const Hgrn2LayerOp& layer, int32_t num_seqs, const int32_t* slots,
                            const int32_t* seq_offsets, int32_t chunk_size, const DeviceTensor& qfi,
                            DeviceTensor out) override {
    if (fail_prefill) return absl::InternalError("injected prefill failure");
    return inner_->Hgrn2Prefill(layer, num_seqs, slots, seq_offsets, chunk_size, qfi, out);
  }
  absl::Status LogSoftmaxGather(const DeviceTensor& logits, const int32_t* targets, float* out,
                                float* out_max) override {
    return inner_->LogSoftmaxGather(logits, targets, out, out_max);
  }
  absl::Status Sample(const DeviceTensor& logits, absl::Span<Sampler* const> samplers,
                      absl::Span<SampledToken> out) override {
    return inner_->Sample(logits, samplers, out);
  }

 protected:
  void Release(void*, size_t) override {}  // never: no buffer names this backend
  void ReleaseHost(void*, size_t) override {}

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace hgrn2::testing
