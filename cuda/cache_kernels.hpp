// kvbits CUDA — small kernels of the CUDA cache backend: zeroing freed pages, setting words of
// device bookkeeping, gathering a decode batch's lengths and page-table offsets from the
// device mirror, and rotating queries into the key groups' bases. Raw pointers and plain
// structs; each launcher enqueues on `stream` (a cudaStream_t) and never synchronises.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/append.hpp"

namespace kvbits::cuda {

// Zeroes page `pages[i]` of every region (heads[r], r < n_regions) for i < n_pages.
void zero_pages(const AppendHead* heads, uint32_t n_regions, const uint32_t* pages, uint32_t n_pages, void* stream);

// *words[i].dst = words[i].value for i < n.
void write_words(const WordWrite* words, uint32_t n, void* stream);

// The device mirror of a cache's sequences, as decode reads it.
struct SeqMirror {
  const uint32_t* state = nullptr;   // [max_sequences][n_layers][4]: len, qend, fp16 block (low, high word)
  const uint32_t* offsets = nullptr; // [max_sequences]: first entry of the page table in the arena
  uint32_t n_layers = 0;
};

// For batch position i < n_seqs: table_offset[i], seq_len[i], seq_qend[i] and (if not null)
// fp16_blocks[i] of sequence ids[i] in `layer`, read from the mirror when the launch runs
// (so a captured graph sees the lengths of later appends). ids are passed as kernel
// arguments, in launches of at most kGatherIds.
constexpr uint32_t kGatherIds = 960;  // keeps the launch arguments under 4 KB
void gather_batch(const SeqMirror& mirror, uint32_t layer, const uint64_t* ids, size_t n_seqs, uint32_t* table_offset,
                  uint32_t* seq_len, uint32_t* seq_qend, const uint16_t** fp16_blocks, void* stream);

}  // namespace kvbits::cuda
