// GPU fused decode attention against the CPU reference (kvbits::attention_decode) on the same
// cache: a calibrated plan, a CPU cache filled with structured activations, mirrored to the
// device. Tolerance: max |gpu - cpu| / max |cpu| per output row <= 1e-4 and |lse diff| <= 1e-4.
// Both sides accumulate in fp32 but in different orders (per-thread sequential dots and split-K
// merges on the GPU, eight interleaved lanes and fp64 un-rotation on the CPU), which moves the
// last few bits (seen ~1e-6); 1e-4 leaves room without hiding an indexing bug (those give O(1)).
// Skips cleanly without a GPU. Sanitizer runs use --gtest_filter='*Small*'.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

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
#include "kvbits/status.hpp"

using namespace kvbits;
using kvbits::test_attn::Scenario;
using kvbits::test_attn::ScenarioConfig;

namespace {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x << ": " << cudaGetErrorString(cudaGetLastError())

constexpr double kTol = 1e-4;

struct Variant {
  const char* name;
  Method method;
  double k_bits;
  int v_bits;
};
const Variant kK3V3{"BlockGTQ-K3V3", Method::block_gtq, 3.0, 3};

ScenarioConfig make_cfg(uint32_t q_heads, uint32_t kv_heads, uint32_t D, const Variant& var,
                        std::vector<uint32_t> lengths, uint32_t page_size = 64, uint32_t layers = 2) {
  ScenarioConfig c;
  c.shape = test_attn::make_shape(layers, q_heads, kv_heads, D);
  c.plan.method = var.method;
  c.plan.k_avg_bits = var.k_bits;
  c.plan.v_bits = var.v_bits;
  c.cache.page_size = page_size;
  c.lengths = std::move(lengths);
  c.threads = 8;
  c.seed = 11 + D + q_heads * 3 + kv_heads;
  return c;
}

std::string describe(const ScenarioConfig& c, const Variant& var, uint32_t splits) {
  std::ostringstream o;
  o << var.name << " q_heads=" << c.shape.n_q_heads << " kv_heads=" << c.shape.n_kv_heads << " D=" << c.shape.head_dim
    << " page=" << c.cache.page_size << " splits=" << (splits ? std::to_string(splits) : "auto") << " lengths={";
  for (size_t i = 0; i < c.lengths.size() && i < 12; ++i) o << (i ? "," : "") << c.lengths[i];
  if (c.lengths.size() > 12) o << ",... (" << c.lengths.size() << " seqs)";
  o << "}";
  return o.str();
}

// Output and LSE of one GPU decode, every element poisoned (NaN) before the launch.
struct GpuRun {
  std::vector<float> out, lse;
};

struct DeviceOut {
  cuda::DeviceBlock out, lse, ws;
  DeviceOut(const cuda::DecodeParams& p)
      : out(size_t(p.n_seqs) * p.n_q_heads * p.head_dim * 4),
        lse(size_t(p.n_seqs) * p.n_q_heads * 4),
        ws(cuda::decode_workspace_bytes(p)) {}
  void wire(cuda::DecodeParams& p) const {
    p.out = out.as<float>(), p.lse = lse.as<float>(), p.workspace = ws.get();
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

void expect_close(const std::vector<float>& got, const std::vector<float>& got_lse, const std::vector<float>& ref,
                  const std::vector<float>& ref_lse, uint32_t D, uint32_t n_q, const std::vector<uint32_t>& len,
                  const std::string& what) {
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
    if (rel > kTol || lerr > kTol) ++bad;
    if (rel > worst || !(rel == rel)) worst = rel, worst_row = r;
    if (lerr > worst_lse) worst_lse = lerr, worst_lse_row = r;
  }
  auto where = [&](size_t r) {
    std::ostringstream o;
    o << "row " << r << " (seq " << r / n_q << " len " << len[r / n_q] << ", q head " << r % n_q << ")";
    return o.str();
  };
  EXPECT_LE(worst, kTol) << what << "\n  worst output rel error " << worst << " at " << where(worst_row) << "; "
                         << bad << " of " << ref_lse.size() << " rows out of tolerance\n  got[0..3] = "
                         << got[worst_row * D] << " " << got[worst_row * D + 1] << " " << got[worst_row * D + 2]
                         << "  cpu[0..3] = " << ref[worst_row * D] << " " << ref[worst_row * D + 1] << " "
                         << ref[worst_row * D + 2];
  EXPECT_LE(worst_lse, kTol) << what << "\n  worst lse error " << worst_lse << " at " << where(worst_lse_row)
                             << ": gpu " << got_lse[worst_lse_row] << " cpu " << ref_lse[worst_lse_row];
  ::testing::Test::RecordProperty("max_rel_error", std::to_string(worst));
  if (::testing::Test::HasFailure()) return;
  std::printf("  ok  %-90s  max rel %.2e  max lse %.2e\n", what.c_str(), worst, worst_lse);
}

// Builds the scenario, runs the CPU reference and the GPU kernel on layer `layer`, compares,
// and checks that a second launch gives identical bits.
void check_case(const ScenarioConfig& cfg, const Variant& var, uint32_t splits = 0, uint32_t layer = 1) {
  Scenario sc(cfg);
  const auto& seqs = sc.seqs();
  const uint32_t n = uint32_t(seqs.size()), Hq = cfg.shape.n_q_heads, D = cfg.shape.head_dim;
  const std::vector<float> q = sc.queries(n, 5 + layer);
  std::vector<float> ref(size_t(n) * Hq * D), ref_lse(size_t(n) * Hq);
  attention_decode(sc.cache(), layer, seqs.data(), n, q.data(), DType::f32, ref.data(), ref_lse.data(), {});

  cuda::DeviceCacheMirror mirror(sc.cache(), layer, seqs);
  mirror.set_queries(q.data());
  cuda::DecodeParams p = mirror.params();
  p.splits = splits;
  DeviceOut dev(p);
  dev.wire(p);
  const std::string what = describe(cfg, var, splits) + " (" + std::to_string(cuda::decode_splits(p)) + " splits)";
  GpuRun a, b;
  dev.poison();
  cuda::decode_attention(p, nullptr);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  dev.fetch(a);
  expect_close(a.out, a.lse, ref, ref_lse, D, Hq, mirror.lengths(), what);
  dev.poison();
  cuda::decode_attention(p, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  dev.fetch(b);
  EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4)) << what << ": second run differs";
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4)) << what << ": second run lse differs";
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
  check_case(make_cfg(8, 2, 64, kK3V3, {1, 65, 130}), kK3V3, 3);
}

