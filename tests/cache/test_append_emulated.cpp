// The CUDA append without a GPU: the bodies of its two kernels (cuda/append_body.cuh) run
// thread after thread on the CPU, phase by phase as the barriers order them, over the host
// descriptors and tables the CUDA cache uploads (cuda/append_tables.hpp). A CPU cache appended
// this way must hold exactly the bytes of a CPU cache appended by the CPU backend, and refuse
// bad input with the same status and message. This checks the kernels' indexing, the fast
// path's bound with its exact fallback, and the descriptors, everywhere CI runs (the device
// run is tests/cuda/test_cache_gpu.cpp). Built when nvcc is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "cache/append_plan.hpp"
#include "cache/cache_impl.hpp"
#include "cache_test_util.hpp"
#include "cuda/append_body.cuh"
#include "cuda/append_step.cuh"
#include "cuda/append_tables.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cuda;
using namespace kvbits::cuda::append_body;
using kvbits::cachetest::ctx;

namespace {

// ---- host launches of the two kernels ----

template <int TT>
void emulate_encode_tt(const AppendParams& p) {
  const uint32_t n_tiles = (p.n_tokens + TT - 1) / TT, checks = check_blocks(p);
  const size_t bytes = p.fp16_layer ? 16 : enc_smem_bytes(TT, p.head_dim, p.max_cb);
  std::vector<float4> dyn(bytes / 16 + 2);  // 16-byte aligned, as shared memory
  for (uint32_t h = 0; h < p.n_heads; ++h)
    for (uint32_t bx = 0; bx < n_tiles + checks; ++bx) {
      if (bx >= n_tiles) {
        for (uint32_t tid = 0; tid < kThreads; ++tid) check_rows(p, n_tiles, bx, h, tid, kThreads);
        continue;
      }
      // Shared memory starts as NaN bytes: a phase reading what nobody wrote shows up.
      std::memset(dyn.data(), 0xFF, dyn.size() * 16);
      EncodeShared s{};
      EncodeBlock blk{};
      AppendToken toks[TT];
      enc_bind(s, &blk, toks, reinterpret_cast<unsigned char*>(dyn.data()), TT, p.head_dim, p.max_cb);
      const uint32_t tok0 = bx * TT, nt = std::min<uint32_t>(TT, p.n_tokens - tok0);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_prologue(p, s, tok0, nt, h, tid, kThreads);
      if (p.fp16_layer) {
        for (uint32_t tid = 0; tid < kThreads; ++tid) enc_fp16_rows(p, s, tok0, nt, h, tid, kThreads);
        continue;
      }
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_tables(p, s, nt, h, tid, kThreads);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_load<TT>(p, s, nt, h, tid, kThreads);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_norms(p, s, nt, tid, kThreads);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_codes<TT>(p, s, nt, tid, kThreads);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_fallbacks(p, s, tid, kThreads);
      for (uint32_t tid = 0; tid < kThreads; ++tid) enc_finish(p, s, tok0, nt, h, tid, kThreads);
    }
}

void emulate_encode(const AppendParams& p) {
  const uint32_t tt = append_tokens_per_block(p);
  if (tt == 16) emulate_encode_tt<16>(p);
  else if (tt == 4) emulate_encode_tt<4>(p);
  else emulate_encode_tt<1>(p);
}

void emulate_commit(const AppendParams& p) {
  const CommitGrid g = commit_grid(p);
  for (uint64_t b = 0; b < g.blocks(); ++b)
    for (uint32_t tid = 0; tid < kThreads; ++tid) commit_block(p, g, b, tid, kThreads);
}

// The single-launch kernel (cuda/append_step.cu): item blocks phase by phase, check blocks,
// then the finishing block, which writes the call's error word to p.outcome.
void emulate_step(const AppendParams& p) {
  using namespace step_body;
  const uint32_t H = p.n_heads, items = p.n_tokens * H, checks = (p.rows + kCheckRows - 1) / kCheckRows;
  std::vector<float> tables(size_t(2) * p.max_cb + 1);
  std::vector<StepRegs> regs(kStepThreads);
  for (uint32_t b = 0; b < items + checks * H; ++b) {
    if (!step_item_block(p, b)) {
      const uint32_t c = b - items;
      for (uint32_t tid = 0; tid < kStepThreads; ++tid) check_rows(p, 0, c / H, c % H, tid, kStepThreads);
      continue;
    }
    // Shared memory starts as NaN bytes: a phase reading what nobody wrote shows up.
    auto s = std::make_unique<StepShared>();
    std::memset(static_cast<void*>(s.get()), 0xFF, sizeof(StepShared));
    std::fill(tables.begin(), tables.end(), NAN);
    float* cent = tables.data();
    float* bnd = cent + p.max_cb;
    const AppendHead& head = p.heads[size_t(p.layer) * H + b % H];
    for (uint32_t tid = 0; tid < kStepThreads; ++tid)
      step_begin(p, head, p.tokens[b / H], *s, cent, bnd, b, tid, regs[tid]);
    for (uint32_t tid = 0; tid < kStepThreads; ++tid) step_place(p, *s, tid, regs[tid]);
    for (uint32_t tid = 0; tid < kStepThreads; ++tid) step_dots(p, *s, tid, regs[tid]);
    for (uint32_t tid = 0; tid < kStepThreads; ++tid) step_codes(p, *s, cent, bnd, tid, regs[tid]);
    for (uint32_t tid = 0; tid < kStepThreads; ++tid) step_store(p, *s, b, tid, regs[tid]);
  }
  const unsigned long long error = p.step->error;
  for (uint32_t tid = 0; tid < kStepThreads; ++tid) step_finish_call(p, error, tid, kStepThreads);
}

// ---- a CPU cache appended the way the CUDA cache appends (cuda/device_cache.cpp) ----

struct Emulated {
  explicit Emulated(Cache& c) : cache(c), tables(build_append_tables(c.impl(), c.impl().pool.base())) {
    tables.place(tables.data.data());
  }
  Cache& cache;
  AppendTables tables;
  bool force_exact = false;
  bool single = false;  // take the single-launch path where it applies
  AppendStepState state;
  unsigned long long outcome = 0;  // the single launch's outcome, as p.outcome receives it
  uint32_t outcome_ready = 0;  // its flag
  size_t single_calls = 0, in_place_calls = 0;

