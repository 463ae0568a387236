// attention_decode on CUDA caches through the public API, against attention_decode on a CPU
// cache holding the same bytes (tests/cuda/cache_pair.hpp). Tolerance as tests/cuda/
// test_decode_gpu.cpp: max |gpu - cpu| / max |cpu| per output row and |lse diff| <= 1e-4 at
// Precision::fp32 (both fp32, different summation order), <= 4e-3 at Precision::fp16 (fp16
// tensor-core operands). Host and device tensors, streams, CUDA-graph capture
// and replay after further appends, and what the GPU does not serve yet. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "cache_pair.hpp"
#include "cache_test_util.hpp"
#include "cuda/device_cache.hpp"
#include "kvbits/attention.hpp"

using namespace kvbits;
using namespace kvbits::gputest;

namespace {

// Flip to true when cuda/decode.cu serves fp16 sink/window tokens, fp16 layers and unrotated
// queries (DecodeParams::seq_qend / fp16_blocks / q): the fp16 cases then compare with the CPU.
constexpr bool kDecodeServesFp16Tokens = true;

constexpr double kTol = 1e-4;      // Precision::fp32
constexpr double kTolFp16 = 4e-3;  // Precision::fp16 (the default): fp16 tensor-core operands

class GpuAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

struct Case {
  uint32_t q_heads = 8, kv_heads = 2, head_dim = 128, page_size = 64, sink = 0, window = 0;
  bool fp16_layer = false;
  std::vector<uint32_t> lengths = {1, 63, 64, 65, 300};
  uint64_t seed = 1;
  uint64_t max_pages = 0;      // 0: enough for the lengths
  uint32_t max_sequences = 0;  // 0: the default
};

struct Filled {
  std::shared_ptr<const Plan> plan;
  std::unique_ptr<CachePair> pair;
  std::vector<uint64_t> seqs;
  ModelShape shape;
};

std::vector<float> random_values(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (float& e : x) e = nd(rng);
  return x;
}

// Sequences of the given lengths in every layer, appended in two uneven chunks; one fork.
Filled fill(const Case& s) {
  Filled f;
  f.shape = cachetest::make_shape(2, s.kv_heads, s.head_dim);
  f.shape.n_q_heads = s.q_heads;
  PlanOptions o;
  o.sink_tokens = s.sink, o.window_tokens = s.window;
  if (s.fp16_layer) o.fp16_layers = {1};
  f.plan = cachetest::make_plan(f.shape, o, s.seed);
  CacheConfig c;
  c.page_size = s.page_size;
  c.max_pages = 64;
  for (uint32_t len : s.lengths) c.max_pages += 2 * (len / s.page_size + 2);
  if (s.max_pages) c.max_pages = s.max_pages;
  if (s.max_sequences) c.max_sequences = s.max_sequences;
  f.pair = std::make_unique<CachePair>(f.plan, c);
  for (size_t i = 0; i < s.lengths.size(); ++i) f.seqs.push_back(f.pair->add());
  std::mt19937_64 rng(s.seed);
  const uint32_t row = s.kv_heads * s.head_dim;
  for (int chunk = 0; chunk < 2; ++chunk) {
    std::vector<uint64_t> ids;
    std::vector<uint32_t> n;
    uint32_t total = 0;
    for (size_t i = 0; i < s.lengths.size(); ++i) {
      const uint32_t first = s.lengths[i] / 3;
      const uint32_t take = chunk == 0 ? first : s.lengths[i] - first;
      if (take == 0) continue;
      ids.push_back(f.seqs[i]), n.push_back(take), total += take;
    }
    for (uint32_t l = 0; l < 2; ++l) {
      const auto k = random_values(rng, size_t(total) * row), v = random_values(rng, size_t(total) * row);
      const auto r = f.pair->append(l, ids, n, k, v, DType::f32, true);
      EXPECT_EQ(r.second.code, StatusCode::ok) << r.second.message;
    }
  }
  return f;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& got_lse, const std::vector<float>& ref,
                  const std::vector<float>& ref_lse, uint32_t D, const std::string& what, double tol = kTolFp16) {
  double worst = 0.0, worst_lse = 0.0;
  size_t worst_row = 0;
  for (size_t r = 0; r < ref_lse.size(); ++r) {
    double err = 0.0, mag = 0.0;
    for (uint32_t d = 0; d < D; ++d) {
      const double e = std::fabs(double(got[r * D + d]) - double(ref[r * D + d]));
      err = e == e ? std::max(err, e) : INFINITY;  // NaN (unwritten) fails
      mag = std::max(mag, std::fabs(double(ref[r * D + d])));
    }
    const double rel = mag > 0 ? err / mag : err;
    if (!(rel <= worst)) worst = rel, worst_row = r;
    const double le = std::fabs(double(got_lse[r]) - double(ref_lse[r]));
    worst_lse = le == le ? std::max(worst_lse, le) : INFINITY;
  }
  EXPECT_LE(worst, tol) << what << ": worst output row " << worst_row;
  EXPECT_LE(worst_lse, tol) << what;
}

// Decode on both caches, host tensors, the GPU at both precisions; returns the GPU outcome (the
// same for both).
Outcome decode_both(Filled& f, uint32_t layer, const std::vector<uint64_t>& seqs, DType dt, uint64_t salt,
                    const std::string& what) {
  const uint32_t Hq = f.shape.n_q_heads, D = f.shape.head_dim;
  std::mt19937_64 rng(salt);
  const auto q32 = random_values(rng, seqs.size() * Hq * D);
  const auto q = as_dtype(q32, dt);
  std::vector<float> ref(q32.size()), ref_lse(seqs.size() * Hq), got(q32.size(), NAN), got_lse(ref_lse.size(), NAN);
  attention_decode(f.pair->cpu(), layer, seqs.data(), seqs.size(), q.data(), dt, ref.data(), ref_lse.data(), {});
  Outcome o;
  for (Precision pr : {Precision::fp16, Precision::fp32}) {
    AttentionParams ap;
    ap.precision = pr;
    o = outcome_of([&] {
      attention_decode(f.pair->gpu(), layer, seqs.data(), seqs.size(), q.data(), dt, got.data(), got_lse.data(), ap);
    });
    if (o.code == StatusCode::ok)
      expect_close(got, got_lse, ref, ref_lse, D, what + (pr == Precision::fp32 ? " [fp32]" : " [fp16]"),
                   pr == Precision::fp32 ? kTol : kTolFp16);
  }
  return o;
}

}  // namespace