TEST_F(GpuDecode, SmallSanitizerPageSize16) {
  check_case(make_cfg(4, 2, 64, kK3V3, {17, 100}, 16), kK3V3, 2);
}

TEST_F(GpuDecode, ContextsCrossingPagesAllVariants) {
  const Variant vars[] = {{"BlockGTQ-K2V2", Method::block_gtq, 2.0, 2},
                          kK3V3,
                          {"BlockGTQ-K4V4", Method::block_gtq, 4.0, 4},
                          {"Uniform-K3V3", Method::uniform_tq_mse, 3.0, 3}};
  for (const Variant& v : vars) check_case(make_cfg(8, 2, 128, v, {1, 63, 64, 65, 1000, 4097}), v);
}

TEST_F(GpuDecode, HeadDims) {
  for (uint32_t D : {8u, 64u, 128u, 256u}) check_case(make_cfg(4, 2, D, kK3V3, {1, 65, 700}), kK3V3);
}

TEST_F(GpuDecode, GqaRatios) {
  for (uint32_t g : {1u, 2u, 3u, 4u, 5u, 8u, 16u}) check_case(make_cfg(2 * g, 2, 64, kK3V3, {130, 513}), kK3V3);
}

TEST_F(GpuDecode, Batch64MixedLengths) {
  std::mt19937 rng(3);
  std::vector<uint32_t> len(64);
  for (auto& l : len) l = 1 + rng() % 300;
  len[17] = 1000;
  check_case(make_cfg(8, 2, 128, kK3V3, len), kK3V3);
  check_case(make_cfg(32, 8, 128, kK3V3, std::vector<uint32_t>(len.begin(), len.begin() + 8)), kK3V3);
}

