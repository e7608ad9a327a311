// Turning hgrn2.v1 request messages into the request core's types: every field checked against
// the model and the server's limits (server/core/request_checks.h), text encoded with the
// model's tokenizer. No gRPC calls here, so each rule is tested directly.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "hgrn2/v1/inference.pb.h"
#include "server/core/model_context.h"
#include "server/core/prepared_request.h"

namespace hgrn2::server {

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

}  // namespace hgrn2::server
