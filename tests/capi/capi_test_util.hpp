// Helpers shared by the C API tests: synthetic activations, owning wrappers for C handles,
// and a small calibrated plan built through the C API.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kvbits.h"

namespace capi_test {

struct Deleter {
  void operator()(kvb_context* p) const { kvb_context_destroy(p); }
  void operator()(kvb_plan* p) const { kvb_plan_destroy(p); }
  void operator()(kvb_calibrator* p) const { kvb_calibrator_destroy(p); }
  void operator()(kvb_cache* p) const { kvb_cache_destroy(p); }
};
using Context = std::unique_ptr<kvb_context, Deleter>;
using Plan = std::unique_ptr<kvb_plan, Deleter>;
using Calibrator = std::unique_ptr<kvb_calibrator, Deleter>;
using Cache = std::unique_ptr<kvb_cache, Deleter>;

inline kvb_error error() {
  kvb_error e;
  kvb_error_init(&e);
  return e;
}

// Fails the test with the call's message unless it returned KVB_OK.
#define KVB_ASSERT_OK(call)                                                              \
  do {                                                                                   \
    kvb_error kvb_e_ = capi_test::error();                                               \
    kvb_error* err = &kvb_e_;                                                            \
    const kvb_status kvb_s_ = (call);                                                    \
    ASSERT_EQ(kvb_s_, KVB_OK) << #call << ": " << kvb_status_string(kvb_s_) << ": " << kvb_e_.message; \
  } while (0)

inline kvb_model_shape shape(uint32_t layers, uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim) {
  kvb_model_shape s;
  kvb_model_shape_default(&s);
  s.n_layers = layers, s.n_q_heads = q_heads, s.n_kv_heads = kv_heads, s.head_dim = head_dim;
  return s;
}

// [n_tokens, heads, D] fp32 for a split-half model: RoPE block b (dims b and b + D/2) has
// standard deviation 2^(spread * b / (D/2)), so block energies span orders of magnitude.
inline std::vector<float> activations(size_t n_tokens, uint32_t heads, uint32_t D, double spread, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n;
  std::vector<float> x(n_tokens * heads * D);
  for (size_t t = 0; t < n_tokens; ++t)
    for (uint32_t h = 0; h < heads; ++h)
      for (uint32_t b = 0; b < D / 2; ++b) {
        const float sd = float(std::pow(2.0, spread * b / (D / 2) + 0.25 * h));
        float* row = &x[(t * heads + h) * D];
        row[b] = sd * n(rng);
        row[b + D / 2] = sd * n(rng);
      }
  return x;
}

inline Context cpu_context(uint32_t n_threads = 2) {
  kvb_context_params p;
  kvb_context_params_default(&p);
  p.backend = KVB_BACKEND_CPU;
  p.n_threads = n_threads;
  kvb_context* ctx = nullptr;
  kvb_error e = error();
  EXPECT_EQ(kvb_context_create(&p, &ctx, &e), KVB_OK) << e.message;
  return Context(ctx);
}

// Fixed producer text so that plans are byte-for-byte reproducible.
inline kvb_plan_options plan_options(double k_bits, int v_bits) {
  kvb_plan_options o;
  kvb_plan_options_default(&o);
  o.k_avg_bits = k_bits;
  o.v_bits = v_bits;
  o.corpus = "synthetic";
  o.date = "2026-01-01T00:00:00Z";
  return o;
}

// A calibrator that has observed `n_tokens` synthetic tokens in every layer.
inline Calibrator observed_calibrator(kvb_context* ctx, const kvb_model_shape& s, size_t n_tokens, double spread) {
  kvb_calibrator* cal = nullptr;
  kvb_error e = error();
  EXPECT_EQ(kvb_calibrator_create(ctx, &s, &cal, &e), KVB_OK) << e.message;
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    const auto q = activations(n_tokens, s.n_q_heads, s.head_dim, spread, 100 + l);
    const auto k = activations(n_tokens, s.n_kv_heads, s.head_dim, spread, 200 + l);
    EXPECT_EQ(kvb_calibrator_observe(cal, l, q.data(), k.data(), n_tokens, KVB_DTYPE_F32, &e), KVB_OK) << e.message;
  }
  return Calibrator(cal);
}

inline std::vector<uint8_t> serialized(const kvb_plan* plan) {
  size_t n = 0;
  kvb_error e = error();
  EXPECT_EQ(kvb_plan_serialize(plan, nullptr, 0, &n, &e), KVB_OK) << e.message;
  std::vector<uint8_t> bytes(n);
  EXPECT_EQ(kvb_plan_serialize(plan, bytes.data(), bytes.size(), &n, &e), KVB_OK) << e.message;
  return bytes;
}

inline std::string last_error(const kvb_context* ctx) {
  const size_t n = kvb_context_last_error(ctx, nullptr, 0);
  std::string s(n + 1, '\0');
  kvb_context_last_error(ctx, &s[0], s.size());
  s.resize(n);
  return s;
}

}  // namespace capi_test
