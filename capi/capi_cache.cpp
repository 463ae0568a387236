// C API: the paged cache: create, sequences, append, read-back, statistics.
//
// Arguments the core cannot see the size of are checked here, before the cache is touched:
// counts, sums and the length a sequence would reach, so huge sizes are refused before any
// buffer of the caller's is read. Everything else is the core's to check.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "capi_cache_checks.hpp"
#include "capi_handles.hpp"

using kvbits::capi::bad_arg;
using kvbits::capi::guarded;
using kvbits::capi::null_arg;

namespace {

kvbits::CacheConfig to_config(const kvb_cache_params* params, const kvbits::Plan& plan) {
  kvb_cache_params defaults;
  kvb_cache_params_default(&defaults);
  const kvb_cache_params p = kvbits::capi::read_versioned(params, defaults, "kvb_cache_params");
  kvbits::capi::check_reserved_zero(p.reserved, "kvb_cache_params");
  if (p.model) kvbits::check_plan_shape(plan, kvbits::capi::to_model_shape(p.model));
  // Ranges (and a pool larger than this machine's memory) are the core's to check.
  kvbits::CacheConfig cfg;
  cfg.page_size = p.page_size, cfg.max_pages = p.max_pages, cfg.max_sequences = p.max_sequences;
  cfg.sink_tokens = p.sink_tokens, cfg.window_tokens = p.window_tokens;
  cfg.kv_head_begin = p.kv_head_begin, cfg.kv_head_end = p.kv_head_end;
  return cfg;
}

}  // namespace

extern "C" {

void kvb_cache_params_default(kvb_cache_params* params) {
  if (!params) return;
  std::memset(params, 0, sizeof *params);
  const kvbits::CacheConfig d;
  params->struct_size = sizeof *params;
  params->page_size = d.page_size;
  params->max_pages = 0;
  params->sink_tokens = -1, params->window_tokens = -1;
  params->max_sequences = d.max_sequences;
}

kvb_status kvb_cache_create(kvb_context* ctx, const kvb_plan* plan, const kvb_cache_params* params, kvb_cache** out,
                            kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(ctx ? &ctx->state->errors : nullptr, err, [&] {
    if (!ctx) null_arg("ctx");
    if (!plan) null_arg("plan");
    if (!params) null_arg("params");
    if (!out) null_arg("out");
    const kvbits::CacheConfig cfg = to_config(params, *plan->plan);
    auto cache = std::make_unique<kvb_cache>();
    cache->ctx = ctx->state;
    cache->cache = std::make_unique<kvbits::Cache>(plan->plan, ctx->state->context, cfg);
    *out = cache.release();
  });
}

void kvb_cache_destroy(kvb_cache* cache) { delete cache; }

kvb_status kvb_cache_seq_add(kvb_cache* cache, uint64_t* id_out, kvb_error* err) {
  if (id_out) *id_out = KVB_SEQ_NONE;
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!id_out) null_arg("id_out");
    *id_out = cache->cache->add_sequence();
  });
}

kvb_status kvb_cache_seq_remove(kvb_cache* cache, uint64_t seq, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    cache->cache->remove_sequence(seq);
  });
}

kvb_status kvb_cache_seq_fork(kvb_cache* cache, uint64_t src, uint32_t prefix_len, uint64_t* id_out,
                              kvb_error* err) {
  if (id_out) *id_out = KVB_SEQ_NONE;
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!id_out) null_arg("id_out");
    *id_out = cache->cache->fork_sequence(src, prefix_len);
  });
}

kvb_status kvb_cache_seq_length(const kvb_cache* cache, uint64_t seq, uint32_t layer, uint32_t* len_out,
                                kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!len_out) null_arg("len_out");
    *len_out = cache->cache->length(seq, layer);
  });
}

kvb_status kvb_cache_append(kvb_cache* cache, uint32_t layer, const uint64_t* seqs, const uint32_t* n_tokens,
                            size_t n_seqs, const void* k, const void* v, kvb_dtype dtype, void* stream,
                            kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!seqs) null_arg("seqs");
    if (!n_tokens) null_arg("n_tokens");
    if (!k) null_arg("k");
    if (!v) null_arg("v");
    const kvbits::Cache& c = *cache->cache;
    const kvbits::DType t = kvbits::capi::to_dtype(dtype, "dtype");
    kvbits::capi::require_layer(c, layer);
    kvbits::capi::require_batch(c, seqs, n_seqs, /*distinct=*/true);
    const uint64_t most = kvbits::capi::max_tokens_per_sequence(c);
    uint64_t total = 0;
    std::vector<uint64_t> busy_seqs;  // the entries with tokens: the core refuses empty ones
    std::vector<uint32_t> busy_tokens;
    for (size_t i = 0; i < n_seqs; ++i) {
      const uint64_t after = uint64_t(c.length(seqs[i], layer)) + n_tokens[i];
      if (after > most)
        kvbits::fail(kvbits::StatusCode::capacity_exhausted,
                     "sequence " + std::to_string(seqs[i]) + " would hold " + std::to_string(after) +
                         " tokens in layer " + std::to_string(layer) + "; this cache holds at most " +
                         std::to_string(most) + " per sequence");
      total += n_tokens[i];
      if (n_tokens[i] == 0) continue;
      busy_seqs.push_back(seqs[i]);
      busy_tokens.push_back(n_tokens[i]);
    }
    kvbits::capi::checked_mul(total, kvbits::capi::token_row_bytes(c, c.plan().shape.n_kv_heads, t),
                              "sum(n_tokens) * n_kv_heads * head_dim");
    if (busy_seqs.empty()) return;
    cache->cache->append(layer, busy_seqs.data(), busy_tokens.data(), busy_seqs.size(), k, v, t, stream);
  });
}

kvb_status kvb_cache_read(const kvb_cache* cache, uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n_tokens,
                          float* k_out, float* v_out, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!k_out && !v_out) null_arg("k_out and v_out (at least one)");
    if (n_tokens == 0) bad_arg("n_tokens must be >= 1");
    cache->cache->read(seq, layer, pos, n_tokens, k_out, v_out);
  });
}

kvb_status kvb_cache_get_stats(const kvb_cache* cache, kvb_cache_stats* stats, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!stats) null_arg("stats");
    const kvbits::CacheStats s = cache->cache->stats();
    kvb_cache_stats r;
    std::memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.page_size = cache->cache->config().page_size;
    r.pages_total = s.pages_total, r.pages_used = s.pages_used;
    r.pool_bytes = s.pool_bytes, r.packed_bytes_used = s.packed_bytes_used;
    r.fp16_region_bytes = s.fp16_region_bytes;
    r.sequences = s.sequences, r.tokens = s.tokens;
    kvbits::capi::write_versioned(stats, r, "kvb_cache_stats");
  });
}

}  // extern "C"
