// The CUDA sampler in one pass over each row, one cluster of 8 blocks a row: the same token, the
// same log-probabilities and alternatives as Sampler::Sample (engine/sampling/sampler.cc) and the
// block sampler (sample.cu), without sorting and without a pass per filter.
//
// Each block keeps its slice of the row in shared memory; the blocks agree on maxima, sums and
// candidates through distributed shared memory, one cluster barrier per exchange. The draw is
// the host's exponential race, argmax over the kept tokens of z_i - log(E_i), with E_i fixed by
// (seed, counter, i). Every filter keeps a prefix of the tokens in the order (z desc, id asc)
// (top_k: z >= the k-th largest; min_p: exp(z) >= min_p; top_p: the shortest prefix whose mass
// reaches top_p of what top_k kept), so the kept set S is such a prefix and
//   - top_k and min_p are tests of a token's own z (top_k's threshold by one radix selection);
//   - top_p is tested on the race's winner c alone: c is in S exactly when the mass of the
//     tokens before it is below the target. When it is not, nothing at or after c is either, so
//     the race runs again over the tokens before c (pivot rejection, as FlashInfer's samplers
//     do). The most probable token is always kept, so this ends; one round is the usual case.
// The result is the race's winner over S, as on the host, whatever the number of rounds.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/sample_cluster.cuh"
#include "kernels/cuda/sample_math.cuh"
#include "kernels/fixed_sum.h"
#include "kernels/sample.h"

namespace hgrn2::kernels::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kCtas = 8;  // blocks of a row's cluster: the portable cluster size
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int32_t kMaxSlice = 16384;  // logits a block keeps in shared memory (64 KiB)

// What a block tells the others at one cluster barrier: a candidate (value, index; aux rides
// along with it), a double sum and a fixed-point mass.
struct Published {
  double value;
  int32_t index;  // -1: none
  float aux;
  double sum;
  FixedSum mass;
};

struct ClusterShared {
  Published published[2];  // by the parity of the barrier that publishes it
  uint32_t histogram[2][256];
  double reduce_value[kWarps];
  int32_t reduce_index[kWarps];
  float reduce_aux[kWarps];
  double reduce_sum[kWarps];
  FixedSum reduce_mass[kWarps];
  uint32_t scan[kWarps];
  Published result;
  int32_t radix_bucket;
  int32_t radix_above;
  uint64_t warp_top[kWarps][kSampleMaxTopLogprobs];
  uint64_t block_top[kSampleMaxTopLogprobs];
};

// One block's view of its row.
struct Row {
  cg::cluster_group cluster;
  ClusterShared& sh;
  float* z;  // the block's slice: tokens [begin, begin + count)
  int32_t begin;
  int32_t count;
  int phase;  // cluster barriers passed
};

__device__ __forceinline__ FixedSum ShuffleDown(FixedSum m, int offset) {
  return {__shfl_down_sync(kFullMask, m.lo, offset), __shfl_down_sync(kFullMask, m.hi, offset)};
}

// Combines (value, index, aux), sum and mass over the warp into lane 0.
__device__ __forceinline__ void WarpCombine(Published& p) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const double value = __shfl_down_sync(kFullMask, p.value, offset);
    const int32_t index = __shfl_down_sync(kFullMask, p.index, offset);
    const float aux = __shfl_down_sync(kFullMask, p.aux, offset);
    if (Beats(value, index, p.value, p.index)) {
      p.value = value;
      p.index = index;
      p.aux = aux;
    }
    p.sum += __shfl_down_sync(kFullMask, p.sum, offset);
    p.mass = Add(p.mass, ShuffleDown(p.mass, offset));
  }
}

