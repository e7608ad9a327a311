// Pieces of hgrn2.v1 reply messages that several calls build the same way.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "hgrn2/v1/inference.pb.h"

namespace hgrn2::server {

v1::FinishReason ToProto(FinishReason reason);

// One token's log-probability and its most probable alternatives, each with its text (empty
// without a tokenizer).
void AddLogprob(int32_t id, float logprob, const std::vector<TokenLogprob>& top,
                const Tokenizer* tokenizer, v1::TokenLogprob& out);

}  // namespace hgrn2::server
