// The C API end to end: calibrate -> plan -> cache -> append -> decode / extend, compared bit
// for bit with the same steps through the C++ API; the K3V3 D=128 memory budget; versioned
// structs; handle lifetimes; one context shared by two threads.
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "capi_test_util.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/context.hpp"
#include "kvbits/half.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits_config.h"

using namespace capi_test;

namespace {

constexpr uint32_t L = 2, HQ = 4, HKV = 2, D = 32;

std::vector<uint16_t> to_f16(const std::vector<float>& x) {
  std::vector<uint16_t> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = kvbits::float_to_half(x[i]);
  return r;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = kvbits::float_to_bf16(x[i]);
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

kvbits::ModelShape cpp_shape() {
  kvbits::ModelShape s;
  s.n_layers = L, s.n_q_heads = HQ, s.n_kv_heads = HKV, s.head_dim = D, s.rotary_dim = D;
  return s;
}

// One batch step applied to both caches: the same tokens through the C and the C++ API.
struct Step {
  std::vector<uint32_t> n;  // tokens per sequence (of `seqs`)
  kvb_dtype dtype;
  uint64_t seed;
};

class CApiVersusCpp : public ::testing::Test {
 protected:
  void SetUp() override {
    // --- calibrate: layer 0 in two fp32 chunks, layer 1 in fp16 ---
    const kvb_model_shape s = shape(L, HQ, HKV, D);
    ctx_ = cpu_context(2);
    kvb_calibrator* cal = nullptr;
    KVB_ASSERT_OK(kvb_calibrator_create(ctx_.get(), &s, &cal, err));
    Calibrator owned(cal);
    kvbits::EnergyAccumulator acc(cpp_shape());
    for (uint64_t chunk = 0; chunk < 2; ++chunk) {
      const auto q = activations(24, HQ, D, 3.0, 10 + chunk), k = activations(24, HKV, D, 3.0, 20 + chunk);
      KVB_ASSERT_OK(kvb_calibrator_observe(cal, 0, q.data(), k.data(), 24, KVB_DTYPE_F32, err));
      acc.observe(0, q.data(), k.data(), 24, kvbits::DType::f32);
    }
    const auto q1 = to_f16(activations(48, HQ, D, 3.0, 30)), k1 = to_f16(activations(48, HKV, D, 3.0, 31));
    KVB_ASSERT_OK(kvb_calibrator_observe(cal, 1, q1.data(), k1.data(), 48, KVB_DTYPE_F16, err));
    acc.observe(1, q1.data(), k1.data(), 48, kvbits::DType::f16);

    kvb_plan_options o = plan_options(2.5, 3);
    o.sink_tokens = 2, o.window_tokens = 4;
    kvb_plan* plan = nullptr;
    KVB_ASSERT_OK(kvb_calibrator_build_plan(cal, &o, &plan, err));
    plan_.reset(plan);

    kvbits::PlanOptions po;
    po.k_avg_bits = 2.5, po.v_bits = 3, po.sink_tokens = 2, po.window_tokens = 4;
    po.producer.tool = "kvbits " KVB_VERSION_STRING;
    po.producer.corpus = "synthetic", po.producer.date = "2026-01-01T00:00:00Z";
    cpp_plan_ = std::make_shared<const kvbits::Plan>(kvbits::build_plan(acc, po));

    // --- the two caches ---
    kvb_cache_params cp;
    kvb_cache_params_default(&cp);
    cp.page_size = 4, cp.max_pages = 32, cp.max_sequences = 8;
    cp.model = &s;
    kvb_cache* cache = nullptr;
    KVB_ASSERT_OK(kvb_cache_create(ctx_.get(), plan_.get(), &cp, &cache, err));
    cache_.reset(cache);
    kvbits::ContextConfig cc;
    cc.backend = kvbits::Backend::cpu, cc.n_threads = 2;
    cpp_ctx_ = std::make_unique<kvbits::Context>(cc);
    kvbits::CacheConfig cfg;
    cfg.page_size = 4, cfg.max_pages = 32, cfg.max_sequences = 8;
    cpp_cache_ = std::make_unique<kvbits::Cache>(cpp_plan_, *cpp_ctx_, cfg);
    for (int i = 0; i < 2; ++i) {
      uint64_t id = 0;
      KVB_ASSERT_OK(kvb_cache_seq_add(cache_.get(), &id, err));
      ASSERT_EQ(id, cpp_cache_->add_sequence());
      seqs_.push_back(id);
    }
  }

  // Appends the same tokens to every layer of both caches.
  void append(const std::vector<uint64_t>& seqs, const Step& step) {
    uint32_t total = 0;
    for (uint32_t n : step.n) total += n;
    for (uint32_t l = 0; l < L; ++l) {
      const auto k = activations(total, HKV, D, 3.0, step.seed + 2 * l), v = activations(total, HKV, D, 1.0, step.seed + 2 * l + 1);
      std::vector<uint16_t> k16, v16;
      const void *kp = k.data(), *vp = v.data();
      if (step.dtype == KVB_DTYPE_F16) k16 = to_f16(k), v16 = to_f16(v), kp = k16.data(), vp = v16.data();
      if (step.dtype == KVB_DTYPE_BF16) k16 = to_bf16(k), v16 = to_bf16(v), kp = k16.data(), vp = v16.data();
      KVB_ASSERT_OK(kvb_cache_append(cache_.get(), l, seqs.data(), step.n.data(), seqs.size(), kp, vp, step.dtype,
                                     nullptr, err));
      std::vector<uint64_t> cs;  // the core takes no empty entry; the C API skips them itself
      std::vector<uint32_t> cn;
      for (size_t i = 0; i < seqs.size(); ++i)
        if (step.n[i] > 0) cs.push_back(seqs[i]), cn.push_back(step.n[i]);
      cpp_cache_->append(l, cs.data(), cn.data(), cs.size(), kp, vp, kvbits::DType(step.dtype));
    }
  }

  void expect_same_contents(uint64_t seq) {
    for (uint32_t l = 0; l < L; ++l) {
      uint32_t len = 0;
      KVB_ASSERT_OK(kvb_cache_seq_length(cache_.get(), seq, l, &len, err));
      ASSERT_EQ(len, cpp_cache_->length(seq, l));
      ASSERT_GT(len, 0u);
      std::vector<float> k(size_t(len) * HKV * D), v(k.size()), ck(k.size()), cv(k.size());
      KVB_ASSERT_OK(kvb_cache_read(cache_.get(), seq, l, 0, len, k.data(), v.data(), err));
      cpp_cache_->read(seq, l, 0, len, ck.data(), cv.data());
      EXPECT_TRUE(same_bits(k, ck)) << "keys of sequence " << seq << " layer " << l;
      EXPECT_TRUE(same_bits(v, cv)) << "values of sequence " << seq << " layer " << l;
    }
  }

  void expect_same_decode(const std::vector<uint64_t>& seqs, kvb_dtype dtype, uint64_t seed) {
    const auto qf = activations(seqs.size(), HQ, D, 2.0, seed);
    const auto q16 = to_f16(qf);
    const void* q = dtype == KVB_DTYPE_F16 ? static_cast<const void*>(q16.data()) : qf.data();
    for (uint32_t l = 0; l < L; ++l) {
      std::vector<float> out(seqs.size() * HQ * D), lse(seqs.size() * HQ), cout(out.size()), clse(lse.size());
      KVB_ASSERT_OK(kvb_attention_decode(cache_.get(), l, seqs.data(), seqs.size(), q, dtype, out.data(), lse.data(),
                                         nullptr, nullptr, err));
      kvbits::attention_decode(*cpp_cache_, l, seqs.data(), seqs.size(), q, kvbits::DType(dtype), cout.data(),
                               clse.data(), kvbits::AttentionParams{});
      EXPECT_TRUE(same_bits(out, cout)) << "decode output, layer " << l;
      EXPECT_TRUE(same_bits(lse, clse)) << "decode lse, layer " << l;
      for (float x : out) ASSERT_TRUE(std::isfinite(x));
    }
  }

  void expect_same_extend(const std::vector<uint64_t>& seqs, const std::vector<uint32_t>& q_len, float scale) {
    size_t rows = 0;
    for (uint32_t n : q_len) rows += n;
    const auto q = to_bf16(activations(rows, HQ, D, 2.0, 77));
    kvb_attention_params p;
    kvb_attention_params_default(&p);
    p.scale = scale;
    kvbits::AttentionParams cp;
    cp.scale = scale;
    for (uint32_t l = 0; l < L; ++l) {
      std::vector<float> out(rows * HQ * D), lse(rows * HQ), cout(out.size()), clse(lse.size());
      KVB_ASSERT_OK(kvb_attention_extend(cache_.get(), l, seqs.data(), q_len.data(), seqs.size(), q.data(),
                                         KVB_DTYPE_BF16, out.data(), lse.data(), &p, nullptr, err));
      // The core takes no entry without queries; the C API skips them itself.
      std::vector<uint64_t> cs;
      std::vector<uint32_t> cl;
      for (size_t i = 0; i < seqs.size(); ++i)
        if (q_len[i] > 0) cs.push_back(seqs[i]), cl.push_back(q_len[i]);
      kvbits::attention_extend(*cpp_cache_, l, cs.data(), cl.data(), cs.size(), q.data(), kvbits::DType::bf16,
                               cout.data(), clse.data(), cp);
      EXPECT_TRUE(same_bits(out, cout)) << "extend output, layer " << l;
      EXPECT_TRUE(same_bits(lse, clse)) << "extend lse, layer " << l;
    }
  }

  Context ctx_;
  Plan plan_;
  Cache cache_;
  std::shared_ptr<const kvbits::Plan> cpp_plan_;
  std::unique_ptr<kvbits::Context> cpp_ctx_;
  std::unique_ptr<kvbits::Cache> cpp_cache_;
  std::vector<uint64_t> seqs_;
};

}  // namespace

TEST_F(CApiVersusCpp, CalibrationGivesTheSamePlanBytes) {
  EXPECT_EQ(serialized(plan_.get()), kvbits::serialize_plan(*cpp_plan_));
  kvb_plan_info info;
  info.struct_size = sizeof info;
  KVB_ASSERT_OK(kvb_plan_get_info(plan_.get(), &info, err));
  EXPECT_EQ(info.n_layers, L);
  EXPECT_EQ(info.head_dim, D);
  EXPECT_EQ(info.sink_tokens, 2u);
  EXPECT_EQ(info.window_tokens, 4u);
  EXPECT_EQ(info.calib_tokens, 48u);
  EXPECT_DOUBLE_EQ(info.bytes_per_token_per_head, cpp_plan_->mean_bytes_per_token());
}

TEST_F(CApiVersusCpp, AppendReadDecodeExtendAreBitIdentical) {
  append(seqs_, {{11, 5}, KVB_DTYPE_F32, 1000});
  append(seqs_, {{3, 0}, KVB_DTYPE_BF16, 2000});
  append(seqs_, {{1, 1}, KVB_DTYPE_F16, 3000});
  for (uint64_t s : seqs_) expect_same_contents(s);
  expect_same_decode(seqs_, KVB_DTYPE_F32, 50);
  expect_same_decode(seqs_, KVB_DTYPE_F16, 51);
  expect_same_extend(seqs_, {3, 2}, 0.0f);
  expect_same_extend(seqs_, {0, 6}, 0.3f);
}

TEST_F(CApiVersusCpp, ForkRemoveAndStatsMatch) {
  append(seqs_, {{14, 6}, KVB_DTYPE_F32, 4000});
  uint64_t fork = 0;
  KVB_ASSERT_OK(kvb_cache_seq_fork(cache_.get(), seqs_[0], 9, &fork, err));
  ASSERT_EQ(fork, cpp_cache_->fork_sequence(seqs_[0], 9));
  append({fork}, {{2}, KVB_DTYPE_F32, 5000});
  expect_same_contents(fork);
  expect_same_decode({fork, seqs_[0]}, KVB_DTYPE_F32, 52);
  KVB_ASSERT_OK(kvb_cache_seq_remove(cache_.get(), seqs_[1], err));
  cpp_cache_->remove_sequence(seqs_[1]);
  kvb_cache_stats st;
  st.struct_size = sizeof st;
  KVB_ASSERT_OK(kvb_cache_get_stats(cache_.get(), &st, err));
  const kvbits::CacheStats c = cpp_cache_->stats();
  EXPECT_EQ(st.page_size, 4u);
  EXPECT_EQ(st.pages_total, c.pages_total);
  EXPECT_EQ(st.pages_used, c.pages_used);
  EXPECT_EQ(st.pool_bytes, c.pool_bytes);
  EXPECT_EQ(st.packed_bytes_used, c.packed_bytes_used);
  EXPECT_EQ(st.fp16_region_bytes, c.fp16_region_bytes);
  EXPECT_EQ(st.sequences, 2u);
  EXPECT_EQ(st.tokens, c.tokens);
  EXPECT_EQ(st.tokens, 14u + 11u);
}

TEST_F(CApiVersusCpp, CacheOutlivesItsPlanAndContextHandles) {
  append(seqs_, {{8, 8}, KVB_DTYPE_F32, 6000});
  plan_.reset();  // kvb_plan_destroy
  ctx_.reset();   // kvb_context_destroy
  expect_same_decode(seqs_, KVB_DTYPE_F32, 53);
  append(seqs_, {{1, 1}, KVB_DTYPE_F32, 7000});
  expect_same_contents(seqs_[1]);
}

TEST(CApi, ContextReportsItsBackendAndSupportsPlansOnTheCpu) {
  auto ctx = cpu_context(1);
  kvb_backend b = -1;
  int32_t device = -1;
  KVB_ASSERT_OK(kvb_context_backend(ctx.get(), &b, &device, err));
  EXPECT_EQ(b, KVB_BACKEND_CPU);
  EXPECT_EQ(device, 0);
  const kvb_model_shape s = shape(1, 2, 1, 8);
  auto cal = observed_calibrator(ctx.get(), s, 8, 1.0);
  kvb_plan* plan = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), nullptr, &plan, err));
  Plan owned(plan);
  KVB_ASSERT_OK(kvb_plan_supported(ctx.get(), plan, err));
  KVB_ASSERT_OK(kvb_plan_check_model(plan, &s, err));
  KVB_ASSERT_OK(kvb_plan_check_shape(plan, 1, 2, 1, 8, err));
}

