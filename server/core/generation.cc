// Generation: session work, submission, and the samples' updates (see generation.h).
#include "server/core/generation.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/core/log.h"
#include "server/core/request_checks.h"

namespace hgrn2::server {
namespace {

// The access log's spelling.
const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kNone:
      break;
  }
  return "";
}

Generation::Event Ended(absl::Status status) {
  Generation::Event event;
  event.end = std::move(status);
  return event;
}

Generation::Event Update(SampleUpdate update) {
  Generation::Event event;
  event.update = std::move(update);
  return event;
}

// The last sample's last update, with the generation's end.
Generation::Event Last(SampleUpdate update) {
  Generation::Event event = Update(std::move(update));
  event.end = absl::OkStatus();
  return event;
}

}  // namespace

std::shared_ptr<Generation> Generation::Start(const CallParts& parts,
                                              std::shared_ptr<CallScope> scope,
                                              PreparedGeneration prepared,
                                              std::function<void()> on_news) {
  std::shared_ptr<Generation> generation(
      new Generation(parts, std::move(scope), std::move(prepared), std::move(on_news)));
  if (generation->prepared_.session_id.empty() && generation->prepared_.save_session_as.empty()) {
    generation->Submit();
  } else if (parts.sessions == nullptr) {
    generation->Fail(SessionsOff());
  } else {
    parts.session_workers->Post([generation] { generation->Submit(); });
  }
  return generation;
}

Generation::Generation(const CallParts& parts, std::shared_ptr<CallScope> scope,
                       PreparedGeneration prepared, std::function<void()> on_news)
    : parts_(parts),
      scope_(std::move(scope)),
      prepared_(std::move(prepared)),
      on_news_(std::move(on_news)) {
  samples_.resize(static_cast<size_t>(prepared_.num_samples));
  for (Sample& sample : samples_) {
    sample.text.emplace(parts_.model->tokenizer, prepared_.engine.prompt, prepared_.stop_strings);
  }
  CallOutcome& outcome = scope_->outcome();
  outcome.prompt_tokens = prepared_.prompt_tokens;
  outcome.session_id = prepared_.session_id;
  outcome.save_session_as = prepared_.save_session_as;
  parts_.metrics->StreamStarted();
}

Generation::~Generation() {
  parts_.metrics->StreamEnded();
  for (const Sample& sample : samples_) {
    if (sample.text && !sample.text->first_restart().ok()) {
      Log(absl::StrCat("request ", scope_->request_id(), ": stream decoder: ",
                       sample.text->first_restart().message(), "; restarted it"));
      break;
    }
  }
}

void Generation::Submit() {
  GenerationRequest request = std::move(prepared_.engine);
  const std::string& tenant = scope_->tenant();
  if (!prepared_.save_session_as.empty()) {
    absl::StatusOr<session::SaveReservation> reserved =
        parts_.sessions->Reserve({tenant, prepared_.save_session_as}, prepared_.save_options);
    if (!reserved.ok()) return Fail(reserved.status());
    reservation_ = *std::move(reserved);
    request.return_final_state = true;
    if (!prepared_.stop_strings.empty() && parts_.model->tokenizer != nullptr) {
      // The saved state must end at the token the stream stops at: the engine watches the text
      // too, with its own copy, on the scheduler thread (the one per-token text work there).
      auto watcher = std::make_shared<TextStream>(parts_.model->tokenizer, request.prompt,
                                                  prepared_.stop_strings);
      request.stops_after = [watcher](const SampledToken& token) {
        std::string ignored;
        return watcher->Push(token.id, ignored);
      };
    }
  }
  if (!prepared_.session_id.empty()) {
    absl::StatusOr<session::LoadedSession> loaded =
        parts_.sessions->Load({tenant, prepared_.session_id});
    if (!loaded.ok()) {
      return Fail(absl::Status(loaded.status().code(),
                               absl::StrCat("session_id: ", loaded.status().message())));
    }
    request.initial_state = std::move(loaded->state);
    history_tokens_ = loaded->num_tokens;
    resumed_revision_ = loaded->revision;
    // Saving the id it resumed, the save expects the revision it resumed.
    reservation_.Resumed({tenant, prepared_.session_id}, loaded->revision);
  }
  request.deadline = scope_->deadline();
  request.on_update = [weak = std::weak_ptr<Generation>(shared_from_this())] {
    if (std::shared_ptr<Generation> locked = weak.lock()) locked->on_news_();
  };
  absl::StatusOr<std::vector<std::shared_ptr<GenerationStream>>> streams;
  if (samples_.size() == 1) {
    absl::StatusOr<std::shared_ptr<GenerationStream>> stream =
        parts_.engine->Generate(std::move(request));
    if (stream.ok()) {
      streams = std::vector<std::shared_ptr<GenerationStream>>{*std::move(stream)};
    } else {
      streams = stream.status();
    }
  } else {
    streams =
        parts_.engine->GenerateMany(std::move(request), static_cast<int32_t>(samples_.size()));
  }
  if (!streams.ok()) return Fail(streams.status());
  scope_->ChargeTokens(prepared_.prompt_tokens);  // one prefill, whatever n is
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < samples_.size(); ++i) samples_[i].stream = (*streams)[i];
    submitted_ = true;
    cancelled = cancelled_;
  }
  if (cancelled) CancelEngineRequests();
  on_news_();
}

