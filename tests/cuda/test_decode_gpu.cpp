// GPU fused decode attention against the CPU reference (kvbits::attention_decode) on the same
// cache: a calibrated plan, a CPU cache filled with structured activations, mirrored to the
// device. Tolerance: max |gpu - cpu| / max |cpu| per output row <= 1e-4 and |lse diff| <= 1e-4.
// Both sides accumulate in fp32 but in different orders (per-thread dots, tensor-core sums of
// hi/lo fp16 halves and split-K merges on the GPU, eight interleaved lanes and fp64 un-rotation
// on the CPU), which moves the last few bits (seen ~1e-6); 1e-4 leaves room without hiding an
// indexing bug (those give O(1)).
//
// Every case runs each kernel that serves it (scalar, tensor-core; fp16 layers have one) and each
// way of passing the queries (q' rotated on the host; q as fp32 / fp16 / bf16, rotated by the
// launch, against the CPU reference fed the same rounded values). Every run poisons out, lse and
// the workspace with NaN first and checks that a second launch gives identical bits.
// Skips cleanly without a GPU. Sanitizer runs use --gtest_filter='*Small*'.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>

#include "attention_scenario.hpp"
#include "cuda/decode.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/encode.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using kvbits::test_attn::Scenario;
using kvbits::test_attn::ScenarioConfig;

