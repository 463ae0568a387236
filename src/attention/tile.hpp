// Shared shapes of the per-tile kernels.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvbits::attn {

// Tokens per tile: one tile's logits for every query of a work item sit in a [n][kTile]
// buffer. A tile never crosses a page or a region boundary.
constexpr uint32_t kTile = 64;

// The queries of one work item, all of one KV head. Query i sees tokens [0, visible[i]).
struct QueryBlock {
  uint32_t n = 0;
  uint32_t dim = 0;
  const float* q = nullptr;      // [n][dim] original basis (for fp16 tokens)
  const float* q_rot = nullptr;  // [n][dim] hp-order group bases, q' = R q (for packed tokens)
  const uint32_t* visible = nullptr;
};

// Per tile: how many of its rows query i sees (rows [0, nvis[i]) ), and the largest.
struct TileMask {
  const uint32_t* nvis = nullptr;
  uint32_t max_nvis = 0;
};

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace kvbits::attn