  void append(uint32_t layer, const std::vector<uint64_t>& seqs, const std::vector<uint32_t>& n, const void* k,
              const void* v, DType dtype) {
    Cache::Impl& m = cache.impl();
    cache_detail::AppendPlan plan = cache_detail::plan_append(m, layer, seqs.data(), n.data(), seqs.size(), k, v, dtype);
    for (cache_detail::SeqAppend& p : plan.entries) {
      p.seq->pages.reserve(std::max(p.seq->pages.size(), m.pages_for(p.qend1)));
      if (m.sink + m.window > 0 && !p.seq->layers[layer].fp16)
        p.new_block = cache_detail::host_fp16_block(m.fp16_block_elems());
    }
    const AppendCall d = describe_append(m, plan);
    std::vector<uint8_t> codes(plan.packed.size() * m.n_heads * d.code_stride + 1, 0xEE);
    std::vector<uint16_t> scales(plan.packed.size() * m.n_heads * d.scale_stride + 1, 0xEEEE);
    unsigned long long error = AppendError::kNone;
    AppendParams ap;
    ap.n_layers = m.n_layers, ap.n_heads = m.n_heads, ap.head_dim = m.head_dim;
    ap.sink = m.sink, ap.window = m.window, ap.layer = layer;
    ap.fp16_layer = plan.layer_fp16;
    ap.dtype = uint32_t(dtype);
    ap.k = k, ap.v = v;
    ap.rows = uint32_t(plan.rows);
    ap.n_entries = uint32_t(d.entries.size()), ap.n_tokens = uint32_t(d.tokens.size());
    ap.entries = d.entries.data(), ap.tokens = d.tokens.data();
    ap.heads = tables.heads.data();
    ap.max_cb = tables.max_cb[layer];
    ap.stage_codes = codes.data(), ap.stage_scales = scales.data();
    ap.code_stride = d.code_stride, ap.scale_stride = d.scale_stride;
    ap.error = &error;
    ap.force_exact = force_exact;
    ap.copies = d.copies.data(), ap.n_copies = uint32_t(d.copies.size());
    ap.copy_rows = d.copy_rows.data();
    ap.step = &state;
    ap.outcome = &outcome, ap.outcome_ready = &outcome_ready;
    // The device's single launch writes rows before any host bookkeeping. Host pools zero a
    // page when it is taken, so a call that takes pages runs a launch that only checks first
    // and the one that writes after the bookkeeping; a call that takes none runs the one
    // launch as the device does (on an error it zeroes the rows it wrote).
    const bool one_launch = single && append_step_applies(ap);
    const bool in_place = one_launch && plan.page_steps.empty();
    if (one_launch) {
      ap.error = &state.error;
      ap.commit = in_place && plan.pages_fit;
      emulate_step(ap);
      error = outcome;
      in_place_calls += in_place;
    } else {
      emulate_encode(ap);
    }
    if (error != AppendError::kNone && error < AppendError::kScaleBase) throw_append_error(m, plan, error);
    if (!plan.pages_fit) cache_detail::capacity_error(m, plan);
    if (error != AppendError::kNone) throw_append_error(m, plan, error);
    // Host pools zero a page when it is taken: commit the bookkeeping first, then the rows.
    for (cache_detail::SeqAppend& p : plan.entries)
      if (p.new_block) p.seq->layers[layer].fp16 = std::move(p.new_block);
    cache_detail::commit_page_steps(m, plan, [](const cache_detail::PageStep&) {});
    if (one_launch) {
      ap.commit = true;
      if (!in_place) emulate_step(ap);
      EXPECT_EQ(outcome, AppendError::kNone);
      EXPECT_EQ(state.error, AppendError::kNone);
      ++single_calls;
    } else {
      emulate_commit(ap);
    }
    for (cache_detail::SeqAppend& p : plan.entries) {
      p.seq->layers[layer].len = p.len1;
      p.seq->layers[layer].qend = p.qend1;
    }
  }
};

struct Outcome {
  StatusCode code = StatusCode::ok;
  std::string message;
};
template <class F>
Outcome outcome_of(F&& f) {
  try {
    f();
    return {};
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
}

void expect_same(const Cache& a, const Cache& b, const std::string& what) {
  const ModelShape& sh = a.plan().shape;
  const uint32_t H = sh.n_kv_heads, D = sh.head_dim;
  ASSERT_EQ(a.sequences(), b.sequences()) << what;
  EXPECT_EQ(a.stats().pages_used, b.stats().pages_used) << what;
  EXPECT_EQ(a.stats().fp16_region_bytes, b.stats().fp16_region_bytes) << what;
  const size_t block = size_t(2) * H * (size_t(a.sink_tokens()) + a.window_tokens()) * D;
  for (uint64_t id : a.sequences()) {
    EXPECT_EQ(cachetest::page_bytes_of(a, id), cachetest::page_bytes_of(b, id)) << what << ": pages of seq " << id;
    for (uint32_t l = 0; l < sh.n_layers; ++l) {
      const SeqLayerView x = a.view(id, l), y = b.view(id, l);
      ASSERT_EQ(x.len, y.len) << what;
      ASSERT_EQ(x.qend, y.qend) << what;
      ASSERT_EQ(x.fp16_base == nullptr, y.fp16_base == nullptr) << what;
      if (x.fp16_base) {
        EXPECT_EQ(0, std::memcmp(x.fp16_base, y.fp16_base, block * 2)) << what << ": fp16 block of seq " << id;
      }
      std::vector<float> ka(size_t(x.len) * H * D), va(ka.size()), kb(ka.size()), vb(ka.size());
      a.read(id, l, 0, x.len, ka.data(), va.data());
      b.read(id, l, 0, x.len, kb.data(), vb.data());
      EXPECT_EQ(0, std::memcmp(ka.data(), kb.data(), ka.size() * 4)) << what << ": K of seq " << id << " layer " << l;
      EXPECT_EQ(0, std::memcmp(va.data(), vb.data(), va.size() * 4)) << what << ": V of seq " << id << " layer " << l;
    }
  }
}

std::vector<uint8_t> as_dtype(const std::vector<float>& x, DType dtype) {
  std::vector<uint8_t> out(x.size() * dtype_size(dtype));
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == DType::f32) {
      std::memcpy(&out[4 * i], &x[i], 4);
      continue;
    }
    const uint16_t b = dtype == DType::f16 ? float_to_half(x[i]) : float_to_bf16(x[i]);
    std::memcpy(&out[2 * i], &b, 2);
  }
  return out;
}

