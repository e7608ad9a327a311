// HostStatePool: page-locked host buffers of one state each, lent as SequenceStates (final states,
// sessions loaded to resume) and taken back when the last owner lets go.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/scheduler/request.h"

namespace hgrn2 {

// At most `max_states` buffers of `state_bytes` each, allocated on first need and then reused, so
// that a state is read from or written to the device without a staging copy, into memory already
// mapped (a fresh 24 MiB buffer costs a page fault per 4 KiB page; a fresh page-locked one costs a
// cudaHostAlloc of milliseconds). When all are lent, Take returns null and the caller uses a plain
// SequenceState::bytes instead: memory stays bounded and nothing waits.
//
// Lifetime: the buffers come from a SharedHostAllocator, so the pool, and every state it lent,
// may outlive the engine and backend it came from; the buffers are freed when the pool and the
// last state it lent are gone. Freeing page-locked memory may wait for the device, so buffers are
// only freed then, never while states come and go.
//
// Thread-safety: any thread (the scheduler thread takes final states; session threads take
// states to load into).
class HostStatePool {
 public:
  HostStatePool(SharedHostAllocator allocate, size_t state_bytes, size_t max_states);

  // A state whose `pinned` span holds state_bytes() bytes (not zeroed; pending_token 0); the
  // buffer goes back to the pool when the last copy of the state's pinned_lease goes. Null when
  // max_states are lent or an allocation failed.
  std::shared_ptr<SequenceState> Take();

  size_t state_bytes() const { return state_bytes_; }
  size_t max_states() const { return max_states_; }
  // Buffers allocated so far (kept or lent), and those lent now.
  size_t allocated() const;
  size_t lent() const;

 private:
  struct Shared {
    SharedHostAllocator allocate;
    std::mutex mutex;
    std::vector<std::shared_ptr<std::byte>> kept;  // allocated, not lent
    size_t allocated = 0;                          // kept + lent, and allocations in flight
  };

  const size_t state_bytes_;
  const size_t max_states_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace hgrn2
