// Named model shapes for benchmarks with random weights.
#include "engine/checkpoint/model_presets.h"

#include "absl/strings/str_cat.h"

namespace hgrn2 {

absl::StatusOr<ModelConfig> ModelPreset(absl::string_view name) {
  ModelConfig c;  // the defaults are fla's HGRN2 1.3B shape
  if (name == "1.3b") return c;
  if (name == "370m") {
    c.hidden_size = 1024;
    c.num_layers = 24;
    c.num_heads = 8;
    c.value_dim = 128;
    c.intermediate_size = 2816;
    return c;
  }
  if (name == "tiny") {
    c.vocab_size = 512;
    c.hidden_size = 128;
    c.num_layers = 2;
    c.num_heads = 2;
    c.key_dim = 64;
    c.value_dim = 64;
    c.intermediate_size = 352;
    return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", name, "\": expected 1.3b, 370m or tiny"));
}

}  // namespace hgrn2
