// ScoreCall: the Score reply built from the request core's outcome (server/core/scoring.h).
#include "server/grpc/score_call.h"

#include <memory>
#include <mutex>
#include <utility>

#include "server/core/call_scope.h"
#include "server/core/scoring.h"
#include "server/grpc/call_info.h"
#include "server/grpc/grpc_status.h"
#include "server/grpc/messages.h"
#include "server/grpc/requests.h"

namespace hgrn2::server {
namespace {

class ScoreCall : public grpc::ServerUnaryReactor {
 public:
  ScoreCall(const CallParts& parts, std::shared_ptr<CallScope> scope, v1::ScoreResponse* response)
      : parts_(parts), scope_(std::move(scope)), response_(response) {}

  // Refused before the scoring started: the scope ends first, so the tenant's slot is free
  // before the client hears of the refusal.
  void Refuse(const absl::Status& status) {
    scope_->End(status);
    Complete(status);
  }

  void Start(PreparedScore prepared) {
    std::shared_ptr<Scoring> scoring = Scoring::Start(
        parts_, scope_, std::move(prepared),
        [this](absl::StatusOr<ScoreOutcome> outcome) { Answer(std::move(outcome)); });
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      scoring_ = scoring;
      cancelled = cancelled_;
    }
    if (cancelled) scoring->Cancel();
  }

  void OnCancel() override {
    std::shared_ptr<Scoring> scoring;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      scoring = scoring_;
    }
    if (scoring != nullptr) scoring->Cancel();
  }

  void OnDone() override {
    scope_->End(status_);
    delete this;
  }

 private:
  void Answer(absl::StatusOr<ScoreOutcome> outcome) {
    if (!outcome.ok()) return Complete(outcome.status());
    const Tokenizer* tokenizer = parts_.model->tokenizer;
    for (const ScoredToken& token : outcome->tokens) {
      response_->add_token_ids(token.id);
      response_->add_token_logprobs(token.logprob);
      if (!token.top.empty()) {
        AddLogprob(token.id, token.logprob, token.top, tokenizer, *response_->add_top_logprobs());
      }
    }
    response_->set_total_logprob(outcome->total_logprob);
    response_->set_is_greedy(outcome->is_greedy);
    response_->set_unscored_tokens(static_cast<uint32_t>(outcome->unscored_tokens));
    response_->set_context_tokens(static_cast<uint32_t>(outcome->context_tokens));
    response_->set_session_revision(outcome->session_revision);
    response_->set_request_id(scope_->request_id());
    Complete(absl::OkStatus());
  }

  void Complete(const absl::Status& status) {
    status_ = status;
    Finish(ToGrpcStatus(status));
  }

  const CallParts& parts_;
  const std::shared_ptr<CallScope> scope_;
  v1::ScoreResponse* const response_;
  std::mutex mutex_;
  std::shared_ptr<Scoring> scoring_;
  bool cancelled_ = false;
  absl::Status status_;  // written before Finish, read in OnDone
};

}  // namespace

grpc::ServerUnaryReactor* StartScoreCall(const CallParts& parts,
                                         grpc::CallbackServerContext* context,
                                         const v1::ScoreRequest& request,
                                         v1::ScoreResponse* response) {
  absl::StatusOr<std::unique_ptr<CallScope>> begun =
      CallScope::Begin(parts, CallInfoOf(*context, "Score", request.request_id()));
  if (!begun.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(begun.status()));
    return reactor;
  }
  auto* call = new ScoreCall(parts, *std::move(begun), response);
  absl::StatusOr<PreparedScore> prepared = PrepareScore(request, *parts.model);
  if (!prepared.ok()) {
    call->Refuse(prepared.status());
  } else {
    call->Start(*std::move(prepared));
  }
  return call;
}

}  // namespace hgrn2::server
