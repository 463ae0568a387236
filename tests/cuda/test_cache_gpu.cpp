// The CUDA cache backend against the CPU backend: the same calls on two caches of one plan must
// leave exactly the same bytes (pages in use, fp16 sink/window blocks, page tables, lengths,
// statistics, read-back), every free GPU page zero, and the same error (status and message)
// with both caches unchanged when a call fails. Skips without a GPU.
// Sanitizer runs use --gtest_filter='*Small*'.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <sstream>

#include "cache/cache_device.hpp"
#include "cache_pair.hpp"
#include "cache_test_util.hpp"
#include "cuda/device_cache.hpp"
#include "kvbits/calibrator.hpp"

using namespace kvbits;
using namespace kvbits::gputest;

namespace {

class GpuCache : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

struct Spec {
  uint32_t layers = 2, kv_heads = 2, gqa = 2, head_dim = 64;
  uint32_t page_size = 16;
  uint32_t sink = 0, window = 0;
  double k_bits = 3.0;
  int v_bits = 3;
  bool fp16_layer = false;   // layer 1 kept at 16 bits
  uint32_t batch = 4;        // sequences at the start
  uint32_t rounds = 4;
  uint32_t max_tokens = 40;  // per sequence and call
  bool forks = true;
  bool force_exact = false;
  uint64_t seed = 1;
  std::string describe() const {
    std::ostringstream o;
    o << "layers=" << layers << " kv=" << kv_heads << " gqa=" << gqa << " D=" << head_dim << " P=" << page_size
      << " S=" << sink << " W=" << window << " K" << k_bits << "V" << v_bits << (fp16_layer ? " fp16-layer" : "")
      << " batch=" << batch << (force_exact ? " exact" : "") << " seed=" << seed;
    return o.str();
  }
};

std::shared_ptr<const Plan> plan_for(const Spec& s) {
  ModelShape sh = cachetest::make_shape(s.layers, s.kv_heads, s.head_dim);
  sh.n_q_heads = s.kv_heads * s.gqa;
  PlanOptions o;
  o.k_avg_bits = s.k_bits;
  o.v_bits = s.v_bits;
  o.sink_tokens = s.sink;
  o.window_tokens = s.window;
  if (s.fp16_layer) o.fp16_layers = {1};
  return cachetest::make_plan(sh, o, s.seed);
}

CacheConfig config_for(const Spec& s, uint64_t max_pages) {
  CacheConfig c;
  c.page_size = s.page_size;
  c.max_pages = max_pages;
  c.max_sequences = 128;
  return c;
}

// Values of structure like activations: per-row scales from tiny to large, plus outliers.
std::vector<float> values(std::mt19937_64& rng, size_t n, uint32_t row) {
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  const float scales[] = {1.0f, 0.01f, 30.0f, 1e-4f, 3.0f};
  for (size_t i = 0; i < n; ++i) x[i] = scales[(i / row) % 5] * nd(rng) * (i % 97 == 5 ? 20.0f : 1.0f);
  return x;
}

void run(const Spec& s) {
  SCOPED_TRACE(s.describe());
  const auto plan = plan_for(s);
  // Pages for every sequence (forks included) at its longest, and not many more: every
  // comparison downloads the whole pool.
  const uint64_t longest = uint64_t(s.rounds) * s.max_tokens / s.page_size + 2;
  CachePair pair(plan, config_for(s, 64 + 2 * uint64_t(s.batch + s.rounds) * longest));
  if (s.force_exact) static_cast<cuda::CudaCache*>(pair.gpu().device_cache())->set_force_exact(true);
  std::mt19937_64 rng(s.seed * 7919);
  const uint32_t row = s.kv_heads * s.head_dim;
  std::vector<uint64_t> live;
  for (uint32_t i = 0; i < s.batch; ++i) live.push_back(pair.add());
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16};
  for (uint32_t round = 0; round < s.rounds; ++round) {
    // A subset of the sequences, each with its own token count: decode steps, small and large chunks.
    std::vector<uint64_t> seqs;
    std::vector<uint32_t> n;
    for (uint64_t id : live)
      if (rng() % 4 != 0 || seqs.empty()) {
        seqs.push_back(id);
        const uint32_t kind = uint32_t(rng() % 3);
        n.push_back(kind == 0 ? 1 : kind == 1 ? 1 + uint32_t(rng() % 9) : 1 + uint32_t(rng() % s.max_tokens));
      }
    std::shuffle(seqs.begin(), seqs.end(), rng);
    uint32_t total = 0;
    for (uint32_t t : n) total += t;
    const DType dt = dtypes[(round + s.seed) % 3];
    // Usually every layer; sometimes layer 0 alone, so layers differ in length.
    const uint32_t layers = rng() % 5 == 0 ? 1 : s.layers;
    for (uint32_t l = 0; l < layers; ++l) {
      const auto k = values(rng, size_t(total) * row, row), v = values(rng, size_t(total) * row, row);
      const auto [a, b] = pair.append(l, seqs, n, k, v, dt, (round + l) % 2 == 0);
      ASSERT_EQ(a.code, StatusCode::ok) << a.message;
      ASSERT_EQ(b.code, StatusCode::ok) << b.message;
    }
    pair.expect_identical("after round " + std::to_string(round));
    if (::testing::Test::HasFatalFailure()) return;
    if (s.forks && round % 2 == 0) {
      const uint64_t src = live[rng() % live.size()];
      uint32_t most = ~0u;
      for (uint32_t l = 0; l < s.layers; ++l) most = std::min(most, pair.cpu().length(src, l));
      live.push_back(pair.fork(src, most == 0 ? 0 : uint32_t(rng() % (most + 1))));
    }
    if (s.forks && round % 3 == 2 && live.size() > 2) {
      const size_t i = rng() % live.size();
      pair.remove(live[i]);
      live.erase(live.begin() + std::ptrdiff_t(i));
      pair.expect_identical("after a remove in round " + std::to_string(round));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

}  // namespace

TEST_F(GpuCache, SmallSanitizerCase) {
  Spec s;
  s.layers = 2, s.kv_heads = 2, s.head_dim = 32, s.page_size = 4, s.sink = 2, s.window = 3, s.batch = 3;
  s.rounds = 3, s.max_tokens = 12;
  run(s);
}

TEST_F(GpuCache, RandomScenariosMatchTheCpuBitForBit) {
  std::vector<Spec> specs;
  auto add = [&](uint32_t kv, uint32_t gqa, uint32_t D, uint32_t P, uint32_t S, uint32_t W, uint32_t batch,
                 double kb, int vb) {
    Spec s;
    s.kv_heads = kv, s.gqa = gqa, s.head_dim = D, s.page_size = P, s.sink = S, s.window = W, s.batch = batch;
    s.k_bits = kb, s.v_bits = vb;
    s.seed = specs.size() + 1;
    specs.push_back(s);
  };
  add(2, 8, 128, 64, 0, 0, 1, 3.0, 3);     // Qwen2.5-3B-like head shape
  add(8, 4, 128, 64, 0, 0, 32, 3.0, 3);    // Llama-3.1-8B-like
  add(1, 16, 64, 16, 0, 0, 64, 2.0, 2);
  add(4, 1, 256, 32, 0, 0, 8, 4.0, 4);
  add(2, 2, 128, 16, 4, 0, 16, 3.0, 3);    // sink only
  add(2, 2, 128, 16, 0, 24, 16, 3.0, 3);   // window only
  add(2, 4, 64, 7, 3, 10, 12, 2.5, 3);     // odd page size, both
  add(3, 2, 256, 64, 2, 40, 5, 3.5, 4);
  add(1, 1, 64, 1, 1, 1, 6, 1.5, 1);       // one-token pages and ring
  for (const Spec& s : specs) {
    run(s);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuCache, Fp16LayersMatchTheCpu) {
  for (uint32_t W : {0u, 9u}) {
    Spec s;
    s.fp16_layer = true, s.window = W, s.sink = W ? 2 : 0, s.head_dim = 128, s.batch = 6, s.seed = 40 + W;
    run(s);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuCache, ExactPathMatchesTheCpuBitForBit) {
  // Every coordinate through the canonical fp64 chain that the fast path falls back to.
  for (uint32_t D : {64u, 128u}) {
    Spec s;
    s.head_dim = D, s.kv_heads = 2, s.batch = 5, s.rounds = 3, s.force_exact = true, s.window = D == 64 ? 8 : 0;
    s.seed = 60 + D;
    run(s);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuCache, LongSequencesCrossManyPages) {
  Spec s;
  s.head_dim = 128, s.kv_heads = 2, s.page_size = 64, s.batch = 3, s.rounds = 3, s.max_tokens = 1500, s.window = 16;
  s.seed = 90;
  run(s);
}

// ---- all-or-nothing ----

struct Filled {
  std::shared_ptr<const Plan> plan;
  std::unique_ptr<CachePair> pair;
  std::vector<uint64_t> seqs;
  uint32_t row = 0;
};

Filled filled(uint32_t sink, uint32_t window, uint64_t max_pages, uint32_t page_size = 8) {
  Spec s;
  s.head_dim = 64, s.kv_heads = 2, s.page_size = page_size, s.sink = sink, s.window = window;
  Filled f;
  f.plan = plan_for(s);
  f.pair = std::make_unique<CachePair>(f.plan, config_for(s, max_pages));
  f.row = s.kv_heads * s.head_dim;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 3; ++i) f.seqs.push_back(f.pair->add());
  const std::vector<uint32_t> n = {5, 11, 3};
  for (uint32_t l = 0; l < 2; ++l) {
    const auto k = values(rng, 19 * f.row, f.row), v = values(rng, 19 * f.row, f.row);
    const auto r = f.pair->append(l, f.seqs, n, k, v, DType::f32, true);
    EXPECT_EQ(r.second.code, StatusCode::ok) << r.second.message;
  }
  f.pair->fork(f.seqs[1], 9);  // shared pages: a failed append must not copy them either
  return f;
}

// Appends n = 3 + 2 + 4 tokens (or the given counts) with bad values placed by `poison`; both
// caches must refuse with the same status and message and stay identical (and as before).
void expect_refused(Filled& f, const std::function<void(std::vector<float>&, std::vector<float>&)>& poison,
                    StatusCode want, const std::string& want_text, bool device_inputs,
                    const std::vector<uint32_t>& n = {3, 2, 4}) {
  std::mt19937_64 rng(9);
  const std::vector<uint64_t> seqs = {f.seqs[0], 3, f.seqs[2]};
  const uint32_t rows = n[0] + n[1] + n[2];
  auto k = values(rng, rows * f.row, f.row), v = values(rng, rows * f.row, f.row);
  poison(k, v);
  const auto [a, b] = f.pair->append(0, seqs, n, k, v, DType::f32, device_inputs);
  EXPECT_EQ(a.code, want) << a.message;
  EXPECT_EQ(b.code, a.code) << b.message;
  EXPECT_EQ(b.message, a.message);
  EXPECT_NE(b.message.find(want_text), std::string::npos) << b.message;
  EXPECT_NE(b.message.find("nothing was appended"), std::string::npos) << b.message;
  f.pair->expect_identical("after a refused append");
}

TEST_F(GpuCache, InjectedNanLeavesBothCachesUnchanged) {
  for (bool dev : {true, false})
    for (int where = 0; where < 4; ++where) {
      Filled f = filled(2, 4, 64);
      // Rows: seq0 tokens 5..7 (rows 0-2), seq3 (the fork) tokens 9..10 (rows 3-4), seq2 tokens 3..6 (rows 5-8).
      const size_t row = where == 0 ? 0 : where == 1 ? 4 : where == 2 ? 6 : 8;
      const uint32_t head = where % 2, dim = uint32_t(7 * where + 1);
      expect_refused(
          f,
          [&](std::vector<float>& k, std::vector<float>& v) {
            (where == 2 ? v : k)[row * f.row + head * 64 + dim] = where == 3 ? INFINITY : NAN;
          },
          StatusCode::invalid_argument, "dim " + std::to_string(dim), dev);
      if (HasFatalFailure()) return;
    }
}

TEST_F(GpuCache, Fp16OverflowLeavesBothCachesUnchanged) {
  Filled f = filled(2, 4, 64);
  expect_refused(
      f, [&](std::vector<float>&, std::vector<float>& v) { v[7 * f.row + 64 + 3] = 1e5f; },
      StatusCode::invalid_argument, "outside the fp16 range", true);
}

TEST_F(GpuCache, ScaleOverflowLeavesBothCachesUnchanged) {
  // No window: tokens are encoded from fp32, and a group norm of ~1e6 overflows its fp16 scale.
  Filled f = filled(0, 0, 64);
  expect_refused(
      f,
      [&](std::vector<float>& k, std::vector<float>&) {
        for (uint32_t d = 0; d < 64; ++d) k[4 * f.row + 64 + d] = 2e5f;
      },
      StatusCode::invalid_argument, "too large for an fp16 scale", true);
}

TEST_F(GpuCache, PrefillRefusalLeavesBothCachesUnchanged) {
  // 120 tokens in one call (16-token encode blocks), no sink or window (no check blocks), a
  // forked sequence (copy-on-write): a bad value or a scale overflow anywhere refuses the call.
  const std::vector<uint32_t> n = {40, 30, 50};
  for (int where = 0; where < 3; ++where) {
    Filled f = filled(0, 0, 256);
    expect_refused(
        f,
        [&](std::vector<float>& k, std::vector<float>& v) {
          if (where == 0) k[70 * f.row + 64 + 9] = NAN;
          if (where == 1) k[110 * f.row + 2] = NAN, v[100 * f.row + 64 + 33] = -INFINITY;  // the earlier row wins
          if (where == 2)
            for (uint32_t d = 0; d < 64; ++d) v[90 * f.row + d] = 2e5f;
        },
        StatusCode::invalid_argument,
        where == 0 ? "dim 9" : where == 1 ? "dim 33" : "too large for an fp16 scale", true, n);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuCache, SingleLaunchRefusalLeavesBothCachesUnchanged) {
  // Calls without copy-on-write take the single launch (cuda/append_step.cu): rows are
  // written in place, and zeroed again when the call is refused. Decode steps and a call that
  // takes a new page, with and without an fp16 window (tokens leaving it are packed from the ring).
  for (int where = 0; where < 4; ++where) {
    SCOPED_TRACE("case " + std::to_string(where));
    const bool window = where >= 2;
    Filled f = filled(window ? 2 : 0, window ? 4 : 0, 64);
    std::mt19937_64 rng(11 + where);
    const std::vector<uint64_t> seqs = {f.seqs[0], f.seqs[2]};
    const std::vector<uint32_t> n = {where % 2 ? 3u : 1u, where % 2 ? 6u : 1u};
    const uint32_t rows = n[0] + n[1], last = rows - 1;
    const auto k = values(rng, rows * f.row, f.row), v = values(rng, rows * f.row, f.row);
    auto bad_k = k, bad_v = v;
    const char* want = "non-finite";
    if (where == 0) bad_k[0 * f.row + 64 + 5] = NAN;
    if (where == 1) {
      for (uint32_t d = 0; d < 64; ++d) bad_v[last * f.row + 64 + d] = 2e5f;
      want = "too large for an fp16 scale";
    }
    if (where == 2) bad_v[last * f.row + 9] = -INFINITY;
    if (where == 3) bad_k[last * f.row + 70] = 1e5f, want = "outside the fp16 range";
    const auto [a, b] = f.pair->append(0, seqs, n, bad_k, bad_v, DType::f32, true);
    EXPECT_EQ(a.code, StatusCode::invalid_argument) << a.message;
    EXPECT_EQ(b.code, a.code) << b.message;
    EXPECT_EQ(b.message, a.message);
    EXPECT_NE(b.message.find(want), std::string::npos) << b.message;
    f.pair->expect_identical("after a refused append");
    const auto [c, d] = f.pair->append(0, seqs, n, k, v, DType::f32, true);
    EXPECT_EQ(c.code, StatusCode::ok) << c.message;
    EXPECT_EQ(d.code, StatusCode::ok) << d.message;
    f.pair->expect_identical("after the same call without the bad value");
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuCache, CapacityExhaustedLeavesBothCachesUnchanged) {
  Filled f = filled(0, 0, 9, 4);
  std::mt19937_64 rng(3);
  const std::vector<uint64_t> seqs = {f.seqs[0], f.seqs[2]};
  const std::vector<uint32_t> n = {30, 9};
  const auto k = values(rng, 39 * f.row, f.row), v = values(rng, 39 * f.row, f.row);
  const auto [a, b] = f.pair->append(1, seqs, n, k, v, DType::f16, true);
  EXPECT_EQ(a.code, StatusCode::capacity_exhausted) << a.message;
  EXPECT_EQ(b.code, a.code) << b.message;
  EXPECT_EQ(b.message, a.message);
  f.pair->expect_identical("after a refused append");
  // The same call with a NaN as well: both report the value first, as the CPU checks it first.
  auto k2 = k;
  k2[33 * f.row + 2] = NAN;
  const auto [c, d] = f.pair->append(1, seqs, n, k2, v, DType::f32, false);
  EXPECT_EQ(c.code, StatusCode::invalid_argument) << c.message;
  EXPECT_EQ(d.message, c.message);
  f.pair->expect_identical("after a refused append");
}

TEST_F(GpuCache, AppendCannotBeCaptured) {
  Filled f = filled(0, 0, 64);
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::mt19937_64 rng(1);
  const auto k = values(rng, f.row, f.row), v = values(rng, f.row, f.row);
  DeviceCopy dk(k.data(), k.size() * 4), dv(v.data(), v.size() * 4);
  const uint32_t one = 1;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const Outcome o = outcome_of([&] {
    f.pair->gpu().append(0, &f.seqs[0], &one, 1, dk.get(), dv.get(), DType::f32, s);
  });
  cudaGraph_t g = nullptr;
  CUDA_OK(cudaStreamEndCapture(s, &g));
  if (g) cudaGraphDestroy(g);
  CUDA_OK(cudaStreamDestroy(s));
  EXPECT_EQ(o.code, StatusCode::unsupported) << o.message;
  EXPECT_NE(o.message.find("CUDA graph"), std::string::npos) << o.message;
  f.pair->expect_identical("after a refused capture");
}

TEST_F(GpuCache, StreamIsHonoured) {
  // A non-blocking stream never synchronises with the legacy stream: the cache must order
  // its own work (and a decode on another stream) by itself.
  Filled f = filled(2, 6, 64);
  cudaStream_t s1, s2;
  CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  std::mt19937_64 rng(2);
  for (int i = 0; i < 6; ++i) {
    const std::vector<uint32_t> n = {1, 2, 1};
    const auto k = values(rng, 4 * f.row, f.row), v = values(rng, 4 * f.row, f.row);
    const auto r = f.pair->append(i % 2, f.seqs, n, k, v, DType::bf16, true, i % 3 == 0 ? s1 : s2);
    ASSERT_EQ(r.second.code, StatusCode::ok) << r.second.message;
  }
  f.pair->remove(f.seqs[1]);
  f.pair->expect_identical("after appends on two streams");
  CUDA_OK(cudaStreamDestroy(s1));
  CUDA_OK(cudaStreamDestroy(s2));
}

TEST_F(GpuCache, CopyOnWriteBeforeAnotherSequenceWritesTheSharedPage) {
  // src holds rows 0-9 of a page, its fork rows 0-4 of the same page. One call appends to both,
  // src first: src copies its ten rows to a new page while the fork, now the page's only owner,
  // writes rows 5.. in place. The copy must read the rows as they were (the CPU copies first).
  Spec s;
  s.head_dim = 64, s.kv_heads = 2, s.page_size = 16, s.window = 0;
  const auto plan = plan_for(s);
  CachePair pair(plan, config_for(s, 16));
  const uint64_t src = pair.add();
  std::mt19937_64 rng(4);
  const uint32_t row = 128;
  for (uint32_t l = 0; l < 2; ++l) {
    const auto k = values(rng, 10 * row, row), v = values(rng, 10 * row, row);
    ASSERT_EQ(pair.append(l, {src}, {10}, k, v, DType::f32, true).second.code, StatusCode::ok);
  }
  const uint64_t fork = pair.fork(src, 5);
  for (int order = 0; order < 2; ++order) {
    const std::vector<uint64_t> seqs = order == 0 ? std::vector<uint64_t>{src, fork} : std::vector<uint64_t>{fork, src};
    for (uint32_t l = 0; l < 2; ++l) {
      const auto k = values(rng, 6 * row, row), v = values(rng, 6 * row, row);
      const auto [a, b] = pair.append(l, seqs, {3, 3}, k, v, DType::f16, true);
      ASSERT_EQ(b.code, StatusCode::ok) << b.message;
    }
    pair.expect_identical(order == 0 ? "src first" : "fork first");
    if (order == 0) {  // share a page again for the second order
      pair.remove(fork);
      ASSERT_EQ(pair.fork(src, 11), fork);
    }
  }
}
