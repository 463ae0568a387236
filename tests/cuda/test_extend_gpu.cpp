// GPU extend attention (cuda/extend.hpp) against the CPU reference kvbits::attention_extend and
// against fp64 softmax attention over the dequantized cache (Cache::read), on calibrated plans
// and CPU caches mirrored to the device.
//
// Tolerance. The kernel rounds three things to fp16 (unit roundoff u = 2^-11) before its tensor-
// core products: q~ = q' * scale * log2 e, the dequantized rows K^ / V^ (packed tokens; fp16 tokens
// are exact), and the softmax weights P for P V^. Products are exact and accumulate in fp32.
// A logit then moves by at most 2u * scale * sum_d |q'_d k^_d| and every output by about u
// relative through P and V^. On these structured activations (per-block energies spanning three
// orders of magnitude, |logits| up to ~20) a CPU emulation of exactly these roundings gives at
// most 4.8e-3 for max |out - ref| / max |ref| per row (GQA 16, D = 64) and 2.0e-3 on the LSE
// over every case below (alone, on one case: rounding K^ 2.4e-3, q 1.2e-3, P 0.75e-3, V^
// 0.87e-3). The tests hold every row to 1e-2 (outputs) and 5e-3 (LSE): 2x and 2.5x above that,
// far below what an indexing or masking error gives (a wrong token for the first query of a
// chunk, which sees one to a few tokens, is O(1)). The CPU reference itself is checked against
// fp64 to 1e-5 in the same cases.
// Every run poisons out, lse and the workspace with NaN first (unwritten rows fail) and runs
// twice: the two results must be bit-identical. Sanitizer runs use --gtest_filter='*Small*'.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>

#include "attention_scenario.hpp"
#include "cuda/encode.hpp"
#include "cuda/extend.hpp"
#include "extend_mirror.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using kvbits::test_attn::Scenario;
using kvbits::test_attn::ScenarioConfig;
using kvbits::test_ext::ExtendMirror;