// Rows of varied scale (tiny to large, outliers) like activations.
std::vector<float> values(std::mt19937_64& rng, size_t n, uint32_t row) {
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  const float scales[] = {1.0f, 0.01f, 30.0f, 1e-4f, 3.0f};
  for (size_t i = 0; i < n; ++i) x[i] = scales[(i / row) % 5] * nd(rng) * (i % 97 == 5 ? 20.0f : 1.0f);
  return x;
}

struct Spec {
  uint32_t kv = 2, D = 64, P = 8, S = 0, W = 0, batch = 3, rounds = 3, max_tokens = 20;
  double k_bits = 3.0;
  int v_bits = 3;
  bool fp16_layer = false, exact = false;
  bool single = false;  // the emulator takes the single-launch path where it applies
  uint64_t seed = 1;
};

// The same calls on a CPU cache and on an emulated one; forks and removes in between.
void run(const Spec& s) {
  SCOPED_TRACE("kv=" + std::to_string(s.kv) + " D=" + std::to_string(s.D) + " P=" + std::to_string(s.P) +
               " S=" + std::to_string(s.S) + " W=" + std::to_string(s.W) + " seed=" + std::to_string(s.seed) +
               (s.single ? " single launch" : ""));
  ModelShape sh = cachetest::make_shape(2, s.kv, s.D);
  PlanOptions o;
  o.k_avg_bits = s.k_bits, o.v_bits = s.v_bits, o.sink_tokens = s.S, o.window_tokens = s.W;
  if (s.fp16_layer) o.fp16_layers = {1};
  const auto plan = cachetest::make_plan(sh, o, s.seed);
  CacheConfig cfg;
  cfg.page_size = s.P, cfg.max_pages = 2048, cfg.max_sequences = 64;
  Cache a(plan, ctx(), cfg), b(plan, ctx(), cfg);
  Emulated em(b);
  em.force_exact = s.exact;
  em.single = s.single;
  std::mt19937_64 rng(s.seed * 31);
  std::vector<uint64_t> live;
  for (uint32_t i = 0; i < s.batch; ++i) {
    live.push_back(a.add_sequence());
    ASSERT_EQ(b.add_sequence(), live.back());
  }
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16};
  const uint32_t row = s.kv * s.D;
  for (uint32_t round = 0; round < s.rounds; ++round) {
    std::vector<uint64_t> seqs;
    std::vector<uint32_t> n;
    uint32_t total = 0;
    for (uint64_t id : live)
      if (rng() % 4 != 0 || seqs.empty()) {
        seqs.push_back(id);
        n.push_back(rng() % 3 == 0 ? 1 : 1 + uint32_t(rng() % s.max_tokens));
        total += n.back();
      }
    const DType dt = dtypes[(round + s.seed) % 3];
    for (uint32_t l = 0; l < (rng() % 4 == 0 ? 1u : 2u); ++l) {
      const auto k = as_dtype(values(rng, size_t(total) * row, row), dt);
      const auto v = as_dtype(values(rng, size_t(total) * row, row), dt);
      a.append(l, seqs.data(), n.data(), seqs.size(), k.data(), v.data(), dt);
      const Outcome r = outcome_of([&] { em.append(l, seqs, n, k.data(), v.data(), dt); });
      ASSERT_EQ(r.code, StatusCode::ok) << r.message;
    }
    expect_same(a, b, "round " + std::to_string(round));
    if (::testing::Test::HasFatalFailure()) return;
    if (round % 2 == 0) {
      const uint64_t src = live[rng() % live.size()];
      const uint32_t most = std::min(a.length(src, 0), a.length(src, 1));
      const uint32_t prefix = most == 0 ? 0 : uint32_t(rng() % (most + 1));
      live.push_back(a.fork_sequence(src, prefix));
      ASSERT_EQ(b.fork_sequence(src, prefix), live.back());
    }
    if (round % 3 == 2 && live.size() > 2) {
      const size_t i = rng() % live.size();
      a.remove_sequence(live[i]);
      b.remove_sequence(live[i]);
      live.erase(live.begin() + std::ptrdiff_t(i));
    }
  }
  if (s.single && s.D <= 128 && !s.fp16_layer) {
    EXPECT_GT(em.single_calls, 0u) << "no call took the single launch";
  }
}

}  // namespace

