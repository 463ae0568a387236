// Everything one attention work item reads for one (sequence, layer, KV head), as plain
// pointers and sizes: the kernels below never see the Cache class, so they can be fed by any
// storage that follows docs/cache-layout.md (the paged cache, or hand-built pages in tests).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvbits/cache.hpp"
#include "kvbits/tq_mse.hpp"

namespace kvbits::attn {

// Token positions [0, len) are split as in cache.hpp: [0, sink) fp16 sink rows,
// [sink, qend) page rows, [qend, len) fp16 ring rows at (t - sink) % ring_rows.
struct HeadSource {
  uint32_t dim = 0;
  uint32_t len = 0, sink = 0, qend = 0;
  uint32_t page_size = 0;
  uint32_t ring_rows = 0;                      // ring modulus (the cache's window_tokens)
  const uint16_t* sink_k = nullptr;            // [sink][dim] fp16, original basis
  const uint16_t* sink_v = nullptr;
  const uint16_t* ring_k = nullptr;            // [ring_rows][dim] fp16
  const uint16_t* ring_v = nullptr;
  const uint8_t* const* pages = nullptr;       // base of each page of the packed region
  PageLayout layout;                           // byte layout of those pages
  const TqQuantizer* k = nullptr;              // null: pages hold fp16 rows (keep_fp16 layer)
  const TqQuantizer* v = nullptr;
};

// Checks that a source is self-consistent (region bounds, pointers, row sizes against the
// quantizers). A failure is a bug in the storage, reported as Error(internal).
void check_head_source(const HeadSource& src);

}  // namespace kvbits::attn