namespace {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x << ": " << cudaGetErrorString(cudaGetLastError())

constexpr double kTolOut = 1e-2;   // max |gpu - ref| / max |ref| per output row (fp16 operands)
constexpr double kTolLse = 5e-3;   // |gpu lse - ref lse|
constexpr double kTolCpu = 1e-5;   // the CPU reference against fp64

struct Variant {
  const char* name;
  Method method;
  double k_bits;
  int v_bits;
};
const Variant kK3V3{"BlockGTQ-K3V3", Method::block_gtq, 3.0, 3};

ScenarioConfig make_cfg(uint32_t q_heads, uint32_t kv_heads, uint32_t D, std::vector<uint32_t> lengths,
                        const Variant& var = kK3V3, uint32_t page_size = 64) {
  ScenarioConfig c;
  c.shape = test_attn::make_shape(2, q_heads, kv_heads, D);
  c.plan.method = var.method;
  c.plan.k_avg_bits = var.k_bits;
  c.plan.v_bits = var.v_bits;
  c.cache.page_size = page_size;
  c.lengths = std::move(lengths);
  c.threads = 8;
  c.seed = 17 + D + q_heads * 5 + kv_heads;
  return c;
}

struct Case {
  ScenarioConfig cfg;
  std::vector<uint32_t> q_len;  // per sequence, 0 allowed
  DType dtype = DType::f32;
  uint32_t splits = 0;  // 0 = automatic
  uint32_t warps = 0;   // warps per CTA: 0 = automatic, 4 or 8
  uint32_t layer = 1;
  float scale = 0.0f;
  std::string name;
};

std::string describe(const Case& c, uint32_t splits) {
  std::ostringstream o;
  o << c.name << " q_heads=" << c.cfg.shape.n_q_heads << " kv_heads=" << c.cfg.shape.n_kv_heads
    << " D=" << c.cfg.shape.head_dim << " page=" << c.cfg.cache.page_size << " q=" << dtype_name(c.dtype)
    << " splits=" << splits << " warps=" << (c.warps ? std::to_string(c.warps) : "auto") << " (len/q_len)={";
  for (size_t i = 0; i < c.q_len.size() && i < 8; ++i) o << (i ? "," : "") << c.cfg.lengths[i] << "/" << c.q_len[i];
  if (c.q_len.size() > 8) o << ",... (" << c.q_len.size() << " seqs)";
  o << "}";
  return o.str();
}

// Queries [rows][Hq][D] in `dtype` as bytes, and their exact fp32 widening.
struct Queries {
  std::vector<uint8_t> bytes;
  std::vector<float> widened;
};

Queries make_queries(const Scenario& sc, size_t rows, DType dtype, uint64_t salt) {
  Queries q;
  q.widened = sc.queries(rows, salt);
  q.bytes.resize(q.widened.size() * dtype_size(dtype));
  for (size_t i = 0; i < q.widened.size(); ++i) {
    if (dtype == DType::f32) continue;
    const uint16_t b = dtype == DType::f16 ? float_to_half(q.widened[i]) : float_to_bf16(q.widened[i]);
    std::memcpy(q.bytes.data() + 2 * i, &b, 2);
    q.widened[i] = dtype == DType::f16 ? half_to_float(b) : bf16_to_float(b);
  }
  if (dtype == DType::f32) std::memcpy(q.bytes.data(), q.widened.data(), q.bytes.size());
  return q;
}

struct GpuRun {
  std::vector<float> out, lse;
};

// Device outputs and workspace of one parameter set.
struct DeviceOut {
  cuda::DeviceBlock out, lse, ws;
  explicit DeviceOut(const cuda::ExtendParams& p)
      : out(size_t(p.total_q) * p.base.n_q_heads * p.base.head_dim * 4),
        lse(size_t(p.total_q) * p.base.n_q_heads * 4),
        ws(std::max<size_t>(1, cuda::extend_workspace_bytes(p))) {}
  void wire(cuda::ExtendParams& p) const {
    p.base.out = out.as<float>(), p.base.lse = lse.as<float>(), p.base.workspace = ws.get();
  }
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

struct Worst {
  double out = 0.0, lse = 0.0;
  size_t out_row = 0, lse_row = 0, bad = 0;
};

// Max |got - ref| / max |ref| per row of D and |lse diff| over `rows` rows; NaN counts as inf.
template <class T>
Worst compare_rows(const float* got, const float* got_lse, const T* ref, const T* ref_lse, size_t rows, uint32_t D,
                   double tol_out, double tol_lse) {
  Worst w;
  for (size_t r = 0; r < rows; ++r) {
    double err = 0.0, mag = 0.0;
    for (uint32_t d = 0; d < D; ++d) {
      const double e = std::fabs(double(got[r * D + d]) - double(ref[r * D + d]));
      err = e == e ? std::max(err, e) : INFINITY;
      mag = std::max(mag, std::fabs(double(ref[r * D + d])));
    }
    double rel = mag > 0 ? err / mag : err;
    if (!(rel == rel)) rel = INFINITY;
    const double le = std::fabs(double(got_lse[r]) - double(ref_lse[r]));
    const double lerr = le == le ? le : INFINITY;
    if (rel > tol_out || lerr > tol_lse) ++w.bad;
    if (rel > w.out) w.out = rel, w.out_row = r;
    if (lerr > w.lse) w.lse = lerr, w.lse_row = r;
  }
  return w;
}

// Where a global row sits: sequence, query index, head.
std::string where(const Case& c, const std::vector<uint32_t>& q_off, size_t row) {
  const uint32_t Hq = c.cfg.shape.n_q_heads;
  const size_t tok = row / Hq;
  size_t s = 0;
  while (s + 1 < q_off.size() && q_off[s + 1] <= tok) ++s;
  std::ostringstream o;
  o << "row " << row << " (seq " << s << " len " << c.cfg.lengths[s] << " q_len " << c.q_len[s] << ", query "
    << tok - q_off[s] << ", head " << row % Hq << ")";
  return o.str();
}

void run_gpu(const cuda::ExtendParams& p, const DeviceOut& dev, GpuRun& r, cudaStream_t stream = nullptr) {
  dev.poison();
  cuda::extend_attention(p, stream);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  dev.fetch(r);
}

// Builds the scenario, runs the CPU references and the GPU kernel twice, compares.
void check_case(const Case& c) {
  Scenario sc(c.cfg);
  const auto& seqs = sc.seqs();
  const uint32_t Hq = c.cfg.shape.n_q_heads, D = c.cfg.shape.head_dim;
  ASSERT_EQ(c.q_len.size(), seqs.size());
  uint32_t total_q = 0;
  std::vector<uint64_t> cpu_seqs;
  std::vector<uint32_t> cpu_q_len;
  std::vector<size_t> which;
  for (size_t i = 0; i < seqs.size(); ++i) {
    total_q += c.q_len[i];
    if (c.q_len[i] == 0) continue;  // the CPU reference refuses q_len = 0; such a sequence adds no row
    cpu_seqs.push_back(seqs[i]), cpu_q_len.push_back(c.q_len[i]), which.push_back(i);
  }
  ASSERT_GT(total_q, 0u);
  const Queries q = make_queries(sc, total_q, c.dtype, 5 + c.layer + total_q);
  const size_t rows = size_t(total_q) * Hq;
  std::vector<float> ref(rows * D), ref_lse(rows);
  AttentionParams ap;
  ap.scale = c.scale;
  attention_extend(sc.cache(), c.layer, cpu_seqs.data(), cpu_q_len.data(), cpu_seqs.size(), q.bytes.data(), c.dtype,
                   ref.data(), ref_lse.data(), ap);
  std::vector<double> ref64, ref64_lse;
  sc.reference(c.layer, which, cpu_q_len, q.widened.data(), c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D)), false,
               ref64, ref64_lse);
  const Worst cpu = compare_rows(ref.data(), ref_lse.data(), ref64.data(), ref64_lse.data(), rows, D, kTolCpu, kTolCpu);
  EXPECT_LE(cpu.out, kTolCpu) << c.name << ": the CPU reference is off fp64 (test setup)";
  EXPECT_LE(cpu.lse, kTolCpu) << c.name << ": the CPU reference LSE is off fp64 (test setup)";

