// The hgrn2.v1.Sessions handlers: ExportCall streams a snapshot in chunks, ImportCall gathers
// one, the unary calls answer from a session thread.
#include "server/sessions_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"

namespace hgrn2::server {
namespace {

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

int64_t UnixMillis(absl::Time time) {
  return time == absl::InfiniteFuture() ? 0 : absl::ToUnixMillis(time);
}

// The store's error, naming the session (when there is one).
grpc::Status WithId(const absl::Status& status, const std::string& id) {
  if (id.empty()) return ToGrpcStatus(status);
  return ToGrpcStatus(
      absl::Status(status.code(), absl::StrCat("session \"", id, "\": ", status.message())));
}

// Runs `work` on a session thread and finishes the unary call with its status (messages name
// the session `id`).
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(const CallParts& parts, std::string rpc, std::string id, Admission admission,
            std::function<absl::Status()> work)
      : parts_(parts),
        rpc_(std::move(rpc)),
        id_(std::move(id)),
        admission_(std::move(admission)),
        start_(absl::Now()) {
    parts_.session_workers->Post([this, work = std::move(work)] {
      const absl::Status status = work();
      const grpc::Status answer = status.ok() ? grpc::Status::OK : WithId(status, id_);
      code_ = answer.error_code();
      Finish(answer);
    });
  }
  void OnDone() override {
    parts_.metrics->RecordRequest(rpc_, code_, SecondsSince(start_));
    parts_.calls->End();
    delete this;
  }

 private:
  const CallParts& parts_;
  const std::string rpc_;
  const std::string id_;
  const Admission admission_;  // the tenant's slot until the call is deleted
  const absl::Time start_;
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

// Finishes at once, counted in the metrics.
class RefusedUnary : public grpc::ServerUnaryReactor {
 public:
  RefusedUnary(const CallParts& parts, std::string rpc, const grpc::Status& status)
      : parts_(parts), rpc_(std::move(rpc)), code_(status.error_code()), start_(absl::Now()) {
    Finish(status);
  }
  void OnDone() override {
    parts_.metrics->RecordRequest(rpc_, code_, SecondsSince(start_));
    delete this;
  }

 private:
  const CallParts& parts_;
  const std::string rpc_;
  const grpc::StatusCode code_;
  const absl::Time start_;
};

// ListSessions' page: the id to list after (the page token is the last id the previous page
// looked at) and how many.
struct ListPage {
  std::string after;
  size_t size = 0;
};

absl::StatusOr<ListPage> CheckListPage(const v1::ListSessionsRequest& request) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size is ", request.page_size(), "; it must be 0 (the default, ",
                     SessionsService::kDefaultListPageSize, ") or more"));
  }
  ListPage page;
  page.size = request.page_size() == 0 ? SessionsService::kDefaultListPageSize
                                       : std::min<size_t>(static_cast<size_t>(request.page_size()),
                                                          SessionsService::kMaxListPageSize);
  if (!request.page_token().empty()) {
    if (!session::ValidateSessionId(request.page_token()).ok()) {
      return absl::InvalidArgumentError(
          "page_token is not one this server gave: pass a next_page_token unchanged");
    }
    page.after = request.page_token();
  }
  return page;
}

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is shutting down and takes no new requests");
}

