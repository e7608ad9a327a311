// Turning hgrn2.v1 request messages into engine requests: every field checked against the model
// and the server's limits, text encoded with the model's tokenizer. No gRPC calls here, so each
// rule is tested directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/model_config.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "hgrn2/v1/inference.pb.h"
#include "server/options.h"

namespace hgrn2::server {

// What request handling needs to know about the loaded model.
struct ModelContext {
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;  // null: the model serves token ids only
  RequestLimits limits;
};

struct PreparedGeneration {
  // Prompt (empty only with a session), sampling, stopping and priority; callbacks, the initial
  // state and return_final_state unset.
  GenerationRequest engine;
  std::vector<std::string> stop_strings;
  int32_t prompt_tokens = 0;
  int32_t num_samples = 1;      // GenerateRequest.n
  std::string session_id;       // start from this session (checked id), or empty
  std::string save_session_as;  // save the final state under this id, or empty
};

struct PreparedScore {
  ScoreRequest engine;              // tokens and alternatives; callbacks and initial state unset
  std::vector<int32_t> scored_ids;  // the continuation tokens that get a log-probability
  int32_t context_tokens = 0;
  int32_t unscored_tokens = 0;  // leading continuation tokens used as context only
  std::string session_id;       // condition on this session (checked id), or empty
};

// INVALID_ARGUMENT naming the field and the reason.
absl::StatusOr<PreparedGeneration> PrepareGenerate(const v1::GenerateRequest& request,
                                                   const ModelContext& model);
absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const ModelContext& model);
absl::StatusOr<std::vector<int32_t>> PrepareTokenize(const v1::TokenizeRequest& request,
                                                     const ModelContext& model);
// The ids to decode (count checked; their values are the tokenizer's to check).
absl::StatusOr<std::vector<int32_t>> PrepareDetokenize(const v1::DetokenizeRequest& request,
                                                       const ModelContext& model);
// OK when every limit is usable (positive, default_max_new_tokens within max_new_tokens,
// max_logprobs within what the engine reports); INVALID_ARGUMENT naming the flag otherwise.
absl::Status CheckLimits(const RequestLimits& limits);
// OK for a session id: 1 to 128 bytes of [A-Za-z0-9._:-], not starting with '.';
// INVALID_ARGUMENT naming `field` otherwise.
absl::Status CheckSessionId(absl::string_view id, absl::string_view field);
// The request id to use: the client's (checked for length and printable ASCII) or a new one.
absl::StatusOr<std::string> RequestIdOf(const std::string& given, const RequestLimits& limits);

}  // namespace hgrn2::server
