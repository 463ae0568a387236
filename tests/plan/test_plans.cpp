#include "test_plans.hpp"

#include <algorithm>
#include <cmath>

namespace kvbits::test {

uint64_t Rng::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

ModelShape stories260k_shape() {
  ModelShape s;
  s.n_layers = 5;
  s.n_q_heads = 8;
  s.n_kv_heads = 4;
  s.head_dim = 8;
  s.rotary_dim = 8;
  s.rope_layout = RopeLayout::interleaved;
  s.rope_theta = 10000.0;
  return s;
}

ModelShape split_half_128_shape() {
  ModelShape s;
  s.n_layers = 3;
  s.n_q_heads = 8;
  s.n_kv_heads = 2;
  s.head_dim = 128;
  s.rotary_dim = 128;
  s.rope_layout = RopeLayout::split_half;
  s.rope_theta = 500000.0;
  return s;
}

std::vector<double> test_codebook(int bits) {
  const size_t n = size_t(1) << bits;
  std::vector<double> c(n);
  for (size_t k = 0; k < n; ++k) c[k] = (double(k) - double(n - 1) / 2.0) * (4.0 / double(n));
  return c;
}

std::vector<float> orthonormal_matrix(uint32_t dim, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> m(size_t(dim) * dim, 0.0);
  for (uint32_t i = 0; i < dim; ++i) m[size_t(i) * dim + i] = 1.0;
  for (uint32_t step = 0; step < 2 * dim && dim > 1; ++step) {
    const uint32_t a = rng.below(dim);
    const uint32_t b = (a + 1 + rng.below(dim - 1)) % dim;
    const double t = 6.283185307179586 * rng.uniform();
    const double c = std::cos(t), s = std::sin(t);
    for (uint32_t col = 0; col < dim; ++col) {
      const double x = m[size_t(a) * dim + col], y = m[size_t(b) * dim + col];
      m[size_t(a) * dim + col] = c * x - s * y;
      m[size_t(b) * dim + col] = s * x + c * y;
    }
  }
  return std::vector<float>(m.begin(), m.end());
}

namespace {

RotationSpec generated(uint32_t dim, Rng& rng) {
  RotationSpec r;
  r.kind = RotationSpec::Kind::generated;
  r.dim = dim;
  r.seed = rng.next();
  return r;
}

RotationSpec explicit_rotation(uint32_t dim, Rng& rng) {
  RotationSpec r;
  r.kind = RotationSpec::Kind::explicit_matrix;
  r.dim = dim;
  r.seed = rng.next();
  r.matrix = orthonormal_matrix(dim, r.seed);
  return r;
}

HeadPlan random_head(const ModelShape& shape, const RandomPlanOptions& o, bool explicit_rot, Rng& rng) {
  const uint32_t n_blocks = shape.n_blocks();
  HeadPlan h;
  h.block_bits.resize(n_blocks);
  for (uint8_t& b : h.block_bits) b = uint8_t(o.min_bits + int(rng.below(uint32_t(o.max_bits - o.min_bits + 1))));
  // hp order: sorted by width; ties in a random (still valid) order.
  h.block_order.resize(n_blocks);
  for (uint32_t i = 0; i < n_blocks; ++i) h.block_order[i] = i;
  for (uint32_t i = n_blocks; i > 1; --i) std::swap(h.block_order[i - 1], h.block_order[rng.below(i)]);
  std::stable_sort(h.block_order.begin(), h.block_order.end(),
                   [&](uint32_t a, uint32_t b) { return h.block_bits[a] < h.block_bits[b]; });
  for (uint32_t i = 0; i < n_blocks; ++i) {
    h.q_energy.push_back(10.0 * rng.uniform());
    h.k_energy.push_back(i == 0 ? 0.0 : 10.0 * rng.uniform());
  }
  uint32_t blocks_of_width[9] = {};
  for (uint8_t b : h.block_bits) ++blocks_of_width[b];
  for (int b = 1; b <= 8; ++b) {
    if (blocks_of_width[b] == 0) continue;
    const uint32_t dims = 2 * blocks_of_width[b];
    h.k_rotations.push_back(explicit_rot && h.k_rotations.empty() ? explicit_rotation(dims, rng) : generated(dims, rng));
  }
  h.v_bits = uint8_t(o.v_bits);
  h.v_rotation = explicit_rot ? explicit_rotation(shape.head_dim, rng) : generated(shape.head_dim, rng);
  return h;
}

}  // namespace

Plan random_plan(const ModelShape& shape, uint64_t seed, const RandomPlanOptions& o) {
  Rng rng(seed);
  Plan p;
  p.shape = shape;
  p.method = Method::block_gtq;
  p.score = ScoreKind::product;
  p.recipe = CodebookRecipe::lloyd_max;
  p.k_min_bits = uint8_t(o.min_bits);
  p.k_max_bits = uint8_t(o.max_bits);
  p.k_avg_bits = (o.min_bits + o.max_bits) / 2.0;
  p.rotation_seed = rng.next();
  p.sink_tokens = 4;
  p.window_tokens = 128;
  p.fingerprint.kind = Fingerprint::Kind::xxh3_128;
  for (size_t i = 0; i < 16; ++i) p.fingerprint.bytes[i] = uint8_t(rng.next());
  p.producer.tool = "kvbits 0.1.0";
  p.producer.corpus = "TinyStories validation \xE2\x80\x94 first 4096 tokens";  // an em dash: UTF-8
  p.producer.date = "2025-01-31T12:00:00Z";
  p.producer.calib_tokens = 4096;
  p.layers.resize(shape.n_layers);
  for (uint32_t l = 0; l < shape.n_layers; ++l) {
    if (o.fp16_layer && l == 1 && shape.n_layers > 1) {
      p.layers[l].keep_fp16 = true;
      continue;
    }
    for (uint32_t h = 0; h < shape.n_kv_heads; ++h)
      p.layers[l].heads.push_back(random_head(shape, o, o.explicit_rotation && l == 0 && h == 0, rng));
  }
  p.unit_codebooks.assign(9, {});
  for (const LayerPlan& l : p.layers)
    for (const HeadPlan& h : l.heads) {
      for (uint8_t b : h.block_bits) p.unit_codebooks[b] = test_codebook(b);
      p.unit_codebooks[h.v_bits] = test_codebook(h.v_bits);
    }
  return p;
}

Plan golden_plan() {
  Plan p;
  p.shape.n_layers = 1;
  p.shape.n_q_heads = 2;
  p.shape.n_kv_heads = 1;
  p.shape.head_dim = 4;
  p.shape.rotary_dim = 4;
  p.shape.rope_layout = RopeLayout::interleaved;
  p.shape.rope_theta = 10000.0;
  p.method = Method::block_gtq;
  p.score = ScoreKind::product;
  p.recipe = CodebookRecipe::lloyd_max;
  p.k_avg_bits = 2.0;
  p.k_min_bits = 1;
  p.k_max_bits = 8;
  p.rotation_seed = 42;
  p.fingerprint.kind = Fingerprint::Kind::xxh3_128;
  for (size_t i = 0; i < 16; ++i) p.fingerprint.bytes[i] = uint8_t(i);
  p.producer = Producer{"kvbits-test", "golden", "2025-01-01T00:00:00Z", 2048};
  p.unit_codebooks.assign(9, {});
  p.unit_codebooks[2] = {-1.5104, -0.4528, 0.4528, 1.5104};
  HeadPlan h;
  h.block_bits = {2, 2};
  h.block_order = {0, 1};
  h.q_energy = {1.5, 0.25};
  h.k_energy = {2.0, 0.5};
  h.k_rotations = {RotationSpec{RotationSpec::Kind::generated, 4, 7, {}}};
  h.v_bits = 2;
  h.v_rotation = RotationSpec{RotationSpec::Kind::generated, 4, 8, {}};
  p.layers.resize(1);
  p.layers[0].heads.push_back(h);
  return p;
}

}  // namespace kvbits::test
