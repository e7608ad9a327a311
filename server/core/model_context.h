// What every front end's request handling needs to know about the served model: its config, its
// tokenizer, and the server's limits on what one request may ask for.
#pragma once

#include <cstdint>

#include "engine/checkpoint/model_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace hgrn2::server {

// Limits on what one request may ask for, each set by the hgrn2-server flag named beside it. A
// request over a limit gets INVALID_ARGUMENT naming the field, the limit and the flag.
struct RequestLimits {
  int64_t max_prompt_tokens = 16384;  // --max-prompt-tokens: prompt (or scored text) after encoding
  int32_t max_new_tokens = 4096;      // --max-new-tokens
  int32_t default_max_new_tokens = 256;  // --default-max-new-tokens: when a request leaves it at 0
  int32_t max_stop_strings = 16;         // --max-stop-strings
  int32_t max_stop_string_bytes = 256;   // --max-stop-string-bytes: each one
  int32_t max_stop_total_bytes = 4096;   // --max-stop-total-bytes: all of one request's together
  int32_t max_stop_token_ids = 64;       // --max-stop-token-ids
  // --max-logprobs: alternatives per token, at most ScoreRequest::kMaxTopLogprobs (the device
  // sampler's limit).
  int32_t max_logprobs = 20;
  int32_t max_logit_bias = 1024;       // --max-logit-bias: entries of sampling.logit_bias
  int32_t max_request_id_bytes = 256;  // --max-request-id-bytes
  int64_t max_text_bytes = 4 << 20;    // --max-text-bytes: a text prompt, context or continuation
  int32_t max_samples = 16;            // --max-n: GenerateRequest.n
  int32_t max_detokenize_ids = 65536;  // --max-detokenize-ids: DetokenizeRequest.token_ids
};

struct ModelContext {
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;  // null: the model serves token ids only
  RequestLimits limits;
};

}  // namespace hgrn2::server
