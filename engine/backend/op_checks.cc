// The shared argument checks of the backends' ops.
#include "engine/backend/op_checks.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {

absl::Status CheckTensor(const DeviceTensor& t, DType dtype, absl::string_view what) {
  if (t.data == nullptr && t.rows * t.cols > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null data"));
  }
  if (t.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ",
                                                   std::string(DTypeName(dtype)), ", got ",
                                                   std::string(DTypeName(t.dtype))));
  }
  if (t.row_stride < t.cols) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": row stride below the row width"));
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const DeviceTensor& t, DType dtype, int64_t rows, int64_t cols,
                        absl::string_view what) {
  HGRN2_RETURN_IF_ERROR(CheckTensor(t, dtype, what));
  if (t.rows != rows || t.cols != cols) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected [", rows, ", ", cols,
                                                   "], got [", t.rows, ", ", t.cols, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckGemmWeight(const DeviceTensor& weight, DType dtype, int64_t cols) {
  if (weight.dtype != DType::kF8E4M3) {
    return CheckShape(weight, dtype, weight.rows, cols, "gemm weight");
  }
  HGRN2_RETURN_IF_ERROR(CheckShape(weight, DType::kF8E4M3, weight.rows, cols, "gemm weight"));
  if (weight.scales == nullptr && weight.rows > 0) {
    return absl::InvalidArgumentError("gemm weight: F8_E4M3 codes without their row scales");
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(const Hgrn2LayerOp& layer, DType dtype, const DeviceTensor& qfi,
                        const DeviceTensor& out) {
  if (layer.num_heads <= 0 || layer.key_dim <= 0 || layer.value_dim <= 0 || layer.conv_size < 0) {
    return absl::InvalidArgumentError("hgrn2 layer: non-positive sizes");
  }
  const int64_t qf = static_cast<int64_t>(layer.num_heads) * layer.key_dim;
  const int64_t vw = static_cast<int64_t>(layer.num_heads) * layer.value_dim;
  HGRN2_RETURN_IF_ERROR(CheckShape(qfi, dtype, qfi.rows, 2 * qf + vw, "hgrn2 qfi"));
  HGRN2_RETURN_IF_ERROR(CheckShape(out, dtype, qfi.rows, vw, "hgrn2 out"));
  if (layer.conv_size > 0) {
    HGRN2_RETURN_IF_ERROR(
        CheckShape(layer.conv_weight, dtype, 2 * qf + vw, layer.conv_size, "hgrn2 conv weight"));
    if (layer.states.conv_state == nullptr) {
      return absl::InvalidArgumentError("hgrn2 layer: short conv without conv windows");
    }
  }
  if (layer.states.state == nullptr && layer.states.state_bf16 == nullptr) {
    return absl::InvalidArgumentError("hgrn2 layer: no states");
  }
  return absl::OkStatus();
}

}  // namespace hgrn2
