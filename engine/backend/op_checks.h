// Argument checks that every backend's ops share: dtypes, shapes and a layer's recurrence inputs.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/backend/backend.h"

namespace hgrn2 {

// InvalidArgument naming `what` if `t` has null data (and elements), another dtype than `dtype`,
// or a row stride below its width.
absl::Status CheckTensor(const DeviceTensor& t, DType dtype, absl::string_view what);
// CheckTensor, and exactly [rows, cols].
absl::Status CheckShape(const DeviceTensor& t, DType dtype, int64_t rows, int64_t cols,
                        absl::string_view what);
// A Gemm's weight with `cols` columns: in `dtype` (the compute dtype), or F8_E4M3 codes with
// their row scales.
absl::Status CheckGemmWeight(const DeviceTensor& weight, DType dtype, int64_t cols);
// A recurrence op's inputs in `dtype`: positive sizes; qfi [tokens, 2·H·dk + H·dv]; out
// [tokens, H·dv]; with a short conv its taps [channels, K] and conv windows; some states.
absl::Status CheckLayer(const Hgrn2LayerOp& layer, DType dtype, const DeviceTensor& qfi,
                        const DeviceTensor& out);

}  // namespace hgrn2
