// Cache::append: validate everything, plan the pages, encode into a staging area, and only
// then change the cache (all-or-nothing).
//
// Where token t of a layer goes (S sink tokens, W window tokens, see cache.hpp):
//   t < S                fp16 sink row t
//   S <= t < qend        packed page row
//   qend <= t < len      fp16 ring row (t - S) % W
// After the append qend = max(old qend, S, len - W): the oldest ring tokens, and new tokens
// that would not fit the ring, are packed. With a window (W > 0) every non-sink token is
// encoded from its fp16 value, whether it passed through the ring or not, so the packed bytes
// do not depend on how the tokens were split into append calls.
#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

#include "cache_impl.hpp"
#include "input_rows.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

using cache_detail::Sequence;
using cache_detail::SeqLayer;
using cache_detail::ValueProblem;

constexpr uint64_t kMaxSequenceTokens = 0xFFFFFFFFull;  // positions are uint32
constexpr uint32_t kMaxDim = 1024;                      // as ModelShape

[[noreturn]] void bad(StatusCode code, const std::string& message) {
  fail(code, "cache: append: " + message + "; nothing was appended");
}

// What one sequence of the call will become.
struct SeqAppend {
  Sequence* seq = nullptr;
  uint64_t id = 0;
  size_t first_row = 0;  // row of its first token in k and v (a row = n_kv_heads * D values)
  uint32_t len0 = 0, qend0 = 0, len1 = 0, qend1 = 0;
  uint32_t qstart = 0;       // tokens [qstart, qend1) get packed by this call
  size_t first_packed = 0;   // index of its first packed token in the call's list
  std::unique_ptr<uint16_t[]> new_block;  // the fp16 block, when the layer has none yet
  uint32_t n_packed() const { return qend1 > qstart ? qend1 - qstart : 0; }
};