// Block-GTQ K3V3 at D = 128 with a typical allocation (block energies spanning orders of
// magnitude, several widths per head) must cost at most 112 bytes per token per KV head,
// scales included (docs/cache-layout.md §8), as kvb_plan_info reports it.
TEST(CApi, K3V3AtHeadDim128FitsIn112BytesPerTokenPerHead) {
  auto ctx = cpu_context(1);
  const kvb_model_shape s = shape(2, 8, 2, 128);
  auto cal = observed_calibrator(ctx.get(), s, 64, 2.5);
  const kvb_plan_options o = plan_options(3.0, 3);
  kvb_plan* plan = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &plan, err));
  Plan owned(plan);
  kvb_plan_info info;
  info.struct_size = sizeof info;
  KVB_ASSERT_OK(kvb_plan_get_info(plan, &info, err));
  EXPECT_EQ(info.method, KVB_METHOD_BLOCK_GTQ);
  EXPECT_EQ(info.v_bits, 3u);
  EXPECT_DOUBLE_EQ(info.k_avg_bits, 3.0);
  std::printf("K3V3 D=128 Block-GTQ: %.2f bytes per token per KV head (fp16: 512)\n", info.bytes_per_token_per_head);
  ::testing::Test::RecordProperty("bytes_per_token_per_head", std::to_string(info.bytes_per_token_per_head));
  EXPECT_LE(info.bytes_per_token_per_head, 112.0);
  uint64_t total = 0;
  const auto bytes = serialized(plan);
  const kvbits::Plan cpp = kvbits::parse_plan(bytes.data(), bytes.size());
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
      uint64_t b = 0;
      KVB_ASSERT_OK(kvb_plan_bytes_per_token(plan, l, h, &b, err));
      EXPECT_LE(b, 112u);
      total += b;
      // A typical allocation, not a uniform one: at least four distinct widths per head.
      const auto& bits = cpp.head(l, h).block_bits;
      EXPECT_GE(std::set<uint8_t>(bits.begin(), bits.end()).size(), 4u) << "layer " << l << " head " << h;
    }
  EXPECT_EQ(info.bytes_per_token_total, total);
  EXPECT_GT(info.bytes_per_token_per_head, 100.0) << "uniform K3V3 costs 100 B; Block-GTQ adds group scales";
}