TEST_F(GpuAttention, SmallSanitizerDecode) {
  Case s;
  s.q_heads = 4, s.kv_heads = 2, s.head_dim = 64, s.page_size = 16, s.lengths = {1, 17, 40};
  Filled f = fill(s);
  const Outcome o = decode_both(f, 1, f.seqs, DType::f32, 3, "small");
  EXPECT_EQ(o.code, StatusCode::ok) << o.message;
}

TEST_F(GpuAttention, DecodeMatchesTheCpuAcrossShapesAndDtypes) {
  struct Shape {
    uint32_t q, kv, D, P;
  };
  const Shape shapes[] = {{16, 2, 128, 64}, {32, 8, 128, 64}, {8, 8, 64, 16}, {16, 1, 256, 128}, {6, 2, 64, 32}};
  uint64_t seed = 1;
  for (const Shape& sh : shapes)
    for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
      Case s;
      s.q_heads = sh.q, s.kv_heads = sh.kv, s.head_dim = sh.D, s.page_size = sh.P, s.seed = seed++;
      s.lengths = {1, 63, 64, 65, 300, 1000};
      Filled f = fill(s);
      const std::string what = std::to_string(sh.q) + "/" + std::to_string(sh.kv) + "/" + std::to_string(sh.D) +
                               " P=" + std::to_string(sh.P) + " dtype " + std::to_string(int(dt));
      for (uint32_t layer : {0u, 1u}) {
        const Outcome o = decode_both(f, layer, f.seqs, dt, seed * 31 + layer, what);
        EXPECT_EQ(o.code, StatusCode::ok) << what << ": " << o.message;
      }
      // A batch in another order, with a sequence twice (decode allows repeats).
      const std::vector<uint64_t> again = {f.seqs[4], f.seqs[0], f.seqs[4], f.seqs[2]};
      EXPECT_EQ(decode_both(f, 1, again, dt, seed, what + " reordered").code, StatusCode::ok);
      if (HasFailure()) return;
    }
}

