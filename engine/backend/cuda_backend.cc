// The CUDA backend: device memory and one stream, cuBLAS GEMMs, the fused kernels of kernels/cuda,
// and decode steps recorded once per batch size as CUDA graphs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/backend/cuda_gemm.h"
#include "engine/backend/layer_params.h"
#include "engine/backend/op_checks.h"
#include "engine/base/status_macros.h"
#include "engine/sampling/device_sampling.h"
#include "engine/sampling/sampler.h"
#include "kernels/fp8_widen.h"
#include "kernels/gather_rows.h"
#include "kernels/gemv.h"
#include "kernels/hgrn2_prefill.h"
#include "kernels/hgrn2_step.h"
#include "kernels/limits.h"
#include "kernels/log_softmax_gather.h"
#include "kernels/rms_norm.h"
#include "kernels/sample.h"
#include "kernels/swiglu.h"

namespace hgrn2 {
namespace {

constexpr int64_t kInt32Max = 0x7fffffff;

// InvalidArgument with the kernels' own words (e.g. "hgrn2 step: key_dim must be at most 256 for
// the CUDA kernels, got 300") when they cannot take the sizes.
absl::Status Supported(const kernels::LimitViolation& violation) {
  if (violation.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(kernels::Describe(violation));
}

// Sub-buffers start on 256-byte boundaries.
constexpr size_t Align(size_t bytes) { return (bytes + 255) / 256 * 256; }

absl::Status CudaStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ", cudaGetErrorName(error), ": ",
                                          cudaGetErrorString(error)));
}

absl::StatusOr<kernels::GemvType> GemvTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return kernels::GemvType::kF32;
    case DType::kBF16:
      return kernels::GemvType::kBF16;
    case DType::kF16:
      return kernels::GemvType::kF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("gemm: no small-batch GEMV for ", DTypeName(dtype)));
  }
}

absl::StatusOr<cudaDataType_t> CublasType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("the CUDA backend has no GEMM for ", std::string(DTypeName(dtype))));
  }
}

