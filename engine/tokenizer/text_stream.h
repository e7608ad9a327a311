// TextStream: one generated sequence's text as its tokens come: incremental detokenization,
// stop strings, and the text held back until it is known not to begin one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"

namespace hgrn2 {

// Used by one thread at a time. The texts Push and Finish add concatenate to the decode of the
// tokens (special tokens skipped) up to the first stop string, without it; nothing after a stop
// string is added.
class TextStream {
 public:
  // Prompt ids given to the decoder as already-shown context (their last few): the first token
  // keeps its leading space as it would after them.
  static constexpr size_t kContextIds = 16;

  // `tokenizer` must outlive the stream; null: a model without a tokenizer (no text, no stops).
  TextStream(const Tokenizer* tokenizer, absl::Span<const int32_t> prompt,
             std::vector<std::string> stop_strings);

  // Appends the text `token` completes (what may be shown so far) to `text`; true when a stop
  // string completed (stop_string() says which). After that, Push adds nothing and returns false.
  bool Push(int32_t token, std::string& text);

  // The end without a stop string: appends the text held back by the decoder and the matcher.
  void Finish(std::string& text);

  bool stopped() const { return stop_string_.has_value(); }
  const std::optional<std::string>& stop_string() const { return stop_string_; }
  // The first time the decoder lost its footing (a token it cannot place, e.g. an id past the
  // tokenizer's vocabulary, or a run of byte pieces that decodes differently as it grows): that
  // token's own text went out and decoding restarted after it. OK when it never happened; for
  // the caller's log.
  const absl::Status& first_restart() const { return first_restart_; }

 private:
  bool AddText(absl::string_view delta, std::string& text);

  const Tokenizer* tokenizer_;
  std::optional<StreamDecoder> decoder_;
  std::vector<int32_t> recent_ids_;  // the last few ids, to restart the decoder
  StopStringMatcher matcher_;
  std::optional<std::string> stop_string_;
  absl::Status first_restart_;
};

}  // namespace hgrn2
