#include "attention/packed_rows.hpp"

#include "attention/tile.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits::attn {
namespace {

PackedRowDecoder decoder(const TqQuantizer& tq, size_t codes, size_t code_stride, size_t scales,
                         size_t scale_stride) {
  PackedRowDecoder d;
  if (tq.n_groups() > 8) fail(StatusCode::internal, "attention: more than 8 code groups");
  d.n_groups = uint32_t(tq.n_groups());
  d.dim = tq.dim();
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

void decode_packed_rows(const PackedRowDecoder& dec, const uint8_t* page, uint32_t row0, uint32_t rows, float* dst) {
  for (uint32_t r = 0; r < rows; ++r, dst += dec.dim) {
    const uint8_t* codes = page + dec.codes_offset + size_t(row0 + r) * dec.code_stride;
    const uint8_t* scales = page + dec.scales_offset + size_t(row0 + r) * dec.scale_stride;
    for (uint32_t g = 0; g < dec.n_groups; ++g) {
      const PackedGroup& pg = dec.groups[g];
      pg.gather(codes + pg.byte_offset, pg.dims, pg.centroids, half_to_float(load_u16(scales + 2 * g)),
                dst + pg.first);
    }
  }
}

}  // namespace kvbits::attn
