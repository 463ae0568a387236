// The per-item kernel against fp64 attention, on pages built by hand from the layout
// contract (PageLayout offsets and strides, padding filled with junk), independent of the
// paged Cache: sink, packed, recent-window ring (with wrap), fp16 pages, causal limits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "attention/attend_head.hpp"
#include "attention_test_util.hpp"
#include "kvbits/half.hpp"

using namespace kvbits;
using namespace kvbits::test_attn;

namespace {

struct Regions {
  uint32_t sink_tokens = 0, window_tokens = 0, page_size = 64;
  uint32_t pad_code_bytes = 0, pad_scales = 0;  // extra bytes / scale slots per row
};

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// Storage for one head holding `len` tokens, and what it holds as fp32.
struct BuiltHead {
  std::vector<uint16_t> sink_k, sink_v, ring_k, ring_v;
  std::vector<std::vector<uint8_t>> pages;
  std::vector<const uint8_t*> page_ptrs;
  std::vector<float> k_held, v_held;  // [len][D]
  attn::HeadSource src;
};

PageLayout page_layout_for(const HeadQuantizers* hq, uint32_t D, const Regions& r) {
  PageLayout lay;
  lay.fp16 = hq == nullptr;
  lay.k_code_bytes = uint32_t(hq ? hq->k.code_bytes() : 2 * D) + r.pad_code_bytes;
  lay.n_k_scales = hq ? uint32_t(hq->k.n_groups()) + r.pad_scales : 0;
  lay.v_code_bytes = uint32_t(hq ? hq->v.code_bytes() : 2 * D) + r.pad_code_bytes;
  const size_t P = r.page_size;
  lay.k_codes = 0;
  lay.k_scales = align16(lay.k_codes + P * lay.k_code_bytes);
  lay.v_codes = align16(lay.k_scales + P * lay.n_k_scales * 2);
  lay.v_scales = align16(lay.v_codes + P * lay.v_code_bytes);
  lay.page_bytes = align16(lay.v_scales + (hq ? P * 2 : 0));
  return lay;
}

void to_half(const float* x, uint32_t D, uint16_t* h, float* held) {
  for (uint32_t d = 0; d < D; ++d) {
    h[d] = float_to_half(x[d]);
    held[d] = half_to_float(h[d]);
  }
}

BuiltHead build_head(const HeadQuantizers* hq, uint32_t D, const std::vector<float>& k, const std::vector<float>& v,
                     uint32_t len, const Regions& r) {
  BuiltHead b;
  attn::HeadSource& s = b.src;
  s.dim = D, s.len = len, s.page_size = r.page_size, s.ring_rows = r.window_tokens;
  s.sink = std::min(len, r.sink_tokens);
  s.qend = len - std::min(len - s.sink, r.window_tokens);
  s.layout = page_layout_for(hq, D, r);
  if (hq) s.k = &hq->k, s.v = &hq->v;
  b.k_held.resize(size_t(len) * D);
  b.v_held.resize(size_t(len) * D);
  b.sink_k.resize(size_t(r.sink_tokens) * D);
  b.sink_v.resize(size_t(r.sink_tokens) * D);
  b.ring_k.assign(size_t(r.window_tokens) * D, 0x7e00);  // NaN junk in unused ring rows
  b.ring_v.assign(size_t(r.window_tokens) * D, 0x7e00);
  const uint32_t n_pages = (s.qend - s.sink + r.page_size - 1) / r.page_size;
  b.pages.assign(n_pages, std::vector<uint8_t>(s.layout.page_bytes, 0xA5));
  const PageLayout& lay = s.layout;
  for (uint32_t t = 0; t < len; ++t) {
    const float* kt = &k[size_t(t) * D];
    const float* vt = &v[size_t(t) * D];
    float* kh = &b.k_held[size_t(t) * D];
    float* vh = &b.v_held[size_t(t) * D];
    if (t < s.sink) {
      to_half(kt, D, &b.sink_k[size_t(t) * D], kh);
      to_half(vt, D, &b.sink_v[size_t(t) * D], vh);
    } else if (t >= s.qend) {
      const size_t row = (t - s.sink) % r.window_tokens;
      to_half(kt, D, &b.ring_k[row * D], kh);
      to_half(vt, D, &b.ring_v[row * D], vh);
    } else {
      uint8_t* page = b.pages[(t - s.sink) / r.page_size].data();
      const size_t row = (t - s.sink) % r.page_size;
      if (!hq) {
        std::vector<uint16_t> h(D);
        to_half(kt, D, h.data(), kh);
        std::memcpy(page + lay.k_codes + row * lay.k_code_bytes, h.data(), 2 * D);
        to_half(vt, D, h.data(), vh);
        std::memcpy(page + lay.v_codes + row * lay.v_code_bytes, h.data(), 2 * D);
        continue;
      }
      std::vector<uint16_t> ks(hq->k.n_groups());
      uint16_t vs = 0;
      hq->k.encode(kt, page + lay.k_codes + row * lay.k_code_bytes, ks.data());
      std::memcpy(page + lay.k_scales + row * lay.n_k_scales * 2, ks.data(), 2 * ks.size());
      hq->v.encode(vt, page + lay.v_codes + row * lay.v_code_bytes, &vs);
      std::memcpy(page + lay.v_scales + row * 2, &vs, 2);
      hq->k.decode(page + lay.k_codes + row * lay.k_code_bytes, ks.data(), kh);
      hq->v.decode(page + lay.v_codes + row * lay.v_code_bytes, &vs, vh);
    }
  }
  for (const auto& p : b.pages) b.page_ptrs.push_back(p.data());
  s.pages = b.page_ptrs.data();
  if (s.sink) s.sink_k = b.sink_k.data(), s.sink_v = b.sink_v.data();
  if (len > s.qend) s.ring_k = b.ring_k.data(), s.ring_v = b.ring_v.data();
  attn::check_head_source(s);
  return b;
}

struct Case {
  uint32_t D = 64, G = 4;
  uint32_t len = 100, q_len = 1;
  Regions regions;
  bool fp16 = false;
  double k_avg_bits = 3.0;
  int v_bits = 3;
};

// Runs one case and folds its errors (vs fp64 attention over the stored K/V) into st.
void run_case(const Case& c, uint64_t seed, ErrorStats& st) {
  const ModelShape shape = make_shape(1, c.G, 1, c.D);
  PlanOptions o;
  o.k_avg_bits = c.k_avg_bits, o.v_bits = c.v_bits;
  const Plan plan = calibrated_plan(shape, o, seed);
  const HeadQuantizers hq = make_head_quantizers(plan, 0, 0);
  const auto k = structured_vectors(shape, c.len, 1, seed + 100);
  const auto v = structured_vectors(shape, c.len, 1, seed + 200);
  const BuiltHead head = build_head(c.fp16 ? nullptr : &hq, c.D, k, v, c.len, c.regions);

  const uint32_t n = c.q_len * c.G, D = c.D;
  const auto q = structured_vectors(shape, c.q_len, c.G, seed + 300);
  std::vector<float> q_rot(q.size());
  std::vector<uint32_t> visible(n);
  for (uint32_t i = 0; i < n; ++i) {
    hq.k.rotate_query(&q[size_t(i) * D], &q_rot[size_t(i) * D]);
    visible[i] = c.len - c.q_len + i / c.G + 1;
  }
  attn::QueryBlock qb;
  qb.n = n, qb.dim = D, qb.q = q.data(), qb.q_rot = q_rot.data(), qb.visible = visible.data();
  std::vector<float> out(size_t(n) * D, NAN), lse(n, NAN);
  attn::AttendScratch ws;
  const double scale = 1.0 / std::sqrt(double(D));
  attn::attend_head(head.src, qb, float(scale), ws, out.data(), lse.data());
  std::vector<double> ref(D);
  for (uint32_t i = 0; i < n; ++i) {
    double ref_lse = 0.0;
    reference_attention(&q[size_t(i) * D], head.k_held.data(), head.v_held.data(), visible[i], D, scale, ref.data(),
                        &ref_lse);
    st.add_row(&out[size_t(i) * D], ref.data(), D);
    st.add_lse(lse[i], ref_lse);
  }
}

}  // namespace

