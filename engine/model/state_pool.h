// The fixed-size per-sequence states (recurrent states and conv windows) in one device allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/checkpoint/model_config.h"

namespace hgrn2 {

// Index of a slot in a StatePool, in [0, num_slots).
using SlotId = int32_t;
// Index of a slot in a SwapArea, in [0, num_slots).
using SwapSlotId = int32_t;

// Which of a fixed number of slots are in use: a stack of free ones (the lowest ids are handed
// out first) and a flag per slot. The bookkeeping of StatePool and SwapArea.
// Thread-compatible.
class SlotList {
 public:
  // `owner` and `noun` go into error messages: "state pool" and "slot", "swap area" and
  // "swap slot".
  SlotList(int32_t num_slots, absl::string_view owner, absl::string_view noun);

  // A free slot; ResourceExhausted when all are in use.
  absl::StatusOr<int32_t> Take();
  // InvalidArgument, naming `what`, if the slot is out of range or not in use.
  absl::Status Return(int32_t slot, absl::string_view what);
  absl::Status CheckInUse(int32_t slot, absl::string_view what) const;

  bool in_use(int32_t slot) const { return slot >= 0 && slot < size() && in_use_[slot]; }
  int32_t size() const { return static_cast<int32_t>(in_use_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }

 private:
  std::string owner_, noun_;
  std::vector<int32_t> free_;
  std::vector<bool> in_use_;
};

// Host copies of whole pool slots, for sequences swapped out of the device: one HostBuffer from
// the backend (page-locked on CUDA, so a swap runs at full transfer speed) allocated once, since
// page-locking memory per swap would cost more than the copy.
//
// Thread-safety: the device thread only.
class SwapArea {
 public:
  // InvalidArgument for a non-positive slot size or a negative count; 0 slots is an area that
  // refuses every swap.
  static absl::StatusOr<std::unique_ptr<SwapArea>> Create(Backend& backend, size_t slot_bytes,
                                                          int32_t num_slots);

  // A free slot; ResourceExhausted when all are in use.
  absl::StatusOr<SwapSlotId> Allocate();
  // InvalidArgument if it is out of range or not allocated.
  absl::Status Free(SwapSlotId slot);
  // The bytes of an allocated slot (slot_bytes() of them). InvalidArgument for a slot that is out
  // of range or not allocated.
  absl::StatusOr<absl::Span<std::byte>> Bytes(SwapSlotId slot);

  int32_t num_slots() const { return slots_.size(); }
  int32_t num_free() const { return slots_.num_free(); }
  size_t slot_bytes() const { return slot_bytes_; }

 private:
  SwapArea(HostBuffer memory, size_t slot_bytes, int32_t num_slots);

  HostBuffer memory_;
  size_t slot_bytes_;
  SlotList slots_;
};

// num_slots slots, each one sequence's whole state:
//   [L, H, dv, dk] recurrent states (fla's layout) in float32, or in bf16 where chosen (half the
//   memory and traffic, rounded after every decode step), then [L, channels, K] float32 conv
//   windows (channels = q | f | i, newest input last; absent without short conv).
// Kernels address a slot through its index (Layer() gives base pointers and strides), so a
// batch of sequences is advanced in place with no gather or scatter copies.
//
// Thread-safety: the device thread only.
class StatePool {
 public:
  // InvalidArgument for a non-positive count or a state dtype other than F32 and BF16.
  static absl::StatusOr<std::unique_ptr<StatePool>> Create(Backend& backend,
                                                           const ModelConfig& config,
                                                           int32_t num_slots,
                                                           DType state_dtype = DType::kF32);

  // A free slot, its state zeroed (a new sequence). ResourceExhausted when all are in use.
  absl::StatusOr<SlotId> Allocate();
  // Returns the slot to the free list. InvalidArgument if it is out of range or not allocated.
  absl::Status Free(SlotId slot);
  // Zeroes the slot's state (it stays allocated).
  absl::Status Reset(SlotId slot);
  // Copies the whole state of `src` into `dst` (both allocated), e.g. to fork a sequence.
  absl::Status Copy(SlotId src, SlotId dst);
  // The slot's state as bytes in the layout above (slot_bytes() of them), to and from the host.
  absl::Status ReadHost(SlotId slot, absl::Span<std::byte> out) const;
  absl::Status WriteHost(SlotId slot, absl::Span<const std::byte> in);

  // Swap preemption: copies the slot's state into a free slot of `area` and frees the device
  // slot; SwapIn later continues the sequence exactly where it stopped (a copy of a fixed size,
  // not a recompute). On error nothing has changed: ResourceExhausted when the area is full,
  // InvalidArgument for a slot that is not allocated or an area of another slot size.
  absl::StatusOr<SwapSlotId> SwapOut(SlotId slot, SwapArea& area);
  // Takes a free device slot, copies the swapped state into it and frees the swap slot. On error
  // nothing has changed: ResourceExhausted when the pool is full, InvalidArgument for a swap slot
  // that is not allocated.
  absl::StatusOr<SlotId> SwapIn(SwapSlotId swap_slot, SwapArea& area);

  // Base pointers and slot strides of one layer's states, for the recurrence ops.
  LayerStateView Layer(int64_t layer) const;

  int32_t num_slots() const { return slots_.size(); }
  int32_t num_free() const { return slots_.num_free(); }
  bool is_allocated(SlotId slot) const { return slots_.in_use(slot); }
  size_t slot_bytes() const { return static_cast<size_t>(slot_bytes_); }
  DType state_dtype() const { return state_dtype_; }

 private:
  StatePool(Backend& backend, const ModelConfig& config, int32_t num_slots, DType state_dtype);
  // Takes the next free slot without zeroing it (its contents are about to be overwritten).
  absl::StatusOr<SlotId> Take();
  std::byte* SlotBase(SlotId slot) const;

  Backend& backend_;
  DType state_dtype_;
  int64_t num_layers_;
  int64_t state_elements_per_layer_;
  int64_t conv_floats_per_layer_;
  int64_t state_region_bytes_ = 0;  // the recurrent states, before the conv windows
  int64_t slot_bytes_ = 0;
  DeviceBuffer memory_;
  SlotList slots_;
};

}  // namespace hgrn2
