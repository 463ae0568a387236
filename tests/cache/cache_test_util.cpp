#include "cache_test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kvbits/codebook.hpp"
#include "kvbits/half.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/rotation.hpp"

namespace kvbits::cachetest {

ModelShape make_shape(uint32_t layers, uint32_t kv_heads, uint32_t head_dim, uint32_t rotary_dim,
                      RopeLayout layout) {
  ModelShape s;
  s.n_layers = layers;
  s.n_kv_heads = kv_heads;
  s.n_q_heads = kv_heads * 2;
  s.head_dim = head_dim;
  s.rotary_dim = rotary_dim == 0 ? head_dim : rotary_dim;
  s.rope_layout = layout;
  return s;
}

std::shared_ptr<const Plan> make_plan(const ModelShape& s, PlanOptions options, uint64_t seed) {
  EnergyAccumulator acc(s);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  const size_t T = 32;
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    std::vector<float> q(T * s.n_q_heads * s.head_dim), k(T * s.n_kv_heads * s.head_dim);
    auto fill = [&](std::vector<float>& x, uint32_t heads) {
      for (size_t t = 0; t < T; ++t)
        for (uint32_t h = 0; h < heads; ++h)
          for (uint32_t b = 0; b < s.n_blocks(); ++b) {
            const float sd = std::pow(2.0f, 5.0f * float(b) / float(s.n_blocks()) + 0.2f * float(h + l));
            for (uint32_t d : block_dims(s, b)) x[(t * heads + h) * s.head_dim + d] = sd * normal(rng);
          }
    };
    fill(q, s.n_q_heads);
    fill(k, s.n_kv_heads);
    acc.observe(l, q.data(), k.data(), T, DType::f32);
  }
  return std::make_shared<const Plan>(build_plan(acc, options));
}

void set_head_widths(Plan& plan, uint32_t layer, uint32_t kv_head, const std::vector<uint8_t>& block_bits) {
  HeadPlan& hp = plan.layers[layer].heads[kv_head];
  hp.block_bits = block_bits;
  hp.block_order = canonical_block_order(block_bits);
  const HeadLayout lay = make_head_layout(plan.shape, block_bits, &hp.block_order);
  hp.k_rotations.clear();
  for (size_t g = 0; g < lay.groups.size(); ++g) {
    RotationSpec r;
    r.dim = lay.groups[g].dims;
    r.seed = derive_rotation_seed(plan.rotation_seed, layer, kv_head, 0, uint32_t(g));
    hp.k_rotations.push_back(r);
    auto& book = plan.unit_codebooks[lay.groups[g].bits];
    if (book.empty()) book = unit_gaussian_codebook(lay.groups[g].bits, plan.recipe);
  }
  plan.validate();
}

std::vector<float> random_rows(size_t n_tokens, const ModelShape& s, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n_tokens * s.n_kv_heads * s.head_dim);
  for (float& e : x) e = scale * normal(rng);
  return x;
}

std::vector<uint16_t> to_bits(const std::vector<float>& x, DType t) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = t == DType::f16 ? float_to_half(x[i]) : float_to_bf16(x[i]);
  return b;
}

std::vector<float> from_bits(const std::vector<uint16_t>& b, DType t) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = t == DType::f16 ? half_to_float(b[i]) : bf16_to_float(b[i]);
  return x;
}

float fp16_round(float x) { return half_to_float(float_to_half(x)); }

void Model::add(uint64_t seq) {
  Seq s;
  const uint32_t L = cache_.plan().shape.n_layers;
  s.k.resize(L);
  s.v.resize(L);
  s.qend.assign(L, 0);
  seqs_[seq] = s;
}

uint32_t Model::len(uint64_t seq, uint32_t layer) const {
  const ModelShape& sh = cache_.plan().shape;
  return uint32_t(seqs_.at(seq).k.at(layer).size() / (size_t(sh.n_kv_heads) * sh.head_dim));
}

void Model::append(uint64_t seq, uint32_t layer, const float* k, const float* v, uint32_t n) {
  const ModelShape& sh = cache_.plan().shape;
  Seq& s = seqs_.at(seq);
  const size_t row = size_t(sh.n_kv_heads) * sh.head_dim;
  s.k[layer].insert(s.k[layer].end(), k, k + n * row);
  s.v[layer].insert(s.v[layer].end(), v, v + n * row);
  const uint32_t S = cache_.sink_tokens(), W = cache_.window_tokens();
  const uint32_t len = this->len(seq, layer);
  if (len <= S) s.qend[layer] = len;
  else s.qend[layer] = std::max({s.qend[layer], S, len > W ? len - W : 0u});
}

void Model::fork(uint64_t src, uint64_t dst, uint32_t prefix) {
  const ModelShape& sh = cache_.plan().shape;
  const size_t row = size_t(sh.n_kv_heads) * sh.head_dim;
  Seq s = seqs_.at(src);
  for (uint32_t l = 0; l < s.k.size(); ++l) {
    s.k[l].resize(prefix * row);
    s.v[l].resize(prefix * row);
    s.qend[l] = std::min(s.qend[l], prefix);
  }
  seqs_[dst] = s;
}

