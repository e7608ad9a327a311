// Response pieces of the OpenAI-compatible API (see openai_responses.h).
#include "server/http/openai_responses.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/text_stream.h"

namespace hgrn2::server {

TokenTexts::TokenTexts(const Tokenizer* tokenizer, absl::Span<const int32_t> context)
    : tokenizer_(tokenizer) {
  if (tokenizer == nullptr) return;
  const size_t keep = std::min(context.size(), TextStream::kContextIds);
  decoder_.emplace(*tokenizer, /*skip_special=*/false, context.subspan(context.size() - keep));
}

std::string TokenTexts::Fallback(const Tokenizer* tokenizer, int32_t id) {
  if (tokenizer != nullptr) {
    std::string piece = tokenizer->PieceOf(id);
    if (!piece.empty()) return piece;
  }
  return absl::StrCat("token_id:", id);
}

std::string TokenTexts::Push(int32_t id) {
  if (!decoder_) return Fallback(tokenizer_, id);
  absl::StatusOr<std::string> text = decoder_->Push(id);
  return text.ok() ? *std::move(text) : Fallback(tokenizer_, id);
}

std::string TokenTexts::Peek(int32_t id) const {
  if (!decoder_) return Fallback(tokenizer_, id);
  StreamDecoder copy = *decoder_;
  absl::StatusOr<std::string> text = copy.Push(id);
  return text.ok() ? *std::move(text) : Fallback(tokenizer_, id);
}

TokenEntry MakeTokenEntry(TokenTexts& texts, int32_t id, std::optional<float> logprob,
                          absl::Span<const TokenLogprob> top, bool has_top) {
  TokenEntry entry;
  entry.logprob = logprob;
  entry.has_top = has_top;
  if (has_top) {
    entry.top.reserve(top.size());
    for (const TokenLogprob& alternative : top) {
      entry.top.emplace_back(texts.Peek(alternative.id), alternative.logprob);
    }
  }
  entry.text = texts.Push(id);
  return entry;
}

LegacyLogprobs::LegacyLogprobs()
    : tokens_(Json::array()),
      token_logprobs_(Json::array()),
      top_logprobs_(Json::array()),
      text_offset_(Json::array()) {}

void LegacyLogprobs::Add(const TokenEntry& entry, int64_t offset) {
  tokens_.push_back(entry.text);
  token_logprobs_.push_back(entry.logprob ? Json(*entry.logprob) : Json(nullptr));
  if (!entry.has_top || !entry.logprob) {
    top_logprobs_.push_back(nullptr);
  } else {
    // The chosen token first, then the alternatives: where two share a text, the alternative's
    // value stays, so the largest value is still the most probable token's.
    Json top = Json::object();
    top[entry.text] = *entry.logprob;
    for (const auto& [text, logprob] : entry.top) top[text] = logprob;
    top_logprobs_.push_back(std::move(top));
  }
  text_offset_.push_back(offset);
}

void LegacyLogprobs::Extend(const LegacyLogprobs& more) {
  for (size_t i = 0; i < more.tokens_.size(); ++i) {
    tokens_.push_back(more.tokens_[i]);
    token_logprobs_.push_back(more.token_logprobs_[i]);
    top_logprobs_.push_back(more.top_logprobs_[i]);
    text_offset_.push_back(more.text_offset_[i]);
  }
}

Json LegacyLogprobs::ToJson() const {
  return Json{{"tokens", tokens_},
              {"token_logprobs", token_logprobs_},
              {"top_logprobs", top_logprobs_},
              {"text_offset", text_offset_}};
}

namespace {

Json Bytes(const std::string& text) {
  Json bytes = Json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

Json ChatLogprob(const TokenEntry& entry) {
  Json top = Json::array();
  for (const auto& [text, logprob] : entry.top) {
    top.push_back(Json{{"token", text}, {"logprob", logprob}, {"bytes", Bytes(text)}});
  }
  return Json{{"token", entry.text},
              {"logprob", entry.logprob.value_or(0.0f)},
              {"bytes", Bytes(entry.text)},
              {"top_logprobs", std::move(top)}};
}

const char* FinishReasonText(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

Json UsageJson(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  return Json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"prompt_tokens_details", Json{{"cached_tokens", cached_tokens}}}};
}

std::string SseEvent(const Json& data) {
  return absl::StrCat("data: ", data.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

int64_t CodePoints(absl::string_view text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace hgrn2::server
