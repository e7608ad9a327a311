// CallParts: what every call of every front end shares (the engine and model, metrics, call
// tracking, access control, worker threads, sessions).
#pragma once

#include "engine/engine.h"
#include "engine/session/session_manager.h"
#include "server/core/access_control.h"
#include "server/core/call_tracker.h"
#include "server/core/metrics.h"
#include "server/core/model_context.h"
#include "server/core/worker_pool.h"

namespace hgrn2::server {

// Owned by Server; everything outlives the calls that use it.
struct CallParts {
  Engine* engine = nullptr;
  const ModelContext* model = nullptr;
  ServerMetrics* metrics = nullptr;
  CallTracker* calls = nullptr;
  // Every call begins in a CallScope, which asks access control for the caller's tenant (the
  // namespace its sessions live in) and its limits.
  AccessControl* access = nullptr;
  // Turn engine tokens into text and messages off the scheduler thread; never block.
  WorkerPool* workers = nullptr;
  // Session store I/O (reads, saves, exports), which may block on disk or the network.
  WorkerPool* session_workers = nullptr;
  session::SessionManager* sessions = nullptr;  // null: sessions are off
};

}  // namespace hgrn2::server
