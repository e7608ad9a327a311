// The hgrn2.v1.Sessions handlers: ExportCall streams a snapshot in chunks, ImportCall gathers
// one, the unary calls answer from a session thread.
#include "server/grpc/sessions_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/core/call_scope.h"
#include "server/core/request_checks.h"
#include "server/grpc/call_info.h"
#include "server/grpc/grpc_status.h"

namespace hgrn2::server {
namespace {

int64_t UnixMillis(absl::Time time) {
  return time == absl::InfiniteFuture() ? 0 : absl::ToUnixMillis(time);
}

// The store's error, naming the session (when there is one).
absl::Status WithId(const absl::Status& status, const std::string& id) {
  if (id.empty()) return status;
  return absl::Status(status.code(), absl::StrCat("session \"", id, "\": ", status.message()));
}

// Runs `work` on a session thread and finishes the unary call with its status (messages name
// the session `id`).
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(const CallParts& parts, std::unique_ptr<CallScope> scope, std::string id,
            std::function<absl::Status()> work)
      : scope_(std::move(scope)), id_(std::move(id)) {
    parts.session_workers->Post([this, work = std::move(work)] {
      const absl::Status status = work();
      status_ = status.ok() ? status : WithId(status, id_);
      Finish(ToGrpcStatus(status_));
    });
  }
  void OnDone() override {
    scope_->End(status_);
    delete this;
  }

