// Recycler: objects come back cleared with their capacity, up to the limit, across threads.
#include "engine/base/recycler.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace hgrn2 {
namespace {

TEST(RecyclerTest, ReturnedBufferComesBackClearedWithItsMemory) {
  Recycler<std::string> recycler(2);
  const char* data = nullptr;
  {
    std::shared_ptr<std::string> blob = recycler.Take();
    blob->assign(size_t{1} << 20, 'x');
    data = blob->data();
    EXPECT_EQ(recycler.kept(), 0u);
  }
  EXPECT_EQ(recycler.kept(), 1u);
  std::shared_ptr<std::string> again = recycler.Take();
  EXPECT_TRUE(again->empty());
  EXPECT_GE(again->capacity(), size_t{1} << 20);
  EXPECT_EQ(again->data(), data);  // the same memory, not a new allocation
  EXPECT_EQ(recycler.reused(), 1u);
}

TEST(RecyclerTest, KeepsNoMoreThanItsLimit) {
  Recycler<std::vector<std::byte>> recycler(2);
  {
    std::vector<std::shared_ptr<std::vector<std::byte>>> taken;
    for (int i = 0; i < 5; ++i) {
      taken.push_back(recycler.Take());
      taken.back()->resize(4096);
    }
  }
  EXPECT_EQ(recycler.kept(), 2u);
  auto a = recycler.Take();
  auto b = recycler.Take();
  auto c = recycler.Take();
  EXPECT_EQ(a->capacity(), 4096u);
  EXPECT_EQ(b->capacity(), 4096u);
  EXPECT_EQ(c->capacity(), 0u);  // a fresh one: only two were kept
  EXPECT_EQ(recycler.reused(), 2u);
}

struct Record {
  std::vector<int> values;
  int tag = 0;
  void Clear() {
    values.clear();
    tag = 0;
  }
};

TEST(RecyclerTest, UsesClearOfAStruct) {
  Recycler<Record> recycler(1);
  {
    auto record = recycler.Take();
    record->values.assign(100, 7);
    record->tag = 3;
  }
  auto record = recycler.Take();
  EXPECT_TRUE(record->values.empty());
  EXPECT_GE(record->values.capacity(), 100u);
  EXPECT_EQ(record->tag, 0);
}

// Objects outliving their recycler go back to its shared state (or are deleted) safely, and
// takes and returns from many threads keep the count within the limit (run under TSan in CI).
TEST(RecyclerTest, OutlivesTheRecyclerAndIsThreadSafe) {
  std::shared_ptr<std::string> survivor;
  {
    Recycler<std::string> recycler(3);
    survivor = recycler.Take();
    survivor->assign(100, 'y');
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&recycler] {
        for (int i = 0; i < 200; ++i) {
          std::shared_ptr<std::string> blob = recycler.Take();
          EXPECT_TRUE(blob->empty());
          blob->assign(64, 'z');
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_LE(recycler.kept(), 3u);
    EXPECT_GT(recycler.reused(), 0u);
  }
  EXPECT_EQ(*survivor, std::string(100, 'y'));
  survivor.reset();  // returned to the state the recycler left behind, freed with it
}

}  // namespace
}  // namespace hgrn2
