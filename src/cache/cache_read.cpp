// Cache::read: tokens back as fp32, dequantized (TqQuantizer::decode) or exact from fp16.
#include <string>

#include "cache_device.hpp"
#include "cache_impl.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

void Cache::Impl::read(uint64_t id, uint32_t layer, uint32_t pos, uint32_t n, float* k, float* v) const {
  const cache_detail::Sequence& seq = seqs.get(id);
  check_layer(layer, "read");
  const cache_detail::SeqLayer& sl = seq.layers[layer];
  if (pos > sl.len || n > sl.len - pos)
    fail(StatusCode::invalid_argument, "cache: read: tokens [" + std::to_string(pos) + ", " +
                                           std::to_string(uint64_t(pos) + n) + ") of sequence " + std::to_string(id) +
                                           " layer " + std::to_string(layer) + " exceed its length " +
                                           std::to_string(sl.len));
  if (k == nullptr && v == nullptr) return;
  // Where the bytes are read from: the cache itself, or host copies of the device bytes.
  cache_detail::HostCopy copy;
  const uint16_t* block = sl.fp16.get();
  if (device) {
    device->download(seq, layer, pos, n, copy);
    block = copy.fp16.empty() ? nullptr : copy.fp16.data();
  }
  auto page_bytes = [&](uint32_t h, uint32_t page) -> const uint8_t* {
    const size_t r = slot(layer, h);
    if (!device) return pool.page(r, page);
    size_t offset = 0;  // HostCopy holds a page's heads back to back
    for (uint32_t i = 0; i < h; ++i) offset += layouts[slot(layer, i)].page_bytes;
    return copy.pages.at(page).data() + offset;
  };
  const bool layer_fp16 = fp16_layer(layer);
  ctx.parallel_for(size_t(n) * n_heads, [&](size_t item) {
    const uint32_t t = pos + uint32_t(item / n_heads), h = uint32_t(item % n_heads);
    for (int tensor = 0; tensor < 2; ++tensor) {
      const bool is_v = tensor == 1;
      float* out = is_v ? v : k;
      if (out == nullptr) continue;
      out += item * head_dim;
      const uint16_t* fp16_row = nullptr;
      if (t < sink) {
        fp16_row = block + sink_offset(is_v, h, t);
      } else if (t >= sl.qend) {
        fp16_row = block + ring_offset(is_v, h, t);
      } else {
        const size_t r = slot(layer, h);
        const PageLayout& l = layouts[r];
        // row_ptrs only computes addresses: the bytes are read, never written.
        const cache_detail::RowPtrs row = cache_detail::row_ptrs(
            l, const_cast<uint8_t*>(page_bytes(h, seq.pages[page_index(t)])), page_row(t));
        if (layer_fp16) {
          fp16_row = reinterpret_cast<const uint16_t*>(is_v ? row.v_codes : row.k_codes);
        } else {
          const HeadQuantizers& q = *quantizers[r];
          if (is_v) q.v.decode(row.v_codes, row.v_scales, out);
          else q.k.decode(row.k_codes, row.k_scales, out);
          continue;
        }
      }
      for (uint32_t d = 0; d < head_dim; ++d) out[d] = half_to_float(fp16_row[d]);
    }
  });
}

}  // namespace kvbits
