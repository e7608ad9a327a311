// StatePool: slot allocation and whole-state copies over one backend allocation; SwapArea: the
// host slots that swapped-out states wait in.
#include "engine/state_pool.h"

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace hgrn2 {

absl::StatusOr<std::unique_ptr<StatePool>> StatePool::Create(Backend& backend,
                                                             const ModelConfig& config,
                                                             int32_t num_slots) {
  if (num_slots <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state pool: num_slots must be positive, got ", num_slots));
  }
  const size_t bytes = static_cast<size_t>(config.state_bytes()) * static_cast<size_t>(num_slots);
  HGRN2_ASSIGN_OR_RETURN(DeviceBuffer memory, backend.Allocate(bytes));
  return std::unique_ptr<StatePool>(new StatePool(backend, config, num_slots, std::move(memory)));
}

StatePool::StatePool(Backend& backend, const ModelConfig& config, int32_t num_slots,
                     DeviceBuffer memory)
    : backend_(backend),
      num_layers_(config.num_layers),
      state_floats_per_layer_(config.state_floats_per_layer()),
      conv_floats_per_layer_(config.conv_floats_per_layer()),
      slot_floats_(config.state_bytes() / static_cast<int64_t>(sizeof(float))),
      num_slots_(num_slots),
      memory_(std::move(memory)),
      allocated_(static_cast<size_t>(num_slots), false) {
  free_.reserve(static_cast<size_t>(num_slots));
  for (SlotId slot = num_slots - 1; slot >= 0; --slot) free_.push_back(slot);
}

float* StatePool::SlotBase(SlotId slot) const {
  return static_cast<float*>(memory_.data()) + static_cast<int64_t>(slot) * slot_floats_;
}

absl::Status StatePool::CheckAllocated(SlotId slot, absl::string_view what) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": slot ", slot, " outside [0, ", num_slots_, ")"));
  }
  if (!allocated_[slot]) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": slot ", slot, " is not allocated"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SlotId> StatePool::Take() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("state pool: all ", num_slots_, " slots are in use"));
  }
  const SlotId slot = free_.back();
  free_.pop_back();
  allocated_[slot] = true;
  return slot;
}

absl::StatusOr<SlotId> StatePool::Allocate() {
  HGRN2_ASSIGN_OR_RETURN(const SlotId slot, Take());
  if (absl::Status zeroed = backend_.Fill(SlotBase(slot), 0, slot_bytes()); !zeroed.ok()) {
    Free(slot).IgnoreError();
    return zeroed;
  }
  return slot;
}

absl::Status StatePool::Free(SlotId slot) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "state pool free"));
  allocated_[slot] = false;
  free_.push_back(slot);
  return absl::OkStatus();
}

absl::Status StatePool::Reset(SlotId slot) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "state pool reset"));
  return backend_.Fill(SlotBase(slot), 0, slot_bytes());
}

absl::Status StatePool::Copy(SlotId src, SlotId dst) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(src, "state pool copy source"));
  HGRN2_RETURN_IF_ERROR(CheckAllocated(dst, "state pool copy destination"));
  if (src == dst) return absl::OkStatus();
  return backend_.CopyOnDevice(SlotBase(dst), SlotBase(src), slot_bytes());
}

absl::Status StatePool::ReadHost(SlotId slot, absl::Span<std::byte> out) const {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "state pool read"));
  if (out.size() != slot_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("state pool read: buffer of ", out.size(),
                                                   " bytes, a slot has ", slot_bytes()));
  }
  return backend_.CopyToHost(out.data(), SlotBase(slot), slot_bytes());
}

absl::Status StatePool::WriteHost(SlotId slot, absl::Span<const std::byte> in) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "state pool write"));
  if (in.size() != slot_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("state pool write: ", in.size(), " bytes given, a slot has ", slot_bytes()));
  }
  return backend_.CopyToDevice(SlotBase(slot), in.data(), slot_bytes());
}

