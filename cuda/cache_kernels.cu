// Small kernels of the CUDA cache backend (cache_kernels.hpp).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cache_kernels.hpp"
#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

constexpr uint32_t kThreads = 256;

__global__ void zero_pages_kernel(const AppendHead* heads, uint32_t n_regions, const uint32_t* pages) {
  const uint32_t region = blockIdx.x % n_regions, i = blockIdx.x / n_regions;
  const AppendHead& hd = heads[region];
  // page_bytes is a multiple of 64 and pages start on 64 bytes: 16-byte stores.
  uint4* p = reinterpret_cast<uint4*>(hd.pool + size_t(pages[i]) * hd.page_bytes);
  const size_t n = hd.page_bytes / 16;
  for (size_t k = threadIdx.x; k < n; k += blockDim.x) p[k] = make_uint4(0, 0, 0, 0);
}

__global__ void write_words_kernel(const WordWrite* words, uint32_t n) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) *words[i].dst = words[i].value;
}

struct GatherIds {
  uint32_t first, count;
  uint32_t id[kGatherIds];
};

__global__ void gather_kernel(SeqMirror m, uint32_t layer, GatherIds ids, uint32_t* table_offset, uint32_t* seq_len,
                              uint32_t* seq_qend, const uint16_t** fp16_blocks) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= ids.count) return;
  const uint32_t id = ids.id[k], i = ids.first + k;
  const uint32_t* st = m.state + (size_t(id) * m.n_layers + layer) * 4;
  table_offset[i] = m.offsets[id];
  seq_len[i] = st[0];
  seq_qend[i] = st[1];
  if (fp16_blocks)
    fp16_blocks[i] = reinterpret_cast<const uint16_t*>(uint64_t(st[2]) | (uint64_t(st[3]) << 32));
}

}  // namespace

void zero_pages(const AppendHead* heads, uint32_t n_regions, const uint32_t* pages, uint32_t n_pages, void* stream) {
  if (n_pages == 0 || n_regions == 0) return;
  if (uint64_t(n_pages) * n_regions > 0x7FFFFFFFull) fail(StatusCode::unsupported, "zero_pages: too many pages");
  zero_pages_kernel<<<n_pages * n_regions, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(heads, n_regions, pages);
  check_cuda(cudaGetLastError(), "zero_pages launch");
}

void write_words(const WordWrite* words, uint32_t n, void* stream) {
  if (n == 0) return;
  write_words_kernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(words, n);
  check_cuda(cudaGetLastError(), "write_words launch");
}

void gather_batch(const SeqMirror& mirror, uint32_t layer, const uint64_t* ids, size_t n_seqs, uint32_t* table_offset,
                  uint32_t* seq_len, uint32_t* seq_qend, const uint16_t** fp16_blocks, void* stream) {
  for (size_t first = 0; first < n_seqs; first += kGatherIds) {
    GatherIds g;
    g.first = uint32_t(first);
    g.count = uint32_t(std::min<size_t>(kGatherIds, n_seqs - first));
    for (uint32_t k = 0; k < g.count; ++k) g.id[k] = uint32_t(ids[first + k]);
    gather_kernel<<<(g.count + kThreads - 1) / kThreads, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        mirror, layer, g, table_offset, seq_len, seq_qend, fp16_blocks);
    check_cuda(cudaGetLastError(), "gather launch");
  }
}

}  // namespace kvbits::cuda