TEST(CApi, PlansRoundTripThroughFilesAndMemory) {
  auto ctx = cpu_context(1);
  auto cal = observed_calibrator(ctx.get(), shape(2, 4, 2, 16), 16, 3.0);
  const kvb_plan_options o = plan_options(2.0, 2);
  kvb_plan* plan = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &plan, err));
  Plan owned(plan);
  const auto bytes = serialized(plan);
  kvb_plan* again = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &again, err));
  EXPECT_EQ(serialized(again), bytes) << "the same inputs give the same plan bytes";
  kvb_plan_destroy(again);
  const std::string path = ::testing::TempDir() + "/capi_roundtrip.kvbplan";
  KVB_ASSERT_OK(kvb_plan_save_file(plan, path.c_str(), err));
  kvb_plan* loaded = nullptr;
  KVB_ASSERT_OK(kvb_plan_load_file(path.c_str(), &loaded, err));
  EXPECT_EQ(serialized(loaded), bytes);
  kvb_plan_destroy(loaded);
  KVB_ASSERT_OK(kvb_plan_load_memory(bytes.data(), bytes.size(), &loaded, err));
  EXPECT_EQ(serialized(loaded), bytes);
  kvb_plan_destroy(loaded);
  std::remove(path.c_str());
}

// A newer caller's struct: ours plus fields this library does not know.
struct NewerPlanInfo {
  kvb_plan_info known;
  uint64_t future[2];
};
struct NewerCacheParams {
  kvb_cache_params known;
  uint64_t future;
};