absl::StatusOr<SwapSlotId> StatePool::SwapOut(SlotId slot, SwapArea& area) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "swap out"));
  if (area.slot_bytes() != slot_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("swap out: the swap area holds ",
                                                   area.slot_bytes(), "-byte slots, the pool ",
                                                   slot_bytes()));
  }
  HGRN2_ASSIGN_OR_RETURN(const SwapSlotId swap_slot, area.Allocate());
  absl::StatusOr<absl::Span<std::byte>> bytes = area.Bytes(swap_slot);
  absl::Status copied = bytes.ok() ? ReadHost(slot, *bytes) : bytes.status();
  if (!copied.ok()) {
    area.Free(swap_slot).IgnoreError();
    return copied;
  }
  HGRN2_RETURN_IF_ERROR(Free(slot));
  return swap_slot;
}

absl::StatusOr<SlotId> StatePool::SwapIn(SwapSlotId swap_slot, SwapArea& area) {
  HGRN2_ASSIGN_OR_RETURN(const absl::Span<std::byte> bytes, area.Bytes(swap_slot));
  if (bytes.size() != slot_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("swap in: the swap area holds ", bytes.size(),
                                                   "-byte slots, the pool ", slot_bytes()));
  }
  HGRN2_ASSIGN_OR_RETURN(const SlotId slot, Take());
  if (absl::Status copied = WriteHost(slot, bytes); !copied.ok()) {
    Free(slot).IgnoreError();
    return copied;
  }
  HGRN2_RETURN_IF_ERROR(area.Free(swap_slot));
  return slot;
}

LayerStateView StatePool::Layer(int64_t layer) const {
  float* base = static_cast<float*>(memory_.data());
  LayerStateView view;
  view.num_slots = num_slots_;
  view.state = base + layer * state_floats_per_layer_;
  view.state_stride_slot = slot_floats_;
  if (conv_floats_per_layer_ > 0) {
    view.conv_state = base + num_layers_ * state_floats_per_layer_ + layer * conv_floats_per_layer_;
    view.conv_state_stride_slot = slot_floats_;
  }
  return view;
}

absl::StatusOr<std::unique_ptr<SwapArea>> SwapArea::Create(Backend& backend, size_t slot_bytes,
                                                           int32_t num_slots) {
  if (slot_bytes == 0 || num_slots < 0) {
    return absl::InvalidArgumentError(absl::StrCat("swap area: slot_bytes (", slot_bytes,
                                                   ") must be positive and num_slots (", num_slots,
                                                   ") not negative"));
  }
  HostBuffer memory;
  if (num_slots > 0) {
    HGRN2_ASSIGN_OR_RETURN(memory,
                           backend.AllocateHost(slot_bytes * static_cast<size_t>(num_slots)));
  }
  return std::unique_ptr<SwapArea>(new SwapArea(std::move(memory), slot_bytes, num_slots));
}

SwapArea::SwapArea(HostBuffer memory, size_t slot_bytes, int32_t num_slots)
    : memory_(std::move(memory)),
      slot_bytes_(slot_bytes),
      num_slots_(num_slots),
      allocated_(static_cast<size_t>(num_slots), false) {
  free_.reserve(static_cast<size_t>(num_slots));
  for (SwapSlotId slot = num_slots - 1; slot >= 0; --slot) free_.push_back(slot);
}

absl::Status SwapArea::CheckAllocated(SwapSlotId slot, absl::string_view what) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": swap slot ", slot, " outside [0, ", num_slots_, ")"));
  }
  if (!allocated_[slot]) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": swap slot ", slot, " is not allocated"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SwapSlotId> SwapArea::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("swap area: all ", num_slots_, " slots are in use"));
  }
  const SwapSlotId slot = free_.back();
  free_.pop_back();
  allocated_[slot] = true;
  return slot;
}

absl::Status SwapArea::Free(SwapSlotId slot) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "swap area free"));
  allocated_[slot] = false;
  free_.push_back(slot);
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<std::byte>> SwapArea::Bytes(SwapSlotId slot) {
  HGRN2_RETURN_IF_ERROR(CheckAllocated(slot, "swap area"));
  return absl::MakeSpan(
      static_cast<std::byte*>(memory_.data()) + static_cast<size_t>(slot) * slot_bytes_,
      slot_bytes_);
}

}  // namespace hgrn2
