#include "kvbits/bitpack.hpp"

#include <cstring>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits {
namespace {
void check_bits(int bits) {
  if (bits < 1 || bits > 8) fail(StatusCode::invalid_argument, "bit width " + std::to_string(bits) + " outside [1, 8]");
}
}  // namespace

void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* dst) {
  check_bits(bits);
  const size_t bytes = packed_bytes(n, bits);
  std::memset(dst, 0, bytes);
  const unsigned mask = (1u << bits) - 1u;
  size_t bit = 0;
  for (size_t j = 0; j < n; ++j, bit += size_t(bits)) {
    // A code spans at most two bytes (bits <= 8).
    const unsigned v = (codes[j] & mask) << (bit & 7);
    dst[bit >> 3] |= uint8_t(v);
    if ((bit & 7) + size_t(bits) > 8) dst[(bit >> 3) + 1] |= uint8_t(v >> 8);
  }
}

void unpack_codes(const uint8_t* src, size_t n, int bits, uint8_t* codes) {
  check_bits(bits);
  const unsigned mask = (1u << bits) - 1u;
  size_t bit = 0;
  for (size_t j = 0; j < n; ++j, bit += size_t(bits)) {
    unsigned v = src[bit >> 3];
    if ((bit & 7) + size_t(bits) > 8) v |= unsigned(src[(bit >> 3) + 1]) << 8;
    codes[j] = uint8_t((v >> (bit & 7)) & mask);
  }
}

}  // namespace kvbits
