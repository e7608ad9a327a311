// Single-sequence generation and scoring over a ForwardPass.
#include "engine/model/generation.h"

#include <algorithm>
#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<DeviceTensor> PrefillSequence(ForwardPass& pass, SlotId slot,
                                             absl::Span<const int32_t> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("prefill: empty prompt");
  const int64_t piece = pass.options().max_tokens;
  DeviceTensor logits;
  for (int64_t begin = 0; begin < static_cast<int64_t>(tokens.size()); begin += piece) {
    const int64_t count = std::min<int64_t>(piece, static_cast<int64_t>(tokens.size()) - begin);
    const SequenceTokens seq{slot, tokens.subspan(begin, count)};
    HGRN2_ASSIGN_OR_RETURN(logits, pass.Prefill({&seq, 1}, LogitsFor::kLastToken));
  }
  return logits;
}

absl::StatusOr<GenerationResult> GenerateSequence(ForwardPass& pass,
                                                  absl::Span<const int32_t> prompt,
                                                  const SamplingParams& sampling,
                                                  const StoppingParams& stopping) {
  const ModelConfig& config = pass.model().config();
  HGRN2_RETURN_IF_ERROR(sampling.Validate(config.vocab_size));
  HGRN2_RETURN_IF_ERROR(stopping.Validate(config.vocab_size));
  if (prompt.empty()) return absl::InvalidArgumentError("generate: empty prompt");
  HGRN2_ASSIGN_OR_RETURN(SlotId slot, pass.pool().Allocate());
  absl::Cleanup free_slot = [&] { pass.pool().Free(slot).IgnoreError(); };

  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  Sampler sampler(sampling, config.vocab_size, prompt);
  Sampler* const samplers[] = {&sampler};
  Backend& backend = pass.model().backend();
  auto start = std::chrono::steady_clock::now();
  HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, PrefillSequence(pass, slot, prompt));
  while (true) {
    // The backend samples where the logits are; only the token comes back.
    SampledToken token;
    HGRN2_RETURN_IF_ERROR(backend.Sample(logits, samplers, {&token, 1}));
    result.tokens.push_back(token);
    if (result.tokens.size() == 1) {
      result.prefill_seconds = SecondsSince(start);
      start = std::chrono::steady_clock::now();
    }
    result.finish_reason = CheckFinish(stopping, config.eos_token_ids, token.id,
                                       static_cast<int32_t>(result.tokens.size()));
    if (result.finish_reason != FinishReason::kNone) break;
    HGRN2_ASSIGN_OR_RETURN(logits, pass.Decode({&slot, 1}, {&token.id, 1}));
  }
  if (result.tokens.size() > 1) result.decode_seconds = SecondsSince(start);
  return result;
}

absl::StatusOr<std::vector<float>> ScoreSequence(ForwardPass& pass,
                                                 absl::Span<const int32_t> tokens) {
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError("score: needs at least 2 tokens (the first is context)");
  }
  HGRN2_ASSIGN_OR_RETURN(SlotId slot, pass.pool().Allocate());
  absl::Cleanup free_slot = [&] { pass.pool().Free(slot).IgnoreError(); };
  const int64_t piece = pass.options().max_tokens;
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> logprobs;
  logprobs.reserve(tokens.size() - 1);
  // Row t of a piece predicts token t + 1; the prompt's last row predicts nothing.
  for (int64_t begin = 0; begin < n - 1; begin += piece) {
    const int64_t count = std::min<int64_t>(piece, n - 1 - begin);
    const SequenceTokens seq{slot, tokens.subspan(begin, count)};
    HGRN2_ASSIGN_OR_RETURN(DeviceTensor logits, pass.Prefill({&seq, 1}, LogitsFor::kEveryToken));
    HGRN2_ASSIGN_OR_RETURN(std::vector<float> piece_logprobs,
                           pass.TargetLogprobs(logits, tokens.subspan(begin + 1, count)));
    logprobs.insert(logprobs.end(), piece_logprobs.begin(), piece_logprobs.end());
  }
  return logprobs;
}

}  // namespace hgrn2