TEST(CApi, VersionedStructsReadAndWriteOnlyWhatTheLibraryKnows) {
  auto ctx = cpu_context(1);
  auto cal = observed_calibrator(ctx.get(), shape(1, 2, 1, 8), 8, 1.0);
  kvb_plan* plan = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), nullptr, &plan, err));
  Plan owned(plan);
  // Output: the tail of a newer struct is zeroed, its struct_size kept.
  NewerPlanInfo info;
  std::memset(&info, 0xEE, sizeof info);
  info.known.struct_size = sizeof info;
  KVB_ASSERT_OK(kvb_plan_get_info(plan, &info.known, err));
  EXPECT_EQ(info.known.struct_size, sizeof info);
  EXPECT_EQ(info.known.n_layers, 1u);
  EXPECT_EQ(info.future[0], 0u);
  EXPECT_EQ(info.future[1], 0u);
  // Input: a newer struct whose unknown fields are zero is accepted.
  NewerCacheParams p;
  std::memset(&p, 0, sizeof p);
  kvb_cache_params_default(&p.known);
  p.known.struct_size = sizeof p;
  p.known.max_pages = 4;
  kvb_cache* cache = nullptr;
  KVB_ASSERT_OK(kvb_cache_create(ctx.get(), plan, &p.known, &cache, err));
  kvb_cache_destroy(cache);
  // ... and refused when one is set, instead of being silently ignored.
  p.future = 1;
  kvb_error e = error();
  EXPECT_EQ(kvb_cache_create(ctx.get(), plan, &p.known, &cache, &e), KVB_ERR_UNSUPPORTED);
  EXPECT_EQ(cache, nullptr);
  EXPECT_NE(std::string(e.message).find("does not know"), std::string::npos) << e.message;
}

