// TunedGemm: cuBLASLt descriptors per shape, candidates from its heuristic and, for small batches,
// the GEMV kernel's variants, timed once.
#include "engine/backend/cuda_gemm.h"

#include <cublas_v2.h>

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "kernels/gemv.h"

namespace hgrn2 {
namespace {

constexpr int kCandidates = 8;

absl::Status LtStatus(cublasStatus_t status, absl::string_view what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("gemm: ", what, ": cuBLASLt error ", cublasGetStatusName(status)));
}

absl::Status RtStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("gemm: ", what, ": ", cudaGetErrorString(error)));
}

size_t TypeSize(cudaDataType_t type) { return type == CUDA_R_32F ? 4 : 2; }

// The small-batch GEMV's types for a shape, if it can take them (kernels/gemv.h): 16-bit inputs,
// the same or f32 out, at most kGemvMaxRows rows, 16-byte loads along k.
std::optional<std::pair<kernels::GemvType, kernels::GemvType>> GemvTypes(const GemmShape& s) {
  auto type = [](cudaDataType_t t) -> std::optional<kernels::GemvType> {
    if (t == CUDA_R_16BF) return kernels::GemvType::kBF16;
    if (t == CUDA_R_16F) return kernels::GemvType::kF16;
    if (t == CUDA_R_32F) return kernels::GemvType::kF32;
    return std::nullopt;
  };
  const auto in = type(s.in_type);
  const auto out = type(s.out_type);
  if (!in || !out || *in == kernels::GemvType::kF32) return std::nullopt;
  if (*out != *in && *out != kernels::GemvType::kF32) return std::nullopt;
  kernels::GemvParams sizes;
  sizes.m = s.m;
  sizes.n = s.n;
  sizes.k = s.k;
  sizes.x_stride_row = s.x_stride;
  sizes.w_stride_row = s.w_stride;
  sizes.c_stride_row = s.out_stride;
  if (!kernels::CheckGemvParams(sizes).ok()) return std::nullopt;
  return std::make_pair(*in, *out);
}

}  // namespace

// Candidates are cuBLASLt's algorithms, then (for shapes it takes) the GEMV's variants.
struct TunedGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, out_layout = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;
  std::optional<std::pair<kernels::GemvType, kernels::GemvType>> gemv;
  int chosen = 0;
  int best_cublas = 0;   // for operands the GEMV cannot load (unaligned addresses)
  bool pending = false;  // first seen during a capture: not timed yet
  const void* w = nullptr;
  const void* x = nullptr;

  ~Plan() {
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
    if (w_layout != nullptr) cublasLtMatrixLayoutDestroy(w_layout);
    if (x_layout != nullptr) cublasLtMatrixLayoutDestroy(x_layout);
    if (out_layout != nullptr) cublasLtMatrixLayoutDestroy(out_layout);
  }
};

TunedGemm::TunedGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes,
                     bool small_batch_gemv)
    : stream_(stream),
      workspace_(workspace),
      workspace_bytes_(workspace_bytes),
      small_batch_gemv_(small_batch_gemv) {}

absl::StatusOr<std::unique_ptr<TunedGemm>> TunedGemm::Create(cudaStream_t stream, void* workspace,
                                                             size_t workspace_bytes,
                                                             bool small_batch_gemv) {
  std::unique_ptr<TunedGemm> gemm(
      new TunedGemm(stream, workspace, workspace_bytes, small_batch_gemv));
  HGRN2_RETURN_IF_ERROR(LtStatus(cublasLtCreate(&gemm->handle_), "create"));
  return gemm;
}

TunedGemm::~TunedGemm() {
  plans_.clear();
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

// In cuBLAS's column-major terms the product is outᵀ[n, m] = w[k, n]ᵀ · xᵀ[k, m].
absl::StatusOr<TunedGemm::Plan*> TunedGemm::MakePlan(const GemmShape& s) {
  auto plan = std::make_unique<Plan>();
  HGRN2_RETURN_IF_ERROR(
      LtStatus(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc"));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  HGRN2_RETURN_IF_ERROR(
      LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                              sizeof(transpose)),
               "transpose"));
  HGRN2_RETURN_IF_ERROR(
      LtStatus(cublasLtMatrixLayoutCreate(&plan->w_layout, s.in_type, s.k, s.n, s.w_stride), "w"));
  HGRN2_RETURN_IF_ERROR(
      LtStatus(cublasLtMatrixLayoutCreate(&plan->x_layout, s.in_type, s.k, s.m, s.x_stride), "x"));
  HGRN2_RETURN_IF_ERROR(LtStatus(
      cublasLtMatrixLayoutCreate(&plan->out_layout, s.out_type, s.n, s.m, s.out_stride), "out"));
  cublasLtMatmulPreference_t preference = nullptr;
  HGRN2_RETURN_IF_ERROR(LtStatus(cublasLtMatmulPreferenceCreate(&preference), "preference"));
  const uint64_t workspace = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace, sizeof(workspace));
  plan->candidates.resize(kCandidates);
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->desc, plan->w_layout, plan->x_layout, plan->out_layout, plan->out_layout,
      preference, kCandidates, plan->candidates.data(), &found);
  cublasLtMatmulPreferenceDestroy(preference);
  HGRN2_RETURN_IF_ERROR(LtStatus(status, "heuristic"));
  if (found == 0) {
    return absl::InternalError(
        absl::StrCat("gemm: cuBLASLt has no algorithm for m ", s.m, " n ", s.n, " k ", s.k));
  }
  plan->candidates.resize(found);
  if (small_batch_gemv_) plan->gemv = GemvTypes(s);
  Plan* raw = plan.get();
  plans_.emplace(s, std::move(plan));
  return raw;
}