void Model::expected(uint64_t seq, uint32_t layer, uint32_t t, uint32_t h, float* k, float* v) const {
  const ModelShape& sh = cache_.plan().shape;
  const Seq& s = seqs_.at(seq);
  const uint32_t D = sh.head_dim;
  const size_t off = (size_t(t) * sh.n_kv_heads + h) * D;
  const bool fp16_layer = cache_.plan().layers[layer].keep_fp16;
  const bool packed = t >= cache_.sink_tokens() && t < s.qend[layer];
  for (int tensor = 0; tensor < 2; ++tensor) {
    const float* x = (tensor == 0 ? s.k[layer].data() : s.v[layer].data()) + off;
    float* out = tensor == 0 ? k : v;
    if (!packed || fp16_layer) {
      for (uint32_t d = 0; d < D; ++d) out[d] = fp16_round(x[d]);
      continue;
    }
    std::vector<float> in(x, x + D);
    if (cache_.window_tokens() > 0)
      for (float& e : in) e = fp16_round(e);
    const TqQuantizer& q = tensor == 0 ? cache_.quantizers(layer, h).k : cache_.quantizers(layer, h).v;
    std::vector<uint8_t> codes(q.code_bytes());
    std::vector<uint16_t> scales(q.n_groups());
    q.encode(in.data(), codes.data(), scales.data());
    q.decode(codes.data(), scales.data(), out);
  }
}

void Model::check_all() const {
  const ModelShape& sh = cache_.plan().shape;
  const uint32_t H = sh.n_kv_heads, D = sh.head_dim;
  ASSERT_EQ(cache_.sequences().size(), seqs_.size());
  for (const auto& [id, s] : seqs_) {
    for (uint32_t l = 0; l < sh.n_layers; ++l) {
      const uint32_t n = len(id, l);
      ASSERT_EQ(cache_.length(id, l), n) << "seq " << id << " layer " << l;
      std::vector<float> k(size_t(n) * H * D), v(k.size());
      cache_.read(id, l, 0, n, k.data(), v.data());
      std::vector<float> ek(D), ev(D);
      for (uint32_t t = 0; t < n; ++t)
        for (uint32_t h = 0; h < H; ++h) {
          expected(id, l, t, h, ek.data(), ev.data());
          const size_t off = (size_t(t) * H + h) * D;
          ASSERT_EQ(0, std::memcmp(ek.data(), k.data() + off, D * 4))
              << "K of seq " << id << " layer " << l << " token " << t << " head " << h;
          ASSERT_EQ(0, std::memcmp(ev.data(), v.data() + off, D * 4))
              << "V of seq " << id << " layer " << l << " token " << t << " head " << h;
        }
    }
  }
}

void append_both(Cache& cache, Model& model, uint32_t layer, const std::vector<uint64_t>& seqs,
                 const std::vector<uint32_t>& n_tokens, const std::vector<float>& k, const std::vector<float>& v) {
  cache.append(layer, seqs.data(), n_tokens.data(), seqs.size(), k.data(), v.data(), DType::f32);
  const ModelShape& sh = cache.plan().shape;
  const size_t row = size_t(sh.n_kv_heads) * sh.head_dim;
  size_t first = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    model.append(seqs[i], layer, k.data() + first * row, v.data() + first * row, n_tokens[i]);
    first += n_tokens[i];
  }
}

bool Snapshot::operator==(const Snapshot& o) const {
  return ids == o.ids && lens == o.lens && bits == o.bits && pages_used == o.pages_used &&
         fp16_bytes == o.fp16_bytes && tokens == o.tokens;
}

Snapshot snapshot(const Cache& cache) {
  const ModelShape& sh = cache.plan().shape;
  Snapshot s;
  s.ids = cache.sequences();
  for (uint64_t id : s.ids) {
    s.lens.emplace_back();
    s.bits.emplace_back();
    for (uint32_t l = 0; l < sh.n_layers; ++l) {
      const uint32_t n = cache.length(id, l);
      s.lens.back().push_back(n);
      const size_t count = size_t(n) * sh.n_kv_heads * sh.head_dim;
      std::vector<float> k(count), v(count);
      cache.read(id, l, 0, n, k.data(), v.data());
      std::vector<uint32_t> b(2 * count);
      if (count > 0) {
        std::memcpy(b.data(), k.data(), count * 4);
        std::memcpy(b.data() + count, v.data(), count * 4);
      }
      s.bits.back().push_back(std::move(b));
    }
  }
  const CacheStats st = cache.stats();
  s.pages_used = st.pages_used;
  s.fp16_bytes = st.fp16_region_bytes;
  s.tokens = st.tokens;
  return s;
}

std::vector<uint8_t> page_bytes_of(const Cache& cache, uint64_t seq) {
  const ModelShape& sh = cache.plan().shape;
  std::vector<uint8_t> out;
  for (uint32_t l = 0; l < sh.n_layers; ++l) {
    const SeqLayerView view = cache.view(seq, l);
    const size_t n_pages = view.qend > view.sink ? (view.qend - view.sink + cache.config().page_size - 1) /
                                                       cache.config().page_size
                                                 : 0;
    for (uint32_t h = 0; h < sh.n_kv_heads; ++h) {
      const size_t bytes = cache.page_layout(l, h).page_bytes;
      for (size_t i = 0; i < n_pages; ++i) {
        const uint8_t* p = cache.page_data(l, h, view.pages[i]);
        out.insert(out.end(), p, p + bytes);
      }
    }
  }
  return out;
}

}  // namespace kvbits::cachetest
