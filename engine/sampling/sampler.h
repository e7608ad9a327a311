// Turning one row of logits into the next token: penalties, temperature, top-k/top-p/min-p,
// seeded random choice, log-probabilities; and the stopping rules of a generation.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/philox.h"

namespace hgrn2 {

// What a request asks of the sampler. The order of application (as in vLLM):
//   1. logit_bias is added to the logits;
//   2. repetition_penalty over prompt and generated tokens (a positive logit is divided by it,
//      a negative one multiplied); presence_penalty (once per distinct generated token) and
//      frequency_penalty (per occurrence) are subtracted for generated tokens only;
//   3. temperature 0: the argmax (lowest id on ties) — the steps below are skipped;
//   4. logits / temperature, softmax;
//   5. top_k keeps the k most probable tokens (ties with the k-th are kept too);
//   6. top_p keeps the most probable tokens, by probability then id, until their mass
//      reaches top_p (at least one token);
//   7. min_p keeps tokens whose probability is at least min_p times the largest;
//   8. one token is drawn from what is left.
// The draw uses a counter-based generator keyed by (seed, number of tokens this request has
// sampled, token id), so a seeded request gives the same tokens whatever else runs beside it.
struct SamplingParams {
  float temperature = 1.0f;         // >= 0; 0 = greedy
  int32_t top_k = 0;                // >= 0; 0 = off
  float top_p = 1.0f;               // in (0, 1]
  float min_p = 0.0f;               // in [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off
  float presence_penalty = 0.0f;    // in [-2, 2]
  float frequency_penalty = 0.0f;   // in [-2, 2]
  std::optional<uint64_t> seed;     // absent: drawn from the system's entropy
  // (token id, added value); -inf bans. Entries for the same id add up.
  std::vector<std::pair<int32_t, float>> logit_bias;
  int32_t num_top_logprobs = 0;  // alternatives reported per token, >= 0

  // InvalidArgument naming the field and the value when out of range (NaN included) or a
  // logit_bias id is outside [0, vocab_size). A logit_bias value may be finite or -inf (a ban);
  // NaN and +inf are rejected (+inf would make the softmax NaN).
  absl::Status Validate(int64_t vocab_size) const;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

// The chosen token. Log-probabilities are those of the model's own distribution (log-softmax of
// the raw logits, before bias, penalties and temperature), as vLLM reports by default.
struct SampledToken {
  int32_t id = 0;
  float logprob = 0.0f;
  // min(num_top_logprobs, vocab_size) most probable, by logprob (descending) then id.
  std::vector<TokenLogprob> top;
};

// One change that Sample() makes to one token's logit before choosing (steps 1 and 2 of
// SamplingParams), for a sampler that runs elsewhere (the CUDA sampler, kernels/sample.h). An entry
// adds `bias` if `add_bias`, then divides a positive logit by repetition_penalty (multiplies a
// negative one) if `repetition`, then, if `count` > 0, subtracts frequency_penalty · count and
// presence_penalty — each in float, as Sample() does.
struct LogitAdjustment {
  int32_t id = 0;
  float bias = 0.0f;
  bool add_bias = false;
  bool repetition = false;
  int32_t count = 0;  // times generated; 0 unless presence or frequency penalty is on

  friend bool operator==(const LogitAdjustment&, const LogitAdjustment&) = default;
};

// Sampling state of one sequence: parameters, the draw counter and token counts for penalties.
// Thread-compatible: one sequence is sampled by one thread at a time.
class Sampler {
 public:
  // `params` must have passed Validate(vocab_size). `prompt` ids feed the repetition penalty
  // (ids outside [0, vocab_size) are ignored); presence and frequency penalties count only
  // generated tokens.
  Sampler(SamplingParams params, int64_t vocab_size, absl::Span<const int32_t> prompt);