TEST(AppendEmulated, MatchesTheCpuBackendBitForBit) {
  std::vector<Spec> specs;
  auto add = [&](uint32_t kv, uint32_t D, uint32_t P, uint32_t S, uint32_t W, double kb, int vb) {
    Spec s;
    s.kv = kv, s.D = D, s.P = P, s.S = S, s.W = W, s.k_bits = kb, s.v_bits = vb, s.seed = specs.size() + 1;
    specs.push_back(s);
  };
  add(2, 64, 8, 0, 0, 3.0, 3);
  add(1, 128, 16, 0, 0, 2.0, 2);
  add(2, 32, 4, 2, 3, 4.0, 4);
  add(2, 64, 7, 0, 9, 2.5, 3);
  add(1, 256, 64, 3, 0, 3.0, 3);
  add(3, 16, 1, 1, 1, 1.5, 1);
  for (Spec& s : specs)
    for (bool single : {false, true}) {
      s.single = single;
      run(s);
      if (HasFatalFailure()) return;
    }
}

TEST(AppendEmulated, PrefillTilesOfSixteen) {
  Spec s;
  s.D = 128, s.kv = 2, s.P = 64, s.batch = 2, s.rounds = 2, s.max_tokens = 150, s.W = 8, s.seed = 21;
  run(s);
}

