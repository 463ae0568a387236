// GPU extend (chunked prefill) attention (cuda/extend.hpp): one layer, `batch` sequences, each
// chunk being the last `chunk` tokens of a `context`-token sequence, packed layouts (K3V3
// Block-GTQ by default) against the same kernel on an fp16 layer (the dense baseline: fp16 K/V
// pages, no dequantization, no un-rotation).
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
// 4 warps / 64 rows). Usage: bench_extend_gpu [--quick | --full [SHAPE]]
//   --quick: Qwen2.5-3B shape, 8 warps; default: the three shapes, K3V3 at 4K-64K, batch 1;
//   --full: every shape (or shape index SHAPE) x layout (bench_layouts.hpp) and the fp16 layer x
//   context 4K..1M x batch 1 / 8 / 32, 2048-token chunks, 8 warps, where pools fit and the causal
//   work is at most 5e13 FLOPs (about 0.2-0.5 s per replay)
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
#include "bench_layouts.hpp"
#include "cache/page_layout.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/encode.hpp"
#include "cuda/extend.hpp"
#include "cuda/extend_tables.hpp"

using namespace kvbits;

namespace {

struct Shape {
  const char* name;
  uint32_t q_heads, kv_heads, D;
};

struct Result {
  std::string shape, kind;
  uint32_t ctx, chunk, batch, warps, splits;
  double us, flops, bytes;
};

// `batch` sequences of `ctx` tokens, each extended by its last `chunk` tokens; lay == nullptr:
// an fp16 layer (the dense baseline).
Result run(const Shape& sh, const bench::LayoutSpec* lay, uint32_t warps, uint32_t ctx, uint32_t chunk, uint32_t batch,
           void* flush, size_t flush_bytes) {
  const bool fp16 = lay == nullptr;
  const uint32_t P = 64, D = sh.D, H = sh.kv_heads, Hq = sh.q_heads;
  const uint64_t pages_per_seq = (ctx + P - 1) / P, n_pages = pages_per_seq * batch;
  std::vector<HeadQuantizers> heads;
  std::vector<const HeadQuantizers*> hq;
  std::vector<const TqQuantizer*> kq;
  std::vector<PageLayout> layouts;
  std::vector<cuda::DeviceBlock> pools;
  std::vector<const uint8_t*> pool_ptrs;
  heads.reserve(H);
  double bytes = 0;
  for (uint32_t h = 0; h < H; ++h) {
    if (!fp16) heads.push_back(bench::make_bench_head(D, *lay, 100 + h));
    layouts.push_back(fp16 ? cache_detail::fp16_page_layout(D, P) : cache_detail::quantized_page_layout(heads.back(), P));
    pools.emplace_back(size_t(n_pages) * layouts.back().page_bytes);
    pool_ptrs.push_back(pools.back().as<uint8_t>());
    const PageLayout& l = layouts.back();
    bytes += double(ctx) * batch * (fp16 ? 4.0 * D : l.k_code_bytes + 2.0 * l.n_k_scales + l.v_code_bytes + 2.0);
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

  std::mt19937_64 rng(ctx * 31 + chunk + batch);
  std::vector<uint32_t> table(n_pages), offsets(batch), lens(batch, ctx), qlens(batch, chunk), qoffs(batch);
  std::iota(table.begin(), table.end(), 0u);
  std::shuffle(table.begin(), table.end(), rng);
  for (uint32_t s = 0; s < batch; ++s) offsets[s] = uint32_t(s * pages_per_seq), qoffs[s] = s * chunk;
  const size_t rows = size_t(batch) * chunk;
  cuda::DeviceBlock d_table(table.data(), table.size() * 4), d_off(offsets.data(), batch * 4),
      d_len(lens.data(), batch * 4), d_qlen(qlens.data(), batch * 4), d_qoff(qoffs.data(), batch * 4),
      d_q(rows * Hq * D * 2);
  bench::fill_fp16_random(d_q.as<uint16_t>(), rows * Hq * D, 99);

  cuda::ExtendParams e;
  cuda::DecodeParams& p = e.base;
  p.n_seqs = batch, p.n_q_heads = Hq;
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
  e.q_len = d_qlen.as<uint32_t>(), e.q_offset = d_qoff.as<uint32_t>(), e.total_q = uint32_t(rows), e.max_q_len = chunk;
  e.warps = warps;
  cuda::DeviceBlock out(rows * Hq * D * 4), lse(rows * Hq * 4), ws(cuda::extend_workspace_bytes(e));
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
  // Fewer replays for long runs (a 1M-token context at batch 8 takes seconds per replay).
  const double work = 4.0 * D * Hq * batch * double(chunk) * ctx;
  for (int i = 0; i < (work > 2e13 ? 1 : 3); ++i) CK(cudaGraphLaunch(ge, st));
  const int reps = work > 2e14 ? 3 : work > 2e13 ? 5 : ctx >= 65536 ? 10 : 30;
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
  std::vector<float> h_out(rows * Hq * D);
  CK(cudaMemcpy(h_out.data(), out.get(), h_out.size() * 4, cudaMemcpyDeviceToHost));
  for (float v : h_out)
    if (!std::isfinite(v)) {
      std::fprintf(stderr, "non-finite output in %s ctx %u chunk %u batch %u %s\n", sh.name, ctx, chunk, batch,
                   fp16 ? "fp16" : lay->name);
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
  const double flops = 4.0 * D * Hq * seen * batch;
  bytes += double(rows) * Hq * D * (2.0 + 4.0);  // q (fp16) in, out (fp32)
  return {sh.name,   fp16 ? "fp16 layer" : lay->name, ctx, chunk, batch, warps, cuda::extend_splits(e),
          ms[ms.size() / 2] * 1e3, flops, bytes};
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const bool full = argc > 1 && std::strcmp(argv[1], "--full") == 0;
  const int full_shape = full && argc > 2 ? std::atoi(argv[2]) : -1;  // --full SHAPE: that shape only
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
  std::vector<std::string> skipped;
  std::printf("\n| shape | cache | context | batch | chunk | warps | splits | µs | TFLOP/s | MB read | GB/s | vs fp16, same warps |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  // A case runs when its pools fit in free memory and its causal work is at most max_work FLOPs;
  // else it is listed as skipped. Rows print as they are measured (a long sweep that is cut off
  // keeps what it measured); the fp16 layer's row of a case comes first, for the ratio.
  const double max_work = full ? 5e13 : 1e15;
  auto add = [&](const Shape& sh, const bench::LayoutSpec* lay, uint32_t warps, uint32_t ctx, uint32_t chunk,
                 uint32_t batch) {
    const double row_bytes = lay ? 2.0 * sh.D : 4.0 * sh.D;  // packed rows stay below 2 D bytes (K, V <= 8 bits)
    const double pool = row_bytes * sh.kv_heads * double(batch) * ctx,
                 work = 4.0 * sh.D * sh.q_heads * batch * double(chunk) * ctx;
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    char why[64] = "";
    if (pool + 2e9 > double(free_b)) std::snprintf(why, sizeof why, "pools need %.0f GB", pool / 1e9);
    else if (work > max_work) std::snprintf(why, sizeof why, "%.1e FLOPs", work);
    if (why[0]) {
      skipped.push_back(std::string(sh.name) + " " + (lay ? lay->name : "fp16 layer") + " " + std::to_string(ctx / 1024) +
                        "K x " + std::to_string(batch) + " chunk " + std::to_string(chunk) + " (" + why + ")");
      return;
    }
    res.push_back(run(sh, lay, warps, ctx, chunk, batch, flush, flush_bytes));
    const Result& r = res.back();
    char ratio[32] = "";
    for (const Result& f : res)  // the fp16 layer's row of the same case
      if (lay && f.kind == "fp16 layer" && f.shape == r.shape && f.ctx == r.ctx && f.chunk == r.chunk &&
          f.batch == r.batch && f.warps == r.warps)
        std::snprintf(ratio, sizeof ratio, "%.2fx", r.us / f.us);
    std::printf("| %s | %s | %uK | %u | %u | %u | %u | %.1f | %.1f | %.1f | %.0f | %s |\n", r.shape.c_str(),
                r.kind.c_str(), r.ctx / 1024, r.batch, r.chunk, r.warps, r.splits, r.us, r.flops / (r.us * 1e6),
                r.bytes / 1e6, r.bytes / (r.us * 1e3), ratio);
    std::fflush(stdout);
  };
  for (int si = 0; si < 3; ++si) {
    const Shape& sh = shapes[si];
    if (full) {
      // Every layout and the fp16 baseline, contexts 4K..1M, batch 1 / 8 / 32, 2048-token chunks,
      // the automatic CTA shape (8 warps at these chunks).
      if (full_shape >= 0 && si != full_shape) continue;
      for (uint32_t ctx : {4096u, 16384u, 65536u, 131072u, 524288u, 1048576u})
        for (uint32_t batch : {1u, 8u, 32u}) {
          add(sh, nullptr, 8, ctx, 2048, batch);
          for (const bench::LayoutSpec& l : bench::kLayouts) add(sh, &l, 8, ctx, 2048, batch);
        }
      continue;
    }
    if (quick && sh.kv_heads != 2) continue;
    for (uint32_t ctx : {4096u, 16384u, 65536u})
      for (uint32_t chunk : {512u, 2048u})
        for (uint32_t warps : {8u, 4u}) {
          if (quick && warps == 4) continue;
          add(sh, nullptr, warps, ctx, chunk, 1);
          add(sh, &bench::kLayouts[1], warps, ctx, chunk, 1);
        }
  }
  for (const std::string& k : skipped) std::printf("skipped: %s\n", k.c_str());
  CK(cudaFree(flush));
  return 0;
}