TEST_F(GpuAttention, DeviceTensorsGiveTheHostTensorsBits) {
  Case s;
  s.q_heads = 32, s.kv_heads = 8, s.lengths = {5, 129, 700};
  Filled f = fill(s);
  const size_t rows = f.seqs.size() * 32, D = 128;
  std::mt19937_64 rng(4);
  const auto q = random_values(rng, rows * D);
  std::vector<float> host_out(rows * D), host_lse(rows);
  attention_decode(f.pair->gpu(), 0, f.seqs.data(), f.seqs.size(), q.data(), DType::f32, host_out.data(),
                   host_lse.data(), {});
  DeviceCopy dq(q.data(), q.size() * 4);
  float *dout, *dlse;
  CUDA_OK(cudaMalloc(&dout, rows * D * 4));
  CUDA_OK(cudaMalloc(&dlse, rows * 4));
  CUDA_OK(cudaMemset(dout, 0xFF, rows * D * 4));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  AttentionParams ap;
  ap.stream = st;
  attention_decode(f.pair->gpu(), 0, f.seqs.data(), f.seqs.size(), dq.get(), DType::f32, dout, dlse, ap);
  CUDA_OK(cudaStreamSynchronize(st));
  std::vector<float> out(rows * D), lse(rows);
  CUDA_OK(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(0, std::memcmp(out.data(), host_out.data(), out.size() * 4));
  EXPECT_EQ(0, std::memcmp(lse.data(), host_lse.data(), lse.size() * 4));
  cudaFree(dout), cudaFree(dlse);
  CUDA_OK(cudaStreamDestroy(st));
}

TEST_F(GpuAttention, CapturedDecodeReplaysAfterAppends) {
  // A decode captured once reads lengths and page tables from the device at every replay: after
  // more tokens are appended (outside the graph) a replay equals a fresh decode.
  Case s;
  s.q_heads = 16, s.kv_heads = 2, s.lengths = {40, 64, 200};
  Filled f = fill(s);
  const uint32_t Hq = 16, D = 128;
  const size_t rows = f.seqs.size() * Hq;
  std::mt19937_64 rng(8);
  const auto q = random_values(rng, rows * D);
  DeviceCopy dq(q.data(), q.size() * 4);
  float *dout, *dlse;
  CUDA_OK(cudaMalloc(&dout, rows * D * 4));
  CUDA_OK(cudaMalloc(&dlse, rows * 4));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  AttentionParams ap;
  ap.stream = st;
  auto decode = [&] {
    attention_decode(f.pair->gpu(), 1, f.seqs.data(), f.seqs.size(), dq.get(), DType::f32, dout, dlse, ap);
  };
  auto fetch = [&](std::vector<float>& out, std::vector<float>& lse) {
    out.resize(rows * D), lse.resize(rows);
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  };
  decode();  // outside the capture first: the context workspace gets its size
  std::vector<float> direct, direct_lse, replay, replay_lse;
  fetch(direct, direct_lse);

  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  const Outcome o = outcome_of(decode);
  CUDA_OK(cudaStreamEndCapture(st, &graph));
  ASSERT_EQ(o.code, StatusCode::ok) << o.message;
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaMemsetAsync(dout, 0xFF, rows * D * 4, st));
  CUDA_OK(cudaGraphLaunch(exec, st));
  fetch(replay, replay_lse);
  EXPECT_EQ(0, std::memcmp(direct.data(), replay.data(), direct.size() * 4)) << "replay differs from the direct call";
  EXPECT_EQ(0, std::memcmp(direct_lse.data(), replay_lse.data(), direct_lse.size() * 4));

  for (int step = 0; step < 3; ++step) {
    // One more token per sequence (crossing page 64 for one of them), then replay.
    const std::vector<uint32_t> n(f.seqs.size(), 1);
    for (uint32_t l = 0; l < 2; ++l) {
      const auto k = random_values(rng, f.seqs.size() * 2 * D), v = random_values(rng, f.seqs.size() * 2 * D);
      const auto r = f.pair->append(l, f.seqs, n, k, v, DType::f16, step % 2 == 0, st);
      ASSERT_EQ(r.second.code, StatusCode::ok) << r.second.message;
    }
    CUDA_OK(cudaGraphLaunch(exec, st));
    fetch(replay, replay_lse);
    decode();
    fetch(direct, direct_lse);
    EXPECT_EQ(0, std::memcmp(direct.data(), replay.data(), direct.size() * 4)) << "step " << step;
    EXPECT_EQ(0, std::memcmp(direct_lse.data(), replay_lse.data(), direct_lse.size() * 4)) << "step " << step;
    // And the result is the CPU's.
    std::vector<float> ref(rows * D), ref_lse(rows);
    attention_decode(f.pair->cpu(), 1, f.seqs.data(), f.seqs.size(), q.data(), DType::f32, ref.data(), ref_lse.data(), {});
    expect_close(replay, replay_lse, ref, ref_lse, D, "replay after step " + std::to_string(step));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(dout), cudaFree(dlse);
  CUDA_OK(cudaStreamDestroy(st));
}

TEST_F(GpuAttention, HostTensorsCannotBeCaptured) {
  Case s;
  s.lengths = {10};
  Filled f = fill(s);
  std::vector<float> q(8 * 128, 0.5f), out(q.size());
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  AttentionParams ap;
  ap.stream = st;
  CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  const Outcome o = outcome_of([&] {
    attention_decode(f.pair->gpu(), 0, f.seqs.data(), 1, q.data(), DType::f32, out.data(), nullptr, ap);
  });
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(st, &graph));
  if (graph) cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamDestroy(st));
  EXPECT_EQ(o.code, StatusCode::unsupported) << o.message;
}

