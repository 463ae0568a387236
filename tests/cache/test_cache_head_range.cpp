// Caches over a range of KV heads (tensor parallelism): the same operations on a cache of every
// head and on caches of [b, e) give bit-identical read-back, decode and extend for those heads,
// on random shapes (GQA 1, 2 and 4; sink/window on and off; an fp16 layer; forks and removes).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cache_test_util.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

namespace {

struct Scenario {
  uint32_t layers, kv_heads, group, head_dim, page_size;
  int64_t sink, window;
  bool fp16_layer;
  uint64_t seed;
};

std::string describe(const Scenario& s) {
  return "H=" + std::to_string(s.kv_heads) + " G=" + std::to_string(s.group) + " D=" + std::to_string(s.head_dim) +
         " P=" + std::to_string(s.page_size) + " S/W=" + std::to_string(s.sink) + "/" + std::to_string(s.window) +
         (s.fp16_layer ? " fp16 layer" : "") + " seed=" + std::to_string(s.seed);
}

// Rows [n][heads][D] -> rows [n][end - begin][D] of heads [begin, end).
template <class T>
std::vector<T> cut(const std::vector<T>& x, size_t n, uint32_t heads, uint32_t D, uint32_t begin, uint32_t end) {
  std::vector<T> out;
  out.reserve(n * (end - begin) * D);
  for (size_t t = 0; t < n; ++t)
    out.insert(out.end(), x.begin() + std::ptrdiff_t((t * heads + begin) * D),
               x.begin() + std::ptrdiff_t((t * heads + end) * D));
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

struct Ranged {
  uint32_t begin, end;
  std::unique_ptr<Cache> cache;
};

// A cache of every head and caches of several ranges, driven with the same operations.
class Group {
 public:
  explicit Group(const Scenario& s) : s_(s), rng_(s.seed) {
    ModelShape shape = make_shape(s.layers, s.kv_heads, s.head_dim);
    shape.n_q_heads = s.kv_heads * s.group;
    PlanOptions opt;
    if (s.fp16_layer) opt.fp16_layers = {s.layers - 1};
    plan_ = make_plan(shape, opt, s.seed);
    shape_ = plan_->shape;
    full_ = std::make_unique<Cache>(plan_, ctx(), config(0, 0));
    const uint32_t H = s.kv_heads;
    std::vector<std::pair<uint32_t, uint32_t>> ranges = {{0, 1}, {H - 1, H}, {0, H}};
    if (H > 2) ranges.push_back({1, H - 1});
    if (H > 1) ranges.push_back({1, H});
    for (auto [b, e] : ranges) parts_.push_back({b, e, std::make_unique<Cache>(plan_, ctx(), config(b, e))});
  }

  CacheConfig config(uint32_t b, uint32_t e) const {
    CacheConfig c;
    c.page_size = s_.page_size;
    c.max_pages = 64;
    c.sink_tokens = s_.sink;
    c.window_tokens = s_.window;
    c.kv_head_begin = b, c.kv_head_end = e;
    return c;
  }

  uint64_t add() {
    const uint64_t id = full_->add_sequence();
    for (Ranged& r : parts_) EXPECT_EQ(r.cache->add_sequence(), id);
    return id;
  }
  uint64_t fork(uint64_t src, uint32_t prefix) {
    const uint64_t id = full_->fork_sequence(src, prefix);
    for (Ranged& r : parts_) EXPECT_EQ(r.cache->fork_sequence(src, prefix), id);
    return id;
  }
  void remove(uint64_t id) {
    full_->remove_sequence(id);
    for (Ranged& r : parts_) r.cache->remove_sequence(id);
  }
  void append(uint32_t layer, const std::vector<uint64_t>& seqs, const std::vector<uint32_t>& n) {
    size_t total = 0;
    for (uint32_t c : n) total += c;
    const auto k = random_rows(total, shape_, rng_()), v = random_rows(total, shape_, rng_());
    full_->append(layer, seqs.data(), n.data(), seqs.size(), k.data(), v.data(), DType::f32);
    const uint32_t H = shape_.n_kv_heads, D = shape_.head_dim;
    for (Ranged& r : parts_) {
      const auto kc = cut(k, total, H, D, r.begin, r.end), vc = cut(v, total, H, D, r.begin, r.end);
      r.cache->append(layer, seqs.data(), n.data(), seqs.size(), kc.data(), vc.data(), DType::f32);
    }
  }

  // Read-back, decode, extend and statistics of every range against the full cache.
  void check(const std::string& when) {
    const uint32_t H = shape_.n_kv_heads, D = shape_.head_dim, G = s_.group, Hq = H * G;
    const std::vector<uint64_t> ids = full_->sequences();
    for (Ranged& r : parts_) {
      const std::string at = when + " range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
      const uint32_t h = r.end - r.begin;
      ASSERT_EQ(r.cache->plan().shape.n_kv_heads, h) << at;
      ASSERT_EQ(r.cache->plan().shape.n_q_heads, h * G) << at;
      ASSERT_EQ(r.cache->sequences(), ids) << at;
      for (uint64_t id : ids)
        for (uint32_t l = 0; l < shape_.n_layers; ++l) {
          const uint32_t n = full_->length(id, l);
          ASSERT_EQ(r.cache->length(id, l), n) << at;
          if (n == 0) continue;
          std::vector<float> fk(size_t(n) * H * D), fv(fk.size()), rk(size_t(n) * h * D), rv(rk.size());
          full_->read(id, l, 0, n, fk.data(), fv.data());
          r.cache->read(id, l, 0, n, rk.data(), rv.data());
          EXPECT_TRUE(same_bits(cut(fk, n, H, D, r.begin, r.end), rk)) << at << " read K seq " << id << " layer " << l;
          EXPECT_TRUE(same_bits(cut(fv, n, H, D, r.begin, r.end), rv)) << at << " read V seq " << id << " layer " << l;
        }
      // Decode and extend over every sequence with tokens in the layer.
      for (uint32_t l = 0; l < shape_.n_layers; ++l) {
        std::vector<uint64_t> live;
        std::vector<uint32_t> q_len;
        size_t rows = 0;
        for (uint64_t id : ids)
          if (full_->length(id, l) > 0) {
            live.push_back(id);
            q_len.push_back(std::min<uint32_t>(3, full_->length(id, l)));
            rows += q_len.back();
          }
        if (live.empty()) continue;
        ModelShape qshape = shape_;
        qshape.n_kv_heads = Hq;  // random_rows makes [n][n_kv_heads][D]
        const auto q = random_rows(rows, qshape, rng_());
        std::vector<float> fo(rows * Hq * D), fl(rows * Hq), ro(rows * h * G * D), rl(rows * h * G);
        const auto qc = cut(q, rows, Hq, D, r.begin * G, r.end * G);
        attention_extend(*full_, l, live.data(), q_len.data(), live.size(), q.data(), DType::f32, fo.data(), fl.data(),
                         {});
        attention_extend(*r.cache, l, live.data(), q_len.data(), live.size(), qc.data(), DType::f32, ro.data(),
                         rl.data(), {});
        EXPECT_TRUE(same_bits(cut(fo, rows, Hq, D, r.begin * G, r.end * G), ro)) << at << " extend out layer " << l;
        EXPECT_TRUE(same_bits(cut(fl, rows, Hq, 1, r.begin * G, r.end * G), rl)) << at << " extend lse layer " << l;
        const size_t n = live.size();
        const auto qd = random_rows(n, qshape, rng_());
        const auto qdc = cut(qd, n, Hq, D, r.begin * G, r.end * G);
        fo.assign(n * Hq * D, 0), fl.assign(n * Hq, 0), ro.assign(n * h * G * D, 0), rl.assign(n * h * G, 0);
        attention_decode(*full_, l, live.data(), n, qd.data(), DType::f32, fo.data(), fl.data(), {});
        attention_decode(*r.cache, l, live.data(), n, qdc.data(), DType::f32, ro.data(), rl.data(), {});
        EXPECT_TRUE(same_bits(cut(fo, n, Hq, D, r.begin * G, r.end * G), ro)) << at << " decode out layer " << l;
        EXPECT_TRUE(same_bits(cut(fl, n, Hq, 1, r.begin * G, r.end * G), rl)) << at << " decode lse layer " << l;
      }
      // Statistics: the same pages and tokens, only this range's bytes.
      const CacheStats fs = full_->stats(), rs = r.cache->stats();
      EXPECT_EQ(rs.pages_used, fs.pages_used) << at;
      EXPECT_EQ(rs.sequences, fs.sequences) << at;
      EXPECT_EQ(rs.tokens, fs.tokens) << at;
      EXPECT_EQ(rs.fp16_region_bytes * H, fs.fp16_region_bytes * h) << at;
      uint64_t column = 0;
      for (uint32_t l = 0; l < shape_.n_layers; ++l)
        for (uint32_t kv = r.begin; kv < r.end; ++kv) column += full_->page_layout(l, kv).page_bytes;
      EXPECT_EQ(rs.pool_bytes, column * 64) << at;
      EXPECT_EQ(rs.packed_bytes_used, column * rs.pages_used) << at;
    }
  }

  std::mt19937_64& rng() { return rng_; }
  const ModelShape& shape() const { return shape_; }

 private:
  Scenario s_;
  std::mt19937_64 rng_;
  std::shared_ptr<const Plan> plan_;
  ModelShape shape_;
  std::unique_ptr<Cache> full_;
  std::vector<Ranged> parts_;
};

void run(const Scenario& s) {
  SCOPED_TRACE(describe(s));
  Group g(s);
  const uint64_t a = g.add(), b = g.add();
  std::uniform_int_distribution<uint32_t> count(1, 9);
  for (int round = 0; round < 3; ++round)
    for (uint32_t l = 0; l < s.layers; ++l) g.append(l, {a, b}, {count(g.rng()), count(g.rng())});
  g.check("after appends");
  const uint64_t f = g.fork(a, 3);  // every layer of a holds at least 3 tokens
  for (uint32_t l = 0; l < s.layers; ++l) g.append(l, {f}, {count(g.rng())});
  g.append(0, {a}, {2});  // a's layers now differ in length
  g.check("after fork");
  g.remove(b);
  const uint64_t c = g.add();
  for (uint32_t l = 0; l < s.layers; ++l) g.append(l, {c, f}, {count(g.rng()), 1});
  g.check("after remove");
}

}  // namespace

TEST(CacheHeadRange, RangesMatchTheFullCacheBitForBit) {
  const Scenario scenarios[] = {
      {2, 4, 2, 16, 4, 0, 0, false, 11},  {2, 4, 1, 16, 4, 2, 3, false, 12}, {2, 3, 4, 32, 16, 0, 5, true, 13},
      {2, 2, 2, 16, 1, 3, 0, false, 14},  {3, 4, 4, 16, 8, 1, 2, true, 15},  {1, 1, 2, 16, 4, 2, 2, false, 16},
  };
  for (const Scenario& s : scenarios) run(s);
}

TEST(CacheHeadRange, RandomShapes) {
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 6; ++i) {
    Scenario s;
    s.layers = 1 + uint32_t(rng() % 3);
    s.kv_heads = 1 + uint32_t(rng() % 4);
    s.group = 1u << (rng() % 3);
    s.head_dim = (rng() % 2) ? 16 : 32;
    s.page_size = 1u << (rng() % 4);
    s.sink = int64_t(rng() % 3);
    s.window = (rng() % 2) ? int64_t(rng() % 5) : 0;
    s.fp16_layer = s.layers > 1 && rng() % 2;
    s.seed = 100 + uint64_t(i);
    run(s);
  }
}

