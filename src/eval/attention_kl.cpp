// Softmax KL and top-10 overlap at real causal positions, reference spec §9.2 (proposed).
#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

// log-softmax of x[0..n) in place (fp64, max-shifted).
void log_softmax(double* x, size_t n) {
  const double m = *std::max_element(x, x + n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(x[i] - m);
  const double lse = m + std::log(sum);
  for (size_t i = 0; i < n; ++i) x[i] -= lse;
}

}  // namespace

double kl_divergence(const double* p, const double* p_hat, size_t n) {
  double kl = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] <= 0.0) continue;
    if (p_hat[i] <= 0.0)
      fail(StatusCode::invalid_argument, "KL divergence: p_hat[" + std::to_string(i) + "] = 0 where p > 0 (infinite)");
    kl += p[i] * std::log(p[i] / p_hat[i]);
  }
  return kl;
}

std::vector<size_t> top_k(const double* x, size_t n, size_t k) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t(0));
  k = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(k), idx.end(),
                    [x](size_t a, size_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  idx.resize(k);
  return idx;
}

double top_k_overlap(const double* a, const double* b, size_t n, size_t k) {
  const size_t kk = std::min(k, n);
  if (kk == 0) return 1.0;
  std::vector<size_t> ta = top_k(a, n, kk), tb = top_k(b, n, kk);
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  std::vector<size_t> both;
  std::set_intersection(ta.begin(), ta.end(), tb.begin(), tb.end(), std::back_inserter(both));
  return double(both.size()) / double(kk);
}

AttentionDivergence attention_divergence(const ModelShape& shape, const float* q, const float* k, const float* k_hat,
                                         size_t n_tokens, uint32_t seq_tokens, uint32_t window) {
  shape.validate();
  if (seq_tokens == 0 || n_tokens % seq_tokens != 0)
    fail(StatusCode::invalid_argument, "attention divergence: " + std::to_string(n_tokens) +
                                           " tokens are not whole sequences of " + std::to_string(seq_tokens));
  const uint32_t D = shape.head_dim, G = shape.gqa_group();
  const double inv_sqrt_d = 1.0 / std::sqrt(double(D));
  const uint32_t first = seq_tokens - std::min(window, seq_tokens);
  AttentionDivergence out;
  std::vector<double> lp(seq_tokens), lph(seq_tokens);
  for (size_t s0 = 0; s0 < n_tokens; s0 += seq_tokens) {
    for (uint32_t t = first; t < seq_tokens; ++t) {
      for (uint32_t g = 0; g < G; ++g) {
        const float* qr = q + ((s0 + t) * G + g) * D;
        const size_t n = size_t(t) + 1;  // causal: keys j <= t of this sequence
        for (size_t j = 0; j < n; ++j) {
          const float* kr = k + (s0 + j) * D;
          const float* kh = k_hat + (s0 + j) * D;
          double a = 0.0, b = 0.0;
          for (uint32_t d = 0; d < D; ++d) {
            a += double(qr[d]) * kr[d];
            b += double(qr[d]) * kh[d];
          }
          lp[j] = a * inv_sqrt_d;
          lph[j] = b * inv_sqrt_d;
        }
        log_softmax(lp.data(), n);
        log_softmax(lph.data(), n);
        double kl = 0.0;  // in log space: no 0/0 when a probability underflows
        for (size_t j = 0; j < n; ++j) kl += std::exp(lp[j]) * (lp[j] - lph[j]);
        out.kl_sum += kl;
        out.top10_sum += top_k_overlap(lp.data(), lph.data(), n, 10);
        ++out.queries;
      }
    }
  }
  return out;
}

}  // namespace kvbits::eval
