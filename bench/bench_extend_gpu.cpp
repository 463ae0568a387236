// GPU extend (chunked prefill) attention (cuda/extend.hpp): one layer, batch 1, the chunk being
// the last `chunk` tokens of a `context`-token sequence, K3V3 Block-GTQ against the same kernel
// on an fp16 layer (the dense baseline: fp16 K/V pages, no dequantization, no un-rotation).
//
// Pools are filled on the device: packed pages with random valid bytes (bench_decode_fill.cu:
// any byte pattern is a valid code stream, scales random positive fp16), fp16 pages with random
// N(0,1)-like fp16 values; queries random fp16. Cost does not depend on the values. Page tables
// are random permutations of the pool. Timing: the extend launches captured in one CUDA graph; a
// 256 MiB memset before every timed replay evicts L2; median of the replays (CUDA events).
// Reported: µs; TFLOP/s of the causal work (4 * D * n_q_heads * sum over queries of the tokens
// each sees: QK^T and PV, masked work not counted); the cache bytes (each page byte once, plus q
// and out) over the time in GB/s.
// Both CTA shapes are timed (8 warps / 128 query rows, the automatic choice at these chunks, and
// 4 warps / 64 rows). Usage: bench_extend_gpu [--quick]   (--quick: Qwen2.5-3B shape, 8 warps)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu_bench_util.hpp"
#include "bench_decode_fill.hpp"
#include "bench_extend_fill.hpp"
#include "cache/page_layout.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/encode.hpp"
#include "cuda/extend.hpp"
#include "cuda/extend_tables.hpp"
#include "kvbits/codebook.hpp"
#include "kvbits/rotation.hpp"

using namespace kvbits;

namespace {

struct Shape {
  const char* name;
  uint32_t q_heads, kv_heads, D;
};

// The K3 head of docs/cache-layout.md §8 (block histogram over widths 1..6, 112 B per token
// with V3 at D = 128).
const int kHistK3[8] = {9, 15, 19, 11, 8, 2, 0, 0};

HeadQuantizers make_head(uint32_t D, uint64_t seed) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 1, s.n_kv_heads = 1, s.head_dim = D, s.rotary_dim = D;
  std::vector<uint8_t> block_bits;
  for (int w = 0; w < 8; ++w)
    for (int c = 0; c < kHistK3[w] * int(D) / 128; ++c) block_bits.push_back(uint8_t(w + 1));
  std::shuffle(block_bits.begin(), block_bits.end(), std::mt19937_64(seed));
  const HeadLayout lay = make_head_layout(s, block_bits);
  std::vector<std::vector<double>> cb(9);
  for (int b = 1; b <= 8; ++b) cb[size_t(b)] = unit_gaussian_codebook(b, CodebookRecipe::lloyd_max);
  std::vector<std::vector<float>> rots;
  for (size_t g = 0; g < lay.groups.size(); ++g) rots.push_back(haar_rotation(lay.groups[g].dims, seed * 16 + g));
  return {make_key_quantizer(lay, rots, cb), make_value_quantizer(D, 3, haar_rotation(D, seed * 16 + 15), cb)};
}

struct Result {
  std::string shape, kind;
  uint32_t ctx, chunk, warps, splits;
  double us, flops, bytes;
};

