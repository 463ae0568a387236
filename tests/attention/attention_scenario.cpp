#include "attention_scenario.hpp"

#include <algorithm>

namespace kvbits::test_attn {

Scenario::Scenario(const ScenarioConfig& cfg) : cfg_(cfg), next_seed_(cfg.seed * 1000003) {
  auto plan = std::make_shared<const Plan>(calibrated_plan(cfg.shape, cfg.plan, cfg.seed));
  ContextConfig cc;
  cc.backend = Backend::cpu;
  cc.n_threads = cfg.threads;
  ctx_ = std::make_unique<Context>(cc);
  CacheConfig cache_cfg = cfg.cache;
  if (cache_cfg.max_pages == 0) {
    uint64_t pages = 8;
    for (uint32_t len : cfg.lengths) pages += len / cache_cfg.page_size + 2;
    cache_cfg.max_pages = pages * 2;
  }
  cache_ = std::make_unique<Cache>(plan, *ctx_, cache_cfg);
  for (size_t s = 0; s < cfg.lengths.size(); ++s) seqs_.push_back(cache_->add_sequence());
  k_in_.assign(seqs_.size(), std::vector<std::vector<float>>(cfg.shape.n_layers));
  v_in_ = k_in_;

  // Round-robin chunks over all sequences, one batched append per layer and round.
  const uint32_t chunk = cfg.append_chunk ? cfg.append_chunk : 0xffffffffu;
  std::vector<uint32_t> done(seqs_.size(), 0);
  for (;;) {
    std::vector<size_t> which;
    std::vector<uint32_t> n;
    for (size_t s = 0; s < seqs_.size(); ++s)
      if (done[s] < cfg.lengths[s]) which.push_back(s), n.push_back(std::min(chunk, cfg.lengths[s] - done[s]));
    if (which.empty()) break;
    const ModelShape& sh = cfg.shape;
    for (uint32_t l = 0; l < sh.n_layers; ++l) {
      std::vector<uint64_t> ids;
      std::vector<float> k, v;
      for (size_t i = 0; i < which.size(); ++i) {
        const auto kk = structured_vectors(sh, n[i], sh.n_kv_heads, next_seed_++);
        const auto vv = structured_vectors(sh, n[i], sh.n_kv_heads, next_seed_++);
        k.insert(k.end(), kk.begin(), kk.end());
        v.insert(v.end(), vv.begin(), vv.end());
        auto& ks = k_in_[which[i]][l];
        auto& vs = v_in_[which[i]][l];
        ks.insert(ks.end(), kk.begin(), kk.end());
        vs.insert(vs.end(), vv.begin(), vv.end());
        ids.push_back(seqs_[which[i]]);
      }
      cache_->append(l, ids.data(), n.data(), ids.size(), k.data(), v.data(), DType::f32);
    }
    for (size_t i = 0; i < which.size(); ++i) done[which[i]] += n[i];
  }
}

void Scenario::append(size_t s, uint32_t n) {
  const ModelShape& sh = cfg_.shape;
  for (uint32_t l = 0; l < sh.n_layers; ++l) {
    const auto k = structured_vectors(sh, n, sh.n_kv_heads, next_seed_++);
    const auto v = structured_vectors(sh, n, sh.n_kv_heads, next_seed_++);
    cache_->append(l, &seqs_[s], &n, 1, k.data(), v.data(), DType::f32);
    k_in_[s][l].insert(k_in_[s][l].end(), k.begin(), k.end());
    v_in_[s][l].insert(v_in_[s][l].end(), v.begin(), v.end());
  }
}

std::vector<float> Scenario::queries(size_t rows, uint64_t salt) const {
  return structured_vectors(cfg_.shape, rows, cfg_.shape.n_q_heads, cfg_.seed * 7919 + salt);
}

void Scenario::reference(uint32_t layer, const std::vector<size_t>& which, const std::vector<uint32_t>& q_len,
                         const float* q, double scale, bool original, std::vector<double>& out,
                         std::vector<double>& lse) const {
  const ModelShape& sh = cfg_.shape;
  const uint32_t D = sh.head_dim, Hq = sh.n_q_heads, Hkv = sh.n_kv_heads, G = sh.gqa_group();
  size_t rows = 0;
  for (uint32_t n : q_len) rows += n;
  out.assign(rows * Hq * D, 0.0);
  lse.assign(rows * Hq, 0.0);
  size_t row = 0;
  for (size_t i = 0; i < which.size(); ++i) {
    const size_t s = which[i];
    const uint32_t len = cache_->length(seqs_[s], layer);
    std::vector<float> k(size_t(len) * Hkv * D), v(k.size());
    if (original) {
      k = k_in_[s][layer];
      v = v_in_[s][layer];
    } else {
      cache_->read(seqs_[s], layer, 0, len, k.data(), v.data());
    }
    for (uint32_t h = 0; h < Hkv; ++h) {
      std::vector<float> kh(size_t(len) * D), vh(kh.size());
      for (uint32_t t = 0; t < len; ++t)
        for (uint32_t d = 0; d < D; ++d) {
          kh[size_t(t) * D + d] = k[(size_t(t) * Hkv + h) * D + d];
          vh[size_t(t) * D + d] = v[(size_t(t) * Hkv + h) * D + d];
        }
      for (uint32_t j = 0; j < q_len[i]; ++j)
        for (uint32_t g = 0; g < G; ++g) {
          const size_t qi = (row + j) * Hq + h * G + g;
          reference_attention(q + qi * D, kh.data(), vh.data(), len - q_len[i] + j + 1, D, scale, &out[qi * D],
                              &lse[qi]);
        }
    }
    row += q_len[i];
  }
}

ErrorStats compare(const std::vector<float>& out, const std::vector<double>& ref, const float* lse,
                   const std::vector<double>& ref_lse, uint32_t D) {
  ErrorStats st;
  for (size_t r = 0; r < ref_lse.size(); ++r) {
    st.add_row(&out[r * D], &ref[r * D], D);
    if (lse) st.add_lse(lse[r], ref_lse[r]);
  }
  return st;
}

}  // namespace kvbits::test_attn
