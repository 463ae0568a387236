// GPU fused decode attention (cuda/decode.hpp): one layer, all sequences and KV heads, both
// kernels (scalar first version, fp32-grade tensor cores, fp16-operand tensor cores) on the same
// pools in the same process.
//
// Pools are filled on the device with random valid bytes (bench_decode_fill.cu): any byte
// pattern is a valid code stream and the scales are random positive fp16 values, and the
// decode cost does not depend on the values, so no CPU encoding is needed even at 1M x 32.
// Every page table is a random permutation of its pool (pages scattered as in a real cache).
// Queries are passed unrotated (fp32 q): the decode launch rotates them, as in serving.
// Timing: decode + merge captured in one CUDA graph; before every timed replay a 256 MiB memset
// evicts L2 (50 MB on an H100), so each replay reads the cache from HBM as a real layer does.
// Median of 50 replays after 10 warm-ups, CUDA events. The copy reference is a 1 GiB
// device-to-device cudaMemcpy in the same process (bytes read + written).
// Usage: bench_decode_gpu [--quick | --full [SHAPE] | --case SHAPE LAYOUT CONTEXT BATCH ...]
//   --quick (default, ~2 min on an H100): K3V3 at 4K-128K x batch 1/8/32 for the three shapes,
//           K2V2/K4V4/uniform K3V3 at 128K x 1, and 512K / 1M at batch 1
//   --full: every shape (or shape index SHAPE) x layout (K2V2/K3V3/K4V4, Block-GTQ and uniform) x
//           context (4K..1M) x batch (1, 8, 32) that fits in memory; the scalar kernel is left out
//   --case: shape index 0..2 (Qwen2.5-3B, Qwen2.5-7B, Llama-3.1-8B), layout index 0..5
//           (bench_layouts.hpp), context, batch
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

#include "gpu_bench_util.hpp"
#include "bench_decode_fill.hpp"
#include "bench_layouts.hpp"
#include "cache/page_layout.hpp"
#include "cuda/decode.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/encode.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;

namespace {

struct Shape {
  const char* name;
  uint32_t q_heads, kv_heads, D;
};

using bench::LayoutSpec;

struct Timing {
  double us = 0;
  uint32_t splits = 0;
};

// Median µs of decode + merge (one graph), L2 flushed before every replay.
Timing time_variant(cuda::DecodeParams p, uint32_t variant, void* flush, size_t flush_bytes) {
  p.variant = variant;
  cuda::DeviceBlock ws(cuda::decode_workspace_bytes(p));
  p.workspace = ws.get();
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
  std::sort(ms.begin(), ms.end());
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaStreamDestroy(st));
  return {ms[ms.size() / 2] * 1e3, cuda::decode_splits(p)};
}

struct Result {
  std::string shape, layout;
  uint32_t ctx, batch;
  Timing scalar, mma, fast;
  double bytes;
  float max_diff;       // max |mma - scalar| / max |scalar| over the outputs
  float max_diff_fast;  // max |fast - mma| / max |mma|
  bool skipped;
  double need_gb;
};

