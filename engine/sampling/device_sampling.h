// The host half of sampling on the device (kernels/sample.h): packing a batch's samplers into the
// arrays the CUDA sampler reads, and turning its outputs back into SampledTokens. No CUDA here.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"
#include "kernels/sample.h"

namespace hgrn2 {

// One step of a batch: Pack(), copy the three arrays to the device, LaunchSample, copy the
// outputs back, Unpack(). Reused from step to step (the vectors keep their capacity). Belongs
// to the thread that owns the device backend.
class DeviceSampleBatch {
 public:
  static constexpr int32_t kMaxTopLogprobs = kernels::kSampleMaxTopLogprobs;

  // Fills rows(), adjustment_offsets() and adjustments() for `samplers` (row r of the logits
  // belongs to samplers[r]). InvalidArgument, naming the row, when a sampler's vocab_size is not
  // `vocab` or it asks for more than kMaxTopLogprobs alternatives (the device sampler reports at
  // most that many; requests must be capped when admitted). Changes no sampler.
  absl::Status Pack(absl::Span<Sampler* const> samplers, int64_t vocab);

  // SampleParams::rows, adjustment_offsets (size rows + 1) and adjustments for the last Pack.
  absl::Span<const kernels::SampleRowParams> rows() const { return rows_; }
  absl::Span<const int32_t> adjustment_offsets() const { return offsets_; }
  absl::Span<const kernels::SampleAdjustment> adjustments() const { return adjustments_; }
  // SampleParams::top_capacity for the last Pack: the most alternatives any row asked for, so
  // that only what is wanted is copied back.
  int32_t top_capacity() const { return top_capacity_; }

  // Reads the kernel's outputs, copied to the host — ids and logprobs [rows], top_ids and
  // top_logprobs [rows][top_stride] — into out[r], and records each chosen token in samplers[r]
  // as Sample() does. `samplers` must be those given to the last Pack. Internal, recording
  // nothing, if an id is outside the vocabulary or a size does not match.
  absl::Status Unpack(absl::Span<Sampler* const> samplers, absl::Span<const int32_t> ids,
                      absl::Span<const float> logprobs, absl::Span<const int32_t> top_ids,
                      absl::Span<const float> top_logprobs, int64_t top_stride,
                      absl::Span<SampledToken> out);

 private:
  int64_t vocab_ = 0;
  std::vector<kernels::SampleRowParams> rows_;
  std::vector<int32_t> offsets_;
  std::vector<kernels::SampleAdjustment> adjustments_;
  std::vector<LogitAdjustment> scratch_;
  int32_t top_capacity_ = 0;
};

}  // namespace hgrn2
