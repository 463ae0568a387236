#include "attention/attend_head.hpp"

#include <algorithm>

#include "attention/fp16_tile.hpp"
#include "attention/packed_tile.hpp"

namespace kvbits::attn {
namespace {

// Fills ws.nvis for tokens [t0, t0 + rows) and returns the mask.
TileMask mask_for(const QueryBlock& qb, uint32_t t0, uint32_t rows, std::vector<uint32_t>& nvis) {
  TileMask m;
  for (uint32_t i = 0; i < qb.n; ++i) {
    const uint32_t v = qb.visible[i] > t0 ? std::min(qb.visible[i] - t0, rows) : 0;
    nvis[i] = v;
    m.max_nvis = std::max(m.max_nvis, v);
  }
  m.nvis = nvis.data();
  return m;
}

}  // namespace

void attend_head(const HeadSource& src, const QueryBlock& qb, float scale, AttendScratch& ws, float* out,
                 float* lse) {
  const uint32_t D = src.dim;
  ws.softmax.reset(qb.n, D);
  ws.logits.resize(size_t(qb.n) * kTile);
  ws.nvis.resize(qb.n);
  ws.row.resize(D);
  ws.unrotate.resize(D);
  uint32_t horizon = 0;
  for (uint32_t i = 0; i < qb.n; ++i) horizon = std::max(horizon, qb.visible[i]);
  float* s = ws.logits.data();
  float* buf = ws.row.data();

  // One tile of tokens [t0, t0 + rows): logits, softmax update, then V.
  auto run_tile = [&](uint32_t t0, uint32_t rows, auto&& logits, auto&& values) {
    const TileMask mask = mask_for(qb, t0, rows, ws.nvis);
    if (mask.max_nvis == 0) return;
    logits(mask);
    for (uint32_t i = 0; i < qb.n; ++i)
      if (mask.nvis[i] > 0) ws.softmax.absorb(i, s + size_t(i) * kTile, mask.nvis[i]);
    values(mask);
  };
  auto fp16_tile = [&](uint32_t t0, uint32_t rows, Fp16Rows k, Fp16Rows v) {
    run_tile(
        t0, rows, [&](const TileMask& m) { fp16_logits(k, m, qb, scale, s, buf); },
        [&](const TileMask& m) { fp16_values(v, m, qb, s, ws.softmax.acc_orig_all(), buf); });
  };
  const size_t fp16_stride = size_t(D) * 2;
  auto fp16_region = [&](const uint16_t* base) {
    return reinterpret_cast<const uint8_t*>(base);
  };

  // Sink tokens [0, sink).
  for (uint32_t t0 = 0; t0 < std::min(src.sink, horizon); t0 += kTile) {
    const uint32_t rows = std::min(kTile, src.sink - t0);
    const size_t off = size_t(t0) * fp16_stride;
    fp16_tile(t0, rows, {fp16_region(src.sink_k) + off, fp16_stride}, {fp16_region(src.sink_v) + off, fp16_stride});
  }

  // Packed tokens [sink, qend), a tile never crossing a page.
  PackedRowDecoder kd, vd;
  if (src.k) kd = key_decoder(*src.k, src.layout), vd = value_decoder(*src.v, src.layout);
  const PageLayout& lay = src.layout;
  for (uint32_t t0 = src.sink; t0 < std::min(src.qend, horizon);) {
    const uint32_t rel = t0 - src.sink, row0 = rel % src.page_size;
    const uint8_t* page = src.pages[rel / src.page_size];
    const uint32_t rows = std::min({kTile, src.page_size - row0, src.qend - t0});
    if (src.k) {
      run_tile(
          t0, rows, [&](const TileMask& m) { packed_logits(kd, page, row0, m, qb, scale, s, buf); },
          [&](const TileMask& m) { packed_values(vd, page, row0, m, qb, s, ws.softmax.acc_rot_all(), buf); });
    } else {
      fp16_tile(t0, rows, {page + lay.k_codes + size_t(row0) * lay.k_code_bytes, lay.k_code_bytes},
                {page + lay.v_codes + size_t(row0) * lay.v_code_bytes, lay.v_code_bytes});
    }
    t0 += rows;
  }

  // Recent-window tokens [qend, len), ring row (t - sink) % ring_rows, split where the ring wraps.
  for (uint32_t t0 = src.qend; t0 < std::min(src.len, horizon);) {
    const uint32_t rr = (t0 - src.sink) % src.ring_rows;
    const uint32_t rows = std::min({kTile, src.ring_rows - rr, src.len - t0});
    const size_t off = size_t(rr) * fp16_stride;
    fp16_tile(t0, rows, {fp16_region(src.ring_k) + off, fp16_stride}, {fp16_region(src.ring_v) + off, fp16_stride});
    t0 += rows;
  }

  const float* v_rotation = src.k ? src.v->rotation(0).data() : nullptr;
  for (uint32_t i = 0; i < qb.n; ++i) {
    // A query that saw no packed token has acc_rot = 0: skip its D^2 un-rotation.
    const bool saw_packed = v_rotation && src.qend > src.sink && qb.visible[i] > src.sink;
    ws.softmax.finish(i, saw_packed ? v_rotation : nullptr, out + size_t(i) * D, lse ? lse + i : nullptr,
                      ws.unrotate.data());
  }
}

}  // namespace kvbits::attn
