// The one mapping from absl::Status (engine and server code) to grpc::Status (the wire).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace hgrn2::server {

// Same code (the two enums share their numbering) and message. Messages longer than 2 KiB are
// cut, so that a status never carries a request's whole text back.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical upper-case name of a code ("INVALID_ARGUMENT"), for metrics labels and logs.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace hgrn2::server