TEST(AppendEmulated, Fp16LayerAndExactPath) {
  Spec s;
  s.fp16_layer = true, s.W = 5, s.S = 1, s.seed = 31;
  run(s);
  s.fp16_layer = false, s.exact = true, s.seed = 32;
  run(s);
  s.single = true;
  run(s);
}

TEST(AppendEmulated, CoordinatesOnCodebookBoundariesTakeTheExactPath) {
  // K and V rows built so that rotated coordinates land within ~1e-7 of codebook boundaries:
  // x = R^T y with y holding boundary values. The fast fp32 sum cannot decide those codes; the
  // fallback must give the CPU's.
  ModelShape sh = cachetest::make_shape(1, 1, 64);
  PlanOptions o;
  o.k_avg_bits = 3.0, o.v_bits = 3;
  const auto plan = cachetest::make_plan(sh, o, 5);
  CacheConfig cfg;
  cfg.page_size = 16, cfg.max_pages = 64;
  Cache a(plan, ctx(), cfg), b(plan, ctx(), cfg);
  Emulated em(b);
  const uint64_t id = a.add_sequence();
  b.add_sequence();
  const TqQuantizer& vq = a.quantizers(0, 0).v;
  const std::vector<float>& R = vq.rotation(0);
  const std::vector<float>& bnd = vq.codebook(0).boundaries;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd;
  const uint32_t T = 24, D = 64;
  std::vector<float> v(size_t(T) * D), k(v.size());
  for (uint32_t t = 0; t < T; ++t) {
    std::vector<double> y(D);
    double rest = 0;
    for (uint32_t r = 0; r < D; ++r) {
      y[r] = r % 3 == 0 ? double(bnd[(r + t) % bnd.size()]) : nd(rng) * 0.1;
      if (r % 3 != 0) rest += y[r] * y[r];
    }
    double fixed = 0;
    for (uint32_t r = 0; r < D; r += 3) fixed += y[r] * y[r];
    const double scale = std::sqrt(std::max(1e-12, 1.0 - fixed) / rest);  // ||y|| = 1: n = 1
    for (uint32_t r = 0; r < D; ++r)
      if (r % 3 != 0) y[r] *= scale;
    for (uint32_t j = 0; j < D; ++j) {
      double x = 0;
      for (uint32_t r = 0; r < D; ++r) x += double(R[size_t(r) * D + j]) * y[r];
      v[size_t(t) * D + j] = float(x * (t % 4 == 0 ? 1e-3 : 7.0));  // scale-free: y = R x / n
      k[size_t(t) * D + j] = float(x);
    }
  }
  const std::vector<uint64_t> seqs = {id};
  const std::vector<uint32_t> n = {T};
  a.append(0, seqs.data(), n.data(), 1, k.data(), v.data(), DType::f32);
  em.append(0, seqs, n, k.data(), v.data(), DType::f32);
  expect_same(a, b, "boundary rows");
}

TEST(AppendEmulated, Fp32TestNeverContradictsTheCanonicalCode) {
  // The encode block's fp32 test (fast_code32): for any fp32 sum s within the bound B of the
  // canonical s*, a code it decides is the code of fl64(s* / n). Adversarial coordinates sit
  // within a few B of a boundary; norms span the fp32 range, subnormal ones included.
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  uint64_t decided = 0, decided_random = 0, random_cases = 0, checked = 0;
  for (int trial = 0; trial < 400000; ++trial) {
    Matrix m{};
    m.bits = 1 + uint32_t(trial % 8);
    m.dims = 1u << (1 + trial % 7);  // 2 .. 128
    const uint32_t nb = (1u << m.bits) - 1;
    std::vector<float> bnd(nb);
    for (uint32_t i = 0; i < nb; ++i) bnd[i] = float(std::tan((double(i) + 1) / (nb + 1) * 3.0 - 1.5) * 0.3);
    if (nb % 2 == 1) bnd[nb / 2] = 0.0f;
    const double n = std::ldexp(1.0 + 0.5 * (u(rng) + 1.0), int(trial % 280) - 150);
    const double B = add_ru(mul_ru(n, double(m.dims) * 0x1.01p-24), double(m.dims) * 0x1p-125);
    const bool near = trial % 2 == 0;
    double y_target = 1.3 * u(rng);
    if (near) y_target = double(bnd[size_t(rng() % nb)]) + u(rng) * 4.0 * B / n;
    const double s_star = y_target * n;
    const float s = float(s_star + u(rng) * B);
    if (!std::isfinite(s) || std::fabs(double(s) - s_star) > B) continue;
    float rn = 0, d0 = 0;
    fast_margin(n, m.dims, &rn, &d0);
    if (!(rn == rn)) continue;  // the fp64 test decides these
    ++checked;
    const bool counted = !near && n > 0x1p-100;  // below, the 2^-125 terms of B widen the interval
    random_cases += counted;
    const uint32_t want = code_of(bnd.data(), nb, s_star / n);
    const uint32_t got = fast_code32(s, rn, d0, m, bnd.data());
    if (got == kUndecided) continue;
    ++decided;
    decided_random += counted;
    ASSERT_EQ(got, want) << "trial " << trial << " n " << n << " s* " << s_star << " s " << s;
  }
  // The test has teeth: most coordinates are decided, near-boundary ones included.
  EXPECT_GT(checked, 200000u);
  EXPECT_GT(decided_random, random_cases * 99 / 100);
  EXPECT_GT(random_cases, 100000u);
  EXPECT_GT(decided, checked / 2);
}