// Runs `launch` with the element type of `dtype` (F32, BF16 or F16).
template <typename Launch>
absl::Status Dispatch(DType dtype, absl::string_view what, Launch&& launch) {
  switch (dtype) {
    case DType::kF32:
      return CudaStatus(launch(float{}), what);
    case DType::kBF16:
      return CudaStatus(launch(__nv_bfloat16{}), what);
    case DType::kF16:
      return CudaStatus(launch(__half{}), what);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": no CUDA kernel for ", std::string(DTypeName(dtype))));
  }
}

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const CudaBackendOptions& options) {
    if (options.compute_dtype != DType::kBF16 && options.compute_dtype != DType::kF16 &&
        options.compute_dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("cuda backend: compute dtype must be BF16, F16 or F32, got ",
                       std::string(DTypeName(options.compute_dtype))));
    }
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess || count == 0) {
      return absl::UnavailableError(
          absl::StrCat("cuda backend: no CUDA device (",
                       error == cudaSuccess ? "none found" : cudaGetErrorString(error), ")"));
    }
    if (options.device < 0 || options.device >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("cuda backend: device ", options.device, " outside [0, ", count, ")"));
    }
    std::unique_ptr<CudaBackend> backend(new CudaBackend(options));
    HGRN2_RETURN_IF_ERROR(backend->Init());
    return std::unique_ptr<Backend>(std::move(backend));
  }

  ~CudaBackend() override {
    for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph);
    if (workspace_ != nullptr) cudaFree(workspace_);
    gemm_.reset();
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::string_view name() const override { return "cuda"; }
  DType compute_dtype() const override { return options_.compute_dtype; }
  // The CUDA prefill runs the recurrence token by token with states in registers (see
  // kernels/hgrn2_prefill.h), so the chunk size is not used.
  int32_t preferred_prefill_chunk_size() const override { return 0; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    if (bytes == 0) return DeviceBuffer();
    void* data = nullptr;
    const cudaError_t error = cudaMalloc(&data, bytes);
    if (error != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state of a failed allocation
      return absl::ResourceExhaustedError(absl::StrCat("cuda backend: cannot allocate ", bytes,
                                                       " bytes: ", cudaGetErrorString(error)));
    }
    DeviceBuffer buffer(this, data, bytes);
    HGRN2_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(data, 0, bytes, stream_), "allocate"));
    return buffer;
  }

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    HGRN2_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy to device"));
    // From pageable memory the call returns once `src` is staged; from page-locked memory it
    // returns at once, so wait to keep the contract that `src` may be reused on return.
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, src) == cudaSuccess &&
        attributes.type == cudaMemoryTypeHost) {
      return Synchronize();
    }
    cudaGetLastError();
    return absl::OkStatus();
  }

  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    HGRN2_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host"));
    return Synchronize();
  }

  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
                      "copy on device");
  }

  absl::Status Fill(void* dst, uint8_t byte, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    return CudaStatus(cudaMemsetAsync(dst, byte, bytes, stream_), "fill");
  }

  // kSpin: the stream's own wait. kBlock: through an event made with cudaEventBlockingSync, so
  // that the thread sleeps (a stream's wait cannot be asked to).
  absl::Status Synchronize() override {
    if (done_ == nullptr) return CudaStatus(cudaStreamSynchronize(stream_), "synchronize");
    HGRN2_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(done_, stream_), "synchronize"));
    return CudaStatus(cudaEventSynchronize(done_), "synchronize");
  }

  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override {
    if (bytes == 0) return HostBuffer();
    void* data = nullptr;
    const cudaError_t error = cudaHostAlloc(&data, bytes, cudaHostAllocDefault);
    if (error != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cuda backend: cannot allocate ", bytes,
                       " page-locked bytes: ", cudaGetErrorString(error)));
    }
    return HostBuffer(this, data, bytes);
  }
  SharedHostAllocator shared_host_allocator() const override {
    return [device = options_.device](size_t bytes) -> absl::StatusOr<std::shared_ptr<std::byte>> {
      // On the calling thread's current device, so that a thread that never used CUDA does not
      // start a context on device 0; portable, so the memory is page-locked for every context.
      void* data = nullptr;
      cudaError_t error = cudaSetDevice(device);
      if (error == cudaSuccess) {
        error = cudaHostAlloc(&data, std::max<size_t>(bytes, 1), cudaHostAllocPortable);
      }
      if (error != cudaSuccess) {
        cudaGetLastError();
        return absl::ResourceExhaustedError(
            absl::StrCat("cuda backend: cannot allocate ", bytes,
                         " shared page-locked bytes: ", cudaGetErrorString(error)));
      }
      return std::shared_ptr<std::byte>(static_cast<std::byte*>(data),
                                        [](std::byte* released) { cudaFreeHost(released); });
    };
  }

  absl::Status GatherRows(const DeviceTensor& table, const int32_t* indices,
                          DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckTensor(table, table.dtype, "gather table"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, table.dtype, out.rows, table.cols, "gather out"));
    return Dispatch(table.dtype, "gather", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchGatherRows<T>({.rows = out.rows,
                                           .cols = out.cols,
                                           .table = table.As<const T>(),
                                           .table_stride_row = table.row_stride,
                                           .table_rows = table.rows,
                                           .indices = indices,
                                           .out = out.As<T>(),
                                           .out_stride_row = out.row_stride},
                                          stream_);
    });
  }

  absl::Status RmsNorm(const DeviceTensor& x, const DeviceTensor& weight, float eps,
                       DeviceTensor out) override {
    const DType dtype = compute_dtype();
    HGRN2_RETURN_IF_ERROR(CheckTensor(x, dtype, "rmsnorm x"));
    HGRN2_RETURN_IF_ERROR(CheckShape(weight, dtype, 1, x.cols, "rmsnorm weight"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, dtype, x.rows, x.cols, "rmsnorm out"));
    return Dispatch(dtype, "rmsnorm", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchRmsNorm<T>({.rows = x.rows,
                                        .cols = x.cols,
                                        .x = x.As<const T>(),
                                        .x_stride_row = x.row_stride,
                                        .weight = weight.As<const T>(),
                                        .out = out.As<T>(),
                                        .out_stride_row = out.row_stride,
                                        .eps = eps},
                                       stream_);
    });
  }

  absl::Status AddRmsNorm(DeviceTensor residual, const DeviceTensor& delta,
                          const DeviceTensor& weight, float eps, DeviceTensor out) override {
    const DType dtype = compute_dtype();
    HGRN2_RETURN_IF_ERROR(CheckTensor(residual, dtype, "add-rmsnorm residual"));
    HGRN2_RETURN_IF_ERROR(
        CheckShape(delta, dtype, residual.rows, residual.cols, "add-rmsnorm delta"));
    HGRN2_RETURN_IF_ERROR(CheckShape(weight, dtype, 1, residual.cols, "add-rmsnorm weight"));
    HGRN2_RETURN_IF_ERROR(CheckShape(out, dtype, residual.rows, residual.cols, "add-rmsnorm out"));
    return Dispatch(dtype, "add-rmsnorm", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchRmsNorm<T>({.rows = residual.rows,
                                        .cols = residual.cols,
                                        .x = delta.As<const T>(),
                                        .x_stride_row = delta.row_stride,
                                        .residual = residual.As<T>(),
                                        .residual_stride_row = residual.row_stride,
                                        .weight = weight.As<const T>(),
                                        .out = out.As<T>(),
                                        .out_stride_row = out.row_stride,
                                        .eps = eps},
                                       stream_);
    });
  }

  // out = x · weightᵀ in row-major terms is, in cuBLAS's column-major terms, outᵀ = W xᵀ with W
  // read transposed. The output may be F32 with narrower inputs (logits).
  absl::Status Gemm(const DeviceTensor& x, const DeviceTensor& weight, DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckTensor(x, x.dtype, "gemm x"));
    HGRN2_RETURN_IF_ERROR(CheckGemmWeight(weight, x.dtype, x.cols));
    if (out.dtype != x.dtype && out.dtype != DType::kF32) {
      return absl::InvalidArgumentError("gemm out: must have the input dtype or F32");
    }
    HGRN2_RETURN_IF_ERROR(CheckShape(out, out.dtype, x.rows, weight.rows, "gemm out"));
    if (x.rows == 0 || weight.rows == 0) return absl::OkStatus();
    if (weight.dtype == DType::kF8E4M3) return GemmFp8(x, weight, out);
    return GemmCublas(x, weight, out);
  }

  absl::Status ReserveFp8Widening(int64_t largest_weight_elements) override {
    const size_t bytes =
        static_cast<size_t>(largest_weight_elements) * DTypeSize(options_.compute_dtype);
    if (bytes <= fp8_widened_.size()) return absl::OkStatus();
    HGRN2_RETURN_IF_ERROR(Synchronize());
    fp8_widened_ = DeviceBuffer();
    HGRN2_ASSIGN_OR_RETURN(fp8_widened_, Allocate(bytes));
    return absl::OkStatus();
  }

  // FP8 weights: up to kGemvMaxRows rows of x stream the codes through the GEMV, widened in
  // registers (half the bytes of BF16: what decode at small batch is bound by). Larger products
  // widen the weight into the reserved buffer (the compute dtype) and run cuBLAS on it: a third
  // more traffic than BF16 weights for the weight matrix, small beside prefill's arithmetic.
  absl::Status GemmFp8(const DeviceTensor& x, const DeviceTensor& weight, DeviceTensor out) {
    kernels::GemvParams gemv;
    gemv.m = x.rows;
    gemv.n = weight.rows;
    gemv.k = x.cols;
    HGRN2_ASSIGN_OR_RETURN(gemv.in, GemvTypeOf(x.dtype));
    HGRN2_ASSIGN_OR_RETURN(gemv.out, GemvTypeOf(out.dtype));
    gemv.x = x.data;
    gemv.x_stride_row = x.row_stride;
    gemv.w = weight.data;
    gemv.w_stride_row = weight.row_stride;
    gemv.c = out.data;
    gemv.c_stride_row = out.row_stride;
    gemv.w_scales = weight.scales;
    if (options_.small_batch_gemv && x.dtype != DType::kF32 &&
        kernels::CheckGemvParams(gemv).ok()) {
      // Two rows a warp (variant 1) share the unpacked activations; one row a warp keeps more
      // loads in flight where a row is long. Timed on the H100 (bench/RESULTS.md, 2026-12-07):
      // variant 0 wins only for one row of x against k = 5632 (5.6 against 6.2 us).
      const int variant = x.rows == 1 && x.cols > 4096 ? 0 : 1;
      return CudaStatus(kernels::LaunchGemv(gemv, variant, stream_), "gemm fp8 gemv");
    }
    const int64_t elements = weight.rows * weight.cols;
    if (static_cast<size_t>(elements) * DTypeSize(x.dtype) > fp8_widened_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("gemm: an FP8 weight of ", elements,
                       " elements is larger than what ReserveFp8Widening reserved"));
    }
    HGRN2_RETURN_IF_ERROR(Dispatch(x.dtype, "gemm fp8 widen", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchWidenFp8<T>({.rows = weight.rows,
                                         .cols = weight.cols,
                                         .codes = weight.As<const uint8_t>(),
                                         .codes_stride_row = weight.row_stride,
                                         .scales = weight.scales,
                                         .out = static_cast<T*>(fp8_widened_.data()),
                                         .out_stride_row = weight.cols},
                                        stream_);
    }));
    return GemmCublas(x, fp8_widened_.Matrix(x.dtype, weight.rows, weight.cols), out);
  }

  absl::Status GemmCublas(const DeviceTensor& x, const DeviceTensor& weight, DeviceTensor out) {
    HGRN2_ASSIGN_OR_RETURN(const cudaDataType_t in_type, CublasType(x.dtype));
    HGRN2_ASSIGN_OR_RETURN(const cudaDataType_t out_type, CublasType(out.dtype));
    // Compute in float32 (no TF32 for F32 weights: that mode exists for accuracy checks).
    return gemm_->Run({.m = x.rows,
                       .n = weight.rows,
                       .k = x.cols,
                       .in_type = in_type,
                       .out_type = out_type,
                       .x_stride = x.row_stride,
                       .w_stride = weight.row_stride,
                       .out_stride = out.row_stride},
                      weight.data, x.data, out.data);
  }

  absl::Status SwiGlu(const DeviceTensor& gate_up, DeviceTensor out) override {
    const DType dtype = compute_dtype();
    HGRN2_RETURN_IF_ERROR(CheckTensor(gate_up, dtype, "swiglu gate_up"));
    if (gate_up.cols % 2 != 0) return absl::InvalidArgumentError("swiglu: odd gate_up width");
    HGRN2_RETURN_IF_ERROR(CheckShape(out, dtype, gate_up.rows, gate_up.cols / 2, "swiglu out"));
    return Dispatch(dtype, "swiglu", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchSwiGlu<T>({.rows = out.rows,
                                       .cols = out.cols,
                                       .gate_up = gate_up.As<const T>(),
                                       .gate_up_stride_row = gate_up.row_stride,
                                       .out = out.As<T>(),
                                       .out_stride_row = out.row_stride},
                                      stream_);
    });
  }

  absl::Status Hgrn2Step(const Hgrn2LayerOp& layer, const int32_t* slots, const DeviceTensor& qfi,
                         DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckLayer(layer, compute_dtype(), qfi, out));
    const int32_t batch = static_cast<int32_t>(std::min<int64_t>(qfi.rows, kInt32Max));
    // The sizes alone decide what the kernels take, whatever the element type.
    HGRN2_RETURN_IF_ERROR(Supported(kernels::CheckHgrn2StepParams<float>(
        {.batch = batch, .layer = LayerParams<float>(layer, slots, qfi, out)})));
    return Dispatch(compute_dtype(), "hgrn2 step", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchHgrn2Step<T>(
          {.batch = batch, .layer = LayerParams<T>(layer, slots, qfi, out)}, stream_);
    });
  }

  absl::Status Hgrn2Prefill(const Hgrn2LayerOp& layer, int32_t num_seqs, const int32_t* slots,
                            const int32_t* seq_offsets, int32_t chunk_size, const DeviceTensor& qfi,
                            DeviceTensor out) override {
    HGRN2_RETURN_IF_ERROR(CheckLayer(layer, compute_dtype(), qfi, out));
    HGRN2_RETURN_IF_ERROR(Supported(kernels::CheckHgrn2PrefillParams<float>(
        {.num_seqs = num_seqs, .layer = LayerParams<float>(layer, slots, qfi, out)})));
    return Dispatch(compute_dtype(), "hgrn2 prefill", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchHgrn2Prefill<T>({.num_seqs = num_seqs,
                                             .seq_offsets = seq_offsets,
                                             .chunk_size = chunk_size,
                                             .layer = LayerParams<T>(layer, slots, qfi, out)},
                                            stream_);
    });
  }

  absl::Status LogSoftmaxGather(const DeviceTensor& logits, const int32_t* targets, float* out,
                                float* out_max) override {
    HGRN2_RETURN_IF_ERROR(CheckTensor(logits, logits.dtype, "log-softmax logits"));
    return Dispatch(logits.dtype, "log-softmax", [&](auto zero) {
      using T = decltype(zero);
      return kernels::LaunchLogSoftmaxGather<T>({.rows = logits.rows,
                                                 .cols = logits.cols,
                                                 .logits = logits.As<const T>(),
                                                 .logits_stride_row = logits.row_stride,
                                                 .targets = targets,
                                                 .out = out,
                                                 .out_max = out_max},
                                                stream_);
    });
  }

  absl::Status Sample(const DeviceTensor& logits, absl::Span<Sampler* const> samplers,
                      absl::Span<SampledToken> out) override {
    HGRN2_RETURN_IF_ERROR(CheckTensor(logits, DType::kF32, "sample logits"));
    if (static_cast<int64_t>(samplers.size()) != logits.rows || out.size() != samplers.size()) {
      return absl::InvalidArgumentError("sample: one sampler and one output per row expected");
    }
    for (int64_t r = 0; r < logits.rows; ++r) {
      if (samplers[r]->vocab_size() > logits.cols) {
        return absl::InvalidArgumentError(absl::StrCat("sample: row ", r, " has ", logits.cols,
                                                       " logits for a vocabulary of ",
                                                       samplers[r]->vocab_size()));
      }
    }
    for (Sampler* sampler : samplers) {
      if (sampler->params().num_top_logprobs > DeviceSampleBatch::kMaxTopLogprobs) {
        return SampleOnHost(logits, samplers, out);
      }
    }
    if (logits.rows == 0) return absl::OkStatus();
    HGRN2_RETURN_IF_ERROR(sample_batch_.Pack(samplers, samplers[0]->vocab_size()));
    const int64_t batch = logits.rows;
    const int32_t top = sample_batch_.top_capacity();
    kernels::SampleParams sizes;
    sizes.batch = batch;
    sizes.vocab = samplers[0]->vocab_size();
    sizes.logits_stride_batch = logits.row_stride;
    sizes.top_capacity = top;
    sizes.out_top_stride_batch = std::max(top, 1);
    if (const kernels::LimitViolation v = kernels::CheckSampleParams(sizes); !v.ok()) {
      // A vocabulary or batch beyond the device sampler's: the host sampler takes any.
      const absl::string_view parameter = v.parameter;
      if (parameter == "vocab" || parameter == "batch") return SampleOnHost(logits, samplers, out);
      return Supported(v);
    }
    const auto rows = sample_batch_.rows();
    const auto offsets = sample_batch_.adjustment_offsets();
    const auto adjustments = sample_batch_.adjustments();
    // One page-locked staging area and one device area, each [inputs | outputs], grown as needed.
    const size_t rows_bytes = rows.size() * sizeof(rows[0]);
    const size_t offsets_bytes = offsets.size() * sizeof(int32_t);
    const size_t adjust_bytes = adjustments.size() * sizeof(adjustments[0]);
    const size_t in_bytes = Align(rows_bytes) + Align(offsets_bytes) + Align(adjust_bytes);
    const size_t ids_bytes = Align(batch * 4), logprobs_bytes = Align(batch * 4);
    const size_t top_bytes = Align(static_cast<size_t>(batch) * std::max(top, 1) * 4);
    const size_t out_bytes = ids_bytes + logprobs_bytes + 2 * top_bytes;
    size_t workspace_bytes = 0;
    HGRN2_RETURN_IF_ERROR(
        CudaStatus(kernels::SampleWorkspaceBytes(batch, samplers[0]->vocab_size(), &workspace_bytes,
                                                 sample_variant()),
                   "sample workspace"));
    const size_t total = in_bytes + out_bytes + Align(workspace_bytes);
    if (sample_staging_.size() < in_bytes + out_bytes) {
      HGRN2_ASSIGN_OR_RETURN(sample_staging_, AllocateHost(2 * (in_bytes + out_bytes)));
    }
    if (sample_device_.size() < total) {
      HGRN2_ASSIGN_OR_RETURN(sample_device_, Allocate(2 * total));
    }
    auto* host = static_cast<std::byte*>(sample_staging_.data());
    auto* device = static_cast<std::byte*>(sample_device_.data());
    std::memcpy(host, rows.data(), rows_bytes);
    std::memcpy(host + Align(rows_bytes), offsets.data(), offsets_bytes);
    if (adjust_bytes > 0) {
      std::memcpy(host + Align(rows_bytes) + Align(offsets_bytes), adjustments.data(),
                  adjust_bytes);
    }
    HGRN2_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(device, host, in_bytes, cudaMemcpyHostToDevice, stream_), "sample inputs"));
    std::byte* outputs = device + in_bytes;
    kernels::SampleParams params;
    params.variant = sample_variant();
    params.batch = batch;
    params.vocab = samplers[0]->vocab_size();
    params.logits = logits.As<const float>();
    params.logits_stride_batch = logits.row_stride;
    params.rows = reinterpret_cast<const kernels::SampleRowParams*>(device);
    params.adjustment_offsets = reinterpret_cast<const int32_t*>(device + Align(rows_bytes));
    params.adjustments = adjust_bytes > 0 ? reinterpret_cast<const kernels::SampleAdjustment*>(
                                                device + Align(rows_bytes) + Align(offsets_bytes))
                                          : nullptr;
    params.workspace =
        workspace_bytes > 0 ? reinterpret_cast<float*>(outputs + out_bytes) : nullptr;
    params.out_ids = reinterpret_cast<int32_t*>(outputs);
    params.out_logprobs = reinterpret_cast<float*>(outputs + ids_bytes);
    params.top_capacity = top;
    params.out_top_ids = reinterpret_cast<int32_t*>(outputs + ids_bytes + logprobs_bytes);
    params.out_top_logprobs =
        reinterpret_cast<float*>(outputs + ids_bytes + logprobs_bytes + top_bytes);
    params.out_top_stride_batch = std::max(top, 1);
    HGRN2_RETURN_IF_ERROR(CudaStatus(kernels::LaunchSample(params, stream_), "sample"));
    std::byte* host_out = host + in_bytes;
    // Only what was asked for comes back: ids and logprobs, and the top lists when wanted.
    const size_t back = top > 0 ? out_bytes : ids_bytes + logprobs_bytes;
    HGRN2_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(host_out, outputs, back, cudaMemcpyDeviceToHost, stream_),
                   "sample outputs"));
    HGRN2_RETURN_IF_ERROR(Synchronize());
    const auto* ids = reinterpret_cast<const int32_t*>(host_out);
    const auto* logprobs = reinterpret_cast<const float*>(host_out + ids_bytes);
    const auto* top_ids = reinterpret_cast<const int32_t*>(host_out + ids_bytes + logprobs_bytes);
    const auto* top_logprobs =
        reinterpret_cast<const float*>(host_out + ids_bytes + logprobs_bytes + top_bytes);
    const size_t top_count = static_cast<size_t>(batch) * std::max(top, 1);
    return sample_batch_.Unpack(
        samplers, absl::MakeConstSpan(ids, batch), absl::MakeConstSpan(logprobs, batch),
        top > 0 ? absl::MakeConstSpan(top_ids, top_count) : absl::Span<const int32_t>(),
        top > 0 ? absl::MakeConstSpan(top_logprobs, top_count) : absl::Span<const float>(),
        std::max(top, 1), out);
  }

  // Rows copied to page-locked host memory and sampled there: for requests that want more
  // top alternatives than the device sampler reports.
  absl::Status SampleOnHost(const DeviceTensor& logits, absl::Span<Sampler* const> samplers,
                            absl::Span<SampledToken> out) {
    const size_t row_bytes = static_cast<size_t>(logits.cols) * sizeof(float);
    const size_t bytes = row_bytes * static_cast<size_t>(logits.rows);
    if (host_rows_.size() < bytes) {
      HGRN2_ASSIGN_OR_RETURN(host_rows_, AllocateHost(bytes));
    }
    auto* host = static_cast<float*>(host_rows_.data());
    HGRN2_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpy2DAsync(host, row_bytes, logits.data, logits.row_stride * sizeof(float),
                          row_bytes, logits.rows, cudaMemcpyDeviceToHost, stream_),
        "sample: copy logits"));
    HGRN2_RETURN_IF_ERROR(Synchronize());
    for (int64_t r = 0; r < logits.rows; ++r) {
      out[r] = samplers[r]->Sample(absl::MakeConstSpan(host + r * logits.cols, logits.cols));
    }
    return absl::OkStatus();
  }

  bool RecordsWork() const override { return options_.use_graphs; }

  absl::Status RunRecorded(const void* owner, uint64_t key,
                           absl::FunctionRef<absl::Status()> enqueue) override {
    if (!options_.use_graphs) return enqueue();
    const std::pair<const void*, uint64_t> id{owner, key};
    if (auto it = graphs_.find(id); it != graphs_.end()) {
      return CudaStatus(cudaGraphLaunch(it->second, stream_), "graph launch");
    }
    HGRN2_ASSIGN_OR_RETURN(cudaGraph_t graph, Record(enqueue));
    if (gemm_->has_pending()) {
      // GEMM shapes first met while recording ran cuBLASLt's first choice: time them now (their
      // operands are alive: recording ran nothing) and record again with the chosen algorithms.
      cudaGraphDestroy(graph);
      HGRN2_RETURN_IF_ERROR(gemm_->Tune());
      HGRN2_ASSIGN_OR_RETURN(graph, Record(enqueue));
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    HGRN2_RETURN_IF_ERROR(CudaStatus(instantiated, "graph instantiate"));
    graphs_.emplace(id, exec);
    return CudaStatus(cudaGraphLaunch(exec, stream_), "graph launch");
  }

  void ForgetRecordings(const void* owner) override {
    for (auto it = graphs_.begin(); it != graphs_.end();) {
      if (it->first.first == owner) {
        cudaGraphExecDestroy(it->second);
        graphs_.erase(it++);
      } else {
        ++it;
      }
    }
  }

 protected:
  void Release(void* data, size_t /*bytes*/) override { cudaFree(data); }
  void ReleaseHost(void* data, size_t /*bytes*/) override { cudaFreeHost(data); }

 private:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {}

  kernels::SampleVariant sample_variant() const {
    return options_.one_pass_sampling ? kernels::SampleVariant::kAuto
                                      : kernels::SampleVariant::kBlock;
  }

  absl::Status Init() {
    HGRN2_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "set device"));
    HGRN2_RETURN_IF_ERROR(
        CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "create stream"));
    if (options_.wait == CudaBackendOptions::Wait::kBlock) {
      HGRN2_RETURN_IF_ERROR(CudaStatus(
          cudaEventCreateWithFlags(&done_, cudaEventDisableTiming | cudaEventBlockingSync),
          "create event"));
    }
    // A fixed cuBLASLt workspace, so that GEMMs recorded into graphs never allocate.
    constexpr size_t kWorkspaceBytes = size_t{32} << 20;
    HGRN2_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&workspace_, kWorkspaceBytes), "cublas workspace"));
    HGRN2_ASSIGN_OR_RETURN(
        gemm_, TunedGemm::Create(stream_, workspace_, kWorkspaceBytes, options_.small_batch_gemv));
    return absl::OkStatus();
  }

  // What `enqueue` enqueues, captured into a graph (nothing runs).
  absl::StatusOr<cudaGraph_t> Record(absl::FunctionRef<absl::Status()> enqueue) {
    HGRN2_RETURN_IF_ERROR(CudaStatus(
        cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture"));
    const absl::Status enqueued = enqueue();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!enqueued.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return enqueued;
    }
    HGRN2_RETURN_IF_ERROR(CudaStatus(ended, "end capture"));
    return graph;
  }

  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;  // kBlock: recorded and waited on by Synchronize
  std::unique_ptr<TunedGemm> gemm_;
  void* workspace_ = nullptr;
  // Recorded decode steps by (owner, key).
  absl::flat_hash_map<std::pair<const void*, uint64_t>, cudaGraphExec_t> graphs_;
  DeviceSampleBatch sample_batch_;
  HostBuffer sample_staging_;
  DeviceBuffer sample_device_;
  HostBuffer host_rows_;
  DeviceBuffer fp8_widened_;  // FP8 weights widened for cuBLAS (ReserveFp8Widening)
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options) {
  return CudaBackend::Create(options);
}

}  // namespace hgrn2
