// The safetensors parser under fuzzing: any bytes, as a whole file or (after an 8-byte data
// size) as a bare header, parse without a crash or an out-of-bounds read, and every tensor that
// parses lies inside the data section, holds exactly its shape's bytes, and overlaps no other.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "engine/base/dtype.h"
#include "engine/checkpoint/weight_file.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

// Byte size of a parsed tensor's shape; aborts (a finding) when the parser let it overflow.
uint64_t ShapeBytes(const hgrn2::TensorView& view) {
  uint64_t elements = 1;
  for (int64_t dim : view.shape) {
    if (dim < 0) std::abort();
    if (dim != 0 && elements > UINT64_MAX / static_cast<uint64_t>(dim)) {
      if (std::find(view.shape.begin(), view.shape.end(), 0) == view.shape.end()) std::abort();
      return 0;  // a zero elsewhere empties it
    }
    elements *= static_cast<uint64_t>(dim);
  }
  if (view.num_elements() != static_cast<int64_t>(elements)) std::abort();
  return elements * hgrn2::DTypeSize(view.dtype);
}

void CheckFile(absl::Span<const std::byte> file) {
  const absl::StatusOr<std::vector<hgrn2::TensorView>> views =
      hgrn2::ParseSafetensors(file, "fuzz.safetensors");
  if (!views.ok()) return;
  std::vector<std::pair<const std::byte*, const std::byte*>> ranges;
  for (const hgrn2::TensorView& view : *views) {
    if (view.bytes.size() != ShapeBytes(view)) std::abort();
    if (view.bytes.empty()) continue;
    if (view.bytes.data() < file.data() + 8 ||
        view.bytes.data() + view.bytes.size() > file.data() + file.size()) {
      std::abort();
    }
    ranges.emplace_back(view.bytes.data(), view.bytes.data() + view.bytes.size());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) std::abort();
  }
}

void CheckHeader(absl::string_view input) {
  if (input.size() < 8) return;
  uint64_t data_size = 0;
  for (int i = 7; i >= 0; --i) data_size = (data_size << 8) | static_cast<uint8_t>(input[i]);
  const absl::StatusOr<std::vector<hgrn2::TensorView>> views =
      hgrn2::ParseSafetensorsHeader(input.substr(8), static_cast<size_t>(data_size), "fuzz");
  if (!views.ok()) return;
  for (const hgrn2::TensorView& view : *views) {
    if (!view.bytes.empty()) std::abort();  // no data section was given
    if (ShapeBytes(view) > data_size) std::abort();
  }
  if (!std::is_sorted(views->begin(), views->end(),
                      [](const auto& a, const auto& b) { return a.name < b.name; })) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckFile(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(data), size));
  CheckHeader(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
