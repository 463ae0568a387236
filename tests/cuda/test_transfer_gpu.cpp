// Head-range caches and sequence transfer on CUDA (docs/transfer.md):
//   - caches of KV-head ranges on the GPU read back, decode and extend bit for bit as the same
//     heads of a GPU cache of every head (the launch takes the full cache's split count), with
//     long sequences where a launch over fewer heads would otherwise split differently;
//   - a GPU export (host or device buffer) is byte-identical to the CPU export of the same
//     appends; CPU -> GPU, GPU -> CPU and GPU -> GPU (device buffer) imports read back and attend
//     as the originals; a corrupted or truncated device buffer is refused, the cache unchanged.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cache_pair.hpp"
#include "cache_test_util.hpp"
#include "cuda/device_cache.hpp"
#include "kvbits/attention.hpp"

using namespace kvbits;
using namespace kvbits::gputest;

namespace {

class GpuTransfer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

std::vector<float> cut(const std::vector<float>& x, size_t n, uint32_t heads, uint32_t D, uint32_t b, uint32_t e) {
  std::vector<float> out;
  out.reserve(n * (e - b) * D);
  for (size_t t = 0; t < n; ++t)
    out.insert(out.end(), x.begin() + std::ptrdiff_t((t * heads + b) * D), x.begin() + std::ptrdiff_t((t * heads + e) * D));
  return out;
}

// Uninitialised device memory, freed on destruction.
struct DeviceBuffer {
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes ? bytes : 1), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p; }
  void* p = nullptr;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<float> random_values(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (float& e : x) e = nd(rng);
  return x;
}

