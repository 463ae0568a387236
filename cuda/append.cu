// The fused append kernels (append.hpp).
//
// append_encode, quantized layer: grid (token tile + check-only blocks, KV head), 256 threads.
// A block takes TT packed tokens of one head (TT = 1, 4 or 16 by call size and D) and
//   1. loads K and V of its tokens in input order (coalesced) into shared memory as fp32, K
//      placed at its hp slot, from the input (checked: finite, and within fp16 range when held
//      in fp16; rounded through fp16 when there is a window) or from the fp16 ring (tokens
//      leaving the window);
//   2. computes every group norm with the canonical fp64 chain (tq_mse.hpp), and the margins of
//      the fp32 test (append_body.cuh, fast_code32);
//   3. thread o owns output coordinate o (K slot or V row) for all TT tokens: a fast fp32 FMA
//      dot over the rotation row, then a rigorous test that decides whether the canonical
//      value can lie on another side of a codebook boundary (below); coordinates where it can
//      go to a list that the block's threads then take one each down the canonical fp64 chain.
//      Codes are therefore exactly the CPU encoder's, while almost every coordinate costs fp32
//      work only, and no warp waits on one lane's chain;
//   4. scales with the canonical fp64 chains (a scale that rounds to fp16 infinity is an
//      error), then packs codes into bytes (one thread per output byte) into the staging area.
// Check-only blocks read the input rows that are not packed (sink and ring tokens); without a
// sink and a window every row is packed and there are none.
//
// The fast path's bound. For a coordinate y = (sum_j R[j] x_j) / n over d terms, the fp32 FMA
// chain s and the canonical fp64 chain s* both lie within gamma_d * sum_j |R[j] x_j| of the
// exact sum (gamma_d = d u / (1 - d u), u = 2^-24 resp. 2^-53; plus up to 2^-126 per step when a
// partial sum is subnormal or flushed to zero), and sum_j |R[j] x_j| <= ||R row|| * ||x||
// <= 1.0005 n (plans keep every rotation row at squared norm 1 +- 1e-3). So s* lies in
// [s - B, s + B] with
// B = n * d * 2^-24 * 1.004 + d * 2^-125, and since fl(s* / n) is monotone in s*, the code of s*
// is the code of fl((s - B) / n) when no boundary lies in [fl((s - B) / n), fl((s + B) / n)).
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/append.hpp"
#include "cuda/append_body.cuh"
#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

using namespace append_body;

template <int TT>
__global__ void __launch_bounds__(kThreads, 4) encode_kernel(AppendParams p, uint32_t n_tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ EncodeBlock blk;
  __shared__ AppendToken toks[TT];
  EncodeShared s;
  enc_bind(s, &blk, toks, smem, TT, p.head_dim, p.max_cb);
  const uint32_t h = blockIdx.y, tid = threadIdx.x;
  if (blockIdx.x >= n_tiles) {
    check_rows(p, n_tiles, blockIdx.x, h, tid, kThreads);
    return;
  }
  const uint32_t tok0 = blockIdx.x * TT;
  const uint32_t nt = min(uint32_t(TT), p.n_tokens - tok0);
  enc_prologue(p, s, tok0, nt, h, tid, kThreads);
  __syncthreads();
  if (p.fp16_layer) {
    enc_fp16_rows(p, s, tok0, nt, h, tid, kThreads);
    return;
  }
  enc_tables(p, s, nt, h, tid, kThreads);
  __syncthreads();
  enc_load<TT>(p, s, nt, h, tid, kThreads);
  __syncthreads();
  enc_norms(p, s, nt, tid, kThreads);
  __syncthreads();
  enc_codes<TT>(p, s, nt, tid, kThreads);
  __syncthreads();
  enc_fallbacks(p, s, tid, kThreads);
  __syncthreads();
  enc_finish(p, s, tok0, nt, h, tid, kThreads);
}

// Blocks [first, first + count) of the commit grid (a launch covers either the copies or the rest).
__global__ void __launch_bounds__(kThreads) commit_kernel(AppendParams p, CommitGrid g, uint64_t first, uint64_t count) {
  const uint64_t b = uint64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  if (b < count) commit_block(p, g, first + b, threadIdx.x, kThreads);
}

void launch_commit(const AppendParams& p, const CommitGrid& g, uint64_t first, uint64_t count, cudaStream_t stream) {
  if (count == 0) return;
  // Blocks beyond the grid's x limit spill into y.
  const uint64_t x = count < 0x7FFFFFFFull ? count : 0x7FFFFFFFull, y = (count + x - 1) / x;
  if (y > 65535) fail(StatusCode::unsupported, "append: too much work for one commit launch");
  commit_kernel<<<dim3(unsigned(x), unsigned(y)), kThreads, 0, stream>>>(p, g, first, count);
  check_cuda(cudaGetLastError(), "append: commit launch");
}

template <int TT>
void launch_encode(const AppendParams& p, cudaStream_t stream) {
  const uint32_t n_tiles = (p.n_tokens + TT - 1) / TT;
  const uint32_t checks = check_blocks(p);
  const size_t smem = p.fp16_layer ? 0 : enc_smem_bytes(TT, p.head_dim, p.max_cb);
  // Raised once per size (never lowered); from 0, since without the attribute the dynamic limit
  // is 48 KiB minus the kernel's static shared memory.
  static std::atomic<size_t> raised{0};
  if (smem > raised.load()) {
    check_cuda(cudaFuncSetAttribute(encode_kernel<TT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "append: cudaFuncSetAttribute");
    // Two thirds of the SM memory as shared memory: room for four blocks, and L1 keeps the rotations.
    check_cuda(cudaFuncSetAttribute(encode_kernel<TT>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    66),
               "append: cudaFuncSetAttribute");
    raised.store(smem);
  }
  if (uint64_t(n_tiles) + checks > 0x7FFFFFFFull) fail(StatusCode::unsupported, "append: too many rows for one launch");
  encode_kernel<TT><<<dim3(n_tiles + checks, p.n_heads), kThreads, smem, stream>>>(p, n_tiles);
  check_cuda(cudaGetLastError(), "append: encode launch");
}

}  // namespace

uint32_t append_tokens_per_block(const AppendParams& p) {
  // One token per block for a decode step (most blocks in flight), 16 for prefill (each rotation
  // row read from memory serves 16 tokens); shared memory caps it by head_dim.
  const uint32_t cap = p.head_dim <= 128 ? 16 : p.head_dim <= 512 ? 4 : 1;
  const uint32_t want = p.n_tokens >= 64 ? 16 : p.n_tokens > 4 ? 4 : 1;
  return want < cap ? want : cap;
}

void append_encode(const AppendParams& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  check_cuda(cudaMemsetAsync(p.error, 0xFF, sizeof *p.error, stream), "append: cudaMemsetAsync(error word)");
  if (p.rows == 0 && p.n_tokens == 0) return;
  const uint32_t tt = append_tokens_per_block(p);
  if (tt == 16) launch_encode<16>(p, stream);
  else if (tt == 4) launch_encode<4>(p, stream);
  else launch_encode<1>(p, stream);
}

void append_commit(const AppendParams& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const CommitGrid g = commit_grid(p);
  launch_commit(p, g, 0, g.copy_blocks, stream);
  launch_commit(p, g, g.copy_blocks, g.blocks() - g.copy_blocks, stream);
}

}  // namespace kvbits::cuda
