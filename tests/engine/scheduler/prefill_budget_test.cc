// PrefillBudget: the ceiling with nothing decoding, a share of the backlog within bounds, fixed
// when the ceiling is the base.
#include "engine/scheduler/prefill_budget.h"

#include <gtest/gtest.h>

namespace hgrn2 {
namespace {

TEST(PrefillBudgetTest, NothingDecodingTakesTheCeiling) {
  const PrefillBudget budget{.base = 512, .ceiling = 4096};
  EXPECT_EQ(budget.For(/*backlog=*/100, /*decoding=*/0), 4096);
  EXPECT_EQ(budget.For(/*backlog=*/1 << 20, /*decoding=*/0), 4096);
}

TEST(PrefillBudgetTest, ATrickleKeepsTheBase) {
  const PrefillBudget budget{.base = 512, .ceiling = 4096};
  EXPECT_EQ(budget.For(0, 256), 512);
  EXPECT_EQ(budget.For(128, 256), 512);
  // Up to kBacklogShare times the base, the base.
  EXPECT_EQ(budget.For(PrefillBudget::kBacklogShare * 512, 1), 512);
}

TEST(PrefillBudgetTest, ABacklogTakesItsShareUpToTheCeiling) {
  const PrefillBudget budget{.base = 512, .ceiling = 4096};
  const int64_t share = PrefillBudget::kBacklogShare;
  EXPECT_EQ(budget.For(share * 512 + 1, 7), 513);  // rounded up
  EXPECT_EQ(budget.For(share * 1000, 7), 1000);
  EXPECT_EQ(budget.For(share * 4096, 7), 4096);
  EXPECT_EQ(budget.For(256 * 128, 7), 4096);  // a burst of 256 prompts of 128 tokens
}

TEST(PrefillBudgetTest, ACeilingAtTheBaseIsFixed) {
  const PrefillBudget fixed{.base = 512, .ceiling = 512};
  EXPECT_EQ(fixed.For(1 << 20, 0), 512);
  EXPECT_EQ(fixed.For(1 << 20, 64), 512);
  EXPECT_EQ(fixed.For(3, 64), 512);
  // A ceiling below the base (unresolved) never lowers it.
  const PrefillBudget below{.base = 512, .ceiling = 0};
  EXPECT_EQ(below.For(1 << 20, 64), 512);
  EXPECT_EQ(below.For(1 << 20, 0), 512);
}

}  // namespace
}  // namespace hgrn2
