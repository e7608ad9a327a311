// CallInfoOf: a gRPC call's metadata in the call scope's terms.
#include "server/grpc/call_info.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"

namespace hgrn2::server {
namespace {

std::optional<std::string> Metadata(const grpc::CallbackServerContext& context, const char* key) {
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find(key);
  if (found == metadata.end()) return std::nullopt;
  return std::string(found->second.data(), found->second.size());
}

}  // namespace

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

CallInfo CallInfoOf(const grpc::CallbackServerContext& context, std::string method,
                    std::string request_id) {
  CallInfo info;
  info.method = std::move(method);
  info.peer = context.peer();
  info.authorization = Metadata(context, "authorization");
  info.request_id = std::move(request_id);
  info.traceparent = Metadata(context, "traceparent").value_or(std::string());
  info.deadline = DeadlineOf(context);
  return info;
}

}  // namespace hgrn2::server