void Generation::Fail(absl::Status status) {
  // Before the front end hears: a retry must not find the id still reserved by this request.
  reservation_.Release();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failed_ = std::move(status);
  }
  on_news_();
}

void Generation::Cancel(bool deadline_passed) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
    deadline_passed_ = deadline_passed;
  }
  CancelEngineRequests();
  on_news_();
}

void Generation::CancelEngineRequests() {
  std::vector<std::shared_ptr<GenerationStream>> streams;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!submitted_) return;
    for (const Sample& sample : samples_) streams.push_back(sample.stream);
  }
  for (const auto& stream : streams) stream->Cancel();
}

Generation::Event Generation::Next() {
  if (ended_) return {};
  bool gone, submitted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed_) {
      ended_ = true;
      return Ended(*failed_);
    }
    if (saving_) return {};
    if (saved_update_) {
      // The save is durable before the client hears that the generation ended (n is 1 here).
      ended_ = true;
      SampleUpdate last = *std::move(saved_update_);
      saved_update_.reset();
      return Last(std::move(last));
    }
    gone = cancelled_;
    submitted = submitted_;
  }
  if (!submitted) return {};
  if (gone) return NextWhenGone();
  for (size_t k = 0; k < samples_.size(); ++k) {
    const size_t index = (next_sample_ + k) % samples_.size();
    Sample& sample = samples_[index];
    if (sample.done) continue;
    StreamUpdate update = sample.stream->Poll();
    if (update.tokens.empty() && !update.end) continue;
    next_sample_ = index + 1;
    Event event = StepSample(index, std::move(update));
    if (event.update || event.end || save_started_) return event;
  }
  return {};
}

// The client is gone: nothing more goes out; once every engine request has ended (they were
// cancelled), the generation ends.
Generation::Event Generation::NextWhenGone() {
  absl::Status ended_with;
  for (Sample& sample : samples_) {
    if (sample.engine_ended) continue;
    StreamUpdate update = sample.stream->Poll();
    if (!update.end) return {};
    sample.engine_ended = true;
    ended_with = update.end->status;
  }
  ended_ = true;
  reservation_.Release();  // before the front end hears, as in Fail
  if (absl::IsDeadlineExceeded(ended_with) || deadline_passed_ ||
      absl::Now() >= scope_->deadline()) {
    return Ended(absl::DeadlineExceededError("the deadline passed"));
  }
  return Ended(absl::CancelledError("the client went away"));
}

