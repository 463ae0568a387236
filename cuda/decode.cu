// Host side of the fused decode attention (docs/gpu-decode.md): validation, the launch plan
// (kernel, split counts, shared memory) and the decode + merge launches. The kernels live in
// decode_scalar.cu (first version), decode_mma.cu (tensor cores, fp32-grade), decode_fast.cu
// (tensor cores, fp16 operands), decode_fp16_layer.cu and decode_merge.cu.
//
// Byte floor: every packed byte of the batch is read exactly once, i.e.
//   sum over (sequence, KV head) of len * (k_code_bytes + 2 * n_k_groups + v_code_bytes + 2)
// (≈ 112 B per token and head at Block-GTQ K3V3, D = 128), plus 4 D bytes per fp16 token, q, the
// page table and the head tables (small), plus the split partials (n_q * splits * (D + 2) * 4 B
// written and read once). At long contexts the time floor is that over the copy bandwidth.
#include "cuda/decode.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/decode.cuh"
#include "cuda/decode_kernels.hpp"
#include "cuda/decode_mma.cuh"
#include "cuda/decode_plain.cuh"
#include "kvbits/status.hpp"

namespace kvbits::cuda {

namespace decode_detail {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace decode_detail

using namespace decode_detail;

namespace {

constexpr uint32_t kScalarStepRows = 128;  // a step of the scalar and fp16-layer kernels
constexpr uint32_t kMmaUnitRows = 4 * kSubRows;  // a quad of sub-tiles, one per warp

struct Device {
  int sms = 0, optin = 0, major = 0;
};

Device device(const DecodeParams& p) {
  Device d;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  d.sms = p.sm_count;
  if (d.sms <= 0) check(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SMs)");
  check(cudaDeviceGetAttribute(&d.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute(smem)");
  check(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute(cc)");
  return d;
}

uint32_t gq_bucket(uint32_t gqa) { return gqa <= 1 ? 1 : gqa <= 2 ? 2 : gqa <= 4 ? 4 : gqa <= 8 ? 8 : 16; }

bool mma_serves(uint32_t D, uint32_t gqa) {
  return (D == 64 || D == 128 || D == 256) && gqa <= kDecodeMaxGqa && !(D == 256 && gqa > 8);
}

// The fp16-operand kernel also needs V pair tables (V codes of at most kFastPairMaxBits bits).
bool fast_serves(const DecodeParams& p, uint32_t D, uint32_t gqa) {
  if (!mma_serves(D, gqa)) return false;
  for (uint32_t h = 0; h < p.n_kv_heads; ++h)
    if (p.heads_host[h].v_bits > kFastPairMaxBits) return false;
  return true;
}

// The V width shared by every head of the layer when it is 2..4 bits (the fast kernel has a
// variant compiled for each), else 0.
uint32_t fixed_v_bits(const DecodeParams& p) {
  const uint32_t vb = p.n_kv_heads > 0 ? p.heads_host[0].v_bits : 0;
  for (uint32_t h = 1; h < p.n_kv_heads; ++h)
    if (p.heads_host[h].v_bits != vb) return 0;
  return vb >= 2 && vb <= 4 ? vb : 0;
}

const char* variant_name(uint32_t v) { return v == kDecodeVariantFast ? "fast" : "tensor-core"; }

// What decode_attention launches; everything here depends only on the shape fields, the head
// layouts, max_len, splits, variant and the device.
struct LaunchPlan {
  uint32_t variant = 0;  // 0: fp16 layer, else kDecodeVariantScalar / Mma / Fast
  uint32_t gq = 1, nt = 1, md = 0, vb = 0;  // vb: the fast kernel's compile-time V width (0: per head)
  uint32_t packed_splits = 1, fp16_splits = 0, fp16_chunk = 0;
  uint32_t smem = 0, stage_stride = 0, stages = 0, mma_chunks = 0, lut_words = 0;
  bool pdl = false;  // programmatic dependent launch (sm_90+)
  uint32_t sms = 0;
};

uint32_t ceil_div(uint64_t a, uint64_t b) { return uint32_t((a + b - 1) / b); }

// Splits per (sequence, KV head) for `slots` CTAs, at most one per work unit of `unit_rows`
// rows. round_up: at least `slots` CTAs (more than resident, for the latency-bound scalar
// kernel); else at most `slots`, so that every CTA of the launch is resident in one wave.
uint32_t split_count(const DecodeParams& p, uint64_t slots, uint32_t unit_rows, bool round_up) {
  const uint32_t units = std::max(1u, ceil_div(p.max_len, unit_rows));
  if (p.splits != 0) return std::min(p.splits, kMaxPackedSplits);
  const uint64_t pairs = uint64_t(std::max(1u, p.n_seqs)) * std::max(1u, p.n_kv_heads);
  const uint64_t want = round_up ? (slots + pairs - 1) / pairs : slots / pairs;
  return uint32_t(std::max<uint64_t>(1, std::min<uint64_t>({want, units, kMaxPackedSplits})));
}

uint32_t max_sub_tile_bytes(const DecodeParams& p) {
  uint32_t m = 0;
  for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
    const DecodeHead& hd = p.heads_host[h];
    m = std::max(m, sub_tile_layout(p.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes).bytes);
  }
  return m;
}

LaunchPlan plan_launch(const DecodeParams& p) {
  if (!p.heads_host) fail(StatusCode::null_pointer, "decode_attention: heads_host is null");
  if (p.variant > kDecodeVariantFast)
    fail(StatusCode::invalid_argument,
         "decode_attention: variant must be 0 (auto), 1 (scalar), 2 (mma) or 3 (fast)");
  const uint32_t D = p.head_dim, gqa = p.n_q_heads / std::max(1u, p.n_kv_heads);
  const Device dev = device(p);
  LaunchPlan lp;
  lp.pdl = dev.major >= 9;
  lp.sms = uint32_t(dev.sms);
  const uint64_t fp16_rows = uint64_t(p.sink_tokens) + p.window_tokens;
  if (fp16_rows > 0) {
    lp.fp16_splits = std::min<uint32_t>(ceil_div(fp16_rows, kFp16SplitRows), kMaxFp16Splits);
    lp.fp16_chunk = ceil_div(fp16_rows, lp.fp16_splits);
  }
  lp.gq = gq_bucket(gqa);
  const uint32_t static_smem = uint32_t(sizeof(DecodeHead)) + 64;
  if (p.fp16_layer) {
    lp.variant = 0;
    lp.smem = plain_smem_bytes(D, lp.gq);
    lp.packed_splits = split_count(p, 4ull * dev.sms, kScalarStepRows, true);
  } else {
    uint32_t v = p.variant;
    if ((v == kDecodeVariantMma || v == kDecodeVariantFast) && !mma_serves(D, gqa))
      fail(StatusCode::unsupported, std::string("decode_attention: the ") + variant_name(v) +
                                        " kernel serves head_dim 64/128/256 (GQA <= 8 at 256, <= 16 otherwise); got "
                                        "head_dim " + std::to_string(D) + ", GQA " + std::to_string(gqa));
    if (v == kDecodeVariantFast && !fast_serves(p, D, gqa))
      fail(StatusCode::unsupported, "decode_attention: the fast kernel serves V codes of at most " +
                                        std::to_string(kFastPairMaxBits) + " bits");
    const uint32_t sub_max = max_sub_tile_bytes(p);
    uint32_t chunks = 0, fchunks = 0, lut_words = 0;
    for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
      chunks = std::max(chunks, mma_chunks(p.heads_host[h]));
      fchunks = std::max(fchunks, fast_chunks(p.heads_host[h]));
      lut_words = std::max(lut_words, fast_lut_words(p.heads_host[h]));
    }
    const uint32_t mma_nt = gqa > 8 ? 2 : 1, mma_stride = mma_buffer_bytes(sub_max);
    const uint32_t mma_smem = mma_smem_plan(mma_stride, D, mma_nt, chunks).total;
    const uint32_t fast_smem = mma_smem_plan(mma_stride, D, mma_nt, fchunks, lut_words, kFastWarpStages).total;
    const bool mma_fits = mma_smem + static_smem + kMmaLutWords * 4 + 1024 <= uint32_t(dev.optin);
    const bool fast_fits = fast_smem + static_smem + 1024 <= uint32_t(dev.optin);
    if ((v == kDecodeVariantMma && !mma_fits) || (v == kDecodeVariantFast && !fast_fits))
      fail(StatusCode::unsupported, std::string("decode_attention: the ") + variant_name(v) + " kernel needs " +
                                        std::to_string(v == kDecodeVariantFast ? fast_smem : mma_smem) +
                                        " bytes of shared memory per block, the device allows " +
                                        std::to_string(dev.optin));
    if (v == kDecodeVariantAuto)
      v = !p.fp32_products && fast_serves(p, D, gqa) && fast_fits ? kDecodeVariantFast
          : mma_serves(D, gqa) && mma_fits    ? kDecodeVariantMma
                                              : kDecodeVariantScalar;
    lp.variant = v;
    if (v == kDecodeVariantMma || v == kDecodeVariantFast) {
      const bool fast = v == kDecodeVariantFast;
      lp.nt = mma_nt;
      lp.md = D / 16;
      lp.mma_chunks = fast ? fchunks : chunks;
      lp.lut_words = fast ? lut_words : 0;
      lp.stage_stride = mma_stride;
      lp.smem = fast ? fast_smem : mma_smem;
      if (fast) lp.vb = fixed_v_bits(p);
      const int per_sm = std::max(
          1, fast ? fast_ctas_per_sm(lp.nt, lp.md, lp.vb, lp.smem) : mma_ctas_per_sm(lp.nt, lp.md, lp.smem));
      lp.packed_splits = split_count(p, uint64_t(per_sm) * dev.sms, kMmaUnitRows, false);
    } else {
      uint32_t stages = 3;
      auto total = [&](uint32_t s) {
        return std::max(smem_plan(2 * sub_max, s, D, lp.gq).total, plain_smem_bytes(D, lp.gq));
      };
      while (stages > 2 && total(stages) + static_smem > uint32_t(dev.optin)) --stages;
      lp.stages = stages;
      lp.stage_stride = 2 * sub_max;
      lp.smem = total(stages);
      // Four CTAs per SM: the scalar kernel is bound by shared-memory and FMA latency at 4 warps
      // per CTA, so it needs several CTAs per SM.
      lp.packed_splits = split_count(p, 4ull * dev.sms, kScalarStepRows, true);
    }
  }
  if (lp.smem + static_smem > uint32_t(dev.optin))
    fail(StatusCode::unsupported, "decode_attention: needs " + std::to_string(lp.smem) +
                                      " bytes of shared memory per block, the device allows " + std::to_string(dev.optin));
  return lp;
}

std::string head_name(uint32_t h) { return "decode_attention: KV head " + std::to_string(h) + ": "; }

void validate_quantized_head(const DecodeParams& p, uint32_t h) {
  const DecodeHead& hd = p.heads_host[h];
  const uint32_t D = p.head_dim, P = p.page_size;
  if (!hd.pool || !hd.v_rotation) fail(StatusCode::null_pointer, head_name(h) + "null pool or V rotation");
  if (p.q && (!hd.k_rotation || !hd.k_slot_dim))
    fail(StatusCode::null_pointer, head_name(h) + "unrotated queries need k_rotation and k_slot_dim");
  if (hd.n_k_groups == 0 || hd.n_k_groups > kDecodeMaxGroups)
    fail(StatusCode::invalid_argument, head_name(h) + "1..8 K groups");
  uint32_t slot = 0, bytes = 0;
  for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
    const DecodeGroup& gr = hd.k_groups[g];
    if (gr.bits < 1 || gr.bits > 8 || gr.dims == 0 || gr.dims % 2 != 0 || gr.first_slot != slot ||
        gr.byte_offset != bytes || gr.centroid_offset + (1u << gr.bits) > hd.n_centroids ||
        (g > 0 && gr.bits <= hd.k_groups[g - 1].bits))
      fail(StatusCode::invalid_argument, head_name(h) + "bad K group " + std::to_string(g));
    slot += gr.dims;
    bytes += (gr.dims * gr.bits + 7) / 8;
  }
  if (slot != D || bytes != hd.k_code_bytes)
    fail(StatusCode::invalid_argument, head_name(h) + "K groups do not cover head_dim / k_code_bytes");
  if (hd.v_bits < 1 || hd.v_bits > 8 || hd.v_code_bytes != (D * hd.v_bits + 7) / 8 ||
      hd.v_centroid_offset + (1u << hd.v_bits) > hd.n_centroids || hd.n_centroids > kDecodeMaxCentroids)
    fail(StatusCode::invalid_argument, head_name(h) + "bad V description or centroid table");
  // The page layout of docs/cache-layout.md §10.2: 16-byte reads rounded past an array's
  // last row then stay inside the page.
  const size_t k_scales = round16(P * hd.k_code_bytes);
  const size_t v_codes = round16(uint32_t(k_scales) + 2 * P * hd.n_k_groups);
  const size_t v_scales = round16(uint32_t(v_codes) + P * hd.v_code_bytes);
  if (hd.k_scales != k_scales || hd.v_codes != v_codes || hd.v_scales != v_scales ||
      hd.page_bytes < round16(uint32_t(v_scales) + 2 * P) || hd.page_bytes % 16 != 0)
    fail(StatusCode::invalid_argument, head_name(h) + "page layout differs from docs/cache-layout.md");
}

void validate_fp16_head(const DecodeParams& p, uint32_t h) {
  const DecodeHead& hd = p.heads_host[h];
  const uint32_t D = p.head_dim, P = p.page_size;
  if (!hd.pool) fail(StatusCode::null_pointer, head_name(h) + "null pool");
  const size_t k_scales = round16(2 * P * D), v_scales = round16(uint32_t(k_scales) + 2 * P * D);
  if (hd.n_k_groups != 0 || hd.k_scales != k_scales || hd.v_codes != k_scales || hd.v_scales != v_scales ||
      hd.page_bytes < v_scales || hd.page_bytes % 16 != 0)
    fail(StatusCode::invalid_argument, head_name(h) + "fp16 page layout differs from docs/cache-layout.md");
}

void validate(const DecodeParams& p) {
  if (p.n_q_heads == 0 || p.n_kv_heads == 0 || p.n_q_heads % p.n_kv_heads != 0)
    fail(StatusCode::invalid_argument, "decode_attention: n_q_heads must be a positive multiple of n_kv_heads");
  if (p.n_q_heads / p.n_kv_heads > kDecodeMaxGqa)
    fail(StatusCode::unsupported, "decode_attention: more than 16 query heads per KV head");
  if (p.head_dim == 0 || p.head_dim % 8 != 0)
    fail(StatusCode::invalid_argument, "decode_attention: head_dim must be a positive multiple of 8");
  if (p.head_dim > kDecodeMaxHeadDim) fail(StatusCode::unsupported, "decode_attention: head_dim > 256");
  const uint32_t P = p.page_size;
  if (P == 0 || (P < kSubRows ? kSubRows % P != 0 : P % kSubRows != 0))
    fail(StatusCode::unsupported, "decode_attention: page_size must divide 64 or be a multiple of 64");
  if (p.n_seqs > 65535 || p.n_kv_heads > 65535)
    fail(StatusCode::unsupported, "decode_attention: more than 65535 sequences or KV heads in one launch");
  if (!std::isfinite(p.scale) || p.scale < 0.0f)
    fail(StatusCode::invalid_argument, "decode_attention: scale must be finite and >= 0");
  if (p.variant > kDecodeVariantFast)
    fail(StatusCode::invalid_argument,
         "decode_attention: variant must be 0 (auto), 1 (scalar), 2 (mma) or 3 (fast)");
  if (p.q && p.q_dtype > 2)
    fail(StatusCode::invalid_argument, "decode_attention: q_dtype must be 0 (f32), 1 (f16) or 2 (bf16)");
  if (!p.heads || !p.heads_host || !p.page_table || !p.table_offset || !p.seq_len || !p.out || !p.workspace ||
      (!p.q && !p.q_rot) || (!p.fp16_layer && !p.centroids))
    fail(StatusCode::null_pointer, "decode_attention: a required pointer is null");
  const bool fp16_tokens = uint64_t(p.sink_tokens) + p.window_tokens > 0;
  if ((fp16_tokens || p.fp16_layer) && !p.q)
    fail(StatusCode::null_pointer,
         "decode_attention: fp16 tokens (sink, window or an fp16 layer) are dotted with the unrotated queries: q is "
         "required (q_rot alone cannot serve them)");
  if (fp16_tokens && (!p.seq_qend || !p.fp16_blocks))
    fail(StatusCode::null_pointer, "decode_attention: sink/window tokens need seq_qend and fp16_blocks");
  for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
    if (p.fp16_layer) validate_fp16_head(p, h);
    else validate_quantized_head(p, h);
  }
}

}  // namespace

uint32_t decode_splits(const DecodeParams& p) { return plan_launch(p).packed_splits; }

uint32_t decode_fp16_splits(const DecodeParams& p) {
  const uint64_t rows = uint64_t(p.sink_tokens) + p.window_tokens;
  return rows == 0 ? 0u : std::min<uint32_t>(ceil_div(rows, kFp16SplitRows), kMaxFp16Splits);
}

uint32_t decode_variant(const DecodeParams& p) { return plan_launch(p).variant; }

namespace {

// Byte offsets of the workspace's parts: split accumulators, (max, sum) pairs, and for the fast
// kernel its centroid tables and prepared blocks.
struct WorkspaceLayout {
  size_t ml, lut, prep, total;
};

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

WorkspaceLayout workspace_layout(const DecodeParams& p, const LaunchPlan& lp) {
  const size_t rows = size_t(p.n_seqs) * p.n_q_heads * (lp.packed_splits + lp.fp16_splits);
  WorkspaceLayout w{};
  w.ml = align256(rows * p.head_dim * 4);
  w.lut = w.ml + rows * 2 * 4;
  w.prep = w.lut;
  w.total = w.lut;
  if (lp.variant == kDecodeVariantFast) {
    w.lut = align256(w.lut);
    w.prep = align256(w.lut + size_t(p.n_kv_heads) * lp.lut_words * 4);
    w.total = w.prep + size_t(p.n_seqs) * p.n_kv_heads * fast_prep_words(lp.mma_chunks, lp.nt) * 4;
  }
  return w;
}

}  // namespace

size_t decode_workspace_bytes(const DecodeParams& p) { return workspace_layout(p, plan_launch(p)).total; }

void decode_attention(const DecodeParams& p, void* stream_ptr) {
  if (p.n_seqs == 0) return;
  validate(p);
  const LaunchPlan lp = plan_launch(p);
  const uint32_t D = p.head_dim;
  KernelArgs a{};
  a.heads = p.heads, a.centroids = p.centroids, a.page_table = p.page_table, a.table_offset = p.table_offset;
  a.seq_len = p.seq_len, a.seq_qend = p.seq_qend, a.fp16_blocks = p.fp16_blocks;
  a.q_rot = p.q ? nullptr : p.q_rot, a.q = p.q, a.q_dtype = p.q_dtype;
  a.out = p.out, a.lse = p.lse;
  a.scale = p.scale > 0.0f ? p.scale : float(1.0 / std::sqrt(double(D)));
  a.n_q = p.n_q_heads, a.n_kv = p.n_kv_heads, a.gqa = p.n_q_heads / p.n_kv_heads, a.D = D, a.page_size = p.page_size;
  a.sink = p.sink_tokens, a.window = p.window_tokens;
  a.packed_splits = lp.packed_splits, a.splits = lp.packed_splits + lp.fp16_splits, a.fp16_chunk = lp.fp16_chunk;
  a.fp16_layer = p.fp16_layer ? 1u : 0u;
  a.stage_stride = lp.stage_stride, a.stages = lp.stages, a.mma_chunks = lp.mma_chunks, a.lut_words = lp.lut_words;
  const WorkspaceLayout wl = workspace_layout(p, lp);
  uint8_t* ws = static_cast<uint8_t*>(p.workspace);
  a.ws_acc = reinterpret_cast<float*>(ws);
  a.ws_ml = reinterpret_cast<float*>(ws + wl.ml);
  a.ws_lut = reinterpret_cast<uint32_t*>(ws + wl.lut);
  a.ws_prep = reinterpret_cast<uint32_t*>(ws + wl.prep);
  a.prep_words = lp.variant == kDecodeVariantFast ? fast_prep_words(lp.mma_chunks, lp.nt) : 0;
  a.pdl = lp.pdl ? 1u : 0u;
  // Few rows (at most two per SM): a wide merge CTA per row; many rows: small ones, many per SM.
  a.merge_wide = uint64_t(p.n_seqs) * p.n_q_heads <= 2ull * lp.sms ? 1u : 0u;
  // The fast kernel starts early (its first sub-tile loads overlap the prep launch) only when the
  // prep grid is small: many early blocks land unevenly on the SMs (measured 25 % slower at
  // Llama-3.1-8B 32 x 32K).
  a.pdl_decode = lp.pdl && lp.variant == kDecodeVariantFast && uint64_t(p.n_seqs + 1) * p.n_kv_heads <= 16 ? 1u : 0u;

  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (lp.variant == 0) launch_decode_fp16_layer(a, lp.gq, p.n_kv_heads, p.n_seqs, lp.smem, stream);
  else if (lp.variant == kDecodeVariantMma) launch_decode_mma(a, lp.nt, lp.md, p.n_kv_heads, p.n_seqs, lp.smem, stream);
  else if (lp.variant == kDecodeVariantFast) {
    launch_decode_fast_prep(a, lp.nt, p.n_kv_heads, p.n_seqs, stream);
    launch_decode_fast(a, lp.nt, lp.md, lp.vb, p.n_kv_heads, p.n_seqs, lp.smem, stream);
  }
  else launch_decode_scalar(a, lp.gq, p.n_kv_heads, p.n_seqs, lp.smem, stream);
  launch_merge(a, p.n_seqs, stream);
}

}  // namespace kvbits::cuda
