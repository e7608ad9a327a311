// GenerateCall: the Generate stream's flow control and its messages; the request core
// (server/core/generation.h) does the rest.
#include "server/grpc/generate_call.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/time/clock.h"
#include "server/core/call_scope.h"
#include "server/core/generation.h"
#include "server/grpc/call_info.h"
#include "server/grpc/grpc_status.h"
#include "server/grpc/messages.h"
#include "server/grpc/requests.h"

namespace hgrn2::server {
namespace {

// A cancellation this close to the call's deadline counts as the deadline passing.
constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(100);

// A call refused before a generation started: its scope (when it got one) ends first, so the
// tenant's slot is free before the client hears of the refusal; then it finishes.
class RefusedStream : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  RefusedStream(const absl::Status& status, CallScope* scope) {
    if (scope != nullptr) scope->End(status);
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

// Owned through shared_ptr: by itself from Begin until gRPC's OnDone, and by each queued pump, so
// a pump never outlives it.
//
// Flow control: one write is in flight at a time. Tokens that arrive meanwhile wait in the
// engine's streams and go out together in the next message, so a slow reader costs only its own
// stream, never the scheduler or other streams.
class GenerateCall : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                     public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(const CallParts& parts, std::shared_ptr<CallScope> scope)
      : parts_(parts), scope_(std::move(scope)) {}

  // Keeps itself alive until OnDone and starts the generation.
  static GenerateCall* Begin(std::shared_ptr<GenerateCall> call, PreparedGeneration prepared) {
    call->self_ = call;
    std::shared_ptr<Generation> generation =
        Generation::Start(call->parts_, call->scope_, std::move(prepared),
                          [weak = std::weak_ptr<GenerateCall>(call)] {
                            if (std::shared_ptr<GenerateCall> locked = weak.lock()) {
                              locked->Schedule();
                            }
                          });
    bool cancelled, at_deadline;
    {
      std::lock_guard<std::mutex> lock(call->mutex_);
      call->generation_ = generation;
      cancelled = call->cancelled_;
      at_deadline = call->cancelled_at_deadline_;
    }
    if (cancelled) generation->Cancel(at_deadline);  // OnCancel came before the generation
    GenerateCall* reactor = call.get();
    call->Pump();
    return reactor;
  }

  void OnWriteDone(bool ok) override {
    TakeOver();
    std::shared_ptr<Generation> generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!ok) generation = generation_;
    }
    if (generation != nullptr) generation->Cancel(/*deadline_passed=*/false);
    Pump();
  }