  ExtendMirror mirror(sc.cache(), c.layer, seqs, c.q_len);
  mirror.set_queries(q.bytes.data(), c.dtype);
  cuda::ExtendParams p = mirror.params();
  p.base.splits = c.splits;
  p.base.scale = c.scale;
  p.warps = c.warps;
  DeviceOut dev(p);
  dev.wire(p);
  const std::string what = describe(c, cuda::extend_splits(p));
  GpuRun a, b;
  run_gpu(p, dev, a);
  const Worst w = compare_rows(a.out.data(), a.lse.data(), ref.data(), ref_lse.data(), rows, D, kTolOut, kTolLse);
  const Worst w64 = compare_rows(a.out.data(), a.lse.data(), ref64.data(), ref64_lse.data(), rows, D, kTolOut, kTolLse);
  const auto& qo = mirror.q_offsets();
  EXPECT_LE(w.out, kTolOut) << what << "\n  vs CPU: worst output rel error " << w.out << " at " << where(c, qo, w.out_row)
                            << "; " << w.bad << " of " << rows << " rows out of tolerance\n  got[0..2] = "
                            << a.out[w.out_row * D] << " " << a.out[w.out_row * D + 1] << " " << a.out[w.out_row * D + 2]
                            << "  cpu[0..2] = " << ref[w.out_row * D] << " " << ref[w.out_row * D + 1] << " "
                            << ref[w.out_row * D + 2];
  EXPECT_LE(w.lse, kTolLse) << what << "\n  vs CPU: worst lse error " << w.lse << " at " << where(c, qo, w.lse_row)
                            << ": gpu " << a.lse[w.lse_row] << " cpu " << ref_lse[w.lse_row];
  EXPECT_LE(w64.out, kTolOut) << what << ": vs fp64, worst output rel error " << w64.out;
  EXPECT_LE(w64.lse, kTolLse) << what << ": vs fp64, worst lse error " << w64.lse;
  run_gpu(p, dev, b);
  EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4)) << what << ": second run differs";
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4)) << what << ": second run lse differs";
  ::testing::Test::RecordProperty("max_rel_error", std::to_string(w64.out));
  if (!::testing::Test::HasFailure())
    std::printf("  ok  %-100s  vs fp64: max rel %.2e  max lse %.2e\n", what.c_str(), w64.out, w64.lse);
}

