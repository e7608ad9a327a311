// DeviceBuffer and HostBuffer: ownership of one backend allocation.
#include "engine/backend.h"

namespace hgrn2 {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (backend_ != nullptr && data_ != nullptr) backend_->Release(data_, size_);
    backend_ = std::exchange(other.backend_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (backend_ != nullptr && data_ != nullptr) backend_->Release(data_, size_);
}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    if (backend_ != nullptr && data_ != nullptr) backend_->ReleaseHost(data_, size_);
    backend_ = std::exchange(other.backend_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

HostBuffer::~HostBuffer() {
  if (backend_ != nullptr && data_ != nullptr) backend_->ReleaseHost(data_, size_);
}

}  // namespace hgrn2