namespace {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x << ": " << cudaGetErrorString(cudaGetLastError())

constexpr double kTol = 1e-4;
// The fp16-operand kernel rounds q', the centroids and p * v_scale to fp16 (2^-11 relative each,
// fp32 accumulation), as an fp16 attention kernel rounds q, K and P.
constexpr double kTolFast = 4e-3;

struct Layout {
  const char* name;
  Method method;
  double k_bits;
  int v_bits;
};
const Layout kK3V3{"BlockGTQ-K3V3", Method::block_gtq, 3.0, 3};

// How the queries reach the kernel.
enum class QMode { rotated, raw_f32, raw_f16, raw_bf16 };
const char* qmode_name(QMode m) {
  switch (m) {
    case QMode::rotated: return "q'";
    case QMode::raw_f32: return "q f32";
    case QMode::raw_f16: return "q f16";
    case QMode::raw_bf16: return "q bf16";
  }
  return "?";
}

struct Options {
  uint32_t splits = 0;
  uint32_t layer = 1;
  std::vector<QMode> qmodes = {QMode::rotated, QMode::raw_f32};
  std::vector<uint32_t> variants = {cuda::kDecodeVariantScalar, cuda::kDecodeVariantMma, cuda::kDecodeVariantFast};
};

ScenarioConfig make_cfg(uint32_t q_heads, uint32_t kv_heads, uint32_t D, const Layout& lay,
                        std::vector<uint32_t> lengths, uint32_t page_size = 64, uint32_t layers = 2) {
  ScenarioConfig c;
  c.shape = test_attn::make_shape(layers, q_heads, kv_heads, D);
  c.plan.method = lay.method;
  c.plan.k_avg_bits = lay.k_bits;
  c.plan.v_bits = lay.v_bits;
  c.cache.page_size = page_size;
  c.lengths = std::move(lengths);
  c.threads = 8;
  c.seed = 11 + D + q_heads * 3 + kv_heads;
  return c;
}

ScenarioConfig with_fp16_tokens(ScenarioConfig c, uint32_t sink, uint32_t window, uint32_t chunk) {
  c.plan.sink_tokens = sink;
  c.plan.window_tokens = window;
  c.append_chunk = chunk;
  return c;
}

// The rule decode.hpp documents for the tensor-core kernel.
bool mma_serves(uint32_t D, uint32_t gqa) { return (D == 64 || D == 128 || D == 256) && !(D == 256 && gqa > 8); }
// The fast kernel also needs V codes of at most 5 bits.
bool fast_serves(uint32_t D, uint32_t gqa, int v_bits) { return mma_serves(D, gqa) && v_bits <= 5; }

const char* kernel_name(uint32_t v) {
  return v == cuda::kDecodeVariantFast ? "fast" : v == cuda::kDecodeVariantMma ? "mma" : "scalar";
}

std::string describe(const ScenarioConfig& c, const std::string& layout, uint32_t splits) {
  std::ostringstream o;
  o << layout << " q_heads=" << c.shape.n_q_heads << " kv_heads=" << c.shape.n_kv_heads << " D=" << c.shape.head_dim
    << " page=" << c.cache.page_size << " S=" << c.plan.sink_tokens << " W=" << c.plan.window_tokens
    << " splits=" << (splits ? std::to_string(splits) : "auto") << " lengths={";
  for (size_t i = 0; i < c.lengths.size() && i < 12; ++i) o << (i ? "," : "") << c.lengths[i];
  if (c.lengths.size() > 12) o << ",... (" << c.lengths.size() << " seqs)";
  o << "}";
  return o.str();
}

struct GpuRun {
  std::vector<float> out, lse;
};

struct DeviceOut {
  cuda::DeviceBlock out, lse, ws;
  explicit DeviceOut(const cuda::DecodeParams& p)
      : out(size_t(p.n_seqs) * p.n_q_heads * p.head_dim * 4),
        lse(size_t(p.n_seqs) * p.n_q_heads * 4),
        ws(cuda::decode_workspace_bytes(p)) {}
  void wire(cuda::DecodeParams& p) const { p.out = out.as<float>(), p.lse = lse.as<float>(), p.workspace = ws.get(); }
  void poison() const {
    ASSERT_EQ(cudaMemset(out.get(), 0xFF, out.size()), cudaSuccess);  // 0xFFFFFFFF is a NaN
    ASSERT_EQ(cudaMemset(lse.get(), 0xFF, lse.size()), cudaSuccess);
    ASSERT_EQ(cudaMemset(ws.get(), 0xFF, ws.size()), cudaSuccess);
  }
  void fetch(GpuRun& r) const {
    r.out.resize(out.size() / 4), r.lse.resize(lse.size() / 4);
    ASSERT_EQ(cudaMemcpy(r.out.data(), out.get(), out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(r.lse.data(), lse.get(), lse.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

void expect_close(const std::vector<float>& got, const std::vector<float>& got_lse, const std::vector<float>& ref,
                  const std::vector<float>& ref_lse, uint32_t D, uint32_t n_q, const std::vector<uint32_t>& len,
                  const std::string& what, double tol) {
  double worst = 0.0, worst_lse = 0.0;
  size_t worst_row = 0, worst_lse_row = 0, bad = 0;
  for (size_t r = 0; r < ref_lse.size(); ++r) {
    double err = 0.0, mag = 0.0;
    for (uint32_t d = 0; d < D; ++d) {
      const double e = std::fabs(double(got[r * D + d]) - double(ref[r * D + d]));
      err = e == e ? std::max(err, e) : INFINITY;  // NaN (unwritten) fails
      mag = std::max(mag, std::fabs(double(ref[r * D + d])));
    }
    const double rel = mag > 0 ? err / mag : err;
    const double le = std::fabs(double(got_lse[r]) - double(ref_lse[r]));
    const double lerr = le == le ? le : INFINITY;
    if (rel > tol || lerr > tol) ++bad;
    if (rel > worst || !(rel == rel)) worst = rel, worst_row = r;
    if (lerr > worst_lse) worst_lse = lerr, worst_lse_row = r;
  }
  auto where = [&](size_t r) {
    std::ostringstream o;
    o << "row " << r << " (seq " << r / n_q << " len " << len[r / n_q] << ", q head " << r % n_q << ")";
    return o.str();
  };
  EXPECT_LE(worst, tol) << what << "\n  worst output rel error " << worst << " at " << where(worst_row) << "; "
                         << bad << " of " << ref_lse.size() << " rows out of tolerance\n  got[0..3] = "
                         << got[worst_row * D] << " " << got[worst_row * D + 1] << " " << got[worst_row * D + 2]
                         << "  cpu[0..3] = " << ref[worst_row * D] << " " << ref[worst_row * D + 1] << " "
                         << ref[worst_row * D + 2];
  EXPECT_LE(worst_lse, tol) << what << "\n  worst lse error " << worst_lse << " at " << where(worst_lse_row)
                             << ": gpu " << got_lse[worst_lse_row] << " cpu " << ref_lse[worst_lse_row];
  if (::testing::Test::HasFailure()) return;
  std::printf("  ok  %-120s  max rel %.2e  max lse %.2e\n", what.c_str(), worst, worst_lse);
}

// The queries of one call in the chosen mode: host bytes for the CPU reference and the mirror.
struct Queries {
  std::vector<float> f32;
  std::vector<uint16_t> bits;  // f16 / bf16
  DType dtype = DType::f32;
  const void* data() const { return dtype == DType::f32 ? static_cast<const void*>(f32.data()) : bits.data(); }
};

Queries make_queries(const std::vector<float>& q, QMode m) {
  Queries r;
  r.f32 = q;
  if (m == QMode::raw_f16 || m == QMode::raw_bf16) {
    r.dtype = m == QMode::raw_f16 ? DType::f16 : DType::bf16;
    r.bits.resize(q.size());
    for (size_t i = 0; i < q.size(); ++i) r.bits[i] = m == QMode::raw_f16 ? float_to_half(q[i]) : float_to_bf16(q[i]);
  }
  return r;
}

// One launch of a prepared mirror: poisoned outputs, compared with the reference, a second launch
// bit-identical to the first.
void run_and_compare(const cuda::DeviceCacheMirror& mirror, cuda::DecodeParams p, const std::vector<float>& ref,
                     const std::vector<float>& ref_lse, const std::string& what) {
  DeviceOut dev(p);
  dev.wire(p);
  const std::string tag = what + " (" + std::to_string(cuda::decode_splits(p)) + "+" +
                          std::to_string(cuda::decode_fp16_splits(p)) + " splits)";
  GpuRun a, b;
  dev.poison();
  cuda::decode_attention(p, nullptr);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  dev.fetch(a);
  const bool fast = cuda::decode_variant(p) == cuda::kDecodeVariantFast;
  expect_close(a.out, a.lse, ref, ref_lse, p.head_dim, p.n_q_heads, mirror.lengths(), tag, fast ? kTolFast : kTol);
  dev.poison();
  cuda::decode_attention(p, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  dev.fetch(b);
  EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4)) << tag << ": second run differs";
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4)) << tag << ": second run lse differs";
}

// Builds the scenario once, then for every query mode and kernel variant that applies: CPU
// reference on layer opt.layer, GPU decode, comparison, bit-identical rerun.
void check_case(const ScenarioConfig& cfg, const std::string& layout, const Options& opt = {}) {
  Scenario sc(cfg);
  const auto& seqs = sc.seqs();
  const uint32_t n = uint32_t(seqs.size()), Hq = cfg.shape.n_q_heads, D = cfg.shape.head_dim;
  const uint32_t gqa = Hq / cfg.shape.n_kv_heads;
  const bool fp16_layer = std::find(cfg.plan.fp16_layers.begin(), cfg.plan.fp16_layers.end(), opt.layer) !=
                          cfg.plan.fp16_layers.end();
  const bool fp16_tokens = cfg.plan.sink_tokens + cfg.plan.window_tokens > 0;
  cuda::DeviceCacheMirror mirror(sc.cache(), opt.layer, seqs);
  const std::vector<float> q = sc.queries(n, 5 + opt.layer);
  for (QMode m : opt.qmodes) {
    if (m == QMode::rotated && (fp16_layer || fp16_tokens)) continue;  // needs the unrotated q
    const Queries qs = make_queries(q, m);
    std::vector<float> ref(size_t(n) * Hq * D), ref_lse(size_t(n) * Hq);
    attention_decode(sc.cache(), opt.layer, seqs.data(), n, qs.data(), qs.dtype, ref.data(), ref_lse.data(), {});
    if (m == QMode::rotated) mirror.set_queries(q.data());
    else mirror.set_raw_queries(qs.data(), qs.dtype);
    const std::vector<uint32_t> variants = fp16_layer ? std::vector<uint32_t>{0u} : opt.variants;
    for (uint32_t v : variants) {
      if (v == cuda::kDecodeVariantMma && !mma_serves(D, gqa)) continue;  // refusal: RefusedConfigurations
      if (v == cuda::kDecodeVariantFast && !fast_serves(D, gqa, cfg.plan.v_bits)) continue;
      cuda::DecodeParams p = mirror.params();
      p.splits = opt.splits;
      p.variant = v;
      const std::string kernel = fp16_layer ? "fp16 layer" : kernel_name(v);
      run_and_compare(mirror, p, ref, ref_lse,
                      describe(cfg, layout, opt.splits) + " layer " + std::to_string(opt.layer) + " [" + kernel +
                          ", " + qmode_name(m) + "]");
    }
  }
}

class GpuDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

}  // namespace

TEST_F(GpuDecode, SmallSanitizerCase) {
  // Kept small for compute-sanitizer: pages crossed, a partial page, empty splits.
  Options o;
  o.splits = 3;
  check_case(make_cfg(8, 2, 64, kK3V3, {1, 65, 130}), kK3V3.name, o);
}

TEST_F(GpuDecode, SmallSanitizerPageSize16) {
  Options o;
  o.splits = 2;
  check_case(make_cfg(4, 2, 64, kK3V3, {17, 100}, 16), kK3V3.name, o);
}

TEST_F(GpuDecode, SmallSanitizerSinkWindow) {
  Options o;
  o.splits = 2;
  o.qmodes = {QMode::raw_f32};
  check_case(with_fp16_tokens(make_cfg(8, 2, 64, kK3V3, {3, 40, 150}), 4, 16, 7), kK3V3.name, o);
}

TEST_F(GpuDecode, SmallSanitizerFp16Layer) {
  ScenarioConfig cfg = with_fp16_tokens(make_cfg(4, 2, 64, kK3V3, {5, 70}), 2, 8, 5);
  cfg.plan.fp16_layers = {0};
  Options o;
  o.layer = 0;
  o.qmodes = {QMode::raw_f32};
  check_case(cfg, kK3V3.name, o);
}

TEST_F(GpuDecode, ContextsCrossingPagesAllLayouts) {
  const Layout lays[] = {{"BlockGTQ-K2V2", Method::block_gtq, 2.0, 2},
                         kK3V3,
                         {"BlockGTQ-K4V4", Method::block_gtq, 4.0, 4},
                         {"Uniform-K3V3", Method::uniform_tq_mse, 3.0, 3}};
  for (const Layout& l : lays) check_case(make_cfg(8, 2, 128, l, {1, 63, 64, 65, 1000, 4097}), l.name);
}

TEST_F(GpuDecode, FastKernelVWidths) {
  // The fast kernel has variants compiled for V widths 2..4 at D = 64 / 128 (one of them for GQA
  // 16: two query tiles) and reads any other width at run time: every path against the CPU.
  const Layout lays[] = {{"BlockGTQ-K3V1", Method::block_gtq, 3.0, 1},
                         {"BlockGTQ-K2V2", Method::block_gtq, 2.0, 2},
                         {"BlockGTQ-K4V4", Method::block_gtq, 4.0, 4},
                         {"BlockGTQ-K5V5", Method::block_gtq, 5.0, 5}};
  for (const Layout& l : lays)
    for (uint32_t D : {64u, 128u}) check_case(make_cfg(8, 2, D, l, {1, 65, 700}), l.name);
  check_case(make_cfg(16, 1, 64, {"BlockGTQ-K2V2", Method::block_gtq, 2.0, 2}, {300}), "BlockGTQ-K2V2");
  check_case(make_cfg(16, 1, 128, {"BlockGTQ-K4V4", Method::block_gtq, 4.0, 4}, {300}), "BlockGTQ-K4V4");
}

TEST_F(GpuDecode, FastKernelTailChunks) {
  // The fast kernel pads a K group of dims = 16 n + r to 16 n + 8 when 0 < r <= 8 and runs the
  // last 8 slots as an m16n8k8 step: pair tables (<= 5 bits) and one-value tables (6..8 bits)
  // each have their own tail path. Plans over several budgets and head dims must exercise both,
  // and every one must match the CPU.
  uint32_t pair_tails = 0, wide_tails = 0;
  const Layout lays[] = {{"BlockGTQ-K3V3", Method::block_gtq, 3.0, 3},
                         {"BlockGTQ-K5V4", Method::block_gtq, 5.0, 4},
                         {"BlockGTQ-K6V5", Method::block_gtq, 6.0, 5},
                         {"BlockGTQ-K7V2", Method::block_gtq, 7.0, 2}};
  Options opt;
  opt.variants = {cuda::kDecodeVariantFast};
  for (const Layout& l : lays)
    for (uint32_t D : {64u, 128u}) {
      const ScenarioConfig cfg = make_cfg(8, 2, D, l, {1, 200, 777});
      {
        Scenario sc(cfg);
        for (uint32_t h = 0; h < cfg.shape.n_kv_heads; ++h)
          for (const KeyGroup& g : sc.cache().quantizers(opt.layer, h).k.groups())
            if (g.dims % 16 != 0 && g.dims % 16 <= 8) ++(g.bits <= 5 ? pair_tails : wide_tails);
      }
      check_case(cfg, l.name, opt);
    }
  std::printf("  K groups with an 8-slot tail: %u with pair tables, %u with one-value tables\n", pair_tails, wide_tails);
  EXPECT_GT(pair_tails, 0u);
  EXPECT_GT(wide_tails, 0u);
}

TEST_F(GpuDecode, EightBitCodes) {
  // 8-bit V needs two windows per four codes in the tensor-core kernel; 8-bit K groups one per pair.
  check_case(make_cfg(8, 2, 128, {"BlockGTQ-K8V8", Method::block_gtq, 8.0, 8}, {1, 300}), "BlockGTQ-K8V8");
  check_case(make_cfg(4, 2, 64, {"Uniform-K8V8", Method::uniform_tq_mse, 8.0, 8}, {77}), "Uniform-K8V8");
}

TEST_F(GpuDecode, HeadDims) {
  for (uint32_t D : {8u, 64u, 128u, 256u}) check_case(make_cfg(4, 2, D, kK3V3, {1, 65, 700}), kK3V3.name);
  check_case(make_cfg(16, 2, 256, kK3V3, {129, 300}), kK3V3.name);  // D 256, GQA 8: the widest mma shape
  check_case(make_cfg(32, 2, 256, kK3V3, {129}), kK3V3.name);       // D 256, GQA 16: scalar only
}

TEST_F(GpuDecode, GqaRatios) {
  for (uint32_t g : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 12u, 16u})
    check_case(make_cfg(2 * g, 2, 64, kK3V3, {130, 513}), kK3V3.name);
}

TEST_F(GpuDecode, Batch64MixedLengths) {
  std::mt19937 rng(3);
  std::vector<uint32_t> len(64);
  for (auto& l : len) l = 1 + rng() % 300;
  len[17] = 1000;
  check_case(make_cfg(8, 2, 128, kK3V3, len), kK3V3.name);
  check_case(make_cfg(32, 8, 128, kK3V3, std::vector<uint32_t>(len.begin(), len.begin() + 8)), kK3V3.name);
}

TEST_F(GpuDecode, Batch1LongContextGqa16) { check_case(make_cfg(16, 1, 128, kK3V3, {4097}), kK3V3.name); }

TEST_F(GpuDecode, Batch1LongContextQwenShape) {
  // Many splits of a few quads each, as in the benchmark's batch-1 shapes.
  check_case(make_cfg(16, 2, 128, kK3V3, {20000}, 64, 2), kK3V3.name);
}

TEST_F(GpuDecode, PageSizes) {
  for (uint32_t P : {1u, 16u, 32u, 64u, 128u, 256u})
    check_case(make_cfg(8, 2, 64, kK3V3, {1, 100, 300}, P), kK3V3.name);
}

TEST_F(GpuDecode, ForcedSplitsIncludingEmptyOnes) {
  for (uint32_t s : {1u, 2u, 3u, 7u, 64u}) {
    Options o;
    o.splits = s;
    check_case(make_cfg(8, 2, 64, kK3V3, {1, 200, 1000}), kK3V3.name, o);
  }
}

TEST_F(GpuDecode, SinkOnly) {
  // Tokens in the sink only (len <= S), and sequences that go past it into pages.
  Options o;
  o.qmodes = {QMode::raw_f32, QMode::raw_f16};
  check_case(with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {3, 8, 9, 200}), 8, 0, 0), kK3V3.name, o);
}