Case make_case(std::string name, ScenarioConfig cfg, std::vector<uint32_t> q_len, DType dtype = DType::f32,
               uint32_t splits = 0, uint32_t warps = 0) {
  Case c;
  c.name = std::move(name), c.cfg = std::move(cfg), c.q_len = std::move(q_len), c.dtype = dtype, c.splits = splits;
  c.warps = warps;
  return c;
}

class GpuExtend : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

}  // namespace

TEST_F(GpuExtend, SmallSanitizerCase) {
  // Small for compute-sanitizer: pages crossed, a partial tile, two splits, a q_len of 0.
  check_case(make_case("small", make_cfg(8, 2, 64, {70, 130, 20}), {7, 64, 0}, DType::f32, 2));
}

TEST_F(GpuExtend, SmallSanitizerEightWarps) {
  check_case(make_case("small, 8 warps", make_cfg(8, 2, 64, {70, 130, 20}), {7, 64, 0}, DType::f32, 2, 8));
}

TEST_F(GpuExtend, SmallSanitizerSinkWindowFp16Layer) {
  ScenarioConfig cfg = make_cfg(4, 2, 64, {10, 90});
  cfg.plan.sink_tokens = 4, cfg.plan.window_tokens = 16, cfg.append_chunk = 13;
  check_case(make_case("small sink 4 window 16", cfg, {3, 40}));
  cfg.plan.fp16_layers = {1};
  check_case(make_case("small fp16 layer, sink 4 window 16", cfg, {3, 40}));
}

TEST_F(GpuExtend, ChunkSizes) {
  // Each chunk after a 150-token prefix (pages crossed), and the 2048 chunk on a smaller head
  // (the fp64 reference costs rows x context x D on the CPU).
  for (uint32_t chunk : {1u, 7u, 64u, 300u})
    check_case(make_case("chunk " + std::to_string(chunk), make_cfg(8, 2, 128, {150 + chunk, 70 + chunk}),
                         {chunk, chunk}));
  check_case(make_case("chunk 2048", make_cfg(2, 1, 64, {2100}), {2048}));
}

TEST_F(GpuExtend, CtaSizes) {
  // Both CTA shapes (64 and 128 query rows) on the same cases: GQA 3 leaves rows idle in both,
  // sink/window and fp16 layers take the fp16 paths.
  for (uint32_t w : {4u, 8u}) {
    const std::string tag = " (" + std::to_string(w) + " warps)";
    check_case(make_case("gqa 3" + tag, make_cfg(6, 2, 128, {200, 500}), {200, 301}, DType::f32, 0, w));
    check_case(make_case("D 256" + tag, make_cfg(8, 1, 256, {300}), {257}, DType::f16, 3, w));
    ScenarioConfig cfg = make_cfg(8, 2, 64, {100, 400});
    cfg.plan.sink_tokens = 4, cfg.plan.window_tokens = 32, cfg.append_chunk = 33;
    check_case(make_case("sink 4 window 32" + tag, cfg, {100, 200}, DType::f32, 2, w));
    cfg.plan.fp16_layers = {1};
    check_case(make_case("fp16 layer, sink 4 window 32" + tag, cfg, {100, 200}, DType::f32, 2, w));
  }
}

TEST_F(GpuExtend, WholeSequenceAsChunk) {
  // q_len = len: query 0 sees only token 0, so an off-by-one in the causal mask is an O(1) error.
  check_case(make_case("q_len = len", make_cfg(8, 2, 128, {1, 64, 65, 200}), {1, 64, 65, 200}));
}

