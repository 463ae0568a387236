// kvbits — bit-tight code packing (docs/cache-layout.md).
//
// A segment of n codes of width b (1..8) occupies ceil(n*b/8) bytes as an LSB-first bit
// stream: code j sits at bit offset j*b, bit 0 of a byte first. For b = 1, 2, 4 this is
// "dim 8g+p at bit p of byte g" style nibble/crumb packing, and for b = 3 it is the reference's
// 24-bit little-endian word per eight codes. Unused high bits of the last byte are zero.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits {

constexpr size_t packed_bytes(size_t n_codes, int bits) { return (n_codes * size_t(bits) + 7) / 8; }

// Packs n codes (each < 2^bits) into dst[packed_bytes(n, bits)]. Throws on bits outside [1,8].
void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* dst);
// Inverse of pack_codes.
void unpack_codes(const uint8_t* src, size_t n, int bits, uint8_t* codes);

}  // namespace kvbits