TEST_F(GpuAttention, NonFiniteHostQueryIsRefused) {
  Case s;
  s.lengths = {10, 3};
  Filled f = fill(s);
  std::vector<float> q(2 * 8 * 128, 0.25f), out(q.size(), 7.0f);
  q[8 * 128 + 3 * 128 + 5] = NAN;
  const Outcome o = outcome_of([&] {
    attention_decode(f.pair->gpu(), 0, f.seqs.data(), 2, q.data(), DType::f32, out.data(), nullptr, {});
  });
  EXPECT_EQ(o.code, StatusCode::invalid_argument) << o.message;
  EXPECT_NE(o.message.find("query row 1, head 3, dim 5"), std::string::npos) << o.message;
  EXPECT_EQ(out[0], 7.0f);  // nothing written
}

TEST_F(GpuAttention, DecodeAfterArenaCompaction) {
  // One-token pages and many small sequences that grow and fork: page tables move in the
  // device arena until it is compacted; decode must keep reading the right tables.
  // The arena holds 2 * 1000 + 16 * 8 entries; tables that double 16 -> 256 leave ranges behind.
  Case s;
  s.q_heads = 4, s.kv_heads = 2, s.head_dim = 64, s.page_size = 1, s.lengths = {3, 3, 3, 3};
  s.max_pages = 1000, s.max_sequences = 8;
  Filled f = fill(s);
  auto* dev = static_cast<cuda::CudaCache*>(f.pair->gpu().device_cache());
  EXPECT_EQ(dev->arena_capacity(), 2128u);
  std::mt19937_64 rng(5);
  std::vector<uint64_t> seqs = f.seqs;
  for (int round = 0; round < 24; ++round) {
    const std::vector<uint32_t> n(seqs.size(), 7);
    for (uint32_t l = 0; l < 2; ++l) {
      const auto k = random_values(rng, seqs.size() * 7 * 128), v = random_values(rng, seqs.size() * 7 * 128);
      const auto r = f.pair->append(l, seqs, n, k, v, DType::f32, false);
      ASSERT_EQ(r.second.code, StatusCode::ok) << r.second.message;
    }
    if (round % 6 == 5) seqs.push_back(f.pair->fork(seqs[0], f.pair->cpu().length(seqs[0], 1)));
    if (round % 4 == 3) {
      const Outcome o = decode_both(f, round % 2, seqs, DType::f32, round, "round " + std::to_string(round));
      ASSERT_EQ(o.code, StatusCode::ok) << o.message;
    }
  }
  f.pair->expect_identical("after compactions");
  EXPECT_GT(dev->compactions(), 0u) << "the test no longer exercises compaction";
}

