// The prefix state cache: the states at the ends of recent prompts, in state slots of their own,
// found by the longest cached prefix of a new prompt. Internal to the scheduler.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/state_pool.h"

namespace hgrn2 {

// An entry for prompt P holds the state after P[:-1], with P's last token not fed, the way a
// session keeps its pending token. So a prompt Q hits P when P is a prefix of Q, equal to Q
// included: Q starts from P's state and feeds Q[|P|-1:], at least one token, and whatever path
// feeds that token gives the logits of a first sample. Entries are found by a hash of their
// tokens and confirmed by comparing the tokens (a collision never hits). Least recently used
// goes first when a new entry needs a slot.
//
// Writes and reads are copies on the device thread, in the device's order: an entry is never
// read before its write, and a request takes its copy at admission, so eviction never drops a
// state some request still has to read.
//
// Thread-safety: the device thread only (it drives the pool).
class PrefixCache {
 public:
  // Takes `capacity` slots of `pool` for the cache's lifetime (0: a cache that holds nothing).
  // ResourceExhausted when the pool has fewer free slots.
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(StatePool& pool, int32_t capacity);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Hit {
    SlotId slot = -1;    // holds the state after prompt[:length - 1]
    int64_t length = 0;  // tokens of the entry (>= 2), a prefix of the prompt looked up
  };
  // The longest entry that is a prefix of `prompt` (its whole length allowed), now the most
  // recently used; nullopt when none is.
  std::optional<Hit> Lookup(absl::Span<const int32_t> prompt);
  // Keeps a copy of `slot` (the state after prompt[:-1]) as the entry of `prompt`, evicting the
  // least recently used entry when full. Nothing for a prompt under 2 tokens or with no capacity;
  // an entry already there becomes the most recently used. On a failed copy nothing is kept.
  absl::Status Insert(absl::Span<const int32_t> prompt, SlotId slot);

  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  int64_t capacity() const { return static_cast<int64_t>(slots_.size()); }
  int64_t evictions() const { return evictions_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    uint64_t hash = 0;
    SlotId slot = -1;
  };
  using EntryList = std::list<Entry>;  // most recently used first

  PrefixCache(StatePool& pool, std::vector<SlotId> slots);
  // The entry with exactly these tokens (hash given), or end().
  EntryList::iterator Find(absl::Span<const int32_t> tokens, uint64_t hash);
  void Erase(EntryList::iterator entry);

  StatePool& pool_;
  std::vector<SlotId> slots_;       // all of them, taken from the pool at creation
  std::vector<SlotId> free_slots_;  // those no entry holds
  EntryList entries_;
  std::unordered_multimap<uint64_t, EntryList::iterator> by_hash_;
  std::map<int64_t, int32_t> lengths_;  // entry length -> entries of that length
  int64_t evictions_ = 0;
};

// Hashes of every prefix of `tokens`: out[k] for tokens[:k] (out[0] for the empty prefix).
std::vector<uint64_t> PrefixHashes(absl::Span<const int32_t> tokens);

}  // namespace hgrn2
