// CallTracker: counts the RPCs in progress and refuses new ones once draining, so a graceful
// shutdown can wait for the ones it has.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hgrn2::server {

// Thread-safety: any thread.
class CallTracker {
 public:
  // False once draining: the caller answers UNAVAILABLE. Each true is paired with one End().
  bool TryBegin() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_) return false;
    ++active_;
    return true;
  }
  void End() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--active_ == 0) idle_.notify_all();
  }
  void StartDraining() {
    std::lock_guard<std::mutex> lock(mutex_);
    draining_ = true;
  }
  bool draining() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return draining_;
  }
  // Until no call is in progress or `timeout` passes; whether none is.
  bool WaitIdle(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return idle_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return active_ == 0; });
  }
  int64_t active() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  int64_t active_ = 0;
  bool draining_ = false;
};

}  // namespace hgrn2::server
