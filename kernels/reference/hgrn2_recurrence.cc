// CPU references of the HGRN2 token mixer: the decode step, and prefill token by token or chunked.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/hgrn2_prefill.h"
#include "kernels/hgrn2_step.h"

namespace hgrn2::kernels {
namespace {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

inline double LogSigmoid(double x) {
  return x >= 0.0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}

// The activated inputs of one token: q = swish(q), k = 1 - g, the forget gate g and its log.
struct TokenGates {
  std::vector<float> q, k, g, v;
  std::vector<double> log_g;

  TokenGates(int64_t qf_width, int64_t v_width)
      : q(qf_width), k(qf_width), g(qf_width), v(v_width), log_g(qf_width) {}
};

// `q_in`, `f_in`, `v_in` are a token's values after the conv (or the projections without one).
void ActivateToken(const float* q_in, const float* f_in, const float* v_in,
                   const float* lower_bound, int64_t qf_width, int64_t v_width, TokenGates& out) {
  for (int64_t c = 0; c < qf_width; ++c) {
    const float q = q_in[c];
    out.q[c] = q * Sigmoid(q);
    const float f = f_in[c];
    // 1 - g = (1 - lb) · sigmoid(-f): exact where g is close to 1.
    const float lb = lower_bound != nullptr ? lower_bound[c] : 0.0f;
    out.g[c] = lb + (1.0f - lb) * Sigmoid(f);
    out.k[c] = (1.0f - lb) * Sigmoid(-f);
    // log g = logaddexp(log lb, log(1 - lb) + logsigmoid(f)), as fla computes it.
    const double log_rest = std::log1p(-static_cast<double>(lb)) + LogSigmoid(f);
    if (lb > 0.0f) {
      const double log_lb = std::log(static_cast<double>(lb));
      const double hi = std::max(log_lb, log_rest);
      const double lo = std::min(log_lb, log_rest);
      out.log_g[c] = hi + std::log1p(std::exp(lo - hi));
    } else {
      out.log_g[c] = log_rest;
    }
  }
  std::copy(v_in, v_in + v_width, out.v.begin());
}

// Runs the short conv of one sequence's `num_tokens` projections (rows of `qfi`) into `conved`
// ([num_tokens, channels]) and leaves the last K inputs in `window` ([channels, K]).
template <typename Params>
void ConvolveSequence(const Params& p, const float* qfi, int64_t num_tokens, float* window,
                      std::vector<float>& conved) {
  const int64_t channels = p.channels();
  const int64_t kernel = p.conv_size;
  conved.assign(static_cast<size_t>(num_tokens * channels), 0.0f);
  std::vector<float> history(static_cast<size_t>(kernel));
  for (int64_t c = 0; c < channels; ++c) {
    float* win = window + c * kernel;
    const float* w = p.conv_weight + c * kernel;
    // Input at position t (negative: from the window, -1 is the newest).
    auto input = [&](int64_t t) {
      return t >= 0 ? qfi[t * p.qfi_stride_token + c] : win[kernel + t];
    };
    for (int64_t t = 0; t < num_tokens; ++t) {
      float sum = 0.0f;
      for (int64_t j = 0; j < kernel; ++j) sum += w[j] * input(t - (kernel - 1) + j);
      conved[static_cast<size_t>(t * channels + c)] = sum;
    }
    for (int64_t j = 0; j < kernel; ++j) history[j] = input(num_tokens - kernel + j);
    std::copy(history.begin(), history.end(), win);
  }
}

// S = S · g + v kᵀ; o = S q, for every head of one token.
void RecurrentToken(const Hgrn2LayerParams<float>& p, const TokenGates& t, float* state,
                    float* out) {
  const int64_t dk = p.key_dim;
  const int64_t dv = p.value_dim;
  for (int64_t h = 0; h < p.num_heads; ++h) {
    float* s = state + h * dv * dk;
    const float* q = t.q.data() + h * dk;
    const float* k = t.k.data() + h * dk;
    const float* g = t.g.data() + h * dk;
    const float* v = t.v.data() + h * dv;
    for (int64_t i = 0; i < dv; ++i) {
      double o = 0.0;
      float* row = s + i * dk;
      for (int64_t j = 0; j < dk; ++j) {
        row[j] = row[j] * g[j] + v[i] * k[j];
        o += static_cast<double>(row[j]) * q[j];
      }
      out[h * dv + i] = static_cast<float>(o);
    }
  }
}

// One chunk of the chunked form for one head: tokens [0, n) of `gates`, state S0 -> S_n.
//   o_t = (q_t · exp(B_t)) S0 + Σ_{s<=t} [(q_t · exp(B_t - B_s)) · k_s] v_s
//   S_n = exp(B_n) · S0 + Σ_s (k_s · exp(B_n - B_s)) v_sᵀ
// with B_t = Σ_{r<=t} log g_r from the chunk start. Every exponent is <= 0, so nothing overflows.
void ChunkHead(const std::vector<TokenGates>& gates, int64_t first, int64_t n, int64_t h,
               int64_t dk, int64_t dv, float* state, float* out, int64_t out_stride) {
  std::vector<double> cum(static_cast<size_t>(n * dk));  // B_t per channel
  for (int64_t t = 0; t < n; ++t) {
    const double* log_g = gates[first + t].log_g.data() + h * dk;
    for (int64_t j = 0; j < dk; ++j) {
      cum[t * dk + j] = log_g[j] + (t > 0 ? cum[(t - 1) * dk + j] : 0.0);
    }
  }
  std::vector<double> o(static_cast<size_t>(dv));
  std::vector<double> decayed_q(static_cast<size_t>(dk));  // q_t · exp(B_t)
  for (int64_t t = 0; t < n; ++t) {
    const float* q = gates[first + t].q.data() + h * dk;
    const double* b_t = cum.data() + t * dk;
    for (int64_t j = 0; j < dk; ++j) decayed_q[j] = q[j] * std::exp(b_t[j]);
    for (int64_t i = 0; i < dv; ++i) {
      const float* s0 = state + i * dk;
      double sum = 0.0;
      for (int64_t j = 0; j < dk; ++j) sum += static_cast<double>(s0[j]) * decayed_q[j];
      o[i] = sum;
    }
    for (int64_t s = 0; s <= t; ++s) {
      const float* k = gates[first + s].k.data() + h * dk;
      const double* b_s = cum.data() + s * dk;
      double a = 0.0;
      for (int64_t j = 0; j < dk; ++j) {
        a += static_cast<double>(q[j]) * k[j] * std::exp(b_t[j] - b_s[j]);
      }
      const float* v = gates[first + s].v.data() + h * dv;
      for (int64_t i = 0; i < dv; ++i) o[i] += a * v[i];
    }
    float* o_out = out + (first + t) * out_stride + h * dv;
    for (int64_t i = 0; i < dv; ++i) o_out[i] = static_cast<float>(o[i]);
  }
  const double* b_n = cum.data() + (n - 1) * dk;
  std::vector<double> decayed_k(static_cast<size_t>(n * dk));
  for (int64_t s = 0; s < n; ++s) {
    const float* k = gates[first + s].k.data() + h * dk;
    for (int64_t j = 0; j < dk; ++j) {
      decayed_k[s * dk + j] = k[j] * std::exp(b_n[j] - cum[s * dk + j]);
    }
  }
  std::vector<double> decay_n(static_cast<size_t>(dk));  // exp(B_n)
  for (int64_t j = 0; j < dk; ++j) decay_n[j] = std::exp(b_n[j]);
  for (int64_t i = 0; i < dv; ++i) {
    float* row = state + i * dk;
    for (int64_t j = 0; j < dk; ++j) {
      double sum = static_cast<double>(row[j]) * decay_n[j];
      for (int64_t s = 0; s < n; ++s) {
        sum += static_cast<double>(gates[first + s].v[h * dv + i]) * decayed_k[s * dk + j];
      }
      row[j] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void Hgrn2StepReference(const Hgrn2StepParams<float>& params) {
  const Hgrn2LayerParams<float>& p = params.layer;
  const int64_t qf = p.qf_width();
  const int64_t vw = p.v_width();
  const int64_t channels = p.channels();
  TokenGates gates(qf, vw);
  std::vector<float> conved(static_cast<size_t>(channels));
  for (int32_t b = 0; b < params.batch; ++b) {
    const int64_t slot = p.slots[b];
    const float* x = p.qfi + b * p.qfi_stride_token;
    const float* in = x;
    if (p.conv_size > 0) {
      float* window = p.conv_state + slot * p.conv_state_stride_slot;
      for (int64_t c = 0; c < channels; ++c) {
        float* win = window + c * p.conv_size;
        std::copy(win + 1, win + p.conv_size, win);
        win[p.conv_size - 1] = x[c];
        float sum = 0.0f;
        for (int64_t j = 0; j < p.conv_size; ++j)
          sum += p.conv_weight[c * p.conv_size + j] * win[j];
        conved[c] = sum;
      }
      in = conved.data();
    }
    ActivateToken(in, in + qf, in + 2 * qf, p.lower_bound, qf, vw, gates);
    RecurrentToken(p, gates, p.state + slot * p.state_stride_slot, p.out + b * p.out_stride_token);
  }
}

void Hgrn2PrefillReference(const Hgrn2PrefillParams<float>& params) {
  const Hgrn2LayerParams<float>& p = params.layer;
  const int64_t qf = p.qf_width();
  const int64_t vw = p.v_width();
  const int64_t channels = p.channels();
  std::vector<float> conved;
  for (int32_t b = 0; b < params.num_seqs; ++b) {
    const int64_t begin = params.seq_offsets[b];
    const int64_t num_tokens = params.seq_offsets[b + 1] - begin;
    if (num_tokens <= 0) continue;
    const int64_t slot = p.slots[b];
    const float* qfi = p.qfi + begin * p.qfi_stride_token;
    const float* in = qfi;
    int64_t in_stride = p.qfi_stride_token;
    if (p.conv_size > 0) {
      ConvolveSequence(p, qfi, num_tokens, p.conv_state + slot * p.conv_state_stride_slot, conved);
      in = conved.data();
      in_stride = channels;
    }
    std::vector<TokenGates> gates(static_cast<size_t>(num_tokens), TokenGates(qf, vw));
    for (int64_t t = 0; t < num_tokens; ++t) {
      const float* x = in + t * in_stride;
      ActivateToken(x, x + qf, x + 2 * qf, p.lower_bound, qf, vw, gates[t]);
    }
    float* state = p.state + slot * p.state_stride_slot;
    float* out = p.out + begin * p.out_stride_token;
    if (params.chunk_size <= 0) {
      for (int64_t t = 0; t < num_tokens; ++t) {
        RecurrentToken(p, gates[t], state, out + t * p.out_stride_token);
      }
      continue;
    }
    for (int64_t first = 0; first < num_tokens; first += params.chunk_size) {
      const int64_t n = std::min<int64_t>(params.chunk_size, num_tokens - first);
      for (int64_t h = 0; h < p.num_heads; ++h) {
        ChunkHead(gates, first, n, h, p.key_dim, p.value_dim, state + h * p.value_dim * p.key_dim,
                  out, p.out_stride_token);
      }
    }
  }
}

}  // namespace hgrn2::kernels
