// Streaming detokenization: StreamDecoder turns generated ids, one at a time, into deltas of
// complete UTF-8 text; StopStringMatcher holds back text that may begin a stop string and
// reports the text before a stop string once one is complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace hgrn2 {

// One per sequence, used by one thread at a time. The deltas of Push and Finish concatenate to
// exactly Decode(context + ids) with Decode(context) removed from its front: the text a full
// decode gives, never a broken character, because:
//  - text ending in a byte-fallback piece (skipped special tokens after it do not count), or in
//    U+FFFD (an unfinished byte-level character), is held until a later id shows whether it
//    completes;
//  - each step decodes only a window that starts at an anchor token (Tokenizer::IsStreamAnchor),
//    twice (without and with the newest ids) and emits the difference, so a decoder's
//    leading-space rules (Metaspace, Strip) apply to the window's first token in both decodes
//    and not to the new text.
class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder. `context`: ids already shown (e.g. the prompt's last
  // few), so that the first new token keeps its leading space as it would after them.
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special,
                absl::Span<const int32_t> context = {});

  // Adds one id; returns the text it completes (often empty). InvalidArgument for an id outside
  // the vocabulary (the decoder is then unchanged).
  absl::StatusOr<std::string> Push(int32_t id);

  // The text still held back (an unfinished character decodes as U+FFFD, as Decode does). The
  // decoder may be used on afterwards; it has then emitted everything.
  absl::StatusOr<std::string> Finish();

 private:
  static absl::Status ContextError();
  absl::StatusOr<std::string> DecodeWindow() const;
  // `text` decodes the whole window: returns what is new in it, and moves the window on.
  absl::StatusOr<std::string> TakeNewText(std::string text);
  absl::Status Reanchor();

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> window_;  // ids from the current anchor on
  std::string shown_;            // decode of the window's ids whose text is already out
  size_t shown_ids_ = 0;         // how many of window_ those are
  bool context_ok_ = true;       // false when `context` held an invalid id
  bool joining_ = false;         // the last decoded token may join the next into a character
};

// Holds back text that could begin a stop string. One per sequence, one thread at a time.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;  // safe to show: cannot be part of a stop string
    bool stopped = false;
    std::string stop_string;  // the one found, when stopped
  };

  // Adds a text delta. When a stop string is complete, `text` is everything before it that was
  // not yet returned, `stopped` is true, and later calls return nothing. The earliest stop
  // string in the text wins; at one position, the first in the constructor's list.
  Result Push(absl::string_view delta);

  // End of stream without a stop: the text held back.
  std::string Finish();

 private:
  std::vector<std::string> stops_;
  size_t longest_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace hgrn2
