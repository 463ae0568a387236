// GPU fused decode attention (cuda/decode.hpp): one layer, all sequences and KV heads.
//
// Pools are filled on the device with random valid bytes (bench_decode_fill.cu): any byte
// pattern is a valid code stream and the scales are random positive fp16 values, and the
// decode cost does not depend on the values, so no CPU encoding is needed even at 128K x 32.
// Every page table is a random permutation of its pool (pages scattered as in a real cache).
// Timing: decode + merge captured in one CUDA graph; before every timed replay a 256 MiB memset
// evicts L2 (50 MB on an H100), so each replay reads the cache from HBM as a real layer does.
// Median of 50 replays after 10 warm-ups, CUDA events. The copy reference is a 1 GiB
// device-to-device cudaMemcpy in the same process (bytes read + written).
// Usage: bench_decode_gpu [--quick]   (--quick: batch 1 only)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_decode_fill.hpp"
#include "cache/page_layout.hpp"
#include "cuda/decode.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/encode.hpp"
#include "kvbits/codebook.hpp"
#include "kvbits/rotation.hpp"

using namespace kvbits;

namespace {

#define CK(x)                                                                                       \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
      std::exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

struct Shape {
  const char* name;
  uint32_t q_heads, kv_heads, D;
};

// Block histograms over widths 1..8 (64 blocks, D = 128): average 2, 3 and 4 bits per dim.
// K3 is the head of docs/cache-layout.md §8 (112 B per token with V3).
const int kHist[5][8] = {{}, {}, {24, 22, 12, 6}, {9, 15, 19, 11, 8, 2}, {4, 8, 12, 16, 12, 8, 4}};

std::vector<std::vector<double>> codebooks() {
  std::vector<std::vector<double>> cb(9);
  for (int b = 1; b <= 8; ++b) cb[size_t(b)] = unit_gaussian_codebook(b, CodebookRecipe::lloyd_max);
  return cb;
}

HeadQuantizers make_head(uint32_t D, int bits, uint64_t seed) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 1, s.n_kv_heads = 1, s.head_dim = D, s.rotary_dim = D;
  std::vector<uint8_t> block_bits;
  for (int w = 0; w < 8; ++w)
    for (int c = 0; c < kHist[bits][w]; ++c) block_bits.push_back(uint8_t(w + 1));
  std::shuffle(block_bits.begin(), block_bits.end(), std::mt19937_64(seed));
  const HeadLayout lay = make_head_layout(s, block_bits);
  std::vector<std::vector<float>> rots;
  for (size_t g = 0; g < lay.groups.size(); ++g) rots.push_back(haar_rotation(lay.groups[g].dims, seed * 16 + g));
  const auto cb = codebooks();
  return {make_key_quantizer(lay, rots, cb), make_value_quantizer(D, bits, haar_rotation(D, seed * 16 + 15), cb)};
}

double copy_bandwidth_gbs() {
  const size_t bytes = size_t(1) << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 0x5A, bytes));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 5; ++i) CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * double(bytes) / (ms[ms.size() / 2] * 1e6);
}

struct Result {
  std::string shape, bits;
  uint32_t ctx, batch, splits;
  double us, bytes;
};

