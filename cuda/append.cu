// The fused append kernels (append.hpp); the design is in docs/gpu-append.md.
//
// append_encode, quantized layer: grid (token tiles x parts + check-only blocks, KV head), 256
// threads. A block takes TT packed tokens of one head: TT = 1 or 4 for decode steps, with a K
// block and a V block per tile (parts = 2: twice the blocks, half the rotation bytes each), and
// TT = 16 or 64 for prefill (one block does K and V, so that its row-pair tasks stay balanced).
// Phases (cuda/append_body.cuh), each followed by the block barrier:
//   0. the tokens, the head's matrices and codebooks;
//   1. K (gathered into hp slot order) and V of its tokens into shared memory as fp32, from the
//      input (checked: finite, and within fp16 range when held in fp16; rounded through fp16 when
//      there is a window) or from the fp16 ring (tokens leaving the window);
//   2. group norms as canonical sums (src/quant/canonical_sum.hpp: 32 lane chains + a 5-level
//      tree, one thread per (token, group)), and fp32(1/n) for the fast path;
//   3. codes: a fast fp32 dot per coordinate, then the decision below; an undecided coordinate
//      runs the canonical fp64 sum itself. Codes are therefore exactly the CPU encoder's, while
//      almost every coordinate costs fp32 work only;
//   4. scales from canonical sums of the squared centroids (an fp16 infinity is an error);
//   5. bit packing into the staging area, one thread per byte.
// Check-only blocks read the input rows that are not packed (sink and ring tokens).
//
// The fast decision. For coordinate r of a d-dim group, let s* be the canonical fp64 sum of the d
// exact products R[j] x_j, n the canonical norm, y* = fl64(s* / n) and c* = #{k : b_k < y*} the
// CPU's code (b_k the fp32 boundaries). The kernel has s, an fp32 sum of the same products (FMA
// chains; any association), and n.
//  (a) |s - s*| <= 1.0006 d 2^-24 n + d 2^-149 when 2^-60 <= n: both lie within gamma_d(2^-24)
//      resp. gamma_37(2^-53) times sum_j |R[j] x_j| of the exact sum (every term passes through
//      at most d, resp. ceil(d/32) + 5 roundings; an fp32 result in the subnormal range adds at
//      most 2^-150 per operation), and sum_j |R[j] x_j| <= ||R row|| ||x|| <= 1.0005 * 1.0000001 n
//      (plans keep every rotation row at squared norm 1 +- 1e-3; n is within 2^-46 of ||x||).
//  (b) q = fp32(1/n) (fp64 division, then rounded) and y = fp32(s * q) give
//      |y - s/n| <= |y| 2^-22.98 + 2^-149 for 2^-60 <= n <= 2^60 (q is then a normal fp32).
//  (c) |y* - s*/n| <= |s*/n| 2^-53.
//  So |y - y*| <= M(y) = E + |y| 2^-22.9 with E = 1.0009 d 2^-24 + 2^-78. If no boundary lies
//  within M(y) of y, every b_k < y is also < y* and every b_k >= y is > y*: c* = #{k : b_k < y}.
//  The kernel tests the two boundaries next to y with fp32 arithmetic against
//  fl32(fast_margin(d) + |y| 2^-22), fast_margin(d) = fl32(1.002 d 2^-24 + 2^-77); the slack
//  (1.002 vs 1.0009, 2^-22 vs 2^-22.9) covers the roundings of the test itself. Otherwise (a
//  boundary within the margin, n outside [2^-60, 2^60], a non-finite y) the thread computes s*
//  (canonical_sum_quads over the rotation row) and decides exactly as the CPU does. With d = 128
//  the margin is ~7.7e-6 in units of y, so a few coordinates in 10^4 take that path.
//
// The commit. Small calls (append_commit_fused) commit inside the encode launch: every block
// counts itself done (after a fence), and the one that finishes last reads the error word and,
// when it is clear, writes every staged row, fp16 row and bookkeeping word itself. Other calls
// get a commit launch (and a copy-on-write launch first when pages are shared) whose blocks all
// read the error word first. Either way nothing the cache shows changes when a check failed.
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/append.hpp"
#include "cuda/append_body.cuh"
#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

using namespace append_body;

// Tokens per block by call size (TT 1 and 4: a K and a V block per tile; 16 and 64: one block).
constexpr uint32_t kItemsForTT4 = 128;     // packed (token, head) items from which TT = 4 ...
constexpr uint32_t kTokensForTT16 = 64;    // ... packed tokens from which TT = 16 ...
constexpr uint32_t kTokensForTT64 = 512;   // ... and TT = 64
constexpr size_t kSmemBudget = 110 << 10;  // dynamic shared memory of one encode block (2 per SM)
constexpr uint64_t kFusedPieces = 4096;    // largest commit the last encode block does itself

