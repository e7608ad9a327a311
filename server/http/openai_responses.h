// Pieces of the OpenAI response bodies: token texts for log-probabilities, the legacy completions
// logprobs object and the chat one, usage, finish reasons, and server-sent event framing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/request.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace hgrn2::server {

using Json = nlohmann::ordered_json;

// The text each token adds to a sequence, special tokens shown: joined, a sample's token texts
// give its text (a character split over byte-fallback tokens comes with the token that completes
// it; the ones before give ""). Without a tokenizer a token reads "token_id:<id>".
// One sequence, one thread at a time.
class TokenTexts {
 public:
  TokenTexts(const Tokenizer* tokenizer, absl::Span<const int32_t> context);
  // The text `id` adds after the tokens pushed so far.
  std::string Push(int32_t id);
  // What Push(id) would return, without pushing (the text of an alternative).
  std::string Peek(int32_t id) const;

 private:
  static std::string Fallback(const Tokenizer* tokenizer, int32_t id);
  const Tokenizer* tokenizer_;
  std::optional<StreamDecoder> decoder_;
};

// One token of a logprobs answer.
struct TokenEntry {
  std::string text;
  std::optional<float> logprob;                    // none: the first prompt token (echo)
  std::vector<std::pair<std::string, float>> top;  // the alternatives, most probable first
  bool has_top = false;                            // false: top_logprobs is null there
};

// The token of `id` and its alternatives, texts from `texts` (which it advances).
TokenEntry MakeTokenEntry(TokenTexts& texts, int32_t id, std::optional<float> logprob,
                          absl::Span<const TokenLogprob> top, bool has_top);

// Legacy /v1/completions logprobs: {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
// top_logprobs maps text to logprob, the chosen token's and its alternatives.
class LegacyLogprobs {
 public:
  LegacyLogprobs();
  // `offset`: the token's first character in the choice's text (Unicode code points).
  void Add(const TokenEntry& entry, int64_t offset);
  // Appends `more`'s tokens after these.
  void Extend(const LegacyLogprobs& more);
  bool empty() const { return tokens_.empty(); }
  Json ToJson() const;

 private:
  Json tokens_, token_logprobs_, top_logprobs_, text_offset_;
};

// One entry of chat logprobs' "content": {"token", "logprob", "bytes", "top_logprobs"}.
Json ChatLogprob(const TokenEntry& entry);

// OpenAI's finish_reason: "length", or "stop" for EOS, a stop token or a stop string.
const char* FinishReasonText(FinishReason reason);
Json UsageJson(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens);
// "data: <json>\n\n".
std::string SseEvent(const Json& data);
// Unicode code points of UTF-8 text (what Python's len() counts).
int64_t CodePoints(absl::string_view text);

}  // namespace hgrn2::server