// The block's combination of every thread's `mine`, written where the next barrier publishes it.
__device__ void Publish(Row& row, Published mine) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  WarpCombine(mine);
  ClusterShared& sh = row.sh;
  if (lane == 0) {
    sh.reduce_value[warp] = mine.value;
    sh.reduce_index[warp] = mine.index;
    sh.reduce_aux[warp] = mine.aux;
    sh.reduce_sum[warp] = mine.sum;
    sh.reduce_mass[warp] = mine.mass;
  }
  __syncthreads();
  if (warp == 0) {
    Published p{kNegInfD, -1, 0.0f, 0.0, FixedSum{}};
    if (lane < kWarps) {
      p = {sh.reduce_value[lane], sh.reduce_index[lane], sh.reduce_aux[lane], sh.reduce_sum[lane],
           sh.reduce_mass[lane]};
    }
    WarpCombine(p);
    if (lane == 0) sh.published[row.phase & 1] = p;
  }
}

// The cluster barrier, then the combination of what every block published, the same in every
// block: the best candidate by Beats (a total order), the sums added in block order, the masses
// exactly.
__device__ Published Exchange(Row& row) {
  ClusterShared& sh = row.sh;
  const int slot = row.phase & 1;
  row.cluster.sync();
  ++row.phase;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    Published p{kNegInfD, -1, 0.0f, 0.0, FixedSum{}};
    if (lane < kCtas) p = *row.cluster.map_shared_rank(&sh.published[slot], lane);
    double sum = 0.0;
    FixedSum mass{};
#pragma unroll
    for (int r = 0; r < kCtas; ++r) {
      sum += __shfl_sync(kFullMask, p.sum, r);
      mass = Add(mass, FixedSum{__shfl_sync(kFullMask, p.mass.lo, r),
                                __shfl_sync(kFullMask, p.mass.hi, r)});
    }
    p.sum = 0.0;
    p.mass = FixedSum{};
    WarpCombine(p);
    if (lane == 0) sh.result = {p.value, p.index, p.aux, sum, mass};
  }
  __syncthreads();
  return sh.result;
}

__device__ __forceinline__ Published Candidate(double value, int32_t index, float aux = 0.0f) {
  return {value, index, aux, 0.0, FixedSum{}};
}

// The first largest value above -inf of the block's slice (NaN never wins), as a candidate.
__device__ Published SliceFirstArgmax(const Row& row) {
  Published best = Candidate(kNegInfD, -1);
  for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
    const float v = row.z[i];
    if (v > kNegInf && Beats(v, row.begin + i, best.value, best.index)) {
      best = Candidate(v, row.begin + i, v);
    }
  }
  return best;
}

