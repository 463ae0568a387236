// kvbits benchmarks — a plan for a model shape (K3V3 Block-GTQ unless told otherwise),
// calibrated on synthetic activations whose RoPE-block energies span orders of magnitude (as
// real models' do), and the median the benchmarks report.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "kvbits/calibrator.hpp"
#include "kvbits/rope_blocks.hpp"

namespace kvbits::bench {

inline std::shared_ptr<const Plan> synthetic_plan(const ModelShape& s, Method method = Method::block_gtq,
                                                  double k_avg_bits = 3.0, int v_bits = 3) {
  EnergyAccumulator acc(s);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  const size_t T = 64;
  const uint32_t D = s.head_dim;
  auto fill = [&](uint32_t heads) {
    std::vector<float> x(T * heads * D);
    for (size_t t = 0; t < T; ++t)
      for (uint32_t h = 0; h < heads; ++h)
        for (uint32_t b = 0; b < s.n_blocks(); ++b)
          for (uint32_t d : block_dims(s, b))
            x[(t * heads + h) * D + d] = std::pow(2.0f, 6.0f * float(b) / float(s.n_blocks())) * nd(rng);
    return x;
  };
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    const auto q = fill(s.n_q_heads), k = fill(s.n_kv_heads);
    acc.observe(l, q.data(), k.data(), T, DType::f32);
  }
  PlanOptions o;
  o.method = method, o.k_avg_bits = k_avg_bits, o.v_bits = v_bits;
  return std::make_shared<const Plan>(build_plan(acc, o));
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace kvbits::bench
