#include "kvbits/head_layout.hpp"

#include <algorithm>
#include <string>

#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

uint32_t HeadLayout::code_bits() const {
  uint32_t total = 0;
  for (const KeyGroup& g : groups) total += g.bits * g.dims;
  return total;
}

std::vector<uint32_t> canonical_block_order(const std::vector<uint8_t>& block_bits) {
  std::vector<uint32_t> order(block_bits.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  // Stable sort by width keeps ascending block ids inside a width: the pinned hp order.
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return block_bits[a] < block_bits[b]; });
  return order;
}

HeadLayout make_head_layout(const ModelShape& shape, const std::vector<uint8_t>& block_bits,
                            const std::vector<uint32_t>* block_order) {
  const uint32_t n_blocks = shape.n_blocks();
  if (block_bits.size() != n_blocks)
    fail(StatusCode::invalid_argument, "head layout: expected " + std::to_string(n_blocks) +
                                           " block widths, got " + std::to_string(block_bits.size()));
  for (uint32_t b = 0; b < n_blocks; ++b)
    if (block_bits[b] < 1 || block_bits[b] > 8)
      fail(StatusCode::invalid_argument, "head layout: block " + std::to_string(b) + " has width " +
                                             std::to_string(int(block_bits[b])) + ", outside [1, 8]");
  HeadLayout out;
  out.block_bits = block_bits;
  if (block_order) {
    if (block_order->size() != n_blocks)
      fail(StatusCode::invalid_argument, "head layout: block order has " + std::to_string(block_order->size()) +
                                             " entries, expected " + std::to_string(n_blocks));
    std::vector<bool> seen(n_blocks, false);
    for (uint32_t p = 0; p < n_blocks; ++p) {
      uint32_t id = (*block_order)[p];
      if (id >= n_blocks || seen[id])
        fail(StatusCode::invalid_argument, "head layout: block order is not a permutation (position " +
                                               std::to_string(p) + ")");
      seen[id] = true;
      if (p > 0 && block_bits[id] < block_bits[(*block_order)[p - 1]])
        fail(StatusCode::invalid_argument, "head layout: block order is not sorted by width at position " +
                                               std::to_string(p));
    }
    out.block_order = *block_order;
  } else {
    out.block_order = canonical_block_order(block_bits);
  }
  out.slot_dim.resize(shape.head_dim);
  for (uint32_t p = 0; p < n_blocks; ++p) {
    const auto dims = block_dims(shape, out.block_order[p]);
    out.slot_dim[2 * p] = dims[0];
    out.slot_dim[2 * p + 1] = dims[1];
    const uint8_t bits = block_bits[out.block_order[p]];
    if (out.groups.empty() || out.groups.back().bits != bits)
      out.groups.push_back(KeyGroup{bits, 2 * p, 0});
    out.groups.back().dims += 2;
  }
  return out;
}

}  // namespace kvbits
