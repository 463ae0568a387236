#include "cuda/head_range_launch.hpp"

#include <utility>

#include "cache/page_layout.hpp"

namespace kvbits::cuda {
namespace {

std::vector<float> identity(uint32_t n) {
  std::vector<float> m(size_t(n) * n, 0.0f);
  for (uint32_t i = 0; i < n; ++i) m[size_t(i) * n + i] = 1.0f;
  return m;
}

void set_layout(DecodeHead& d, const PageLayout& lay) {
  d.page_bytes = lay.page_bytes;
  d.k_scales = uint32_t(lay.k_scales), d.v_codes = uint32_t(lay.v_codes), d.v_scales = uint32_t(lay.v_scales);
  d.k_code_bytes = lay.k_code_bytes, d.v_code_bytes = lay.v_code_bytes;
}

// What launch planning reads of a packed head: its page layout and K groups. The quantizers
// get identity rotations: the layout does not depend on them, and no QR is paid for heads this
// cache does not hold.
DecodeHead packed_head(const Plan& plan, uint32_t layer, uint32_t h, uint32_t page_size) {
  const HeadLayout layout = plan.head_layout(layer, h);
  std::vector<std::vector<float>> k_rot;
  for (const KeyGroup& g : layout.groups) k_rot.push_back(identity(g.dims));
  const uint32_t D = plan.shape.head_dim;
  const HeadQuantizers q{make_key_quantizer(layout, std::move(k_rot), plan.unit_codebooks),
                         make_value_quantizer(D, plan.head(layer, h).v_bits, identity(D), plan.unit_codebooks)};
  DecodeHead d;
  set_layout(d, cache_detail::quantized_page_layout(q, page_size));
  d.n_k_groups = uint32_t(q.k.n_groups());
  for (size_t g = 0; g < q.k.n_groups() && g < kDecodeMaxGroups; ++g) {
    const KeyGroup& kg = q.k.groups()[g];
    d.k_groups[g] = {kg.bits, kg.first_slot, kg.dims, uint32_t(q.k.group_byte_offset(g)), 0};
  }
  d.v_bits = q.v.groups()[0].bits;
  return d;
}

}  // namespace

HeadRangeLaunch::HeadRangeLaunch(const Plan& full, uint32_t page_size)
    : n_kv_heads_(full.shape.n_kv_heads), n_q_heads_(full.shape.n_q_heads) {
  heads_.resize(full.shape.n_layers);
  for (uint32_t l = 0; l < full.shape.n_layers; ++l) {
    std::vector<DecodeHead>& hs = heads_[l];
    hs.resize(n_kv_heads_);
    for (uint32_t h = 0; h < n_kv_heads_; ++h) {
      if (full.layers[l].keep_fp16) set_layout(hs[h], cache_detail::fp16_page_layout(full.shape.head_dim, page_size));
      else hs[h] = packed_head(full, l, h, page_size);
    }
  }
}

void HeadRangeLaunch::match_decode(DecodeParams& p, uint32_t layer) const {
  DecodeParams all = p;
  all.n_kv_heads = n_kv_heads_;
  all.n_q_heads = n_q_heads_;
  all.heads_host = heads_[layer].data();
  all.splits = 0;
  p.splits = decode_splits(all);
  if (!p.fp16_layer && p.variant == kDecodeVariantAuto) p.variant = decode_variant(all);
}

void HeadRangeLaunch::match_extend(ExtendParams& e) const {
  ExtendParams all = e;
  all.base.n_kv_heads = n_kv_heads_;
  all.base.n_q_heads = n_q_heads_;
  all.base.splits = 0;
  e.base.splits = extend_splits(all);
}

}  // namespace kvbits::cuda
