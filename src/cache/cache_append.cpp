// Cache::append on the CPU backend: plan (append_plan.hpp), validate the values, encode into
// a staging area, and only then change the cache (all-or-nothing). Caches on a CUDA context
// hand the plan to their device half instead (cuda/device_cache.cpp).
//
// With a window (W > 0) every non-sink token is encoded from its fp16 value, whether it passed
// through the ring or not, so the packed bytes do not depend on how the tokens were split into
// append calls.
#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "append_plan.hpp"
#include "cache_device.hpp"
#include "cache_impl.hpp"
#include "input_rows.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

using cache_detail::AppendPlan;
using cache_detail::PackedToken;
using cache_detail::SeqAppend;
using cache_detail::SeqLayer;
using cache_detail::ValueProblem;

constexpr uint32_t kMaxDim = 1024;                      // as ModelShape

[[noreturn]] void bad(StatusCode code, const std::string& message) { cache_detail::append_error(code, message); }

// The first bad input value of a row, if any.
struct RowProblem {
  ValueProblem problem = ValueProblem::none;
  bool v = false;
  uint32_t head = 0, dim = 0;
};

// Staged encodings of the packed tokens: one slot per (packed token, head), sized for the
// widest head of the layer.
struct Staging {
  size_t code_stride = 0, scale_stride = 0;  // K codes then V codes; K scales then V scale
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
};

}  // namespace