// The ordered key of the rank-th largest z of the row (rank in [1, vocab]; -inf included), by
// radix selection 8 bits a pass: each block counts its slice, every block adds up all counts.
__device__ uint32_t KthLargestKey(Row& row, int32_t rank) {
  ClusterShared& sh = row.sh;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int32_t above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    // A buffer is counted into two barriers after the others last read it.
    const int slot = row.phase & 1;
    uint32_t* histogram = sh.histogram[slot];
    for (int b = threadIdx.x; b < 256; b += kThreads) histogram[b] = 0;
    __syncthreads();
    // The loop bound is the same for the whole block, so every lane reaches __match_any_sync.
    for (int32_t base = 0; base < row.count; base += kThreads) {
      const int32_t i = base + static_cast<int32_t>(threadIdx.x);
      const uint32_t key = i < row.count ? OrderedKey(row.z[i]) : 0;
      const bool counted = i < row.count && (key & mask) == prefix;
      const int b = counted ? static_cast<int>((key >> shift) & 0xffu) : -1;
      // Lanes of a warp in one bucket add once: most keys share a few buckets in early passes.
      const unsigned peers = __match_any_sync(kFullMask, b);
      if (counted && lane == __ffs(peers) - 1) atomicAdd(&histogram[b], __popc(peers));
    }
    row.cluster.sync();
    ++row.phase;
    // Thread t holds bucket 255 - t of the row; an inclusive scan over t counts the keys in
    // buckets >= 255 - t.
    uint32_t count = 0;
    if (threadIdx.x < 256) {
#pragma unroll
      for (int r = 0; r < kCtas; ++r) {
        count += row.cluster.map_shared_rank(histogram, r)[255 - threadIdx.x];
      }
    }
    uint32_t inclusive = count;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const uint32_t other = __shfl_up_sync(kFullMask, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    if (lane == 31) sh.scan[warp] = inclusive;
    __syncthreads();
    if (threadIdx.x < 256) {
      for (int w = 0; w < warp; ++w) inclusive += sh.scan[w];
      const int64_t before = above + static_cast<int64_t>(inclusive - count);
      if (count > 0 && before < rank && rank <= before + count) {
        sh.radix_bucket = 255 - static_cast<int>(threadIdx.x);
        sh.radix_above = static_cast<int32_t>(before);
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.radix_bucket) << shift;
    mask |= 0xffu << shift;
    above = sh.radix_above;
  }
  return prefix;
}

// Steps 4 to 8 of SamplingParams on the row's processed logits (overwritten), whose first
// largest is `top` with value `max`: DrawToken of engine/sampling/sampler.cc. -1 when top is -1.
__device__ int32_t Draw(Row& row, const SampleRowParams& p, int32_t vocab, int32_t top, float max) {
  if (top < 0) return -1;
  // The max becomes exactly 0 and NaN becomes -inf, as on the host.
  for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
    const float x = row.z[i];
    const float scaled = x == max ? 0.0f : __fdiv_rn(__fsub_rn(x, max), p.temperature);
    row.z[i] = isnan(scaled) ? kNegInf : CanonicalZero(scaled);
  }
  __syncthreads();
  float threshold = kNegInf;  // top_k: the k-th largest z; ties with it stay
  if (p.top_k > 0 && p.top_k < vocab) threshold = FloatFromKey(KthLargestKey(row, p.top_k));
  const bool top_p = p.top_p < 1.0f;
  const double min_p = p.min_p;
  // A token with z plus the largest noise below the score of `top` (kept by every filter, z 0)
  // cannot win.
  const double top_score = RaceScore(p, top, 0.0f);
  double target = 0.0;
  bool has_pivot = false;  // the race runs over the tokens before the pivot in (z desc, id asc)
  float pivot_z = 0.0f;
  int32_t pivot_id = 0;
  for (int round = 0;; ++round) {
    Published mine = Candidate(kNegInfD, -1);
    for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
      const float v = row.z[i];
      if (!(v > kNegInf) || v < threshold) continue;  // top_k
      const int32_t id = row.begin + i;
      const bool need_mass = round == 0 && top_p;
      const double e = need_mass || min_p > 0.0 ? exp(static_cast<double>(v)) : 0.0;
      if (need_mass) mine.mass = Add(mine.mass, ToFixedSum(e));  // what top_k kept
      if (min_p > 0.0 && e < min_p) continue;
      if (has_pivot && !(v > pivot_z || (v == pivot_z && id < pivot_id))) continue;
      if (static_cast<double>(v) + kMaxNoise < top_score) continue;
      const double score = RaceScore(p, id, v);
      if (Beats(score, id, mine.value, mine.index)) {
        mine.value = score;
        mine.index = id;
        mine.aux = v;
      }
    }
    Publish(row, mine);
    const Published race = Exchange(row);
    if (round == 0) target = static_cast<double>(p.top_p) * ToDouble(race.mass);
    const int32_t c = race.index >= 0 ? race.index : top;  // top always qualifies
    if (!top_p || c == top) return c;
    // top_p: c is kept when the mass of the tokens top_k kept before it is below the target.
    const float zc = race.aux;
    FixedSum before{};
    for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
      const float v = row.z[i];
      if (!(v > kNegInf) || v < threshold) continue;
      const int32_t id = row.begin + i;
      if (v > zc || (v == zc && id < c))
        before = Add(before, ToFixedSum(exp(static_cast<double>(v))));
    }
    Published mass = Candidate(kNegInfD, -1);
    mass.mass = before;
    Publish(row, mass);
    if (ToDouble(Exchange(row).mass) < target) return c;
    has_pivot = true;
    pivot_z = zc;
    pivot_id = c;
  }
}

