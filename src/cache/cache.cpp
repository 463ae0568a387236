// Cache: construction (config checks, quantizers, page layouts, the pool), sequences, and
// the read-only queries. Append, read and fork live in their own files.
#include <new>
#include <tuple>
#include <string>
#include <utility>

#include "cache_device.hpp"
#include "cache_impl.hpp"
#include "head_range.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"

namespace kvbits {
namespace {

using cache_detail::PagePool;

constexpr uint32_t kMaxPageSize = 4096;
constexpr uint64_t kMaxPages = 0xFFFFFFFFull;  // page ids are uint32
constexpr uint32_t kMaxSequences = 1u << 24;
constexpr int64_t kMaxFp16Tokens = int64_t(1) << 24;  // as the plan format's bound

[[noreturn]] void bad_config(const std::string& message) { fail(StatusCode::invalid_argument, "cache: " + message); }

uint32_t resolve_tokens(int64_t configured, uint32_t from_plan, const char* name) {
  if (configured == -1) return from_plan;
  if (configured < 0 || configured > kMaxFp16Tokens)
    bad_config(std::string(name) + " " + std::to_string(configured) + " outside [0, 2^24] (or -1 for the plan's)");
  return uint32_t(configured);
}

void check_config(const CacheConfig& cfg) {
  if (cfg.page_size < 1 || cfg.page_size > kMaxPageSize)
    bad_config("page_size " + std::to_string(cfg.page_size) + " outside [1, " + std::to_string(kMaxPageSize) + "]");
  if (cfg.max_pages < 1 || cfg.max_pages > kMaxPages)
    bad_config("max_pages " + std::to_string(cfg.max_pages) + " outside [1, 2^32 - 1]");
  if (cfg.max_sequences < 1 || cfg.max_sequences > kMaxSequences)
    bad_config("max_sequences " + std::to_string(cfg.max_sequences) + " outside [1, 2^24]");
}

const Plan& checked_plan(const std::shared_ptr<const Plan>& plan) {
  if (!plan) fail(StatusCode::null_pointer, "cache: plan is null");
  try {
    plan->validate();
  } catch (const Error& e) {
    fail(StatusCode::invalid_argument, std::string("cache: the plan is not valid: ") + e.what());
  }
  return *plan;
}

const Context& checked_context(const Context& ctx) {
  if (ctx.backend() != Backend::cpu && ctx.backend() != Backend::cuda)
    fail(StatusCode::unsupported, std::string("cache: no cache for the ") + backend_name(ctx.backend()) +
                                      " backend in this build");
  return ctx;
}

// The device half of a cache on a CUDA context: it owns the pool's device memory.
std::unique_ptr<cache_detail::DeviceCache> device_half(Cache::Impl& impl, const std::vector<size_t>& region_bytes,
                                                       uint64_t max_pages) {
  if (impl.ctx.backend() != Backend::cuda) return nullptr;
#if KVB_HAVE_CUDA
  return cache_detail::make_device_cache(impl, PagePool::pool_bytes(region_bytes, max_pages));
#else
  (void)region_bytes, (void)max_pages;
  fail(StatusCode::unsupported, "cache: this build has no CUDA backend");
#endif
}

std::vector<std::unique_ptr<HeadQuantizers>> build_quantizers(const Plan& plan, const Context& ctx) {
  const uint32_t n_heads = plan.shape.n_kv_heads;
  std::vector<std::unique_ptr<HeadQuantizers>> q(size_t(plan.shape.n_layers) * n_heads);
  // Rotations are materialised here (a QR per group), once per (layer, head), in parallel.
  ctx.parallel_for(q.size(), [&](size_t i) {
    const uint32_t layer = uint32_t(i / n_heads), head = uint32_t(i % n_heads);
    if (plan.layers[layer].keep_fp16) return;
    q[i] = std::make_unique<HeadQuantizers>(make_head_quantizers(plan, layer, head));
  });
  return q;
}

std::vector<PageLayout> build_layouts(const Plan& plan, const std::vector<std::unique_ptr<HeadQuantizers>>& q,
                                      uint32_t page_size) {
  std::vector<PageLayout> layouts(q.size());
  for (size_t i = 0; i < q.size(); ++i)
    layouts[i] = q[i] ? cache_detail::quantized_page_layout(*q[i], page_size)
                      : cache_detail::fp16_page_layout(plan.shape.head_dim, page_size);
  return layouts;
}

std::vector<size_t> region_bytes(const std::vector<PageLayout>& layouts) {
  std::vector<size_t> bytes;
  bytes.reserve(layouts.size());
  for (const PageLayout& l : layouts) bytes.push_back(l.page_bytes);
  return bytes;
}

}  // namespace

Cache::Impl::Impl(const Plan& plan_in, const Context& ctx_in, const CacheConfig& cfg, uint32_t sink_in,
                  uint32_t window_in, std::vector<std::unique_ptr<HeadQuantizers>> quantizers_in,
                  std::vector<PageLayout> layouts_in)
    : plan(plan_in),
      ctx(ctx_in),
      n_layers(plan_in.shape.n_layers),
      n_heads(plan_in.shape.n_kv_heads),
      head_dim(plan_in.shape.head_dim),
      page_size(cfg.page_size),
      sink(sink_in),
      window(window_in),
      quantizers(std::move(quantizers_in)),
      layouts(std::move(layouts_in)),
      device(device_half(*this, region_bytes(layouts), cfg.max_pages)),
      pool(region_bytes(layouts), cfg.max_pages, device ? device->pool_base() : nullptr),
      seqs(cfg.max_sequences) {}

Cache::Impl::~Impl() = default;

Cache::Cache(std::shared_ptr<const Plan> plan, const Context& ctx, const CacheConfig& cfg)
    : full_plan_(std::move(plan)), ctx_(&checked_context(ctx)), cfg_(cfg) {
  checked_plan(full_plan_);
  check_config(cfg_);
  std::tie(head_begin_, head_end_) =
      cache_detail::resolve_head_range(cfg_.kv_head_begin, cfg_.kv_head_end, full_plan_->shape.n_kv_heads);
  try {
    plan_ = head_end_ - head_begin_ == full_plan_->shape.n_kv_heads
                ? full_plan_
                : std::make_shared<const Plan>(cache_detail::cut_kv_heads(*full_plan_, head_begin_, head_end_));
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: out of memory cutting the plan to its KV heads");
  }
  const Plan& p = *plan_;
  sink_ = resolve_tokens(cfg_.sink_tokens, p.sink_tokens, "sink_tokens");
  window_ = resolve_tokens(cfg_.window_tokens, p.window_tokens, "window_tokens");
  try {
    auto quantizers = build_quantizers(p, *ctx_);
    auto layouts = build_layouts(p, quantizers, cfg_.page_size);
    impl_ = std::make_unique<Impl>(p, *ctx_, cfg_, sink_, window_, std::move(quantizers), std::move(layouts));
    impl_->full_plan = full_plan_.get();
    impl_->head_begin = head_begin_;
    if (impl_->device) impl_->device->attach();
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: out of memory building the quantizers and page tables");
  }
}

Cache::~Cache() = default;

void Cache::Impl::check_layer(uint32_t layer, const char* what) const {
  if (layer >= n_layers)
    fail(StatusCode::invalid_argument, std::string("cache: ") + what + ": layer " + std::to_string(layer) +
                                           " out of range (" + std::to_string(n_layers) + " layers)");
}

const PageLayout& Cache::page_layout(uint32_t layer, uint32_t kv_head) const {
  impl_->check_layer(layer, "page_layout");
  if (kv_head >= impl_->n_heads)
    fail(StatusCode::invalid_argument, "cache: page_layout: kv head " + std::to_string(kv_head) + " out of range (" +
                                           std::to_string(impl_->n_heads) + " kv heads)");
  return impl_->layouts[impl_->slot(layer, kv_head)];
}

const HeadQuantizers& Cache::quantizers(uint32_t layer, uint32_t kv_head) const {
  page_layout(layer, kv_head);  // range checks
  const auto& q = impl_->quantizers[impl_->slot(layer, kv_head)];
  if (!q)
    fail(StatusCode::invalid_argument,
         "cache: quantizers: layer " + std::to_string(layer) + " is kept at 16 bits and has no quantizers");
  return *q;
}

uint64_t Cache::add_sequence() {
  impl_->seqs.require_room();
  try {
    auto seq = std::make_unique<cache_detail::Sequence>();
    seq->layers.resize(impl_->n_layers);
    return impl_->seqs.insert(std::move(seq));
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: out of memory adding a sequence");
  }
}

void Cache::remove_sequence(uint64_t seq) { impl_->remove(seq); }

uint64_t Cache::fork_sequence(uint64_t src, uint32_t prefix_len) { return impl_->fork(src, prefix_len); }

uint32_t Cache::length(uint64_t seq, uint32_t layer) const {
  const cache_detail::Sequence& s = impl_->seqs.get(seq);
  impl_->check_layer(layer, "length");
  return s.layers[layer].len;
}

bool Cache::has_sequence(uint64_t seq) const { return impl_->seqs.find(seq) != nullptr; }

std::vector<uint64_t> Cache::sequences() const { return impl_->seqs.ids(); }

void Cache::append(uint32_t layer, const uint64_t* seqs, const uint32_t* n_tokens, size_t n_seqs, const void* k,
                   const void* v, DType dtype, void* stream) {
  // Every allocation of an append happens before its commit, so running out of memory
  // leaves the cache unchanged too.
  try {
    impl_->append(layer, seqs, n_tokens, n_seqs, k, v, dtype, stream);
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: append: out of memory; nothing was appended");
  }
}

void Cache::read(uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n, float* k, float* v) const {
  try {
    impl_->read(seq, layer, pos, n, k, v);
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: read: out of memory");
  }
}

CacheStats Cache::stats() const {
  const Impl& m = *impl_;
  CacheStats s;
  s.pages_total = m.pool.max_pages();
  s.pages_used = m.pool.used_pages();
  s.pool_bytes = m.pool.total_bytes();
  s.packed_bytes_used = s.pages_used * m.pool.column_bytes();
  s.sequences = m.seqs.size();
  const uint64_t block_bytes = uint64_t(m.fp16_block_elems()) * 2;
  for (uint64_t id : m.seqs.ids()) {
    const cache_detail::Sequence& seq = *m.seqs.find(id);
    s.tokens += seq.layers[0].len;
    for (const cache_detail::SeqLayer& sl : seq.layers)
      if (sl.fp16) s.fp16_region_bytes += block_bytes;
  }
  return s;
}

SeqLayerView Cache::view(uint64_t seq, uint32_t layer) const {
  const cache_detail::Sequence& s = impl_->seqs.get(seq);
  impl_->check_layer(layer, "view");
  const cache_detail::SeqLayer& sl = s.layers[layer];
  SeqLayerView v;
  v.len = sl.len;
  v.sink = sl.len < sink_ ? sl.len : sink_;
  v.qend = sl.qend;
  v.window_capacity = window_;
  v.pages = s.pages.data();
  v.fp16_base = sl.fp16.get();
  v.sink_capacity = sink_;
  v.head_dim = impl_->head_dim;
  v.n_kv_heads = impl_->n_heads;
  return v;
}

cache_detail::DeviceCache* Cache::device_cache() const { return impl_->device.get(); }

const uint8_t* Cache::page_data(uint32_t layer, uint32_t kv_head, uint32_t page) const {
  page_layout(layer, kv_head);  // range checks
  if (page >= impl_->pool.max_pages())
    fail(StatusCode::invalid_argument, "cache: page_data: page " + std::to_string(page) + " out of range (" +
                                           std::to_string(impl_->pool.max_pages()) + " pages)");
  return impl_->pool.page(impl_->slot(layer, kv_head), page);
}

}  // namespace kvbits
