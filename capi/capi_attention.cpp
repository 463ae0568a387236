// C API: decode and extend attention on the packed cache.
#include <cmath>
#include <cstring>
#include <vector>

#include "capi_cache_checks.hpp"
#include "capi_handles.hpp"
#include "kvbits/attention.hpp"

using kvbits::capi::bad_arg;
using kvbits::capi::guarded;
using kvbits::capi::null_arg;

namespace {

kvbits::AttentionParams to_params(const kvb_attention_params* params) {
  kvb_attention_params defaults;
  kvb_attention_params_default(&defaults);
  const kvb_attention_params p = kvbits::capi::read_versioned(params, defaults, "kvb_attention_params");
  kvbits::capi::check_reserved_zero(p.reserved, "kvb_attention_params");
  if (!std::isfinite(p.scale) || p.scale < 0.0f)
    bad_arg("kvb_attention_params.scale must be finite and >= 0 (0 = 1/sqrt(head_dim))");
  if (p.precision != KVB_PRECISION_FP16 && p.precision != KVB_PRECISION_FP32)
    bad_arg("kvb_attention_params.precision must be KVB_PRECISION_FP16 (0) or KVB_PRECISION_FP32 (1), got " +
            std::to_string(p.precision));
  kvbits::AttentionParams r;
  r.scale = p.scale;
  r.precision = p.precision == KVB_PRECISION_FP32 ? kvbits::Precision::fp32 : kvbits::Precision::fp16;
  return r;
}

// Checks shared by decode and extend; q_len is null for decode (one query per sequence).
// Returns the number of query rows.
size_t check_queries(const kvbits::Cache& c, uint32_t layer, const uint64_t* seqs, const uint32_t* q_len,
                     size_t n_seqs, kvbits::DType t) {
  kvbits::capi::require_layer(c, layer);
  kvbits::capi::require_batch(c, seqs, n_seqs, /*distinct=*/false);
  size_t rows = 0;
  for (size_t i = 0; i < n_seqs; ++i) {
    const uint32_t len = c.length(seqs[i], layer);
    const uint32_t want = q_len ? q_len[i] : 1;
    if (want > len)
      bad_arg("sequence " + std::to_string(seqs[i]) + " holds " + std::to_string(len) + " tokens in layer " +
              std::to_string(layer) + ", fewer than its " + std::to_string(want) +
              " queries (append the query tokens' keys and values first)");
    rows += want;
  }
  const size_t row = kvbits::capi::token_row_bytes(c, c.plan().shape.n_q_heads, kvbits::DType::f32);
  kvbits::capi::checked_mul(rows, std::max(row, kvbits::capi::token_row_bytes(c, c.plan().shape.n_q_heads, t)),
                            "query rows * n_q_heads * head_dim");
  return rows;
}

}  // namespace

extern "C" {

void kvb_attention_params_default(kvb_attention_params* params) {
  if (!params) return;
  std::memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
}

kvb_status kvb_attention_decode(kvb_cache* cache, uint32_t layer, const uint64_t* seqs, size_t n_seqs,
                                const void* q, kvb_dtype q_dtype, float* out, float* lse,
                                const kvb_attention_params* params, void* stream, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!seqs) null_arg("seqs");
    if (!q) null_arg("q");
    if (!out) null_arg("out");
    kvbits::AttentionParams ap = to_params(params);
    ap.stream = stream;
    const kvbits::DType t = kvbits::capi::to_dtype(q_dtype, "q_dtype");
    check_queries(*cache->cache, layer, seqs, nullptr, n_seqs, t);
    kvbits::attention_decode(*cache->cache, layer, seqs, n_seqs, q, t, out, lse, ap);
  });
}

kvb_status kvb_attention_extend(kvb_cache* cache, uint32_t layer, const uint64_t* seqs, const uint32_t* q_len,
                                size_t n_seqs, const void* q, kvb_dtype q_dtype, float* out, float* lse,
                                const kvb_attention_params* params, void* stream, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!seqs) null_arg("seqs");
    if (!q_len) null_arg("q_len");
    if (!q) null_arg("q");
    if (!out) null_arg("out");
    kvbits::AttentionParams ap = to_params(params);
    ap.stream = stream;
    const kvbits::DType t = kvbits::capi::to_dtype(q_dtype, "q_dtype");
    check_queries(*cache->cache, layer, seqs, q_len, n_seqs, t);
    // Entries without queries own no rows of q, out or lse; the core refuses them, so drop them.
    std::vector<uint64_t> busy_seqs;
    std::vector<uint32_t> busy_len;
    for (size_t i = 0; i < n_seqs; ++i)
      if (q_len[i] > 0) busy_seqs.push_back(seqs[i]), busy_len.push_back(q_len[i]);
    if (busy_seqs.empty()) return;
    kvbits::attention_extend(*cache->cache, layer, busy_seqs.data(), busy_len.data(), busy_seqs.size(), q, t, out,
                             lse, ap);
  });
}

}  // extern "C"
