// FP8 (E4M3) weights with one scale per output channel: quantizing a weight matrix at load.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace hgrn2 {

// A [rows, cols] matrix as E4M3 codes and one float32 scale per row (output channel): the value at
// (r, c) is E4M3ToFloat(codes[r · cols + c]) · scales[r], rounded to float32.
struct Fp8Rows {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> codes;  // [rows · cols]
  std::vector<float> scales;   // [rows]
};

// Each row scaled so that its largest magnitude maps to 448 (E4M3's largest), then rounded to the
// nearest code (FloatToE4M3); a row of zeros (or of magnitudes so small that the scale would be
// 0) gets scale 1. InvalidArgument naming the row and
// column of a value that is not finite, or when values.size() is not rows · cols.
absl::StatusOr<Fp8Rows> QuantizeFp8Rows(absl::Span<const float> values, int64_t rows, int64_t cols);

// The float32 values the codes and scales stand for (see Fp8Rows): what a model with FP8
// weights multiplies by, whatever device it runs on.
std::vector<float> DequantizeFp8Rows(const Fp8Rows& weights);

}  // namespace hgrn2
