#include "attention/cache_sources.hpp"

#include <string>

#include "kvbits/status.hpp"

namespace kvbits::attn {
namespace {

[[noreturn]] void broken(const std::string& what) {
  fail(StatusCode::internal, "attention: inconsistent cache view: " + what);
}

}  // namespace

SeqLayerSources make_seq_layer_sources(const Cache& cache, uint32_t layer, uint64_t seq) {
  const SeqLayerView view = cache.view(seq, layer);
  const ModelShape& shape = cache.plan().shape;
  if (view.len > 0 && (view.head_dim != shape.head_dim || view.n_kv_heads != shape.n_kv_heads))
    broken("view of head dim " + std::to_string(view.head_dim) + " x " + std::to_string(view.n_kv_heads) +
           " heads for a plan of " + std::to_string(shape.head_dim) + " x " + std::to_string(shape.n_kv_heads));
  if (view.sink > view.sink_capacity) broken("more sink tokens than sink rows");
  const uint32_t page_size = cache.config().page_size;
  const size_t n_pages = view.qend > view.sink ? (size_t(view.qend - view.sink) + page_size - 1) / page_size : 0;
  if (n_pages > 0 && !view.pages) broken("packed tokens without a page table");

  SeqLayerSources out;
  out.page_tables.resize(shape.n_kv_heads);
  out.heads.resize(shape.n_kv_heads);
  const bool fp16_layer = cache.plan().layers[layer].keep_fp16;
  for (uint32_t h = 0; h < shape.n_kv_heads; ++h) {
    HeadSource& s = out.heads[h];
    s.dim = shape.head_dim;
    s.len = view.len, s.sink = view.sink, s.qend = view.qend;
    s.page_size = page_size;
    s.ring_rows = cache.window_tokens();
    if (view.sink > 0) s.sink_k = view.sink_k(h), s.sink_v = view.sink_v(h);
    if (view.len > view.qend) s.ring_k = view.window_k(h), s.ring_v = view.window_v(h);
    s.layout = cache.page_layout(layer, h);
    if (!fp16_layer) {
      const HeadQuantizers& hq = cache.quantizers(layer, h);
      s.k = &hq.k, s.v = &hq.v;
    }
    std::vector<const uint8_t*>& table = out.page_tables[h];
    table.resize(n_pages);
    for (size_t p = 0; p < n_pages; ++p) table[p] = cache.page_data(layer, h, view.pages[p]);
    s.pages = table.data();
    check_head_source(s);
  }
  return out;
}

}  // namespace kvbits::attn