TEST_F(GpuDecode, RingOnly) {
  // No sink, a 32-token window filled in chunks of 13 so the ring wraps around.
  Options o;
  o.qmodes = {QMode::raw_f32};
  check_case(with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {5, 32, 33, 300}), 0, 32, 13), kK3V3.name, o);
}

TEST_F(GpuDecode, SinkAndRing) {
  Options o;
  o.qmodes = {QMode::raw_f32, QMode::raw_bf16};
  check_case(with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {1, 4, 50, 68, 69, 1000}), 4, 64, 20), kK3V3.name, o);
}

TEST_F(GpuDecode, SinkAndRingCrossingSmallPages) {
  Options o;
  o.qmodes = {QMode::raw_f32};
  check_case(with_fp16_tokens(make_cfg(4, 2, 64, kK3V3, {10, 100, 333}, 16), 3, 20, 9), kK3V3.name, o);
  o.splits = 5;
  check_case(with_fp16_tokens(make_cfg(4, 2, 64, kK3V3, {10, 100, 333}, 1), 3, 20, 9), kK3V3.name, o);
}

TEST_F(GpuDecode, WideWindowSeveralFp16Splits) {
  // S + W = 604 rows: five fp16 splits per (sequence, KV head).
  Options o;
  o.qmodes = {QMode::raw_f32};
  check_case(with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {700, 2000, 300}), 4, 600, 150), kK3V3.name, o);
}

