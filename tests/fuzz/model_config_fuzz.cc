// The config.json parser under fuzzing: any bytes parse without a crash or undefined behaviour,
// and a config that parses has the invariants the engine relies on, with every derived size
// (parameters, state bytes) computable without overflow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "engine/checkpoint/model_config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<hgrn2::ModelConfig> config = hgrn2::ModelConfig::Parse(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (!config.ok()) return 0;
  const hgrn2::ModelConfig& c = *config;
  if (c.vocab_size < 1 || c.hidden_size < 1 || c.num_layers < 1 || c.num_heads < 1 ||
      c.key_dim < 1 || c.value_dim < 1 || c.intermediate_size < 1) {
    std::abort();
  }
  if (c.num_heads * c.key_dim != c.hidden_size || c.num_heads * c.value_dim != c.hidden_size) {
    std::abort();
  }
  if (c.use_short_conv && c.conv_size < 1) std::abort();
  if (!(c.norm_eps > 0) || c.norm_eps == std::numeric_limits<float>::infinity()) std::abort();
  for (int32_t id : c.eos_token_ids) {
    if (id < 0) std::abort();
  }
  // Signed overflow in these is undefined behaviour, which the sanitizer turns into a finding.
  if (c.num_parameters() < 1 || c.state_bytes() < 1) std::abort();
  if (c.state_floats_per_layer() < 1 || c.conv_floats_per_layer() < 0) std::abort();
  return 0;
}
