// The token stream and the pending score: what the scheduler thread delivers and any reader
// takes.
#include "engine/scheduler/request.h"

#include <utility>

namespace hgrn2 {

StreamUpdate GenerationStream::TakeLocked() {
  StreamUpdate update;
  update.tokens.swap(unread_);
  update.end = end_;
  return update;
}

StreamUpdate GenerationStream::Next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return end_reported_ || (!end_ && !unread_.empty()); });
  return TakeLocked();
}

StreamUpdate GenerationStream::Poll() {
  std::lock_guard<std::mutex> lock(mutex_);
  return TakeLocked();
}

StreamUpdate GenerationStream::Wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return end_reported_; });
  return TakeLocked();
}

void GenerationStream::Deliver(absl::Span<const SampledToken> tokens,
                               std::optional<GenerationEnd> end) {
  const bool ends = end.has_value();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    unread_.insert(unread_.end(), tokens.begin(), tokens.end());
    if (end) end_ = std::move(end);
  }
  changed_.notify_all();
  // Outside the lock: the callback may Poll().
  if (on_update_) on_update_();
  if (!ends) return;
  // Only now may Wait() return: a caller that frees what on_update uses once it has the end
  // would otherwise free it under the running callback.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    end_reported_ = true;
  }
  changed_.notify_all();
}

absl::StatusOr<ScoreResult> PendingScore::Wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return done_reported_; });
  return *result_;
}

std::optional<absl::StatusOr<ScoreResult>> PendingScore::Poll() {
  std::lock_guard<std::mutex> lock(mutex_);
  return result_;
}

void PendingScore::Finish(absl::StatusOr<ScoreResult> result) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    result_ = std::move(result);
  }
  changed_.notify_all();
  if (on_done_) on_done_();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_reported_ = true;
  }
  changed_.notify_all();
}

}  // namespace hgrn2
