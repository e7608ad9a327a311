// The device interface the forward pass is written against: memory, copies and the HGRN2 op set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/base/dtype.h"

namespace hgrn2 {

class Backend;
class Sampler;
struct SampledToken;

// A row-major matrix in device memory (a view: it owns nothing). Vectors are one row.
struct DeviceTensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements between rows, >= cols
  // F8_E4M3 weights only: device float32 [rows], the scale of each row (output channel). The
  // value at (r, c) is E4M3ToFloat(code) · scales[r] (engine/model/fp8_weights.h).
  const float* scales = nullptr;

  static DeviceTensor Matrix(void* data, DType dtype, int64_t rows, int64_t cols) {
    return DeviceTensor{data, dtype, rows, cols, cols};
  }
  // Rows [begin, begin + count) of this tensor.
  DeviceTensor Rows(int64_t begin, int64_t count) const {
    auto* bytes = static_cast<std::byte*>(data) + begin * row_stride * DTypeSize(dtype);
    return DeviceTensor{bytes, dtype,      count,
                        cols,  row_stride, scales != nullptr ? scales + begin : nullptr};
  }
  template <typename T>
  T* As() const {
    return static_cast<T*>(data);
  }
};

// Device memory owned by one allocation of a Backend; freed when destroyed. Move-only. Belongs to
// the thread that owns its Backend (it is released through it).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, void* data, size_t size)
      : backend_(backend), data_(data), size_(size) {}
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  DeviceTensor Matrix(DType dtype, int64_t rows, int64_t cols) const {
    return DeviceTensor::Matrix(data_, dtype, rows, cols);
  }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Host memory from a Backend that copies to and from its device at full speed (page-locked on
// CUDA; plain memory on the CPU backend): swapped-out and parked states. Move-only; freed when
// destroyed, through the thread that owns its Backend.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(Backend* backend, void* data, size_t size)
      : backend_(backend), data_(data), size_(size) {}
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer();

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Allocates host memory as Backend::AllocateHost does (page-locked on CUDA), owned by the returned
// pointer instead of a HostBuffer. Unlike a HostBuffer, the allocator and what it gave may be used
// and released on any thread and may outlive the Backend: they need the process's CUDA runtime, not
// the Backend object. For states handed to callers who may keep them past the engine.
using SharedHostAllocator = std::function<absl::StatusOr<std::shared_ptr<std::byte>>(size_t bytes)>;

// Where one layer's recurrent states and conv windows live in a StatePool (see
// kernels/hgrn2_layer.h for the layout inside a slot).
struct LayerStateView {
  int32_t num_slots = 0;  // slot indices must lie in [0, num_slots)
  float* state = nullptr;
  uint16_t* state_bf16 = nullptr;  // set instead of `state` when the states are bf16
  int64_t state_stride_slot = 0;   // in elements of the states' type
  float* conv_state = nullptr;
  int64_t conv_state_stride_slot = 0;
};

// One HGRN2 layer's token mixer, as the recurrence ops need it.
struct Hgrn2LayerOp {
  int32_t num_heads = 0;
  int32_t key_dim = 0;
  int32_t value_dim = 0;
  int32_t conv_size = 0;               // 0 = no short conv
  DeviceTensor conv_weight;            // [channels, K] when conv_size > 0
  const float* lower_bound = nullptr;  // device [H·dk] float32, or null
  LayerStateView states;
};

// A device that runs the forward pass. All pointers passed to ops are device pointers (index
// arrays too: upload them with CopyToDevice). Ops are enqueued in order on the backend's one
// stream; results are visible to the host after CopyToHost (which waits for prior work).
//
// Every op validates shapes and dtypes before it runs and returns InvalidArgument naming the
// operand on a mismatch; device failures become Internal.
//
// Thread-safety: a Backend belongs to one thread (the engine's device thread).
class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual absl::string_view name() const = 0;
  // Element type of weights and activations on this backend (recurrent states are float32).
  virtual DType compute_dtype() const = 0;
  // The prefill form that is faster here: tokens per chunk of the chunked form, or 0 for token
  // by token (on the CPU the recurrence does fewer operations than the chunked form's C×C
  // products; with tensor cores the chunked form wins).
  virtual int32_t preferred_prefill_chunk_size() const = 0;

  // Memory. Allocations are zero-initialised.
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  virtual absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(void* device_dst, const void* device_src, size_t bytes) = 0;
  virtual absl::Status Fill(void* device_dst, uint8_t byte, size_t bytes) = 0;
  virtual absl::Status Synchronize() = 0;
  // Host memory for fast transfers with CopyToDevice/CopyToHost (see HostBuffer); not zeroed.
  virtual absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) = 0;
  // The same memory through a SharedHostAllocator; this accessor, unlike the rest, may be called
  // from any thread.
  virtual SharedHostAllocator shared_host_allocator() const = 0;

  // out[r] = table[indices[r]] (embedding lookup; picking rows of a batch). Indices must lie in
  // [0, table.rows): the caller checks them (they are device memory here).
  virtual absl::Status GatherRows(const DeviceTensor& table, const int32_t* indices,
                                  DeviceTensor out) = 0;
  // out = rmsnorm(x) · weight over each row.
  virtual absl::Status RmsNorm(const DeviceTensor& x, const DeviceTensor& weight, float eps,
                               DeviceTensor out) = 0;
  // residual += delta; out = rmsnorm(residual) · weight.
  virtual absl::Status AddRmsNorm(DeviceTensor residual, const DeviceTensor& delta,
                                  const DeviceTensor& weight, float eps, DeviceTensor out) = 0;
  // out = x · weightᵀ (weight as stored, [out features, in features]). The weight is in the
  // compute dtype, or F8_E4M3 codes with their row scales (DeviceTensor::scales).
  virtual absl::Status Gemm(const DeviceTensor& x, const DeviceTensor& weight,
                            DeviceTensor out) = 0;
  // Called once at load by a model with F8_E4M3 weights, before its first op: the element count
  // of its largest one. A backend that widens FP8 weights for large products keeps a buffer of
  // that size from here on, so that no Gemm allocates (recorded work must not).
  virtual absl::Status ReserveFp8Widening(int64_t /*largest_weight_elements*/) {
    return absl::OkStatus();
  }
  // out = swish(gate) · up, gate_up = [gate | up].
  virtual absl::Status SwiGlu(const DeviceTensor& gate_up, DeviceTensor out) = 0;
  // One token for each of qfi.rows sequences in `slots` (device int32 [rows]).
  virtual absl::Status Hgrn2Step(const Hgrn2LayerOp& layer, const int32_t* slots,
                                 const DeviceTensor& qfi, DeviceTensor out) = 0;
  // Whole token runs: sequence b owns rows [seq_offsets[b], seq_offsets[b+1]) of qfi and out
  // and slot slots[b] (device int32 arrays). chunk_size 0 = token by token.
  virtual absl::Status Hgrn2Prefill(const Hgrn2LayerOp& layer, int32_t num_seqs,
                                    const int32_t* slots, const int32_t* seq_offsets,
                                    int32_t chunk_size, const DeviceTensor& qfi,
                                    DeviceTensor out) = 0;
  // out[r] (device float) = log softmax(logits[r])[targets[r]]; out_max (device float, or null)
  // gets the log-probability of the row's largest logit, equal to out[r] exactly when the target
  // holds a largest logit.
  virtual absl::Status LogSoftmaxGather(const DeviceTensor& logits, const int32_t* targets,
                                        float* out, float* out_max) = 0;
  // Chooses one token per row of `logits` with each row's sampler (host objects), writing the
  // host results to `out`. The CPU backend samples on the host; a device backend samples on the
  // device and copies back only ids and log-probabilities.
  virtual absl::Status Sample(const DeviceTensor& logits, absl::Span<Sampler* const> samplers,
                              absl::Span<SampledToken> out) = 0;

  // Runs `enqueue`, which enqueues ops on this backend. A backend that can record work (CUDA
  // graphs) records what `enqueue` enqueues on the first call with (`owner`, `key`) and replays
  // the recording on later calls with the same pair without calling `enqueue` again: the caller
  // guarantees the same ops on the same pointers and sizes for the same pair, and no host copy or
  // synchronisation inside. An owner whose pointers die calls ForgetRecordings first. Elsewhere
  // it simply calls `enqueue`.
  virtual absl::Status RunRecorded(const void* /*owner*/, uint64_t /*key*/,
                                   absl::FunctionRef<absl::Status()> enqueue) {
    return enqueue();
  }
  // Drops every recording made for `owner`.
  virtual void ForgetRecordings(const void* /*owner*/) {}
  // Whether RunRecorded records (CUDA graphs): the first run of each key then costs a recording.
  virtual bool RecordsWork() const { return false; }

 protected:
  friend class DeviceBuffer;
  friend class HostBuffer;
  virtual void Release(void* data, size_t bytes) = 0;
  virtual void ReleaseHost(void* data, size_t bytes) = 0;
};