TEST_F(GpuExtend, BatchesWithMixedQueryCounts) {
  std::mt19937 rng(5);
  for (uint32_t batch : {1u, 3u, 16u}) {
    std::vector<uint32_t> len(batch), ql(batch);
    for (uint32_t i = 0; i < batch; ++i) {
      len[i] = 1 + rng() % 500;
      ql[i] = rng() % 4 == 0 ? 0 : 1 + rng() % std::min(len[i], 150u);
    }
    if (batch > 1) ql[0] = 0, ql[batch - 1] = std::max(ql[batch - 1], 1u);
    if (batch == 1) ql[0] = std::max(ql[0], 1u);
    check_case(make_case("batch " + std::to_string(batch), make_cfg(8, 2, 128, len), ql));
  }
}

TEST_F(GpuExtend, GqaRatios) {
  for (uint32_t g : {1u, 2u, 3u, 4u, 5u, 8u, 16u})
    check_case(make_case("gqa " + std::to_string(g), make_cfg(2 * g, 2, 64, {130, 300}), {50, 300}));
}

TEST_F(GpuExtend, HeadDims) {
  for (uint32_t D : {32u, 64u, 96u, 128u, 256u})
    check_case(make_case("D " + std::to_string(D), make_cfg(4, 2, D, {100, 260}), {33, 130}));
}

TEST_F(GpuExtend, QueryDtypes) {
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    check_case(make_case(std::string("q ") + dtype_name(t), make_cfg(8, 2, 128, {90, 400}), {90, 77}, t));
}

TEST_F(GpuExtend, BitWidthsAndUniform) {
  const Variant vars[] = {{"BlockGTQ-K2V2", Method::block_gtq, 2.0, 2},
                          {"BlockGTQ-K4V4", Method::block_gtq, 4.0, 4},
                          {"Uniform-K3V3", Method::uniform_tq_mse, 3.0, 3},
                          {"BlockGTQ-K6V8", Method::block_gtq, 6.0, 8}};
  for (const Variant& v : vars) check_case(make_case(v.name, make_cfg(8, 2, 128, {63, 333}, v), {63, 100}));
}

TEST_F(GpuExtend, PageSizes) {
  for (uint32_t P : {1u, 16u, 32u, 128u, 256u})
    check_case(make_case("page " + std::to_string(P), make_cfg(8, 2, 64, {100, 300}, kK3V3, P), {20, 170}));
}

TEST_F(GpuExtend, ForcedSplitsIncludingEmptyOnes) {
  for (uint32_t s : {1u, 2u, 3u, 7u, 64u})
    check_case(make_case("splits", make_cfg(8, 2, 64, {10, 200, 1000}), {10, 17, 64}, DType::f32, s));
}

TEST_F(GpuExtend, ExplicitScale) {
  Case c = make_case("scale 0.05", make_cfg(8, 2, 128, {300}), {64});
  c.scale = 0.05f;
  check_case(c);
}

TEST_F(GpuExtend, SinkAndWindowTokens) {
  struct SW {
    uint32_t sink, window, chunk;
    std::vector<uint32_t> len, q_len;
    const char* name;
  };
  const SW cases[] = {
      {4, 0, 0, {3, 4, 100}, {3, 2, 60}, "sink 4 (tokens in sink only, then pages)"},
      {0, 32, 7, {20, 32, 33, 300}, {20, 5, 33, 40}, "window 32 (ring only, ring full, pages + ring)"},
      {4, 48, 9, {2, 40, 52, 53, 400}, {2, 36, 52, 10, 130}, "sink 4 + window 48 (chunks wrap the ring)"},
      {16, 64, 0, {1000}, {100}, "sink 16 + window 64, one append"},
  };
  for (const SW& s : cases) {
    ScenarioConfig cfg = make_cfg(8, 2, 128, s.len);
    cfg.plan.sink_tokens = s.sink, cfg.plan.window_tokens = s.window, cfg.append_chunk = s.chunk;
    check_case(make_case(s.name, cfg, s.q_len));
    check_case(make_case(std::string(s.name) + ", 3 splits", cfg, s.q_len, DType::f16, 3));
  }
}

