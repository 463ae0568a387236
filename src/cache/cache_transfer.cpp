// Cache sequence export / import (docs/transfer.md): one sequence, every layer, as the page
// images, fp16 sink/window rows and lengths the cache holds, behind a checked header
// (seq_transfer_format.hpp). The bytes are copied, never re-encoded, so an import reads back and
// attends bit for bit as the exported sequence did, on either backend.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "cache_device.hpp"
#include "cache_impl.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "seq_transfer_format.hpp"
#include "transfer_list.hpp"

namespace kvbits {
namespace {

using cache_detail::Sequence;
using cache_detail::SeqLayer;
using cache_detail::TransferList;
using cache_detail::TransferSpan;
namespace transfer = cache_detail::transfer;

[[noreturn]] void import_error(StatusCode code, const std::string& what) {
  fail(code, "cache: import: " + what + "; nothing was imported");
}

std::string range_text(uint32_t begin, uint32_t end, uint32_t n) {
  return "KV heads [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + std::to_string(n);
}

// Where one layer's tokens sit, from its length and qend.
struct LayerGeometry {
  uint32_t len = 0, qend = 0;
  size_t pages = 0;                        // page-table entries holding packed tokens
  uint32_t sink_rows = 0, window_rows = 0;  // fp16 rows: sink [0, sink_rows), window [qend, len)
  uint64_t bytes = 0;                       // in the payload
};

LayerGeometry geometry(const Cache::Impl& m, uint32_t layer, uint32_t len, uint32_t qend) {
  LayerGeometry g;
  g.len = len, g.qend = qend;
  g.pages = m.pages_for(qend);
  g.sink_rows = std::min(len, m.sink);
  g.window_rows = len - qend;
  for (uint32_t h = 0; h < m.n_heads; ++h) g.bytes += uint64_t(g.pages) * m.layouts[m.slot(layer, h)].page_bytes;
  g.bytes += uint64_t(4) * m.n_heads * (uint64_t(g.sink_rows) + g.window_rows) * m.head_dim;
  return g;
}

// The copies of `seq` (its page table, fp16 blocks) for layers of geometry `geo`.
TransferList transfer_list(const Cache::Impl& m, const Sequence& seq, const std::vector<LayerGeometry>& geo) {
  TransferList list;
  uint64_t at = 0;
  const size_t row = size_t(m.head_dim) * 2;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    const LayerGeometry& g = geo[l];
    const uint32_t last_rows = g.pages ? uint32_t(g.qend - m.sink - (g.pages - 1) * m.page_size) : 0;
    for (uint32_t h = 0; h < m.n_heads; ++h) {
      const size_t r = m.slot(l, h);
      const PageLayout& lay = m.layouts[r];
      for (size_t i = 0; i < g.pages; ++i) {
        list.copy(at, m.pool.page(r, seq.pages[i]), lay.page_bytes);
        at += lay.page_bytes;
      }
      if (g.pages == 0 || last_rows == m.page_size) continue;
      // Rows [last_rows, page_size) of the last page, array by array.
      const uint64_t page_at = at - lay.page_bytes;
      uint8_t* page = m.pool.page(r, seq.pages[g.pages - 1]);
      const size_t free_rows = m.page_size - last_rows;
      const std::pair<size_t, size_t> arrays[4] = {{lay.k_codes, lay.k_code_bytes},
                                                   {lay.k_scales, size_t(lay.n_k_scales) * 2},
                                                   {lay.v_codes, lay.v_code_bytes},
                                                   {lay.v_scales, lay.fp16 ? 0 : 2}};
      for (const auto& [offset, row_bytes] : arrays) {
        if (row_bytes == 0) continue;
        const size_t first = offset + last_rows * row_bytes;
        list.zeros.push_back({page_at + first, page + first, free_rows * row_bytes});
      }
    }
    if (g.sink_rows + g.window_rows == 0) continue;
    const SeqLayer& sl = seq.layers[l];
    if (!sl.fp16) fail(StatusCode::internal, "cache: transfer: layer " + std::to_string(l) + " has no fp16 block");
    auto* block = reinterpret_cast<uint8_t*>(sl.fp16.get());
    for (int tensor = 0; tensor < 2; ++tensor)
      for (uint32_t h = 0; h < m.n_heads; ++h, at += g.sink_rows * row) {
        if (g.sink_rows) list.copy(at, block + m.sink_offset(tensor == 1, h, 0) * 2, g.sink_rows * row);
      }
    // Window rows in token order; the ring wraps at most once over [qend, len).
    for (int tensor = 0; tensor < 2; ++tensor)
      for (uint32_t h = 0; h < m.n_heads; ++h) {
        uint32_t t = g.qend;
        while (t < g.len) {
          const uint32_t ring_row = (t - m.sink) % m.window;
          const uint32_t run = std::min(g.len - t, m.window - ring_row);
          list.copy(at, block + m.ring_offset(tensor == 1, h, t) * 2, run * row);
          at += run * row;
          t += run;
        }
      }
  }
  list.payload_bytes = at;
  return list;
}

transfer::Header describe(const Cache& cache, const Sequence& seq, std::vector<LayerGeometry>& geo) {
  const Cache::Impl& m = cache.impl();
  transfer::Header h;
  h.plan_fingerprint = cache.plan_fingerprint();
  h.n_kv_heads = cache.full_plan().shape.n_kv_heads;
  h.head_begin = cache.kv_head_begin(), h.head_end = cache.kv_head_end();
  h.page_size = m.page_size, h.sink = m.sink, h.window = m.window;
  h.n_pages = seq.pages.size();
  geo.resize(m.n_layers);
  h.layers.resize(m.n_layers);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    geo[l] = geometry(m, l, seq.layers[l].len, seq.layers[l].qend);
    h.layers[l] = {geo[l].len, geo[l].qend, geo[l].bytes};
    h.payload_size += geo[l].bytes;
  }
  return h;
}

