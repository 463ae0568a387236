#include "cache_pair.hpp"

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "kvbits/half.hpp"

namespace kvbits::gputest {

bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

Context& cpu_context() {
  static Context c{ContextConfig{Backend::cpu, 0, 0}};
  return c;
}

Context& gpu_context() {
  static Context c{ContextConfig{Backend::cuda, 0, 0}};
  return c;
}

DeviceCopy::DeviceCopy(const void* host, size_t bytes) {
  EXPECT_EQ(cudaMalloc(&p_, bytes ? bytes : 1), cudaSuccess);
  if (bytes) {
    EXPECT_EQ(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
}

DeviceCopy::~DeviceCopy() { cudaFree(p_); }

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

CachePair::CachePair(std::shared_ptr<const Plan> plan, const CacheConfig& cfg)
    : cpu_(std::make_unique<Cache>(plan, cpu_context(), cfg)), gpu_(std::make_unique<Cache>(plan, gpu_context(), cfg)) {}

uint64_t CachePair::add() {
  const uint64_t a = cpu_->add_sequence(), b = gpu_->add_sequence();
  EXPECT_EQ(a, b);
  return a;
}

uint64_t CachePair::fork(uint64_t src, uint32_t prefix) {
  const uint64_t a = cpu_->fork_sequence(src, prefix), b = gpu_->fork_sequence(src, prefix);
  EXPECT_EQ(a, b);
  return a;
}

void CachePair::remove(uint64_t seq) {
  cpu_->remove_sequence(seq);
  gpu_->remove_sequence(seq);
}

std::pair<Outcome, Outcome> CachePair::append(uint32_t layer, const std::vector<uint64_t>& seqs,
                                              const std::vector<uint32_t>& n_tokens, const std::vector<float>& k,
                                              const std::vector<float>& v, DType dtype, bool device_inputs,
                                              void* stream) {
  const std::vector<uint8_t> kb = as_dtype(k, dtype), vb = as_dtype(v, dtype);
  const Outcome a = outcome_of([&] {
    cpu_->append(layer, seqs.data(), n_tokens.data(), seqs.size(), kb.data(), vb.data(), dtype);
  });
  Outcome b;
  if (device_inputs) {
    DeviceCopy dk(kb.data(), kb.size()), dv(vb.data(), vb.size());
    b = outcome_of([&] {
      gpu_->append(layer, seqs.data(), n_tokens.data(), seqs.size(), dk.get(), dv.get(), dtype, stream);
    });
    EXPECT_EQ(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), cudaSuccess);
  } else {
    b = outcome_of([&] {
      gpu_->append(layer, seqs.data(), n_tokens.data(), seqs.size(), kb.data(), vb.data(), dtype, stream);
    });
  }
  return {a, b};
}

std::vector<uint8_t> download_pool(const Cache& gpu) {
  const uint64_t bytes = gpu.stats().pool_bytes;
  std::vector<uint8_t> out(bytes);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.data(), gpu.page_data(0, 0, 0), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

namespace {

// Names the array of a page byte offset, for messages.
std::string where_in_page(const PageLayout& l, size_t off) {
  const char* a = off < l.k_scales ? "K codes" : off < l.v_codes ? "K scales" : off < l.v_scales ? "V codes" : "V scales";
  return std::string(a) + " (byte " + std::to_string(off) + " of the page)";
}

}  // namespace

void CachePair::expect_identical(const std::string& what) {
  const Cache& c = *cpu_;
  const Cache& g = *gpu_;
  const ModelShape& sh = c.plan().shape;
  const uint32_t L = sh.n_layers, H = sh.n_kv_heads, D = sh.head_dim, P = c.config().page_size;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;  // appends return before their commit ends
  ASSERT_EQ(c.sequences(), g.sequences()) << what;
  const CacheStats cs = c.stats(), gs = g.stats();
  EXPECT_EQ(cs.pages_total, gs.pages_total) << what;
  EXPECT_EQ(cs.pages_used, gs.pages_used) << what;
  EXPECT_EQ(cs.pool_bytes, gs.pool_bytes) << what;
  EXPECT_EQ(cs.fp16_region_bytes, gs.fp16_region_bytes) << what;
  EXPECT_EQ(cs.sequences, gs.sequences) << what;
  EXPECT_EQ(cs.tokens, gs.tokens) << what;
  EXPECT_EQ(cs.packed_bytes_used, gs.packed_bytes_used) << what;

  const size_t block_elems = size_t(2) * H * (size_t(c.sink_tokens()) + c.window_tokens()) * D;
  std::set<uint32_t> used;
  for (uint64_t id : c.sequences())
    for (uint32_t l = 0; l < L; ++l) {
      const SeqLayerView a = c.view(id, l), b = g.view(id, l);
      ASSERT_EQ(a.len, b.len) << what << ": seq " << id << " layer " << l;
      ASSERT_EQ(a.sink, b.sink) << what << ": seq " << id << " layer " << l;
      ASSERT_EQ(a.qend, b.qend) << what << ": seq " << id << " layer " << l;
      const size_t n_pages = a.qend > a.sink ? (a.qend - a.sink + P - 1) / P : 0;
      for (size_t i = 0; i < n_pages; ++i) {
        ASSERT_EQ(a.pages[i], b.pages[i]) << what << ": page table of seq " << id << " entry " << i;
        used.insert(a.pages[i]);
      }
      ASSERT_EQ(a.fp16_base == nullptr, b.fp16_base == nullptr) << what << ": fp16 block of seq " << id << " layer " << l;
      if (a.fp16_base) {
        std::vector<uint16_t> dev(block_elems);
        ASSERT_EQ(cudaMemcpy(dev.data(), b.fp16_base, block_elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < block_elems; ++i)
          ASSERT_EQ(a.fp16_base[i], dev[i]) << what << ": fp16 block of seq " << id << " layer " << l << " value " << i
                                            << " (of " << block_elems << ")";
      }
    }

  // Pages in use: every byte of every region; free pages of the GPU pool: zero.
  const std::vector<uint8_t> pool = download_pool(g);
  const uint8_t* gbase = pool.data();
  const uint8_t* cbase = c.page_data(0, 0, 0);
  const auto* g0 = g.page_data(0, 0, 0);
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t h = 0; h < H; ++h) {
      const PageLayout& lay = c.page_layout(l, h);
      for (uint32_t p = 0; p < c.config().max_pages; ++p) {
        const uint8_t* gp = gbase + (g.page_data(l, h, p) - g0);
        if (used.count(p)) {
          const uint8_t* cp = c.page_data(l, h, p);
          ASSERT_EQ(cp - cbase, g.page_data(l, h, p) - g0) << "the two pools are laid out differently";
          if (std::memcmp(cp, gp, lay.page_bytes) == 0) continue;
          size_t b = 0;
          while (cp[b] == gp[b]) ++b;
          FAIL() << what << ": layer " << l << " head " << h << " page " << p << ", " << where_in_page(lay, b)
                 << ": cpu " << int(cp[b]) << " gpu " << int(gp[b]);
        } else {
          const size_t b = size_t(std::find_if(gp, gp + lay.page_bytes, [](uint8_t x) { return x != 0; }) - gp);
          ASSERT_EQ(b, lay.page_bytes) << what << ": free page " << p << " of layer " << l << " head " << h
                                       << " is not zero at " << where_in_page(lay, b);
        }
      }
    }

  // Read-back: the same CPU decode of the same bytes.
  for (uint64_t id : c.sequences())
    for (uint32_t l = 0; l < L; ++l) {
      const uint32_t n = c.length(id, l);
      if (n == 0) continue;
      std::vector<float> ck(size_t(n) * H * D), cv(ck.size()), gk(ck.size()), gv(ck.size());
      c.read(id, l, 0, n, ck.data(), cv.data());
      g.read(id, l, 0, n, gk.data(), gv.data());
      ASSERT_EQ(0, std::memcmp(ck.data(), gk.data(), ck.size() * 4)) << what << ": read K of seq " << id << " layer " << l;
      ASSERT_EQ(0, std::memcmp(cv.data(), gv.data(), cv.size() * 4)) << what << ": read V of seq " << id << " layer " << l;
    }
}

}  // namespace kvbits::gputest
