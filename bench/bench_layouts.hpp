// kvbits benchmarks — the head layouts the GPU benchmarks sweep: Block-GTQ heads built from
// fixed block-width histograms (no calibration: the kernels' cost depends on the group shapes,
// not on the values) and uniform TQ-MSE heads, at K2V2, K3V3 and K4V4.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "kvbits/codebook.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/plan.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/tq_mse.hpp"

namespace kvbits::bench {

struct LayoutSpec {
  const char* name;
  int bits;      // K average and V width
  bool uniform;  // every block at `bits` (one K group), else the Block-GTQ histogram below
};

// Block counts per width 1..8 of a D = 128 head (64 RoPE blocks): K3 is the head of
// docs/cache-layout.md §8 (groups of 18/30/38/22/16/4 dims, 112 B per token with V3).
inline const int* block_histogram(int bits) {
  static const int k2[8] = {24, 22, 12, 6, 0, 0, 0, 0};
  static const int k3[8] = {9, 15, 19, 11, 8, 2, 0, 0};
  static const int k4[8] = {4, 8, 12, 16, 12, 8, 4, 0};
  return bits == 2 ? k2 : bits == 3 ? k3 : k4;
}

// Index 1 (K3V3 Block-GTQ) is the default row of every benchmark.
inline const LayoutSpec kLayouts[6] = {{"K2V2 GTQ", 2, false},     {"K3V3 GTQ", 3, false},
                                       {"K4V4 GTQ", 4, false},     {"K2V2 uniform", 2, true},
                                       {"K3V3 uniform", 3, true},  {"K4V4 uniform", 4, true}};

// The Lloyd-Max codebooks of widths 1..8 (index = width), built once per process.
inline const std::vector<std::vector<double>>& bench_codebooks() {
  static const std::vector<std::vector<double>> cb = [] {
    std::vector<std::vector<double>> c(9);
    for (int b = 1; b <= 8; ++b) c[size_t(b)] = unit_gaussian_codebook(b, CodebookRecipe::lloyd_max);
    return c;
  }();
  return cb;
}

// One KV head of the layout at head dim D (a multiple of 128 for Block-GTQ histograms scaled by
// D / 128), rotations and block order drawn from `seed`.
inline HeadQuantizers make_bench_head(uint32_t D, const LayoutSpec& spec, uint64_t seed) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 1, s.n_kv_heads = 1, s.head_dim = D, s.rotary_dim = D;
  std::vector<uint8_t> block_bits;
  if (spec.uniform) {
    block_bits.assign(D / 2, uint8_t(spec.bits));
  } else {
    const int* hist = block_histogram(spec.bits);
    for (int w = 0; w < 8; ++w)
      for (int c = 0; c < hist[w] * int(D) / 128; ++c) block_bits.push_back(uint8_t(w + 1));
  }
  std::shuffle(block_bits.begin(), block_bits.end(), std::mt19937_64(seed));
  const HeadLayout lay = make_head_layout(s, block_bits);
  const auto& cb = bench_codebooks();
  std::vector<std::vector<float>> rots;
  for (size_t g = 0; g < lay.groups.size(); ++g) rots.push_back(haar_rotation(lay.groups[g].dims, seed * 16 + g));
  return {make_key_quantizer(lay, rots, cb),
          make_value_quantizer(D, spec.bits, haar_rotation(D, seed * 16 + 15), cb)};
}

}  // namespace kvbits::bench
