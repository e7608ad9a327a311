// A request checked and turned into engine types by a front end (server/grpc/requests.h, the
// HTTP API's), ready for the request core (generation.h, scoring.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/session/session_manager.h"

namespace hgrn2::server {

struct PreparedGeneration {
  // Prompt (empty only with a session), sampling, stopping and priority; callbacks, the initial
  // state, the deadline and return_final_state unset.
  GenerationRequest engine;
  std::vector<std::string> stop_strings;
  int32_t prompt_tokens = 0;
  int32_t num_samples = 1;      // n
  std::string session_id;       // start from this session (checked id), or empty
  std::string save_session_as;  // save the final state under this id, or empty
  // What the save may replace (save_if_revision, save_overwrite; only with save_session_as).
  session::SaveOptions save_options;
};

struct PreparedScore {
  ScoreRequest engine;              // tokens and alternatives; callbacks and initial state unset
  std::vector<int32_t> scored_ids;  // the continuation tokens that get a log-probability
  int32_t context_tokens = 0;
  int32_t unscored_tokens = 0;  // leading continuation tokens used as context only
  std::string session_id;       // condition on this session (checked id), or empty
};

}  // namespace hgrn2::server
