// kvbits — how one (layer, KV head)'s key dims are grouped by bit width.
//
// Blocks are sorted by (bits ascending, block index ascending): that deterministic order is
// the "hp order". The block at sorted position p puts its two dims at hp slots 2p and 2p+1.
// One group per distinct bit width, contiguous in hp order, ascending width. Each group has
// its own norm, rotation and codebook.
#pragma once

#include <cstdint>
#include <vector>

#include "kvbits/types.hpp"

namespace kvbits {

struct KeyGroup {
  uint8_t bits = 0;
  uint32_t first_slot = 0;  // first hp slot
  uint32_t dims = 0;        // d_g, always even
};

struct HeadLayout {
  std::vector<uint8_t> block_bits;   // per block id (D/2)
  std::vector<uint32_t> block_order; // hp position -> block id
  std::vector<uint32_t> slot_dim;    // hp slot -> original head dim (D)
  std::vector<KeyGroup> groups;      // ascending bits

  // Code bits per token for K (sum of bits over dims), before byte padding.
  uint32_t code_bits() const;
};

// The canonical hp order: block ids sorted by (bits ascending, id ascending).
std::vector<uint32_t> canonical_block_order(const std::vector<uint8_t>& block_bits);

// Builds the layout from per-block widths (values 1..8) and an hp order (a permutation of the
// block ids with non-decreasing bits; null = canonical). Throws Error(invalid_argument).
HeadLayout make_head_layout(const ModelShape& shape, const std::vector<uint8_t>& block_bits,
                            const std::vector<uint32_t>* block_order = nullptr);

}  // namespace kvbits
