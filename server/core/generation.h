// Generation: one generation request on its way through the engine, for any front end: the
// session read and the id to save reserved, the request submitted, and the n samples' tokens
// turned into text (stop strings applied) as the front end asks for them, off the scheduler
// thread; the final state saved before the last update; token timing and usage recorded.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/session/session_manager.h"
#include "engine/tokenizer/text_stream.h"
#include "server/core/call_parts.h"
#include "server/core/call_scope.h"
#include "server/core/prepared_request.h"

namespace hgrn2::server {

// How one sample ended.
struct SampleFinish {
  FinishReason reason = FinishReason::kNone;  // kStop for a stop string too
  std::string stop_string;                    // the stop string that ended it, if one did
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // tokens handed out (up to and with a stop string's)
  int64_t cached_prompt_tokens = 0;
  uint64_t resumed_revision = 0;  // of the session it started from (0: none)
  uint64_t saved_revision = 0;    // of the session it saved (0: none)
};

// One sample's news: its new tokens and their text, and how it ended once it has.
struct SampleUpdate {
  int32_t index = 0;                 // which of the n samples
  std::vector<SampledToken> tokens;  // in order; none after the token that completed a stop
  std::string text;                  // what may be shown of them (held back: a possible stop)
  std::optional<SampleFinish> finish;
};

// Thread-safety: Start, Cancel from any thread; Next from one thread at a time (the front end's
// call serializes its steps).
class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // Starts `prepared` for the call in `scope`: at once,
  // or after the session work (reading the session, reserving the id to save) on a session
  // thread. `on_news` is called, from any thread (the scheduler's among them), whenever Next may
  // have something new; it must return quickly, must not block and must not call Next.
  static std::shared_ptr<Generation> Start(const CallParts& parts, std::shared_ptr<CallScope> scope,
                                           PreparedGeneration prepared,
                                           std::function<void()> on_news);
  ~Generation();

  // What Next hands out: one sample's update and, with the last sample's last update or alone, the
  // end of the whole generation (OK when every sample ended well; otherwise why it failed); or
  // nothing yet.
  struct Event {
    std::optional<SampleUpdate> update;
    std::optional<absl::Status> end;
  };
  // The next piece of news, the samples taken in turn. After an event with `end`, nothing more.
  Event Next();

  // The client went away (or its deadline passed: `deadline_passed`): the engine requests are
  // cancelled, and Next ends the generation with CANCELLED or DEADLINE_EXCEEDED once they have
  // stopped.
  void Cancel(bool deadline_passed);

 private:
  struct Sample {
    std::shared_ptr<GenerationStream> stream;
    std::optional<TextStream> text;
    bool engine_ended = false;
    bool done = false;  // its last update was handed out
    int64_t sent_tokens = 0;
  };

  Generation(const CallParts& parts, std::shared_ptr<CallScope> scope, PreparedGeneration prepared,
             std::function<void()> on_news);
  // Runs on the calling thread or a session thread.
  void Submit();
  void Fail(absl::Status status);
  void CancelEngineRequests();
  Event NextWhenGone();
  Event StepSample(size_t index, StreamUpdate update);
  // Starts saving the final state (n is 1 here); the sample's last update waits for it.
  void StartSave(SampleUpdate last, std::shared_ptr<const SequenceState> state,
                 int64_t generated_tokens);
  void RecordTokenTimes(size_t tokens);

  const CallParts& parts_;
  const std::shared_ptr<CallScope> scope_;
  PreparedGeneration prepared_;
  const std::function<void()> on_news_;
  session::SaveReservation reservation_;  // held while this generation will save a session
  int64_t history_tokens_ = 0;            // tokens in the session it started from
  uint64_t resumed_revision_ = 0;         // that session's revision

  std::mutex mutex_;
  bool submitted_ = false;  // the engine took the request; the samples' streams are set
  bool cancelled_ = false;
  bool deadline_passed_ = false;
  std::optional<absl::Status> failed_;        // ended before or outside the samples' updates
  std::optional<SampleUpdate> saved_update_;  // the last update, once its save is done
  bool saving_ = false;

  // Used by the one thread in Next at a time.
  std::vector<Sample> samples_;
  size_t next_sample_ = 0;
  bool ended_ = false;
  bool save_started_ = false;
  absl::Time last_tokens_at_ = absl::InfinitePast();
};

}  // namespace hgrn2::server
