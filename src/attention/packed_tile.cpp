#include "attention/packed_tile.hpp"

#include "attention/vec_math.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits::attn {
namespace {

PackedRowDecoder decoder(const TqQuantizer& tq, size_t codes, size_t code_stride, size_t scales,
                         size_t scale_stride) {
  PackedRowDecoder d;
  if (tq.n_groups() > 8) fail(StatusCode::internal, "attention: more than 8 code groups");
  d.n_groups = uint32_t(tq.n_groups());
  for (size_t g = 0; g < tq.n_groups(); ++g) {
    const KeyGroup& gr = tq.groups()[g];
    PackedGroup& pg = d.groups[g];
    pg.gather = centroid_gather(gr.bits);
    pg.centroids = tq.codebook(g).centroids.data();
    pg.first = gr.first_slot, pg.dims = gr.dims;
    pg.byte_offset = tq.group_byte_offset(g);
  }
  d.codes_offset = codes, d.code_stride = code_stride;
  d.scales_offset = scales, d.scale_stride = scale_stride;
  return d;
}

}  // namespace

PackedRowDecoder key_decoder(const TqQuantizer& k, const PageLayout& lay) {
  return decoder(k, lay.k_codes, lay.k_code_bytes, lay.k_scales, size_t(lay.n_k_scales) * 2);
}

PackedRowDecoder value_decoder(const TqQuantizer& v, const PageLayout& lay) {
  return decoder(v, lay.v_codes, lay.v_code_bytes, lay.v_scales, 2);
}

void packed_logits(const PackedRowDecoder& kd, const uint8_t* page, uint32_t row0, const TileMask& mask,
                   const QueryBlock& qb, float scale, float* s, float* buf) {
  const uint32_t D = qb.dim;
  for (uint32_t r = 0; r < mask.max_nvis; ++r) {
    const uint8_t* codes = page + kd.codes_offset + size_t(row0 + r) * kd.code_stride;
    const uint8_t* scales = page + kd.scales_offset + size_t(row0 + r) * kd.scale_stride;
    for (uint32_t i = 0; i < qb.n; ++i)
      if (r < mask.nvis[i]) s[size_t(i) * kTile + r] = 0.0f;
    for (uint32_t g = 0; g < kd.n_groups; ++g) {
      const PackedGroup& pg = kd.groups[g];
      pg.gather(codes + pg.byte_offset, pg.dims, pg.centroids, buf);
      const float sg = half_to_float(load_u16(scales + 2 * g));
      for (uint32_t i = 0; i < qb.n; ++i)
        if (r < mask.nvis[i])
          s[size_t(i) * kTile + r] += sg * dot(qb.q_rot + size_t(i) * D + pg.first, buf, pg.dims);
    }
    for (uint32_t i = 0; i < qb.n; ++i)
      if (r < mask.nvis[i]) s[size_t(i) * kTile + r] *= scale;
  }
}

void packed_values(const PackedRowDecoder& vd, const uint8_t* page, uint32_t row0, const TileMask& mask,
                   const QueryBlock& qb, const float* p, float* acc, float* buf) {
  const uint32_t D = qb.dim;
  const PackedGroup& pg = vd.groups[0];  // V: one group of all dims, identity order
  for (uint32_t r = 0; r < mask.max_nvis; ++r) {
    const uint8_t* codes = page + vd.codes_offset + size_t(row0 + r) * vd.code_stride;
    const float vs = half_to_float(load_u16(page + vd.scales_offset + size_t(row0 + r) * vd.scale_stride));
    pg.gather(codes, pg.dims, pg.centroids, buf);
    for (uint32_t i = 0; i < qb.n; ++i)
      if (r < mask.nvis[i]) axpy(acc + size_t(i) * D, p[size_t(i) * kTile + r] * vs, buf, D);
  }
}

}  // namespace kvbits::attn
