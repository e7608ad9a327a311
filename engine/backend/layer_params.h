// The recurrence ops' kernel parameters (kernels/hgrn2_layer.h) from a backend's Hgrn2LayerOp.
#pragma once

#include <cstdint>

#include "engine/backend/backend.h"
#include "kernels/hgrn2_layer.h"

namespace hgrn2 {

// T is the element type of qfi, the conv taps and out (the backend's compute type).
template <typename T>
kernels::Hgrn2LayerParams<T> LayerParams(const Hgrn2LayerOp& layer, const int32_t* slots,
                                         const DeviceTensor& qfi, const DeviceTensor& out) {
  kernels::Hgrn2LayerParams<T> p;
  p.num_heads = layer.num_heads;
  p.key_dim = layer.key_dim;
  p.value_dim = layer.value_dim;
  p.conv_size = layer.conv_size;
  p.qfi = qfi.As<const T>();
  p.qfi_stride_token = qfi.row_stride;
  p.conv_weight = layer.conv_size > 0 ? layer.conv_weight.As<const T>() : nullptr;
  p.lower_bound = layer.lower_bound;
  p.slots = slots;
  p.state = layer.states.state;
  p.state_bf16 = layer.states.state_bf16;
  p.state_stride_slot = layer.states.state_stride_slot;
  p.conv_state = layer.states.conv_state;
  p.conv_state_stride_slot = layer.states.conv_state_stride_slot;
  p.out = out.As<T>();
  p.out_stride_token = out.row_stride;
  return p;
}

}  // namespace hgrn2