  // Chooses the next token from the first vocab_size values of `row` (-inf bans a token; values
  // past vocab_size are padding, ignored) and records it as generated. A token whose processed
  // logit is -inf is never chosen, unless every processed logit is -inf: then the argmax of the raw
  // logits is returned (token 0 if those are all -inf too), so a request whose bias bans everything
  // still makes progress.
  SampledToken Sample(absl::Span<const float> row);

  // For sampling elsewhere: appends what Sample() would do to the logits before choosing, as
  // entries sorted by id, those of one id adjacent and to be applied in order (its logit_bias
  // entries in the order given, then one entry with its penalties). Costs O(entries), not
  // O(vocab_size): the ids touched by penalties are kept in a sorted list.
  void AppendLogitAdjustments(std::vector<LogitAdjustment>& out) const;
  // Records `id` (in [0, vocab_size)) as the token chosen by this step, exactly as Sample() does
  // after choosing: advances the draw counter and the penalty counts.
  void RecordSampled(int32_t id);

  const SamplingParams& params() const { return params_; }
  int64_t vocab_size() const { return vocab_size_; }
  uint64_t seed() const { return seed_; }
  // Tokens sampled so far (the counter of the random draw).
  int64_t num_sampled() const { return num_sampled_; }

 private:
  SamplingParams params_;
  int64_t vocab_size_;
  uint64_t seed_;
  int64_t num_sampled_ = 0;
  std::vector<int32_t> generated_counts_;  // per token id; empty unless a penalty needs it
  std::vector<uint8_t> seen_in_context_;   // prompt or generated; only with repetition_penalty
  // Ascending ids with seen_in_context_ set or a generated count, each once.
  std::vector<int32_t> penalized_ids_;
  // logit_bias with ids in range, stably sorted by id (the order Sample() applies them per id).
  std::vector<std::pair<int32_t, float>> sorted_bias_;
  std::vector<float> scratch_;  // working copy of the logits
  std::vector<int32_t> order_;  // token ids, for top-k/top-p and top logprobs
};

// Philox4x32-10 (Salmon et al. 2011, as in cuRAND): a uniform in the open interval (0, 1) for
// (seed, counter, index). The same function (kernels/philox.h) runs on the device in the CUDA
// sampler. Key = {seed lo, seed hi}, counter = {index lo, index hi, counter lo, counter hi}; the
// first output word x becomes UnitIntervalFromBits(x).
inline float PhiloxUniform(uint64_t seed, uint64_t counter, uint64_t index) {
  return kernels::PhiloxUniform(seed, counter, index);
}

// (2·(x >> 9) + 1) · 2^-24: the odd multiples of 2^-24, from 2^-24 to 1 - 2^-24, each exactly a
// float. Never 0 or 1 (see kernels/philox.h).
inline float UnitIntervalFromBits(uint32_t x) { return kernels::UnitIntervalFromBits(x); }

// The Philox4x32-10 block function (10 rounds, Random123's constants and key schedule): 4 output
// words for a 4-word counter and a 2-word key. Exposed for the known-answer tests and so that
// the device sampler can be checked against it.
std::array<uint32_t, 4> Philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Log-softmax of `logits` into `out` (same size), in float with a double-precision sum:
// out[i] = logits[i] - max - log(sum exp(logits - max)), computed in double and rounded once.
// -inf entries give -inf; if every entry is -inf the result is NaN.
void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out);

enum class FinishReason { kNone, kLength, kEos, kStop };

struct StoppingParams {
  int32_t max_new_tokens = 16;          // >= 1
  std::vector<int32_t> stop_token_ids;  // finish with kStop, the token included in the output
  bool ignore_eos = false;              // do not finish on the model's EOS ids

  absl::Status Validate(int64_t vocab_size) const;
};

// Whether generation ends after `token`, the `num_generated`-th generated token (1-based).
// EOS is checked first, then stop ids, then the length.
FinishReason CheckFinish(const StoppingParams& params, absl::Span<const int32_t> eos_token_ids,
                         int32_t token, int32_t num_generated);

}  // namespace hgrn2
