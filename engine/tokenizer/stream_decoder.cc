// StreamDecoder and StopStringMatcher.
#include "engine/tokenizer/stream_decoder.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/unicode.h"

namespace hgrn2 {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special,
                             absl::Span<const int32_t> context)
    : tokenizer_(tokenizer), skip_special_(skip_special), window_(context.begin(), context.end()) {
  absl::StatusOr<std::string> text = DecodeWindow();
  if (text.ok()) {
    shown_ = *std::move(text);
    shown_ids_ = window_.size();
    for (auto it = window_.rbegin(); it != window_.rend(); ++it) {
      if (skip_special_ && tokenizer_.IsSpecial(*it)) continue;
      joining_ = tokenizer_.MayJoinNext(*it);
      break;
    }
  } else {
    context_ok_ = false;  // reported by the first Push
    window_.clear();
  }
}

absl::Status StreamDecoder::ContextError() {
  return absl::InvalidArgumentError(
      "StreamDecoder: the context holds an id outside the vocabulary");
}

absl::StatusOr<std::string> StreamDecoder::DecodeWindow() const {
  return tokenizer_.Decode(window_, skip_special_);
}

absl::StatusOr<std::string> StreamDecoder::Push(int32_t id) {
  if (!context_ok_) return ContextError();
  if (id < 0 || id >= tokenizer_.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("StreamDecoder: token id ", id,
                                                   " is not in the vocabulary (",
                                                   tokenizer_.vocab_size(), " ids)"));
  }
  window_.push_back(id);
  // A skipped special token is not in the decoded text, so it does not end a byte-fallback run.
  if (!(skip_special_ && tokenizer_.IsSpecial(id))) joining_ = tokenizer_.MayJoinNext(id);
  if (joining_) return std::string();
  HGRN2_ASSIGN_OR_RETURN(std::string text, DecodeWindow());
  if (text.size() <= shown_.size() || absl::EndsWith(text, unicode::kReplacementChar)) {
    return std::string();
  }
  return TakeNewText(std::move(text));
}

absl::StatusOr<std::string> StreamDecoder::TakeNewText(std::string text) {
  if (!absl::StartsWith(text, shown_)) {
    // Cannot happen for the decoders implemented; refuse rather than show wrong text.
    return absl::InternalError(absl::StrCat("StreamDecoder: the decode of ", window_.size(),
                                            " ids no longer starts with the text already shown"));
  }
  std::string delta = text.substr(shown_.size());
  shown_ = std::move(text);
  shown_ids_ = window_.size();
  HGRN2_RETURN_IF_ERROR(Reanchor());
  return delta;
}

absl::Status StreamDecoder::Reanchor() {
  // The last anchor among the ids already shown: decoding may restart there.
  size_t anchor = shown_ids_;
  while (anchor > 0 && !tokenizer_.IsStreamAnchor(window_[anchor - 1])) --anchor;
  if (anchor <= 1) return absl::OkStatus();  // the window already starts at the best anchor
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(anchor - 1));
  shown_ids_ -= anchor - 1;
  HGRN2_ASSIGN_OR_RETURN(shown_, DecodeWindow());
  return absl::OkStatus();
}

absl::StatusOr<std::string> StreamDecoder::Finish() {
  if (!context_ok_) return ContextError();
  HGRN2_ASSIGN_OR_RETURN(std::string text, DecodeWindow());
  return TakeNewText(std::move(text));
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings)
    : stops_(std::move(stop_strings)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
  for (const std::string& stop : stops_) longest_ = std::max(longest_, stop.size());
}

StopStringMatcher::Result StopStringMatcher::Push(absl::string_view delta) {
  Result result;
  if (stopped_) return result;
  const size_t old_size = held_.size();
  held_.append(delta.data(), delta.size());
  // A stop string not found before cannot start earlier than longest_ - 1 bytes before the end
  // of the old text (held_ never keeps more than that).
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  const size_t from = old_size >= longest_ ? old_size - longest_ + 1 : 0;
  for (const std::string& stop : stops_) {
    const size_t at = held_.find(stop, from);
    if (at < best) {
      best = at;
      best_stop = &stop;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    result.stopped = true;
    result.stop_string = *best_stop;
    result.text = held_.substr(0, best);
    held_.clear();
    return result;
  }
  // Keep the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, held_.size()); n > keep; --n) {
      if (absl::EndsWith(held_, absl::string_view(stop).substr(0, n))) {
        keep = n;
        break;
      }
    }
  }
  result.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopStringMatcher::Finish() {
  std::string rest = std::move(held_);
  held_.clear();
  if (stopped_) return std::string();
  return rest;
}

}  // namespace hgrn2