// One ExportSession call: reads the snapshot on a session thread, then writes it in chunks, one
// write in flight at a time.
class ExportCall : public grpc::ServerWriteReactor<v1::SessionChunk> {
 public:
  ExportCall(const CallParts& parts, Admission admission, std::string id)
      : parts_(parts),
        admission_(std::move(admission)),
        key_{admission_.tenant(), std::move(id)},
        start_(absl::Now()) {
    parts_.session_workers->Post([this] {
      absl::StatusOr<std::shared_ptr<const std::string>> snapshot = parts_.sessions->Export(key_);
      if (!snapshot.ok()) return Complete(WithId(snapshot.status(), key_.id));
      snapshot_ = *std::move(snapshot);
      WriteNext();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Complete(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    WriteNext();
  }

  void OnDone() override {
    parts_.metrics->RecordRequest("ExportSession", code_, SecondsSince(start_));
    parts_.calls->End();
    delete this;
  }

 private:
  void WriteNext() {
    if (offset_ >= snapshot_->size() && offset_ > 0) {
      return Complete(grpc::Status::OK);
    }
    chunk_.Clear();
    if (offset_ == 0) chunk_.set_session_id(key_.id);
    const size_t n = std::min(SessionsService::kChunkBytes, snapshot_->size() - offset_);
    chunk_.set_data(snapshot_->data() + offset_, n);
    offset_ += n;
    if (offset_ >= snapshot_->size()) {
      code_ = grpc::StatusCode::OK;
      StartWriteAndFinish(&chunk_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    StartWrite(&chunk_);
  }

  void Complete(const grpc::Status& status) {
    code_ = status.error_code();
    Finish(status);
  }

  const CallParts& parts_;
  const Admission admission_;  // the tenant, and its slot until the call is deleted
  const session::SessionKey key_;
  const absl::Time start_;
  std::shared_ptr<const std::string> snapshot_;
  size_t offset_ = 0;
  v1::SessionChunk chunk_;
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

// One ImportSession call: gathers the chunks (up to a limit), then checks and stores the whole
// snapshot on a session thread.
class ImportCall : public grpc::ServerReadReactor<v1::SessionChunk> {
 public:
  ImportCall(const CallParts& parts, Admission admission, size_t max_bytes,
             v1::SessionInfo* response)
      : parts_(parts),
        admission_(std::move(admission)),
        max_bytes_(max_bytes),
        response_(response),
        start_(absl::Now()) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return Store();  // the client finished sending (or went away: Finish is ignored)
    if (first_) {
      first_ = false;
      id_ = chunk_.session_id();
      if (absl::Status valid = CheckSessionId(id_, "session_id"); !valid.ok()) {
        return Complete(ToGrpcStatus(
            absl::InvalidArgumentError(absl::StrCat("the first chunk's ", valid.message()))));
      }
    } else if (!chunk_.session_id().empty() && chunk_.session_id() != id_) {
      return Complete(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("session_id: chunks name \"", id_, "\" and \"", chunk_.session_id(), "\"")));
    }
    data_ += chunk_.data();
    if (data_.size() > max_bytes_) {
      // Larger than any snapshot of this model: the header says why when it can (another
      // model, another layout), else the size does.
      absl::Status why = session::Parse(data_, parts_.sessions->expected()).status();
      if (why.ok() || absl::IsInvalidArgument(why)) {
        why = absl::InvalidArgumentError(absl::StrCat(
            "data: more than ", max_bytes_, " bytes, larger than any snapshot of this model"));
      }
      return Complete(WithId(why, id_));
    }
    StartRead(&chunk_);
  }

  void OnDone() override {
    parts_.metrics->RecordRequest("ImportSession", code_, SecondsSince(start_));
    parts_.calls->End();
    delete this;
  }

 private:
  void Store() {
    if (first_) {
      return Complete(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no chunks: nothing to import"));
    }
    parts_.session_workers->Post([this] {
      absl::StatusOr<session::SessionRecord> record =
          parts_.sessions->Import({admission_.tenant(), id_}, std::move(data_));
      if (!record.ok()) return Complete(WithId(record.status(), id_));
      ToProto(*record, *response_);
      Complete(grpc::Status::OK);
    });
  }

  void Complete(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    code_ = status.error_code();
    Finish(status);
  }

  const CallParts& parts_;
  const Admission admission_;  // the tenant, and its slot until the call is deleted
  const size_t max_bytes_;
  v1::SessionInfo* const response_;
  const absl::Time start_;
  v1::SessionChunk chunk_;
  bool first_ = true;
  bool finished_ = false;
  std::string id_;
  std::string data_;
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

}  // namespace

void ToProto(const session::SessionRecord& record, v1::SessionInfo& out) {
  out.set_session_id(record.key.id);
  out.set_num_tokens(static_cast<uint64_t>(record.num_tokens));
  out.set_size_bytes(static_cast<uint64_t>(record.size_bytes));
  out.set_saved_at_unix_ms(UnixMillis(record.saved_at));
  out.set_expires_at_unix_ms(UnixMillis(record.expires_at));
  out.set_model_fingerprint(record.model_fingerprint);
  out.set_state_dtype(record.state_dtype);
}

SessionsService::SessionsService(const CallParts& parts, size_t max_snapshot_bytes)
    : parts_(parts), max_snapshot_bytes_(max_snapshot_bytes) {}

grpc::ServerWriteReactor<v1::SessionChunk>* SessionsService::ExportSession(
    grpc::CallbackServerContext* context, const v1::ExportSessionRequest* request) {
  class Refused : public grpc::ServerWriteReactor<v1::SessionChunk> {
   public:
    Refused(const CallParts& parts, const grpc::Status& status)
        : parts_(parts), code_(status.error_code()), start_(absl::Now()) {
      Finish(status);
    }
    void OnDone() override {
      parts_.metrics->RecordRequest("ExportSession", code_, SecondsSince(start_));
      delete this;
    }

   private:
    const CallParts& parts_;
    const grpc::StatusCode code_;
    const absl::Time start_;
  };
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) return new Refused(parts_, ToGrpcStatus(admission.status()));
  if (absl::Status valid = CheckSessionId(request->session_id(), "session_id"); !valid.ok()) {
    return new Refused(parts_, ToGrpcStatus(valid));
  }
  if (!parts_.calls->TryBegin()) return new Refused(parts_, Unavailable());
  return new ExportCall(parts_, *std::move(admission), request->session_id());
}

grpc::ServerReadReactor<v1::SessionChunk>* SessionsService::ImportSession(
    grpc::CallbackServerContext* context, v1::SessionInfo* response) {
  class Refused : public grpc::ServerReadReactor<v1::SessionChunk> {
   public:
    Refused(const CallParts& parts, const grpc::Status& status)
        : parts_(parts), code_(status.error_code()), start_(absl::Now()) {
      Finish(status);
    }
    void OnDone() override {
      parts_.metrics->RecordRequest("ImportSession", code_, SecondsSince(start_));
      delete this;
    }

   private:
    const CallParts& parts_;
    const grpc::StatusCode code_;
    const absl::Time start_;
  };
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) return new Refused(parts_, ToGrpcStatus(admission.status()));
  if (!parts_.calls->TryBegin()) return new Refused(parts_, Unavailable());
  return new ImportCall(parts_, *std::move(admission), max_snapshot_bytes_, response);
}

grpc::ServerUnaryReactor* SessionsService::GetSession(grpc::CallbackServerContext* context,
                                                      const v1::GetSessionRequest* request,
                                                      v1::SessionInfo* response) {
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return new RefusedUnary(parts_, "GetSession", ToGrpcStatus(admission.status()));
  }
  if (absl::Status valid = CheckSessionId(request->session_id(), "session_id"); !valid.ok()) {
    return new RefusedUnary(parts_, "GetSession", ToGrpcStatus(valid));
  }
  if (!parts_.calls->TryBegin()) return new RefusedUnary(parts_, "GetSession", Unavailable());
  session::SessionKey key{admission->tenant(), request->session_id()};
  return new UnaryCall(parts_, "GetSession", key.id, *std::move(admission),
                       [this, key, response]() -> absl::Status {
                         absl::StatusOr<session::SessionRecord> record = parts_.sessions->Info(key);
                         if (!record.ok()) return record.status();
                         ToProto(*record, *response);
                         return absl::OkStatus();
                       });
}

grpc::ServerUnaryReactor* SessionsService::DeleteSession(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSessionRequest* request,
                                                         v1::DeleteSessionResponse*) {
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return new RefusedUnary(parts_, "DeleteSession", ToGrpcStatus(admission.status()));
  }
  if (absl::Status valid = CheckSessionId(request->session_id(), "session_id"); !valid.ok()) {
    return new RefusedUnary(parts_, "DeleteSession", ToGrpcStatus(valid));
  }
  if (!parts_.calls->TryBegin()) return new RefusedUnary(parts_, "DeleteSession", Unavailable());
  session::SessionKey key{admission->tenant(), request->session_id()};
  return new UnaryCall(parts_, "DeleteSession", key.id, *std::move(admission),
                       [this, key] { return parts_.sessions->Delete(key); });
}

grpc::ServerUnaryReactor* SessionsService::ListSessions(grpc::CallbackServerContext* context,
                                                        const v1::ListSessionsRequest* request,
                                                        v1::ListSessionsResponse* response) {
  absl::StatusOr<Admission> admission = parts_.access->Admit(*context);
  if (!admission.ok()) {
    return new RefusedUnary(parts_, "ListSessions", ToGrpcStatus(admission.status()));
  }
  absl::StatusOr<ListPage> page = CheckListPage(*request);
  if (!page.ok()) return new RefusedUnary(parts_, "ListSessions", ToGrpcStatus(page.status()));
  if (!parts_.calls->TryBegin()) return new RefusedUnary(parts_, "ListSessions", Unavailable());
  std::string tenant = admission->tenant();
  return new UnaryCall(
      parts_, "ListSessions", "", *std::move(admission),
      [this, tenant = std::move(tenant), page = *std::move(page), response]() -> absl::Status {
        absl::StatusOr<session::SessionPage> records =
            parts_.sessions->List(tenant, page.after, page.size);
        if (!records.ok()) return records.status();
        for (const session::SessionRecord& record : records->records) {
          ToProto(record, *response->add_sessions());
        }
        response->set_next_page_token(records->next_after);
        return absl::OkStatus();
      });
}

}  // namespace hgrn2::server
