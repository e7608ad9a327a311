// SessionsService: the hgrn2.v1.Sessions gRPC service (callback API): export and import session
// snapshots in chunks, and get, delete and list sessions. Store I/O runs on the session threads.
#pragma once

#include "hgrn2/v1/sessions.grpc.pb.h"
#include "server/core/call_parts.h"

namespace hgrn2::server {

class SessionsService final : public v1::Sessions::CallbackService {
 public:
  // Chunks of an export are at most this big (well under gRPC's 4 MiB message limit).
  static constexpr size_t kChunkBytes = 1 << 20;
  // ListSessions' page size when the request leaves it 0, and the most one page holds (a page of
  // 1000 is about 150 KB).
  static constexpr size_t kDefaultListPageSize = 100;
  static constexpr size_t kMaxListPageSize = 1000;

  // `parts.sessions` must be set; everything must outlive the service. An import larger than
  // `max_snapshot_bytes` is refused as it arrives.
  SessionsService(const CallParts& parts, size_t max_snapshot_bytes);

  grpc::ServerWriteReactor<v1::SessionChunk>* ExportSession(
      grpc::CallbackServerContext* context, const v1::ExportSessionRequest* request) override;
  grpc::ServerReadReactor<v1::SessionChunk>* ImportSession(grpc::CallbackServerContext* context,
                                                           v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;

 private:
  const CallParts parts_;
  const size_t max_snapshot_bytes_;
};

// The proto form of a stored session's record.
void ToProto(const session::SessionRecord& record, v1::SessionInfo& out);

}  // namespace hgrn2::server