// One token packed by this call.
struct PackedToken {
  uint32_t entry;  // index into the call's SeqAppend list
  uint32_t t;      // position in the sequence
};

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
                         const void* k, const void* v, DType dtype) {
  // ---- 1. the call's structure ----
  check_layer(layer, "append");
  if (seq_ids == nullptr) fail(StatusCode::null_pointer, "cache: append: seqs is null");
  if (n_tokens == nullptr) fail(StatusCode::null_pointer, "cache: append: n_tokens is null");
  if (k == nullptr) fail(StatusCode::null_pointer, "cache: append: k is null");
  if (v == nullptr) fail(StatusCode::null_pointer, "cache: append: v is null");
  if (n_seqs == 0) bad(StatusCode::invalid_argument, "no sequences given (n_seqs = 0)");
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    bad(StatusCode::invalid_argument, "unknown dtype " + std::to_string(int(dtype)));

  const bool layer_fp16 = fp16_layer(layer);
  const size_t row_elems = size_t(n_heads) * head_dim;
  {
    std::vector<std::pair<uint64_t, size_t>> sorted(n_seqs);
    for (size_t i = 0; i < n_seqs; ++i) sorted[i] = {seq_ids[i], i};
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < n_seqs; ++i)
      if (sorted[i].first == sorted[i - 1].first)
        bad(StatusCode::invalid_argument, "sequence " + std::to_string(sorted[i].first) + " appears twice (entries " +
                                              std::to_string(sorted[i - 1].second) + " and " +
                                              std::to_string(sorted[i].second) + ")");
  }
  std::vector<SeqAppend> plan(n_seqs);
  size_t rows = 0, n_packed = 0;
  for (size_t i = 0; i < n_seqs; ++i) {
    SeqAppend& p = plan[i];
    p.id = seq_ids[i];
    p.seq = seqs.find(p.id);
    if (p.seq == nullptr)
      bad(StatusCode::not_found, "no sequence with id " + std::to_string(p.id) + " (entry " + std::to_string(i) + ")");
    if (n_tokens[i] == 0)
      bad(StatusCode::invalid_argument,
          "n_tokens[" + std::to_string(i) + "] is 0 (sequence " + std::to_string(p.id) + ")");
    const SeqLayer& sl = p.seq->layers[layer];
    if (uint64_t(sl.len) + n_tokens[i] > kMaxSequenceTokens)
      bad(StatusCode::invalid_argument, "sequence " + std::to_string(p.id) + " would exceed 2^32 - 1 tokens");
    p.first_row = rows;
    rows += n_tokens[i];
    p.len0 = sl.len;
    p.qend0 = sl.qend;
    p.len1 = sl.len + n_tokens[i];
    const uint32_t oldest_in_window = p.len1 > window ? p.len1 - window : 0;
    p.qend1 = p.len1 <= sink ? p.len1 : std::max({p.qend0, sink, oldest_in_window});
    p.qstart = std::max(p.qend0, sink);
    p.first_packed = n_packed;
    n_packed += p.n_packed();
  }
  std::vector<uint32_t> row_entry(rows);  // row -> index into plan
  for (size_t i = 0; i < n_seqs; ++i)
    std::fill_n(row_entry.begin() + std::ptrdiff_t(plan[i].first_row), n_tokens[i], uint32_t(i));
  auto row_token = [&](size_t r) { return plan[row_entry[r]].len0 + uint32_t(r - plan[row_entry[r]].first_row); };

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
  {
    uint64_t needed = 0;
    std::unordered_map<uint32_t, uint32_t> released;  // shared pages given up by earlier entries
    for (SeqAppend& p : plan) {
      if (p.n_packed() == 0) continue;
      const std::vector<uint32_t>& pages = p.seq->pages;
      for (size_t idx = page_index(p.qstart); idx < pages_for(p.qend1); ++idx) {
        if (idx >= pages.size()) {
          ++needed;
        } else if (pool.refcount(pages[idx]) - released[pages[idx]] > 1) {
          ++needed;  // copy on write
          ++released[pages[idx]];
        }
      }
    }
    if (needed > pool.free_pages())
      bad(StatusCode::capacity_exhausted, "layer " + std::to_string(layer) + " needs " + std::to_string(needed) +
                                              " new pages, " + std::to_string(pool.free_pages()) + " free (pool of " +
                                              std::to_string(pool.max_pages()) + " pages)");
  }

  // ---- 4. memory this call needs (page tables, fp16 blocks, staging) ----
  Staging st;
  try {
    for (SeqAppend& p : plan) {
      p.seq->pages.reserve(std::max(p.seq->pages.size(), pages_for(p.qend1)));
      if (sink + window > 0 && !p.seq->layers[layer].fp16) p.new_block.reset(new uint16_t[fp16_block_elems()]());
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
  std::vector<PackedToken> packed(n_packed);
  for (size_t i = 0; i < n_seqs; ++i)
    for (uint32_t j = 0; j < plan[i].n_packed(); ++j) packed[plan[i].first_packed + j] = {uint32_t(i), plan[i].qstart + j};
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

  // ---- 6. commit: nothing below can fail ----
  for (SeqAppend& p : plan) {
    SeqLayer& sl = p.seq->layers[layer];
    if (p.new_block) sl.fp16 = std::move(p.new_block);
    if (p.n_packed() == 0) continue;
    std::vector<uint32_t>& pages = p.seq->pages;
    for (size_t idx = page_index(p.qstart); idx < pages_for(p.qend1); ++idx) {
      if (idx >= pages.size()) pages.push_back(pool.allocate());  // capacity reserved in step 4
      else if (pool.refcount(pages[idx]) > 1) copy_on_write(*p.seq, idx);
    }
  }
  // Page rows first: for fp16 layers they read ring rows that the ring writes below reuse.
  ctx.parallel_for(n_packed * n_heads, [&](size_t item) {
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
  });
  // Sink and ring rows of the new tokens.
  if (sink + window > 0)
    ctx.parallel_for(rows, [&](size_t r) {
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
    });
  for (SeqAppend& p : plan) {
    SeqLayer& sl = p.seq->layers[layer];
    sl.len = p.len1;
    sl.qend = p.qend1;
  }
}

}  // namespace kvbits
