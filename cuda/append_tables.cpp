#include "cuda/append_tables.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits::cuda {
namespace {

using cache_detail::AppendPlan;
using cache_detail::PageStep;
using cache_detail::SeqAppend;

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

}  // namespace

void AppendTables::place(const uint8_t* base) {
  for (size_t r = 0; r < heads.size(); ++r) {
    AppendHead& a = heads[r];
    if (a.fp16) continue;
    a.slot_dim = reinterpret_cast<const uint32_t*>(base + o_slot) + at[r].slot;
    a.rot = reinterpret_cast<const float*>(base + o_rot) + at[r].rot;
    a.cent = reinterpret_cast<const float*>(base + o_cent) + at[r].cb;
    a.bnd = reinterpret_cast<const float*>(base + o_bnd) + at[r].cb;
  }
}

AppendTables build_append_tables(const Cache::Impl& m, uint8_t* pool_base) {
  const uint32_t L = m.n_layers, H = m.n_heads;
  AppendTables t;
  std::vector<uint32_t> slot_dims;
  std::vector<float> rots, cents, bnds;
  t.at.assign(size_t(L) * H, AppendTables::At{});
  t.heads.assign(size_t(L) * H, AppendHead{});
  t.max_cb.assign(L, 0);
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t h = 0; h < H; ++h) {
      const size_t r = m.slot(l, h);
      const PageLayout& lay = m.layouts[r];
      AppendHead& a = t.heads[r];
      a.fp16 = lay.fp16;
      a.pool = pool_base + m.pool.region_offset(r);
      a.page_bytes = lay.page_bytes;
      a.k_scales = uint32_t(lay.k_scales), a.v_codes = uint32_t(lay.v_codes), a.v_scales = uint32_t(lay.v_scales);
      a.k_code_bytes = lay.k_code_bytes, a.n_k_groups = lay.n_k_scales, a.v_code_bytes = lay.v_code_bytes;
      if (lay.fp16) continue;
      const HeadQuantizers& q = *m.quantizers[r];
      if (q.k.n_groups() > kAppendMaxGroups) fail(StatusCode::unsupported, "cache: a head with more than 8 K groups");
      t.at[r] = {slot_dims.size(), rots.size(), cents.size()};
      slot_dims.insert(slot_dims.end(), q.k.slot_dim().begin(), q.k.slot_dim().end());
      uint32_t cb = 0;
      auto add_group = [&](const TqQuantizer& tq, size_t g, AppendGroup& out) {
        const KeyGroup& kg = tq.groups()[g];
        const uint32_t d = kg.dims, d4 = (d + 3) / 4 * 4;
        out.bits = kg.bits, out.first = kg.first_slot, out.dims = d;
        out.byte_offset = uint32_t(tq.group_byte_offset(g));
        out.rot_offset = uint32_t(rots.size() - t.at[r].rot);
        const std::vector<float>& R = tq.rotation(g);
        const size_t base = rots.size();
        rots.resize(base + size_t(d4) * d, 0.0f);  // j-blocks of four, zero past d
        for (uint32_t row = 0; row < d; ++row)
          for (uint32_t j = 0; j < d; ++j) rots[base + (size_t(j / 4) * d + row) * 4 + j % 4] = R[size_t(row) * d + j];
        out.cb_offset = cb;
        const GroupCodebook& c = tq.codebook(g);
        cents.insert(cents.end(), c.centroids.begin(), c.centroids.end());
        bnds.insert(bnds.end(), c.boundaries.begin(), c.boundaries.end());
        bnds.push_back(0.0f);  // boundaries padded to 2^bits, like the centroids
        cb += 1u << kg.bits;
      };
      for (size_t g = 0; g < q.k.n_groups(); ++g) add_group(q.k, g, a.k[g]);
      add_group(q.v, 0, a.v);
      a.n_cb = cb;
      t.max_cb[l] = std::max(t.max_cb[l], cb);
    }
  t.o_slot = 0;
  t.o_rot = t.o_slot + align256(slot_dims.size() * 4);
  t.o_cent = t.o_rot + align256(rots.size() * 4);
  t.o_bnd = t.o_cent + align256(cents.size() * 4);
  t.data.assign(t.o_bnd + align256(bnds.size() * 4) + 256, 0);
  if (!slot_dims.empty()) std::memcpy(t.data.data() + t.o_slot, slot_dims.data(), slot_dims.size() * 4);
  if (!rots.empty()) std::memcpy(t.data.data() + t.o_rot, rots.data(), rots.size() * 4);
  if (!cents.empty()) std::memcpy(t.data.data() + t.o_cent, cents.data(), cents.size() * 4);
  if (!bnds.empty()) std::memcpy(t.data.data() + t.o_bnd, bnds.data(), bnds.size() * 4);
  return t;
}

FinalPages::FinalPages(const AppendPlan& plan) : plan_(plan), first_(plan.entries.size() + 1, 0) {
  for (const PageStep& st : plan.page_steps) ++first_[st.entry + 1];
  for (size_t e = 0; e < plan.entries.size(); ++e) first_[e + 1] += first_[e];
}

