// CUDA launcher of HGRN2 prefill: the recurrence over whole prompts of a ragged batch, each
// block keeping its rows of a head's state in registers from the first token to the last.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/hgrn2_layer.cuh"
#include "kernels/hgrn2_prefill.h"

namespace hgrn2::kernels {
namespace {

using cuda::ToFloat;

constexpr int kThreads = 128;    // 4 warps
constexpr int kLanesPerRow = 8;  // a state row is spread over 8 lanes
constexpr int kRowsPerWarp = 32 / kLanesPerRow;
constexpr int kRows = kThreads / kLanesPerRow;  // 16 state rows per block
constexpr int kTileTokens = 16;                 // gates staged in shared memory per tile

// Block (row block, head, sequence). Per tile of tokens, all threads first stage the head's
// activated q, g, k and the block's v inputs in shared memory; then each group of 8 lanes runs
// its state row through the tile's tokens with no barrier between tokens (rows are independent).
// kElems = state elements per lane (dk ≤ 8 · kElems); with kVec, dk % 4 == 0 and lane l holds
// columns 4·(l + 8·i) + e, so the 8 lanes of a row read 128 contiguous bytes of shared memory.
template <typename T, int kElems, bool kVec>
__global__ void __launch_bounds__(kThreads) Hgrn2PrefillKernel(Hgrn2PrefillParams<T> params) {
  extern __shared__ float shared[];
  const Hgrn2LayerParams<T>& p = params.layer;
  const int dk = p.key_dim;
  const int dv = p.value_dim;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int row_begin = blockIdx.x * kRows;
  const int rows = min(kRows, dv - row_begin);
  const int64_t begin = params.seq_offsets[b];
  const int64_t end = params.seq_offsets[b + 1];
  if (begin == end) return;

  float* q_s = shared;                  // [kTileTokens, dk]
  float* g_s = q_s + kTileTokens * dk;  // [kTileTokens, dk]
  float* k_s = g_s + kTileTokens * dk;  // [kTileTokens, dk]
  float* v_s = k_s + kTileTokens * dk;  // [kTileTokens, kRows]

  const int64_t slot = p.slots[b];
  const int kernel = p.conv_size;
  const float* window = kernel > 0 ? p.conv_state + slot * p.conv_state_stride_slot : nullptr;
  // Input of `channel` at position `pos` of the sequence (negative: from the old window).
  auto input = [&](int64_t channel, int64_t pos) {
    return pos >= 0 ? ToFloat(p.qfi[(begin + pos) * p.qfi_stride_token + channel])
                    : window[channel * kernel + kernel + pos];
  };
  auto conved = [&](int64_t channel, int64_t pos) {
    if (kernel == 0) return input(channel, pos);
    return cuda::ConvOutput(p, channel, [&](int offset) { return input(channel, pos + offset); });
  };

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int row = warp * kRowsPerWarp + lane / kLanesPerRow;  // within the block
  const int part = lane % kLanesPerRow;
  const bool row_valid = row < rows;
  auto column = [&](int e) {
    return kVec ? 4 * (part + kLanesPerRow * (e / 4)) + e % 4 : part + kLanesPerRow * e;
  };

  float* state_row = p.state + slot * p.state_stride_slot +
                     (static_cast<int64_t>(head) * dv + row_begin + (row_valid ? row : 0)) * dk;
  float s[kElems];
#pragma unroll
  for (int e = 0; e < kElems; ++e) {
    const int j = column(e);
    s[e] = row_valid && j < dk ? state_row[j] : 0.0f;
  }
  T* out = p.out + static_cast<int64_t>(head) * dv + row_begin + row;
  const int64_t qf = p.qf_width();

  for (int64_t tile = 0; tile < end - begin; tile += kTileTokens) {
    const int count = static_cast<int>(min(static_cast<int64_t>(kTileTokens), end - begin - tile));
    __syncthreads();  // the previous tile's gates are no longer read
    for (int item = threadIdx.x; item < count * dk; item += kThreads) {
      const int t = item / dk;
      const int c = item - t * dk;
      const int64_t qc = static_cast<int64_t>(head) * dk + c;
      const cuda::ActivatedQf a =
          cuda::ActivateQf(conved(qc, tile + t), conved(qf + qc, tile + t),
                           p.lower_bound != nullptr ? p.lower_bound[qc] : 0.0f);
      q_s[t * dk + c] = a.q;
      g_s[t * dk + c] = a.g;
      k_s[t * dk + c] = a.k;
    }
    for (int item = threadIdx.x; item < count * rows; item += kThreads) {
      const int t = item / rows;
      const int r = item - t * rows;
      const int64_t vc = 2 * qf + static_cast<int64_t>(head) * dv + row_begin + r;
      v_s[t * kRows + r] = conved(vc, tile + t);
    }
    __syncthreads();

    for (int t = 0; t < count; ++t) {
      const float v = row_valid ? v_s[t * kRows + row] : 0.0f;
      const float* q_t = q_s + t * dk;
      const float* g_t = g_s + t * dk;
      const float* k_t = k_s + t * dk;
      float o = 0.0f;
      if constexpr (kVec) {
#pragma unroll
        for (int i = 0; i < kElems / 4; ++i) {
          const int j = 4 * (part + kLanesPerRow * i);
          if (j < dk) {
            const float4 q4 = *reinterpret_cast<const float4*>(q_t + j);
            const float4 g4 = *reinterpret_cast<const float4*>(g_t + j);
            const float4 k4 = *reinterpret_cast<const float4*>(k_t + j);
            float* si = s + 4 * i;
            si[0] = si[0] * g4.x + v * k4.x;
            si[1] = si[1] * g4.y + v * k4.y;
            si[2] = si[2] * g4.z + v * k4.z;
            si[3] = si[3] * g4.w + v * k4.w;
            o += si[0] * q4.x + si[1] * q4.y + si[2] * q4.z + si[3] * q4.w;
          }
        }
      } else {
#pragma unroll
        for (int e = 0; e < kElems; ++e) {
          const int j = column(e);
          if (j < dk) {
            s[e] = s[e] * g_t[j] + v * k_t[j];
            o += s[e] * q_t[j];
          }
        }
      }
#pragma unroll
      for (int offset = kLanesPerRow / 2; offset > 0; offset >>= 1) {
        o += __shfl_xor_sync(0xffffffffu, o, offset);
      }
      if (row_valid && part == 0) {
        out[(begin + tile + t) * p.out_stride_token] = cuda::FromFloat<T>(o);
      }
    }
  }

  if (row_valid) {
#pragma unroll
    for (int e = 0; e < kElems; ++e) {
      const int j = column(e);
      if (j < dk) state_row[j] = s[e];
    }
  }
}

// The fast path, for models without a short conv and with dk <= 128, dk % 4 == 0 (fla's
// published configurations). Lane l of a warp holds columns [4l, 4l + 4) of four state rows, so
// the gates it reads from shared memory for a token serve four rows. The tile's inputs are
// loaded (unconditionally, so that all loads are in flight at once) while the recurrence runs on
// the previous tile, and each tile's dot products are summed across the warp by one butterfly.
constexpr int kFastThreads = 128;
constexpr int kFastRowsPerWarp = 4;
constexpr int kFastRows = kFastThreads / 32 * kFastRowsPerWarp;  // 16
constexpr int kFastTile = 8;
constexpr int kFastMaxKeyDim = 128;
static_assert(kFastTile * kFastRowsPerWarp == 32, "the butterfly gives one (token, row) per lane");

// One step of the transposing butterfly sum over a warp: lanes that differ in bit kStep exchange
// halves of values [0, 2·kStep), each keeping the half its bit selects, summed.
template <int kStep>
__device__ __forceinline__ void ButterflyStep(float (&values)[32], int lane) {
  const bool upper = (lane & kStep) != 0;
#pragma unroll
  for (int i = 0; i < kStep; ++i) {
    const float send = upper ? values[i] : values[i + kStep];
    const float keep = upper ? values[i + kStep] : values[i];
    values[i] = keep + __shfl_xor_sync(0xffffffffu, send, kStep);
  }
}

template <typename T, typename S>
__global__ void __launch_bounds__(kFastThreads)
    Hgrn2PrefillFastKernel(Hgrn2PrefillParams<T> params) {
  __shared__ __align__(16) float q_s[kFastTile][kFastMaxKeyDim];
  __shared__ __align__(16) float g_s[kFastTile][kFastMaxKeyDim];
  __shared__ __align__(16) float k_s[kFastTile][kFastMaxKeyDim];
  __shared__ __align__(16) float v_s[kFastTile][kFastRows];
  const Hgrn2LayerParams<T>& p = params.layer;
  const int dk = p.key_dim;
  const int dv = p.value_dim;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int row_begin = blockIdx.x * kFastRows;
  const int rows = min(kFastRows, dv - row_begin);
  const int64_t begin = params.seq_offsets[b];
  const int64_t length = params.seq_offsets[b + 1] - begin;
  if (length == 0) return;
  const int64_t slot = p.slots[b];
  const int64_t qf = p.qf_width();

  // Staging roles: thread c stages q/f channel c; thread r < rows the v channel of row r.
  const bool stages_qf = threadIdx.x < dk;
  const bool stages_v = threadIdx.x < rows;
  const int64_t qc = static_cast<int64_t>(head) * dk + (stages_qf ? threadIdx.x : 0);
  const int64_t vc =
      2 * qf + static_cast<int64_t>(head) * dv + row_begin + (stages_v ? threadIdx.x : 0);
  const float lb = stages_qf && p.lower_bound != nullptr ? p.lower_bound[qc] : 0.0f;
  T raw_q[kFastTile], raw_f[kFastTile], raw_v[kFastTile];
  auto load_tile = [&](int64_t tile) {
#pragma unroll
    for (int t = 0; t < kFastTile; ++t) {
      const int64_t pos = min(tile + t, length - 1);  // past the end: a valid token, unused
      const T* x = p.qfi + (begin + pos) * p.qfi_stride_token;
      raw_q[t] = x[qc];
      raw_f[t] = x[qf + qc];
      raw_v[t] = x[vc];
    }
  };

  // Recurrence roles.
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int j = 4 * lane;
  const bool active = j < dk;
  float s[kFastRowsPerWarp][4];
  S* state = cuda::StateBase<S>(p) + slot * p.state_stride_slot +
             (static_cast<int64_t>(head) * dv + row_begin) * dk;
#pragma unroll
  for (int r = 0; r < kFastRowsPerWarp; ++r) {
    const int row = warp * kFastRowsPerWarp + r;
    float4 value{};
    if (active && row < rows) value = cuda::LoadState4(state + row * dk + j);
    s[r][0] = value.x;
    s[r][1] = value.y;
    s[r][2] = value.z;
    s[r][3] = value.w;
  }
  // After the butterfly lane l holds (token l / 4, row l % 4 of this warp).
  const int out_token = lane / kFastRowsPerWarp;
  const int out_row = warp * kFastRowsPerWarp + lane % kFastRowsPerWarp;
  T* out = p.out + static_cast<int64_t>(head) * dv + row_begin + out_row;

  load_tile(0);
  for (int64_t tile = 0; tile < length; tile += kFastTile) {
    const int count = static_cast<int>(min(static_cast<int64_t>(kFastTile), length - tile));
    __syncthreads();  // the previous tile's gates are no longer read
#pragma unroll
    for (int t = 0; t < kFastTile; ++t) {
      if (stages_qf) {
        const float q = ToFloat(raw_q[t]);
        const float f = ToFloat(raw_f[t]);
        const cuda::ActivatedQf a = cuda::ActivateQf(q, f, lb);
        q_s[t][threadIdx.x] = a.q;
        g_s[t][threadIdx.x] = a.g;
        k_s[t][threadIdx.x] = a.k;
      }
      if (stages_v) v_s[t][threadIdx.x] = ToFloat(raw_v[t]);
    }
    __syncthreads();
    if (tile + kFastTile < length) load_tile(tile + kFastTile);  // in flight during the tile

    float partial[kFastTile * kFastRowsPerWarp];
#pragma unroll
    for (int t = 0; t < kFastTile; ++t) {
      float4 q4{}, g4{}, k4{};
      if (active) {
        q4 = *reinterpret_cast<const float4*>(&q_s[t][j]);
        g4 = *reinterpret_cast<const float4*>(&g_s[t][j]);
        k4 = *reinterpret_cast<const float4*>(&k_s[t][j]);
      }
      const float4 v4 = *reinterpret_cast<const float4*>(&v_s[t][warp * kFastRowsPerWarp]);
      const float v[kFastRowsPerWarp] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
      for (int r = 0; r < kFastRowsPerWarp; ++r) {
        // Tokens past the end of the sequence leave the state alone (count is block-uniform).
        if (t < count) {
          s[r][0] = s[r][0] * g4.x + v[r] * k4.x;
          s[r][1] = s[r][1] * g4.y + v[r] * k4.y;
          s[r][2] = s[r][2] * g4.z + v[r] * k4.z;
          s[r][3] = s[r][3] * g4.w + v[r] * k4.w;
        }
        partial[t * kFastRowsPerWarp + r] =
            (s[r][0] * q4.x + s[r][1] * q4.y) + (s[r][2] * q4.z + s[r][3] * q4.w);
      }
    }
    // Each step halves the values a lane holds; lane l ends with the whole sum of value l.
    ButterflyStep<16>(partial, lane);
    ButterflyStep<8>(partial, lane);
    ButterflyStep<4>(partial, lane);
    ButterflyStep<2>(partial, lane);
    ButterflyStep<1>(partial, lane);
    if (out_row < rows && out_token < count) {
      out[(begin + tile + out_token) * p.out_stride_token] = cuda::FromFloat<T>(partial[0]);
    }
  }

#pragma unroll
  for (int r = 0; r < kFastRowsPerWarp; ++r) {
    const int row = warp * kFastRowsPerWarp + r;
    if (active && row < rows) {
      cuda::StoreState4(state + row * dk + j, make_float4(s[r][0], s[r][1], s[r][2], s[r][3]));
    }
  }
}

template <typename T, int kElems, bool kVec>
cudaError_t LaunchWith(const Hgrn2PrefillParams<T>& params, cudaStream_t stream) {
  const Hgrn2LayerParams<T>& p = params.layer;
  const size_t shared_bytes =
      (3 * static_cast<size_t>(kTileTokens) * p.key_dim + kTileTokens * kRows) * sizeof(float);
  auto kernel = Hgrn2PrefillKernel<T, kElems, kVec>;
  if (shared_bytes > 48 * 1024) {
    const cudaError_t error = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
    if (error != cudaSuccess) return error;
  }
  const dim3 grid((p.value_dim + kRows - 1) / kRows, p.num_heads, params.num_seqs);
  kernel<<<grid, kThreads, shared_bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t LaunchHgrn2Prefill(const Hgrn2PrefillParams<T>& params, cudaStream_t stream) {
  if (!CheckHgrn2PrefillParams(params).ok()) return cudaErrorInvalidValue;
  if (params.num_seqs == 0) return cudaSuccess;
  const Hgrn2LayerParams<T>& p = params.layer;
  const int dk = p.key_dim;
  const bool vec = dk % 4 == 0;
  if (p.conv_size == 0 && vec && dk <= kFastMaxKeyDim) {
    const dim3 grid((p.value_dim + kFastRows - 1) / kFastRows, p.num_heads, params.num_seqs);
    if (p.state_bf16 != nullptr) {
      Hgrn2PrefillFastKernel<T, __nv_bfloat16><<<grid, kFastThreads, 0, stream>>>(params);
    } else {
      Hgrn2PrefillFastKernel<T, float><<<grid, kFastThreads, 0, stream>>>(params);
    }
    return cudaGetLastError();
  }
  // The generic form keeps float32 states only (CheckHgrn2LayerParams asks bf16 states for the
  // fast path's sizes).
  if (p.state_bf16 != nullptr) return cudaErrorInvalidValue;
  cudaError_t error;
  if (dk <= 32) {
    error = vec ? LaunchWith<T, 4, true>(params, stream) : LaunchWith<T, 4, false>(params, stream);
  } else if (dk <= 64) {
    error = vec ? LaunchWith<T, 8, true>(params, stream) : LaunchWith<T, 8, false>(params, stream);
  } else if (dk <= 128) {
    error =
        vec ? LaunchWith<T, 16, true>(params, stream) : LaunchWith<T, 16, false>(params, stream);
  } else if (dk <= 256) {
    error =
        vec ? LaunchWith<T, 32, true>(params, stream) : LaunchWith<T, 32, false>(params, stream);
  } else {
    static_assert(kMaxKeyDim == 256, "a register tile for every key_dim the limit allows");
    return cudaErrorInvalidValue;
  }
  if (error != cudaSuccess || p.conv_size == 0) return error;
  const int64_t count = static_cast<int64_t>(params.num_seqs) * p.channels();
  cuda::AdvanceConvWindowsKernel<T>
      <<<cuda::GridFor(count, 256), 256, 0, stream>>>(p, params.num_seqs, params.seq_offsets);
  return cudaGetLastError();
}

template cudaError_t LaunchHgrn2Prefill<float>(const Hgrn2PrefillParams<float>&, cudaStream_t);
template cudaError_t LaunchHgrn2Prefill<__nv_bfloat16>(const Hgrn2PrefillParams<__nv_bfloat16>&,
                                                       cudaStream_t);
template cudaError_t LaunchHgrn2Prefill<__half>(const Hgrn2PrefillParams<__half>&, cudaStream_t);

}  // namespace hgrn2::kernels
