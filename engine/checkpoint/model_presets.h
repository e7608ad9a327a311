// Named model shapes for benchmarks with random weights (hgrn2-bench, hgrn2-session-bench,
// hgrn2-server --preset): fla's published HGRN2 1.3B and 370M configurations and a tiny one.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint/model_config.h"

namespace hgrn2 {

// "1.3b" (V 32000, D 2048, L 24, H 16, dk = dv = 128: 24 MiB of float32 state per sequence),
// "370m" (D 1024, H 8) or "tiny" (V 512, D 128, L 2: smoke runs on the CPU). INVALID_ARGUMENT
// naming the choices for any other name.
absl::StatusOr<ModelConfig> ModelPreset(absl::string_view name);

// The seed of a preset's random weights in every tool, so that they measure the same model.
inline constexpr uint64_t kPresetSeed = 1234;

}  // namespace hgrn2
