// ScoreCall: one hgrn2.v1.Inference/Score call: the request into the request core, the outcome
// out as the reply.
#pragma once

#include <grpcpp/grpcpp.h>

#include "hgrn2/v1/inference.grpc.pb.h"
#include "server/core/call_parts.h"

namespace hgrn2::server {

// The reactor for one Score call (it deletes itself once gRPC is done with it).
grpc::ServerUnaryReactor* StartScoreCall(const CallParts& parts,
                                         grpc::CallbackServerContext* context,
                                         const v1::ScoreRequest& request,
                                         v1::ScoreResponse* response);

}  // namespace hgrn2::server
