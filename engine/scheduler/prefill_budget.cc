// PrefillBudget::For.
#include "engine/scheduler/prefill_budget.h"

#include <algorithm>

namespace hgrn2 {

int64_t PrefillBudget::For(int64_t backlog, int64_t decoding) const {
  const int64_t most = std::max(base, ceiling);
  if (decoding == 0) return most;
  const int64_t share = (backlog + kBacklogShare - 1) / kBacklogShare;
  return std::clamp(share, base, most);
}

}  // namespace hgrn2
