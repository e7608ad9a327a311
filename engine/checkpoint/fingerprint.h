// ModelFingerprint: the 128-bit identity of a model's config and weights that sessions carry.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint/model_config.h"
#include "engine/checkpoint/weight_file.h"

namespace hgrn2::session {

// XXH3-128 over a model's parsed config (its fields in a fixed order, not the JSON text) and every
// weight tensor (name, dtype, shape, bytes) in name order. Two models with the same fingerprint
// compute the same function, so a session saved on one resumes exactly on the other; the JSON's
// formatting or the checkpoint's sharding does not change it. Stable across builds and machines.
struct ModelFingerprint {
  // The 16 bytes in XXH3's canonical (big-endian) order: what snapshots store and ToHex() prints.
  uint8_t bytes[16] = {};

  // 32 lowercase hex digits.
  std::string ToHex() const;
  // Parses ToHex()'s form; InvalidArgument otherwise.
  static absl::StatusOr<ModelFingerprint> FromHex(absl::string_view hex);

  friend bool operator==(const ModelFingerprint&, const ModelFingerprint&) = default;
};

// The fingerprint of a checkpoint: `config` and every tensor of `weights`, read whole (about 0.1 s
// per GB). Tensors the config does not use still count (Model::Create refuses them anyway).
ModelFingerprint FingerprintCheckpoint(const ModelConfig& config, const WeightFile& weights);

// The fingerprint of Model::CreateRandom(config, backend, seed): config and seed, no weights.
// Never equal to a checkpoint's (the two are hashed under different tags).
ModelFingerprint FingerprintRandomModel(const ModelConfig& config, uint64_t seed);

// The fingerprint of a model built from the one `base` identifies with its weights rounded at
// load as `rounding` says (e.g. to FP8): a different function, so sessions do not cross between
// the two. Never equal to a checkpoint's or a random model's (hashed under its own tag).
ModelFingerprint FingerprintRounded(const ModelFingerprint& base, absl::string_view rounding);

}  // namespace hgrn2::session
