// The CPU sampler: logit processing, top-k/top-p/min-p, the seeded draw, log-probabilities and
// the stopping rules. It is also the reference the CUDA sampler is tested against.
#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/fixed_sum.h"

namespace hgrn2 {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

absl::Status OutOfRange(absl::string_view field, absl::string_view requirement, float value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", requirement, ", got ", value));
}

// max and log(sum exp(x - max)) of `values` in double; NaN entries are skipped for the max.
struct LogSumExp {
  double max;
  double log_sum;

  float LogProb(float x) const {
    return static_cast<float>(static_cast<double>(x) - max - log_sum);
  }
};

LogSumExp ComputeLogSumExp(absl::Span<const float> values) {
  float max = kNegInf;
  for (float x : values) max = std::max(max, x);
  double sum = 0.0;
  for (float x : values) sum += std::exp(static_cast<double>(x) - max);
  return {static_cast<double>(max), std::log(sum)};
}

// The first index of the largest value above -inf (NaN never wins), or -1 when there is none.
int32_t FirstArgmax(absl::Span<const float> values) {
  int32_t best = -1;
  float best_value = kNegInf;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > best_value) {
      best = static_cast<int32_t>(i);
      best_value = values[i];
    }
  }
  return best;
}

// Steps 4 to 8 of the header on the processed logits `z` (overwritten): the drawn token, or -1
// when no processed logit is above -inf. `order` is scratch space for token ids.
int32_t DrawToken(const SamplingParams& params, uint64_t seed, uint64_t counter,
                  std::vector<float>& z, std::vector<int32_t>& order) {
  const int32_t vocab = static_cast<int32_t>(z.size());
  const int32_t top = FirstArgmax(z);
  if (top < 0) return -1;

  // Subtracting the max before dividing keeps a tiny temperature from overflowing to +inf; the
  // max itself becomes exactly 0, so below exp(z) is the probability relative to the largest.
  const float max = z[top];
  const float temperature = params.temperature;
  for (float& x : z) {
    const float scaled = x == max ? 0.0f : (x - max) / temperature;
    x = std::isnan(scaled) ? kNegInf : scaled;
  }

  // top_k: the k-th largest value is the threshold; ties with it stay.
  if (params.top_k > 0 && params.top_k < vocab) {
    order.resize(z.size());
    std::iota(order.begin(), order.end(), 0);
    const auto kth = order.begin() + (params.top_k - 1);
    std::nth_element(order.begin(), kth, order.end(),
                     [&z](int32_t a, int32_t b) { return z[a] > z[b]; });
    const float threshold = z[*kth];
    for (float& x : z) {
      if (x < threshold) x = kNegInf;
    }
  }

  // top_p over the distribution renormalized to what top_k kept. The masses exp(z) <= 1 are
  // summed exactly in 128-bit fixed point (kernels/fixed_sum.h) and rounded once, so the sums do
  // not depend on the order of addition: the CUDA sampler, which adds in parallel, gets the same
  // bits. The running sum reaches top_p * total at the latest at the last token (top_p <= 1).
  if (params.top_p < 1.0f) {
    order.clear();
    for (int32_t i = 0; i < vocab; ++i) {
      if (z[i] > kNegInf) order.push_back(i);
    }
    std::sort(order.begin(), order.end(),
              [&z](int32_t a, int32_t b) { return z[a] != z[b] ? z[a] > z[b] : a < b; });
    auto mass = [&z](int32_t id) {
      return kernels::ToFixedSum(std::exp(static_cast<double>(z[id])));
    };
    kernels::FixedSum total{};
    for (int32_t id : order) total = kernels::Add(total, mass(id));
    const double target = static_cast<double>(params.top_p) * kernels::ToDouble(total);
    kernels::FixedSum cumulative{};
    size_t keep = order.size();
    for (size_t j = 0; j < order.size(); ++j) {
      cumulative = kernels::Add(cumulative, mass(order[j]));
      if (kernels::ToDouble(cumulative) >= target) {
        keep = j + 1;
        break;
      }
    }
    for (size_t j = keep; j < order.size(); ++j) z[order[j]] = kNegInf;
  }

  // min_p: the largest token has z == 0 and survives top_k and top_p, so p_i / p_max = exp(z_i).
  if (params.min_p > 0.0f) {
    const double min_p = params.min_p;
    for (float& x : z) {
      if (x > kNegInf && std::exp(static_cast<double>(x)) < min_p) x = kNegInf;
    }
  }

  // The exponential race: with E_i ~ Exp(1) independent, argmax p_i / E_i is distributed as the
  // renormalized p over the kept tokens, so no sort or cumulative sum is needed, and each
  // token's noise depends only on (seed, counter, id). In logs: z_i - log E_i, lowest id on ties.
  // The uniform is at most 1 - 2^-24, so -log E_i <= kMaxNoise: a token with
  // z_i + kMaxNoise below the best score so far cannot win and needs no draw. Starting from the
  // most probable token (`top`, z == 0, kept by every filter) skips almost the whole vocabulary;
  // the result is the same.
  constexpr double kMaxNoise = 16.7;  // -log(-log(1 - 2^-24)) = 16.64
  auto score_of = [&](int32_t i) {
    const double exponential = -std::log(static_cast<double>(PhiloxUniform(seed, counter, i)));
    return static_cast<double>(z[i]) - std::log(exponential);
  };
  int32_t best = top;
  double best_score = score_of(top);
  for (int32_t i = 0; i < vocab; ++i) {
    if (i == top || !(z[i] > kNegInf)) continue;
    if (static_cast<double>(z[i]) + kMaxNoise < best_score) continue;
    const double score = score_of(i);
    if (score > best_score || (score == best_score && i < best)) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

}  // namespace

absl::Status SamplingParams::Validate(int64_t vocab_size) const {
  if (!(temperature >= 0.0f)) return OutOfRange("temperature", ">= 0", temperature);
  if (!std::isfinite(temperature)) return OutOfRange("temperature", "finite", temperature);
  if (top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return OutOfRange("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0.0f)) {
    return OutOfRange("repetition_penalty", "> 0", repetition_penalty);
  }
  if (!std::isfinite(repetition_penalty)) {
    return OutOfRange("repetition_penalty", "finite", repetition_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  if (num_top_logprobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_top_logprobs must be >= 0, got ", num_top_logprobs));
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias token id must be in [0, ", vocab_size, "), got ", id));
    }
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias value for token ", id, " must be finite or -inf, got ", bias));
    }
  }
  return absl::OkStatus();
}

absl::Status StoppingParams::Validate(int64_t vocab_size) const {
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    const int32_t id = stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids[", i, "] must be in [0, ", vocab_size, "), got ", id));
    }
  }
  return absl::OkStatus();
}

