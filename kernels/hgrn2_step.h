// Op: one decode step of an HGRN2 layer for a batch of sequences, states updated in place.
#pragma once

#include <cstdint>

#include "kernels/hgrn2_layer.h"

namespace hgrn2::kernels {

// Token b of the batch (row b of qfi and out) advances the state in slot slots[b] by one token.
template <typename T>
struct Hgrn2StepParams {
  int32_t batch = 0;
  Hgrn2LayerParams<T> layer;
};

void Hgrn2StepReference(const Hgrn2StepParams<float>& params);

}  // namespace hgrn2::kernels
