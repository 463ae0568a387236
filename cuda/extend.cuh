// kvbits CUDA — shared-memory plan and warp-level helpers of the extend kernel (extend.cu).
#pragma once

#include <cstdint>

namespace kvbits::cuda::extend_detail {

constexpr uint32_t kThreads = 128;  // pre-pass and merge CTAs
// The attention CTA has NW = 4 or 8 warps and 16 query rows per warp (one m16 MMA tile).
__host__ __device__ constexpr uint32_t cta_rows(uint32_t nw) { return 16 * nw; }
constexpr uint32_t kTile = 64;      // tokens per tile (never crosses a page or a region)
constexpr uint32_t kRotCols = 64;   // output columns per chunk of the final V un-rotation
constexpr uint32_t kRotLd = kRotCols + 8;  // halves per staged R_v row (16-byte pad: no bank conflicts)
constexpr uint32_t kPrepRows = 32;  // query rows per CTA of the pre-pass
constexpr uint32_t kMaxSplits = 64;

__host__ __device__ constexpr uint32_t round16(uint32_t x) { return (x + 15u) & ~15u; }
// Halves per smem row of a Q / K / V tile: a 16-byte pad shifts consecutive rows by four banks,
// so the eight row addresses of one ldmatrix phase hit all 32 banks once.
__host__ __device__ constexpr uint32_t tile_ld(uint32_t dp) { return dp + 8; }
__host__ __device__ constexpr uint32_t tile_bytes(uint32_t dp) { return kTile * tile_ld(dp) * 2; }

// One 64-token tile of packed rows in shared memory (raw page bytes, as cp.async copies them):
// 64 / seg_rows segments (one per page when pages are shorter than 64 tokens), each array of a
// segment starting on 16 bytes, plus 16 bytes of pad for the two-word bit reader.
struct RawLayout {
  uint32_t seg_rows, seg_shift;
  uint32_t kc_seg, ks_seg, vc_seg, vs_seg;
  uint32_t off_ks, off_vc, off_vs;
  uint32_t bytes;
};

__host__ __device__ inline RawLayout raw_layout(uint32_t page_size, uint32_t kc, uint32_t n_groups, uint32_t vc) {
  RawLayout s{};
  s.seg_rows = page_size < kTile ? page_size : kTile;
  s.seg_shift = 0;
  while ((1u << s.seg_shift) < s.seg_rows) ++s.seg_shift;
  const uint32_t nseg = kTile >> s.seg_shift;
  s.kc_seg = round16(s.seg_rows * kc);
  s.ks_seg = round16(s.seg_rows * 2 * n_groups);
  s.vc_seg = round16(s.seg_rows * vc);
  s.vs_seg = round16(s.seg_rows * 2);
  s.off_ks = nseg * s.kc_seg;
  s.off_vc = s.off_ks + nseg * s.ks_seg;
  s.off_vs = s.off_vc + nseg * s.vc_seg;
  s.bytes = s.off_vs + nseg * s.vs_seg + 16;
  return s;
}

// Dynamic shared memory of one CTA (byte offsets). Q tile [rows][LD] at 0, the head's centroids, then the
// work region: packed page splits use K^, V^ (one tile each) and `raw_stages` raw tiles; fp16
// splits use two stages of (K, V) tiles filled straight from fp16 rows. After the token loop the
// whole block is reused to stage R_v (hi and lo halves) for the un-rotation.
struct SmemPlan {
  uint32_t q, cent, work, raw, raw_stride, raw_stages, total;
};

__host__ __device__ inline SmemPlan smem_plan(uint32_t dp, uint32_t rows, bool packed_pages, bool fp16_tiles,
                                              uint32_t raw_stride, uint32_t raw_stages) {
  SmemPlan p{};
  const uint32_t tb = tile_bytes(dp);
  p.q = 0;
  p.cent = rows * tile_ld(dp) * 2;
  p.work = p.cent + 768u * 4u;
  p.raw = p.work + 2 * tb;
  p.raw_stride = raw_stride;
  p.raw_stages = raw_stages;
  const uint32_t packed = packed_pages ? 2 * tb + raw_stages * raw_stride : 0u;
  const uint32_t fp16 = fp16_tiles ? 4 * tb : 0u;
  p.total = p.work + (packed > fp16 ? packed : fp16);
  const uint32_t rot = packed_pages ? 2 * dp * kRotLd * 2 : 0u;
  if (rot > p.total) p.total = rot;
  p.total = round16(p.total);
  return p;
}

#ifdef __CUDACC__

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 32 bits of an LSB-first bit stream in shared memory from stream bit `bit` (two aligned words
// and a funnel shift; the caller keeps one word of readable slack after its last code).
__device__ __forceinline__ uint32_t bits32(const uint32_t* words, uint32_t bit) {
  const uint32_t w = bit >> 5;
  return __funnelshift_r(words[w], words[w + 1], bit);  // shf.r.wrap: the shift is taken mod 32
}

// ldmatrix: four 8x8 b16 matrices; lane l gives the row address of matrix l / 8, row l % 8, and
// receives from matrix i the pair (row l / 4, cols 2 (l % 4) + {0, 1}) in r[i] (the transposed
// form: (rows 2 (l % 4) + {0, 1}, col l / 4)).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

// d += A (16x16 fp16, row-major fragments) * B (16x8 fp16, "col" fragments), fp32 accumulate.
// Fragments (g = lane / 4, t = lane % 4): A a[0] = (row g, k 2t..2t+1), a[1] = (g + 8, 2t..),
// a[2] = (g, 2t + 8..), a[3] = (g + 8, 2t + 8..); B b0 = (k 2t..2t+1, col g), b1 = (k 2t + 8..,
// col g); C/D d[0..1] = (row g, cols 2t, 2t + 1), d[2..3] = (row g + 8, same cols).
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one fp16x2 register (lo in the low half: the smaller column index).
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

#endif  // __CUDACC__

}  // namespace kvbits::cuda::extend_detail