// Decode (device tensors) and extend (host tensors) of every sequence in `layer`: out then lse.
std::vector<float> attend(const Cache& c, uint32_t layer, const std::vector<uint64_t>& seqs, const std::vector<float>& q,
                          const std::vector<uint32_t>& q_len) {
  const ModelShape& sh = c.plan().shape;
  const size_t hq = sh.n_q_heads, D = sh.head_dim, n = seqs.size();
  std::vector<float> all(n * hq * (D + 1));
  {
    DeviceCopy dq(q.data(), n * hq * D * 4);
    DeviceBuffer dout(n * hq * D * 4), dlse(n * hq * 4);
    attention_decode(c, layer, seqs.data(), n, dq.get(), DType::f32, static_cast<float*>(dout.get()),
                     static_cast<float*>(dlse.get()), {});
    EXPECT_EQ(cudaMemcpy(all.data(), dout.get(), n * hq * D * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(all.data() + n * hq * D, dlse.get(), n * hq * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  size_t rows = 0;
  for (uint32_t r : q_len) rows += r;
  std::vector<float> out(rows * hq * D), lse(rows * hq);
  attention_extend(c, layer, seqs.data(), q_len.data(), n, q.data(), DType::f32, out.data(), lse.data(), {});
  all.insert(all.end(), out.begin(), out.end());
  all.insert(all.end(), lse.begin(), lse.end());
  return all;
}

// The output rows of query heads [b, e) of `all` (laid out as attend() returns it).
std::vector<float> heads_of(const std::vector<float>& all, size_t n, size_t rows, uint32_t hq, uint32_t D, uint32_t b,
                            uint32_t e) {
  std::vector<float> out = cut(std::vector<float>(all.begin(), all.begin() + std::ptrdiff_t(n * hq * D)), n, hq, D, b, e);
  const auto lse = cut(std::vector<float>(all.begin() + std::ptrdiff_t(n * hq * D), all.begin() + std::ptrdiff_t(n * hq * (D + 1))),
                       n, hq, 1, b, e);
  out.insert(out.end(), lse.begin(), lse.end());
  const size_t x0 = n * hq * (D + 1);
  const auto xo = cut(std::vector<float>(all.begin() + std::ptrdiff_t(x0), all.begin() + std::ptrdiff_t(x0 + rows * hq * D)),
                      rows, hq, D, b, e);
  const auto xl = cut(std::vector<float>(all.begin() + std::ptrdiff_t(x0 + rows * hq * D), all.end()), rows, hq, 1, b, e);
  out.insert(out.end(), xo.begin(), xo.end());
  out.insert(out.end(), xl.begin(), xl.end());
  return out;
}

std::vector<uint8_t> export_host(const Cache& c, uint64_t seq) {
  std::vector<uint8_t> b(c.export_size(seq));
  EXPECT_EQ(c.export_sequence(seq, b.data(), b.size()), b.size());
  return b;
}

std::vector<uint8_t> export_device(const Cache& c, uint64_t seq) {
  const size_t n = c.export_size(seq);
  DeviceBuffer d(n);
  EXPECT_EQ(c.export_sequence(seq, d.get(), n), n);
  std::vector<uint8_t> b(n);
  EXPECT_EQ(cudaMemcpy(b.data(), d.get(), n, cudaMemcpyDeviceToHost), cudaSuccess);
  return b;
}

// A page-locked host buffer (the export and import copy it with a launch, not cudaMemcpy).
struct PinnedBuffer {
  explicit PinnedBuffer(size_t n) { EXPECT_EQ(cudaMallocHost(&p, n ? n : 1), cudaSuccess); }
  ~PinnedBuffer() { cudaFreeHost(p); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p); }
  void* p = nullptr;
};

std::vector<uint8_t> export_pinned(const Cache& c, uint64_t seq) {
  const size_t n = c.export_size(seq);
  PinnedBuffer b(n);
  std::memset(b.get(), 0xA5, n);  // the export must write every byte
  EXPECT_EQ(c.export_sequence(seq, b.get(), n), n);
  return std::vector<uint8_t>(b.get(), b.get() + n);
}

std::vector<float> read_all(const Cache& c, uint64_t seq, uint32_t layer) {
  const ModelShape& sh = c.plan().shape;
  const uint32_t n = c.length(seq, layer);
  std::vector<float> kv(size_t(n) * sh.n_kv_heads * sh.head_dim * 2);
  if (n) c.read(seq, layer, 0, n, kv.data(), kv.data() + kv.size() / 2);
  return kv;
}

struct RangeCase {
  uint32_t q_heads, kv_heads, head_dim, page_size, sink, window;
  bool fp16_layer;
  uint32_t n_seqs, length;
};

}  // namespace

TEST_F(GpuTransfer, HeadRangesMatchTheFullGpuCacheBitForBit) {
  const RangeCase cases[] = {
      {16, 8, 128, 64, 0, 0, false, 8, 4000},  // long: a one-head launch would split otherwise
      {8, 4, 128, 64, 4, 16, false, 3, 700},
      {16, 4, 64, 16, 0, 8, true, 5, 1500},
      {4, 4, 128, 64, 2, 0, false, 2, 2500},
  };
  for (const RangeCase& s : cases) {
    SCOPED_TRACE("Hq=" + std::to_string(s.q_heads) + " H=" + std::to_string(s.kv_heads) + " D=" +
                 std::to_string(s.head_dim) + " P=" + std::to_string(s.page_size) + " S/W=" + std::to_string(s.sink) +
                 "/" + std::to_string(s.window) + " seqs=" + std::to_string(s.n_seqs) + "x" + std::to_string(s.length));
    ModelShape shape = cachetest::make_shape(2, s.kv_heads, s.head_dim);
    shape.n_q_heads = s.q_heads;
    PlanOptions o;
    if (s.fp16_layer) o.fp16_layers = {1};
    const auto plan = cachetest::make_plan(shape, o, 7);
    const uint32_t H = s.kv_heads, D = s.head_dim, Hq = s.q_heads, G = Hq / H;
    auto config = [&](uint32_t b, uint32_t e) {
      CacheConfig c;
      c.page_size = s.page_size;
      c.max_pages = uint64_t(s.n_seqs) * (s.length / s.page_size + 2) + 8;
      c.sink_tokens = s.sink, c.window_tokens = s.window;
      c.kv_head_begin = b, c.kv_head_end = e;
      return c;
    };
    Cache full(plan, gpu_context(), config(0, 0));
    const std::vector<std::pair<uint32_t, uint32_t>> ranges = {{0, 1}, {1, 3}, {H - 1, H}, {0, H / 2}, {H / 2, H}};
    std::vector<std::unique_ptr<Cache>> parts;
    for (auto [b, e] : ranges) parts.push_back(std::make_unique<Cache>(plan, gpu_context(), config(b, e)));
    std::vector<uint64_t> seqs;
    for (uint32_t i = 0; i < s.n_seqs; ++i) {
      seqs.push_back(full.add_sequence());
      for (auto& p : parts) EXPECT_EQ(p->add_sequence(), seqs.back());
    }
    // Two chunks per layer, uneven lengths.
    for (uint32_t l = 0; l < 2; ++l)
      for (int chunk = 0; chunk < 2; ++chunk) {
        std::vector<uint32_t> n(s.n_seqs);
        size_t total = 0;
        for (uint32_t i = 0; i < s.n_seqs; ++i) total += n[i] = chunk == 0 ? s.length / 3 + i : s.length - s.length / 3 - i;
        const auto k = random_values(100 + l * 2 + chunk, total * H * D), v = random_values(200 + l * 2 + chunk, total * H * D);
        full.append(l, seqs.data(), n.data(), s.n_seqs, k.data(), v.data(), DType::f32);
        for (size_t r = 0; r < ranges.size(); ++r) {
          const auto kc = cut(k, total, H, D, ranges[r].first, ranges[r].second);
          const auto vc = cut(v, total, H, D, ranges[r].first, ranges[r].second);
          parts[r]->append(l, seqs.data(), n.data(), s.n_seqs, kc.data(), vc.data(), DType::f32);
        }
      }
    if (&s == &cases[0]) {
      // The case is meant to need the matching: a launch over one head would split otherwise.
      cuda::DecodeParams own, all;
      static_cast<cuda::CudaCache*>(parts[0]->device_cache())->describe_layer(own, "test", 0, seqs.data(), s.n_seqs, 0);
      static_cast<cuda::CudaCache*>(full.device_cache())->describe_layer(all, "test", 0, seqs.data(), s.n_seqs, 0);
      const uint32_t own_splits = cuda::decode_splits(own), all_splits = cuda::decode_splits(all);
      EXPECT_NE(own_splits, all_splits) << "the long case no longer tests the split matching";
      cuda::HeadRangeLaunch(*plan, s.page_size).match_decode(own, 0);
      EXPECT_EQ(own.splits, all_splits);
      EXPECT_EQ(own.variant, cuda::decode_variant(all));
    }
    const std::vector<uint32_t> q_len(s.n_seqs, 5);
    const auto q = random_values(300, s.n_seqs * 5 * Hq * D);
    for (uint32_t l = 0; l < 2; ++l) {
      const std::vector<float> want = attend(full, l, seqs, q, q_len);
      for (size_t r = 0; r < ranges.size(); ++r) {
        const auto [b, e] = ranges[r];
        SCOPED_TRACE("layer " + std::to_string(l) + " heads [" + std::to_string(b) + ", " + std::to_string(e) + ")");
        const std::vector<float> got = attend(*parts[r], l, seqs, cut(q, s.n_seqs * 5, Hq, D, b * G, e * G), q_len);
        EXPECT_TRUE(same_bits(got, heads_of(want, s.n_seqs, s.n_seqs * 5, Hq, D, b * G, e * G)));
        EXPECT_TRUE(same_bits(read_all(*parts[r], seqs[0], l), [&] {
          const auto kv = read_all(full, seqs[0], l);
          const size_t len = kv.size() / 2 / (H * D);
          auto k = cut(std::vector<float>(kv.begin(), kv.begin() + std::ptrdiff_t(kv.size() / 2)), len, H, D, b, e);
          const auto v = cut(std::vector<float>(kv.begin() + std::ptrdiff_t(kv.size() / 2), kv.end()), len, H, D, b, e);
          k.insert(k.end(), v.begin(), v.end());
          return k;
        }()));
      }
    }
  }
}

TEST_F(GpuTransfer, ExportsMatchTheCpuAndImportsCrossBackends) {
  ModelShape shape = cachetest::make_shape(2, 2, 128);
  shape.n_q_heads = 8;
  PlanOptions o;
  o.fp16_layers = {1};
  const auto plan = cachetest::make_plan(shape, o, 3);
  CacheConfig cfg;
  cfg.page_size = 16, cfg.max_pages = 128, cfg.sink_tokens = 3, cfg.window_tokens = 5;
  CachePair pair(plan, cfg);
  const uint64_t a = pair.add(), b = pair.add();
  for (uint32_t l = 0; l < 2; ++l) {
    const auto k = random_values(10 + l, 100 * 2 * 128), v = random_values(20 + l, 100 * 2 * 128);
    const auto r = pair.append(l, {a, b}, {70 + l, 20}, k, v, DType::f32, true);
    ASSERT_TRUE(r.first.code == StatusCode::ok && r.second.code == StatusCode::ok) << r.first.message << r.second.message;
  }
  const uint64_t f = pair.fork(a, 37);  // shares a partial page
  for (uint32_t l = 0; l < 2; ++l) {
    const auto k = random_values(30 + l, 3 * 2 * 128);
    const auto r = pair.append(l, {f}, {3}, k, k, DType::f32, false);
    ASSERT_TRUE(r.first.code == StatusCode::ok && r.second.code == StatusCode::ok) << r.first.message << r.second.message;
  }
  pair.expect_identical("filled");
  const auto q = random_values(40, 4 * 8 * 128);
  const std::vector<uint32_t> q_len = {4};
  for (uint64_t seq : {a, b, f}) {
    SCOPED_TRACE("seq " + std::to_string(seq));
    const std::vector<uint8_t> cpu = export_host(pair.cpu(), seq);
    EXPECT_EQ(export_host(pair.gpu(), seq), cpu);
    EXPECT_EQ(export_device(pair.gpu(), seq), cpu);
    EXPECT_EQ(export_pinned(pair.gpu(), seq), cpu);
    // CPU -> GPU: reads and GPU attention as the GPU original.
    Cache gpu_dst(plan, gpu_context(), cfg), cpu_dst(plan, cpu_context(), cfg), gpu_dev(plan, gpu_context(), cfg);
    Cache gpu_pin(plan, gpu_context(), cfg);
    PinnedBuffer pinned(cpu.size());
    std::memcpy(pinned.get(), cpu.data(), cpu.size());
    const uint64_t p = gpu_pin.import_sequence(pinned.get(), cpu.size());
    const uint64_t g = gpu_dst.import_sequence(cpu.data(), cpu.size());
    // GPU -> CPU through a host buffer, and GPU -> GPU through a device buffer.
    const std::vector<uint8_t> from_gpu = export_host(pair.gpu(), seq);
    const uint64_t c = cpu_dst.import_sequence(from_gpu.data(), from_gpu.size());
    DeviceCopy dev(cpu.data(), cpu.size());
    const uint64_t d = gpu_dev.import_sequence(dev.get(), cpu.size());
    for (uint32_t l = 0; l < 2; ++l) {
      const auto want_read = read_all(pair.cpu(), seq, l);
      EXPECT_TRUE(same_bits(read_all(gpu_dst, g, l), want_read));
      EXPECT_TRUE(same_bits(read_all(cpu_dst, c, l), want_read));
      EXPECT_TRUE(same_bits(read_all(gpu_dev, d, l), want_read));
      EXPECT_TRUE(same_bits(read_all(gpu_pin, p, l), want_read));
      const auto want_gpu = attend(pair.gpu(), l, {seq}, q, q_len);
      EXPECT_TRUE(same_bits(attend(gpu_dst, l, {g}, q, q_len), want_gpu));
      EXPECT_TRUE(same_bits(attend(gpu_dev, l, {d}, q, q_len), want_gpu));
      std::vector<float> co(8 * 128), cl(8), wo(8 * 128), wl(8);
      attention_decode(cpu_dst, l, &c, 1, q.data(), DType::f32, co.data(), cl.data(), {});
      attention_decode(pair.cpu(), l, &seq, 1, q.data(), DType::f32, wo.data(), wl.data(), {});
      EXPECT_TRUE(same_bits(co, wo) && same_bits(cl, wl));
    }
    EXPECT_EQ(export_device(gpu_dst, g), cpu);
    EXPECT_EQ(export_host(cpu_dst, c), cpu);
    EXPECT_EQ(export_host(gpu_dev, d), cpu);
    EXPECT_EQ(export_device(gpu_pin, p), cpu);
    // The imported GPU sequence goes on as the original under further appends.
    for (uint32_t l = 0; l < 2; ++l) {
      const uint32_t n = 9;
      const auto k = random_values(50 + l, n * 2 * 128);
      pair.gpu().append(l, &seq, &n, 1, k.data(), k.data(), DType::f32);
      gpu_dst.append(l, &g, &n, 1, k.data(), k.data(), DType::f32);
    }
    EXPECT_EQ(export_device(gpu_dst, g), export_device(pair.gpu(), seq));
  }
}

TEST_F(GpuTransfer, CorruptDeviceBuffersAreRefusedAndTheCacheUnchanged) {
  const ModelShape shape = cachetest::make_shape(2, 2, 64);
  const auto plan = cachetest::make_plan(shape, {}, 4);
  CacheConfig cfg;
  cfg.page_size = 16, cfg.max_pages = 64, cfg.sink_tokens = 2, cfg.window_tokens = 4;
  Cache src(plan, gpu_context(), cfg), dst(plan, gpu_context(), cfg);
  const uint64_t a = src.add_sequence(), keep = dst.add_sequence();
  for (uint32_t l = 0; l < 2; ++l) {
    const uint32_t n = 150;
    const auto k = random_values(l, n * 2 * 64);
    src.append(l, &a, &n, 1, k.data(), k.data(), DType::f32);
    dst.append(l, &keep, &n, 1, k.data(), k.data(), DType::f32);
  }
  const std::vector<uint8_t> good = export_device(src, a);
  const std::vector<uint8_t> keep_bytes = export_host(dst, keep);
  const CacheStats before = dst.stats();
  auto refused = [&](std::vector<uint8_t> bytes, size_t size, const std::string& text) {
    DeviceCopy d(bytes.data(), bytes.size());
    const Outcome o = outcome_of([&] { dst.import_sequence(d.get(), size); });
    EXPECT_EQ(o.code, StatusCode::corrupt_data) << o.message;
    EXPECT_NE(o.message.find(text), std::string::npos) << o.message;
    EXPECT_EQ(dst.stats().pages_used, before.pages_used);
    EXPECT_EQ(dst.stats().sequences, before.sequences);
    EXPECT_EQ(dst.stats().fp16_region_bytes, before.fp16_region_bytes);
  };
  for (size_t at : {good.size() - 1, good.size() / 2, size_t(200), size_t(130)}) {
    std::vector<uint8_t> b = good;
    b[at] ^= 0x20;
    refused(b, b.size(), "payload checksum mismatch");
  }
  std::vector<uint8_t> b = good;
  b[40] ^= 1;
  refused(b, b.size(), "header checksum mismatch");
  refused(good, good.size() - 5, "(truncated)");
  refused(good, 10, "truncated");
  EXPECT_EQ(export_host(dst, keep), keep_bytes);
  // The good bytes still import, and the freed state is consistent afterwards.
  DeviceCopy d(good.data(), good.size());
  const uint64_t id = dst.import_sequence(d.get(), good.size());
  EXPECT_EQ(export_host(dst, id), export_host(src, a));
  dst.remove_sequence(id);
  EXPECT_EQ(dst.stats().pages_used, before.pages_used);
}