// The float32 reference backend on the host (engine/backend/cpu_backend.cc).
std::unique_ptr<Backend> MakeCpuBackend();

struct CudaBackendOptions {
  int device = 0;
  // Weights and activations: BF16 (the fast path), F16, or F32 (for accuracy checks).
  DType compute_dtype = DType::kBF16;
  // Record decode steps as CUDA graphs (Backend::RunRecorded); off only to compare.
  bool use_graphs = true;
  // The one-pass cluster sampler instead of the one-block sampler (the same tokens), and the
  // small-batch GEMV among the tuner's candidates for up to 16 rows. On since their GPU suites
  // passed on the H100 test machine (bench/RESULTS.md, 2026-12-07: decode B=1 665 -> 759 tok/s,
  // sampling B=1 190 -> 37 us); off only to compare.
  bool one_pass_sampling = true;
  bool small_batch_gemv = true;
  // How the host waits for the device (the end of a step, a copy back): kSpin polls on a core, as
  // CUDA's default does with fewer contexts than cores; kBlock sleeps until the device signals
  // (cudaEventBlockingSync). On the H100 test machine (bench/RESULTS.md, 2026-12-07) kBlock
  // halves the server's CPU per token at 256 streams but each wait wakes about 30 us later:
  // 2-5% of a decode step with sampling. kSpin, the faster, is the default.
  enum class Wait { kBlock, kSpin };
  Wait wait = Wait::kSpin;
};

// "spin" or "block" (--gpu-wait); InvalidArgument names anything else.
absl::StatusOr<CudaBackendOptions::Wait> GpuWaitNamed(absl::string_view name);

// The CUDA backend (engine/backend/cuda_backend.cc). Unavailable when there is no CUDA device, or
// when this build has no CUDA backend; InvalidArgument for bad options.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options);

// "cpu", "cuda", or "auto" (CUDA when a device is present, else the CPU). InvalidArgument names
// an unknown device.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view device,
                                                     const CudaBackendOptions& cuda_options = {});

}  // namespace hgrn2
