// Bit-tight code packing: hand-checked byte patterns for each layout family, round trips,
// zero padding and bounds.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kvbits/bitpack.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

std::vector<uint8_t> pack(const std::vector<uint8_t>& codes, int bits) {
  std::vector<uint8_t> out(packed_bytes(codes.size(), bits));
  pack_codes(codes.data(), codes.size(), bits, out.data());
  return out;
}

TEST(Bitpack, PackedBytes) {
  EXPECT_EQ(packed_bytes(0, 3), 0u);
  EXPECT_EQ(packed_bytes(11, 1), 2u);
  EXPECT_EQ(packed_bytes(30, 2), 8u);
  EXPECT_EQ(packed_bytes(38, 3), 15u);
  EXPECT_EQ(packed_bytes(16, 5), 10u);
  EXPECT_EQ(packed_bytes(4, 6), 3u);
  EXPECT_EQ(packed_bytes(128, 8), 128u);
}

TEST(Bitpack, OneBitIsLsbFirst) {
  // dim 8g+p is bit p of byte g.
  EXPECT_EQ(pack({1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1}, 1), (std::vector<uint8_t>{0x8D, 0x05}));
}

TEST(Bitpack, TwoBitCrumbs) {
  // dim 4g+p sits at bits [2p, 2p+1] of byte g.
  EXPECT_EQ(pack({3, 0, 2, 1, 1, 2}, 2), (std::vector<uint8_t>{0x63, 0x09}));
}

TEST(Bitpack, ThreeBitIsTheReferenceTwentyFourBitWord) {
  const std::vector<uint8_t> c{5, 3, 6, 1, 7, 2, 4, 0};
  const auto got = pack(c, 3);
  ASSERT_EQ(got.size(), 3u);
  // The spec's formulas, then the same bytes worked out by hand.
  EXPECT_EQ(got[0], uint8_t(c[0] | c[1] << 3 | (c[2] & 3) << 6));
  EXPECT_EQ(got[1], uint8_t(c[2] >> 2 | c[3] << 1 | c[4] << 4 | (c[5] & 1) << 7));
  EXPECT_EQ(got[2], uint8_t(c[5] >> 1 | c[6] << 2 | c[7] << 5));
  EXPECT_EQ(got, (std::vector<uint8_t>{0x9D, 0x73, 0x11}));
  // Every 3-bit octet, exhaustively against the formulas.
  for (uint32_t v = 0; v < (1u << 24); v += 4099) {
    std::vector<uint8_t> d(8);
    for (int p = 0; p < 8; ++p) d[size_t(p)] = uint8_t((v >> (3 * p)) & 7);
    const auto b = pack(d, 3);
    ASSERT_EQ(b[0] | b[1] << 8 | b[2] << 16, int(v));
  }
}

TEST(Bitpack, ThreeBitTailPadsWithZeros) {
  // Ten codes = 30 bits: codes 8 and 9 fill bits 0..5 of byte 3, bits 6..7 stay zero.
  const auto got = pack({7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, 3);
  EXPECT_EQ(got, (std::vector<uint8_t>{0xFF, 0xFF, 0xFF, 0x3F}));
}

TEST(Bitpack, FourBitNibblesLowFirst) {
  EXPECT_EQ(pack({0xA, 0x3, 0xF}, 4), (std::vector<uint8_t>{0x3A, 0x0F}));
}

TEST(Bitpack, FiveBitIsBitTightNotBytes) {
  // c0 = 11111, c1 = 10011, c2 = 10101, c3 = 01010 -> 20 bits in 3 bytes.
  // byte0 = c0 | (c1 & 7) << 5; byte1 = c1 >> 3 | c2 << 2 | (c3 & 1) << 7; byte2 = c3 >> 1.
  EXPECT_EQ(pack({0x1F, 0x13, 0x15, 0x0A}, 5), (std::vector<uint8_t>{0x7F, 0x56, 0x05}));
}

TEST(Bitpack, SixAndSevenBitStraddleBytes) {
  // 6 bits: c0 = 0x2A, c1 = 0x15 -> byte0 = 0x2A | (0x15 & 3) << 6 = 0x6A, byte1 = 0x15 >> 2 = 0x05.
  EXPECT_EQ(pack({0x2A, 0x15}, 6), (std::vector<uint8_t>{0x6A, 0x05}));
  // 7 bits: c0 = 0x7F, c1 = 0x01 -> byte0 = 0xFF, byte1 = 0x00.
  EXPECT_EQ(pack({0x7F, 0x01}, 7), (std::vector<uint8_t>{0xFF, 0x00}));
}

TEST(Bitpack, EightBitIsOneBytePerCode) {
  EXPECT_EQ(pack({0x12, 0xFF, 0x00, 0x80}, 8), (std::vector<uint8_t>{0x12, 0xFF, 0x00, 0x80}));
}

TEST(Bitpack, RoundTripAllWidthsAndLengths) {
  uint64_t s = 12345;
  auto next = [&] { return (s = s * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n = 0; n <= 70; ++n) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = uint8_t(next() & ((1u << bits) - 1));
      // A guard byte after the packed run must survive.
      std::vector<uint8_t> buf(packed_bytes(n, bits) + 1, 0xEE);
      pack_codes(codes.data(), n, bits, buf.data());
      EXPECT_EQ(buf.back(), 0xEE) << "bits " << bits << " n " << n;
      const size_t used = n * size_t(bits) % 8;
      if (used != 0) {
        EXPECT_EQ(buf[buf.size() - 2] >> used, 0) << "bits " << bits << " n " << n;
      }
      std::vector<uint8_t> back(n, 0xFF);
      unpack_codes(buf.data(), n, bits, back.data());
      EXPECT_EQ(back, codes) << "bits " << bits << " n " << n;
    }
  }
}

TEST(Bitpack, PackOverwritesStaleBytes) {
  std::vector<uint8_t> buf(2, 0xFF);
  const uint8_t codes[3] = {1, 0, 1};
  pack_codes(codes, 3, 2, buf.data());
  EXPECT_EQ(buf[0], 0x11);
  EXPECT_EQ(buf[1], 0xFF);  // outside packed_bytes(3, 2) = 1
}

TEST(Bitpack, RejectsBadWidths) {
  uint8_t c[1] = {0}, d[2] = {0, 0};
  for (int bits : {0, 9, -3}) {
    EXPECT_THROW(pack_codes(c, 1, bits, d), Error);
    EXPECT_THROW(unpack_codes(d, 1, bits, c), Error);
  }
}

}  // namespace
}  // namespace kvbits
