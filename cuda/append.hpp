// kvbits CUDA — the fused append: quantize + pack the new K/V tokens of one layer, for every KV
// head and every sequence of the call, straight into the paged cache (docs/gpu-decode.md,
// "CUDA backend"). Raw device pointers and plain structs only.
//
// Two launches (three with copy-on-write copies), all-or-nothing:
//   append_encode  checks every input value (non-finite; outside the fp16 range where it is to
//                  be held in fp16) and encodes every packed (token, head) into a staging area:
//                  codes and fp16 scales bit-identical to TqQuantizer::encode (a group norm too
//                  large for an fp16 scale is an error too). Errors go to one 64-bit word as the
//                  smallest error key (the CPU backend's order: see AppendError). Nothing the
//                  cache shows changes.
//   append_commit  run only after the host read the error word and found no error: copy-on-
//                  write copies of shared pages (a launch of their own, first), then staged rows
//                  into their page rows, fp16 sink and ring rows of the new tokens, and the
//                  device mirror of lengths / page tables.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits::cuda {

constexpr uint32_t kAppendMaxGroups = 8;  // one K group per width 1..8

// One rotation group of a head: a K bit-width group, or V (one group of all D dims).
struct AppendGroup {
  uint32_t bits = 0;         // 1..8
  uint32_t first = 0;        // first hp slot (V: 0)
  uint32_t dims = 0;         // d
  uint32_t byte_offset = 0;  // of its codes inside the K (or V) code row
  uint32_t rot_offset = 0;   // floats into AppendHead::rot: the rotation in j-blocks of four,
                             // element (r, j) at rot_offset + ((j / 4) * d + r) * 4 + j % 4,
                             // zero for j >= d (d rounded up to 4)
  uint32_t cb_offset = 0;    // floats into cent (2^bits centroids) and bnd (2^bits - 1 boundaries)
};

// One (layer, KV head): where its pages live (PageLayout) and, for a quantized layer, its
// quantizers. Built once per cache.
struct AppendHead {
  bool fp16 = false;        // a layer the plan keeps at 16 bits: no quantizers, no scales
  uint8_t* pool = nullptr;  // region base: page p at pool + p * page_bytes
  uint64_t page_bytes = 0;
  uint32_t k_scales = 0, v_codes = 0, v_scales = 0;  // PageLayout offsets (k_codes = 0)
  uint32_t k_code_bytes = 0, n_k_groups = 0, v_code_bytes = 0;  // fp16 layer: 2D, 0, 2D
  AppendGroup k[kAppendMaxGroups];
  AppendGroup v;
  const uint32_t* slot_dim = nullptr;  // D: hp slot -> original dim (K)
  const float* rot = nullptr;
  const float* cent = nullptr;
  const float* bnd = nullptr;
  uint32_t n_cb = 0;  // floats in cent (and in bnd): sum over its groups of 2^bits
};

// One sequence of the call (entries in input order; their rows follow each other).
struct AppendEntry {
  uint32_t first_row = 0, n_rows = 0;  // its rows of k and v
  uint32_t len0 = 0;                   // tokens held before the call (its first row is token len0)
  uint32_t qend1 = 0;                  // tokens [S, qend1) are packed after the call
  uint16_t* fp16 = nullptr;            // its fp16 block (S + W > 0), existing or new
};

// One packed (token) of the call, in the order of AppendPlan::packed.
struct AppendToken {
  static constexpr uint32_t kFromRing = ~0u;
  uint32_t entry = 0, t = 0;  // sequence entry and position
  uint32_t page = 0, row = 0; // where it goes (the page after copy-on-write)
  uint32_t src = 0;           // its input row, or kFromRing (a token leaving the fp16 window)
};

// Device state of the single-launch append (append_step): the call's error word and how many
// of its blocks have finished. One per cache; the block that finishes last resets it for the
// next call.
struct AppendStepState {
  unsigned long long error = ~0ull;  // AppendError::kNone between calls
  uint32_t arrived = 0;
  uint32_t pad = 0;
};

// Copy-on-write of one page: rows [0, rows[l]) of every array of every head of layer l.
struct AppendCopy {
  uint32_t from = 0, to = 0;
  uint32_t rows_first = 0;  // index of its n_layers row counts in AppendParams::copy_rows
};

// One 32-bit word of device bookkeeping to set (lengths, page-table entries, offsets).
struct WordWrite {
  uint32_t* dst = nullptr;
  uint32_t value = 0;
};

