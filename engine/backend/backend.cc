// DeviceBuffer and HostBuffer ownership, and choosing a backend by name.
#include "engine/backend/backend.h"

#include "absl/strings/str_cat.h"

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

#ifndef HGRN2_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& /*options*/) {
  return absl::UnavailableError("this build has no CUDA backend (built without a CUDA compiler)");
}
#endif

absl::StatusOr<CudaBackendOptions::Wait> GpuWaitNamed(absl::string_view name) {
  if (name == "spin") return CudaBackendOptions::Wait::kSpin;
  if (name == "block") return CudaBackendOptions::Wait::kBlock;
  return absl::InvalidArgumentError(absl::StrCat("--gpu-wait ", name, ": expected spin or block"));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view device,
                                                     const CudaBackendOptions& cuda_options) {
  if (device == "cpu") return MakeCpuBackend();
  if (device == "cuda") return MakeCudaBackend(cuda_options);
  if (device == "auto") {
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(cuda_options);
    if (cuda.ok() || !absl::IsUnavailable(cuda.status())) return cuda;
    return MakeCpuBackend();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device \"", device, "\": expected cpu, cuda or auto"));
}

}  // namespace hgrn2
