// C API: head ranges and sequence export / import (docs/transfer.md).
#include "capi_handles.hpp"

using kvbits::capi::guarded;
using kvbits::capi::null_arg;

extern "C" {

kvb_status kvb_cache_kv_heads(const kvb_cache* cache, uint32_t* begin_out, uint32_t* end_out, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (begin_out) *begin_out = cache->cache->kv_head_begin();
    if (end_out) *end_out = cache->cache->kv_head_end();
  });
}

kvb_status kvb_cache_seq_export_size(const kvb_cache* cache, uint64_t seq, size_t* size_out, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!size_out) null_arg("size_out");
    *size_out = cache->cache->export_size(seq);
  });
}

kvb_status kvb_cache_seq_export(const kvb_cache* cache, uint64_t seq, void* buf, size_t capacity, size_t* size_out,
                                void* stream, kvb_error* err) {
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!buf) null_arg("buf");
    if (!size_out) null_arg("size_out");
    const size_t need = cache->cache->export_size(seq);
    *size_out = need;
    if (capacity < need)
      kvbits::capi::bad_arg("capacity " + std::to_string(capacity) + " bytes is too small: sequence " +
                            std::to_string(seq) + " needs " + std::to_string(need) + " (kvb_cache_seq_export_size)");
    *size_out = cache->cache->export_sequence(seq, buf, capacity, stream);
  });
}

kvb_status kvb_cache_seq_import(kvb_cache* cache, const void* buf, size_t size, uint64_t* id_out, void* stream,
                                kvb_error* err) {
  if (id_out) *id_out = KVB_SEQ_NONE;
  return guarded(cache ? &cache->ctx->errors : nullptr, err, [&] {
    if (!cache) null_arg("cache");
    if (!buf) null_arg("buf");
    if (!id_out) null_arg("id_out");
    *id_out = cache->cache->import_sequence(buf, size, stream);
  });
}

}  // extern "C"
