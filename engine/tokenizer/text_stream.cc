// TextStream: the stream decoder and the stop-string matcher, restarted where decoding fails.
#include "engine/tokenizer/text_stream.h"

#include <algorithm>
#include <utility>

#include "absl/status/statusor.h"

namespace hgrn2 {

TextStream::TextStream(const Tokenizer* tokenizer, absl::Span<const int32_t> prompt,
                       std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer), matcher_(std::move(stop_strings)) {
  if (tokenizer_ == nullptr) return;
  const size_t context = std::min(prompt.size(), kContextIds);
  decoder_.emplace(*tokenizer_, /*skip_special=*/true, prompt.subspan(prompt.size() - context));
}

bool TextStream::Push(int32_t token, std::string& text) {
  if (!decoder_ || stopped()) return false;
  absl::StatusOr<std::string> delta = decoder_->Push(token);
  // Ids outside the tokenizer's vocabulary are left out of the context a restart starts from.
  const bool known = token >= 0 && token < tokenizer_->vocab_size();
  if (known) {
    recent_ids_.push_back(token);
    if (recent_ids_.size() > kContextIds) recent_ids_.erase(recent_ids_.begin());
  }
  if (!delta.ok()) {
    if (first_restart_.ok()) first_restart_ = delta.status();
    // An unknown id has no text and left the decoder as it was: what it held back goes out. A
    // known id the decoder could not place goes out on its own.
    delta = known ? tokenizer_->Decode({token}, /*skip_special=*/true) : decoder_->Finish();
    decoder_.emplace(*tokenizer_, /*skip_special=*/true, recent_ids_);
    if (!delta.ok()) return false;
  }
  return !delta->empty() && AddText(*delta, text);
}

void TextStream::Finish(std::string& text) {
  if (!decoder_ || stopped()) return;
  absl::StatusOr<std::string> tail = decoder_->Finish();
  if (tail.ok() && !tail->empty() && AddText(*tail, text)) return;
  text += matcher_.Finish();
}

bool TextStream::AddText(absl::string_view delta, std::string& text) {
  StopStringMatcher::Result shown = matcher_.Push(delta);
  text += shown.text;
  if (shown.stopped) stop_string_ = std::move(shown.stop_string);
  return shown.stopped;
}

}  // namespace hgrn2
