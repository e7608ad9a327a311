// HostStatePool: lending page-locked state buffers and taking them back.
#include "engine/scheduler/host_state_pool.h"

#include <utility>

namespace hgrn2 {

HostStatePool::HostStatePool(SharedHostAllocator allocate, size_t state_bytes, size_t max_states)
    : state_bytes_(state_bytes), max_states_(max_states), shared_(std::make_shared<Shared>()) {
  shared_->allocate = std::move(allocate);
}

std::shared_ptr<SequenceState> HostStatePool::Take() {
  std::shared_ptr<std::byte> buffer;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    if (!shared_->kept.empty()) {
      buffer = std::move(shared_->kept.back());
      shared_->kept.pop_back();
    } else if (shared_->allocated < max_states_) {
      ++shared_->allocated;  // reserved: the allocation runs unlocked
    } else {
      return nullptr;
    }
  }
  if (buffer == nullptr) {
    absl::StatusOr<std::shared_ptr<std::byte>> allocated = shared_->allocate(state_bytes_);
    if (!allocated.ok()) {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      --shared_->allocated;
      return nullptr;
    }
    buffer = *std::move(allocated);
  }
  auto state = std::make_shared<SequenceState>();
  state->pinned = absl::MakeSpan(buffer.get(), state_bytes_);
  // The lease's deleter runs once, when the last copy goes: the buffer goes back to `kept`.
  std::byte* data = buffer.get();
  state->pinned_lease =
      std::shared_ptr<void>(data, [shared = shared_, buffer = std::move(buffer)](void*) mutable {
        std::lock_guard<std::mutex> lock(shared->mutex);
        shared->kept.push_back(std::move(buffer));
      });
  return state;
}

size_t HostStatePool::allocated() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->allocated;
}

size_t HostStatePool::lent() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->allocated - shared_->kept.size();
}

}  // namespace hgrn2