TEST_F(GpuExtend, Fp16Layers) {
  ScenarioConfig cfg = make_cfg(8, 2, 128, {1, 100, 700});
  cfg.plan.fp16_layers = {1};
  check_case(make_case("fp16 layer", cfg, {1, 64, 300}));
  check_case(make_case("fp16 layer, 4 splits, bf16 q", cfg, {1, 64, 300}, DType::bf16, 4));
  cfg.plan.sink_tokens = 4, cfg.plan.window_tokens = 32, cfg.append_chunk = 50;
  check_case(make_case("fp16 layer, sink 4 window 32", cfg, {1, 64, 300}));
  Case c0 = make_case("packed layer 0 next to an fp16 layer", cfg, {1, 64, 300});
  c0.layer = 0;
  check_case(c0);
}

TEST_F(GpuExtend, MoreQueriesThanTokensSeeNothing) {
  // q_len 8 over 5 tokens: queries 0-2 sit before the sequence (out 0, lse -inf); queries 3-7
  // equal a q_len = 5 extend over the same query rows.
  ScenarioConfig cfg = make_cfg(4, 2, 64, {5});
  Scenario sc(cfg);
  const uint32_t Hq = 4, D = 64;
  const Queries q = make_queries(sc, 8, DType::f32, 3);
  ExtendMirror m(sc.cache(), 1, sc.seqs(), {8});
  m.set_queries(q.bytes.data(), DType::f32);
  cuda::ExtendParams p = m.params();
  DeviceOut dev(p);
  dev.wire(p);
  GpuRun r;
  run_gpu(p, dev, r);
  for (size_t i = 0; i < 3 * Hq; ++i) {
    EXPECT_EQ(r.lse[i], -INFINITY) << "row " << i;
    for (uint32_t d = 0; d < D; ++d) ASSERT_EQ(r.out[i * D + d], 0.0f) << "row " << i << " dim " << d;
  }
  const uint32_t five = 5;
  std::vector<float> ref(5 * Hq * D), ref_lse(5 * Hq);
  attention_extend(sc.cache(), 1, sc.seqs().data(), &five, 1, q.widened.data() + 3 * Hq * D, DType::f32, ref.data(),
                   ref_lse.data(), {});
  const Worst w = compare_rows(r.out.data() + 3 * Hq * D, r.lse.data() + 3 * Hq, ref.data(), ref_lse.data(), 5 * Hq, D,
                               kTolOut, kTolLse);
  EXPECT_LE(w.out, kTolOut);
  EXPECT_LE(w.lse, kTolLse);
}