Result run(const Shape& sh, int bits, uint32_t ctx, uint32_t batch, void* flush, size_t flush_bytes) {
  const uint32_t P = 64, D = sh.D;
  const uint64_t pages_per_seq = (ctx + P - 1) / P, n_pages = pages_per_seq * batch;
  std::vector<HeadQuantizers> heads;
  std::vector<const HeadQuantizers*> hq;
  std::vector<PageLayout> layouts;
  std::vector<cuda::DeviceBlock> pools;
  std::vector<const uint8_t*> pool_ptrs;
  heads.reserve(sh.kv_heads);
  double bytes = 0;
  for (uint32_t h = 0; h < sh.kv_heads; ++h) {
    heads.push_back(make_head(D, bits, 100 + h));
    layouts.push_back(cache_detail::quantized_page_layout(heads.back(), P));
    pools.emplace_back(size_t(n_pages) * layouts.back().page_bytes);
    pool_ptrs.push_back(pools.back().as<uint8_t>());
    const PageLayout& l = layouts.back();
    bytes += double(ctx) * batch * (l.k_code_bytes + 2.0 * l.n_k_scales + l.v_code_bytes + 2.0);
  }
  for (auto& h : heads) hq.push_back(&h);
  cuda::DecodeTables tables(hq, layouts, pool_ptrs);
  for (uint32_t h = 0; h < sh.kv_heads; ++h) bench::fill_pages_random(tables.host()[h], P, n_pages, 7 + h);

  std::mt19937_64 rng(ctx * 31 + batch);
  std::vector<uint32_t> table(n_pages), offsets(batch), lens(batch, ctx);
  std::iota(table.begin(), table.end(), 0u);
  std::shuffle(table.begin(), table.end(), rng);
  for (uint32_t s = 0; s < batch; ++s) offsets[s] = uint32_t(s * pages_per_seq);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(size_t(batch) * sh.q_heads * D);
  for (float& v : q) v = nd(rng);
  cuda::DeviceBlock d_table(table.data(), table.size() * 4), d_off(offsets.data(), offsets.size() * 4),
      d_len(lens.data(), lens.size() * 4), d_q(q.data(), q.size() * 4);

  cuda::DecodeParams p;
  p.n_seqs = batch, p.n_q_heads = sh.q_heads;
  tables.fill(p);
  p.page_size = P;
  p.page_table = d_table.as<uint32_t>(), p.table_offset = d_off.as<uint32_t>(), p.seq_len = d_len.as<uint32_t>();
  p.max_len = ctx;
  p.q_rot = d_q.as<float>();
  cuda::DeviceBlock out(size_t(batch) * sh.q_heads * D * 4), lse(size_t(batch) * sh.q_heads * 4),
      ws(cuda::decode_workspace_bytes(p));
  p.out = out.as<float>(), p.lse = lse.as<float>(), p.workspace = ws.get();

  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cuda::decode_attention(p, st);  // first launch outside the capture (sets the smem attribute)
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  cuda::decode_attention(p, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 10; ++i) CK(cudaGraphLaunch(ge, st));
  std::vector<float> ms;
  for (int i = 0; i < 50; ++i) {
    CK(cudaMemsetAsync(flush, i & 0xFF, flush_bytes, st));
    CK(cudaEventRecord(e0, st));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CK(cudaGetLastError());
  // Sanity: the output is finite (random data, so no reference value).
  std::vector<float> h_out(size_t(batch) * sh.q_heads * D);
  CK(cudaMemcpy(h_out.data(), out.get(), h_out.size() * 4, cudaMemcpyDeviceToHost));
  for (float v : h_out)
    if (!std::isfinite(v)) {
      std::fprintf(stderr, "non-finite output in %s ctx %u batch %u\n", sh.name, ctx, batch);
      std::exit(1);
    }
  std::sort(ms.begin(), ms.end());
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaStreamDestroy(st));
  return {sh.name, "K" + std::to_string(bits) + "V" + std::to_string(bits) + " GTQ", ctx, batch,
          cuda::decode_splits(p), ms[ms.size() / 2] * 1e3, bytes};
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const double copy_gbs = copy_bandwidth_gbs();
  std::printf("device-to-device copy: %.0f GB/s (bytes read + written, 1 GiB)\n", copy_gbs);
  const size_t flush_bytes = size_t(256) << 20;
  void* flush;
  CK(cudaMalloc(&flush, flush_bytes));

  const Shape shapes[] = {{"Qwen2.5-3B 16/2/128", 16, 2, 128}, {"Llama-3.1-8B 32/8/128", 32, 8, 128}};
  std::vector<Result> res;
  for (const Shape& sh : shapes) {
    for (uint32_t ctx : {4096u, 16384u, 65536u, 131072u})
      for (uint32_t batch : {1u, 8u, 32u}) {
        if (quick && batch > 1) continue;
        res.push_back(run(sh, 3, ctx, batch, flush, flush_bytes));
      }
    for (int bits : {2, 4}) res.push_back(run(sh, bits, 131072, 1, flush, flush_bytes));
  }
  std::printf("\n| shape | bits | context | batch | splits | µs | packed MB read | GB/s | %% of copy | floor µs |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : res) {
    const double gbs = r.bytes / (r.us * 1e3);
    std::printf("| %s | %s | %uK | %u | %u | %.1f | %.1f | %.0f | %.0f %% | %.1f |\n", r.shape.c_str(), r.bits.c_str(),
                r.ctx / 1024, r.batch, r.splits, r.us, r.bytes / 1e6, gbs, 100.0 * gbs / copy_gbs,
                r.bytes / (copy_gbs * 1e3));
  }
  CK(cudaFree(flush));
  return 0;
}
