// The CUDA sampler: per row, logit adjustments, greedy or temperature + top-k/top-p/min-p + the
// seeded exponential race, the chosen token's log-probability and the top alternatives — the
// same steps, in the same float and double arithmetic, as Sampler::Sample
// (engine/sampling/sampler.cc).
//
// This kernel takes one block per row, any vocabulary (rows that do not fit in shared memory go
// through a workspace) on any card; LaunchSample sends the rows it can to the one-pass cluster
// kernel (sample_cluster.cu) instead, and this one is the reference that kernel is tested beside.
//
// Exactness: see sample_math.cuh.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "kernels/cuda/sample_cluster.cuh"
#include "kernels/cuda/sample_math.cuh"
#include "kernels/fixed_sum.h"
#include "kernels/philox.h"
#include "kernels/sample.h"

namespace hgrn2::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
using cuda::Adjust;
using cuda::Beats;
using cuda::CanonicalZero;
using cuda::FloatFromKey;
using cuda::kFullMask;
using cuda::kMaxNoise;
using cuda::kNegInf;
using cuda::kNegInfD;
using cuda::OrderedKey;
using cuda::RaceScore;

struct Shared {
  // Radix-select histograms.
  int32_t counts[256];
  unsigned long long mass_lo[256];
  unsigned long long mass_hi[256];
  // Radix-select results.
  uint32_t key;
  int32_t count_above;
  int32_t count_equal;
  FixedSum mass_above;
  double target;
  // Block reductions.
  double reduce_value[kWarps];
  int32_t reduce_index[kWarps];
  double result_value;
  int32_t result_index;
  int32_t scan[kWarps];
  // Small results passed from one thread to all.
  int32_t keep_ties;
  int32_t tie_id;
  int32_t num_candidates;
  float candidate_key[kSampleMaxTopLogprobs];
  int32_t candidate_id[kSampleMaxTopLogprobs];
};

// The best (value, index) over the block by Beats; every thread gets the result. The order of
// combination does not matter: Beats is a total order on candidates.
__device__ void BlockBest(double& value, int32_t& index, Shared& sh) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const double other = __shfl_down_sync(kFullMask, value, offset);
    const int32_t other_index = __shfl_down_sync(kFullMask, index, offset);
    if (Beats(other, other_index, value, index)) {
      value = other;
      index = other_index;
    }
  }
  if (lane == 0) {
    sh.reduce_value[warp] = value;
    sh.reduce_index[warp] = index;
  }
  __syncthreads();
  if (warp == 0) {
    value = lane < kWarps ? sh.reduce_value[lane] : kNegInfD;
    index = lane < kWarps ? sh.reduce_index[lane] : -1;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const double other = __shfl_down_sync(kFullMask, value, offset);
      const int32_t other_index = __shfl_down_sync(kFullMask, index, offset);
      if (Beats(other, other_index, value, index)) {
        value = other;
        index = other_index;
      }
    }
    if (lane == 0) {
      sh.result_value = value;
      sh.result_index = index;
    }
  }
  __syncthreads();
  value = sh.result_value;
  index = sh.result_index;
}

// A sum over the block in a fixed tree order (the same bits every run); every thread gets it.
__device__ double BlockSum(double value, Shared& sh) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_down_sync(kFullMask, value, offset);
  if (lane == 0) sh.reduce_value[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kWarps ? sh.reduce_value[lane] : 0.0;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      value += __shfl_down_sync(kFullMask, value, offset);
    }
    if (lane == 0) sh.result_value = value;
  }
  __syncthreads();
  return sh.result_value;
}

// The sum of `value` over the threads before this one.
__device__ int32_t BlockExclusiveSum(int32_t value, Shared& sh) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  int32_t inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int32_t other = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) sh.scan[warp] = inclusive;
  __syncthreads();
  int32_t warp_offset = 0;
  for (int w = 0; w < warp; ++w) warp_offset += sh.scan[w];
  __syncthreads();  // sh.scan is reused by the next call
  return warp_offset + inclusive - value;
}

