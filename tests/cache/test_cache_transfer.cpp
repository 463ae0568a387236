// Sequence export / import (docs/transfer.md) on the CPU backend: round trips that read back,
// attend and re-export bit for bit, a golden export built independently from the documented
// layout, every rejection with the target cache unchanged, and every byte of a small export
// flipped and every truncation refused.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cache/seq_transfer_format.hpp"
#include "cache/transfer_list.hpp"
#include "cache_test_util.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/half.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;
namespace transfer = kvbits::cache_detail::transfer;

namespace {

CacheConfig config(uint32_t page_size, uint64_t max_pages, int64_t sink, int64_t window, uint32_t b = 0,
                   uint32_t e = 0) {
  CacheConfig c;
  c.page_size = page_size, c.max_pages = max_pages, c.sink_tokens = sink, c.window_tokens = window;
  c.kv_head_begin = b, c.kv_head_end = e;
  return c;
}

std::vector<uint8_t> export_bytes(const Cache& c, uint64_t seq) {
  std::vector<uint8_t> b(c.export_size(seq));
  EXPECT_EQ(c.export_sequence(seq, b.data(), b.size()), b.size());
  return b;
}

// The test's own FNV-1a 64 and chunked payload checksum (docs/transfer.md), independent of the
// library's.
uint64_t fnv(const uint8_t* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
uint64_t chunked(const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> hashes;
  for (size_t at = 0; at < payload.size(); at += 4096) {
    const uint64_t h = fnv(payload.data() + at, std::min<size_t>(4096, payload.size() - at));
    for (int i = 0; i < 8; ++i) hashes.push_back(uint8_t(h >> (8 * i)));
  }
  return fnv(hashes.data(), hashes.size());
}

// Everything a sequence shows through the API: lengths and every token read back, per layer.
std::vector<std::vector<float>> contents(const Cache& c, uint64_t seq) {
  const ModelShape& sh = c.plan().shape;
  std::vector<std::vector<float>> out;
  for (uint32_t l = 0; l < sh.n_layers; ++l) {
    const uint32_t n = c.length(seq, l);
    std::vector<float> kv(size_t(n) * sh.n_kv_heads * sh.head_dim * 2 + 1, float(n));
    if (n) c.read(seq, l, 0, n, kv.data(), kv.data() + size_t(n) * sh.n_kv_heads * sh.head_dim);
    out.push_back(std::move(kv));
  }
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// Decode and extend outputs (and LSE) of one sequence for a fixed query, every layer.
std::vector<float> attention_of(const Cache& c, uint64_t seq, uint64_t seed) {
  const ModelShape& sh = c.plan().shape;
  ModelShape qs = sh;
  qs.n_kv_heads = sh.n_q_heads;
  std::vector<float> all;
  for (uint32_t l = 0; l < sh.n_layers; ++l) {
    const uint32_t n = c.length(seq, l);
    if (n == 0) continue;
    const uint32_t q_len = std::min<uint32_t>(n, 4);
    const auto q = random_rows(q_len, qs, seed + l);
    std::vector<float> out(size_t(q_len) * sh.n_q_heads * sh.head_dim), lse(size_t(q_len) * sh.n_q_heads);
    attention_extend(c, l, &seq, &q_len, 1, q.data(), DType::f32, out.data(), lse.data(), {});
    all.insert(all.end(), out.begin(), out.end());
    all.insert(all.end(), lse.begin(), lse.end());
    attention_decode(c, l, &seq, 1, q.data(), DType::f32, out.data(), lse.data(), {});
    all.insert(all.end(), out.begin(), out.begin() + std::ptrdiff_t(sh.n_q_heads * sh.head_dim));
    all.insert(all.end(), lse.begin(), lse.begin() + sh.n_q_heads);
  }
  return all;
}

// A cache with three sequences: a (lengths differing per layer), its fork f (sharing a
// partial page), and b.
struct Source {
  std::shared_ptr<const Plan> plan;
  std::unique_ptr<Cache> cache;
  uint64_t a = 0, f = 0, b = 0, seed = 5;

  Source(const ModelShape& shape, const CacheConfig& cfg, bool fp16_layer, uint64_t plan_seed = 1) {
    PlanOptions opt;
    if (fp16_layer) opt.fp16_layers = {shape.n_layers - 1};
    plan = make_plan(shape, opt, plan_seed);
    cache = std::make_unique<Cache>(plan, ctx(), cfg);
    a = cache->add_sequence();
    b = cache->add_sequence();
    for (uint32_t l = 0; l < shape.n_layers; ++l) {
      grow(l, {a, b}, {11 + l, 3});
      grow(l, {a}, {6});
    }
    f = cache->fork_sequence(a, 9);
    for (uint32_t l = 0; l < shape.n_layers; ++l) grow(l, {f}, {2});
  }
  void grow(uint32_t layer, const std::vector<uint64_t>& seqs, const std::vector<uint32_t>& n) {
    size_t total = 0;
    for (uint32_t c : n) total += c;
    ModelShape sh = cache->plan().shape;
    const auto k = random_rows(total, sh, ++seed), v = random_rows(total, sh, ++seed);
    cache->append(layer, seqs.data(), n.data(), seqs.size(), k.data(), v.data(), DType::f32);
  }
};

void expect_status(StatusCode code, const std::string& text, const std::function<void()>& f) {
  try {
    f();
    ADD_FAILURE() << "no error; expected \"" << text << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(CacheTransfer, RoundTripsReadAttendAndReExportBitForBit) {
  struct Case {
    uint32_t page_size;
    int64_t sink, window;
    bool fp16_layer;
    uint32_t begin, end;
  };
  const Case cases[] = {{4, 0, 0, false, 0, 0}, {4, 2, 3, true, 0, 0}, {16, 0, 5, false, 0, 0},
                        {1, 3, 0, true, 0, 0},  {8, 1, 2, false, 1, 3}, {4, 0, 0, false, 2, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE("P=" + std::to_string(c.page_size) + " S/W=" + std::to_string(c.sink) + "/" +
                 std::to_string(c.window) + " heads [" + std::to_string(c.begin) + ", " + std::to_string(c.end) + ")");
    ModelShape shape = make_shape(3, 3, 16);
    shape.n_q_heads = 6;
    Source src(shape, config(c.page_size, 64, c.sink, c.window, c.begin, c.end), c.fp16_layer);
    // Another pool size and sequence limit: only plan, heads, page size and sink/window must match.
    Cache dst(src.plan, ctx(), [&] {
      CacheConfig k = config(c.page_size, 200, c.sink, c.window, c.begin, c.end);
      k.max_sequences = 7;
      return k;
    }());
    for (uint64_t seq : {src.a, src.f, src.b}) {
      const std::vector<uint8_t> bytes = export_bytes(*src.cache, seq);
      const uint64_t id = dst.import_sequence(bytes.data(), bytes.size());
      EXPECT_EQ(contents(dst, id), contents(*src.cache, seq)) << "seq " << seq;
      EXPECT_TRUE(same_bits(attention_of(dst, id, 9), attention_of(*src.cache, seq, 9))) << "seq " << seq;
      EXPECT_EQ(export_bytes(dst, id), bytes) << "seq " << seq;
      // Into the source cache itself, as a new sequence.
      const uint64_t again = src.cache->import_sequence(bytes.data(), bytes.size());
      EXPECT_EQ(contents(*src.cache, again), contents(*src.cache, seq));
      src.cache->remove_sequence(again);
    }
    EXPECT_EQ(dst.stats().sequences, 3u);
    EXPECT_EQ(dst.stats().tokens, src.cache->stats().tokens);
    EXPECT_EQ(dst.stats().fp16_region_bytes, src.cache->stats().fp16_region_bytes);
    // The imported state goes on as the original: the same appends give the same bytes.
    const uint64_t copy = dst.import_sequence(export_bytes(*src.cache, src.f).data(),
                                              src.cache->export_size(src.f));
    for (int round = 0; round < 3; ++round)
      for (uint32_t l = 0; l < shape.n_layers; ++l) {
        const uint32_t n = 1 + uint32_t(round) * 3;
        const auto k = random_rows(n, src.cache->plan().shape, 1000 + round * 10 + l);
        src.cache->append(l, &src.f, &n, 1, k.data(), k.data(), DType::f32);
        dst.append(l, &copy, &n, 1, k.data(), k.data(), DType::f32);
      }
    EXPECT_EQ(export_bytes(dst, copy), export_bytes(*src.cache, src.f));
  }
}

TEST(CacheTransfer, AnExportIsAFunctionOfTheSequenceAlone) {
  // A fork shares a partial page whose later rows belong to its source; the export holds zeros
  // there, so it equals the export of the same tokens appended without a fork.
  ModelShape shape = make_shape(2, 2, 16);
  const auto plan = make_plan(shape);
  Cache cache(plan, ctx(), config(4, 32, 1, 0));
  const uint64_t src = cache.add_sequence(), plain = cache.add_sequence();
  const auto k = random_rows(10, shape, 3), v = random_rows(10, shape, 4);
  const uint32_t ten = 10, six = 6;
  for (uint32_t l = 0; l < 2; ++l) {
    cache.append(l, &src, &ten, 1, k.data(), v.data(), DType::f32);
    cache.append(l, &plain, &six, 1, k.data(), v.data(), DType::f32);
  }
  const uint64_t fork = cache.fork_sequence(src, 6);
  EXPECT_EQ(export_bytes(cache, fork), export_bytes(cache, plain));
  EXPECT_NE(export_bytes(cache, src), export_bytes(cache, plain));
}

TEST(CacheTransfer, GoldenExportOfATinyFp16Cache) {
  // A hand-made plan (both layers kept at 16 bits: the bytes do not depend on the encoder).
  Plan p;
  p.shape.n_layers = 2, p.shape.n_q_heads = 4, p.shape.n_kv_heads = 2, p.shape.head_dim = 8, p.shape.rotary_dim = 8;
  p.unit_codebooks.assign(9, {});
  p.layers.resize(2);
  for (LayerPlan& l : p.layers) l.keep_fp16 = true;
  p.producer.tool = "golden";
  p.validate();
  const auto plan = std::make_shared<const Plan>(p);
  Cache cache(plan, ctx(), config(4, 8, 1, 2));
  const uint64_t seq = cache.add_sequence();
  const uint32_t H = 2, D = 8;
  auto value = [](bool v, uint32_t t, uint32_t h, uint32_t d) { return (v ? -0.25f : 0.5f) * float(t * 16 + h * 8 + d); };
  const uint32_t lens[2] = {7, 3};
  for (uint32_t l = 0; l < 2; ++l) {
    std::vector<float> k(lens[l] * H * D), v(k.size());
    for (uint32_t t = 0; t < lens[l]; ++t)
      for (uint32_t h = 0; h < H; ++h)
        for (uint32_t d = 0; d < D; ++d) {
          k[(t * H + h) * D + d] = value(false, t, h, d);
          v[(t * H + h) * D + d] = value(true, t, h, d);
        }
    cache.append(l, &seq, &lens[l], 1, k.data(), v.data(), DType::f32);
  }
  const std::vector<uint8_t> got = export_bytes(cache, seq);

  // The expected bytes, from docs/transfer.md.
  std::vector<uint8_t> payload;
  auto row = [&](bool v, uint32_t t, uint32_t h) {
    for (uint32_t d = 0; d < D; ++d) {
      const uint16_t bits = float_to_half(value(v, t, h, d));
      payload.push_back(uint8_t(bits)), payload.push_back(uint8_t(bits >> 8));
    }
  };
  // Layer 0: len 7, sink 1, window 2 -> qend 5: tokens 1..4 fill page 0 (fp16 page: K rows at
  // byte 0, V rows at byte 64, 128 bytes), token 0 in the sink, tokens 5, 6 in the window.
  for (uint32_t h = 0; h < H; ++h) {
    for (uint32_t t = 1; t <= 4; ++t) row(false, t, h);
    for (uint32_t t = 1; t <= 4; ++t) row(true, t, h);
  }
  for (bool v : {false, true})
    for (uint32_t h = 0; h < H; ++h) row(v, 0, h);
  for (bool v : {false, true})
    for (uint32_t h = 0; h < H; ++h) row(v, 5, h), row(v, 6, h);
  const size_t layer0 = payload.size();
  // Layer 1: len 3 -> qend 1: no page, token 0 in the sink, tokens 1, 2 in the window.
  for (bool v : {false, true})
    for (uint32_t h = 0; h < H; ++h) row(v, 0, h);
  for (bool v : {false, true})
    for (uint32_t h = 0; h < H; ++h) row(v, 1, h), row(v, 2, h);
  ASSERT_EQ(layer0, 448u);
  ASSERT_EQ(payload.size(), 640u);

  std::vector<uint8_t> header;
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) header.push_back(uint8_t(v >> (8 * i)));
  };
  const std::vector<uint8_t> plan_bytes = serialize_plan(p);
  for (char c : std::string("KVBSEQ")) header.push_back(uint8_t(c));
  put(0, 2);
  put(1, 4), put(120, 4);                                  // version, header_size = 88 + 16 * 2
  put(fnv(plan_bytes.data(), plan_bytes.size()), 8);      // plan fingerprint
  put(2, 4), put(0, 4), put(2, 4);                         // n_kv_heads, head range
  put(4, 4), put(1, 4), put(2, 4), put(2, 4), put(0, 4);   // page, sink, window, layers, flags
  put(1, 8), put(640, 8), put(chunked(payload), 8);        // n_pages, payload size, checksum
  put(7, 4), put(5, 4), put(448, 8);                       // layer 0: len, qend, bytes
  put(3, 4), put(1, 4), put(192, 8);                       // layer 1
  put(fnv(header.data(), header.size()), 8);
  std::vector<uint8_t> want = header;
  want.insert(want.end(), payload.begin(), payload.end());
  EXPECT_EQ(got, want);

  // And pinned: a change here changes what every other kvbits reads.
  static const char kGoldenHeader[] =
      "4b564253455100000100000078000000bdce0f0454e3e8840200000000000000020000000400000001000000"
      "02000000020000000000000001000000000000008002000000000000a8438ebc6abfc85d0700000005000000"
      "c0010000000000000300000001000000c000000000000000eb46906a169c2bf8";
  std::string hex;
  for (size_t i = 0; i < 120 && i < got.size(); ++i) {
    static const char* digits = "0123456789abcdef";
    hex += digits[got[i] >> 4], hex += digits[got[i] & 15];
  }
  EXPECT_EQ(hex, kGoldenHeader);
}

TEST(CacheTransfer, RejectionsLeaveTheCacheUnchanged) {
  ModelShape shape = make_shape(2, 2, 16);
  Source src(shape, config(4, 64, 1, 2), false);
  const std::vector<uint8_t> good = export_bytes(*src.cache, src.a);
  const transfer::Header h0 = transfer::decode_header(good.data(), transfer::read_header_size(good.data(), good.size()),
                                                      good.size());
  const size_t hs = h0.header_size();

  Cache dst(src.plan, ctx(), config(4, 64, 1, 2));
  const uint64_t resident = dst.import_sequence(export_bytes(*src.cache, src.b).data(), src.cache->export_size(src.b));
  ASSERT_EQ(resident, 0u);
  const Snapshot before = snapshot(dst);
  auto refused = [&](StatusCode code, const std::string& text, const std::vector<uint8_t>& bytes, Cache& target) {
    const Snapshot was = snapshot(target);
    expect_status(code, text, [&] { target.import_sequence(bytes.data(), bytes.size()); });
    EXPECT_TRUE(snapshot(target) == was) << text;
  };
  // A valid header with some fields changed (checksums recomputed).
  auto with = [&](const std::function<void(transfer::Header&)>& edit) {
    transfer::Header h = h0;
    edit(h);
    std::vector<uint8_t> b = transfer::encode_header(h);
    b.insert(b.end(), good.begin() + std::ptrdiff_t(hs), good.end());
    return b;
  };

  expect_status(StatusCode::null_pointer, "buf is null", [&] { dst.import_sequence(nullptr, 10); });
  std::vector<uint8_t> b = good;
  b[0] = 'X';
  refused(StatusCode::corrupt_data, "bad magic", b, dst);
  b = good, b[8] = 2;
  refused(StatusCode::version_unsupported, "version 2; this kvbits reads version 1", b, dst);
  b = good, b[12] ^= 1;
  refused(StatusCode::corrupt_data, "header_size", b, dst);
  b = good, b[hs - 30] ^= 4;
  refused(StatusCode::corrupt_data, "header checksum mismatch", b, dst);
  b = good, b[hs + 17] ^= 0x40;
  refused(StatusCode::corrupt_data, "payload checksum mismatch", b, dst);
  b = good, b.pop_back();
  refused(StatusCode::corrupt_data, "(truncated)", b, dst);
  b = good, b.push_back(0);
  refused(StatusCode::corrupt_data, "(extra bytes)", b, dst);
  refused(StatusCode::corrupt_data, "truncated: 40 bytes", std::vector<uint8_t>(good.begin(), good.begin() + 40), dst);
  refused(StatusCode::version_unsupported, "flags 1", with([](transfer::Header& h) { h.flags = 1; }), dst);
  refused(StatusCode::shape_mismatch, "another plan",
          with([](transfer::Header& h) { h.plan_fingerprint ^= 1; }), dst);
  refused(StatusCode::shape_mismatch, "the export holds KV heads [0, 1) of 2, this cache KV heads [0, 2) of 2",
          with([](transfer::Header& h) { h.head_end = 1; }), dst);
  refused(StatusCode::shape_mismatch, "page_size 8 in the export, 4 in this cache",
          with([](transfer::Header& h) { h.page_size = 8; }), dst);
  refused(StatusCode::shape_mismatch, "sink/window tokens 1/3 in the export, 1/2",
          with([](transfer::Header& h) { h.window = 3; }), dst);
  refused(StatusCode::corrupt_data, "layer 1: length",
          with([](transfer::Header& h) { h.layers[1].qend = h.layers[1].len - 3; }), dst);
  refused(StatusCode::corrupt_data, "layer 0: the header says",
          with([](transfer::Header& h) { h.layers[0].bytes += 2; }), dst);
  refused(StatusCode::corrupt_data, "n_pages 9",
          with([](transfer::Header& h) { h.n_pages = 9; }), dst);
  b = with([](transfer::Header& h) { h.payload_size += 1; });
  b.push_back(0);  // the buffer agrees with payload_size, the layers do not
  refused(StatusCode::corrupt_data, "payload_size " + std::to_string(h0.payload_size + 1) + ", the layers add up to",
          b, dst);
  refused(StatusCode::capacity_exhausted, "pages; this cache's pool has 64",
          with([](transfer::Header& h) { h.layers[0].len = 4000, h.layers[0].qend = 3998; }), dst);
  EXPECT_TRUE(snapshot(dst) == before);

  // Another plan, head range, page size, sink/window, and a sequence the pool cannot hold.
  Cache other_plan(make_plan(shape, {}, 99), ctx(), config(4, 64, 1, 2));
  refused(StatusCode::shape_mismatch, "another plan", good, other_plan);
  Cache range(src.plan, ctx(), config(4, 64, 1, 2, 0, 1));
  refused(StatusCode::shape_mismatch, "KV heads [0, 2) of 2, this cache KV heads [0, 1) of 2", good, range);
  Cache page8(src.plan, ctx(), config(8, 64, 1, 2));
  refused(StatusCode::shape_mismatch, "page_size 4 in the export, 8", good, page8);
  Cache window0(src.plan, ctx(), config(4, 64, 1, 0));
  refused(StatusCode::shape_mismatch, "sink/window tokens 1/2 in the export, 1/0", good, window0);
  Cache sink3(src.plan, ctx(), config(4, 64, 3, 2));
  refused(StatusCode::shape_mismatch, "sink/window tokens 1/2 in the export, 3/2", good, sink3);
  refused(StatusCode::shape_mismatch, "sink/window tokens 0/2 in the export, 1/2",
          with([](transfer::Header& h) { h.sink = 0; }), dst);
  const size_t pages = size_t(h0.n_pages);
  ASSERT_GE(pages, 2u);
  Cache small(src.plan, ctx(), config(4, pages - 1, 1, 2));
  refused(StatusCode::capacity_exhausted, "this cache's pool has " + std::to_string(pages - 1), good, small);

  // Pool exhausted by another sequence, then max_sequences.
  Cache full(src.plan, ctx(), config(4, pages + 1, 1, 2));
  const uint64_t hog = full.add_sequence();
  const uint32_t n = 1 + 2 * 4 + 2;  // sink + two pages + window
  const auto k = random_rows(n, shape, 1);
  for (uint32_t l = 0; l < 2; ++l) full.append(l, &hog, &n, 1, k.data(), k.data(), DType::f32);
  const uint64_t free = full.stats().pages_total - full.stats().pages_used;
  ASSERT_LT(free, pages);
  refused(StatusCode::capacity_exhausted, "needs " + std::to_string(pages) + " pages, " + std::to_string(free) + " free",
          good, full);
  CacheConfig one = config(4, 64, 1, 2);
  one.max_sequences = 1;
  Cache single(src.plan, ctx(), one);
  single.add_sequence();
  refused(StatusCode::capacity_exhausted, "max_sequences", good, single);
  single.remove_sequence(0);
  EXPECT_EQ(single.import_sequence(good.data(), good.size()), 0u);
}

TEST(CacheTransfer, ExportRefusals) {
  ModelShape shape = make_shape(1, 2, 16);
  Source src(shape, config(4, 64, 0, 0), false);
  const size_t n = src.cache->export_size(src.a);
  std::vector<uint8_t> buf(n + 8, 0xAB);
  expect_status(StatusCode::invalid_argument, "capacity " + std::to_string(n - 1) + " bytes",
                [&] { src.cache->export_sequence(src.a, buf.data(), n - 1); });
  EXPECT_EQ(buf, std::vector<uint8_t>(n + 8, 0xAB));  // untouched
  expect_status(StatusCode::null_pointer, "buf is null", [&] { src.cache->export_sequence(src.a, nullptr, n); });
  expect_status(StatusCode::not_found, "no sequence with id 77", [&] { src.cache->export_size(77); });
  expect_status(StatusCode::not_found, "no sequence with id 77",
                [&] { src.cache->export_sequence(77, buf.data(), buf.size()); });
  EXPECT_EQ(src.cache->export_sequence(src.a, buf.data(), buf.size()), n);  // a larger buffer is fine
  // An empty sequence: a header alone.
  const uint64_t empty = src.cache->add_sequence();
  EXPECT_EQ(src.cache->export_size(empty), transfer::Header::header_bytes(1));
  const std::vector<uint8_t> e = export_bytes(*src.cache, empty);
  const uint64_t id = src.cache->import_sequence(e.data(), e.size());
  EXPECT_EQ(src.cache->length(id, 0), 0u);
}

TEST(CacheTransfer, EveryByteFlippedAndEveryTruncationIsRefused) {
  ModelShape shape = make_shape(2, 1, 8);
  Source src(shape, config(4, 16, 1, 2), true);
  const uint32_t three = 3;
  const uint64_t small = src.cache->add_sequence();
  const auto k = random_rows(3, shape, 8);
  for (uint32_t l = 0; l < 2; ++l) src.cache->append(l, &small, &three, 1, k.data(), k.data(), DType::f32);
  const std::vector<uint8_t> good = export_bytes(*src.cache, small);
  const size_t hs = transfer::read_header_size(good.data(), good.size());
  ASSERT_GT(good.size(), hs + 100);

  Cache dst(src.plan, ctx(), config(4, 16, 1, 2));
  const Snapshot before = snapshot(dst);
  size_t refused = 0;
  for (size_t i = 0; i < good.size(); ++i)
    for (uint8_t mask : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xFF)}) {
      std::vector<uint8_t> b = good;
      b[i] ^= mask;
      try {
        dst.import_sequence(b.data(), b.size());
        ADD_FAILURE() << "byte " << i << " ^ " << int(mask) << " was accepted";
      } catch (const Error& e) {
        ++refused;
        const std::string what = e.what();
        const char* want = i >= hs ? "payload checksum mismatch" : i >= 16 ? "header checksum mismatch" : "";
        EXPECT_NE(what.find(want), std::string::npos) << i << ": " << what;
      }
    }
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      dst.import_sequence(good.data(), n);
      ADD_FAILURE() << "truncated to " << n << " bytes was accepted";
    } catch (const Error& e) {
      ++refused;
      EXPECT_EQ(e.code(), StatusCode::corrupt_data) << n << ": " << e.what();
    }
  }
  EXPECT_EQ(refused, good.size() * 4);
  EXPECT_TRUE(snapshot(dst) == before);
  const uint64_t id = dst.import_sequence(good.data(), good.size());
  EXPECT_EQ(contents(dst, id), contents(*src.cache, small));
}

TEST(CacheTransfer, CopiesOfConsecutivePagesMerge) {
  // A copy that continues the previous one on both sides extends it; any gap starts a new one.
  std::vector<uint8_t> pool(1000);
  cache_detail::TransferList list;
  list.copy(0, pool.data() + 100, 50);
  list.copy(50, pool.data() + 150, 50);   // continues both: merged
  list.copy(100, pool.data() + 300, 50);  // cache side jumps
  list.copy(160, pool.data() + 350, 50);  // payload side jumps
  list.copy(210, pool.data() + 400, 10);  // continues: merged
  ASSERT_EQ(list.copies.size(), 3u);
  EXPECT_EQ(list.copies[0].buf, 0u);
  EXPECT_EQ(list.copies[0].cache, pool.data() + 100);
  EXPECT_EQ(list.copies[0].bytes, 100u);
  EXPECT_EQ(list.copies[1].buf, 100u);
  EXPECT_EQ(list.copies[1].bytes, 50u);
  EXPECT_EQ(list.copies[2].buf, 160u);
  EXPECT_EQ(list.copies[2].cache, pool.data() + 350);
  EXPECT_EQ(list.copies[2].bytes, 60u);
}
