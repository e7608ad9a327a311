// The snapshot parser under fuzzing: any bytes are parsed without a crash or an out-of-bounds
// read, and whatever parses serializes back to exactly the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/session/snapshot.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/support/session_test_support.h"
#include "xxhash.h"

namespace {

// Parses `bytes` and checks the invariants; aborts (a finding) when one breaks.
void Check(absl::string_view bytes) {
  using namespace hgrn2::session;
  // Both state dtypes, so inputs derived from either kind of seed reach the payload checks.
  for (hgrn2::DType dtype : {hgrn2::DType::kF32, hgrn2::DType::kBF16}) {
    const absl::StatusOr<SnapshotHeader> header = ParseHeader(bytes);
    const absl::StatusOr<Snapshot> snapshot = Parse(bytes, hgrn2::testing::TestExpectation(dtype));
    if (!snapshot.ok()) continue;
    // A snapshot that parses has a header that parses, and is its own serialization.
    if (!header.ok() || Serialize(*snapshot) != bytes) std::abort();
    if (header->total_bytes() != bytes.size()) std::abort();
  }
}

}  // namespace

std::vector<std::string> FuzzBuiltInSeeds() {
  return {hgrn2::testing::TestSnapshotBytes(1),
          hgrn2::testing::TestSnapshotBytes(2, hgrn2::DType::kBF16),
          hgrn2::testing::TestSnapshotBytes(3, hgrn2::DType::kF32, /*revision=*/5)};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  Check(bytes);
  // Random bytes almost never carry valid checksums, so the checks behind them would go
  // unexplored: check the input again with both checksums recomputed (offsets 96 and 120).
  if (size >= hgrn2::session::kSnapshotHeaderBytes) {
    std::string fixed(bytes);
    auto put_u64 = [&](size_t at, uint64_t value) {
      for (int i = 0; i < 8; ++i) fixed[at + i] = static_cast<char>(value >> (8 * i));
    };
    put_u64(96, XXH3_64bits(fixed.data() + 128, fixed.size() - 128));
    put_u64(120, XXH3_64bits(fixed.data(), 120));
    Check(fixed);
  }
  return 0;
}