TEST(AppendEmulated, BadValuesGiveTheCpuError) {
  ModelShape sh = cachetest::make_shape(2, 2, 32);
  PlanOptions o;
  o.sink_tokens = 2, o.window_tokens = 3;
  const auto plan = cachetest::make_plan(sh, o, 9);
  for (int where = 0; where < 10; ++where) {
    CacheConfig cfg;
    cfg.page_size = 4, cfg.max_pages = where % 5 == 4 ? 1 : 64;
    Cache a(plan, ctx(), cfg), b(plan, ctx(), cfg);
    Emulated em(b);
    em.single = where >= 5;
    std::vector<uint64_t> seqs;
    for (int i = 0; i < 3; ++i) seqs.push_back(a.add_sequence()), b.add_sequence();
    std::mt19937_64 rng(where % 5);
    const std::vector<uint32_t> n = {6, 1, 9};
    auto k = values(rng, 16 * 64, 64), v = values(rng, 16 * 64, 64);
    if (where % 5 == 0) k[3 * 64 + 32 + 7] = NAN;          // a packed token
    if (where % 5 == 1) v[0 * 64 + 5] = INFINITY;          // a sink token
    if (where % 5 == 2) v[15 * 64 + 40] = 1e6f;            // fp16 range (window)
    if (where % 5 == 3) k[10 * 64 + 1] = -NAN, v[2 * 64] = NAN;  // the first one wins
    // where % 5 == 4: one page is not enough
    const Outcome x = outcome_of([&] { a.append(1, seqs.data(), n.data(), 3, k.data(), v.data(), DType::f32); });
    const Outcome y = outcome_of([&] { em.append(1, seqs, n, k.data(), v.data(), DType::f32); });
    EXPECT_NE(x.code, StatusCode::ok) << where;
    EXPECT_EQ(y.code, x.code) << where << ": " << y.message;
    EXPECT_EQ(y.message, x.message) << where;
    expect_same(a, b, "after a refused append");
  }
  // A group norm past the fp16 range (no window: encoded from fp32).
  PlanOptions o2;
  const auto plan2 = cachetest::make_plan(sh, o2, 10);
  CacheConfig cfg;
  cfg.page_size = 4, cfg.max_pages = 64;
  for (bool single : {false, true}) {
    Cache a(plan2, ctx(), cfg), b(plan2, ctx(), cfg);
    Emulated em(b);
    em.single = single;
    const uint64_t id = a.add_sequence();
    b.add_sequence();
    std::mt19937_64 rng(1);
    auto k = values(rng, 5 * 64, 64), v = values(rng, 5 * 64, 64);
    for (uint32_t d = 0; d < 32; ++d) v[2 * 64 + 32 + d] = 3e5f;
    const uint32_t five = 5;
    const Outcome x = outcome_of([&] { a.append(0, &id, &five, 1, k.data(), v.data(), DType::f32); });
    const Outcome y = outcome_of([&] { em.append(0, {id}, {five}, k.data(), v.data(), DType::f32); });
    EXPECT_EQ(x.code, StatusCode::invalid_argument) << x.message;
    EXPECT_EQ(y.message, x.message);
    expect_same(a, b, "after a refused append");
  }
  // Prefill-sized calls without sink and window (16-token encode blocks, no check blocks): the
  // encode blocks' own checks find the first bad value, and scale overflows, as the CPU does.
  for (int where = 0; where < 3; ++where) {
    Cache a(plan2, ctx(), cfg), b(plan2, ctx(), cfg);
    Emulated em(b);
    std::vector<uint64_t> seqs;
    for (int i = 0; i < 2; ++i) seqs.push_back(a.add_sequence()), b.add_sequence();
    std::mt19937_64 rng(20 + where);
    const std::vector<uint32_t> n = {70, 50};
    auto k = values(rng, 120 * 64, 64), v = values(rng, 120 * 64, 64);
    if (where == 0) k[65 * 64 + 32 + 3] = NAN;
    if (where == 1) k[110 * 64 + 2] = NAN, v[100 * 64 + 33] = -INFINITY;  // the earlier row wins
    if (where == 2)
      for (uint32_t d = 0; d < 32; ++d) v[80 * 64 + d] = 3e5f;
    const Outcome x = outcome_of([&] { a.append(0, seqs.data(), n.data(), 2, k.data(), v.data(), DType::f32); });
    const Outcome y = outcome_of([&] { em.append(0, seqs, n, k.data(), v.data(), DType::f32); });
    EXPECT_EQ(x.code, StatusCode::invalid_argument) << where << ": " << x.message;
    EXPECT_EQ(y.code, x.code) << where << ": " << y.message;
    EXPECT_EQ(y.message, x.message) << where;
    expect_same(a, b, "after a refused prefill");
  }
}