// The header's promises against this cache: the same plan, heads, page size and fp16 policy.
void check_compatible(const Cache& cache, const transfer::Header& h) {
  const Cache::Impl& m = cache.impl();
  const auto mismatch = [](const std::string& what) { import_error(StatusCode::shape_mismatch, what); };
  if (h.plan_fingerprint != cache.plan_fingerprint())
    mismatch("the export was made with another plan (plan fingerprint " + std::to_string(h.plan_fingerprint) +
             ", this cache's plan " + std::to_string(cache.plan_fingerprint()) + ")");
  const uint32_t n = cache.full_plan().shape.n_kv_heads;
  if (h.n_kv_heads != n || h.head_begin != cache.kv_head_begin() || h.head_end != cache.kv_head_end())
    mismatch("the export holds " + range_text(h.head_begin, h.head_end, h.n_kv_heads) + ", this cache " +
             range_text(cache.kv_head_begin(), cache.kv_head_end(), n));
  if (h.page_size != m.page_size)
    mismatch("page_size " + std::to_string(h.page_size) + " in the export, " + std::to_string(m.page_size) +
             " in this cache");
  if (h.sink != m.sink || h.window != m.window)
    mismatch("sink/window tokens " + std::to_string(h.sink) + "/" + std::to_string(h.window) + " in the export, " +
             std::to_string(m.sink) + "/" + std::to_string(m.window) + " in this cache");
  if (h.layers.size() != m.n_layers)
    mismatch(std::to_string(h.layers.size()) + " layers in the export, " + std::to_string(m.n_layers) +
             " in this cache");
}

