// Head-range caches and sequence transfer through the C API alone: two caches of half the KV
// heads each give, put side by side, exactly the outputs of one cache of every head (with the
// per-sequence head-major reordering a tensor-parallel all-gather needs), and a sequence moves
// between caches of the same range bit for bit.
#include <cstring>
#include <vector>

#include "capi_test_util.hpp"

using namespace capi_test;

namespace {

constexpr uint32_t L = 2, HQ = 8, HKV = 4, G = HQ / HKV, D = 32, N = 2;  // N caches of HKV / N heads

Cache make_cache(kvb_context* ctx, const kvb_plan* plan, uint32_t begin, uint32_t end) {
  kvb_cache_params p;
  kvb_cache_params_default(&p);
  p.page_size = 8, p.max_pages = 32;
  p.kv_head_begin = begin, p.kv_head_end = end;
  kvb_cache* c = nullptr;
  kvb_error e = error();
  EXPECT_EQ(kvb_cache_create(ctx, plan, &p, &c, &e), KVB_OK) << e.message;
  return Cache(c);
}

// Rows [n][heads][D] -> [n][end - begin][D].
std::vector<float> cut(const std::vector<float>& x, size_t n, uint32_t heads, uint32_t begin, uint32_t end) {
  std::vector<float> out;
  for (size_t t = 0; t < n; ++t)
    out.insert(out.end(), x.begin() + std::ptrdiff_t((t * heads + begin) * D),
               x.begin() + std::ptrdiff_t((t * heads + end) * D));
  return out;
}

std::vector<uint8_t> export_seq(const kvb_cache* c, uint64_t seq) {
  size_t n = 0;
  kvb_error e = error();
  EXPECT_EQ(kvb_cache_seq_export_size(c, seq, &n, &e), KVB_OK) << e.message;
  std::vector<uint8_t> b(n);
  size_t written = 0;
  EXPECT_EQ(kvb_cache_seq_export(c, seq, b.data(), b.size(), &written, nullptr, &e), KVB_OK) << e.message;
  EXPECT_EQ(written, n);
  return b;
}

std::vector<float> decode(kvb_cache* c, const std::vector<uint64_t>& seqs, const std::vector<float>& q, uint32_t hq) {
  std::vector<float> out(seqs.size() * hq * D), lse(seqs.size() * hq);
  kvb_error e = error();
  EXPECT_EQ(kvb_attention_decode(c, 0, seqs.data(), seqs.size(), q.data(), KVB_DTYPE_F32, out.data(), lse.data(),
                                 nullptr, nullptr, &e),
            KVB_OK)
      << e.message;
  out.insert(out.end(), lse.begin(), lse.end());
  return out;
}

}  // namespace

