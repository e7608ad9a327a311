// Small snapshots for the session tests and the snapshot fuzzer: a fixed layout and fingerprint,
// states filled from a seed.
#pragma once

#include <cstdint>
#include <string>

#include "engine/session/snapshot.h"

namespace hgrn2::testing {

// A small layout with conv windows (2 layers x 2 heads x 3 dk x 4 dv, conv 6x2: 288 bytes).
inline session::StateLayout SmallLayout(DType dtype = DType::kF32) {
  session::StateLayout layout;
  layout.dtype = dtype;
  layout.num_layers = 2;
  layout.num_heads = 2;
  layout.key_dim = 3;
  layout.value_dim = 4;
  layout.conv_channels = 6;
  layout.conv_width = 2;
  return layout;
}

inline session::ModelFingerprint TestFingerprint(uint8_t salt = 0) {
  session::ModelFingerprint fingerprint;
  for (int i = 0; i < 16; ++i) fingerprint.bytes[i] = static_cast<uint8_t>(0xA0 + i + salt);
  return fingerprint;
}

inline session::SnapshotExpectation TestExpectation(DType dtype = DType::kF32) {
  return session::SnapshotExpectation{TestFingerprint(), SmallLayout(dtype)};
}

// A snapshot of SmallLayout whose state bytes, token count and pending token follow `seed`.
inline session::Snapshot TestSnapshot(uint64_t seed, DType dtype = DType::kF32) {
  session::Snapshot snapshot;
  snapshot.model_fingerprint = TestFingerprint();
  snapshot.layout = SmallLayout(dtype);
  snapshot.num_tokens = 100 + seed;
  snapshot.saved_at = absl::FromUnixMicros(1700000000000000 + static_cast<int64_t>(seed));
  snapshot.state.pending_token = static_cast<int32_t>(7 + seed);
  snapshot.state.bytes.resize(snapshot.layout.state_bytes());
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::byte& b : snapshot.state.bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return snapshot;
}

// Revision 0 (a snapshot no store has kept) unless asked.
inline std::string TestSnapshotBytes(uint64_t seed, DType dtype = DType::kF32,
                                     uint64_t revision = 0) {
  session::Snapshot snapshot = TestSnapshot(seed, dtype);
  snapshot.revision = revision;
  return session::Serialize(snapshot);
}

}  // namespace hgrn2::testing
