// The single-launch append (append.hpp, append_step; phases in append_step.cuh).
//
// A decode step's append through the two-launch path is a chain of dependent round trips
// (descriptor, tables, values, rotation rows, canonical chains, staging, a second launch) on
// a handful of blocks. Here one launch does it: rotation rows go to registers while the values
// arrive, the canonical fp64 chains run on their own warp beside the fast dots, rows are
// written in place, and the block that finishes last commits the call (fp16 rows, words) or,
// on an error, zeroes the rows written, so the cache is unchanged either way. The host waits
// for the outcome the last block writes to p.outcome.
#include <cuda_runtime.h>

#include <atomic>
#include <type_traits>

#include "cuda/append.hpp"
#include "cuda/append_step.cuh"
#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

using namespace step_body;

// kInline: the call's descriptors come as a kernel parameter (AppendStepInline, small calls),
// so the first loads of a block depend on nothing but the parameters.
template <bool kInline>
__global__ void __launch_bounds__(kStepThreads, 1)
    append_step_kernel(const __grid_constant__ AppendParams params,
                       const __grid_constant__ std::conditional_t<kInline, AppendStepInline, char> in) {
  AppendParams p = params;
  if constexpr (kInline) {  // the descriptors in the parameter (generic addresses of it)
    p.tokens = in.tokens;
    p.entries = in.entries;
    p.words = in.words;
  }
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ StepShared s;
  const uint32_t b = blockIdx.x, tid = threadIdx.x;
  if (step_item_block(p, b)) {
    float* cent = reinterpret_cast<float*>(smem);
    float* bnd = cent + p.max_cb;
    StepRegs g;
    const uint32_t t = b / p.n_heads, h = b % p.n_heads;
    if constexpr (kInline) step_begin(p, in.heads[h], p.tokens[t], s, cent, bnd, b, tid, g);
    else step_begin(p, p.heads[size_t(p.layer) * p.n_heads + h], p.tokens[t], s, cent, bnd, b, tid, g);
    __syncthreads();
    step_place(p, s, tid, g);
    __syncthreads();
    step_dots(p, s, tid, g);
    __syncthreads();
    step_codes(p, s, cent, bnd, tid, g);
    __syncthreads();
    step_store(p, s, b, tid, g);
  } else {
    const uint32_t c = b - p.n_tokens * p.n_heads;
    check_rows(p, 0, c / p.n_heads, c % p.n_heads, tid, kStepThreads);
  }
  // Arrive. The barrier orders the block's writes before thread 0's release at device scope;
  // the block that arrives last acquires every other block's writes and error keys.
  __syncthreads();
  if (tid == 0) {
    unsigned int before;
    asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;" : "=r"(before) : "l"(&p.step->arrived) : "memory");
    s.last = before == gridDim.x - 1;
    if (s.last) s.error = *reinterpret_cast<volatile unsigned long long*>(&p.step->error);
  }
  __syncthreads();
  if (s.last) step_finish_call(p, s.error, tid, kStepThreads);
}

template <bool kInline, class In>
void launch_step(const AppendParams& p, const In& in, unsigned blocks, size_t smem, cudaStream_t stream) {
  static std::atomic<size_t> raised{0};  // per instantiation
  if (smem > raised.load()) {
    check_cuda(cudaFuncSetAttribute(append_step_kernel<kInline>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               "append: cudaFuncSetAttribute");
    raised.store(smem);
  }
  append_step_kernel<kInline><<<blocks, kStepThreads, smem, stream>>>(p, in);
  check_cuda(cudaGetLastError(), "append: single launch");
}

}  // namespace

bool append_step_applies(const AppendParams& p) {
  return !p.fp16_layer && p.head_dim <= kStepOutputs / 2 && p.n_tokens <= kAppendStepMaxTokens && p.n_copies == 0 &&
         (p.n_tokens > 0 || p.rows > 0);
}

void append_step(const AppendParams& p, const AppendStepInline* in, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (!append_step_applies(p)) fail(StatusCode::internal, "append: the single-launch path does not apply");
  const uint32_t checks = (p.rows + kCheckRows - 1) / kCheckRows;
  const uint64_t blocks = uint64_t(p.n_tokens) * p.n_heads + uint64_t(checks) * p.n_heads;
  if (blocks > 0x7FFFFFFFull) fail(StatusCode::unsupported, "append: too many rows for one launch");
  const size_t smem = size_t(p.max_cb) * 8;
  if (in) {
    launch_step<true>(p, *in, unsigned(blocks), smem, stream);
  } else {
    launch_step<false>(p, char(0), unsigned(blocks), smem, stream);
  }
}

}  // namespace kvbits::cuda
