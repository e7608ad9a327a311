// GEMMs through cuBLASLt with the algorithm for each decode-sized shape chosen by timing the
// candidates cuBLASLt proposes (the default pick is poor for the skinny products of decoding) and,
// for up to 16 rows, the variants of the small-batch GEMV (kernels/gemv.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hgrn2 {

// out[m, n] = x[m, k] · w[n, k]ᵀ, row-major with row strides in elements.
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t in_type = CUDA_R_16BF;   // x and w
  cudaDataType_t out_type = CUDA_R_16BF;  // out
  int64_t x_stride = 0, w_stride = 0, out_stride = 0;

  template <typename H>
  friend H AbslHashValue(H h, const GemmShape& s) {
    return H::combine(std::move(h), s.m, s.n, s.k, static_cast<int>(s.in_type),
                      static_cast<int>(s.out_type), s.x_stride, s.w_stride, s.out_stride);
  }
  friend bool operator==(const GemmShape&, const GemmShape&) = default;
};

// Thread-safety: the device thread only (it enqueues on the backend's stream).
class TunedGemm {
 public:
  // Uses `workspace` (workspace_bytes, device memory owned by the caller) for cuBLASLt;
  // `small_batch_gemv`: time the small-batch GEMV beside cuBLASLt's candidates.
  static absl::StatusOr<std::unique_ptr<TunedGemm>> Create(cudaStream_t stream, void* workspace,
                                                           size_t workspace_bytes,
                                                           bool small_batch_gemv);
  ~TunedGemm();

  // Enqueues the product. A new shape with m <= kTunedRows is timed over cuBLASLt's candidates
  // at once, or, while the stream is being captured into a graph, on the next Tune() call (until
  // then it runs cuBLASLt's first choice).
  absl::Status Run(const GemmShape& shape, const void* w, const void* x, void* out);

  // Times the candidates of shapes first seen during a capture, on the operands of that capture
  // (which must still be alive); what was recorded with the first choice should then be
  // recorded again. Not while capturing.
  absl::Status Tune();
  // Whether some shape waits for Tune().
  bool has_pending() const { return pending_ > 0; }

  static constexpr int64_t kTunedRows = 1024;

 private:
  struct Plan;
  TunedGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes, bool small_batch_gemv);
  absl::StatusOr<Plan*> MakePlan(const GemmShape& shape);
  absl::Status TimeCandidates(const GemmShape& shape, Plan& plan, const void* w, const void* x);
  absl::Status Enqueue(const GemmShape& shape, const Plan& plan, int algo, const void* w,
                       const void* x, void* out);

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  bool small_batch_gemv_;
  cublasLtHandle_t handle_ = nullptr;
  absl::flat_hash_map<GemmShape, std::unique_ptr<Plan>> plans_;
  void* scratch_ = nullptr;  // tuning output
  int pending_ = 0;
  size_t scratch_bytes_ = 0;
};

}  // namespace hgrn2