// The first index of the largest value above -inf among values[0, n) (NaN never wins), or -1:
// FirstArgmax of engine/sampling/sampler.cc.
__device__ int32_t BlockFirstArgmax(const float* values, int32_t n, Shared& sh) {
  double best = kNegInfD;
  int32_t best_index = -1;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const float x = values[i];
    if (x > kNegInf && Beats(x, i, best, best_index)) {
      best = x;
      best_index = i;
    }
  }
  BlockBest(best, best_index, sh);
  return best_index;
}

// Descending radix selection over the ordered keys of z[0, n) (no NaN, no -0), 8 bits a pass.
// Without kMass: the key of the rank-th largest element (rank in [1, n]). With kMass, over the
// elements above -inf only: the key at which the running mass exp(z), in order of decreasing z,
// first reaches top_p · total. Leaves in sh: key, count_above and (kMass) mass_above — the
// elements with a larger key — count_equal, and (kMass) target.
template <bool kMass>
__device__ void RadixSelect(const float* z, int32_t n, int32_t rank, float top_p, Shared& sh) {
  uint32_t prefix = 0;
  uint32_t mask = 0;
  if (threadIdx.x == 0) {
    sh.count_above = 0;
    sh.mass_above = FixedSum{};
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) {
      sh.counts[b] = 0;
      sh.mass_lo[b] = 0;
      sh.mass_hi[b] = 0;
    }
    __syncthreads();
    // The loop bound is the same for the whole block, so every lane reaches __match_any_sync.
    for (int32_t base = 0; base < n; base += kThreads) {
      const int32_t i = base + static_cast<int32_t>(threadIdx.x);
      const float v = i < n ? z[i] : kNegInf;
      const uint32_t key = OrderedKey(v);
      const bool counted = i < n && (!kMass || v > kNegInf) && (key & mask) == prefix;
      const int b = counted ? static_cast<int>((key >> shift) & 0xffu) : -1;
      // Lanes of a warp that fall into one bucket add their count once: most elements share a
      // few buckets in the first passes, and same-address atomics serialize.
      const unsigned peers = __match_any_sync(kFullMask, b);
      if (!counted) continue;
      if (static_cast<int>(threadIdx.x % 32) == __ffs(peers) - 1) {
        atomicAdd(&sh.counts[b], __popc(peers));
      }
      if constexpr (kMass) {
        const FixedSum m = ToFixedSum(exp(static_cast<double>(v)));
        // Two 64-bit halves; the carry out of the low half goes to the high half exactly once.
        const unsigned long long old_lo = atomicAdd(&sh.mass_lo[b], m.lo);
        const uint64_t carry = old_lo + m.lo < old_lo ? 1 : 0;
        if (m.hi + carry != 0) atomicAdd(&sh.mass_hi[b], m.hi + carry);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      FixedSum above = sh.mass_above;
      int32_t count_above = sh.count_above;
      if (kMass && shift == 24) {
        FixedSum total{};
        for (int b = 0; b < 256; ++b) total = Add(total, FixedSum{sh.mass_lo[b], sh.mass_hi[b]});
        sh.target = static_cast<double>(top_p) * ToDouble(total);
      }
      // The first bucket, from the top, where the running count or mass reaches the target.
      // Falling through to the last non-empty bucket cannot happen (the whole reaches it) but
      // keeps the result an element.
      int chosen = -1;
      int last = -1;
      FixedSum above_before_last{};
      int32_t count_before_last = 0;
      for (int b = 255; b >= 0; --b) {
        const int32_t count = sh.counts[b];
        if (count == 0) continue;
        const FixedSum mass{sh.mass_lo[b], sh.mass_hi[b]};
        const bool reached =
            kMass ? ToDouble(Add(above, mass)) >= sh.target : count_above + count >= rank;
        if (reached) {
          chosen = b;
          break;
        }
        last = b;
        above_before_last = above;
        count_before_last = count_above;
        above = Add(above, mass);
        count_above += count;
      }
      if (chosen < 0) {
        chosen = last;
        above = above_before_last;
        count_above = count_before_last;
      }
      sh.key = prefix | (static_cast<uint32_t>(chosen) << shift);
      sh.mass_above = above;
      sh.count_above = count_above;
      sh.count_equal = sh.counts[chosen];
    }
    __syncthreads();
    prefix = sh.key;
    mask |= 0xffu << shift;
  }
}

