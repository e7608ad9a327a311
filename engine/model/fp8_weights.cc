// FP8 weight quantization: per-output-channel scales and E4M3 rounding.
#include "engine/model/fp8_weights.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/fp8_e4m3.h"

namespace hgrn2 {

absl::StatusOr<Fp8Rows> QuantizeFp8Rows(absl::Span<const float> values, int64_t rows,
                                        int64_t cols) {
  if (rows < 0 || cols < 0 || values.size() != static_cast<size_t>(rows * cols)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fp8 quantization: ", values.size(), " values for a [", rows, ", ", cols, "] matrix"));
  }
  Fp8Rows out{rows, cols, std::vector<uint8_t>(values.size()),
              std::vector<float>(static_cast<size_t>(rows))};
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = values.data() + r * cols;
    float largest = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isfinite(row[c])) {
        return absl::InvalidArgumentError(
            absl::StrCat("fp8 quantization: the value at row ", r, ", column ", c, " is ", row[c]));
      }
      largest = std::fmax(largest, std::fabs(row[c]));
    }
    // A row whose largest magnitude is below 448 times the smallest float (so that its scale
    // would round to 0) is all zeros in FP8; it keeps scale 1, as a row of zeros does.
    float scale = largest / kernels::kE4M3Max;
    if (!(scale > 0.0f)) scale = 1.0f;
    out.scales[static_cast<size_t>(r)] = scale;
    uint8_t* codes = out.codes.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) codes[c] = kernels::FloatToE4M3(row[c] / scale);
  }
  return out;
}

std::vector<float> DequantizeFp8Rows(const Fp8Rows& weights) {
  std::vector<float> out(weights.codes.size());
  for (int64_t r = 0; r < weights.rows; ++r) {
    const float scale = weights.scales[static_cast<size_t>(r)];
    for (int64_t c = 0; c < weights.cols; ++c) {
      const size_t at = static_cast<size_t>(r * weights.cols + c);
      out[at] = kernels::E4M3ToFloat(weights.codes[at]) * scale;
    }
  }
  return out;
}

}  // namespace hgrn2
