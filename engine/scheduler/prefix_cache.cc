// PrefixCache: the entries, their LRU order and their hash index over prefix lengths.
#include "engine/scheduler/prefix_cache.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {
namespace {

// SplitMix64's finaliser: every input bit reaches every output bit.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<uint64_t> PrefixHashes(absl::Span<const int32_t> tokens) {
  std::vector<uint64_t> hashes(tokens.size() + 1);
  hashes[0] = Mix(0);
  for (size_t k = 0; k < tokens.size(); ++k) {
    hashes[k + 1] = Mix(hashes[k] ^ static_cast<uint32_t>(tokens[k]));
  }
  return hashes;
}

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(StatePool& pool,
                                                                 int32_t capacity) {
  if (capacity < 0 || capacity > pool.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prefix cache: ", capacity, " slots wanted, the pool has ", pool.num_free(), " free"));
  }
  std::vector<SlotId> slots;
  for (int32_t i = 0; i < capacity; ++i) {
    absl::StatusOr<SlotId> slot = pool.Allocate();
    if (!slot.ok()) {
      for (SlotId taken : slots) pool.Free(taken).IgnoreError();
      return slot.status();
    }
    slots.push_back(*slot);
  }
  return std::unique_ptr<PrefixCache>(new PrefixCache(pool, std::move(slots)));
}

PrefixCache::PrefixCache(StatePool& pool, std::vector<SlotId> slots)
    : pool_(pool), slots_(std::move(slots)), free_slots_(slots_.rbegin(), slots_.rend()) {}

PrefixCache::~PrefixCache() {
  for (SlotId slot : slots_) pool_.Free(slot).IgnoreError();
}

PrefixCache::EntryList::iterator PrefixCache::Find(absl::Span<const int32_t> tokens,
                                                   uint64_t hash) {
  auto [begin, end] = by_hash_.equal_range(hash);
  for (auto it = begin; it != end; ++it) {
    const std::vector<int32_t>& held = it->second->tokens;
    if (held.size() == tokens.size() && std::equal(held.begin(), held.end(), tokens.begin())) {
      return it->second;
    }
  }
  return entries_.end();
}

std::optional<PrefixCache::Hit> PrefixCache::Lookup(absl::Span<const int32_t> prompt) {
  if (entries_.empty() || prompt.size() < 2) return std::nullopt;
  const std::vector<uint64_t> hashes = PrefixHashes(prompt);
  // Longest first, among the lengths some entry has.
  for (auto length = lengths_.upper_bound(static_cast<int64_t>(prompt.size()));
       length != lengths_.begin();) {
    --length;
    const int64_t n = length->first;
    auto entry = Find(prompt.first(static_cast<size_t>(n)), hashes[static_cast<size_t>(n)]);
    if (entry == entries_.end()) continue;
    entries_.splice(entries_.begin(), entries_, entry);  // iterators stay valid
    return Hit{entry->slot, n};
  }
  return std::nullopt;
}

void PrefixCache::Erase(EntryList::iterator entry) {
  auto [begin, end] = by_hash_.equal_range(entry->hash);
  for (auto it = begin; it != end; ++it) {
    if (it->second == entry) {
      by_hash_.erase(it);
      break;
    }
  }
  const int64_t n = static_cast<int64_t>(entry->tokens.size());
  if (--lengths_[n] == 0) lengths_.erase(n);
  free_slots_.push_back(entry->slot);
  entries_.erase(entry);
}

absl::Status PrefixCache::Insert(absl::Span<const int32_t> prompt, SlotId slot) {
  if (prompt.size() < 2 || slots_.empty()) return absl::OkStatus();
  const uint64_t hash = PrefixHashes(prompt).back();
  if (auto held = Find(prompt, hash); held != entries_.end()) {
    entries_.splice(entries_.begin(), entries_, held);
    return absl::OkStatus();
  }
  if (free_slots_.empty()) {
    Erase(std::prev(entries_.end()));
    ++evictions_;
  }
  const SlotId target = free_slots_.back();
  HGRN2_RETURN_IF_ERROR(pool_.Copy(slot, target));
  free_slots_.pop_back();
  entries_.push_front(Entry{std::vector<int32_t>(prompt.begin(), prompt.end()), hash, target});
  by_hash_.emplace(hash, entries_.begin());
  ++lengths_[static_cast<int64_t>(prompt.size())];
  return absl::OkStatus();
}

}  // namespace hgrn2
