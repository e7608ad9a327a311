// Model fingerprints: XXH3-128 over a fixed serialization of the config and the weight tensors.
#include "engine/checkpoint/fingerprint.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace hgrn2::session {
namespace {

// Feeds values into an XXH3-128 state in a fixed little-endian encoding, so the hash does not
// depend on the machine or on struct padding.
class FingerprintHasher {
 public:
  explicit FingerprintHasher(absl::string_view tag) : state_(XXH3_createState()) {
    XXH3_128bits_reset(state_.get());
    Bytes(tag);
  }

  void U64(uint64_t value) {
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(value >> (8 * i));
    XXH3_128bits_update(state_.get(), le, sizeof(le));
  }
  void I64(int64_t value) { U64(static_cast<uint64_t>(value)); }
  void F32(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    U64(bits);
  }
  // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
  void Bytes(absl::string_view bytes) {
    U64(bytes.size());
    XXH3_128bits_update(state_.get(), bytes.data(), bytes.size());
  }
  void Raw(const void* data, size_t size) {
    U64(size);
    XXH3_128bits_update(state_.get(), data, size);
  }

  ModelFingerprint Finish() {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
    ModelFingerprint fingerprint;
    static_assert(sizeof(canonical.digest) == sizeof(fingerprint.bytes));
    std::memcpy(fingerprint.bytes, canonical.digest, sizeof(fingerprint.bytes));
    return fingerprint;
  }

 private:
  struct FreeState {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
  };
  std::unique_ptr<XXH3_state_t, FreeState> state_;
};

// Every ModelConfig field, in declaration order. A new field must be added here (at the end), or
// two configs that differ in it would share a fingerprint.
void HashConfig(const ModelConfig& c, FingerprintHasher& h) {
  h.Bytes("config");
  h.I64(c.vocab_size);
  h.I64(c.hidden_size);
  h.I64(c.num_layers);
  h.I64(c.num_heads);
  h.I64(c.key_dim);
  h.I64(c.value_dim);
  h.I64(c.intermediate_size);
  h.U64(c.use_short_conv ? 1 : 0);
  h.I64(c.conv_size);
  h.U64(c.use_lower_bound ? 1 : 0);
  h.F32(c.norm_eps);
  h.U64(c.tie_word_embeddings ? 1 : 0);
  for (const std::optional<int32_t>& id : {c.bos_token_id, c.pad_token_id}) {
    h.U64(id.has_value() ? 1 : 0);
    h.I64(id.value_or(0));
  }
  h.U64(c.eos_token_ids.size());
  for (int32_t id : c.eos_token_ids) h.I64(id);
}

}  // namespace

std::string ModelFingerprint::ToHex() const {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

absl::StatusOr<ModelFingerprint> ModelFingerprint::FromHex(absl::string_view hex) {
  const bool all_hex = std::all_of(hex.begin(), hex.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
  if (hex.size() != 2 * sizeof(ModelFingerprint::bytes) || !all_hex) {
    return absl::InvalidArgumentError(
        absl::StrCat("a model fingerprint is 32 hex digits, got \"", hex, "\""));
  }
  const std::string raw = absl::HexStringToBytes(hex);
  ModelFingerprint fingerprint;
  std::memcpy(fingerprint.bytes, raw.data(), sizeof(fingerprint.bytes));
  return fingerprint;
}

ModelFingerprint FingerprintCheckpoint(const ModelConfig& config, const WeightFile& weights) {
  FingerprintHasher h("hgrn2 checkpoint v1");
  HashConfig(config, h);
  const std::vector<std::string> names = weights.Names();  // sorted
  h.U64(names.size());
  for (const std::string& name : names) {
    absl::StatusOr<TensorView> tensor = weights.Tensor(name);
    if (!tensor.ok()) continue;  // cannot happen: the name came from the file
    h.Bytes(tensor->name);
    h.Bytes(DTypeName(tensor->dtype));
    h.U64(tensor->shape.size());
    for (int64_t extent : tensor->shape) h.I64(extent);
    h.Raw(tensor->bytes.data(), tensor->bytes.size());
  }
  return h.Finish();
}

ModelFingerprint FingerprintRandomModel(const ModelConfig& config, uint64_t seed) {
  FingerprintHasher h("hgrn2 random weights v1");
  HashConfig(config, h);
  h.U64(seed);
  return h.Finish();
}

ModelFingerprint FingerprintRounded(const ModelFingerprint& base, absl::string_view rounding) {
  FingerprintHasher h("hgrn2 rounded weights v1");
  h.Raw(base.bytes, sizeof(base.bytes));
  h.Bytes(rounding);
  return h.Finish();
}

}  // namespace hgrn2::session
