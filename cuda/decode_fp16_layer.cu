// Decode for a layer the plan keeps at 16 bits: every row (pages, sink, ring) is fp16, so every
// split is a plain_split (decode_plain.cuh). Packed splits take contiguous 128-row steps of the
// page rows, fp16 splits the sink and ring rows, as in the quantized kernels.
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/decode_common.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

namespace {

template <int GQ>
__global__ void __launch_bounds__(kCtaThreads) decode_fp16_layer_kernel(KernelArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(16) uint32_t hd_words[kHeadWords];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z;
  load_head(hd_words, a.heads + h);
  const SeqInfo si = seq_info(a, seq);
  __syncthreads();
  if (split >= a.packed_splits) {
    const uint32_t u0 = (split - a.packed_splits) * a.fp16_chunk;
    plain_split<GQ>(a, hd, si, seq, h, split, false, u0, min(u0 + a.fp16_chunk, a.sink + a.window), smem);
    return;
  }
  const uint32_t n_steps = (si.n_packed + kCtaThreads - 1) / kCtaThreads;
  const uint32_t chunk = (n_steps + a.packed_splits - 1) / a.packed_splits;
  const uint32_t u0 = min(si.n_packed, split * chunk * kCtaThreads);
  plain_split<GQ>(a, hd, si, seq, h, split, true, u0, min(si.n_packed, u0 + chunk * kCtaThreads), smem);
}

template <int GQ>
void launch(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream) {
  static std::atomic<uint32_t> raised{0};  // 0: the default limit is 48 KiB minus static smem
  if (smem > raised.load()) {
    check(cudaFuncSetAttribute(decode_fp16_layer_kernel<GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(decode fp16 smem)");
    raised.store(smem);
  }
  decode_fp16_layer_kernel<GQ><<<dim3(a.splits, n_kv, n_seqs), kCtaThreads, smem, stream>>>(a);
  check(cudaGetLastError(), "decode_fp16_layer_kernel launch");
}

}  // namespace

void launch_decode_fp16_layer(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                              cudaStream_t stream) {
  switch (gq) {
    case 1: launch<1>(a, n_kv, n_seqs, smem, stream); break;
    case 2: launch<2>(a, n_kv, n_seqs, smem, stream); break;
    case 4: launch<4>(a, n_kv, n_seqs, smem, stream); break;
    case 8: launch<8>(a, n_kv, n_seqs, smem, stream); break;
    default: launch<16>(a, n_kv, n_seqs, smem, stream); break;
  }
}

}  // namespace kvbits::cuda::decode_detail
