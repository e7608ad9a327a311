// The sizes the CUDA kernels take: every limit in one place, for the launchers and the CUDA
// backend alike, and the violation of one as a value that names the parameter and the limit.
#pragma once

#include <cstdint>
#include <string>

namespace hgrn2::kernels {

// Grid dimensions y and z (heads, sequences of a batch) hold at most this many blocks.
inline constexpr int64_t kMaxGridYZ = 65535;

// The recurrence (hgrn2_step.h, hgrn2_prefill.h). Prefill keeps a block's state rows in registers,
// at most 32 values of a row per lane of 8: dk <= 256. The step takes the same limit, so that any
// layer one op takes, the other takes too.
inline constexpr int32_t kMaxKeyDim = 256;
// Short-conv taps: the kernels keep a channel's window in registers.
inline constexpr int32_t kMaxConvSize = 8;
// bf16 states: prefill's fast path is the only one that keeps them (no short conv, dk a multiple of
// 4, at most 128: a warp's 32 lanes hold 4 columns each). States one op writes the other reads, so
// both ops ask for it.
inline constexpr int32_t kMaxBf16StateKeyDim = 128;
inline constexpr int32_t kBf16StateKeyDimMultiple = 4;

// The sampler (sample.h). The most alternatives reported per row (OpenAI's own limit on
// top_logprobs).
inline constexpr int32_t kSampleMaxTopLogprobs = 20;
// The 128-bit fixed-point mass sums of top_p (fixed_sum.h) assume fewer than 2^24 terms.
inline constexpr int64_t kSampleMaxVocab = int64_t{1} << 24;
// Rows of logits per launch (a row's blocks are indexed in one grid dimension).
inline constexpr int64_t kSampleMaxBatch = int64_t{1} << 24;

// The small-batch GEMV (gemv.h): rows of activations per launch (one register accumulator per
// row and weight row of a thread), and the elements of its 16-byte loads.
inline constexpr int64_t kGemvMaxRows = 16;
inline constexpr int64_t kGemvVectorElements = 8;

// Why a launcher cannot take its params: `parameter` (null when it can) of `op` is `value`, and
// must be `requirement` `limit` (e.g. "at most" 256), `condition` (e.g. "with bf16 states") when
// the limit holds only then.
struct LimitViolation {
  const char* op = nullptr;
  const char* parameter = nullptr;
  const char* requirement = nullptr;
  int64_t limit = 0;
  int64_t value = 0;
  const char* condition = nullptr;

  bool ok() const { return parameter == nullptr; }
};

// "hgrn2 step: key_dim must be at most 256 for the CUDA kernels, got 300" (with a condition:
// "... at most 128 with bf16 states for the CUDA kernels ..."); "" when `v` is ok().
inline std::string Describe(const LimitViolation& v) {
  if (v.ok()) return "";
  std::string message = std::string(v.op) + ": " + v.parameter + " must be " + v.requirement + " " +
                        std::to_string(v.limit);
  if (v.condition != nullptr) message += std::string(" ") + v.condition;
  return message + " for the CUDA kernels, got " + std::to_string(v.value);
}

namespace limits_internal {
// The first violation of `value` <= `limit`, or none.
inline LimitViolation AtMost(const char* op, const char* parameter, int64_t value, int64_t limit,
                             const char* condition = nullptr) {
  if (value <= limit) return {};
  return {op, parameter, "at most", limit, value, condition};
}
inline LimitViolation AtLeast(const char* op, const char* parameter, int64_t value, int64_t limit,
                              const char* condition = nullptr) {
  if (value >= limit) return {};
  return {op, parameter, "at least", limit, value, condition};
}
}  // namespace limits_internal

}  // namespace hgrn2::kernels
