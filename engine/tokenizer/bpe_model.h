// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback and unknown tokens;
// turns one pre-token into ids exactly as Hugging Face's tokenizers does.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hgrn2 {

// Thread-safe: the word cache is the only mutable state, behind a mutex.
class BpeModel {
 public:
  struct Options {
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
  };

  // `vocab` maps tokens to ids; `merges` are (left, right) pairs, highest priority first.
  // InvalidArgument when a merge names a token (or yields one) outside the vocabulary, or the
  // unknown token is not in it.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(
      absl::flat_hash_map<std::string, int32_t> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, Options options);

  // Appends the ids of one pre-token.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  // The token of `id`, or nullptr when no token has it.
  const std::string* IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  std::optional<int32_t> unk_id() const { return unk_id_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  BpeModel() = default;
  void TokenizeCached(absl::string_view word, std::vector<int32_t>* ids) const;
  void MergeWord(absl::string_view word, std::vector<int32_t>* ids) const;
  // Whether splitting words before each "▁" that follows another character changes no ids.
  bool CanSplitAtMetaspace() const;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  Options options_;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_;  // id of "<0xXX>", or -1
  // Llama-style tokenizers give BPE a whole text as one word ("▁" for spaces). Where no token
  // has "▁" after another character, merges never cross the start of a "▁" run, so long words
  // are split there: the same ids, and the parts are short enough to cache.
  bool split_at_metaspace_ = false;
  static constexpr size_t kSplitWordBytes = 64;

  // Pre-tokens repeat (words of a language), so their ids are kept; bounded like HF's cache,
  // which also leaves out long words (a whole prompt is one pre-token for Llama's Metaspace
  // with split = false, and caching prompts would grow without limit).
  static constexpr size_t kCacheCapacity = 1 << 16;
  static constexpr size_t kCacheMaxWordBytes = 256;
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace hgrn2