struct AppendParams {
  uint32_t n_layers = 0, n_heads = 0, head_dim = 0;
  uint32_t sink = 0, window = 0;     // S, W
  uint32_t layer = 0;
  bool fp16_layer = false;
  uint32_t dtype = 0;                // kvbits::DType: 0 fp32, 1 fp16, 2 bf16
  const void* k = nullptr;           // device [rows][n_heads][D]
  const void* v = nullptr;
  uint32_t rows = 0;
  uint32_t n_entries = 0, n_tokens = 0;
  const AppendEntry* entries = nullptr;
  const AppendToken* tokens = nullptr;
  const AppendHead* heads = nullptr;  // device [n_layers * n_heads]; this layer's at layer * n_heads
  uint32_t max_cb = 0;                // host: the largest AppendHead::n_cb of this layer
  // Staging: one slot per (packed token p, head h), item = p * n_heads + h.
  uint8_t* stage_codes = nullptr;     // [items][code_stride]: K codes then V codes (fp16 layer: K then V fp16 rows)
  uint16_t* stage_scales = nullptr;   // [items][scale_stride]: K scales then the V scale
  uint32_t code_stride = 0, scale_stride = 0;
  unsigned long long* error = nullptr;  // device word, ~0 = no error
  bool force_exact = false;             // tests: take the exact fp64 path for every coordinate
  // Commit.
  const AppendCopy* copies = nullptr;
  uint32_t n_copies = 0;
  const uint32_t* copy_rows = nullptr;  // n_copies * n_layers
  const WordWrite* words = nullptr;
  uint32_t n_words = 0;
  // Single-launch path (append_step): its state, and whether the call may change the cache
  // (false when the pages do not fit: the launch then only checks, for the error order).
  AppendStepState* step = nullptr;
  bool commit = true;
  // Where the single launch's last block writes the call's outcome: the error word, then 1 in
  // `outcome_ready` (page-locked host memory, so the host waits without a copy and a sync).
  unsigned long long* outcome = nullptr;
  uint32_t* outcome_ready = nullptr;
};

// The error word: the smallest key over every problem found, which is the problem the CPU
// backend reports first (value problems by row, head, K before V, dim; then scale overflows
// by packed item, V before K within an item, as its message does).
struct AppendError {
  static constexpr unsigned long long kNone = ~0ull;
  static constexpr unsigned long long kScaleBase = 1ull << 62;
  enum Kind : uint32_t { non_finite = 0, fp16_range = 1 };
  // value key: ((((row * H + head) * 2 + tensor) * D + dim) * 2 + kind
  static unsigned long long value_key(uint64_t row, uint32_t head, uint32_t tensor, uint32_t dim, uint32_t kind,
                                      uint32_t H, uint32_t D) {
    return (((row * H + head) * 2 + tensor) * D + dim) * 2 + kind;
  }
  // scale key: kScaleBase + item * 2 + (V ? 0 : 1)
};

// Tokens per encode block (1, 4 or 16) for a call: by its size, capped by head_dim.
uint32_t append_tokens_per_block(const AppendParams& p);

// Sets the error word to kNone, then enqueues the check-and-encode launch on `stream`.
// Error(device_error) on a launch failure.
void append_encode(const AppendParams& p, void* stream);
// Enqueues the commit launches (the copies' only when there are copies).
void append_commit(const AppendParams& p, void* stream);

// The single-launch append (append_step.cu) for small calls such as a decode step: check,
// encode straight into the page rows, and, in the block that finishes last, either the fp16
// rows and bookkeeping words (no error) or zeroing the rows written (error: they were zero,
// docs/cache-layout.md §10), then the outcome to p.outcome. Applies to quantized layers
// with head_dim <= 128, calls of at most kAppendStepMaxTokens packed tokens and no
// copy-on-write copies.
constexpr uint32_t kAppendStepMaxTokens = 64;
bool append_step_applies(const AppendParams& p);

// A small call's descriptors, passed to the single launch as one kernel parameter (6 KB) when
// they fit: nothing is uploaded before the launch, and a block's first loads depend on nothing
// in memory. The kernel then reads these in place of p.tokens, p.entries, p.words and this
// layer's p.heads.
struct AppendStepInline {
  static constexpr uint32_t kTokens = 32, kHeads = 8, kEntries = 32, kWords = 160;
  AppendToken tokens[kTokens];
  AppendHead heads[kHeads];
  AppendEntry entries[kEntries];
  WordWrite words[kWords];
};
// `in` may be null (the kernel then reads p.tokens and p.heads).
void append_step(const AppendParams& p, const AppendStepInline* in, void* stream);

}  // namespace kvbits::cuda