TEST(CacheHeadRange, TheCutPlanKeepsTheHeadsPlans) {
  ModelShape shape = make_shape(2, 4, 16);
  shape.n_q_heads = 8;
  const auto plan = make_plan(shape);
  CacheConfig c;
  c.max_pages = 4;
  c.kv_head_begin = 1, c.kv_head_end = 3;
  Cache cache(plan, ctx(), c);
  EXPECT_EQ(&cache.full_plan(), plan.get());
  EXPECT_EQ(cache.kv_head_begin(), 1u);
  EXPECT_EQ(cache.kv_head_end(), 3u);
  EXPECT_EQ(cache.plan().shape.n_kv_heads, 2u);
  EXPECT_EQ(cache.plan().shape.n_q_heads, 4u);
  for (uint32_t l = 0; l < 2; ++l)
    for (uint32_t h = 0; h < 2; ++h) EXPECT_TRUE(cache.plan().head(l, h) == plan->head(l, h + 1));
  cache.plan().validate();
  // 0/0 and the explicit full range are the same: the plan itself.
  c.kv_head_begin = 0, c.kv_head_end = 0;
  Cache all(plan, ctx(), c);
  EXPECT_EQ(&all.plan(), plan.get());
  EXPECT_EQ(all.kv_head_end(), 4u);
  c.kv_head_end = 4;
  EXPECT_EQ(&Cache(plan, ctx(), c).plan(), plan.get());
}

TEST(CacheHeadRange, BadRangesAreRefusedNamingTheField) {
  const auto plan = make_plan(make_shape(1, 4, 16));
  const std::pair<std::pair<uint32_t, uint32_t>, const char*> bad[] = {
      {{0, 5}, "kv_head_end 5 exceeds the plan's 4 KV heads"},
      {{2, 2}, "kv_head_begin 2 must be below kv_head_end 2"},
      {{3, 1}, "kv_head_begin 3 must be below kv_head_end 1"},
      {{1, 0}, "kv_head_begin 1 must be below kv_head_end 0"},
      {{9, 12}, "kv_head_end 12 exceeds"},
  };
  for (const auto& [range, message] : bad) {
    CacheConfig c;
    c.max_pages = 4;
    c.kv_head_begin = range.first, c.kv_head_end = range.second;
    try {
      Cache cache(plan, ctx(), c);
      ADD_FAILURE() << "accepted [" << range.first << ", " << range.second << ")";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
}