TEST_F(GpuDecode, Batch1LongContextGqa16) { check_case(make_cfg(16, 1, 128, kK3V3, {4097}), kK3V3); }

TEST_F(GpuDecode, PageSizes) {
  for (uint32_t P : {1u, 16u, 32u, 128u, 256u}) check_case(make_cfg(8, 2, 64, kK3V3, {1, 100, 300}, P), kK3V3);
}

TEST_F(GpuDecode, ForcedSplitsIncludingEmptyOnes) {
  for (uint32_t s : {1u, 2u, 3u, 7u, 64u}) check_case(make_cfg(8, 2, 64, kK3V3, {1, 200, 1000}), kK3V3, s);
}

TEST_F(GpuDecode, CudaGraphReplayGivesIdenticalOutput) {
  ScenarioConfig cfg = make_cfg(8, 2, 128, kK3V3, {1, 64, 65, 1000});
  Scenario sc(cfg);
  const uint32_t n = uint32_t(sc.seqs().size());
  const std::vector<float> q = sc.queries(n, 9);
  cuda::DeviceCacheMirror mirror(sc.cache(), 1, sc.seqs());
  mirror.set_queries(q.data());
  cuda::DecodeParams p = mirror.params();
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
  EXPECT_EQ(n_nodes, 2u) << "decode + merge: two kernel nodes, nothing else";
  for (int rep = 0; rep < 3; ++rep) {
    dev.poison();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    dev.fetch(replay);
    EXPECT_EQ(0, std::memcmp(direct.out.data(), replay.out.data(), direct.out.size() * 4)) << "replay " << rep;
    EXPECT_EQ(0, std::memcmp(direct.lse.data(), replay.lse.data(), direct.lse.size() * 4)) << "replay " << rep;
  }
  // The output is right, too.
  std::vector<float> ref(direct.out.size()), ref_lse(direct.lse.size());
  attention_decode(sc.cache(), 1, sc.seqs().data(), n, q.data(), DType::f32, ref.data(), ref_lse.data(), {});
  expect_close(replay.out, replay.lse, ref, ref_lse, 128, 8, mirror.lengths(), "graph replay");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(GpuDecode, UnsupportedConfigurationsAreRefused) {
  auto expect_unsupported = [](auto&& fn, const char* what) {
    try {
      fn();
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::unsupported) << what << ": " << e.what();
    }
  };
  {  // a recent window (fp16 ring) in the plan
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 64, 1);
    cfg.plan.window_tokens = 16;
    Scenario sc(cfg);
    expect_unsupported([&] { cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs()); }, "window > 0 (mirror)");
  }
  {  // sink tokens
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 64, 1);
    cfg.plan.sink_tokens = 4;
    Scenario sc(cfg);
    expect_unsupported([&] { cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs()); }, "sink > 0 (mirror)");
  }
  {  // an fp16 layer
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 64, 2);
    cfg.plan.fp16_layers = {0};
    Scenario sc(cfg);
    expect_unsupported([&] { cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs()); }, "fp16 layer (mirror)");
  }
  {  // the launcher's own checks: window, page size 48, GQA 32
    ScenarioConfig cfg = make_cfg(4, 2, 64, kK3V3, {40}, 48, 1);
    Scenario sc(cfg);
    cuda::DeviceCacheMirror m(sc.cache(), 0, sc.seqs());
    std::vector<float> q(4 * 64, 0.5f);
    m.set_queries(q.data());
    cuda::DecodeParams p = m.params();
    DeviceOut dev(p);
    dev.wire(p);
    expect_unsupported([&] { cuda::decode_attention(p, nullptr); }, "page size 48");
    p.page_size = 64;
    p.window_tokens = 8;
    expect_unsupported([&] { cuda::decode_attention(p, nullptr); }, "window_tokens = 8 (launcher)");
    p.window_tokens = 0;
    p.n_q_heads = 64;
    expect_unsupported([&] { cuda::decode_attention(p, nullptr); }, "GQA 32");
  }
}
