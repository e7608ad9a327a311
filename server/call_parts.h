// CallParts: what every call handler shares (model, metrics, call tracking, access control,
// worker threads, sessions).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "engine/session/session_manager.h"
#include "server/access_control.h"
#include "server/call_tracker.h"
#include "server/metrics.h"
#include "server/requests.h"
#include "server/worker_pool.h"

namespace hgrn2::server {

// Owned by Server; everything outlives the services that hold it.
struct CallParts {
  const ModelContext* model = nullptr;
  ServerMetrics* metrics = nullptr;
  CallTracker* calls = nullptr;
  // Every Inference and Sessions handler starts with access->Admit(context): the caller's tenant
  // (the namespace its sessions live in) and its limits.
  AccessControl* access = nullptr;
  // Turn engine tokens into stream messages off the scheduler thread; never block.
  WorkerPool* workers = nullptr;
  // Session store I/O (reads, saves, exports), which may block on disk or the network.
  WorkerPool* session_workers = nullptr;
  session::SessionManager* sessions = nullptr;  // null: sessions are off
};

}  // namespace hgrn2::server