Result run(const Shape& sh, bool fp16, uint32_t warps, uint32_t ctx, uint32_t chunk, void* flush, size_t flush_bytes) {
  const uint32_t P = 64, D = sh.D, H = sh.kv_heads, Hq = sh.q_heads;
  const uint64_t n_pages = (ctx + P - 1) / P;
  std::vector<HeadQuantizers> heads;
  std::vector<const HeadQuantizers*> hq;
  std::vector<const TqQuantizer*> kq;
  std::vector<PageLayout> layouts;
  std::vector<cuda::DeviceBlock> pools;
  std::vector<const uint8_t*> pool_ptrs;
  heads.reserve(H);
  double bytes = 0;
  for (uint32_t h = 0; h < H; ++h) {
    if (!fp16) heads.push_back(make_head(D, 100 + h));
    layouts.push_back(fp16 ? cache_detail::fp16_page_layout(D, P) : cache_detail::quantized_page_layout(heads.back(), P));
    pools.emplace_back(size_t(n_pages) * layouts.back().page_bytes);
    pool_ptrs.push_back(pools.back().as<uint8_t>());
    const PageLayout& l = layouts.back();
    bytes += double(ctx) * (fp16 ? 4.0 * D : l.k_code_bytes + 2.0 * l.n_k_scales + l.v_code_bytes + 2.0);
  }
  for (auto& h : heads) hq.push_back(&h), kq.push_back(&h.k);
  std::unique_ptr<cuda::DecodeTables> tables;
  std::unique_ptr<cuda::ExtendQueryTables> ext;
  std::vector<cuda::DecodeHead> fp16_heads;
  cuda::DeviceBlock fp16_heads_dev;
  if (fp16) {
    for (uint32_t h = 0; h < H; ++h) {
      cuda::DecodeHead d;
      d.pool = pool_ptrs[h], d.page_bytes = layouts[h].page_bytes;
      d.k_scales = uint32_t(layouts[h].k_scales), d.v_codes = uint32_t(layouts[h].v_codes);
      d.v_scales = uint32_t(layouts[h].v_scales);
      d.k_code_bytes = layouts[h].k_code_bytes, d.v_code_bytes = layouts[h].v_code_bytes;
      fp16_heads.push_back(d);
      bench::fill_fp16_random(const_cast<uint16_t*>(reinterpret_cast<const uint16_t*>(pool_ptrs[h])),
                              size_t(n_pages) * layouts[h].page_bytes / 2, 7 + h);
    }
    fp16_heads_dev = cuda::DeviceBlock(fp16_heads.data(), fp16_heads.size() * sizeof(cuda::DecodeHead));
  } else {
    tables = std::make_unique<cuda::DecodeTables>(hq, layouts, pool_ptrs);
    ext = std::make_unique<cuda::ExtendQueryTables>(kq);
    for (uint32_t h = 0; h < H; ++h) bench::fill_pages_random(tables->host()[h], P, n_pages, 7 + h);
  }

  std::mt19937_64 rng(ctx * 31 + chunk);
  std::vector<uint32_t> table(n_pages);
  std::iota(table.begin(), table.end(), 0u);
  std::shuffle(table.begin(), table.end(), rng);
  const uint32_t zero = 0, len = ctx;
  cuda::DeviceBlock d_table(table.data(), table.size() * 4), d_off(&zero, 4), d_len(&len, 4), d_qlen(&chunk, 4),
      d_qoff(&zero, 4), d_q(size_t(chunk) * Hq * D * 2);
  bench::fill_fp16_random(d_q.as<uint16_t>(), size_t(chunk) * Hq * D, 99);

  cuda::ExtendParams e;
  cuda::DecodeParams& p = e.base;
  p.n_seqs = 1, p.n_q_heads = Hq;
  if (fp16) {
    p.heads = fp16_heads_dev.as<cuda::DecodeHead>(), p.heads_host = fp16_heads.data();
    p.n_kv_heads = H, p.head_dim = D, p.fp16_layer = true;
  } else {
    tables->fill(p);
    ext->fill(e);
  }
  p.page_size = P;
  p.page_table = d_table.as<uint32_t>(), p.table_offset = d_off.as<uint32_t>(), p.seq_len = d_len.as<uint32_t>();
  p.max_len = ctx;
  p.q = d_q.get(), p.q_dtype = 1;
  e.q_len = d_qlen.as<uint32_t>(), e.q_offset = d_qoff.as<uint32_t>(), e.total_q = chunk, e.max_q_len = chunk;
  e.warps = warps;
  cuda::DeviceBlock out(size_t(chunk) * Hq * D * 4), lse(size_t(chunk) * Hq * 4), ws(cuda::extend_workspace_bytes(e));
  p.out = out.as<float>(), p.lse = lse.as<float>(), p.workspace = ws.get();

  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cuda::extend_attention(e, st);  // first launch outside the capture (sets the smem attribute)
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  cuda::extend_attention(e, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, st));
  const int reps = ctx >= 65536 ? 10 : 30;
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
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
  std::vector<float> h_out(size_t(chunk) * Hq * D);
  CK(cudaMemcpy(h_out.data(), out.get(), h_out.size() * 4, cudaMemcpyDeviceToHost));
  for (float v : h_out)
    if (!std::isfinite(v)) {
      std::fprintf(stderr, "non-finite output in %s ctx %u chunk %u %s\n", sh.name, ctx, chunk, fp16 ? "fp16" : "K3V3");
      std::exit(1);
    }
  std::sort(ms.begin(), ms.end());
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaStreamDestroy(st));
  // Query i (position ctx - chunk + i) sees ctx - chunk + i + 1 tokens.
  const double seen = double(chunk) * (ctx - chunk) + double(chunk) * (chunk + 1) / 2.0;
  const double flops = 4.0 * D * Hq * seen;
  bytes += double(chunk) * Hq * D * (2.0 + 4.0);  // q (fp16) in, out (fp32)
  return {sh.name, fp16 ? "fp16 layer" : "K3V3 GTQ", ctx, chunk, warps, cuda::extend_splits(e), ms[ms.size() / 2] * 1e3,
          flops, bytes};
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

  const Shape shapes[] = {
      {"Qwen2.5-3B 16/2/128", 16, 2, 128}, {"Qwen2.5-7B 28/4/128", 28, 4, 128}, {"Llama-3.1-8B 32/8/128", 32, 8, 128}};
  std::vector<Result> res;
  for (const Shape& sh : shapes) {
    if (quick && sh.kv_heads != 2) continue;
    for (uint32_t ctx : {4096u, 16384u, 65536u})
      for (uint32_t chunk : {512u, 2048u})
        for (bool fp16 : {false, true})
          for (uint32_t warps : {8u, 4u}) {
            if (quick && warps == 4) continue;
            res.push_back(run(sh, fp16, warps, ctx, chunk, flush, flush_bytes));
          }
  }
  std::printf("\n| shape | cache | context | chunk | warps | splits | µs | TFLOP/s | MB read | GB/s | vs fp16, same warps |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < res.size(); ++i) {
    const Result& r = res[i];
    // The K3V3 rows of a (shape, context, chunk) come first, then the fp16 rows, same warp order.
    const size_t per = quick ? 1 : 2;
    char ratio[32] = "";
    if ((i / per) % 2 == 0) std::snprintf(ratio, sizeof ratio, "%.2fx", r.us / res[i + per].us);
    std::printf("| %s | %s | %uK | %u | %u | %u | %.1f | %.1f | %.1f | %.0f | %s |\n", r.shape.c_str(), r.kind.c_str(),
                r.ctx / 1024, r.chunk, r.warps, r.splits, r.us, r.flops / (r.us * 1e6), r.bytes / 1e6,
                r.bytes / (r.us * 1e3), ratio);
  }
  CK(cudaFree(flush));
  return 0;
}