// Two threads decode on two caches that share one context: the context's lock serialises
// its thread pool, and every result equals the single-threaded one.
TEST(CApi, TwoThreadsShareOneContext) {
  auto ctx = cpu_context(2);
  const kvb_model_shape s = shape(1, 4, 2, 16);
  auto cal = observed_calibrator(ctx.get(), s, 16, 2.0);
  kvb_plan* plan = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), nullptr, &plan, err));
  Plan owned(plan);
  kvb_cache_params cp;
  kvb_cache_params_default(&cp);
  cp.page_size = 8, cp.max_pages = 16;
  Cache caches[2];
  uint64_t ids[2];
  for (int i = 0; i < 2; ++i) {
    kvb_cache* c = nullptr;
    KVB_ASSERT_OK(kvb_cache_create(ctx.get(), plan, &cp, &c, err));
    caches[i].reset(c);
    KVB_ASSERT_OK(kvb_cache_seq_add(c, &ids[i], err));
    const uint32_t n = 40;
    const auto k = activations(n, 2, 16, 2.0, 90 + i), v = activations(n, 2, 16, 1.0, 95 + i);
    KVB_ASSERT_OK(kvb_cache_append(c, 0, &ids[i], &n, 1, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
  }
  const auto q = activations(1, 4, 16, 2.0, 99);
  std::vector<float> expect[2];
  for (int i = 0; i < 2; ++i) {
    expect[i].resize(4 * 16);
    KVB_ASSERT_OK(kvb_attention_decode(caches[i].get(), 0, &ids[i], 1, q.data(), KVB_DTYPE_F32, expect[i].data(),
                                       nullptr, nullptr, nullptr, err));
  }
  int mismatches[2] = {0, 0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i)
    threads.emplace_back([&, i] {
      std::vector<float> out(4 * 16);
      for (int r = 0; r < 200; ++r) {
        const kvb_status st = kvb_attention_decode(caches[i].get(), 0, &ids[i], 1, q.data(), KVB_DTYPE_F32,
                                                   out.data(), nullptr, nullptr, nullptr, nullptr);
        mismatches[i] += st != KVB_OK || !same_bits(out, expect[i]);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches[0], 0);
  EXPECT_EQ(mismatches[1], 0);
}