// Lengths the cache could have produced, and payload sizes that follow from them.
std::vector<LayerGeometry> check_layers(const Cache::Impl& m, const transfer::Header& h) {
  std::vector<LayerGeometry> geo(m.n_layers);
  size_t most_pages = 0;
  uint64_t total = 0;
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    const transfer::LayerEntry& e = h.layers[l];
    const std::string at = "layer " + std::to_string(l) + ": ";
    const bool ok = e.len <= m.sink ? e.qend == e.len
                                    : e.qend >= m.sink && e.qend <= e.len && e.len - e.qend <= m.window;
    if (!ok)
      import_error(StatusCode::corrupt_data, at + "length " + std::to_string(e.len) + " with qend " +
                                                 std::to_string(e.qend) + " is impossible for sink/window " +
                                                 std::to_string(m.sink) + "/" + std::to_string(m.window));
    if (m.pages_for(e.qend) > m.pool.max_pages())
      import_error(StatusCode::capacity_exhausted,
                   at + std::to_string(e.len) + " tokens need " + std::to_string(m.pages_for(e.qend)) +
                       " pages; this cache's pool has " + std::to_string(m.pool.max_pages()));
    geo[l] = geometry(m, l, e.len, e.qend);
    if (geo[l].bytes != e.bytes)
      import_error(StatusCode::corrupt_data, at + "the header says " + std::to_string(e.bytes) +
                                                 " payload bytes, its lengths make " + std::to_string(geo[l].bytes));
    most_pages = std::max(most_pages, geo[l].pages);
    if (__builtin_add_overflow(total, geo[l].bytes, &total))
      import_error(StatusCode::corrupt_data, "payload sizes overflow 64 bits");
  }
  if (h.n_pages != most_pages)
    import_error(StatusCode::corrupt_data, "n_pages " + std::to_string(h.n_pages) + ", the lengths need " +
                                               std::to_string(most_pages));
  if (total != h.payload_size)
    import_error(StatusCode::corrupt_data, "payload_size " + std::to_string(h.payload_size) +
                                               ", the layers add up to " + std::to_string(total));
  return geo;
}

}  // namespace

uint64_t Cache::plan_fingerprint() const {
  std::call_once(impl_->fingerprint_once, [&] {
    const std::vector<uint8_t> bytes = serialize_plan(*full_plan_);
    impl_->fingerprint = transfer::fnv1a64(bytes.data(), bytes.size());
  });
  return impl_->fingerprint;
}

size_t Cache::export_size(uint64_t seq) const {
  std::vector<LayerGeometry> geo;
  const transfer::Header h = describe(*this, impl_->seqs.get(seq), geo);
  return h.header_size() + size_t(h.payload_size);
}

size_t Cache::export_sequence(uint64_t seq, void* buf, size_t capacity, void* stream) const {
  const Impl& m = *impl_;
  const Sequence& s = m.seqs.get(seq);
  if (buf == nullptr) fail(StatusCode::null_pointer, "cache: export: buf is null");
  try {
    std::vector<LayerGeometry> geo;
    transfer::Header h = describe(*this, s, geo);
    const size_t hs = h.header_size(), total = hs + size_t(h.payload_size);
    if (capacity < total)
      fail(StatusCode::invalid_argument, "cache: export: capacity " + std::to_string(capacity) + " bytes, sequence " +
                                             std::to_string(seq) + " needs " + std::to_string(total));
    const TransferList list = transfer_list(m, s, geo);
    uint8_t* payload = static_cast<uint8_t*>(buf) + hs;
    if (m.device) {
      h.payload_checksum = m.device->export_payload(list, payload, stream);
      const std::vector<uint8_t> head = transfer::encode_header(h);
      m.device->write_buffer(buf, head.data(), hs, stream);
      return total;
    }
    m.ctx.parallel_for(list.copies.size(), [&](size_t i) {
      const TransferSpan& c = list.copies[i];
      std::memcpy(payload + c.buf, c.cache, c.bytes);
    });
    for (const TransferSpan& z : list.zeros) std::memset(payload + z.buf, 0, z.bytes);
    h.payload_checksum = transfer::payload_checksum(payload, size_t(h.payload_size), m.ctx);
    const std::vector<uint8_t> head = transfer::encode_header(h);
    std::memcpy(buf, head.data(), hs);
    return total;
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: export: out of memory");
  }
}