TEST_F(GpuDecode, Fp16Layers) {
  for (uint32_t window : {0u, 32u}) {
    ScenarioConfig cfg = with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {1, 70, 1000}, 64, 3), window ? 4 : 0, window, 17);
    cfg.plan.fp16_layers = {0, 2};
    Options o;
    o.qmodes = {QMode::raw_f32, QMode::raw_bf16};
    for (uint32_t layer : {0u, 1u, 2u}) {
      o.layer = layer;
      check_case(cfg, kK3V3.name, o);
    }
  }
}

TEST_F(GpuDecode, QueryDtypes) {
  Options o;
  o.qmodes = {QMode::rotated, QMode::raw_f32, QMode::raw_f16, QMode::raw_bf16};
  check_case(make_cfg(16, 2, 128, kK3V3, {100, 1500}), kK3V3.name, o);
  check_case(make_cfg(16, 2, 128, {"Uniform-K3V3", Method::uniform_tq_mse, 3.0, 3}, {100, 1500}), "Uniform-K3V3", o);
}

TEST_F(GpuDecode, AutoVariant) {
  {
    Scenario sc(make_cfg(16, 2, 128, kK3V3, {100}, 64, 1));
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(16 * 128, 0.25f);
    m.set_queries(q.data());
    EXPECT_EQ(cuda::decode_variant(m.params()), cuda::kDecodeVariantFast);
  }
  {  // 8-bit V: no pair tables, so the fp32-grade tensor-core kernel
    Scenario sc(make_cfg(16, 2, 128, {"BlockGTQ-K8V8", Method::block_gtq, 8.0, 8}, {100}, 64, 1));
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(16 * 128, 0.25f);
    m.set_queries(q.data());
    EXPECT_EQ(cuda::decode_variant(m.params()), cuda::kDecodeVariantMma);
  }
  {
    Scenario sc(make_cfg(4, 2, 8, kK3V3, {100}, 64, 1));
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 8, 0.25f);
    m.set_queries(q.data());
    EXPECT_EQ(cuda::decode_variant(m.params()), cuda::kDecodeVariantScalar);
  }
  {
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {100}, 64, 1);
    cfg.plan.fp16_layers = {0};
    Scenario sc(cfg);
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 64, 0.25f);
    m.set_raw_queries(q.data(), DType::f32);
    EXPECT_EQ(cuda::decode_variant(m.params()), 0u);
  }
}

