// CUDA launcher of the HGRN2 decode step: each sequence's state is read once, updated and written
// back in place in its slot, with the conv windows and gates applied on the way.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/hgrn2_layer.cuh"
#include "kernels/hgrn2_step.h"

namespace hgrn2::kernels {
namespace {

using cuda::ToFloat;

constexpr int kStepThreads = 256;
constexpr int kStepRows = 32;  // state rows (value channels) per block
static_assert((3 * kMaxKeyDim + kStepRows) * sizeof(float) <= 48 * 1024,
              "the gates of the largest key_dim fit in the default shared memory");

// Block (row block, head, sequence). Shared: q, g, k of the head [dk each], v of the rows.
// Every block of a head computes the head's q and f gates (cheap) from the old conv windows;
// AdvanceConvWindowsKernel moves the windows on afterwards.
template <typename T, typename S, bool kVec4>
__global__ void __launch_bounds__(kStepThreads) Hgrn2StepKernel(Hgrn2StepParams<T> params) {
  extern __shared__ float shared[];
  const Hgrn2LayerParams<T>& p = params.layer;
  const int dk = p.key_dim;
  const int dv = p.value_dim;
  const int head = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int row_begin = blockIdx.x * kStepRows;
  const int rows = min(kStepRows, dv - row_begin);
  float* q_s = shared;
  float* g_s = q_s + dk;
  float* k_s = g_s + dk;
  float* v_s = k_s + dk;

  const int64_t slot = p.slots[b];
  const T* x = p.qfi + b * p.qfi_stride_token;
  float* window = p.conv_size > 0 ? p.conv_state + slot * p.conv_state_stride_slot : nullptr;
  const int kernel = p.conv_size;
  // Conv of one channel for this token, from the window before it.
  auto conv = [&](int64_t channel, float input) {
    if (kernel == 0) return input;
    const float* win = window + channel * kernel;
    return cuda::ConvOutput(p, channel,
                            [&](int offset) { return offset == 0 ? input : win[kernel + offset]; });
  };

  const int64_t qf = p.qf_width();
  for (int c = threadIdx.x; c < dk; c += blockDim.x) {
    const int64_t qc = static_cast<int64_t>(head) * dk + c;
    const float q = conv(qc, ToFloat(x[qc]));
    const float f = conv(qf + qc, ToFloat(x[qf + qc]));
    const cuda::ActivatedQf a =
        cuda::ActivateQf(q, f, p.lower_bound != nullptr ? p.lower_bound[qc] : 0.0f);
    q_s[c] = a.q;
    g_s[c] = a.g;
    k_s[c] = a.k;
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t vc = 2 * qf + static_cast<int64_t>(head) * dv + row_begin + r;
    v_s[r] = conv(vc, ToFloat(x[vc]));
  }
  __syncthreads();

  // One warp per state row: S[i, :] = S[i, :] · g + v_i · k; o_i = S[i, :] · q.
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  constexpr int kWarps = kStepThreads / 32;
  S* state =
      cuda::StateBase<S>(p) + slot * p.state_stride_slot + static_cast<int64_t>(head) * dv * dk;
  T* out = p.out + b * p.out_stride_token + static_cast<int64_t>(head) * dv + row_begin;
  if constexpr (kVec4) {
    // dk <= 128, dk % 4 == 0: lane l holds columns [4l, 4l + 4) of a row, 16-byte accesses, and
    // each warp has both of its rows' loads in flight before it computes.
    const int j = 4 * lane;
    const bool active = j < dk;
    float4 q4{}, g4{}, k4{};
    if (active) {
      q4 = *reinterpret_cast<const float4*>(q_s + j);
      g4 = *reinterpret_cast<const float4*>(g_s + j);
      k4 = *reinterpret_cast<const float4*>(k_s + j);
    }
    for (int r0 = warp; r0 < rows; r0 += 2 * kWarps) {
      const int r1 = r0 + kWarps;
      S* row0 = state + static_cast<int64_t>(row_begin + r0) * dk + j;
      S* row1 = state + static_cast<int64_t>(row_begin + r1) * dk + j;
      float4 s0{}, s1{};
      if (active) s0 = cuda::LoadState4(row0);
      if (active && r1 < rows) s1 = cuda::LoadState4(row1);
      auto update = [&](float4& s, float v) {
        s.x = s.x * g4.x + v * k4.x;
        s.y = s.y * g4.y + v * k4.y;
        s.z = s.z * g4.z + v * k4.z;
        s.w = s.w * g4.w + v * k4.w;
        return (s.x * q4.x + s.y * q4.y) + (s.z * q4.z + s.w * q4.w);
      };
      float o0 = update(s0, v_s[r0]);
      float o1 = r1 < rows ? update(s1, v_s[r1]) : 0.0f;
      if (active) cuda::StoreState4(row0, s0);
      if (active && r1 < rows) cuda::StoreState4(row1, s1);
      o0 = cuda::WarpSum(o0);
      o1 = cuda::WarpSum(o1);
      if (lane == 0) {
        out[r0] = cuda::FromFloat<T>(o0);
        if (r1 < rows) out[r1] = cuda::FromFloat<T>(o1);
      }
    }
  } else {
    for (int r = warp; r < rows; r += kWarps) {
      S* row = state + static_cast<int64_t>(row_begin + r) * dk;
      const float v = v_s[r];
      float o = 0.0f;
      for (int jj = lane; jj < dk; jj += 32) {
        const float s = ToFloat(row[jj]) * g_s[jj] + v * k_s[jj];
        row[jj] = cuda::FromFloat<S>(s);
        o += s * q_s[jj];
      }
      o = cuda::WarpSum(o);
      if (lane == 0) out[r] = cuda::FromFloat<T>(o);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchHgrn2Step(const Hgrn2StepParams<T>& params, cudaStream_t stream) {
  if (!CheckHgrn2StepParams(params).ok()) return cudaErrorInvalidValue;
  if (params.batch == 0) return cudaSuccess;
  const Hgrn2LayerParams<T>& p = params.layer;
  const dim3 grid((p.value_dim + kStepRows - 1) / kStepRows, p.num_heads, params.batch);
  const size_t shared_bytes = (3 * static_cast<size_t>(p.key_dim) + kStepRows) * sizeof(float);
  const bool vec4 = p.key_dim % 4 == 0 && p.key_dim <= 128;
  if (p.state_bf16 != nullptr) {
    if (vec4) {
      Hgrn2StepKernel<T, __nv_bfloat16, true><<<grid, kStepThreads, shared_bytes, stream>>>(params);
    } else {
      Hgrn2StepKernel<T, __nv_bfloat16, false>
          <<<grid, kStepThreads, shared_bytes, stream>>>(params);
    }
  } else if (vec4) {
    Hgrn2StepKernel<T, float, true><<<grid, kStepThreads, shared_bytes, stream>>>(params);
  } else {
    Hgrn2StepKernel<T, float, false><<<grid, kStepThreads, shared_bytes, stream>>>(params);
  }
  if (p.conv_size > 0) {
    const int64_t count = static_cast<int64_t>(params.batch) * p.channels();
    cuda::AdvanceConvWindowsKernel<T>
        <<<cuda::GridFor(count, 256), 256, 0, stream>>>(p, params.batch, nullptr);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchHgrn2Step<float>(const Hgrn2StepParams<float>&, cudaStream_t);
template cudaError_t LaunchHgrn2Step<__nv_bfloat16>(const Hgrn2StepParams<__nv_bfloat16>&,
                                                    cudaStream_t);
template cudaError_t LaunchHgrn2Step<__half>(const Hgrn2StepParams<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