void Cache::Impl::append(uint32_t layer, const uint64_t* seq_ids, const uint32_t* n_tokens, size_t n_seqs,
                         const void* k, const void* v, DType dtype, void* stream) {
  // ---- 1. the call's structure, positions and pages ----
  AppendPlan ap = cache_detail::plan_append(*this, layer, seq_ids, n_tokens, n_seqs, k, v, dtype);
  if (device) {
    device->append(ap, k, v, stream);
    return;
  }
  std::vector<SeqAppend>& plan = ap.entries;
  const bool layer_fp16 = ap.layer_fp16;
  const size_t row_elems = size_t(n_heads) * head_dim;
  const size_t rows = ap.rows, n_packed = ap.packed.size();
  const std::vector<uint32_t>& row_entry = ap.row_entry;
  auto row_token = [&](size_t r) { return ap.row_token(r); };

  // ---- 2. the values: finite, and within fp16 range wherever they will be held in fp16 ----
  const auto held_in_fp16 = [&](uint32_t t) { return t < sink || window > 0 || layer_fp16; };
  {
    std::vector<RowProblem> problems(rows);
    ctx.parallel_for(rows, [&](size_t r) {
      const bool to_fp16 = held_in_fp16(row_token(r));
      for (uint32_t h = 0; h < n_heads; ++h)
        for (int tensor = 0; tensor < 2; ++tensor) {
          RowProblem& rp = problems[r];
          rp.problem = cache_detail::check_row(tensor == 0 ? k : v, r * row_elems + size_t(h) * head_dim, head_dim,
                                               dtype, to_fp16, &rp.dim);
          if (rp.problem != ValueProblem::none) {
            rp.v = tensor == 1;
            rp.head = h;
            return;
          }
        }
    });
    for (size_t r = 0; r < rows; ++r) {
      const RowProblem& rp = problems[r];
      if (rp.problem == ValueProblem::none) continue;
      const std::string where = std::string(rp.v ? "V" : "K") + " value at sequence " +
                                std::to_string(plan[row_entry[r]].id) + ", token " + std::to_string(row_token(r)) +
                                " (row " + std::to_string(r) + " of the call), kv head " + std::to_string(rp.head) +
                                ", dim " + std::to_string(rp.dim);
      if (rp.problem == ValueProblem::non_finite) bad(StatusCode::invalid_argument, "non-finite " + where);
      bad(StatusCode::invalid_argument, where + " is outside the fp16 range (it is to be held in fp16)");
    }
  }

  // ---- 3. pages: new ones and copies of shared ones about to be written ----
  if (!ap.pages_fit) cache_detail::capacity_error(*this, ap);

  // ---- 4. memory this call needs (page tables, fp16 blocks, staging) ----
  Staging st;
  try {
    for (SeqAppend& p : plan) {
      p.seq->pages.reserve(std::max(p.seq->pages.size(), pages_for(p.qend1)));
      if (sink + window > 0 && !p.seq->layers[layer].fp16) p.new_block = cache_detail::host_fp16_block(fp16_block_elems());
    }
    if (!layer_fp16) {
      for (uint32_t h = 0; h < n_heads; ++h) {
        const PageLayout& l = layouts[slot(layer, h)];
        st.code_stride = std::max(st.code_stride, size_t(l.k_code_bytes) + l.v_code_bytes);
        st.scale_stride = std::max(st.scale_stride, size_t(l.n_k_scales) + 1);
      }
      st.codes.resize(n_packed * n_heads * st.code_stride);
      st.scales.resize(n_packed * n_heads * st.scale_stride);
    }
  } catch (const std::bad_alloc&) {
    bad(StatusCode::out_of_memory, "out of memory staging " + std::to_string(rows) + " tokens");
  }

  // The fp32 value of K or V of packed token t, head h, as it is to be encoded: from the ring
  // (t < len0, exact fp16), else from the input (rounded through fp16 when there is a window).
  const std::vector<PackedToken>& packed = ap.packed;
  auto packed_source = [&](const SeqAppend& p, uint32_t t, uint32_t h, bool is_v, float* x) {
    if (t < p.len0) {
      const uint16_t* ring = ring_row(p.seq->layers[layer], is_v, h, t);
      for (uint32_t d = 0; d < head_dim; ++d) x[d] = half_to_float(ring[d]);
      return;
    }
    const size_t first = (p.first_row + (t - p.len0)) * row_elems + size_t(h) * head_dim;
    cache_detail::load_row(is_v ? v : k, first, head_dim, dtype, x);
    if (window > 0)
      for (uint32_t d = 0; d < head_dim; ++d) x[d] = half_to_float(float_to_half(x[d]));
  };

  // ---- 5. encode (may still fail: a group norm too large for an fp16 scale) ----
  if (!layer_fp16 && n_packed > 0) {
    std::vector<uint8_t> overflow(n_packed * n_heads, 0);  // 1: K, 2: V
    ctx.parallel_for(n_packed * n_heads, [&](size_t item) {
      const PackedToken& pt = packed[item / n_heads];
      const uint32_t h = uint32_t(item % n_heads);
      const HeadQuantizers& q = *quantizers[slot(layer, h)];
      const PageLayout& l = layouts[slot(layer, h)];
      uint8_t* codes = st.codes.data() + item * st.code_stride;
      uint16_t* scales = st.scales.data() + item * st.scale_stride;
      float x[kMaxDim];
      packed_source(plan[pt.entry], pt.t, h, false, x);
      q.k.encode(x, codes, scales);
      packed_source(plan[pt.entry], pt.t, h, true, x);
      q.v.encode(x, codes + l.k_code_bytes, scales + l.n_k_scales);
      for (uint32_t g = 0; g <= l.n_k_scales; ++g)
        if ((scales[g] & 0x7C00u) == 0x7C00u) overflow[item] = g < l.n_k_scales ? 1 : 2;
    });
    for (size_t item = 0; item < overflow.size(); ++item)
      if (overflow[item] != 0) {
        const PackedToken& pt = packed[item / n_heads];
        bad(StatusCode::invalid_argument,
            std::string(overflow[item] == 1 ? "a K group" : "the V") + " norm of sequence " +
                std::to_string(plan[pt.entry].id) + ", token " + std::to_string(pt.t) + ", kv head " +
                std::to_string(item % n_heads) + " is too large for an fp16 scale");
      }
  }

  // ---- 6. commit: nothing below can fail (the row writers are built first: building a
  // std::function may allocate) ----
  // Page rows first: for fp16 layers they read ring rows that the ring writes below reuse.
  const std::function<void(size_t)> write_page_rows = [&](size_t item) {
    const PackedToken& pt = packed[item / n_heads];
    const SeqAppend& p = plan[pt.entry];
    const uint32_t h = uint32_t(item % n_heads);
    const PageLayout& l = layouts[slot(layer, h)];
    uint8_t* page = pool.page(slot(layer, h), p.seq->pages[page_index(pt.t)]);
    const cache_detail::RowPtrs row = cache_detail::row_ptrs(l, page, page_row(pt.t));
    if (!layer_fp16) {
      const uint8_t* codes = st.codes.data() + item * st.code_stride;
      const uint16_t* scales = st.scales.data() + item * st.scale_stride;
      std::memcpy(row.k_codes, codes, l.k_code_bytes);
      std::memcpy(row.v_codes, codes + l.k_code_bytes, l.v_code_bytes);
      std::memcpy(row.k_scales, scales, size_t(l.n_k_scales) * 2);
      *row.v_scales = scales[l.n_k_scales];
      return;
    }
    float x[kMaxDim];
    for (int tensor = 0; tensor < 2; ++tensor) {
      packed_source(p, pt.t, h, tensor == 1, x);
      uint16_t* out = reinterpret_cast<uint16_t*>(tensor == 0 ? row.k_codes : row.v_codes);
      for (uint32_t d = 0; d < head_dim; ++d) out[d] = float_to_half(x[d]);
    }
  };
  // Sink and ring rows of the new tokens.
  const std::function<void(size_t)> write_fp16_rows = [&](size_t r) {
    const SeqAppend& p = plan[row_entry[r]];
    const uint32_t t = row_token(r);
    if (t >= sink && t < p.qend1) return;  // packed above
    const SeqLayer& sl = p.seq->layers[layer];
    for (uint32_t h = 0; h < n_heads; ++h)
      for (int tensor = 0; tensor < 2; ++tensor) {
        const bool is_v = tensor == 1;
        uint16_t* out = t < sink ? sink_row(sl, is_v, h, t) : ring_row(sl, is_v, h, t);
        const size_t first = r * row_elems + size_t(h) * head_dim;
        for (uint32_t d = 0; d < head_dim; ++d)
          out[d] = float_to_half(cache_detail::load_value(is_v ? v : k, first + d, dtype));
      }
  };
  for (SeqAppend& p : plan)
    if (p.new_block) p.seq->layers[layer].fp16 = std::move(p.new_block);
  // Page-table capacity was reserved in step 4, so the pushes cannot throw.
  cache_detail::commit_page_steps(*this, ap, [&](const cache_detail::PageStep& s) {
    copy_page_rows(*plan[s.entry].seq, s.index, s.old_page, s.page);
  });
  ctx.parallel_for(n_packed * n_heads, write_page_rows);
  if (sink + window > 0) ctx.parallel_for(rows, write_fp16_rows);
  for (SeqAppend& p : plan) {
    SeqLayer& sl = p.seq->layers[layer];
    sl.len = p.len1;
    sl.qend = p.qend1;
  }
}

}  // namespace kvbits
