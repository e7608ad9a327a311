// BPE as Hugging Face's tokenizers runs it (models/bpe/model.rs and word.rs): characters to ids
// (byte fallback or unknown token when a character has none), then the lowest-ranked adjacent
// pair merged first, leftmost on ties, until no pair has a merge.
#include "engine/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/unicode.h"

namespace hgrn2 {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    absl::flat_hash_map<std::string, int32_t> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, Options options) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab: token \"", token, "\" has a negative id ", id));
    }
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  model->has_token_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab) {
    if (model->has_token_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab: id ", id, " is given to both \"",
                                                     model->id_to_token_[id], "\" and \"", token,
                                                     "\""));
    }
    model->id_to_token_[id] = token;
    model->has_token_[id] = true;
  }
  model->vocab_ = std::move(vocab);
  const size_t prefix_length = options.continuing_subword_prefix.size();
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto a = model->vocab_.find(left);
    auto b = model->vocab_.find(right);
    if (a == model->vocab_.end() || b == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", rank, "] \"", left, " ", right, "\": token \"",
                       a == model->vocab_.end() ? left : right, "\" is not in the vocabulary"));
    }
    absl::string_view right_part = right;
    if (prefix_length > 0 && absl::StartsWith(right_part, options.continuing_subword_prefix)) {
      right_part.remove_prefix(prefix_length);
    }
    const std::string merged = absl::StrCat(left, right_part);
    auto c = model->vocab_.find(merged);
    if (c == model->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "] \"", left, " ",
                                                     right, "\": the merged token \"", merged,
                                                     "\" is not in the vocabulary"));
    }
    // A repeated pair takes its last rank, as collecting into HF's HashMap does.
    model->merges_.insert_or_assign(PairKey(a->second, b->second),
                                    Merge{static_cast<int32_t>(rank), c->second});
  }
  if (options.unk_token) {
    auto it = model->vocab_.find(*options.unk_token);
    if (it == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token \"", *options.unk_token, "\" is not in the vocabulary"));
    }
    model->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = model->vocab_.find(absl::StrFormat("<0x%02X>", b));
    model->byte_ids_[b] = it == model->vocab_.end() ? -1 : it->second;
  }
  model->options_ = std::move(options);
  model->split_at_metaspace_ = model->CanSplitAtMetaspace();
  return model;
}

namespace {
constexpr absl::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, Metaspace's replacement
}  // namespace

bool BpeModel::CanSplitAtMetaspace() const {
  // Prefixes and suffixes change the symbols at a split; an unknown "▁" could fuse with the
  // unknown characters before it.
  if (!options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty() ||
      !vocab_.contains(kMetaspace)) {
    return false;
  }
  for (const auto& [token, id] : vocab_) {
    // "▁" may only follow "▁": a token with "x▁" could be merged across a split.
    bool only_metaspace = absl::StartsWith(token, kMetaspace);
    for (size_t pos = 0; pos < token.size();) {
      const bool is_metaspace = absl::string_view(token).substr(pos, 3) == kMetaspace;
      if (is_metaspace && pos > 0 && !only_metaspace) return false;
      only_metaspace = only_metaspace && is_metaspace;
      pos += unicode::CharLength(token, pos);
    }
  }
  return true;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !has_token_[id]) {
    return nullptr;
  }
  return &id_to_token_[id];
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (split_at_metaspace_ && word.size() > kSplitWordBytes) {
    size_t start = 0;
    bool previous_is_metaspace = true;  // no split before the first character
    for (size_t pos = 0; pos < word.size();) {
      const bool is_metaspace = word.substr(pos, 3) == kMetaspace;
      if (is_metaspace && !previous_is_metaspace) {
        TokenizeCached(word.substr(start, pos - start), ids);
        start = pos;
      }
      previous_is_metaspace = is_metaspace;
      pos += unicode::CharLength(word, pos);
    }
    TokenizeCached(word.substr(start), ids);
    return;
  }
  TokenizeCached(word, ids);
}

void BpeModel::TokenizeCached(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() > kCacheMaxWordBytes) {
    MergeWord(word, ids);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  MergeWord(word, &word_ids);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(word, std::move(word_ids));
}

void BpeModel::MergeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  int32_t pending_unk = -1;  // an unknown run not yet added (fuse_unk joins runs), or -1
  std::string piece;
  for (size_t pos = 0; pos < word.size();) {
    const size_t length = unicode::CharLength(word, pos);
    const bool is_first = pos == 0;
    const bool is_last = pos + length >= word.size();
    piece.clear();
    if (!is_first) piece += options_.continuing_subword_prefix;
    piece.append(word.data() + pos, length);
    if (is_last) piece += options_.end_of_word_suffix;
    pos += length;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all_bytes = true;
      for (char c : piece) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        // As in HF, a pending unknown run is not flushed before the bytes.
        for (char c : piece) add(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = *unk_id_;
    }
    // Without an unknown token, HF drops the character.
  }
  if (pending_unk >= 0) add(pending_unk);

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[symbols[pos].next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.alive) ids->push_back(symbol.id);
  }
}

}  // namespace hgrn2
