// The prompt tokens one scheduler iteration feeds: a fixed budget that grows with the backlog.
#pragma once

#include <cstdint>

namespace hgrn2 {

// The budget's bounds, resolved from EngineOptions (prefill_token_budget and
// max_prefill_token_budget, its auto value settled for the backend).
struct PrefillBudget {
  int64_t base = 512;     // tokens per iteration while sequences decode and few prompts wait
  int64_t ceiling = 512;  // at most this many, ever; == base: a fixed budget

  // Above `base`, an iteration feeds 1/kBacklogShare of the prompt tokens waiting: a burst
  // drains in a handful of iterations (each decoding sequence waits as many long steps), and a
  // trickle of prompts (under kBacklogShare * base tokens) never moves the budget off `base`.
  static constexpr int64_t kBacklogShare = 4;

  // Tokens for an iteration in which `backlog` prompt tokens wait in prefill and `decoding`
  // sequences wait for this iteration's decode step: the ceiling when none decode (nobody's
  // next token waits on prefill), else a quarter of the backlog within [base, ceiling].
  int64_t For(int64_t backlog, int64_t decoding) const;
};

}  // namespace hgrn2
