// HeadSources of one (sequence, layer) of the paged Cache.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/head_source.hpp"
#include "kvbits/cache.hpp"

namespace kvbits::attn {

// Sources of every KV head of one (sequence, layer), built on the calling thread. Owns the
// per-page pointer tables that the sources point into.
struct SeqLayerSources {
  std::vector<std::vector<const uint8_t*>> page_tables;  // [kv_head][page]
  std::vector<HeadSource> heads;                          // [kv_head]
};
SeqLayerSources make_seq_layer_sources(const Cache& cache, uint32_t layer, uint64_t seq);

}  // namespace kvbits::attn
