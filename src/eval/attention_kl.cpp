// Softmax KL and top-10 overlap at real causal positions, reference spec §9.2 (proposed).
#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

// log-softmax of x[0..n) in place (fp64, max-shifted); p[j] = exp(x[j]) afterwards.
void log_softmax(double* x, double* p, size_t n) {
  double m = x[0];
  for (size_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += (p[i] = std::exp(x[i] - m));
  const double lse = m + std::log(sum);
  for (size_t i = 0; i < n; ++i) {
    x[i] -= lse;
    p[i] /= sum;
  }
}

// q.k in fp64 with eight interleaved partial sums: a fixed order (reproducible results)
// whose independent lanes the compiler can keep in vector registers.
double dot(const float* a, const float* b, uint32_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (uint32_t l = 0; l < 8; ++l) s[l] += double(a[i + l]) * double(b[i + l]);
  for (; i < n; ++i) s[0] += double(a[i]) * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// |a ∩ b| / |a| for two top lists of the same length.
double shared_fraction(const std::vector<size_t>& a, const std::vector<size_t>& b) {
  if (a.empty()) return 1.0;
  size_t both = 0;
  for (size_t i : a) both += std::find(b.begin(), b.end(), i) != b.end();
  return double(both) / double(a.size());
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
  // One pass keeping the best k in order. Indices arrive ascending, so an equal value never
  // displaces an earlier one: ties go to the lower index.
  k = std::min(k, n);
  std::vector<size_t> best;
  best.reserve(k + 1);
  for (size_t i = 0; i < n && k > 0; ++i) {
    if (best.size() == k && !(x[i] > x[best.back()])) continue;
    size_t at = best.size();
    while (at > 0 && x[i] > x[best[at - 1]]) --at;
    best.insert(best.begin() + std::ptrdiff_t(at), i);
    if (best.size() > k) best.pop_back();
  }
  return best;
}

double top_k_overlap(const double* a, const double* b, size_t n, size_t k) {
  return shared_fraction(top_k(a, n, k), top_k(b, n, k));
}

std::vector<AttentionDivergence> attention_divergence(const ModelShape& shape, const float* q, const float* k,
                                                      const std::vector<const float*>& k_hats, size_t n_tokens,
                                                      uint32_t seq_tokens, uint32_t window) {
  shape.validate();
  if (seq_tokens == 0 || n_tokens % seq_tokens != 0)
    fail(StatusCode::invalid_argument, "attention divergence: " + std::to_string(n_tokens) +
                                           " tokens are not whole sequences of " + std::to_string(seq_tokens));
  const uint32_t D = shape.head_dim, G = shape.gqa_group();
  const double inv_sqrt_d = 1.0 / std::sqrt(double(D));
  const uint32_t first = seq_tokens - std::min(window, seq_tokens);
  std::vector<AttentionDivergence> out(k_hats.size());
  std::vector<double> lp(seq_tokens), p(seq_tokens), lph(seq_tokens), ph(seq_tokens);
  for (size_t s0 = 0; s0 < n_tokens; s0 += seq_tokens)
    for (uint32_t t = first; t < seq_tokens; ++t)
      for (uint32_t g = 0; g < G; ++g) {
        const float* qr = q + ((s0 + t) * G + g) * D;
        const size_t n = size_t(t) + 1;  // causal: keys j <= t of this sequence
        for (size_t j = 0; j < n; ++j) lp[j] = dot(qr, k + (s0 + j) * D, D) * inv_sqrt_d;
        log_softmax(lp.data(), p.data(), n);
        const std::vector<size_t> top = top_k(lp.data(), n, 10);
        for (size_t m = 0; m < k_hats.size(); ++m) {
          for (size_t j = 0; j < n; ++j) lph[j] = dot(qr, k_hats[m] + (s0 + j) * D, D) * inv_sqrt_d;
          log_softmax(lph.data(), ph.data(), n);
          double kl = 0.0;  // in log space: no 0/0 when a probability underflows
          for (size_t j = 0; j < n; ++j) kl += p[j] * (lp[j] - lph[j]);
          out[m].kl_sum += kl;
          out[m].top10_sum += shared_fraction(top, top_k(lph.data(), n, 10));
          ++out[m].queries;
        }
      }
  return out;
}

AttentionDivergence attention_divergence(const ModelShape& shape, const float* q, const float* k, const float* k_hat,
                                         size_t n_tokens, uint32_t seq_tokens, uint32_t window) {
  return attention_divergence(shape, q, k, std::vector<const float*>{k_hat}, n_tokens, seq_tokens, window)[0];
}

}  // namespace kvbits::eval
