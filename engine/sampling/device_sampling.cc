// Packing samplers for the CUDA sampler and reading its results back.
#include "engine/sampling/device_sampling.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace hgrn2 {

absl::Status DeviceSampleBatch::Pack(absl::Span<Sampler* const> samplers, int64_t vocab) {
  vocab_ = vocab;
  rows_.clear();
  offsets_.clear();
  adjustments_.clear();
  top_capacity_ = 0;
  offsets_.push_back(0);
  for (size_t r = 0; r < samplers.size(); ++r) {
    const Sampler& sampler = *samplers[r];
    const SamplingParams& params = sampler.params();
    if (sampler.vocab_size() != vocab) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, ": sampler vocab_size ",
                                                     sampler.vocab_size(), " != logits ", vocab));
    }
    if (params.num_top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r, ": num_top_logprobs must be <= ", kMaxTopLogprobs,
                       " for sampling on the device, got ", params.num_top_logprobs));
    }
    kernels::SampleRowParams row;
    row.seed = sampler.seed();
    row.counter = static_cast<uint64_t>(sampler.num_sampled());
    row.temperature = params.temperature;
    row.top_k = params.top_k;
    row.top_p = params.top_p;
    row.min_p = params.min_p;
    row.repetition_penalty = params.repetition_penalty;
    row.presence_penalty = params.presence_penalty;
    row.frequency_penalty = params.frequency_penalty;
    row.num_top_logprobs = params.num_top_logprobs;
    rows_.push_back(row);
    top_capacity_ = std::max(
        top_capacity_, static_cast<int32_t>(std::min<int64_t>(params.num_top_logprobs, vocab)));

    scratch_.clear();
    sampler.AppendLogitAdjustments(scratch_);
    for (const LogitAdjustment& a : scratch_) {
      kernels::SampleAdjustment entry;
      entry.token = a.id;
      entry.bias = a.bias;
      entry.count = a.count;
      entry.flags = (a.add_bias ? kernels::kSampleAddBias : 0u) |
                    (a.repetition ? kernels::kSampleRepetition : 0u);
      adjustments_.push_back(entry);
    }
    if (adjustments_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r, ": more than 2^31 logit adjustments in one batch"));
    }
    offsets_.push_back(static_cast<int32_t>(adjustments_.size()));
  }
  return absl::OkStatus();
}

absl::Status DeviceSampleBatch::Unpack(absl::Span<Sampler* const> samplers,
                                       absl::Span<const int32_t> ids,
                                       absl::Span<const float> logprobs,
                                       absl::Span<const int32_t> top_ids,
                                       absl::Span<const float> top_logprobs, int64_t top_stride,
                                       absl::Span<SampledToken> out) {
  const size_t rows = samplers.size();
  if (rows != rows_.size() || ids.size() < rows || logprobs.size() < rows || out.size() < rows ||
      top_stride < top_capacity_ ||
      (top_capacity_ > 0 && (top_ids.size() < rows * static_cast<size_t>(top_stride) ||
                             top_logprobs.size() < rows * static_cast<size_t>(top_stride)))) {
    return absl::InternalError(absl::StrCat("device sampling outputs do not match the batch of ",
                                            rows_.size(), " rows packed (", rows, " samplers)"));
  }
  // Check every id before any sampler advances, so a failure leaves them all as they were.
  for (size_t r = 0; r < rows; ++r) {
    if (ids[r] < 0 || ids[r] >= vocab_) {
      return absl::InternalError(absl::StrCat("device sampler chose token ", ids[r], " for row ", r,
                                              " (vocab ", vocab_, ")"));
    }
  }
  for (size_t r = 0; r < rows; ++r) {
    SampledToken& token = out[r];
    token.id = ids[r];
    token.logprob = logprobs[r];
    token.top.clear();
    const int64_t num_top =
        std::min<int64_t>({samplers[r]->params().num_top_logprobs, top_capacity_, vocab_});
    for (int64_t j = 0; j < num_top; ++j) {
      const size_t at = r * static_cast<size_t>(top_stride) + static_cast<size_t>(j);
      token.top.push_back({top_ids[at], top_logprobs[at]});
    }
    samplers[r]->RecordSampled(token.id);
  }
  return absl::OkStatus();
}

}  // namespace hgrn2
