// Golden rows: exact packed code bytes and fp16 scale bits for fixed inputs, pinning the whole
// chain (Haar rotations, codebooks, canonical encode arithmetic, packing).
//
// Each golden is also re-derived independently inside the test: codes by brute-force nearest
// centroid in fp64, bytes by a bit-by-bit packer, scales by the norm-correction formula. So a
// wrong implementation cannot simply be frozen into the expected strings. Every rotated value
// must sit clearly away from a decision boundary, so the goldens do not hinge on the last ulp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kvbits/half.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/tq_mse.hpp"
#include "quant_test_util.hpp"

namespace kvbits {
namespace {

using testing::all_unit_codebooks;

constexpr uint64_t kBaseSeed = 42;

// Fixed inputs from an integer formula: multiples of 1/16 in [-3, 3].
std::vector<float> golden_input(uint32_t d, uint32_t token) {
  std::vector<float> x(d);
  for (uint32_t i = 0; i < d; ++i) x[i] = float(int((i * i * 7 + i * 13 + token * 29 + 5) % 97) - 48) / 16.0f;
  return x;
}

std::string hex(const std::vector<uint8_t>& bytes) {
  std::string s;
  char buf[3];
  for (uint8_t b : bytes) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    s += buf;
  }
  return s;
}

std::string scale_hex(const std::vector<uint16_t>& scales) {
  std::string s;
  char buf[6];
  for (uint16_t v : scales) {
    std::snprintf(buf, sizeof buf, "%s%04x", s.empty() ? "" : " ", v);
    s += buf;
  }
  return s;
}

// Independent re-derivation of one row: brute-force codes, bit-by-bit packing, scales.
struct Expected {
  std::vector<uint8_t> packed;
  std::vector<uint16_t> scales;
  double min_margin = INFINITY;  // smallest |y - boundary| relative to the group's centroid spacing
};

Expected rederive(const TqQuantizer& q, const std::vector<float>& x) {
  Expected e;
  for (size_t g = 0; g < q.n_groups(); ++g) {
    const KeyGroup& gr = q.groups()[g];
    const GroupCodebook& cb = q.codebook(g);
    const std::vector<float>& rot = q.rotation(g);
    std::vector<double> xg(gr.dims);
    double nsq = 0.0;
    for (uint32_t j = 0; j < gr.dims; ++j) {
      xg[j] = x[q.slot_dim()[gr.first_slot + j]];
      nsq += xg[j] * xg[j];
    }
    const double n = std::sqrt(nsq);
    std::vector<uint32_t> codes(gr.dims);
    double csq = 0.0;
    for (uint32_t r = 0; r < gr.dims; ++r) {
      double acc = 0.0;
      for (uint32_t j = 0; j < gr.dims; ++j) acc += double(rot[size_t(r) * gr.dims + j]) * xg[j];
      const double y = acc / n;
      uint32_t best = 0;
      for (uint32_t k = 1; k < cb.centroids.size(); ++k)
        if (std::fabs(y - cb.centroids[k]) < std::fabs(y - cb.centroids[best])) best = k;
      codes[r] = best;
      csq += double(cb.centroids[best]) * cb.centroids[best];
      for (size_t k = 0; k + 1 < cb.centroids.size(); ++k) {
        const double mid = (double(cb.centroids[k]) + cb.centroids[k + 1]) / 2.0;
        e.min_margin = std::fmin(e.min_margin, std::fabs(y - mid) / (double(cb.centroids[k + 1]) - cb.centroids[k]));
      }
    }
    const double exact_scale = n / std::sqrt(csq);
    const uint16_t h = double_to_half(exact_scale);
    // The stored half is the nearest binary16 value (relative error <= 2^-11 for normals).
    EXPECT_LE(std::fabs(half_to_float(h) - exact_scale), exact_scale * 0x1p-11);
    e.scales.push_back(h);
    // LSB-first bit stream, each group starting on a fresh byte.
    std::vector<uint8_t> bytes((size_t(gr.dims) * gr.bits + 7) / 8, 0);
    size_t bit = 0;
    for (uint32_t r = 0; r < gr.dims; ++r)
      for (int k = 0; k < gr.bits; ++k, ++bit)
        if ((codes[r] >> k) & 1u) bytes[bit / 8] = uint8_t(bytes[bit / 8] | (1u << (bit % 8)));
    e.packed.insert(e.packed.end(), bytes.begin(), bytes.end());
  }
  return e;
}

void check_golden(const TqQuantizer& q, uint32_t token, const char* want_codes, const char* want_scales) {
  const auto x = golden_input(q.dim(), token);
  std::vector<uint8_t> packed(q.code_bytes());
  std::vector<uint16_t> scales(q.n_groups());
  q.encode(x.data(), packed.data(), scales.data());
  const Expected e = rederive(q, x);
  EXPECT_GT(e.min_margin, 1e-4) << "token " << token << ": input too close to a boundary for a golden";
  EXPECT_EQ(hex(packed), hex(e.packed)) << "token " << token << ": encode disagrees with brute force";
  EXPECT_EQ(scale_hex(scales), scale_hex(e.scales)) << "token " << token;
  EXPECT_EQ(hex(packed), want_codes) << "token " << token;
  EXPECT_EQ(scale_hex(scales), want_scales) << "token " << token;
}

std::vector<std::vector<float>> key_rotations(const HeadLayout& l) {
  std::vector<std::vector<float>> r;
  for (uint32_t g = 0; g < l.groups.size(); ++g)
    r.push_back(haar_rotation(l.groups[g].dims, derive_rotation_seed(kBaseSeed, 0, 0, 0, g)));
  return r;
}

ModelShape shape(uint32_t d, RopeLayout layout) {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 1;
  s.n_kv_heads = 1;
  s.head_dim = d;
  s.rotary_dim = d;
  s.rope_layout = layout;
  return s;
}

TEST(Golden, BlockGtqHeadD8Interleaved) {
  // Blocks (2i, 2i+1) with widths 3, 1, 4, 2 -> hp order 1, 3, 0, 2 -> four 2-dim groups.
  const HeadLayout l = make_head_layout(shape(8, RopeLayout::interleaved), {3, 1, 4, 2});
  ASSERT_EQ(l.slot_dim, (std::vector<uint32_t>{2, 3, 6, 7, 0, 1, 4, 5}));
  const TqQuantizer q = make_key_quantizer(l, key_rotations(l), all_unit_codebooks(CodebookRecipe::lloyd_max));
  ASSERT_EQ(q.code_bytes(), 4u);
  check_golden(q, 0, "02011137",
               "4233 347c 4197 3ec6");
  check_golden(q, 1, "000829bb",
               "426c 408d 3afc 4338");
  check_golden(q, 2, "010235a3",
               "4164 424a 405e 40dd");
}

TEST(Golden, BlockGtqHeadD128WidthsOneToSix) {
  // The spec's worked histogram 1b:9 2b:15 3b:19 4b:11 5b:8 6b:2, scattered by stride 27.
  const int counts[] = {9, 15, 19, 11, 8, 2};
  std::vector<uint8_t> sorted, widths(64);
  for (int b = 1; b <= 6; ++b) sorted.insert(sorted.end(), size_t(counts[b - 1]), uint8_t(b));
  for (size_t i = 0; i < 64; ++i) widths[(i * 27) % 64] = sorted[i];
  const HeadLayout l = make_head_layout(shape(128, RopeLayout::split_half), widths);
  const TqQuantizer q = make_key_quantizer(l, key_rotations(l), all_unit_codebooks(CodebookRecipe::lloyd_max));
  ASSERT_EQ(q.code_bytes(), 50u);
  check_golden(q, 0, "9fa6025843226265aa0a0ab6cc4a1c67b2bd979486ca85142d"
               "02950c473543c879872b9c7639aa74e69cd4e161e798b1f4a2",
               "4840 4912 49ff 4857 47f5 427e");
  check_golden(q, 1, "67f603d67dc865d6716e081e2959ccb88b04f9456ba884ed6a"
               "037736a646b42e4d5d8265b7cd40e5d481b3d9d66a1f5059cd",
               "48df 4942 499d 478d 45e2 446b");
}

TEST(Golden, ValueD64ThreeBits) {
  const TqQuantizer v = make_value_quantizer(64, 3, haar_rotation(64, derive_rotation_seed(kBaseSeed, 0, 0, 1, 0)),
                                             all_unit_codebooks(CodebookRecipe::reference));
  ASSERT_EQ(v.code_bytes(), 24u);
  check_golden(v, 0, "5d644543158d60b351aab6851a2bf576038a5bdd44a8b495",
               "4b7c");
  check_golden(v, 1, "91b67abec5b1ed42b73525cf2f54a9cc4ab974b6cd53cdf0",
               "4b60");
}

}  // namespace
}  // namespace kvbits
