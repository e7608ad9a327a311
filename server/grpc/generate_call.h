// GenerateCall: one hgrn2.v1.Inference/Generate call: the request into the request core, and the
// core's updates out as stream messages, one write in flight at a time.
#pragma once

#include <grpcpp/grpcpp.h>

#include "hgrn2/v1/inference.grpc.pb.h"
#include "server/core/call_parts.h"

namespace hgrn2::server {

// The reactor for one Generate call (it deletes itself once gRPC is done with it).
grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateCall(
    const CallParts& parts, grpc::CallbackServerContext* context,
    const v1::GenerateRequest& request);

}  // namespace hgrn2::server
