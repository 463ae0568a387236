// Public entry points of the CPU attention backend: validate, cut the batch into work items
// of (sequence, KV head, block of query positions), run them on the context's workers, then
// publish the results. Each query's arithmetic depends only on its own inputs and on token
// positions, never on the item it lands in or on the thread that runs it.
#include "kvbits/attention.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "attention/attend_head.hpp"
#include "attention/query_input.hpp"
#include "attention/request.hpp"
#include "cache/cache_device.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

using attn::Request;

// About this many queries per work item: enough to share each decoded tile, small enough
// to spread a long extend chunk over the workers.
constexpr uint32_t kQueriesPerItem = 64;

struct WorkItem {
  uint32_t seq = 0;      // index into the batch
  uint32_t kv_head = 0;
  uint32_t pos_begin = 0, pos_end = 0;  // query positions, relative to the sequence's first query
};

std::vector<WorkItem> plan_items(const Request& req, uint32_t n_kv_heads, uint32_t group) {
  const uint32_t per_item = std::max<uint32_t>(1, kQueriesPerItem / group);
  std::vector<WorkItem> items;
  for (uint32_t s = 0; s < req.seqs.size(); ++s)
    for (uint32_t h = 0; h < n_kv_heads; ++h)
      for (uint32_t p = 0; p < req.seqs[s].q_len; p += per_item)
        items.push_back({s, h, p, std::min(req.seqs[s].q_len, p + per_item)});
  return items;
}

void run_item(const Request& req, const WorkItem& it, const ModelShape& shape, const void* q, DType q_dtype,
              float* out, float* lse) {
  const attn::SeqWork& sw = req.seqs[it.seq];
  const attn::HeadSource& src = sw.sources.heads[it.kv_head];
  const uint32_t D = shape.head_dim, G = shape.gqa_group(), Hq = shape.n_q_heads;
  const uint32_t n = (it.pos_end - it.pos_begin) * G;
  std::vector<float> qs(size_t(n) * D), q_rot(src.k ? size_t(n) * D : 0), o(size_t(n) * D), l(n);
  std::vector<uint32_t> visible(n);
  // Query i = (position j, head g of the group); the GQA group of KV head h is q heads h*G .. h*G+G-1.
  for (uint32_t j = it.pos_begin, i = 0; j < it.pos_end; ++j)
    for (uint32_t g = 0; g < G; ++g, ++i) {
      const size_t row = sw.first_row + j, head = size_t(it.kv_head) * G + g;
      attn::load_query(q, q_dtype, (row * Hq + head) * D, D, &qs[size_t(i) * D]);
      if (src.k) src.k->rotate_query(&qs[size_t(i) * D], &q_rot[size_t(i) * D]);
      visible[i] = sw.len - sw.q_len + j + 1;
    }
  attn::QueryBlock qb;
  qb.n = n, qb.dim = D, qb.q = qs.data(), qb.q_rot = src.k ? q_rot.data() : nullptr, qb.visible = visible.data();
  attn::AttendScratch ws;
  attn::attend_head(src, qb, req.scale, ws, o.data(), l.data());
  for (uint32_t j = it.pos_begin, i = 0; j < it.pos_end; ++j)
    for (uint32_t g = 0; g < G; ++g, ++i) {
      const size_t row = sw.first_row + j, head = size_t(it.kv_head) * G + g;
      std::memcpy(out + (row * Hq + head) * D, &o[size_t(i) * D], sizeof(float) * D);
      if (lse) lse[row * Hq + head] = l[i];
    }
}

// Results go to buffers owned by the call and are copied out only when every item has
// succeeded, so a failure (out of memory in a worker) leaves out and lse untouched.
void run(const Request& req, const Cache& cache, const void* q, DType q_dtype, float* out, float* lse) {
  if (req.total_rows == 0) return;
  const ModelShape& shape = cache.plan().shape;
  try {
    const std::vector<WorkItem> items = plan_items(req, shape.n_kv_heads, shape.gqa_group());
    std::vector<float> out_tmp(req.total_rows * shape.n_q_heads * shape.head_dim);
    std::vector<float> lse_tmp(lse ? req.total_rows * shape.n_q_heads : 0);
    cache.context().parallel_for(items.size(), [&](size_t k) {
      run_item(req, items[k], shape, q, q_dtype, out_tmp.data(), lse ? lse_tmp.data() : nullptr);
    });
    std::memcpy(out, out_tmp.data(), sizeof(float) * out_tmp.size());
    if (lse) std::memcpy(lse, lse_tmp.data(), sizeof(float) * lse_tmp.size());
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, std::string(req.op) + ": out of memory for " + std::to_string(req.total_rows) +
                                        " query rows");
  }
}

}  // namespace

void attention_decode(const Cache& cache, uint32_t layer, const uint64_t* seqs, size_t n_seqs, const void* q,
                      DType q_dtype, float* out, float* lse, const AttentionParams& params) {
  const Request req =
      attn::validate_request("attention_decode", true, cache, layer, seqs, nullptr, n_seqs, q, q_dtype, out, params);
  if (cache_detail::DeviceCache* device = cache.device_cache()) {
    if (n_seqs > 0) device->decode(layer, seqs, n_seqs, q, q_dtype, out, lse, req.scale, params.precision, params.stream);
    return;
  }
  run(req, cache, q, q_dtype, out, lse);
}

void attention_extend(const Cache& cache, uint32_t layer, const uint64_t* seqs, const uint32_t* q_len,
                      size_t n_seqs, const void* q, DType q_dtype, float* out, float* lse,
                      const AttentionParams& params) {
  const Request req =
      attn::validate_request("attention_extend", false, cache, layer, seqs, q_len, n_seqs, q, q_dtype, out, params);
  if (cache_detail::DeviceCache* device = cache.device_cache()) {
    if (params.precision == Precision::fp32)
      fail(StatusCode::unsupported, "attention_extend: the CUDA extend kernel multiplies fp16 operands; fp32 precision "
                                    "is available for decode only");
    if (n_seqs > 0) device->extend(layer, seqs, q_len, n_seqs, q, q_dtype, out, lse, req.scale, params.stream);
    return;
  }
  run(req, cache, q, q_dtype, out, lse);
}

}  // namespace kvbits