// The id of the m-th (1-based) element equal to `value` in z[0, n), in id order; m is at most
// their number. Each thread scans a contiguous chunk so that chunk order is id order.
__device__ int32_t NthEqualId(const float* z, int32_t n, float value, int32_t m, Shared& sh) {
  const int32_t chunk = (n + kThreads - 1) / kThreads;
  const int32_t begin = min(n, static_cast<int32_t>(threadIdx.x) * chunk);
  const int32_t end = min(n, begin + chunk);
  int32_t count = 0;
  for (int32_t i = begin; i < end; ++i) count += z[i] == value ? 1 : 0;
  const int32_t before = BlockExclusiveSum(count, sh);
  if (before < m && m <= before + count) {
    int32_t seen = before;
    for (int32_t i = begin; i < end; ++i) {
      if (z[i] == value && ++seen == m) {
        sh.tie_id = i;
        break;
      }
    }
  }
  __syncthreads();
  return sh.tie_id;
}

// Steps 4 to 8 of SamplingParams on the processed logits z (overwritten): DrawToken of
// engine/sampling/sampler.cc. The drawn token, or -1 when no processed logit is above -inf.
__device__ int32_t Draw(const SampleRowParams& p, float* z, int32_t vocab, Shared& sh) {
  const int32_t top = BlockFirstArgmax(z, vocab, sh);
  if (top < 0) return -1;
  const float max = z[top];
  __syncthreads();  // every thread has read z[top] before it is rescaled

  // The max becomes exactly 0 and NaN becomes -inf, as on the host.
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = z[i];
    const float scaled = x == max ? 0.0f : __fdiv_rn(__fsub_rn(x, max), p.temperature);
    z[i] = isnan(scaled) ? kNegInf : CanonicalZero(scaled);
  }
  __syncthreads();

  // top_k: the k-th largest value (over every token, -inf included) is the threshold.
  if (p.top_k > 0 && p.top_k < vocab) {
    RadixSelect<false>(z, vocab, p.top_k, 1.0f, sh);
    const float threshold = FloatFromKey(sh.key);
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      if (z[i] < threshold) z[i] = kNegInf;
    }
    __syncthreads();
  }

  // top_p: in order of (z desc, id asc), the shortest prefix whose mass reaches top_p · total.
  // The radix pass finds the boundary value b; of the tokens equal to b, the lowest ids are kept
  // until the mass is reached (each adds the same exp(b)).
  if (p.top_p < 1.0f) {
    RadixSelect<true>(z, vocab, 0, p.top_p, sh);
    const float boundary = FloatFromKey(sh.key);
    const int32_t count_equal = sh.count_equal;
    if (threadIdx.x == 0) {
      const FixedSum each = ToFixedSum(exp(static_cast<double>(boundary)));
      int32_t lo = 1;
      int32_t hi = count_equal;
      while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        const FixedSum mass = Add(sh.mass_above, Multiply(each, static_cast<uint32_t>(mid)));
        if (ToDouble(mass) >= sh.target) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      sh.keep_ties = lo;
    }
    __syncthreads();
    const int32_t keep_ties = sh.keep_ties;
    const int32_t last_kept =
        keep_ties < count_equal ? NthEqualId(z, vocab, boundary, keep_ties, sh) : vocab;
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = z[i];
      if (x < boundary || (x == boundary && i > last_kept)) z[i] = kNegInf;
    }
    __syncthreads();
  }

  // min_p: the max has z == 0, so exp(z) is the probability relative to it.
  if (p.min_p > 0.0f) {
    const double min_p = p.min_p;
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = z[i];
      if (x > kNegInf && exp(static_cast<double>(x)) < min_p) z[i] = kNegInf;
    }
    __syncthreads();
  }

  // The exponential race over the kept tokens, lowest id on equal scores. A token whose z plus
  // the largest possible noise is below the score of `top` (kept by every filter) cannot win.
  const double top_score = RaceScore(p, top, z[top]);
  double best = kNegInfD;
  int32_t best_index = -1;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = z[i];
    if (!(x > kNegInf) || static_cast<double>(x) + kMaxNoise < top_score) continue;
    const double score = RaceScore(p, i, x);
    if (Beats(score, i, best, best_index)) {
      best = score;
      best_index = i;
    }
  }
  BlockBest(best, best_index, sh);
  return best_index;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p, bool staged) {
  extern __shared__ float staged_row[];
  __shared__ Shared sh;
  const int64_t row = blockIdx.x;
  const int32_t vocab = static_cast<int32_t>(p.vocab);
  const float* x = p.logits + row * p.logits_stride_batch;
  float* z = staged ? staged_row : p.workspace + row * p.vocab;
  const SampleRowParams rp = p.rows[row];

  // The raw logits' max (the first largest, as std::max keeps it) and log-sum-exp, as
  // ComputeLogSumExp: NaN is skipped for the max but makes the sum NaN; all -inf gives NaN.
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) z[i] = x[i];
  __syncthreads();
  const int32_t raw_top = BlockFirstArgmax(z, vocab, sh);
  const double raw_max = raw_top >= 0 ? static_cast<double>(z[raw_top]) : kNegInfD;
  double partial = 0.0;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
    partial += exp(static_cast<double>(z[i]) - raw_max);
  }
  const double log_sum = log(BlockSum(partial, sh));
  auto log_prob = [&](float v) {
    return static_cast<float>(static_cast<double>(v) - raw_max - log_sum);
  };

  // Steps 1 and 2: one thread per token applies that token's adjacent entries in order.
  const int32_t adjust_begin = p.adjustment_offsets[row];
  const int32_t adjust_end = p.adjustment_offsets[row + 1];
  for (int32_t j = adjust_begin + threadIdx.x; j < adjust_end; j += kThreads) {
    const int32_t token = p.adjustments[j].token;
    if (j > adjust_begin && p.adjustments[j - 1].token == token) continue;
    if (token < 0 || token >= vocab) continue;
    float v = z[token];
    for (int32_t k = j; k < adjust_end && p.adjustments[k].token == token; ++k) {
      v = Adjust(v, p.adjustments[k], rp);
    }
    z[token] = v;
  }
  __syncthreads();

  // Steps 3 to 8; with everything banned, the raw argmax (0 if none), as Sampler::Sample.
  int32_t id = rp.temperature == 0.0f ? BlockFirstArgmax(z, vocab, sh) : Draw(rp, z, vocab, sh);
  if (id < 0) id = max(raw_top, 0);
  if (threadIdx.x == 0) {
    p.out_ids[row] = id;
    p.out_logprobs[row] = log_prob(x[id]);
  }

  // The top alternatives by (logprob desc, id asc), NaN keyed as -inf as on the host: the
  // n-th largest key by radix selection, the ties at it by lowest id, then a sort of the n.
  const int32_t num_top = min(max(rp.num_top_logprobs, 0), min(p.top_capacity, vocab));
  int32_t* top_ids = p.out_top_ids + row * p.out_top_stride_batch;
  float* top_logprobs = p.out_top_logprobs + row * p.out_top_stride_batch;
  if (num_top > 0) {
    __syncthreads();  // z is overwritten with the keys
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float lp = log_prob(x[i]);
      z[i] = isnan(lp) ? kNegInf : CanonicalZero(lp);
    }
    __syncthreads();
    RadixSelect<false>(z, vocab, num_top, 1.0f, sh);
    const float threshold = FloatFromKey(sh.key);
    const int32_t ties = num_top - sh.count_above;
    const int32_t last_tie =
        ties < sh.count_equal ? NthEqualId(z, vocab, threshold, ties, sh) : vocab;
    if (threadIdx.x == 0) sh.num_candidates = 0;
    __syncthreads();
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float key = z[i];
      if (key > threshold || (key == threshold && i <= last_tie)) {
        const int32_t slot = atomicAdd(&sh.num_candidates, 1);
        if (slot < kSampleMaxTopLogprobs) {
          sh.candidate_key[slot] = key;
          sh.candidate_id[slot] = i;
        }
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const int32_t found = min(sh.num_candidates, num_top);
      for (int32_t a = 1; a < found; ++a) {  // insertion sort of at most 20
        const float key = sh.candidate_key[a];
        const int32_t cand = sh.candidate_id[a];
        int32_t b = a;
        for (; b > 0 && (sh.candidate_key[b - 1] < key ||
                         (sh.candidate_key[b - 1] == key && sh.candidate_id[b - 1] > cand));
             --b) {
          sh.candidate_key[b] = sh.candidate_key[b - 1];
          sh.candidate_id[b] = sh.candidate_id[b - 1];
        }
        sh.candidate_key[b] = key;
        sh.candidate_id[b] = cand;
      }
      for (int32_t j = 0; j < found; ++j) {
        top_ids[j] = sh.candidate_id[j];
        top_logprobs[j] = log_prob(x[sh.candidate_id[j]]);
      }
      for (int32_t j = found; j < p.top_capacity; ++j) {
        top_ids[j] = -1;
        top_logprobs[j] = kNegInf;
      }
    }
  } else if (threadIdx.x == 0) {
    for (int32_t j = 0; j < p.top_capacity; ++j) {
      top_ids[j] = -1;
      top_logprobs[j] = kNegInf;
    }
  }
}