TEST(CapiTransfer, HalfCachesSideBySideAreTheFullCache) {
  Context ctx = cpu_context();
  const kvb_model_shape s = shape(L, HQ, HKV, D);
  Calibrator cal = observed_calibrator(ctx.get(), s, 32, 4.0);
  kvb_plan_options o = plan_options(3.0, 3);
  o.sink_tokens = 1, o.window_tokens = 4;
  kvb_plan* p = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &p, err));
  Plan plan(p);

  Cache full = make_cache(ctx.get(), plan.get(), 0, 0);
  std::vector<Cache> part;
  for (uint32_t r = 0; r < N; ++r) part.push_back(make_cache(ctx.get(), plan.get(), r * HKV / N, (r + 1) * HKV / N));
  uint32_t b = 9, e = 9;
  KVB_ASSERT_OK(kvb_cache_kv_heads(full.get(), &b, &e, err));
  EXPECT_EQ(b, 0u);
  EXPECT_EQ(e, HKV);
  KVB_ASSERT_OK(kvb_cache_kv_heads(part[1].get(), &b, nullptr, err));
  EXPECT_EQ(b, HKV / N);

  const std::vector<uint64_t> seqs = {0, 1};
  const uint32_t n_tokens[2] = {21, 9};
  for (uint64_t want : seqs) {
    uint64_t id = 0;
    KVB_ASSERT_OK(kvb_cache_seq_add(full.get(), &id, err));
    EXPECT_EQ(id, want);
    for (Cache& c : part) KVB_ASSERT_OK(kvb_cache_seq_add(c.get(), &id, err));
  }
  for (uint32_t l = 0; l < L; ++l) {
    const auto k = activations(30, HKV, D, 3.0, 10 + l), v = activations(30, HKV, D, 1.0, 20 + l);
    KVB_ASSERT_OK(kvb_cache_append(full.get(), l, seqs.data(), n_tokens, 2, k.data(), v.data(), KVB_DTYPE_F32,
                                   nullptr, err));
    for (uint32_t r = 0; r < N; ++r) {
      const auto kr = cut(k, 30, HKV, r * HKV / N, (r + 1) * HKV / N), vr = cut(v, 30, HKV, r * HKV / N, (r + 1) * HKV / N);
      KVB_ASSERT_OK(kvb_cache_append(part[r].get(), l, seqs.data(), n_tokens, 2, kr.data(), vr.data(),
                                     KVB_DTYPE_F32, nullptr, err));
    }
  }
  // Pool bytes split between the halves; both take the same pages.
  kvb_cache_stats fs, ps[N];
  std::memset(&fs, 0, sizeof fs);
  fs.struct_size = sizeof fs;
  KVB_ASSERT_OK(kvb_cache_get_stats(full.get(), &fs, err));
  uint64_t pool = 0;
  for (uint32_t r = 0; r < N; ++r) {
    ps[r] = fs;
    KVB_ASSERT_OK(kvb_cache_get_stats(part[r].get(), &ps[r], err));
    EXPECT_EQ(ps[r].pages_used, fs.pages_used);
    EXPECT_EQ(ps[r].fp16_region_bytes * N, fs.fp16_region_bytes);
    pool += ps[r].pool_bytes;
  }
  EXPECT_EQ(pool, fs.pool_bytes);

  // Each cache takes the query heads of its KV heads; its output rows are [seq][its heads][D],
  // so gathering puts rank r's block of each sequence at heads r * HQ / N.
  const auto q = activations(2, HQ, D, 2.0, 77);
  const std::vector<float> want = decode(full.get(), seqs, q, HQ);
  std::vector<float> got(want.size());
  for (uint32_t r = 0; r < N; ++r) {
    const uint32_t q0 = r * HQ / N, q1 = (r + 1) * HQ / N, hq = q1 - q0;
    const std::vector<float> o = decode(part[r].get(), seqs, cut(q, 2, HQ, q0, q1), hq);
    for (size_t i = 0; i < 2; ++i) {
      std::memcpy(&got[(i * HQ + q0) * D], &o[i * hq * D], hq * D * 4);
      std::memcpy(&got[2 * HQ * D + i * HQ + q0], &o[2 * hq * D + i * hq], hq * 4);
    }
  }
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4));

  // A head-range sequence moves to another cache of that range; not to another range.
  const std::vector<uint8_t> bytes = export_seq(part[1].get(), 0);
  Cache twin = make_cache(ctx.get(), plan.get(), HKV / N, HKV);
  uint64_t id = 7;
  KVB_ASSERT_OK(kvb_cache_seq_import(twin.get(), bytes.data(), bytes.size(), &id, nullptr, err));
  EXPECT_EQ(id, 0u);
  EXPECT_EQ(export_seq(twin.get(), 0), bytes);
  const uint64_t zero = 0;
  const auto q1 = cut(activations(1, HQ, D, 2.0, 78), 1, HQ, HQ / N, HQ);
  EXPECT_EQ(decode(twin.get(), {zero}, q1, HQ / N), decode(part[1].get(), {zero}, q1, HQ / N));
  kvb_error er = error();
  id = 7;
  EXPECT_EQ(kvb_cache_seq_import(part[0].get(), bytes.data(), bytes.size(), &id, nullptr, &er), KVB_ERR_SHAPE_MISMATCH);
  EXPECT_EQ(id, KVB_SEQ_NONE);
  EXPECT_NE(std::strstr(er.message, "KV heads [2, 4) of 4, this cache KV heads [0, 2) of 4"), nullptr) << er.message;
  EXPECT_EQ(kvb_cache_seq_import(full.get(), bytes.data(), bytes.size(), &id, nullptr, &er), KVB_ERR_SHAPE_MISMATCH);
}