TEST_F(GpuAttention, Fp16TokensWaitForTheDecodeKernel) {
  // Sink/window tokens and fp16 layers: the cache fills the decode interface for them
  // (cuda/decode.hpp); until the kernel serves it the call is refused with unsupported.
  const Case cases[] = {
      [] { Case s; s.sink = 4, s.window = 0, s.lengths = {2, 50, 130}; return s; }(),
      [] { Case s; s.sink = 0, s.window = 32, s.lengths = {2, 50, 130}; return s; }(),
      [] { Case s; s.sink = 2, s.window = 7, s.page_size = 16, s.lengths = {1, 9, 70}; return s; }(),
      [] { Case s; s.fp16_layer = true, s.lengths = {5, 100}; return s; }(),
  };
  for (const Case& s : cases) {
    Filled f = fill(s);
    const uint32_t layer = s.fp16_layer ? 1 : 0;
    const Outcome o = decode_both(f, layer, f.seqs, DType::f16, 9, "fp16 tokens");
    if (kDecodeServesFp16Tokens) {
      EXPECT_EQ(o.code, StatusCode::ok) << o.message;
    } else {
      EXPECT_EQ(o.code, StatusCode::unsupported) << o.message;
    }
  }
}

// Extend (cuda/extend.hpp) rounds K, V, q' and p to fp16 for the tensor cores: the bound
// against the fp32 CPU reference is docs/gpu-extend.md's (<= 2e-3 measured vs fp64), with room.
TEST_F(GpuAttention, ExtendMatchesTheCpu) {
  constexpr double kExtendTol = 4e-3;
  const Case cases[] = {
      Case{},
      [] { Case s; s.sink = 4, s.window = 32, s.lengths = {2, 50, 130}; return s; }(),
      [] { Case s; s.sink = 2, s.window = 7, s.page_size = 16, s.q_heads = 4, s.head_dim = 64,
           s.lengths = {1, 9, 70}; return s; }(),
      [] { Case s; s.fp16_layer = true, s.lengths = {5, 100}; return s; }(),
  };
  int n_case = 0;
  for (const Case& s : cases) {
    Filled f = fill(s);
    const uint32_t Hq = f.shape.n_q_heads, D = f.shape.head_dim;
    for (uint32_t layer = 0; layer < 2; ++layer)
      for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
        // Query counts: all of a short sequence, part of a long one.
        std::vector<uint32_t> q_len;
        uint32_t total = 0;
        for (size_t i = 0; i < s.lengths.size(); ++i) {
          const uint32_t n = std::min<uint32_t>(s.lengths[i], 1 + (37 * uint32_t(i)) % 70);
          q_len.push_back(n);
          total += n;
        }
        std::mt19937_64 rng(100 + n_case);
        const auto q32 = random_values(rng, size_t(total) * Hq * D);
        const auto q = as_dtype(q32, dt);
        std::vector<float> ref(q32.size()), ref_lse(size_t(total) * Hq), got(q32.size(), NAN),
            got_lse(ref_lse.size(), NAN);
        attention_extend(f.pair->cpu(), layer, f.seqs.data(), q_len.data(), q_len.size(), q.data(), dt, ref.data(),
                         ref_lse.data(), {});
        const Outcome o = outcome_of([&] {
          attention_extend(f.pair->gpu(), layer, f.seqs.data(), q_len.data(), q_len.size(), q.data(), dt, got.data(),
                           got_lse.data(), {});
        });
        ASSERT_EQ(o.code, StatusCode::ok) << o.message;
        double worst = 0.0, worst_lse = 0.0;
        for (size_t r = 0; r < ref_lse.size(); ++r) {
          double err = 0.0, mag = 0.0;
          for (uint32_t d = 0; d < D; ++d) {
            const double e = std::fabs(double(got[r * D + d]) - double(ref[r * D + d]));
            err = e == e ? std::max(err, e) : INFINITY;
            mag = std::max(mag, std::fabs(double(ref[r * D + d])));
          }
          worst = std::max(worst, mag > 0 ? err / mag : err);
          const double le = std::fabs(double(got_lse[r]) - double(ref_lse[r]));
          worst_lse = le == le ? std::max(worst_lse, le) : INFINITY;
        }
        EXPECT_LE(worst, kExtendTol) << "case " << n_case << " layer " << layer << " dtype " << int(dt);
        EXPECT_LE(worst_lse, kExtendTol) << "case " << n_case << " layer " << layer << " dtype " << int(dt);
        std::printf("  extend case %d layer %u dtype %d: max rel %.2e  max lse %.2e\n", n_case, layer, int(dt), worst,
                    worst_lse);
      }
    ++n_case;
  }
}