std::array<uint32_t, 4> Philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  const kernels::PhiloxWords out = kernels::Philox4x32_10(
      kernels::PhiloxWords{{counter[0], counter[1], counter[2], counter[3]}}, key[0], key[1]);
  return {out.w[0], out.w[1], out.w[2], out.w[3]};
}

void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out) {
  assert(logits.size() == out.size());
  const LogSumExp lse = ComputeLogSumExp(logits);
  for (size_t i = 0; i < logits.size() && i < out.size(); ++i) out[i] = lse.LogProb(logits[i]);
}

Sampler::Sampler(SamplingParams params, int64_t vocab_size, absl::Span<const int32_t> prompt)
    : params_(std::move(params)), vocab_size_(vocab_size), seed_(0) {
  if (params_.seed.has_value()) {
    seed_ = *params_.seed;
  } else {
    std::random_device entropy;
    seed_ = (uint64_t{entropy()} << 32) ^ uint64_t { entropy() };
  }
  const size_t vocab = static_cast<size_t>(vocab_size_);
  if (params_.repetition_penalty != 1.0f) {
    seen_in_context_.assign(vocab, 0);
    for (int32_t id : prompt) {
      if (id >= 0 && id < vocab_size_) seen_in_context_[id] = 1;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    generated_counts_.assign(vocab, 0);
  }
  if (!seen_in_context_.empty()) {
    for (int32_t id = 0; id < vocab_size_; ++id) {
      if (seen_in_context_[id]) penalized_ids_.push_back(id);
    }
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= 0 && id < vocab_size_) sorted_bias_.emplace_back(id, bias);
  }
  std::stable_sort(sorted_bias_.begin(), sorted_bias_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  scratch_.reserve(vocab);
}

SampledToken Sampler::Sample(absl::Span<const float> row) {
  // A row may be padded past the vocabulary (device backends round it up); the padding is not a
  // token. Callers guarantee at least vocab_size values (Backend::Sample checks).
  assert(static_cast<int64_t>(row.size()) >= vocab_size_);
  const absl::Span<const float> logits = row.first(static_cast<size_t>(vocab_size_));
  const int32_t vocab = static_cast<int32_t>(logits.size());

  // Steps 1 and 2: bias, then penalties, as vLLM applies them (two separate subtractions).
  scratch_.assign(logits.begin(), logits.end());
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= 0 && id < vocab) scratch_[id] += bias;
  }
  if (!seen_in_context_.empty()) {
    const float penalty = params_.repetition_penalty;
    for (int32_t i = 0; i < vocab; ++i) {
      if (!seen_in_context_[i]) continue;
      float& x = scratch_[i];
      x = x > 0.0f ? x / penalty : x * penalty;
    }
  }
  if (!generated_counts_.empty()) {
    for (int32_t i = 0; i < vocab; ++i) {
      const int32_t count = generated_counts_[i];
      if (count == 0) continue;
      scratch_[i] -= params_.frequency_penalty * static_cast<float>(count);
      scratch_[i] -= params_.presence_penalty;
    }
  }

  // Steps 3 to 8.
  int32_t id =
      params_.temperature == 0.0f
          ? FirstArgmax(scratch_)
          : DrawToken(params_, seed_, static_cast<uint64_t>(num_sampled_), scratch_, order_);
  if (id < 0) id = std::max(FirstArgmax(logits), 0);  // everything banned: see the header

  // Log-probabilities of the model's own distribution.
  SampledToken result;
  result.id = id;
  const LogSumExp lse = ComputeLogSumExp(logits);
  result.logprob = lse.LogProb(logits[id]);
  const int32_t num_top = std::min(params_.num_top_logprobs, vocab);
  if (num_top > 0) {
    order_.resize(logits.size());
    std::iota(order_.begin(), order_.end(), 0);
    // Keyed on the rounded logprob itself, so equal reported values are ordered by id; NaN
    // sorts last so that the comparison stays a strict weak order.
    const auto key = [&](int32_t i) {
      const float logprob = lse.LogProb(logits[i]);
      return std::isnan(logprob) ? kNegInf : logprob;
    };
    std::partial_sort(order_.begin(), order_.begin() + num_top, order_.end(),
                      [&key](int32_t a, int32_t b) {
                        const float ka = key(a);
                        const float kb = key(b);
                        return ka != kb ? ka > kb : a < b;
                      });
    result.top.reserve(num_top);
    for (int32_t j = 0; j < num_top; ++j) {
      const int32_t alt = order_[j];
      result.top.push_back({alt, lse.LogProb(logits[alt])});
    }
  }

  RecordSampled(id);
  return result;
}