uint64_t Cache::import_sequence(const void* buf, size_t size, void* stream) {
  Impl& m = *impl_;
  if (buf == nullptr) fail(StatusCode::null_pointer, "cache: import: buf is null");
  const auto* bytes = static_cast<const uint8_t*>(buf);
  auto read = [&](void* host, size_t n) {
    if (m.device) m.device->read_buffer(host, bytes, n, stream);
    else std::memcpy(host, bytes, n);
  };
  try {
    // ---- 1. the header, and what it promises against this cache ----
    uint8_t first[16] = {};
    read(first, std::min<size_t>(size, 16));
    const size_t hs = transfer::read_header_size(first, size);
    std::vector<uint8_t> head(hs);
    read(head.data(), hs);
    const transfer::Header h = transfer::decode_header(head.data(), hs, size);
    check_compatible(*this, h);
    const std::vector<LayerGeometry> geo = check_layers(m, h);
    const uint8_t* payload = bytes + hs;
    const uint64_t sum = m.device ? m.device->buffer_checksum(payload, size_t(h.payload_size), stream)
                                  : transfer::payload_checksum(payload, size_t(h.payload_size), m.ctx);
    if (sum != h.payload_checksum) import_error(StatusCode::corrupt_data, "payload checksum mismatch");

    // ---- 2. room: a sequence slot and the pages ----
    m.seqs.require_room();
    if (h.n_pages > m.pool.free_pages())
      import_error(StatusCode::capacity_exhausted, "the sequence needs " + std::to_string(h.n_pages) + " pages, " +
                                                       std::to_string(m.pool.free_pages()) + " free (pool of " +
                                                       std::to_string(m.pool.max_pages()) + " pages)");

    // ---- 3. the new sequence: lengths and fp16 blocks (allocations that may fail) ----
    auto seq = std::make_unique<Sequence>();
    seq->layers.resize(m.n_layers);
    seq->pages.reserve(size_t(h.n_pages));
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      SeqLayer& sl = seq->layers[l];
      sl.len = geo[l].len, sl.qend = geo[l].qend;
      // As append: every non-empty layer of a cache with fp16 tokens has its block.
      if (sl.len > 0 && m.sink + m.window > 0)
        sl.fp16 = m.device ? m.device->new_fp16_block() : cache_detail::host_fp16_block(m.fp16_block_elems());
    }

    // ---- 4. pages, copies, the device mirror, the id (undone on failure) ----
    std::vector<uint32_t> taken;  // kept here: insert() consumes seq even when it throws
    taken.reserve(size_t(h.n_pages));
    for (uint64_t i = 0; i < h.n_pages; ++i) taken.push_back(m.pool.allocate());
    seq->pages.assign(taken.begin(), taken.end());  // capacity reserved above: no allocation
    try {
      const TransferList list = transfer_list(m, *seq, geo);
      if (m.device) {
        m.device->import_payload(list, payload, stream);
        m.device->mirror_sequence(m.seqs.next_id(), *seq);
      } else {
        m.ctx.parallel_for(list.copies.size(), [&](size_t i) {
          const TransferSpan& c = list.copies[i];
          std::memcpy(c.cache, payload + c.buf, c.bytes);
        });
        for (const TransferSpan& z : list.zeros) std::memset(z.cache, 0, z.bytes);
      }
      return m.seqs.insert(std::move(seq));
    } catch (...) {
      for (uint32_t page : taken) m.pool.release(page);
      if (m.device) m.device->removed(UINT64_MAX, taken);  // written pages go back zeroed
      throw;
    }
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: import: out of memory; nothing was imported");
  }
}

}  // namespace kvbits
