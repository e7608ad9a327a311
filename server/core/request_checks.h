// The checks every front end applies to a request's fields, whatever its wire format: sizes
// against the server's limits, ids against the vocabulary, text through the tokenizer, session
// and request ids. Each returns INVALID_ARGUMENT naming the field (as the front end spells it),
// the reason and, for a limit, the flag that sets it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/core/model_context.h"

namespace hgrn2::server {

// "<field>: <why>".
absl::Status Invalid(absl::string_view field, absl::string_view why);
// A size over its limit: "stop: 17 strings, the limit is 16 (--max-stop-strings)".
absl::Status OverLimit(absl::string_view field, int64_t size, absl::string_view unit, int64_t limit,
                       absl::string_view flag);
// A number over its limit: "n: must be at most 16 (--max-n), got 17".
absl::Status AboveMaximum(absl::string_view field, uint64_t value, int64_t limit,
                          absl::string_view flag);

// A text's size against --max-text-bytes.
absl::Status CheckTextBytes(absl::string_view text, absl::string_view field,
                            const RequestLimits& limits);
// Every id in [0, vocab_size): "field[3] = 70000 is outside the vocabulary [0, 32000)".
absl::Status CheckIds(absl::Span<const int32_t> ids, absl::string_view field,
                      const ModelConfig& config);
// A token count against --max-prompt-tokens.
absl::Status CheckLength(int64_t tokens, absl::string_view field, const ModelContext& model);
// The model's tokenizer, or why a text field cannot be taken (the model has none).
absl::StatusOr<const Tokenizer*> TokenizerFor(absl::string_view field, const ModelContext& model);
// Encodes `text` (its size already checked) without special tokens; BOS first when `add_bos` and
// the tokenizer has one.
absl::StatusOr<std::vector<int32_t>> EncodeText(absl::string_view text, bool add_bos,
                                                absl::string_view field, const ModelContext& model);
// Stop strings: count, each one's size and non-emptiness, their total; they need a tokenizer.
absl::Status CheckStopStrings(absl::Span<const std::string> stops, absl::string_view field,
                              const ModelContext& model);

// FAILED_PRECONDITION for a request that names a session on a server without sessions.
absl::Status SessionsOff();
// OK for a session id: 1 to 128 bytes of [A-Za-z0-9._:-], not starting with '.'.
absl::Status CheckSessionId(absl::string_view id, absl::string_view field);
// The request id to use: the client's (checked for length and printable ASCII) or a new one.
absl::StatusOr<std::string> RequestIdOf(absl::string_view given, const RequestLimits& limits);
// OK when every limit is usable (positive, default_max_new_tokens within max_new_tokens,
// max_logprobs within what the engine reports); INVALID_ARGUMENT naming the flag otherwise.
absl::Status CheckLimits(const RequestLimits& limits);

}  // namespace hgrn2::server