void Sampler::RecordSampled(int32_t id) {
  assert(id >= 0 && id < vocab_size_);
  ++num_sampled_;
  const bool was_penalized = (!seen_in_context_.empty() && seen_in_context_[id]) ||
                             (!generated_counts_.empty() && generated_counts_[id] > 0);
  if (!generated_counts_.empty()) ++generated_counts_[id];
  if (!seen_in_context_.empty()) seen_in_context_[id] = 1;
  if (!was_penalized && (!seen_in_context_.empty() || !generated_counts_.empty())) {
    penalized_ids_.insert(std::lower_bound(penalized_ids_.begin(), penalized_ids_.end(), id), id);
  }
}

void Sampler::AppendLogitAdjustments(std::vector<LogitAdjustment>& out) const {
  // A merge of two ascending lists; for one id its biases come first, as in Sample().
  size_t b = 0;
  for (size_t p = 0; p <= penalized_ids_.size(); ++p) {
    const int32_t next = p < penalized_ids_.size() ? penalized_ids_[p] : vocab_size_;
    for (; b < sorted_bias_.size() && sorted_bias_[b].first <= next; ++b) {
      out.push_back(
          {.id = sorted_bias_[b].first, .bias = sorted_bias_[b].second, .add_bias = true});
    }
    if (p == penalized_ids_.size()) break;
    LogitAdjustment penalty{.id = next};
    penalty.repetition = !seen_in_context_.empty() && seen_in_context_[next];
    penalty.count = generated_counts_.empty() ? 0 : generated_counts_[next];
    out.push_back(penalty);
  }
}

FinishReason CheckFinish(const StoppingParams& params, absl::Span<const int32_t> eos_token_ids,
                         int32_t token, int32_t num_generated) {
  if (!params.ignore_eos &&
      std::find(eos_token_ids.begin(), eos_token_ids.end(), token) != eos_token_ids.end()) {
    return FinishReason::kEos;
  }
  if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) !=
      params.stop_token_ids.end()) {
    return FinishReason::kStop;
  }
  if (num_generated >= params.max_new_tokens) return FinishReason::kLength;
  return FinishReason::kNone;
}

}  // namespace hgrn2