Generation::Event Generation::StepSample(size_t index, StreamUpdate update) {
  Sample& sample = samples_[index];
  SampleUpdate out;
  out.index = static_cast<int32_t>(index);
  out.tokens.reserve(update.tokens.size());
  for (SampledToken& token : update.tokens) {
    if (sample.text->stopped()) break;  // tokens after a stop string are not handed out
    const int32_t id = token.id;
    out.tokens.push_back(std::move(token));
    ++sample.sent_tokens;
    if (sample.text->Push(id, out.text)) {
      sample.stream->Cancel();  // already ended when the engine watched the text too
    }
  }
  const auto new_tokens = static_cast<int64_t>(out.tokens.size());
  scope_->ChargeTokens(new_tokens);
  scope_->outcome().generated_tokens += new_tokens;
  if (!update.end) {
    if (out.tokens.empty() && out.text.empty()) return {};
    RecordTokenTimes(out.tokens.size());
    return Update(std::move(out));
  }
  sample.engine_ended = true;
  const GenerationEnd& end = *update.end;
  const bool stopped = sample.text->stopped();
  if (!end.status.ok() && !(stopped && absl::IsCancelled(end.status))) {
    // One sample failing ends the generation; the others are cancelled.
    CancelEngineRequests();
    reservation_.Release();  // before the front end hears, as in Fail
    ended_ = true;
    return Ended(absl::IsUnavailable(end.status)
                     ? absl::UnavailableError("the server shut down before the generation finished")
                     : end.status);
  }
  if (!stopped) sample.text->Finish(out.text);
  SampleFinish& finish = out.finish.emplace();
  finish.reason = stopped ? FinishReason::kStop : end.finish_reason;
  if (stopped) finish.stop_string = *sample.text->stop_string();
  finish.prompt_tokens = prepared_.prompt_tokens;
  finish.generated_tokens = sample.sent_tokens;
  finish.cached_prompt_tokens = end.cached_prompt_tokens;
  finish.resumed_revision = resumed_revision_;
  scope_->outcome().finish_reason = FinishReasonName(finish.reason);
  parts_.metrics->RecordQueueTime(absl::ToDoubleSeconds(end.queue_time));
  RecordTokenTimes(out.tokens.size());
  sample.done = true;
  if (reservation_.held()) {
    StartSave(std::move(out), end.final_state, end.generated_tokens);
    return {};
  }
  if (std::all_of(samples_.begin(), samples_.end(), [](const Sample& s) { return s.done; })) {
    ended_ = true;
    return Last(std::move(out));
  }
  return Update(std::move(out));
}

void Generation::StartSave(SampleUpdate last, std::shared_ptr<const SequenceState> state,
                           int64_t generated_tokens) {
  save_started_ = true;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    saving_ = true;
  }
  // The session holds every token it has read and written: its history, this prompt, and what
  // was generated (the last one pending). With a stop string the engine stopped at the token
  // that completed it.
  const int64_t num_tokens = history_tokens_ + prepared_.prompt_tokens + generated_tokens;
  parts_.session_workers->Post(
      [self = shared_from_this(), state, num_tokens, last = std::move(last)]() mutable {
        absl::StatusOr<session::SessionRecord> saved =
            state == nullptr ? absl::InternalError("the engine returned no final state")
                             : self->parts_.sessions->Save(self->reservation_, *state, num_tokens);
        self->reservation_.Release();
        {
          std::lock_guard<std::mutex> lock(self->mutex_);
          self->saving_ = false;
          if (saved.ok()) {
            last.finish->saved_revision = saved->revision;
            self->saved_update_ = std::move(last);
          } else {
            self->failed_ =
                absl::Status(saved.status().code(),
                             absl::StrCat("saving session \"", self->prepared_.save_session_as,
                                          "\": ", saved.status().message()));
          }
        }
        self->on_news_();
      });
}

void Generation::RecordTokenTimes(size_t tokens) {
  if (tokens == 0) return;
  const absl::Time now = absl::Now();
  if (last_tokens_at_ == absl::InfinitePast()) {
    const absl::Duration first = now - scope_->start();
    scope_->outcome().time_to_first_token = first;
    parts_.metrics->RecordTimeToFirstToken(absl::ToDoubleSeconds(first));
    // The first update's other tokens came with the first.
    for (size_t i = 1; i < tokens; ++i) parts_.metrics->RecordInterTokenLatency(0.0);
  } else {
    const double each = absl::ToDoubleSeconds(now - last_tokens_at_) / static_cast<double>(tokens);
    for (size_t i = 0; i < tokens; ++i) parts_.metrics->RecordInterTokenLatency(each);
  }
  last_tokens_at_ = now;
}

}  // namespace hgrn2::server
