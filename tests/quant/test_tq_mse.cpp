// TurboQuant-MSE quantizer: exact nearest-centroid codes, norm correction, round-trip error,
// the query-rotation identity, packing offsets, edge cases and input validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvbits/bitpack.hpp"
#include "kvbits/half.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/status.hpp"
#include "kvbits/tq_mse.hpp"
#include "quant_test_util.hpp"

namespace kvbits {
namespace {

using testing::all_unit_codebooks;
using testing::dot;
using testing::householder;
using testing::identity_matrix;
using testing::TestRng;

ModelShape head_shape(uint32_t d, RopeLayout layout = RopeLayout::split_half) {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 1;
  s.n_kv_heads = 1;
  s.head_dim = d;
  s.rotary_dim = d;
  s.rope_layout = layout;
  return s;
}

// Per-block widths with the spec's worked histogram 1b:9 2b:15 3b:19 4b:11 5b:8 6b:2 (D = 128),
// spread over the blocks by a fixed stride so that every width is scattered.
std::vector<uint8_t> histogram_widths() {
  const int counts[] = {9, 15, 19, 11, 8, 2};
  std::vector<uint8_t> sorted;
  for (int b = 1; b <= 6; ++b) sorted.insert(sorted.end(), size_t(counts[b - 1]), uint8_t(b));
  std::vector<uint8_t> widths(64);
  for (size_t i = 0; i < 64; ++i) widths[(i * 27) % 64] = sorted[i];  // 27 is coprime to 64
  return widths;
}

std::vector<std::vector<float>> haar_per_group(const HeadLayout& l, uint64_t seed) {
  std::vector<std::vector<float>> r;
  for (size_t g = 0; g < l.groups.size(); ++g) r.push_back(haar_rotation(l.groups[g].dims, seed + g));
  return r;
}

TqQuantizer histogram_key_quantizer(CodebookRecipe recipe = CodebookRecipe::lloyd_max) {
  const HeadLayout l = make_head_layout(head_shape(128), histogram_widths());
  return make_key_quantizer(l, haar_per_group(l, 1000), all_unit_codebooks(recipe));
}

struct Row {
  std::vector<uint8_t> packed;
  std::vector<uint16_t> scales;
};

Row encode(const TqQuantizer& q, const std::vector<float>& x) {
  Row r{std::vector<uint8_t>(q.code_bytes()), std::vector<uint16_t>(q.n_groups())};
  q.encode(x.data(), r.packed.data(), r.scales.data());
  return r;
}

std::vector<float> decode(const TqQuantizer& q, const Row& r) {
  std::vector<float> x(q.dim());
  q.decode(r.packed.data(), r.scales.data(), x.data());
  return x;
}

TEST(TqQuantizer, LayoutOfTheWorkedHistogram) {
  const TqQuantizer q = histogram_key_quantizer();
  ASSERT_EQ(q.n_groups(), 6u);
  const uint32_t dims[] = {18, 30, 38, 22, 16, 4};
  const size_t offsets[] = {0, 3, 11, 26, 37, 47};  // ceil(d*b/8): 3, 8, 15, 11, 10, 3
  for (size_t g = 0; g < 6; ++g) {
    EXPECT_EQ(q.groups()[g].bits, g + 1);
    EXPECT_EQ(q.groups()[g].dims, dims[g]);
    EXPECT_EQ(q.group_byte_offset(g), offsets[g]);
    EXPECT_EQ(q.codebook(g).dim, dims[g]);
  }
  EXPECT_EQ(q.code_bytes(), 50u);
}

TEST(TqQuantizer, CodesAreExactNearestCentroidsOfTheRotatedNormalisedVector) {
  const TqQuantizer q = histogram_key_quantizer();
  TestRng rng(1);
  for (int t = 0; t < 200; ++t) {
    const auto x = rng.gauss_vector(128, 0.5 + 0.01 * t);
    std::vector<uint8_t> codes(128);
    std::vector<uint16_t> scales(6);
    q.encode_codes(x.data(), codes.data(), scales.data());
    for (size_t g = 0; g < q.n_groups(); ++g) {
      const KeyGroup& gr = q.groups()[g];
      const auto& rot = q.rotation(g);
      const auto& cb = q.codebook(g);
      double nsq = 0.0;
      for (uint32_t j = 0; j < gr.dims; ++j) {
        const double xj = x[q.slot_dim()[gr.first_slot + j]];
        nsq += xj * xj;
      }
      for (uint32_t r = 0; r < gr.dims; ++r) {
        double y = 0.0;
        for (uint32_t j = 0; j < gr.dims; ++j)
          y += double(rot[size_t(r) * gr.dims + j]) * x[q.slot_dim()[gr.first_slot + j]];
        y /= std::sqrt(nsq);
        uint32_t best = 0;  // brute force over every centroid
        for (uint32_t k = 1; k < cb.centroids.size(); ++k)
          if (std::fabs(y - cb.centroids[k]) < std::fabs(y - cb.centroids[best])) best = k;
        ASSERT_EQ(codes[gr.first_slot + r], best) << "t " << t << " group " << g << " row " << r;
      }
    }
  }
}

TEST(TqQuantizer, BoundaryTieGoesToTheLowerCode) {
  // Identity rotation, 1-bit and 3-bit codebooks: the middle boundary is exactly 0.
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  for (int bits : {1, 3}) {
    const TqQuantizer q = make_value_quantizer(4, bits, identity_matrix(4), books);
    const std::vector<float> x{0.0f, 1.0f, -0.0f, -1.0f};
    std::vector<uint8_t> codes(4);
    uint16_t scale = 0;
    q.encode_codes(x.data(), codes.data(), &scale);
    const uint8_t mid = uint8_t((1u << bits) / 2);
    EXPECT_EQ(codes[0], mid - 1) << bits;
    EXPECT_EQ(codes[2], mid - 1) << bits;
    EXPECT_GE(codes[1], mid) << bits;
    EXPECT_LT(codes[3], mid) << bits;
  }
}

TEST(TqQuantizer, NormCorrectionRestoresEachGroupNorm) {
  const TqQuantizer q = histogram_key_quantizer();
  TestRng rng(2);
  for (int t = 0; t < 50; ++t) {
    const auto x = rng.gauss_vector(128, 3.0);
    const Row row = encode(q, x);
    std::vector<float> y(128);
    q.dequantize_rotated(row.packed.data(), row.scales.data(), y.data());
    const auto xhat = decode(q, row);
    std::vector<uint8_t> codes(128);
    std::vector<uint16_t> scales(6);
    q.encode_codes(x.data(), codes.data(), scales.data());
    for (size_t g = 0; g < q.n_groups(); ++g) {
      const KeyGroup& gr = q.groups()[g];
      double xn = 0.0, yn = 0.0, cn = 0.0, dn = 0.0;
      for (uint32_t s = gr.first_slot; s < gr.first_slot + gr.dims; ++s) {
        const double xs = x[q.slot_dim()[s]], ds = xhat[q.slot_dim()[s]], c = q.codebook(g).centroids[codes[s]];
        xn += xs * xs;
        yn += double(y[s]) * y[s];
        cn += c * c;
        dn += ds * ds;
        EXPECT_EQ(y[s], half_to_float(row.scales[g]) * q.codebook(g).centroids[codes[s]]);
      }
      const double scale = half_to_float(row.scales[g]);
      EXPECT_EQ(row.scales[g], double_to_half(std::sqrt(xn) / std::sqrt(cn)));
      // The decoded group has norm half(scale) * ||c|| (fp32 rounding only) ...
      EXPECT_NEAR(std::sqrt(yn) / (scale * std::sqrt(cn)), 1.0, 1e-6);
      // ... which equals ||x_g|| up to the fp16 rounding of the scale (2^-11 relative).
      EXPECT_NEAR(std::sqrt(yn) / std::sqrt(xn), 1.0, 4.9e-4 + 1e-6);
      EXPECT_NEAR(std::sqrt(dn) / std::sqrt(xn), 1.0, 4.9e-4 + 1e-5);  // rotation keeps the norm
    }
  }
}

TEST(TqQuantizer, RoundTripMseMatchesTheGaussianCodebookMse) {
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  for (int bits = 1; bits <= 8; ++bits) {
    const TqQuantizer q = make_value_quantizer(128, bits, haar_rotation(128, 77), books);
    TestRng rng{uint64_t(bits)};
    double sum = 0.0;
    const int n = 800;
    for (int t = 0; t < n; ++t) {
      const auto x = rng.gauss_vector(128);
      const auto xhat = decode(q, encode(q, x));
      double e = 0.0, nx = 0.0;
      for (size_t i = 0; i < 128; ++i) {
        e += (double(x[i]) - xhat[i]) * (double(x[i]) - xhat[i]);
        nx += double(x[i]) * x[i];
      }
      sum += e / nx;
    }
    const double measured = sum / n, mse = gaussian_codebook_mse(books[size_t(bits)]);
    EXPECT_NEAR(measured / mse, 1.0, 0.15) << "bits " << bits;
    // Norm correction maps c to c/||c||: the error is 2 - 2 u.c/||c|| ~ 2 - 2 sqrt(1 - mse).
    EXPECT_NEAR(measured / (2.0 - 2.0 * std::sqrt(1.0 - mse)), 1.0, 0.07) << "bits " << bits;
  }
}

TEST(TqQuantizer, QueryRotationIdentity) {
  const TqQuantizer q = histogram_key_quantizer();
  TestRng rng(3);
  for (int t = 0; t < 50; ++t) {
    const auto x = rng.gauss_vector(128);
    const auto query = rng.gauss_vector(128);
    const Row row = encode(q, x);
    std::vector<float> y(128), q_rot(128);
    q.dequantize_rotated(row.packed.data(), row.scales.data(), y.data());
    q.rotate_query(query.data(), q_rot.data());
    const double lhs = dot(q_rot, y), rhs = dot(query, decode(q, row));
    EXPECT_NEAR(lhs, rhs, 1e-5 * std::fabs(rhs) + 1e-6) << t;
    // rotate_query is an isometry per group.
    EXPECT_NEAR(dot(q_rot, q_rot) / dot(query, query), 1.0, 1e-5);
  }
}

TEST(TqQuantizer, RotateQueryAndDecodeUseTheGroupRotations) {
  // D = 4, two 2-dim groups; group 0 is the plane rotation by 90 degrees, group 1 the identity.
  const HeadLayout l = make_head_layout(head_shape(4, RopeLayout::interleaved), {2, 4});
  const std::vector<float> quarter_turn{0.0f, -1.0f, 1.0f, 0.0f};
  const TqQuantizer q = make_key_quantizer(l, {quarter_turn, identity_matrix(2)},
                                           all_unit_codebooks(CodebookRecipe::lloyd_max));
  std::vector<float> out(4);
  q.rotate_query(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}.data(), out.data());
  EXPECT_EQ(out, (std::vector<float>{-2.0f, 1.0f, 3.0f, 4.0f}));
  // x = (0, 5) rotates to (-1, 0) * 5; decode applies R^T exactly (entries 0, +-1): x0 = y1, x1 = -y0.
  const Row row = encode(q, {0.0f, 5.0f, 0.0f, 0.0f});
  const auto xhat = decode(q, row);
  std::vector<float> y(4);
  q.dequantize_rotated(row.packed.data(), row.scales.data(), y.data());
  EXPECT_LT(y[0], 0.0f);
  EXPECT_EQ(xhat[0], y[1]);
  EXPECT_EQ(xhat[1], -y[0]);
  EXPECT_NEAR(std::hypot(xhat[0], xhat[1]), 5.0, 5.0 * 4.9e-4);
  EXPECT_EQ(row.scales[1], 0);  // all-zero group
  EXPECT_EQ(xhat[2], 0.0f);
  EXPECT_EQ(xhat[3], 0.0f);
}

TEST(TqQuantizer, EightBitRoundTripIsTight) {
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  const HeadLayout l = make_head_layout(head_shape(64), std::vector<uint8_t>(32, 8));
  const TqQuantizer q = make_key_quantizer(l, haar_per_group(l, 5), books);
  EXPECT_EQ(q.code_bytes(), 64u);
  TestRng rng(4);
  for (int t = 0; t < 50; ++t) {
    const auto x = rng.gauss_vector(64, 10.0);
    const auto xhat = decode(q, encode(q, x));
    double e = 0.0, nx = 0.0;
    for (size_t i = 0; i < 64; ++i) {
      e += (double(x[i]) - xhat[i]) * (double(x[i]) - xhat[i]);
      nx += double(x[i]) * x[i];
    }
    EXPECT_LT(std::sqrt(e / nx), 0.012) << t;  // sqrt(4.1e-5) = 0.0064 on average
  }
}

TEST(TqQuantizer, ZeroVectorEncodesToTheZeroCodeAndScale) {
  const TqQuantizer q = histogram_key_quantizer();
  const std::vector<float> zero(128, 0.0f);
  std::vector<uint8_t> codes(128);
  std::vector<uint16_t> scales(6, 0xFFFF);
  q.encode_codes(zero.data(), codes.data(), scales.data());
  for (size_t g = 0; g < 6; ++g) {
    EXPECT_EQ(scales[g], 0);
    const uint8_t want = uint8_t(q.codebook(g).code_of(0.0));
    EXPECT_EQ(want, (1u << q.groups()[g].bits) / 2 - 1);
    for (uint32_t s = 0; s < q.groups()[g].dims; ++s) EXPECT_EQ(codes[q.groups()[g].first_slot + s], want);
  }
  const auto xhat = decode(q, encode(q, zero));
  for (float v : xhat) EXPECT_EQ(v, 0.0f);
}

TEST(TqQuantizer, PackedRowIsGroupsPackedInOrderAtTheirOffsets) {
  const TqQuantizer q = histogram_key_quantizer();
  TestRng rng(5);
  const auto x = rng.gauss_vector(128);
  std::vector<uint8_t> codes(128);
  std::vector<uint16_t> scales(6);
  q.encode_codes(x.data(), codes.data(), scales.data());
  std::vector<uint8_t> want(q.code_bytes(), 0);
  for (size_t g = 0; g < 6; ++g)
    pack_codes(codes.data() + q.groups()[g].first_slot, q.groups()[g].dims, q.groups()[g].bits,
               want.data() + q.group_byte_offset(g));
  std::vector<uint8_t> got(q.code_bytes() + 1, 0xAB);
  std::vector<uint16_t> got_scales(6);
  q.encode(x.data(), got.data(), got_scales.data());
  EXPECT_EQ(got.back(), 0xAB);  // nothing written past code_bytes()
  got.pop_back();
  EXPECT_EQ(got, want);
  EXPECT_EQ(got_scales, scales);
}

TEST(TqQuantizer, ValueQuantizerIsOneIdentityOrderedGroup) {
  const auto books = all_unit_codebooks(CodebookRecipe::reference);
  const TqQuantizer v = make_value_quantizer(128, 3, haar_rotation(128, 9), books);
  ASSERT_EQ(v.n_groups(), 1u);
  EXPECT_EQ(v.dim(), 128u);
  EXPECT_EQ(int(v.groups()[0].bits), 3);
  EXPECT_EQ(v.groups()[0].first_slot, 0u);
  EXPECT_EQ(v.groups()[0].dims, 128u);
  EXPECT_EQ(v.code_bytes(), 48u);
  for (uint32_t i = 0; i < 128; ++i) EXPECT_EQ(v.slot_dim()[i], i);
  EXPECT_EQ(v.codebook(0).centroids[7], float(books[3][7] / std::sqrt(128.0)));
  TestRng rng(6);
  const auto x = rng.gauss_vector(128);
  const auto xhat = decode(v, encode(v, x));
  double e = 0.0, nx = 0.0;
  for (size_t i = 0; i < 128; ++i) {
    e += (double(x[i]) - xhat[i]) * (double(x[i]) - xhat[i]);
    nx += double(x[i]) * x[i];
  }
  EXPECT_LT(e / nx, 0.06);  // 3-bit: about 0.035 on average
}

TEST(TqQuantizer, HouseholderReflectionWorksAsWellAsARotation) {
  std::vector<double> v(16);
  for (size_t i = 0; i < 16; ++i) v[i] = double(int(i * 7 % 5) - 2) + 0.25;
  const TqQuantizer q = make_value_quantizer(16, 4, householder(v), all_unit_codebooks(CodebookRecipe::lloyd_max));
  TestRng rng(7);
  const auto x = rng.gauss_vector(16), query = rng.gauss_vector(16);
  const Row row = encode(q, x);
  std::vector<float> y(16), qr(16);
  q.dequantize_rotated(row.packed.data(), row.scales.data(), y.data());
  q.rotate_query(query.data(), qr.data());
  const double rhs = dot(query, decode(q, row));
  EXPECT_NEAR(dot(qr, y), rhs, 1e-5 * std::fabs(rhs) + 1e-6);
}

void expect_invalid(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected an error mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(TqQuantizer, RejectsInconsistentConstruction) {
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  const std::vector<uint32_t> id4{0, 1, 2, 3};
  const auto i2 = identity_matrix(2), i4 = identity_matrix(4);
  using G = std::vector<KeyGroup>;
  using R = std::vector<std::vector<float>>;
  auto make = [&](G g, std::vector<uint32_t> sd, R r, const std::vector<std::vector<double>>& b) {
    return [=] { TqQuantizer(g, sd, r, b); };
  };
  expect_invalid(make(G{}, id4, R{}, books), "no groups");
  expect_invalid(make(G{{2, 0, 2}, {3, 3, 1}}, id4, R{i2, identity_matrix(1)}, books), "starts at slot 3");
  expect_invalid(make(G{{2, 0, 2}, {3, 1, 3}}, id4, R{i2, identity_matrix(3)}, books), "starts at slot 1");
  expect_invalid(make(G{{2, 0, 2}}, id4, R{i2}, books), "cover 2 slots");
  expect_invalid(make(G{{2, 0, 2}, {3, 2, 4}}, id4, R{i2, i4}, books), "runs past");
  expect_invalid(make(G{{0, 0, 4}}, id4, R{i4}, books), "outside [1, 8]");
  expect_invalid(make(G{{9, 0, 4}}, id4, R{i4}, books), "outside [1, 8]");
  expect_invalid(make(G{{3, 0, 2}, {2, 2, 2}}, id4, R{i2, i2}, books), "does not ascend");
  expect_invalid(make(G{{3, 0, 2}, {3, 2, 2}}, id4, R{i2, i2}, books), "does not ascend");
  expect_invalid(make(G{{2, 0, 0}, {3, 0, 4}}, id4, R{{}, i4}, books), "is empty");
  expect_invalid(make(G{{2, 0, 4}}, {0, 1, 1, 3}, R{i4}, books), "not a permutation");
  expect_invalid(make(G{{2, 0, 4}}, {0, 1, 2, 4}, R{i4}, books), "not a permutation");
  expect_invalid(make(G{{2, 0, 4}}, {}, R{i4}, books), "head dim is 0");
  expect_invalid(make(G{{2, 0, 4}}, id4, R{}, books), "0 rotations for 1 groups");
  expect_invalid(make(G{{2, 0, 4}}, id4, R{i2}, books), "expected 4x4");
  auto with_nan = i4;
  with_nan[5] = NAN;
  expect_invalid(make(G{{2, 0, 4}}, id4, R{with_nan}, books), "non-finite");
  auto scaled = i4;
  scaled[0] = 2.0f;
  expect_invalid(make(G{{2, 0, 4}}, id4, R{scaled}, books), "not orthogonal");
  auto missing = books;
  missing[2].clear();
  expect_invalid(make(G{{2, 0, 4}}, id4, R{i4}, missing), "no unit codebook for bit width 2");
  expect_invalid(make(G{{2, 0, 4}}, id4, R{i4}, std::vector<std::vector<double>>(2)), "no unit codebook");
  auto wrong = books;
  wrong[2] = books[3];
  expect_invalid(make(G{{2, 0, 4}}, id4, R{i4}, wrong), "expected 4 unit centroids");

  expect_invalid([&] { make_value_quantizer(4, 0, i4, books); }, "outside [1, 8]");
  expect_invalid([&] { make_value_quantizer(4, 9, i4, books); }, "outside [1, 8]");
  expect_invalid([&] { make_value_quantizer(0, 3, {}, books); }, "head dim 0");
  expect_invalid([&] { make_value_quantizer(2048, 3, {}, books); }, "head dim 2048");
  expect_invalid([&] { make_value_quantizer(4, 3, i2, books); }, "expected 4x4");
  const HeadLayout l = make_head_layout(head_shape(8), {1, 2, 3, 4});
  expect_invalid([&] { make_key_quantizer(l, {i2, i2, i2}, books); }, "3 rotations for 4 groups");
}

}  // namespace
}  // namespace kvbits
