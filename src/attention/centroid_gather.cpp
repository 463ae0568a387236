#include "attention/centroid_gather.hpp"

namespace kvbits::attn {
namespace {

// Bytes [0, n_bytes) of src as a little-endian integer (n_bytes <= 8).
inline uint64_t load_le(const uint8_t* src, uint32_t n_bytes) {
  uint64_t w = 0;
  for (uint32_t i = 0; i < n_bytes; ++i) w |= uint64_t(src[i]) << (8 * i);
  return w;
}

template <int B>
void gather(const uint8_t* codes, uint32_t n, const float* centroids, float* out) {
  constexpr uint64_t mask = (uint64_t(1) << B) - 1;
  uint32_t j = 0;
  for (; j + 8 <= n; j += 8, codes += B, out += 8) {
    const uint64_t w = load_le(codes, B);
    for (int k = 0; k < 8; ++k) out[k] = centroids[(w >> (k * B)) & mask];
  }
  const uint32_t rest = n - j;
  if (rest == 0) return;
  const uint64_t w = load_le(codes, (rest * B + 7) / 8);
  for (uint32_t k = 0; k < rest; ++k) out[k] = centroids[(w >> (k * B)) & mask];
}

template <>
void gather<8>(const uint8_t* codes, uint32_t n, const float* centroids, float* out) {
  for (uint32_t j = 0; j < n; ++j) out[j] = centroids[codes[j]];
}

}  // namespace

GatherFn centroid_gather(int bits) {
  switch (bits) {
    case 1: return gather<1>;
    case 2: return gather<2>;
    case 3: return gather<3>;
    case 4: return gather<4>;
    case 5: return gather<5>;
    case 6: return gather<6>;
    case 7: return gather<7>;
    case 8: return gather<8>;
    default: return nullptr;
  }
}

}  // namespace kvbits::attn