TEST_F(GpuDecode, CudaGraphReplayGivesIdenticalOutput) {
  struct GraphCase {
    ScenarioConfig cfg;
    uint32_t variant;
  };
  const GraphCase cases[] = {{make_cfg(8, 2, 128, kK3V3, {1, 64, 65, 1000}), cuda::kDecodeVariantScalar},
                             {make_cfg(8, 2, 128, kK3V3, {1, 64, 65, 1000}), cuda::kDecodeVariantMma},
                             {with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {3, 64, 200, 1000}), 4, 32, 11),
                              cuda::kDecodeVariantMma},
                             {make_cfg(8, 2, 128, kK3V3, {1, 64, 65, 1000}), cuda::kDecodeVariantFast},
                             {with_fp16_tokens(make_cfg(8, 2, 128, kK3V3, {3, 64, 200, 1000}), 4, 32, 11),
                              cuda::kDecodeVariantFast}};
  for (const GraphCase& gc : cases) {
    Scenario sc(gc.cfg);
    const uint32_t n = uint32_t(sc.seqs().size());
    const std::vector<float> q = sc.queries(n, 9);
    cuda::DeviceCacheMirror mirror(sc.cache(), 1, sc.seqs());
    mirror.set_raw_queries(q.data(), DType::f32);
    cuda::DecodeParams p = mirror.params();
    p.variant = gc.variant;
    DeviceOut dev(p);
    dev.wire(p);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    GpuRun direct, replay;
    dev.poison();
    cuda::decode_attention(p, stream);
    CUDA_OK(cudaStreamSynchronize(stream));
    dev.fetch(direct);

    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    cuda::decode_attention(p, stream);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    size_t n_nodes = 0;
    CUDA_OK(cudaGraphGetNodes(graph, nullptr, &n_nodes));
    const bool fast = gc.variant == cuda::kDecodeVariantFast;
    EXPECT_EQ(n_nodes, fast ? 3u : 2u) << "(fast: prep +) decode + merge kernel nodes, nothing else";
    for (int rep = 0; rep < 3; ++rep) {
      dev.poison();
      CUDA_OK(cudaGraphLaunch(exec, stream));
      CUDA_OK(cudaStreamSynchronize(stream));
      dev.fetch(replay);
      EXPECT_EQ(0, std::memcmp(direct.out.data(), replay.out.data(), direct.out.size() * 4)) << "replay " << rep;
      EXPECT_EQ(0, std::memcmp(direct.lse.data(), replay.lse.data(), direct.lse.size() * 4)) << "replay " << rep;
    }
    std::vector<float> ref(direct.out.size()), ref_lse(direct.lse.size());
    attention_decode(sc.cache(), 1, sc.seqs().data(), n, q.data(), DType::f32, ref.data(), ref_lse.data(), {});
    expect_close(replay.out, replay.lse, ref, ref_lse, 128, 8, mirror.lengths(),
                 "graph replay, variant " + std::to_string(gc.variant),
                 gc.variant == cuda::kDecodeVariantFast ? kTolFast : kTol);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST_F(GpuDecode, RefusedConfigurations) {
  auto expect_code = [](auto&& fn, StatusCode code, const char* what) {
    try {
      fn();
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << what << ": " << e.what();
    }
  };
  {  // the launcher's own checks on a packed layer
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 48, 1);
    Scenario sc(cfg);
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 64, 0.5f);
    m.set_queries(q.data());
    cuda::DecodeParams p = m.params();
    DeviceOut dev(p);
    dev.wire(p);
    expect_code([&] { cuda::decode_attention(p, nullptr); }, StatusCode::unsupported, "page size 48");
    p.page_size = 64;
    p.variant = 4;
    expect_code([&] { cuda::decode_attention(p, nullptr); }, StatusCode::invalid_argument, "variant 4");
    p.variant = 0;
    p.window_tokens = 8;  // fp16 tokens with only q' given
    expect_code([&] { cuda::decode_attention(p, nullptr); }, StatusCode::null_pointer, "window with q_rot only");
    p.window_tokens = 0;
    p.q = p.q_rot;
    p.q_dtype = 3;
    expect_code([&] { cuda::decode_attention(p, nullptr); }, StatusCode::invalid_argument, "q_dtype 3");
    p.q = nullptr;
    p.q_dtype = 0;
    p.n_q_heads = 64;
    expect_code([&] { cuda::decode_attention(p, nullptr); }, StatusCode::unsupported, "GQA 32");
  }
  {  // the tensor-core kernel asked for a head_dim it does not serve
    Scenario sc(make_cfg(4, 2, 8, kK3V3, {40}, 64, 1));
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 8, 0.5f);
    m.set_queries(q.data());
    cuda::DecodeParams p = m.params();
    p.variant = cuda::kDecodeVariantMma;
    expect_code([&] { cuda::decode_splits(p); }, StatusCode::unsupported, "mma at D = 8");
    p.variant = cuda::kDecodeVariantFast;
    expect_code([&] { cuda::decode_splits(p); }, StatusCode::unsupported, "fast at D = 8");
  }
  {  // the fast kernel asked for 8-bit V codes
    Scenario sc(make_cfg(4, 2, 64, {"Uniform-K8V8", Method::uniform_tq_mse, 8.0, 8}, {40}, 64, 1));
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 64, 0.5f);
    m.set_queries(q.data());
    cuda::DecodeParams p = m.params();
    p.variant = cuda::kDecodeVariantFast;
    expect_code([&] { cuda::decode_splits(p); }, StatusCode::unsupported, "fast with 8-bit V");
  }
  {  // rotated queries for an fp16 layer
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 64, 1);
    cfg.plan.fp16_layers = {0};
    Scenario sc(cfg);
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 64, 0.5f);
    expect_code([&] { m.set_queries(q.data()); }, StatusCode::unsupported, "set_queries on an fp16 layer");
  }
}
