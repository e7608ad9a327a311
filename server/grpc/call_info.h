// What the call scope needs from a gRPC call: its method, peer, key, trace context and deadline.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "server/core/call_scope.h"

namespace hgrn2::server {

// `request_id` is the request's own field where it has one (Generate, Score), else empty.
CallInfo CallInfoOf(const grpc::CallbackServerContext& context, std::string method,
                    std::string request_id = std::string());

// The call's deadline (InfiniteFuture when it has none).
absl::Time DeadlineOf(const grpc::CallbackServerContext& context);

}  // namespace hgrn2::server
