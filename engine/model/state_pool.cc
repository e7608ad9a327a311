// StatePool: slot allocation and whole-state copies over one backend allocation; SwapArea: the
// host slots that swapped-out states wait in.
#include "engine/model/state_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {

SlotList::SlotList(int32_t num_slots, absl::string_view owner, absl::string_view noun)
    : owner_(owner), noun_(noun), in_use_(static_cast<size_t>(std::max(num_slots, 0)), false) {
  free_.reserve(in_use_.size());
  for (int32_t slot = size() - 1; slot >= 0; --slot) free_.push_back(slot);
}

absl::StatusOr<int32_t> SlotList::Take() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(owner_, ": all ", size(), " slots are in use"));
  }
  const int32_t slot = free_.back();
  free_.pop_back();
  in_use_[slot] = true;
  return slot;
}

absl::Status SlotList::Return(int32_t slot, absl::string_view what) {
  HGRN2_RETURN_IF_ERROR(CheckInUse(slot, what));
  in_use_[slot] = false;
  free_.push_back(slot);
  return absl::OkStatus();
}

absl::Status SlotList::CheckInUse(int32_t slot, absl::string_view what) const {
  if (slot < 0 || slot >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", noun_, " ", slot, " outside [0, ", size(), ")"));
  }
  if (!in_use_[slot]) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", noun_, " ", slot, " is not allocated"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StatePool>> StatePool::Create(Backend& backend,
                                                             const ModelConfig& config,
                                                             int32_t num_slots, DType state_dtype) {
  if (num_slots <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state pool: num_slots must be positive, got ", num_slots));
  }
  if (state_dtype != DType::kF32 && state_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state pool: state dtype must be F32 or BF16, got ", std::string(DTypeName(state_dtype))));
  }
  std::unique_ptr<StatePool> pool(new StatePool(backend, config, num_slots, state_dtype));
  HGRN2_ASSIGN_OR_RETURN(pool->memory_,
                         backend.Allocate(pool->slot_bytes() * static_cast<size_t>(num_slots)));
  return pool;
}

// Float32 slots are exactly config.state_bytes() (the layout sessions store). Bf16 states are
// followed by float32 conv windows at a 4-byte boundary, and slots start at 16-byte boundaries.
StatePool::StatePool(Backend& backend, const ModelConfig& config, int32_t num_slots,
                     DType state_dtype)
    : backend_(backend),
      state_dtype_(state_dtype),
      num_layers_(config.num_layers),
      state_elements_per_layer_(config.state_floats_per_layer()),
      conv_floats_per_layer_(config.conv_floats_per_layer()),
      slots_(num_slots, "state pool", "slot") {
  const int64_t conv_bytes = num_layers_ * conv_floats_per_layer_ * 4;
  if (state_dtype == DType::kF32) {
    state_region_bytes_ = num_layers_ * state_elements_per_layer_ * 4;
    slot_bytes_ = state_region_bytes_ + conv_bytes;
  } else {
    state_region_bytes_ = (num_layers_ * state_elements_per_layer_ * 2 + 3) / 4 * 4;
    slot_bytes_ = (state_region_bytes_ + conv_bytes + 15) / 16 * 16;
  }
}

std::byte* StatePool::SlotBase(SlotId slot) const {
  return static_cast<std::byte*>(memory_.data()) + static_cast<int64_t>(slot) * slot_bytes_;
}

absl::StatusOr<SlotId> StatePool::Take() { return slots_.Take(); }

absl::StatusOr<SlotId> StatePool::Allocate() {
  HGRN2_ASSIGN_OR_RETURN(const SlotId slot, Take());
  if (absl::Status zeroed = backend_.Fill(SlotBase(slot), 0, slot_bytes()); !zeroed.ok()) {
    Free(slot).IgnoreError();
    return zeroed;
  }
  return slot;
}

absl::Status StatePool::Free(SlotId slot) { return slots_.Return(slot, "state pool free"); }

absl::Status StatePool::Reset(SlotId slot) {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(slot, "state pool reset"));
  return backend_.Fill(SlotBase(slot), 0, slot_bytes());
}

absl::Status StatePool::Copy(SlotId src, SlotId dst) {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(src, "state pool copy source"));
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(dst, "state pool copy destination"));
  if (src == dst) return absl::OkStatus();
  return backend_.CopyOnDevice(SlotBase(dst), SlotBase(src), slot_bytes());
}

absl::Status StatePool::ReadHost(SlotId slot, absl::Span<std::byte> out) const {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(slot, "state pool read"));
  if (out.size() != slot_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("state pool read: buffer of ", out.size(),
                                                   " bytes, a slot has ", slot_bytes()));
  }
  return backend_.CopyToHost(out.data(), SlotBase(slot), slot_bytes());
}

absl::Status StatePool::WriteHost(SlotId slot, absl::Span<const std::byte> in) {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(slot, "state pool write"));
  if (in.size() != slot_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("state pool write: ", in.size(), " bytes given, a slot has ", slot_bytes()));
  }
  return backend_.CopyToDevice(SlotBase(slot), in.data(), slot_bytes());
}

absl::StatusOr<SwapSlotId> StatePool::SwapOut(SlotId slot, SwapArea& area) {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(slot, "swap out"));
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
  std::byte* base = SlotBase(0);
  LayerStateView view;
  view.num_slots = num_slots();
  if (state_dtype_ == DType::kF32) {
    view.state = reinterpret_cast<float*>(base) + layer * state_elements_per_layer_;
    view.state_stride_slot = slot_bytes_ / 4;
  } else {
    view.state_bf16 = reinterpret_cast<uint16_t*>(base) + layer * state_elements_per_layer_;
    view.state_stride_slot = slot_bytes_ / 2;
  }
  if (conv_floats_per_layer_ > 0) {
    view.conv_state =
        reinterpret_cast<float*>(base + state_region_bytes_) + layer * conv_floats_per_layer_;
    view.conv_state_stride_slot = slot_bytes_ / 4;
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
      slots_(num_slots, "swap area", "swap slot") {}

absl::StatusOr<SwapSlotId> SwapArea::Allocate() { return slots_.Take(); }

absl::Status SwapArea::Free(SwapSlotId slot) { return slots_.Return(slot, "swap area free"); }

absl::StatusOr<absl::Span<std::byte>> SwapArea::Bytes(SwapSlotId slot) {
  HGRN2_RETURN_IF_ERROR(slots_.CheckInUse(slot, "swap area"));
  return absl::MakeSpan(
      static_cast<std::byte*>(memory_.data()) + static_cast<size_t>(slot) * slot_bytes_,
      slot_bytes_);
}

}  // namespace hgrn2
