// Op: an HGRN2 layer over whole prompts (a batch of sequences of different lengths), from each
// slot's current state to its state after the last token.
#pragma once

#include <cstdint>

#include "kernels/hgrn2_layer.h"

namespace hgrn2::kernels {

// Sequence b owns token rows [seq_offsets[b], seq_offsets[b + 1]) of qfi and out, and slot
// slots[b]. Its state may be anything (zero for a new sequence, a restored session, or where an
// earlier piece of the same prompt stopped).
template <typename T>
struct Hgrn2PrefillParams {
  int32_t num_seqs = 0;
  const int32_t* __restrict__ seq_offsets = nullptr;  // [num_seqs + 1], non-decreasing
  // Tokens per chunk of the chunked (GLA) form: within a chunk, outputs come from the entering
  // state and a C×C matrix of decayed q·k products; the state is carried once per chunk.
  // 0 = token by token (the recurrence itself).
  int32_t chunk_size = 64;
  Hgrn2LayerParams<T> layer;
};

void Hgrn2PrefillReference(const Hgrn2PrefillParams<float>& params);

}  // namespace hgrn2::kernels
