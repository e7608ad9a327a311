// Op: one decode step of an HGRN2 layer for a batch of sequences, states updated in place.
#pragma once

#include <cstdint>

#ifdef HGRN2_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "kernels/hgrn2_layer.h"

namespace hgrn2::kernels {

// Token b of the batch (row b of qfi and out) advances the state in slot slots[b] by one token.
template <typename T>
struct Hgrn2StepParams {
  int32_t batch = 0;
  Hgrn2LayerParams<T> layer;
};

void Hgrn2StepReference(const Hgrn2StepParams<float>& params);

// The sizes LaunchHgrn2Step cannot take, named (kernels/limits.h); ok() when it can.
template <typename T>
LimitViolation CheckHgrn2StepParams(const Hgrn2StepParams<T>& params) {
  constexpr const char* kOp = "hgrn2 step";
  for (const LimitViolation& v :
       {limits_internal::AtLeast(kOp, "batch", params.batch, 0),
        limits_internal::AtMost(kOp, "batch", params.batch, kMaxGridYZ)}) {
    if (!v.ok()) return v;
  }
  return CheckHgrn2LayerParams(kOp, params.layer);
}

#ifdef HGRN2_HAVE_CUDA
// T = float, __nv_bfloat16 or __half; pointers are device memory. cudaErrorInvalidValue, launching
// nothing, when CheckHgrn2StepParams says why.
template <typename T>
cudaError_t LaunchHgrn2Step(const Hgrn2StepParams<T>& params, cudaStream_t stream);
#endif

}  // namespace hgrn2::kernels