TEST_F(GpuExtend, CudaGraphReplayGivesIdenticalOutput) {
  ScenarioConfig cfg = make_cfg(8, 2, 128, {64, 65, 1000});
  cfg.plan.sink_tokens = 4, cfg.plan.window_tokens = 16, cfg.append_chunk = 100;
  Scenario sc(cfg);
  const std::vector<uint32_t> ql = {10, 65, 300};
  const Queries q = make_queries(sc, 375, DType::f16, 9);
  ExtendMirror m(sc.cache(), 1, sc.seqs(), ql);
  m.set_queries(q.bytes.data(), DType::f16);
  cuda::ExtendParams p = m.params();
  p.base.splits = 2;
  DeviceOut dev(p);
  dev.wire(p);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  GpuRun direct, replay;
  dev.poison();
  cuda::extend_attention(p, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  dev.fetch(direct);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  cuda::extend_attention(p, stream);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  size_t n_nodes = 0;
  CUDA_OK(cudaGraphGetNodes(graph, nullptr, &n_nodes));
  EXPECT_EQ(n_nodes, 3u) << "prep + extend + merge: three kernel nodes, nothing else";
  for (int rep = 0; rep < 3; ++rep) {
    dev.poison();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    dev.fetch(replay);
    EXPECT_EQ(0, std::memcmp(direct.out.data(), replay.out.data(), direct.out.size() * 4)) << "replay " << rep;
    EXPECT_EQ(0, std::memcmp(direct.lse.data(), replay.lse.data(), direct.lse.size() * 4)) << "replay " << rep;
  }
  std::vector<float> ref(direct.out.size()), ref_lse(direct.lse.size());
  attention_extend(sc.cache(), 1, sc.seqs().data(), ql.data(), 3, q.bytes.data(), DType::f16, ref.data(), ref_lse.data(),
                   {});
  const Worst w = compare_rows(replay.out.data(), replay.lse.data(), ref.data(), ref_lse.data(), ref_lse.size(), 128,
                               kTolOut, kTolLse);
  EXPECT_LE(w.out, kTolOut) << "graph replay";
  EXPECT_LE(w.lse, kTolLse) << "graph replay";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(GpuExtend, BadParametersAreRefusedAndWriteNothing) {
  ScenarioConfig cfg = make_cfg(4, 2, 64, {40}, kK3V3, 64);
  Scenario sc(cfg);
  const Queries q = make_queries(sc, 8, DType::f32, 1);
  ExtendMirror m(sc.cache(), 1, sc.seqs(), {8});
  m.set_queries(q.bytes.data(), DType::f32);
  const cuda::ExtendParams good = m.params();
  DeviceOut dev(good);
  auto expect_code = [&](StatusCode code, auto&& mutate, const char* what) {
    cuda::ExtendParams p = good;
    dev.wire(p);
    mutate(p);
    dev.poison();
    try {
      cuda::extend_attention(p, nullptr);
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << what << ": " << e.what();
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    GpuRun r;
    dev.fetch(r);
    for (float v : r.out) ASSERT_TRUE(std::isnan(v)) << what << ": out was written";
  };
  float dummy = 0.0f;
  expect_code(StatusCode::invalid_argument, [&](cuda::ExtendParams& p) { p.base.q_rot = &dummy; }, "q_rot set");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.base.q_dtype = 3; }, "q_dtype 3");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.max_q_len = 0; }, "max_q_len 0");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.base.scale = -1.0f; }, "negative scale");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.base.n_q_heads = 5; }, "5 q heads / 2 kv");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.warps = 6; }, "6 warps");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.base.out += 1; }, "out not 8-byte aligned");
  expect_code(StatusCode::invalid_argument,
              [](cuda::ExtendParams& p) { p.base.workspace = static_cast<uint8_t*>(p.base.workspace) + 16; },
              "workspace not 256-byte aligned");
  expect_code(StatusCode::unsupported, [](cuda::ExtendParams& p) { p.base.n_q_heads = 64; }, "GQA 32");
  expect_code(StatusCode::unsupported, [](cuda::ExtendParams& p) { p.base.page_size = 48; }, "page size 48");
  expect_code(StatusCode::unsupported, [](cuda::ExtendParams& p) { p.base.head_dim = 264; }, "head_dim 264");
  expect_code(StatusCode::null_pointer, [](cuda::ExtendParams& p) { p.q_len = nullptr; }, "null q_len");
  expect_code(StatusCode::null_pointer, [](cuda::ExtendParams& p) { p.k_rotations = nullptr; }, "null K rotations");
  expect_code(StatusCode::null_pointer, [](cuda::ExtendParams& p) { p.base.window_tokens = 8; },
              "window without fp16 blocks");
  expect_code(StatusCode::invalid_argument, [](cuda::ExtendParams& p) { p.base.head_dim = 128; },
              "head_dim differs from the head tables");
  // n_seqs == 0 and total_q == 0 do nothing, without error.
  cuda::ExtendParams p = good;
  dev.wire(p);
  dev.poison();
  p.base.n_seqs = 0;
  cuda::extend_attention(p, nullptr);
  p = good, dev.wire(p), p.total_q = 0;
  cuda::extend_attention(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  GpuRun r;
  dev.fetch(r);
  for (float v : r.out) ASSERT_TRUE(std::isnan(v)) << "a no-op call wrote out";
}
