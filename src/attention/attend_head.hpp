// One work item: a block of queries of one KV head against one sequence's tokens of that
// head, in token order (sink, pages, recent window), through one online softmax per query.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/head_source.hpp"
#include "attention/online_softmax.hpp"
#include "attention/tile.hpp"

namespace kvbits::attn {

// Reusable buffers of a work item (no allocation per token or tile).
struct AttendScratch {
  OnlineSoftmax softmax;
  std::vector<float> logits;     // [n][kTile]
  std::vector<uint32_t> nvis;    // [n]
  std::vector<float> row;        // [dim]
  std::vector<double> unrotate;  // [dim]
};

// out[i] (dim floats) and lse[i] (may be null) for every query of the block. Every
// qb.visible[i] must be in [1, src.len]; qb.q_rot may be null only when src.k is null.
void attend_head(const HeadSource& src, const QueryBlock& qb, float scale, AttendScratch& ws, float* out,
                 float* lse);

}  // namespace kvbits::attn
