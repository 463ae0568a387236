// kvbits CUDA — fused decode attention on the packed paged cache, one layer per launch.
//
// One decode launch covers every sequence and every KV head of a layer (grid: split x KV head x
// sequence); a second launch merges the splits (log-sum-exp) and un-rotates V. Host launchers
// take raw device pointers and plain structs; they never synchronise or allocate, so both
// launches can be captured in a CUDA graph. The caller owns the workspace
// (decode_workspace_bytes).
//
// Served: packed tokens, fp16 sink and recent-window tokens (extra splits that dot them with the
// unrotated q and accumulate V in the original basis), layers kept at 16 bits, and queries given
// either rotated (q_rot) or as the model produces them (q, rotated inside the decode launch).
// Two kernels compute the packed splits (DecodeParams::variant, docs/gpu-decode.md).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits::cuda {

constexpr uint32_t kDecodeMaxGroups = 8;    // at most one K group per width 1..8
constexpr uint32_t kDecodeMaxHeadDim = 256;
constexpr uint32_t kDecodeMaxGqa = 16;      // query heads per KV head
constexpr uint32_t kDecodeMaxCentroids = 768;  // per head: K groups (<= 510) + V (<= 256)

// One K bit-width group of a head (docs/cache-layout.md §1, §5).
struct DecodeGroup {
  uint32_t bits = 0;             // 1..8
  uint32_t first_slot = 0;       // first hp slot
  uint32_t dims = 0;             // even
  uint32_t byte_offset = 0;      // of the group's codes inside the K row
  uint32_t centroid_offset = 0;  // of its 2^bits centroids, relative to the head's centroid_base
};

// One KV head of the layer: where its pages live and how its rows are packed. Read at run time
// by the kernel (no compiled variant per head layout). In an fp16 layer only pool, page_bytes
// and the PageLayout offsets are used (k_scales = v_codes = align16(2 P D), v_scales =
// align16(v_codes + 2 P D)); n_k_groups is 0 and there are no tables.
struct DecodeHead {
  const uint8_t* pool = nullptr;  // device: page id p at pool + p * page_bytes (16-byte aligned)
  uint64_t page_bytes = 0;        // PageLayout::page_bytes (multiple of 64)
  uint32_t k_scales = 0, v_codes = 0, v_scales = 0;  // PageLayout offsets; k_codes must be 0
  uint32_t k_code_bytes = 0, n_k_groups = 0, v_code_bytes = 0;
  DecodeGroup k_groups[kDecodeMaxGroups];
  uint32_t v_bits = 0;
  uint32_t v_centroid_offset = 0;  // relative to centroid_base
  uint32_t centroid_base = 0;      // index into DecodeParams::centroids
  uint32_t n_centroids = 0;        // this head's table length (<= kDecodeMaxCentroids)
  const float* v_rotation = nullptr;  // device: R_v, D x D row-major fp32, 16-byte aligned
  // For unrotated queries (DecodeParams::q): the K rotations R_g back to back in group order,
  // each dims x dims row-major fp32 (group g at offset sum_{h<g} dims_h^2), and the hp slot ->
  // original dim map (D entries). Unused (may be null) when q_rot is given or in an fp16 layer.
  // k_rotation must be 8-byte aligned (rows are read as float pairs).
  const float* k_rotation = nullptr;
  const uint16_t* k_slot_dim = nullptr;
};

// Kernels for the packed splits of a quantized layer (DecodeParams::variant).
constexpr uint32_t kDecodeVariantAuto = 0;    // the fastest kernel that serves the layer: fast, else mma, else scalar
constexpr uint32_t kDecodeVariantScalar = 1;  // first version: fp32 FMAs, any D (multiple of 8)
constexpr uint32_t kDecodeVariantMma = 2;     // tensor cores (mma.sync f16, hi/lo split): D 64/128/256, fp32-grade
constexpr uint32_t kDecodeVariantFast = 3;    // tensor cores, fp16 operands (an fp16 kernel's precision): D 64/128/256,
                                              // V codes <= 5 bits

