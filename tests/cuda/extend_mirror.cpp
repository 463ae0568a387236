#include "extend_mirror.hpp"

#include <cuda_runtime.h>

#include <algorithm>

#include "kvbits/status.hpp"
#include "kvbits/types.hpp"

namespace kvbits::test_ext {

ExtendMirror::ExtendMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs,
                           const std::vector<uint32_t>& q_len)
    : cache_(cache), layer_(layer), q_len_(q_len) {
  const Plan& plan = cache.plan();
  if (layer >= plan.shape.n_layers || q_len.size() != seqs.size())
    fail(StatusCode::invalid_argument, "ExtendMirror: bad layer or q_len count");
  const uint32_t H = plan.shape.n_kv_heads, P = cache.config().page_size, D = plan.shape.head_dim;
  const bool fp16_layer = plan.layers[layer].keep_fp16;
  std::vector<PageLayout> layouts;
  std::vector<const uint8_t*> pool_ptrs;
  std::vector<const HeadQuantizers*> quant;
  std::vector<const TqQuantizer*> kq;
  for (uint32_t h = 0; h < H; ++h) {
    const PageLayout& lay = cache.page_layout(layer, h);
    // A region is max_pages pages back to back (docs/cache-layout.md §10.1): copy all of it.
    pools_.emplace_back(cache.page_data(layer, h, 0), size_t(cache.config().max_pages) * lay.page_bytes);
    pool_ptrs.push_back(pools_.back().as<uint8_t>());
    layouts.push_back(lay);
    if (!fp16_layer) {
      quant.push_back(&cache.quantizers(layer, h));
      kq.push_back(&cache.quantizers(layer, h).k);
    }
  }
  if (fp16_layer) {
    for (uint32_t h = 0; h < H; ++h) {
      cuda::DecodeHead d;
      d.pool = pool_ptrs[h];
      d.page_bytes = layouts[h].page_bytes;
      d.k_scales = uint32_t(layouts[h].k_scales), d.v_codes = uint32_t(layouts[h].v_codes);
      d.v_scales = uint32_t(layouts[h].v_scales);
      d.k_code_bytes = layouts[h].k_code_bytes, d.v_code_bytes = layouts[h].v_code_bytes;
      fp16_heads_.push_back(d);
    }
    fp16_heads_dev_ = cuda::DeviceBlock(fp16_heads_.data(), fp16_heads_.size() * sizeof(cuda::DecodeHead));
  } else {
    tables_ = std::make_unique<cuda::DecodeTables>(quant, layouts, pool_ptrs);
    ext_tables_ = std::make_unique<cuda::ExtendQueryTables>(kq);
  }

  std::vector<uint32_t> table, offsets, qend;
  std::vector<const uint16_t*> blocks;
  const size_t block_halves = size_t(2) * H * (cache.sink_tokens() + cache.window_tokens()) * D;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqLayerView v = cache.view(seqs[i], layer);
    offsets.push_back(uint32_t(table.size()));
    if (v.qend > v.sink) table.insert(table.end(), v.pages, v.pages + (v.qend - v.sink + P - 1) / P);
    len_.push_back(v.len);
    qend.push_back(v.qend);
    if (v.fp16_base && block_halves) {
      fp16_.emplace_back(v.fp16_base, block_halves * 2);
      blocks.push_back(fp16_.back().as<uint16_t>());
    } else {
      blocks.push_back(nullptr);
    }
    q_off_.push_back(total_q_);
    total_q_ += q_len[i];
    max_q_len_ = std::max(max_q_len_, q_len[i]);
  }
  if (table.empty()) table.push_back(0);
  table_ = cuda::DeviceBlock(table.data(), table.size() * 4);
  table_offset_ = cuda::DeviceBlock(offsets.data(), offsets.size() * 4);
  seq_len_ = cuda::DeviceBlock(len_.data(), len_.size() * 4);
  seq_qend_ = cuda::DeviceBlock(qend.data(), qend.size() * 4);
  fp16_ptrs_ = cuda::DeviceBlock(blocks.data(), blocks.size() * sizeof(void*));
  d_q_len_ = cuda::DeviceBlock(q_len_.data(), q_len_.size() * 4);
  d_q_off_ = cuda::DeviceBlock(q_off_.data(), q_off_.size() * 4);
}

void ExtendMirror::set_queries(const void* q, DType dtype) {
  const ModelShape& sh = cache_.plan().shape;
  const size_t bytes = size_t(total_q_) * sh.n_q_heads * sh.head_dim * dtype_size(dtype);
  q_ = cuda::DeviceBlock(q, bytes);
  q_dtype_ = uint32_t(dtype);
}

cuda::ExtendParams ExtendMirror::params() const {
  cuda::ExtendParams e;
  cuda::DecodeParams& p = e.base;
  const Plan& plan = cache_.plan();
  p.n_seqs = uint32_t(len_.size());
  p.n_q_heads = plan.shape.n_q_heads;
  if (tables_) {
    tables_->fill(p);
    ext_tables_->fill(e);
  } else {
    p.heads = fp16_heads_dev_.as<cuda::DecodeHead>();
    p.heads_host = fp16_heads_.data();
    p.n_kv_heads = uint32_t(fp16_heads_.size());
    p.head_dim = plan.shape.head_dim;
  }
  p.page_size = cache_.config().page_size;
  p.sink_tokens = cache_.sink_tokens(), p.window_tokens = cache_.window_tokens();
  if (p.sink_tokens + p.window_tokens > 0) {
    p.seq_qend = seq_qend_.as<uint32_t>();
    p.fp16_blocks = fp16_ptrs_.as<const uint16_t*>();
  }
  p.fp16_layer = plan.layers[layer_].keep_fp16;
  p.page_table = table_.as<uint32_t>();
  p.table_offset = table_offset_.as<uint32_t>();
  p.seq_len = seq_len_.as<uint32_t>();
  p.max_len = 0;
  for (uint32_t l : len_) p.max_len = std::max(p.max_len, l);
  p.q = q_.get();
  p.q_dtype = q_dtype_;
  e.q_len = d_q_len_.as<uint32_t>();
  e.q_offset = d_q_off_.as<uint32_t>();
  e.total_q = total_q_;
  e.max_q_len = max_q_len_;
  return e;
}

}  // namespace kvbits::test_ext