absl::Status TunedGemm::Enqueue(const GemmShape& s, const Plan& plan, int algo, const void* w,
                                const void* x, void* out) {
  const int cublas = static_cast<int>(plan.candidates.size());
  if (algo >= cublas) {
    kernels::GemvParams p;
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.in = plan.gemv->first;
    p.out = plan.gemv->second;
    p.x = x;
    p.x_stride_row = s.x_stride;
    p.w = w;
    p.w_stride_row = s.w_stride;
    p.c = out;
    p.c_stride_row = s.out_stride;
    if (kernels::CheckGemvParams(p).ok()) {
      return RtStatus(kernels::LaunchGemv(p, algo - cublas, stream_), "gemv");
    }
    algo = plan.best_cublas;  // these operands are not 16-byte aligned
  }
  const float alpha = 1.0f, beta = 0.0f;
  return LtStatus(
      cublasLtMatmul(handle_, plan.desc, &alpha, w, plan.w_layout, x, plan.x_layout, &beta, out,
                     plan.out_layout, out, plan.out_layout, &plan.candidates[algo].algo, workspace_,
                     workspace_bytes_, stream_),
      "matmul");
}

absl::Status TunedGemm::TimeCandidates(const GemmShape& s, Plan& plan, const void* w,
                                       const void* x) {
  plan.pending = false;
  const int cublas = static_cast<int>(plan.candidates.size());
  const int total = cublas + (plan.gemv ? kernels::kGemvVariants : 0);
  if (total == 1) return absl::OkStatus();
  const size_t out_bytes = static_cast<size_t>(s.m) * s.out_stride * TypeSize(s.out_type);
  if (scratch_bytes_ < out_bytes) {
    if (scratch_ != nullptr) cudaFree(scratch_);
    scratch_ = nullptr;
    HGRN2_RETURN_IF_ERROR(RtStatus(cudaMalloc(&scratch_, out_bytes), "tuning scratch"));
    scratch_bytes_ = out_bytes;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  HGRN2_RETURN_IF_ERROR(RtStatus(cudaEventCreate(&start), "event"));
  HGRN2_RETURN_IF_ERROR(RtStatus(cudaEventCreate(&stop), "event"));
  float best_ms = 0.0f, best_cublas_ms = 0.0f;
  int best = -1;
  bool timed_cublas = false;
  for (int a = 0; a < total; ++a) {
    if (!Enqueue(s, plan, a, w, x, scratch_).ok()) continue;  // a candidate that cannot run
    Enqueue(s, plan, a, w, x, scratch_).IgnoreError();
    constexpr int kReps = 10;
    cudaEventRecord(start, stream_);
    for (int r = 0; r < kReps; ++r) Enqueue(s, plan, a, w, x, scratch_).IgnoreError();
    cudaEventRecord(stop, stream_);
    float ms = 0.0f;
    if (cudaEventSynchronize(stop) != cudaSuccess ||
        cudaEventElapsedTime(&ms, start, stop) != cudaSuccess) {
      continue;
    }
    if (best < 0 || ms < best_ms) {
      best = a;
      best_ms = ms;
    }
    if (a < cublas && (!timed_cublas || ms < best_cublas_ms)) {
      plan.best_cublas = a;
      best_cublas_ms = ms;
      timed_cublas = true;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGetLastError();
  if (best < 0) return absl::InternalError("gemm: no cuBLASLt candidate ran");
  plan.chosen = best;
  return absl::OkStatus();
}

absl::Status TunedGemm::Run(const GemmShape& s, const void* w, const void* x, void* out) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  HGRN2_RETURN_IF_ERROR(RtStatus(cudaStreamIsCapturing(stream_, &capture), "capture status"));
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  Plan* plan = nullptr;
  if (auto it = plans_.find(s); it != plans_.end()) {
    plan = it->second.get();
  } else {
    HGRN2_ASSIGN_OR_RETURN(plan, MakePlan(s));
    if (s.m <= kTunedRows) {
      if (capturing) {
        plan->pending = true;
        ++pending_;
        plan->w = w;
        plan->x = x;
      } else {
        HGRN2_RETURN_IF_ERROR(TimeCandidates(s, *plan, w, x));
      }
    }
  }
  return Enqueue(s, *plan, plan->chosen, w, x, out);
}

absl::Status TunedGemm::Tune() {
  pending_ = 0;
  for (auto& [shape, plan] : plans_) {
    if (plan->pending) HGRN2_RETURN_IF_ERROR(TimeCandidates(shape, *plan, plan->w, plan->x));
  }
  return absl::OkStatus();
}

}  // namespace hgrn2