__global__ void __launch_bounds__(kThreads, 2) SampleClusterKernel(SampleParams p, int32_t slice) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float slice_z[];
  __shared__ ClusterShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t r = blockIdx.x / kCtas;
  const int32_t vocab = static_cast<int32_t>(p.vocab);
  const int32_t begin = min(vocab, rank * slice);
  Row row{cluster, sh, slice_z, begin, min(vocab, begin + slice) - begin, 0};
  const float* x = p.logits + r * p.logits_stride_batch;
  const SampleRowParams rp = p.rows[r];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  // The raw logits' first largest (as std::max keeps it) and log-sum-exp, as ComputeLogSumExp:
  // NaN is skipped for the max but makes the sum NaN; all -inf gives NaN.
  for (int32_t i = threadIdx.x; i < row.count; i += kThreads) slice_z[i] = x[begin + i];
  __syncthreads();
  Publish(row, SliceFirstArgmax(row));
  const Published raw = Exchange(row);
  const int32_t raw_top = raw.index;
  const double raw_max = raw_top >= 0 ? raw.value : kNegInfD;
  double partial = 0.0;
  for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
    partial += exp(static_cast<double>(slice_z[i]) - raw_max);
  }
  __syncthreads();  // the raw slice is read before the adjustments change it

  // Steps 1 and 2: one thread per token applies that token's adjacent entries in order; each
  // block the tokens of its slice.
  const int32_t adjust_begin = p.adjustment_offsets[r];
  const int32_t adjust_end = p.adjustment_offsets[r + 1];
  for (int32_t j = adjust_begin + threadIdx.x; j < adjust_end; j += kThreads) {
    const int32_t token = p.adjustments[j].token;
    if (j > adjust_begin && p.adjustments[j - 1].token == token) continue;
    if (token < begin || token >= begin + row.count) continue;
    float v = slice_z[token - begin];
    for (int32_t k = j; k < adjust_end && p.adjustments[k].token == token; ++k) {
      v = Adjust(v, p.adjustments[k], rp);
    }
    slice_z[token - begin] = v;
  }
  __syncthreads();
  Published adjusted = SliceFirstArgmax(row);
  adjusted.sum = partial;
  Publish(row, adjusted);
  const Published processed = Exchange(row);
  const double log_sum = log(processed.sum);
  auto log_prob = [&](float v) {
    return static_cast<float>(static_cast<double>(v) - raw_max - log_sum);
  };

  // Steps 3 to 8; with everything banned, the raw argmax (0 if none), as Sampler::Sample.
  int32_t id = rp.temperature == 0.0f
                   ? processed.index
                   : Draw(row, rp, vocab, processed.index, static_cast<float>(processed.value));
  if (id < 0) id = max(raw_top, 0);

  // The top alternatives by (logprob desc, id asc), NaN keyed as -inf as on the host: the key
  // (ordered logprob, ~id) is a total order, so the best n of the row are the best n of the
  // blocks' best n, and those the best n of their warps' best n.
  const int32_t num_top = min(max(rp.num_top_logprobs, 0), min(p.top_capacity, vocab));
  if (num_top > 0) {
    __syncthreads();  // the slice becomes the logprobs' keys
    uint32_t* keys = reinterpret_cast<uint32_t*>(slice_z);
    for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
      const float lp = log_prob(x[begin + i]);
      keys[i] = OrderedKey(isnan(lp) ? kNegInf : CanonicalZero(lp));
    }
    // Each thread reads back only the keys it wrote.
    uint64_t below = ~uint64_t{0};
    for (int n = 0; n < num_top; ++n) {
      uint64_t best = 0;
      for (int32_t i = threadIdx.x; i < row.count; i += kThreads) {
        const uint64_t k = (static_cast<uint64_t>(keys[i]) << 32) |
                           (0xffffffffu - static_cast<uint32_t>(begin + i));
        if (k < below && k > best) best = k;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        best = max(best, __shfl_xor_sync(kFullMask, best, offset));
      }
      if (lane == 0) sh.warp_top[warp][n] = best;
      below = best;
    }
    __syncthreads();
    if (warp == 0) {
      // Rounds of the best below the last: the warps' lists hold kWarps · num_top keys.
      below = ~uint64_t{0};
      for (int n = 0; n < num_top; ++n) {
        uint64_t best = 0;
        for (int q = lane; q < kWarps * num_top; q += 32) {
          const uint64_t k = sh.warp_top[q / num_top][q % num_top];
          if (k < below && k > best) best = k;
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) {
          best = max(best, __shfl_xor_sync(kFullMask, best, offset));
        }
        if (lane == 0) sh.block_top[n] = best;
        below = best;
      }
    }
  }
  cluster.sync();  // the blocks' lists are complete

  if (rank == 0 && warp == 0) {
    int32_t* top_ids = p.out_top_ids + r * p.out_top_stride_batch;
    float* top_logprobs = p.out_top_logprobs + r * p.out_top_stride_batch;
    uint64_t below = ~uint64_t{0};
    for (int n = 0; n < num_top; ++n) {
      uint64_t best = 0;
      for (int q = lane; q < kCtas * num_top; q += 32) {
        const uint64_t k = cluster.map_shared_rank(sh.block_top, q / num_top)[q % num_top];
        if (k < below && k > best) best = k;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        best = max(best, __shfl_xor_sync(kFullMask, best, offset));
      }
      if (lane == 0) {
        const int32_t token = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(best));
        top_ids[n] = token;
        top_logprobs[n] = log_prob(x[token]);
      }
      below = best;
    }
    if (lane == 0) {
      for (int32_t j = num_top; j < p.top_capacity; ++j) {
        top_ids[j] = -1;
        top_logprobs[j] = kNegInf;
      }
      p.out_ids[r] = id;
      p.out_logprobs[r] = log_prob(x[id]);
    }
  }
  cluster.sync();  // no block leaves while block 0 reads its shared memory