TEST(AttendHead, DecodeMatchesFp64OverStoredKvAcrossShapesAndRegions) {
  ErrorStats st;
  uint64_t seed = 1;
  for (uint32_t D : {8u, 64u, 128u, 256u})
    for (uint32_t G : {1u, 4u, 16u})
      for (const Regions& r : {Regions{0, 0, 64}, Regions{4, 16, 16}, Regions{0, 5, 7}, Regions{3, 0, 1, 3, 2}})
        for (uint32_t len : {1u, 15u, 16u, 17u, 150u}) {
          Case c;
          c.D = D, c.G = G, c.len = len, c.regions = r;
          SCOPED_TRACE(::testing::Message() << "D=" << D << " G=" << G << " len=" << len << " sink=" << r.sink_tokens
                                            << " window=" << r.window_tokens << " page=" << r.page_size);
          run_case(c, seed++, st);
        }
  std::printf("decode over hand-built pages: %zu rows, max rel err %.3g, max lse err %.3g\n", st.rows, st.max_rel,
              st.max_lse);
  EXPECT_LT(st.max_rel, 1e-5);
  EXPECT_LT(st.max_lse, 1e-5);
}

TEST(AttendHead, ExtendIsCausalOverEveryRegion) {
  ErrorStats st;
  uint64_t seed = 500;
  for (uint32_t q_len : {1u, 2u, 7u, 20u})
    for (const Regions& r : {Regions{0, 0, 8}, Regions{4, 16, 16}, Regions{2, 5, 3}}) {
      Case c;
      c.D = 64, c.G = 2, c.len = 90, c.q_len = q_len, c.regions = r;
      run_case(c, seed++, st);
    }
  std::printf("extend over hand-built pages: %zu rows, max rel err %.3g, max lse err %.3g\n", st.rows, st.max_rel,
              st.max_lse);
  EXPECT_LT(st.max_rel, 1e-5);
  EXPECT_LT(st.max_lse, 1e-5);
}

TEST(AttendHead, Fp16PagesAndEveryCodeWidth) {
  ErrorStats st;
  uint64_t seed = 900;
  for (bool fp16 : {true, false})
    for (double bits : {1.0, 2.0, 4.5, 6.0, 8.0}) {
      Case c;
      c.D = 128, c.G = 2, c.len = 70, c.q_len = 3, c.fp16 = fp16, c.k_avg_bits = bits;
      c.v_bits = int(bits);
      c.regions = Regions{2, 4, 32, 1, 1};
      run_case(c, seed++, st);
    }
  std::printf("fp16 pages and widths 1-8: max rel err %.3g, max lse err %.3g\n", st.max_rel, st.max_lse);
  EXPECT_LT(st.max_rel, 1e-5);
  EXPECT_LT(st.max_lse, 1e-5);
}