  void OnCancel() override {
    // gRPC's deadline timer may fire a little before absl::Now() reaches the deadline it gave
    // us; a cancellation that close to the deadline is the deadline's.
    const bool deadline_passed = absl::Now() + kDeadlineSlack >= scope_->deadline();
    std::shared_ptr<Generation> generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      cancelled_at_deadline_ = deadline_passed;
      generation = generation_;
    }
    if (generation != nullptr) generation->Cancel(deadline_passed);
  }

  void OnDone() override {
    TakeOver();
    scope_->End(final_status_);
    std::shared_ptr<GenerateCall> self = std::move(self_);  // may be the last reference
  }

 private:
  // Called on any thread (the scheduler's among them): queues one Pump unless one is queued.
  void Schedule() {
    if (pump_queued_.exchange(true)) return;
    parts_.workers->Post([self = shared_from_this()] {
      self->pump_queued_.store(false);
      self->Pump();
    });
  }

  // Before a StartWrite, StartWriteAndFinish or Finish, and first in what they lead to: gRPC
  // orders them inside its library, where ThreadSanitizer cannot see it; this counter shows that
  // order, so the worker that builds the next message is not reported as racing the worker that
  // built the last one.
  void HandOff() { handoffs_.fetch_add(1, std::memory_order_release); }
  void TakeOver() { static_cast<void>(handoffs_.load(std::memory_order_acquire)); }

  // Sends what the generation has, if no write is in flight. Runs on a worker or in OnWriteDone.
  void Pump() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (busy_ || finished_ || generation_ == nullptr) {
          again_ = true;
          return;
        }
        busy_ = true;
        again_ = false;
      }
      if (Step()) return;  // a write or the finish is in flight
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (!again_) return;
    }
  }

  // Takes the generation's next news and starts a write or the finish; false when there was
  // nothing to do.
  bool Step() {
    Generation::Event event = generation_->Next();
    if (event.update) {
      BuildMessage(*event.update);
      if (event.end && event.end->ok()) {
        FinishAs(absl::OkStatus());
        StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
      } else {
        HandOff();
        StartWrite(&message_);
      }
      return true;
    }
    if (event.end) {
      FinishAs(*event.end);
      Finish(ToGrpcStatus(*event.end));
      return true;
    }
    return false;
  }

  void FinishAs(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    final_status_ = status;
    HandOff();
  }

  void BuildMessage(const SampleUpdate& update) {
    message_.Clear();
    message_.set_index(static_cast<uint32_t>(update.index));
    const Tokenizer* tokenizer = parts_.model->tokenizer;
    for (const SampledToken& token : update.tokens) {
      message_.add_token_ids(token.id);
      AddLogprob(token.id, token.logprob, token.top, tokenizer, *message_.add_logprobs());
    }
    message_.set_text(update.text);
    if (update.finish) {
      const SampleFinish& finish = *update.finish;
      message_.set_finish_reason(ToProto(finish.reason));
      if (!finish.stop_string.empty()) message_.set_stop_string(finish.stop_string);
      v1::Usage& usage = *message_.mutable_usage();
      usage.set_prompt_tokens(static_cast<uint32_t>(finish.prompt_tokens));
      usage.set_generated_tokens(static_cast<uint32_t>(finish.generated_tokens));
      usage.set_cached_prompt_tokens(static_cast<uint32_t>(finish.cached_prompt_tokens));
      message_.set_resumed_revision(finish.resumed_revision);
      message_.set_saved_revision(finish.saved_revision);
    }
    if (!request_id_sent_) {
      message_.set_request_id(scope_->request_id());
      request_id_sent_ = true;
    }
  }

  const CallParts& parts_;
  const std::shared_ptr<CallScope> scope_;
  std::shared_ptr<GenerateCall> self_;
  std::atomic<bool> pump_queued_{false};
  std::atomic<uint64_t> handoffs_{0};

  std::mutex mutex_;
  std::shared_ptr<Generation> generation_;  // set once Begin has started it
  bool busy_ = false;                       // a thread is in Step, or a write is in flight
  bool again_ = false;                      // news arrived while busy
  bool finished_ = false;                   // the last write or Finish has started
  bool cancelled_ = false;  // OnCancel came (before generation_ was set, it is told here)
  bool cancelled_at_deadline_ = false;

  // Used by the one thread in Step at a time.
  v1::GenerateResponse message_;
  bool request_id_sent_ = false;
  absl::Status final_status_ = absl::UnknownError("the call ended before it finished");
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateCall(
    const CallParts& parts, grpc::CallbackServerContext* context,
    const v1::GenerateRequest& request) {
  absl::StatusOr<std::unique_ptr<CallScope>> begun =
      CallScope::Begin(parts, CallInfoOf(*context, "Generate", request.request_id()));
  if (!begun.ok()) return new RefusedStream(begun.status(), nullptr);
  std::shared_ptr<CallScope> scope = *std::move(begun);
  absl::StatusOr<PreparedGeneration> prepared = PrepareGenerate(request, *parts.model);
  if (!prepared.ok()) return new RefusedStream(prepared.status(), scope.get());
  return GenerateCall::Begin(std::make_shared<GenerateCall>(parts, std::move(scope)),
                             *std::move(prepared));
}

}  // namespace hgrn2::server
