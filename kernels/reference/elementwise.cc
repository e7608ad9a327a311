// CPU references of the row-wise ops: RMSNorm (+residual), SwiGLU, row gather, log-softmax gather.
#include <cmath>

#include "kernels/gather_rows.h"
#include "kernels/log_softmax_gather.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"

namespace hgrn2::kernels {

void RmsNormReference(const RmsNormParams<float>& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.x_stride_row;
    float* out = p.out + r * p.out_stride_row;
    const float* source = x;
    if (p.residual != nullptr) {
      float* residual = p.residual + r * p.residual_stride_row;
      for (int64_t c = 0; c < p.cols; ++c) residual[c] += x[c];
      source = residual;
    }
    double sum_squares = 0.0;
    for (int64_t c = 0; c < p.cols; ++c) {
      sum_squares += static_cast<double>(source[c]) * source[c];
    }
    const float scale =
        static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(p.cols) + p.eps));
    for (int64_t c = 0; c < p.cols; ++c) out[c] = source[c] * scale * p.weight[c];
  }
}

void SwiGluReference(const SwiGluParams<float>& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* gate = p.gate_up + r * p.gate_up_stride_row;
    const float* up = gate + p.cols;
    float* out = p.out + r * p.out_stride_row;
    for (int64_t c = 0; c < p.cols; ++c) {
      const float g = gate[c];
      out[c] = g / (1.0f + std::exp(-g)) * up[c];
    }
  }
}

void GatherRowsReference(const GatherRowsParams<float>& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* row = p.table + static_cast<int64_t>(p.indices[r]) * p.table_stride_row;
    float* out = p.out + r * p.out_stride_row;
    for (int64_t c = 0; c < p.cols; ++c) out[c] = row[c];
  }
}

void LogSoftmaxGatherReference(const LogSoftmaxGatherParams<float>& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* logits = p.logits + r * p.logits_stride_row;
    float max_logit = -INFINITY;
    for (int64_t c = 0; c < p.cols; ++c) max_logit = std::fmax(max_logit, logits[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < p.cols; ++c)
      sum += std::exp(static_cast<double>(logits[c]) - max_logit);
    const double log_sum = std::log(sum);
    p.out[r] = static_cast<float>(static_cast<double>(logits[p.targets[r]]) - max_logit - log_sum);
    if (p.out_max != nullptr) {
      p.out_max[r] = static_cast<float>(static_cast<double>(max_logit) - max_logit - log_sum);
    }
  }
}

}  // namespace hgrn2::kernels