template <int TT, int TB>
__global__ void __launch_bounds__(kThreads, TT >= 16 ? 2 : 1) encode_kernel(AppendParams p, EncodeGrid g) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ EncodeShared s;
  __shared__ AppendToken toks[TT];
  if (threadIdx.x == 0) {
    s.toks = toks;
    enc_bind(s, smem, TT, p.head_dim, p.max_cb);
  }
  __syncthreads();
  encode_block<TT, TB>(p, g, s, blockIdx.x, blockIdx.y, DeviceThreads{});
  if (!p.fused) return;
  // Every block's staged rows and error keys are visible before it counts itself done; the last
  // block sees them all.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s.last = atomicAdd(p.done, 1u) + 1 == gridDim.x * gridDim.y;
  __syncthreads();
  if (!s.last) return;
  __threadfence();
  commit_by_one_block(p, DeviceThreads{});
}

__global__ void __launch_bounds__(kThreads) copy_kernel(AppendParams p, uint64_t count) {
  if (!commit_allowed(p)) return;
  const uint64_t b = uint64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  if (b < count) copy_region(p, b, threadIdx.x, blockDim.x);
}

__global__ void __launch_bounds__(kThreads) commit_kernel(AppendParams p, CommitPieces c) {
  if (!commit_allowed(p)) return;
  const uint64_t i = (uint64_t(blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < c.total()) commit_store(commit_load(p, c, i));
}

// count blocks, spilling past the grid's x limit into y.
dim3 grid_of(uint64_t count) {
  const uint64_t x = count < 0x7FFFFFFFull ? count : 0x7FFFFFFFull, y = (count + x - 1) / x;
  if (y > 65535) fail(StatusCode::unsupported, "append: too much work for one commit launch");
  return dim3(unsigned(x), unsigned(y));
}

template <int TT, int TB>
void launch_encode(const AppendParams& p, cudaStream_t stream) {
  const EncodeGrid g = encode_grid(p, TT);
  const size_t smem = p.fp16_layer ? 16 : enc_smem_bytes(TT, p.head_dim, p.max_cb);
  // Raised once per size (never lowered); from 0, since without the attribute the dynamic limit
  // is 48 KiB minus the kernel's static shared memory.
  static std::atomic<size_t> raised{0};
  if (smem > raised.load()) {
    check_cuda(cudaFuncSetAttribute(encode_kernel<TT, TB>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "append: cudaFuncSetAttribute");
    raised.store(smem);
  }
  if (uint64_t(g.blocks_x()) > 0x7FFFFFFFull) fail(StatusCode::unsupported, "append: too many rows for one launch");
  encode_kernel<TT, TB><<<dim3(g.blocks_x(), p.n_heads), kThreads, smem, stream>>>(p, g);
  check_cuda(cudaGetLastError(), "append: encode launch");
}

}  // namespace

uint32_t append_tokens_per_block(const AppendParams& p) {
  const uint64_t items = uint64_t(p.n_tokens) * p.n_heads;
  uint32_t tt = p.n_tokens >= kTokensForTT64 ? 64 : p.n_tokens >= kTokensForTT16 ? 16 : items >= kItemsForTT4 ? 4 : 1;
  while (tt > 1 && enc_smem_bytes(tt, p.head_dim, p.max_cb) > kSmemBudget) tt = tt == 64 ? 16 : tt == 16 ? 4 : 1;
  return tt;
}

bool append_commit_fused(const AppendParams& p) {
  return p.commit && p.n_copies == 0 && (p.rows > 0 || p.n_tokens > 0) && commit_pieces(p).total() <= kFusedPieces;
}

void append_encode(const AppendParams& params, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (params.rows == 0 && params.n_tokens == 0) return;
  AppendParams p = params;
  p.fused = append_commit_fused(p);
  const uint32_t tt = append_tokens_per_block(p);
  if (tt == 64) launch_encode<64, 16>(p, stream);
  else if (tt == 16) launch_encode<16, 4>(p, stream);
  else if (tt == 4) launch_encode<4, 4>(p, stream);
  else launch_encode<1, 1>(p, stream);
}

void append_commit(const AppendParams& p, void* stream_ptr) {
  if (!p.commit || append_commit_fused(p)) return;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const uint64_t copies = uint64_t(p.n_copies) * p.n_layers * p.n_heads;
  if (copies > 0) {
    copy_kernel<<<grid_of(copies), kThreads, 0, stream>>>(p, copies);
    check_cuda(cudaGetLastError(), "append: copy-on-write launch");
  }
  const CommitPieces c = commit_pieces(p);
  if (c.total() == 0) return;
  commit_kernel<<<grid_of((c.total() + kThreads - 1) / kThreads), kThreads, 0, stream>>>(p, c);
  check_cuda(cudaGetLastError(), "append: commit launch");
}

}  // namespace kvbits::cuda