// The most dynamic shared memory a block of SampleKernel can have on the current device.
cudaError_t MaxDynamicSharedBytes(int* bytes) {
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  int optin = 0;
  error = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (error != cudaSuccess) return error;
  cudaFuncAttributes attributes{};
  error = cudaFuncGetAttributes(&attributes, SampleKernel);
  if (error != cudaSuccess) return error;
  *bytes = optin - static_cast<int>(attributes.sharedSizeBytes);
  return cudaSuccess;
}

// Whether a row of `vocab` floats fits in a block's shared memory beside the static part.
cudaError_t RowFitsInSharedMemory(int64_t vocab, bool* fits) {
  int max_dynamic = 0;
  const cudaError_t error = MaxDynamicSharedBytes(&max_dynamic);
  if (error != cudaSuccess) return error;
  *fits = vocab * static_cast<int64_t>(sizeof(float)) <= max_dynamic;
  return cudaSuccess;
}

}  // namespace

cudaError_t SampleWorkspaceBytes(int64_t batch, int64_t vocab, size_t* bytes,
                                 SampleVariant variant) {
  if (batch < 0 || vocab < 1 || vocab > kSampleMaxVocab || bytes == nullptr) {
    return cudaErrorInvalidValue;
  }
  bool fits = false;
  cudaError_t error =
      variant == SampleVariant::kAuto ? cuda::SampleClusterFits(vocab, &fits) : cudaSuccess;
  if (error == cudaSuccess && !fits) error = RowFitsInSharedMemory(vocab, &fits);
  if (error != cudaSuccess) return error;
  *bytes = fits ? 0 : static_cast<size_t>(batch * vocab) * sizeof(float);
  return cudaSuccess;
}