struct DecodeParams {
  uint32_t n_seqs = 0, n_q_heads = 0, n_kv_heads = 0, head_dim = 0;
  uint32_t page_size = 64;     // must divide 64 or be a multiple of 64
  // fp16 tokens (cache.hpp): S sink tokens and a W-token recent ring per (sequence, layer).
  // Token t of sequence s: t < S sink row t; S <= t < seq_qend[s] packed page row
  // (t - S) % page_size of page_table[table_offset[s] + (t - S) / page_size];
  // seq_qend[s] <= t < seq_len[s] ring row (t - S) % W.
  uint32_t sink_tokens = 0, window_tokens = 0;  // S, W (the fp16 block geometry)
  const uint32_t* seq_qend = nullptr;  // device [n_seqs]; null: every token is packed (S = W = 0)
  // device [n_seqs]: the (sequence, layer) fp16 block, SeqLayerView layout (n_kv_heads = H):
  // K sink [H][S][D], V sink [H][S][D], K ring [H][W][D], V ring [H][W][D], fp16 bits.
  // Null when S + W == 0; an entry may be null only for a sequence with no fp16 token. Blocks
  // are read in 16-byte vectors: 16-byte aligned (as cudaMalloc gives).
  const uint16_t* const* fp16_blocks = nullptr;
  // A layer the plan keeps at 16 bits: page rows hold fp16 K [D] at k_codes (offset 0) and
  // fp16 V [D] at v_codes; heads carry no groups or tables.
  bool fp16_layer = false;
  const DecodeHead* heads = nullptr;       // device [n_kv_heads]
  const DecodeHead* heads_host = nullptr;  // host copy of the same, for launch planning
  const float* centroids = nullptr;        // device, every head's tables
  const uint32_t* page_table = nullptr;    // device, all sequences' page ids back to back
  const uint32_t* table_offset = nullptr;  // device [n_seqs]: first entry of sequence s
  const uint32_t* seq_len = nullptr;       // device [n_seqs]: tokens held (len)
  uint32_t max_len = 0;  // host: upper bound of seq_len; fixes the split count (graph-stable)
  const float* q_rot = nullptr;  // device [n_seqs][n_q_heads][D]: q' = R_g q per group, hp order
  // Alternatively the queries as the model gives them (device [n_seqs][n_q_heads][D], unrotated,
  // q_dtype 0 = fp32, 1 = fp16, 2 = bf16 as kvbits::DType): when set, the decode launch rotates
  // them itself (q_rot is then ignored). Needed for fp16 tokens, which are dotted with q itself.
  const void* q = nullptr;
  uint32_t q_dtype = 0;
  float scale = 0.0f;            // softmax scale; 0 = 1/sqrt(D)
  float* out = nullptr;          // device [n_seqs][n_q_heads][D] fp32
  float* lse = nullptr;          // device [n_seqs][n_q_heads] or null
  void* workspace = nullptr;     // device, decode_workspace_bytes(*this) bytes, 256-aligned
  uint32_t splits = 0;           // 0 = automatic (decode_splits); else forced (tests)
  int sm_count = 0;              // 0 = read from the current device
  uint32_t variant = kDecodeVariantAuto;  // kernel for the packed splits (quantized layers)
  bool fp32_products = false;  // kDecodeVariantAuto picks among the fp32-grade kernels only (mma, scalar)
};

// Packed splits per (sequence, KV head): enough CTAs to fill the GPU at batch 1, each at least
// one work unit of max_len (128 tokens for the scalar kernel, 256 for the tensor-core kernel).
// Depends only on the shape fields, the head layouts, max_len, splits, variant, sm_count and the
// device, so a captured graph stays valid while lengths change below max_len.
uint32_t decode_splits(const DecodeParams& p);
// Splits for the fp16 sink and window tokens per (sequence, KV head): 0 when S + W == 0, else
// ceil((S + W) / 128) (at most 1024); each takes a contiguous range of sink and ring rows.
uint32_t decode_fp16_splits(const DecodeParams& p);
// The kernel decode_attention runs for the packed splits (kDecodeVariantScalar, kDecodeVariantMma
// or kDecodeVariantFast; 0 for an fp16 layer, whose rows need none of them). Error as decode_attention.
uint32_t decode_variant(const DecodeParams& p);
// Workspace for the split partials, partials P = decode_splits + decode_fp16_splits:
// align256(n_seqs * n_q_heads * P * D * 4) + n_seqs * n_q_heads * P * 2 * 4 bytes
// (an un-normalised accumulator and a (max, sum) pair per split and query head).
size_t decode_workspace_bytes(const DecodeParams& p);

// Enqueues the decode and merge launches on `stream` (a cudaStream_t; null = default stream).
// Errors, all raised before anything is enqueued: null_pointer (a required pointer; q is
// required whenever fp16 tokens can exist: S + W > 0 or an fp16 layer), invalid_argument (shape
// fields, head descriptors, a bad page size, q_dtype, variant), unsupported (D > 256; GQA > 16;
// the tensor-core variant asked for a shape it does not serve; shared memory too small),
// device_error (launch). out and lse are fully written; a sequence with seq_len 0 gets out = 0
// and lse = -inf.
void decode_attention(const DecodeParams& p, void* stream);

}  // namespace kvbits::cuda