 private:
  const std::unique_ptr<CallScope> scope_;
  const std::string id_;
  absl::Status status_;
};

// Begins a Sessions call's scope and checks its request (`check`); a refusal finishes the call
// at once with the default reactor (returned in `refused`).
template <typename Check>
std::unique_ptr<CallScope> BeginOrRefuse(const CallParts& parts,
                                         grpc::CallbackServerContext* context, const char* method,
                                         Check check, grpc::ServerUnaryReactor*& refused) {
  absl::StatusOr<std::unique_ptr<CallScope>> scope =
      CallScope::Begin(parts, CallInfoOf(*context, method));
  absl::Status status = scope.ok() ? check() : scope.status();
  if (status.ok()) return *std::move(scope);
  if (scope.ok()) (*scope)->End(status);
  refused = context->DefaultReactor();
  refused->Finish(ToGrpcStatus(status));
  return nullptr;
}

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

// One ExportSession call: reads the snapshot on a session thread, then writes it in chunks, one
// write in flight at a time.
class ExportCall : public grpc::ServerWriteReactor<v1::SessionChunk> {
 public:
  ExportCall(const CallParts& parts, std::unique_ptr<CallScope> scope, std::string id)
      : scope_(std::move(scope)), key_{scope_->tenant(), std::move(id)} {
    parts.session_workers->Post([this, &parts] {
      absl::StatusOr<std::shared_ptr<const std::string>> snapshot = parts.sessions->Export(key_);
      if (!snapshot.ok()) return Complete(WithId(snapshot.status(), key_.id));
      snapshot_ = *std::move(snapshot);
      WriteNext();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Complete(absl::CancelledError("the client went away"));
    WriteNext();
  }

  void OnDone() override {
    scope_->End(status_);
    delete this;
  }

 private:
  void WriteNext() {
    if (offset_ >= snapshot_->size() && offset_ > 0) {
      return Complete(absl::OkStatus());
    }
    chunk_.Clear();
    if (offset_ == 0) chunk_.set_session_id(key_.id);
    const size_t n = std::min(SessionsService::kChunkBytes, snapshot_->size() - offset_);
    chunk_.set_data(snapshot_->data() + offset_, n);
    offset_ += n;
    if (offset_ >= snapshot_->size()) {
      status_ = absl::OkStatus();
      StartWriteAndFinish(&chunk_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    StartWrite(&chunk_);
  }

  void Complete(const absl::Status& status) {
    status_ = status;
    Finish(ToGrpcStatus(status));
  }

  const std::unique_ptr<CallScope> scope_;
  const session::SessionKey key_;
  std::shared_ptr<const std::string> snapshot_;
  size_t offset_ = 0;
  v1::SessionChunk chunk_;
  absl::Status status_ = absl::UnknownError("the call ended before it finished");
};

// One ImportSession call: gathers the chunks (up to a limit), then checks and stores the whole
// snapshot on a session thread.
class ImportCall : public grpc::ServerReadReactor<v1::SessionChunk> {
 public:
  ImportCall(const CallParts& parts, std::unique_ptr<CallScope> scope, size_t max_bytes,
             v1::SessionInfo* response)
      : parts_(parts), scope_(std::move(scope)), max_bytes_(max_bytes), response_(response) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return Store();  // the client finished sending (or went away: Finish is ignored)
    if (first_) {
      first_ = false;
      id_ = chunk_.session_id();
      if (absl::Status valid = CheckSessionId(id_, "session_id"); !valid.ok()) {
        return Complete(
            absl::InvalidArgumentError(absl::StrCat("the first chunk's ", valid.message())));
      }
      if (chunk_.has_if_revision()) if_revision_ = chunk_.if_revision();
    } else if (!chunk_.session_id().empty() && chunk_.session_id() != id_) {
      return Complete(absl::InvalidArgumentError(
          absl::StrCat("session_id: chunks name \"", id_, "\" and \"", chunk_.session_id(), "\"")));
    } else if (chunk_.has_if_revision()) {
      return Complete(absl::InvalidArgumentError("if_revision: only in the first chunk"));
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
    scope_->End(status_);
    delete this;
  }

 private:
  void Store() {
    if (first_) {
      return Complete(absl::InvalidArgumentError("no chunks: nothing to import"));
    }
    parts_.session_workers->Post([this] {
      absl::StatusOr<session::SessionRecord> record =
          parts_.sessions->Import({scope_->tenant(), id_}, std::move(data_), if_revision_);
      if (!record.ok()) return Complete(WithId(record.status(), id_));
      ToProto(*record, *response_);
      Complete(absl::OkStatus());
    });
  }

  void Complete(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    status_ = status;
    Finish(ToGrpcStatus(status));
  }

  const CallParts& parts_;
  const std::unique_ptr<CallScope> scope_;
  const size_t max_bytes_;
  v1::SessionInfo* const response_;
  v1::SessionChunk chunk_;
  bool first_ = true;
  bool finished_ = false;
  std::string id_;
  std::optional<uint64_t> if_revision_;  // the first chunk's
  std::string data_;
  absl::Status status_ = absl::UnknownError("the call ended before it finished");
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
  out.set_revision(record.revision);
}

SessionsService::SessionsService(const CallParts& parts, size_t max_snapshot_bytes)
    : parts_(parts), max_snapshot_bytes_(max_snapshot_bytes) {}

grpc::ServerWriteReactor<v1::SessionChunk>* SessionsService::ExportSession(
    grpc::CallbackServerContext* context, const v1::ExportSessionRequest* request) {
  // Finishes at once; the scope (when the call got one) ends first.
  class Refused : public grpc::ServerWriteReactor<v1::SessionChunk> {
   public:
    Refused(const absl::Status& status, CallScope* scope) {
      if (scope != nullptr) scope->End(status);
      Finish(ToGrpcStatus(status));
    }
    void OnDone() override { delete this; }
  };
  absl::StatusOr<std::unique_ptr<CallScope>> scope =
      CallScope::Begin(parts_, CallInfoOf(*context, "ExportSession"));
  if (!scope.ok()) return new Refused(scope.status(), nullptr);
  if (absl::Status valid = CheckSessionId(request->session_id(), "session_id"); !valid.ok()) {
    return new Refused(valid, scope->get());
  }
  return new ExportCall(parts_, *std::move(scope), request->session_id());
}

grpc::ServerReadReactor<v1::SessionChunk>* SessionsService::ImportSession(
    grpc::CallbackServerContext* context, v1::SessionInfo* response) {
  class Refused : public grpc::ServerReadReactor<v1::SessionChunk> {
   public:
    explicit Refused(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
    void OnDone() override { delete this; }
  };
  absl::StatusOr<std::unique_ptr<CallScope>> scope =
      CallScope::Begin(parts_, CallInfoOf(*context, "ImportSession"));
  if (!scope.ok()) return new Refused(scope.status());
  return new ImportCall(parts_, *std::move(scope), max_snapshot_bytes_, response);
}

grpc::ServerUnaryReactor* SessionsService::GetSession(grpc::CallbackServerContext* context,
                                                      const v1::GetSessionRequest* request,
                                                      v1::SessionInfo* response) {
  grpc::ServerUnaryReactor* refused = nullptr;
  std::unique_ptr<CallScope> scope = BeginOrRefuse(
      parts_, context, "GetSession",
      [&] { return CheckSessionId(request->session_id(), "session_id"); }, refused);
  if (scope == nullptr) return refused;
  session::SessionKey key{scope->tenant(), request->session_id()};
  return new UnaryCall(parts_, std::move(scope), key.id, [this, key, response]() -> absl::Status {
    absl::StatusOr<session::SessionRecord> record = parts_.sessions->Info(key);
    if (!record.ok()) return record.status();
    ToProto(*record, *response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* SessionsService::DeleteSession(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSessionRequest* request,
                                                         v1::DeleteSessionResponse*) {
  grpc::ServerUnaryReactor* refused = nullptr;
  std::unique_ptr<CallScope> scope = BeginOrRefuse(
      parts_, context, "DeleteSession",
      [&] { return CheckSessionId(request->session_id(), "session_id"); }, refused);
  if (scope == nullptr) return refused;
  session::SessionKey key{scope->tenant(), request->session_id()};
  return new UnaryCall(parts_, std::move(scope), key.id,
                       [this, key] { return parts_.sessions->Delete(key); });
}

grpc::ServerUnaryReactor* SessionsService::ListSessions(grpc::CallbackServerContext* context,
                                                        const v1::ListSessionsRequest* request,
                                                        v1::ListSessionsResponse* response) {
  absl::StatusOr<ListPage> page = CheckListPage(*request);
  grpc::ServerUnaryReactor* refused = nullptr;
  std::unique_ptr<CallScope> scope = BeginOrRefuse(
      parts_, context, "ListSessions", [&] { return page.status(); }, refused);
  if (scope == nullptr) return refused;
  std::string tenant = scope->tenant();
  return new UnaryCall(
      parts_, std::move(scope), "",
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
