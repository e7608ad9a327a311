// Server's end: the graceful drain, the parts stopped in order, and waiting for it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/core/log.h"
#include "server/server.h"

namespace hgrn2::server {

void Server::Shutdown(absl::Duration drain_timeout) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (shutting_down_) {
      changed_.wait(lock, [&] { return shut_down_; });
      return;
    }
    shutting_down_ = true;
    // NOT_SERVING for every service from now on.
    if (grpc_server_ != nullptr) grpc_server_->GetHealthCheckService()->Shutdown();
    if (openai_ != nullptr) openai_->SetServing(false);
    metrics_.SetServing(false);
  }
  changed_.notify_all();
  calls_.StartDraining();
  const int64_t in_progress = calls_.active();
  LogInfo(absl::StrCat("draining: ", in_progress, " calls in progress, up to ",
                       absl::FormatDuration(drain_timeout)),
          {{"calls", in_progress}, {"drain_timeout_seconds", drain_timeout}});
  const absl::Time deadline = absl::Now() + drain_timeout;
  while (absl::Now() < deadline) {
    if (calls_.WaitIdle(std::min(absl::Milliseconds(50), deadline - absl::Now()))) break;
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_draining_) break;
  }
  const int64_t left = calls_.active();
  if (left > 0) {
    LogWarning(absl::StrCat("drain over: ending ", left, " calls with UNAVAILABLE"),
               {{"calls", left}});
  }
  if (probe_thread_.joinable()) probe_thread_.join();
  engine_->Stop();
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc_server_->Wait();
  }
  // The HTTP answers the engine just ended get a moment to go out (their pumps run on the stream
  // and session workers) before the workers stop.
  if (http_ != nullptr) http_->Stop(absl::Seconds(5));
  // Session tasks post to the stream workers (a finished save wakes its call's pump), so the
  // session workers go first: they run the saves still queued while the stream workers can take
  // what those post. Nothing on the stream workers starts a save any more: every call has ended.
  session_workers_.reset();
  workers_.reset();
  LogInfo("stopped");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
  }
  changed_.notify_all();
}

void Server::StopDraining() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_draining_ = true;
  }
  changed_.notify_all();
}

void Server::Wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return shut_down_; });
}

Server::~Server() {
  bool running;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    running = !shut_down_;
  }
  if (running && engine_ != nullptr) Shutdown(absl::ZeroDuration());
  if (probe_thread_.joinable()) probe_thread_.join();
  // metrics_ outlives the members below (the engine records into it), but a scrape renders the
  // session and engine stats through them: no scrape may run once they start to go.
  metrics_.StopServing();
}

}  // namespace hgrn2::server