uint32_t FinalPages::operator()(uint32_t e, size_t idx) const {
  const auto b = plan_.page_steps.begin() + std::ptrdiff_t(first_[e]);
  const auto end = plan_.page_steps.begin() + std::ptrdiff_t(first_[e + 1]);
  const auto it = std::lower_bound(b, end, idx, [](const PageStep& st, size_t i) { return st.index < i; });
  return it != end && it->index == idx ? it->page : plan_.entries[e].seq->pages[idx];
}

AppendCall describe_append(const Cache::Impl& m, const AppendPlan& plan) {
  const uint32_t H = m.n_heads, L = m.n_layers;
  AppendCall c;
  c.entries.resize(plan.entries.size());
  for (size_t e = 0; e < plan.entries.size(); ++e) {
    const SeqAppend& p = plan.entries[e];
    AppendEntry& d = c.entries[e];
    d.first_row = uint32_t(p.first_row);
    d.n_rows = p.len1 - p.len0;
    d.len0 = p.len0;
    d.qend1 = p.qend1;
    d.fp16 = p.new_block ? p.new_block.get() : p.seq->layers[plan.layer].fp16.get();
  }
  // The page of every packed token (looked up once per page: tokens of an entry ascend).
  c.tokens.resize(plan.packed.size());
  const FinalPages final_page(plan);
  uint32_t last_entry = ~0u, page = 0;
  size_t last_idx = 0;
  for (size_t i = 0; i < plan.packed.size(); ++i) {
    const cache_detail::PackedToken& pt = plan.packed[i];
    if (plan.pages_fit) {
      const size_t idx = m.page_index(pt.t);
      if (pt.entry != last_entry || idx != last_idx) page = final_page(pt.entry, idx);
      last_entry = pt.entry, last_idx = idx;
    }
    const SeqAppend& e = plan.entries[pt.entry];
    const uint32_t src = pt.t < e.len0 ? AppendToken::kFromRing : uint32_t(e.first_row + (pt.t - e.len0));
    c.tokens[i] = {pt.entry, pt.t, page, m.page_row(pt.t), src};
  }
  if (plan.pages_fit)
    for (const PageStep& st : plan.page_steps) {
      if (!st.copy) continue;
      c.copies.push_back({st.old_page, st.page, uint32_t(c.copy_rows.size())});
      for (uint32_t l = 0; l < L; ++l) c.copy_rows.push_back(m.held_rows(*plan.entries[st.entry].seq, st.index, l));
    }
  for (uint32_t h = 0; h < H; ++h) {
    const PageLayout& l = m.layouts[m.slot(plan.layer, h)];
    c.code_stride = std::max(c.code_stride, l.k_code_bytes + l.v_code_bytes);
    c.scale_stride = std::max(c.scale_stride, plan.layer_fp16 ? 0u : l.n_k_scales + 1);
  }
  return c;
}

void throw_append_error(const Cache::Impl& m, const AppendPlan& plan, unsigned long long key) {
  const uint32_t H = m.n_heads, D = m.head_dim;
  if (key >= AppendError::kScaleBase) {
    const unsigned long long x = key - AppendError::kScaleBase;
    const bool k_group = (x & 1) != 0;
    const size_t item = size_t(x >> 1), token = item / H;
    if (token >= plan.packed.size()) fail(StatusCode::internal, "cache: append: corrupt error word from the device");
    const cache_detail::PackedToken& pt = plan.packed[token];
    cache_detail::append_error(StatusCode::invalid_argument,
                               std::string(k_group ? "a K group" : "the V") + " norm of sequence " +
                                   std::to_string(plan.entries[pt.entry].id) + ", token " + std::to_string(pt.t) +
                                   ", kv head " + std::to_string(item % H) + " is too large for an fp16 scale");
  }
  const uint32_t kind = uint32_t(key & 1);
  unsigned long long rest = key >> 1;
  const uint32_t dim = uint32_t(rest % D);
  rest /= D;
  const uint32_t tensor = uint32_t(rest % 2);
  rest /= 2;
  const uint32_t head = uint32_t(rest % H);
  const size_t row = size_t(rest / H);
  if (row >= plan.rows) fail(StatusCode::internal, "cache: append: corrupt error word from the device");
  const std::string where = std::string(tensor ? "V" : "K") + " value at sequence " +
                            std::to_string(plan.entries[plan.row_entry[row]].id) + ", token " +
                            std::to_string(plan.row_token(row)) + " (row " + std::to_string(row) +
                            " of the call), kv head " + std::to_string(head) + ", dim " + std::to_string(dim);
  if (kind == AppendError::non_finite) cache_detail::append_error(StatusCode::invalid_argument, "non-finite " + where);
  cache_detail::append_error(StatusCode::invalid_argument, where + " is outside the fp16 range (it is to be held in fp16)");
}

}  // namespace kvbits::cuda