TEST(AppendEmulated, SingleLaunchRefusalZeroesTheRowsItWrote) {
  // Calls that fit in pages the sequences own run the single launch as the device does: it
  // writes rows in place and, on an error, writes them back to zero. The pages must then hold
  // exactly the bytes of the CPU cache that refused the same call; later calls still agree.
  ModelShape sh = cachetest::make_shape(2, 2, 64);
  for (int with_window = 0; with_window < 2; ++with_window) {
    PlanOptions o;
    o.window_tokens = with_window ? 3 : 0;
    const auto plan = cachetest::make_plan(sh, o, 12);
    CacheConfig cfg;
    cfg.page_size = 32, cfg.max_pages = 64;
    Cache a(plan, ctx(), cfg), b(plan, ctx(), cfg);
    Emulated em(b);
    em.single = true;
    const std::vector<uint64_t> ids = {a.add_sequence(), a.add_sequence()};
    b.add_sequence(), b.add_sequence();
    std::mt19937_64 rng(5 + with_window);
    const uint32_t row = 2 * 64;
    auto both = [&](const std::vector<uint32_t>& n, const std::vector<float>& k, const std::vector<float>& v) {
      const Outcome x = outcome_of([&] { a.append(0, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); });
      const Outcome y = outcome_of([&] { em.append(0, ids, n, k.data(), v.data(), DType::f32); });
      EXPECT_EQ(y.code, x.code) << y.message;
      EXPECT_EQ(y.message, x.message);
      expect_same(a, b, x.message.empty() ? "accepted" : x.message);
      return x.code;
    };
    ASSERT_EQ(both({5, 7}, values(rng, 12 * row, row), values(rng, 12 * row, row)), StatusCode::ok);
    const size_t before = em.in_place_calls;
    for (int bad = 0; bad < 3; ++bad) {
      auto k = values(rng, 4 * row, row), v = values(rng, 4 * row, row);
      if (bad == 0) k[3 * row + 70] = NAN;                                  // the last token
      if (bad == 1) v[1 * row + 3] = -INFINITY;                             // the first sequence
      if (bad == 2) for (uint32_t d = 0; d < 64; ++d) v[2 * row + 64 + d] = 3e5f;  // a V scale
      EXPECT_EQ(both({2, 2}, k, v), StatusCode::invalid_argument) << bad;
    }
    EXPECT_EQ(both({2, 2}, values(rng, 4 * row, row), values(rng, 4 * row, row)), StatusCode::ok);
    EXPECT_EQ(em.in_place_calls, before + 4) << "the calls must run in place";
  }
}