cudaError_t LaunchSample(const SampleParams& p, cudaStream_t stream) {
  if (!CheckSampleParams(p).ok() || p.logits == nullptr || p.rows == nullptr ||
      p.adjustment_offsets == nullptr || p.out_ids == nullptr || p.out_logprobs == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (p.top_capacity > 0 && (p.out_top_ids == nullptr || p.out_top_logprobs == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (p.batch == 0) return cudaSuccess;
  bool cluster = false;
  cudaError_t error =
      p.variant == SampleVariant::kAuto ? cuda::SampleClusterFits(p.vocab, &cluster) : cudaSuccess;
  if (error != cudaSuccess) return error;
  if (cluster) return cuda::LaunchSampleCluster(p, stream);
  bool staged = false;
  error = RowFitsInSharedMemory(p.vocab, &staged);
  if (error != cudaSuccess) return error;
  if (!staged && p.workspace == nullptr) return cudaErrorInvalidValue;
  const size_t dynamic_bytes = staged ? static_cast<size_t>(p.vocab) * sizeof(float) : 0;
  if (staged) {
    // Above 48 KB a block's dynamic shared memory must be asked for. Always the most there is,
    // so the setting does not depend on the vocabulary of the last launch.
    int max_dynamic = 0;
    error = MaxDynamicSharedBytes(&max_dynamic);
    if (error != cudaSuccess) return error;
    error = cudaFuncSetAttribute(SampleKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 max_dynamic);
    if (error != cudaSuccess) return error;
  }
  SampleKernel<<<static_cast<unsigned>(p.batch), kThreads, dynamic_bytes, stream>>>(p, staged);
  return cudaGetLastError();
}

}  // namespace hgrn2::kernels