// scalar: also time the first (scalar) kernel; --full leaves it out (it is 3-4x slower than the
// default and would dominate the sweep's time).
Result run(const Shape& sh, const LayoutSpec& spec, uint32_t ctx, uint32_t batch, void* flush, size_t flush_bytes,
           bool scalar = true) {
  const uint32_t P = 64, D = sh.D;
  const uint64_t pages_per_seq = (ctx + P - 1) / P, n_pages = pages_per_seq * batch;
  Result res{sh.name, spec.name, ctx, batch, {}, {}, {}, 0, 0, 0, false, 0};
  std::vector<HeadQuantizers> heads;
  std::vector<const HeadQuantizers*> hq;
  std::vector<PageLayout> layouts;
  heads.reserve(sh.kv_heads);
  size_t pool_bytes = 0;
  for (uint32_t h = 0; h < sh.kv_heads; ++h) {
    heads.push_back(bench::make_bench_head(D, spec, 100 + h));
    layouts.push_back(cache_detail::quantized_page_layout(heads.back(), P));
    const PageLayout& l = layouts.back();
    pool_bytes += size_t(n_pages) * l.page_bytes;
    res.bytes += double(ctx) * batch * (l.k_code_bytes + 2.0 * l.n_k_scales + l.v_code_bytes + 2.0);
  }
  size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  res.need_gb = double(pool_bytes) / 1e9;
  if (pool_bytes + (size_t(1) << 30) > free_b) {
    res.skipped = true;
    return res;
  }
  std::vector<cuda::DeviceBlock> pools;
  std::vector<const uint8_t*> pool_ptrs;
  for (uint32_t h = 0; h < sh.kv_heads; ++h) {
    pools.emplace_back(size_t(n_pages) * layouts[h].page_bytes);
    pool_ptrs.push_back(pools.back().as<uint8_t>());
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
  p.q = d_q.get(), p.q_dtype = 0;
  const size_t n_out = size_t(batch) * sh.q_heads * D;
  cuda::DeviceBlock out_a(n_out * 4), out_b(n_out * 4), out_c(n_out * 4), lse(size_t(batch) * sh.q_heads * 4);
  p.lse = lse.as<float>();
  try {
    p.out = out_a.as<float>();
    if (scalar) res.scalar = time_variant(p, cuda::kDecodeVariantScalar, flush, flush_bytes);
    p.out = out_b.as<float>();
    res.mma = time_variant(p, cuda::kDecodeVariantMma, flush, flush_bytes);
    p.out = out_c.as<float>();
    res.fast = time_variant(p, cuda::kDecodeVariantFast, flush, flush_bytes);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s %s ctx %u batch %u: %s\n", sh.name, spec.name, ctx, batch, e.what());
    std::exit(1);
  }
  // Sanity: finite outputs and the kernels agree (random data, no CPU reference here).
  std::vector<float> a(n_out), b(n_out), c(n_out);
  CK(cudaMemcpy(a.data(), (scalar ? out_a : out_b).get(), n_out * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(b.data(), out_b.get(), n_out * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(c.data(), out_c.get(), n_out * 4, cudaMemcpyDeviceToHost));
  float diff = 0, diff_fast = 0, mag = 0, mag_b = 0;
  for (size_t i = 0; i < n_out; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]) || !std::isfinite(c[i])) {
      std::fprintf(stderr, "non-finite output in %s %s ctx %u batch %u\n", sh.name, spec.name, ctx, batch);
      std::exit(1);
    }
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    diff_fast = std::max(diff_fast, std::fabs(c[i] - b[i]));
    mag = std::max(mag, std::fabs(a[i]));
    mag_b = std::max(mag_b, std::fabs(b[i]));
  }
  res.max_diff = mag > 0 ? diff / mag : diff;
  res.max_diff_fast = mag_b > 0 ? diff_fast / mag_b : diff_fast;
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  const bool full = argc > 1 && std::strcmp(argv[1], "--full") == 0;
  const int full_shape = full && argc > 2 ? std::atoi(argv[2]) : -1;  // --full SHAPE: that shape only
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB, %.1f GB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              double(prop.totalGlobalMem) / 1e9);
  const double copy_gbs = copy_bandwidth_gbs();
  std::printf("device-to-device copy: %.0f GB/s (bytes read + written, 1 GiB)\n", copy_gbs);
  const size_t flush_bytes = size_t(256) << 20;
  void* flush;
  CK(cudaMalloc(&flush, flush_bytes));

  const Shape shapes[] = {{"Qwen2.5-3B 16/2/128", 16, 2, 128},
                          {"Qwen2.5-7B 28/4/128", 28, 4, 128},
                          {"Llama-3.1-8B 32/8/128", 32, 8, 128}};
  const LayoutSpec* layouts = bench::kLayouts;  // K2V2 / K3V3 / K4V4 Block-GTQ, then uniform
  const LayoutSpec& k3 = layouts[1];
  const uint32_t K = 1024;
  std::vector<Result> res;
  // --case SHAPE LAYOUT CONTEXT BATCH (indices into the tables above; for profilers): one row
  // each, repeatable.
  for (int i = 1; i < argc; i += 5) {
    if (std::strcmp(argv[i], "--case") != 0) break;
    if (i + 4 >= argc) {
      std::fprintf(stderr, "--case takes SHAPE LAYOUT CONTEXT BATCH\n");
      return 2;
    }
    const int si = std::atoi(argv[i + 1]), li = std::atoi(argv[i + 2]);
    if (si < 0 || si > 2 || li < 0 || li > 5) {
      std::fprintf(stderr, "--case: shape index 0..2, layout index 0..5\n");
      return 2;
    }
    res.push_back(run(shapes[si], layouts[li], uint32_t(std::atoi(argv[i + 3])), uint32_t(std::atoi(argv[i + 4])),
                      flush, flush_bytes));
  }
  const bool cases = !res.empty();  // --case rows only
  for (int si = 0; si < 3; ++si) {
    const Shape& sh = shapes[si];
    if (cases || (full_shape >= 0 && si != full_shape)) continue;
    if (full) {
      for (int li = 0; li < 6; ++li)
        for (uint32_t ctx : {4 * K, 16 * K, 64 * K, 128 * K, 512 * K, 1024 * K})
          for (uint32_t batch : {1u, 8u, 32u}) res.push_back(run(sh, layouts[li], ctx, batch, flush, flush_bytes, false));
      continue;
    }
    for (uint32_t ctx : {4 * K, 16 * K, 64 * K, 128 * K})
      for (uint32_t batch : {1u, 8u, 32u}) res.push_back(run(sh, k3, ctx, batch, flush, flush_bytes));
    for (int li : {0, 2, 4}) res.push_back(run(sh, layouts[li], 128 * K, 1, flush, flush_bytes));
    for (uint32_t ctx : {512 * K, 1024 * K}) res.push_back(run(sh, k3, ctx, 1, flush, flush_bytes));
  }
  std::printf("\nµs per layer (decode + merge, one graph, L2 flushed). GB/s and %% of copy for the fast kernel (the "
              "default); floor = packed bytes / copy bandwidth. Diffs: mma vs scalar, fast vs mma (max abs / max |ref|)."
              "\n\n");
  std::printf("| shape | layout | context | batch | splits scalar / mma / fast | µs scalar | µs mma | µs fast | packed MB "
              "| GB/s | %% of copy | floor µs | diff mma | diff fast |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : res) {
    if (r.skipped) {
      std::printf("| %s | %s | %uK | %u | skipped: pools need %.1f GB, more than the free memory | | | | | | | | | |\n",
                  r.shape.c_str(), r.layout.c_str(), r.ctx / 1024, r.batch, r.need_gb);
      continue;
    }
    const double gbs = r.bytes / (r.fast.us * 1e3);
    char sc_splits[16] = "—", sc_us[16] = "—", sc_diff[16] = "—";  // the scalar kernel, when timed
    if (r.scalar.splits) {
      std::snprintf(sc_splits, sizeof sc_splits, "%u", r.scalar.splits);
      std::snprintf(sc_us, sizeof sc_us, "%.1f", r.scalar.us);
      std::snprintf(sc_diff, sizeof sc_diff, "%.1e", r.max_diff);
    }
    std::printf("| %s | %s | %uK | %u | %s / %u / %u | %s | %.1f | %.1f | %.1f | %.0f | %.0f %% | %.1f | %s | %.1e |\n",
                r.shape.c_str(), r.layout.c_str(), r.ctx / 1024, r.batch, sc_splits, r.mma.splits, r.fast.splits,
                sc_us, r.mma.us, r.fast.us, r.bytes / 1e6, gbs, 100.0 * gbs / copy_gbs, r.bytes / (copy_gbs * 1e3),
                sc_diff, r.max_diff_fast);
  }
  CK(cudaFree(flush));
  return 0;
}