#else
  __trap();  // launched only where SampleClusterFits holds
#endif
}

// The kernel's static shared memory, asked once.
cudaError_t StaticSharedBytes(size_t* bytes) {
  static const cudaFuncAttributes attributes = [] {
    cudaFuncAttributes a{};
    if (cudaFuncGetAttributes(&a, SampleClusterKernel) != cudaSuccess)
      a.sharedSizeBytes = ~size_t{0};
    return a;
  }();
  *bytes = attributes.sharedSizeBytes;
  return *bytes == ~size_t{0} ? cudaErrorInvalidDeviceFunction : cudaSuccess;
}

}  // namespace

cudaError_t SampleClusterFits(int64_t vocab, bool* fits) {
  *fits = false;
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  int major = 0;
  error = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (error != cudaSuccess) return error;
  *fits = major >= 9 && vocab >= 1 && vocab <= int64_t{kCtas} * kMaxSlice;
  return cudaSuccess;
}

cudaError_t LaunchSampleCluster(const SampleParams& p, cudaStream_t stream) {
  const int32_t slice = static_cast<int32_t>((p.vocab + kCtas - 1) / kCtas);
  const size_t dynamic_bytes = static_cast<size_t>(slice) * sizeof(float);
  size_t static_bytes = 0;
  cudaError_t error = StaticSharedBytes(&static_bytes);
  if (error != cudaSuccess) return error;
  if (static_bytes + dynamic_bytes > 48 * 1024) {
    // Always the most a slice can need, so the setting does not depend on the last launch.
    error = cudaFuncSetAttribute(SampleClusterKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(kMaxSlice * sizeof(float)));
    if (error != cudaSuccess) return error;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(p.batch * kCtas));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = dynamic_bytes;
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kCtas;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, SampleClusterKernel, p, slice);
}

}  // namespace hgrn2::kernels::cuda