TEST(AppendEmulated, ExactChainsAreTheCanonicalSums) {
  // The fallback coordinate and the group norms must be the CPU's fp64 sums bit for bit (a
  // different summation order changes their last bits, which random data rarely turns into
  // another code, so they are compared directly here).
  ModelShape sh = cachetest::make_shape(1, 2, 128);
  const auto plan = cachetest::make_plan(sh, PlanOptions{}, 4);
  CacheConfig cfg;
  cfg.page_size = 16, cfg.max_pages = 8;
  Cache c(plan, ctx(), cfg);
  Emulated em(c);
  std::mt19937_64 rng(8);
  std::normal_distribution<float> nd;
  size_t compared = 0, differ_reversed = 0;
  for (uint32_t h = 0; h < 2; ++h) {
    const AppendHead& hd = em.tables.heads[h];
    const HeadQuantizers& q = c.quantizers(0, h);
    for (int m = 0; m <= int(hd.n_k_groups); ++m) {
      const bool is_v = m == int(hd.n_k_groups);
      const AppendGroup& g = is_v ? hd.v : hd.k[m];
      const std::vector<float>& R = is_v ? q.v.rotation(0) : q.k.rotation(size_t(m));
      const Matrix mt{g.bits, g.first, g.dims, g.byte_offset, g.rot_offset, g.cb_offset, 0, 0};
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<float> x(g.dims);
        for (float& e : x) e = nd(rng) * (trial % 2 ? 1e3f : 1e-2f);
        for (uint32_t r = 0; r < g.dims; ++r) {
          double want = 0.0, reversed = 0.0;
          for (uint32_t j = 0; j < g.dims; ++j) want += double(R[size_t(r) * g.dims + j]) * double(x[j]);
          for (uint32_t j = g.dims; j-- > 0;) reversed += double(R[size_t(r) * g.dims + j]) * double(x[j]);
          const double got = exact_dot(hd.rot, mt, r, x.data());
          ASSERT_EQ(std::memcmp(&got, &want, 8), 0) << "head " << h << " matrix " << m << " row " << r;
          ++compared;
          differ_reversed += std::memcmp(&reversed, &want, 8) != 0;
        }
      }
    }
  }
  // The check has teeth: another order would have differed somewhere.
  EXPECT_GT(differ_reversed, compared / 20) << compared << " sums compared";

  // Norms: phase 2 of the encode block against sqrt of the sequential sum of squares.
  const uint64_t id = c.add_sequence();
  const uint32_t T = 3;
  std::vector<float> k(size_t(T) * 2 * 128), v(k.size());
  for (float& e : k) e = nd(rng) * 10.0f;
  for (float& e : v) e = nd(rng) * 0.1f;
  cache_detail::AppendPlan pl =
      cache_detail::plan_append(c.impl(), 0, &id, &T, 1, k.data(), v.data(), DType::f32);
  const AppendCall d = describe_append(c.impl(), pl);
  unsigned long long error = AppendError::kNone;
  AppendParams ap;
  ap.n_layers = 1, ap.n_heads = 2, ap.head_dim = 128, ap.dtype = 0, ap.k = k.data(), ap.v = v.data();
  ap.rows = T, ap.n_entries = 1, ap.n_tokens = T, ap.entries = d.entries.data(), ap.tokens = d.tokens.data();
  ap.heads = em.tables.heads.data(), ap.max_cb = em.tables.max_cb[0], ap.error = &error;
  std::vector<float4> dyn(enc_smem_bytes(4, 128, ap.max_cb) / 16 + 2);
  EncodeShared s{};
  EncodeBlock blk{};
  AppendToken toks[4];
  enc_bind(s, &blk, toks, reinterpret_cast<unsigned char*>(dyn.data()), 4, 128, ap.max_cb);
  for (uint32_t h = 0; h < 2; ++h) {
    for (uint32_t tid = 0; tid < kThreads; ++tid) enc_prologue(ap, s, 0, T, h, tid, kThreads);
    for (uint32_t tid = 0; tid < kThreads; ++tid) enc_tables(ap, s, T, h, tid, kThreads);
    for (uint32_t tid = 0; tid < kThreads; ++tid) enc_load<4>(ap, s, T, h, tid, kThreads);
    for (uint32_t tid = 0; tid < kThreads; ++tid) enc_norms(ap, s, T, tid, kThreads);
    const TqQuantizer& kq = c.quantizers(0, h).k;
    for (uint32_t t = 0; t < T; ++t)
      for (uint32_t m = 0; m < s.blk->n_mats; ++m) {
        const bool is_v = m + 1 == s.blk->n_mats;
        const float* row = (is_v ? v.data() : k.data()) + (size_t(t) * 2 + h) * 128;
        double nsq = 0.0;
        const uint32_t first = is_v ? 0 : kq.groups()[m].first_slot, dims = is_v ? 128 : kq.groups()[m].dims;
        for (uint32_t j = 0; j < dims; ++j) {
          const double xj = row[is_v ? j : kq.slot_dim()[first + j]];
          nsq += xj * xj;
        }
        const double want = std::sqrt(nsq), got = s.nrm[t * kMaxMatrices + m];
        EXPECT_EQ(std::memcmp(&got, &want, 8), 0) << "head " << h << " token " << t << " matrix " << m;
      }
  }
  EXPECT_EQ(error, AppendError::kNone);
}
