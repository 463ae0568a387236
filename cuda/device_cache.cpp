// The device half of a Cache on a CUDA context (device_cache.hpp).
//
// Synchronisation points (docs/cache-layout.md §11): append waits once for its value check
// (a 64-bit error word read back into pinned memory); read waits for its copies; compaction of
// the page-table arena waits for the stream. Decode, fork and remove only enqueue work.
#include "cuda/device_cache.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <utility>

#include "attention/query_input.hpp"
#include "cache/append_plan.hpp"
#include "cuda/append_tables.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/decode.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace cache_detail {

std::unique_ptr<DeviceCache> make_device_cache(Cache::Impl& impl, uint64_t pool_bytes) {
  return std::make_unique<cuda::CudaCache>(impl, pool_bytes);
}

}  // namespace cache_detail

namespace cuda {
namespace {

using cache_detail::AppendPlan;
using cache_detail::PageStep;
using cache_detail::SeqAppend;
using cache_detail::Sequence;

constexpr uint64_t kMaxArena = 0xFFFFFFFFull;  // offsets are uint32

// Pieces of one call's workspace, each on 256 bytes.
struct WsLayout {
  size_t total = 0;
  size_t add(size_t bytes) {
    const size_t at = total;
    total += (bytes + 255) / 256 * 256;
    return at;
  }
};

bool device_accessible(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

uint64_t pow2_capacity(uint64_t n) {
  uint64_t c = 16;
  while (c < n) c *= 2;
  return c;
}

void upload(void* dst, const void* src, size_t bytes, cudaStream_t s, const char* what) {
  if (bytes) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), what);
}

uint16_t* alloc_block(const CudaContext& ctx, size_t bytes, cudaStream_t s) {
  void* p = nullptr;
  const cudaError_t e = ctx.memory_pools() ? cudaMallocAsync(&p, bytes, s) : cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail(StatusCode::out_of_memory,
         "cache: an fp16 sink/window block of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e));
  }
  const cudaError_t z = cudaMemsetAsync(p, 0, bytes, s);
  if (z != cudaSuccess) {
    if (ctx.memory_pools()) cudaFreeAsync(p, s); else cudaFree(p);
    check_cuda(z, "cudaMemsetAsync(fp16 block)");
  }
  return static_cast<uint16_t*>(p);
}

}  // namespace

CudaCache::DeviceRestore::~DeviceRestore() {
  if (device >= 0) cudaSetDevice(device);
}

CudaCache::CudaCache(Cache::Impl& impl, uint64_t pool_bytes)
    : m_(impl),
      ctx_(static_cast<CudaContext&>(*impl.ctx.device_context())),
      n_layers_(impl.n_layers),
      n_heads_(impl.n_heads),
      head_dim_(impl.head_dim) {
  CudaContext::Call call(ctx_, nullptr);
  try {
    pool_ = DeviceBlock(size_t(pool_bytes));
  } catch (const Error& e) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    fail(StatusCode::out_of_memory, "cache: page pool of " + std::to_string(pool_bytes) +
                                        " bytes cannot be allocated on CUDA device " + std::to_string(ctx_.device()) +
                                        " (" + std::to_string(free_b) + " of " + std::to_string(total_b) +
                                        " bytes free): " + e.what());
  }
  check_cuda(cudaMemset(pool_.get(), 0, size_t(pool_bytes)), "cudaMemset(page pool)");
}

CudaCache::~CudaCache() {
  // Members are freed after this body with the context's device current; restore_ (the first
  // member) puts the caller's device back last.
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != ctx_.device()) {
    restore_.device = current;
    cudaSetDevice(ctx_.device());
  }
  cudaDeviceSynchronize();  // decodes still in flight read these blocks
  for (uint16_t* p : deferred_blocks_) cudaFree(p);
  cudaGetLastError();
}

void CudaCache::attach() {
  CudaContext::Call call(ctx_, nullptr);
  const uint32_t L = n_layers_, H = n_heads_, D = head_dim_;
  // ---- AppendHead per (layer, head) and its tables (cuda/append_tables.hpp) ----
  AppendTables t = build_append_tables(m_, pool_base());
  tables_ = DeviceBlock(t.data.data(), t.data.size());
  t.place(tables_.as<uint8_t>());
  heads_host_ = std::move(t.heads);
  max_cb_ = std::move(t.max_cb);
  heads_ = DeviceBlock(heads_host_.data(), heads_host_.size() * sizeof(AppendHead));
  const AppendStepState step_state;
  step_state_ = DeviceBlock(&step_state, sizeof step_state);
  step_inline_ = std::make_unique<AppendStepInline>();

  // ---- decode descriptors per layer ----
  decode_tables_.resize(L);
  extend_tables_.resize(L);
  fp16_heads_host_.resize(L);
  fp16_heads_.resize(L);
  for (uint32_t l = 0; l < L; ++l) {
    std::vector<PageLayout> layouts;
    std::vector<const uint8_t*> pools;
    std::vector<const HeadQuantizers*> quant;
    for (uint32_t h = 0; h < H; ++h) {
      const size_t r = m_.slot(l, h);
      layouts.push_back(m_.layouts[r]);
      pools.push_back(heads_host_[r].pool);
      quant.push_back(m_.quantizers[r].get());
    }
    if (!m_.fp16_layer(l)) {
      decode_tables_[l] = std::make_unique<DecodeTables>(quant, layouts, pools);
      std::vector<const TqQuantizer*> k_quant;
      for (const HeadQuantizers* hq : quant) k_quant.push_back(&hq->k);
      extend_tables_[l] = std::make_unique<ExtendQueryTables>(k_quant);
      continue;
    }
    // A 16-bit layer: rows of fp16 K at k_codes and fp16 V at v_codes, no groups or tables.
    std::vector<DecodeHead>& dh = fp16_heads_host_[l];
    dh.resize(H);
    for (uint32_t h = 0; h < H; ++h) {
      dh[h].pool = pools[h];
      dh[h].page_bytes = layouts[h].page_bytes;
      dh[h].k_scales = uint32_t(layouts[h].k_scales), dh[h].v_codes = uint32_t(layouts[h].v_codes);
      dh[h].v_scales = uint32_t(layouts[h].v_scales);
      dh[h].k_code_bytes = 2 * D, dh[h].v_code_bytes = 2 * D;
    }
    fp16_heads_[l] = DeviceBlock(dh.data(), dh.size() * sizeof(DecodeHead));
  }

  // ---- the mirror decode reads ----
  const uint64_t max_seqs = m_.seqs.capacity();
  state_ = DeviceBlock(size_t(max_seqs) * L * 16);
  offsets_ = DeviceBlock(size_t(max_seqs) * 4);
  arena_cap_ = std::min<uint64_t>(kMaxArena, std::max<uint64_t>(1024, 2 * m_.pool.max_pages() + 16 * max_seqs));
  arena_ = DeviceBlock(size_t(arena_cap_) * 4);
  check_cuda(cudaMemset(state_.get(), 0, state_.size()), "cudaMemset(sequence mirror)");
  check_cuda(cudaMemset(offsets_.get(), 0, offsets_.size()), "cudaMemset(sequence mirror)");
  check_cuda(cudaMemset(arena_.get(), 0, arena_.size()), "cudaMemset(page-table arena)");
  slots_.assign(size_t(max_seqs), TableSlot{});
  if (m_.head_range()) head_range_launch_ = std::make_unique<HeadRangeLaunch>(*m_.full_plan, m_.page_size);
  // The memsets ran on the legacy stream, which a non-blocking stream never waits for.
  check_cuda(cudaDeviceSynchronize(), "cache: cudaDeviceSynchronize");
}

cache_detail::Fp16Block CudaCache::new_fp16_block() {
  CudaContext::Call call(ctx_, nullptr);
  refuse_capture(call, "fork");
  return cache_detail::Fp16Block(alloc_block(ctx_, m_.fp16_block_elems() * 2, call.stream()),
                                 cache_detail::Fp16Free{&CudaCache::release_block, this});
}

void CudaCache::release_block(void* owner, uint16_t* p) {
  auto* self = static_cast<CudaCache*>(owner);
  try {
    CudaContext::Call call(self->ctx_, nullptr);
    if (call.capturing()) {
      self->deferred_blocks_.push_back(p);
      return;
    }
    if (self->ctx_.memory_pools()) cudaFreeAsync(p, call.stream());
    else cudaFree(p);
    cudaGetLastError();
  } catch (...) {
    // A destructor path: the block is lost rather than the program.
  }
}

void CudaCache::refuse_capture(const CudaContext::Call& call, const char* what) {
  if (call.capturing())
    fail(StatusCode::unsupported, std::string("cache: ") + what +
                                      " cannot run while a CUDA graph is being captured on the legacy stream or "
                                      "globally");
}

void CudaCache::flush_deferred(CudaContext::Call& call) {
  if (call.capturing()) return;
  for (uint16_t* p : deferred_blocks_) {
    if (ctx_.memory_pools()) cudaFreeAsync(p, call.stream());
    else cudaFree(p);
  }
  cudaGetLastError();
  deferred_blocks_.clear();
  if (deferred_pages_.empty()) return;
  uint8_t* w = call.workspace(deferred_pages_.size() * 4);
  upload(w, deferred_pages_.data(), deferred_pages_.size() * 4, call.stream(), "cudaMemcpyAsync(freed pages)");
  zero_pages(heads_.as<AppendHead>(), n_layers_ * n_heads_, reinterpret_cast<const uint32_t*>(w),
             uint32_t(deferred_pages_.size()), call.stream());
  deferred_pages_.clear();
}

void CudaCache::compact(CudaContext::Call& call, const std::vector<std::pair<uint64_t, uint64_t>>& want,
                        uint64_t extra) {
  call.sync();  // nothing in flight may read the arena while it is rewritten
  ++compactions_;
  std::vector<uint32_t> image;
  std::vector<uint32_t> offsets(slots_.size(), 0);
  std::vector<TableSlot> slots(slots_.size());
  std::vector<uint64_t> wanted(slots_.size(), 0);  // by id: a batch of new sequences all want room
  for (const auto& w : want) wanted[size_t(w.first)] = std::max(wanted[size_t(w.first)], w.second);
  for (uint64_t id : m_.seqs.ids()) {
    const Sequence& s = *m_.seqs.find(id);
    const uint64_t n = std::max<uint64_t>(s.pages.size(), wanted[size_t(id)]);
    if (n == 0) continue;
    const uint64_t cap = pow2_capacity(n);
    slots[size_t(id)] = {image.size(), cap};
    offsets[size_t(id)] = uint32_t(image.size());
    image.insert(image.end(), s.pages.begin(), s.pages.end());
    image.resize(size_t(image.size() + cap - s.pages.size()), 0);
    if (image.size() > kMaxArena) break;
  }
  const uint64_t need = image.size() + extra;
  if (need > kMaxArena)
    fail(StatusCode::capacity_exhausted, "cache: the device page-table arena would exceed 2^32 entries");
  if (need > arena_cap_) {
    // Growing moves the arena: decode graphs captured before keep reading the old one (kept
    // alive, but no longer updated); docs/gpu-decode.md says to re-capture.
    const uint64_t cap = std::min<uint64_t>(kMaxArena, std::max(2 * need, arena_cap_));
    DeviceBlock grown(size_t(cap) * 4);
    retired_arenas_.push_back(std::move(arena_));
    arena_ = std::move(grown);
    arena_cap_ = cap;
  }
  upload(arena_.get(), image.data(), image.size() * 4, call.stream(), "cudaMemcpyAsync(page-table arena)");
  upload(offsets_.get(), offsets.data(), offsets.size() * 4, call.stream(), "cudaMemcpyAsync(page-table offsets)");
  slots_ = std::move(slots);
  arena_used_ = image.size();
}

// Waits for the single launch's outcome flag in page-locked memory (append_step.cuh): no
// read-back copy and no stream synchronisation on the way. Every 1024 polls the stream is
// queried, so a failed launch is reported instead of waited for.
unsigned long long CudaCache::wait_step_outcome(CudaContext::Call& call) {
  const auto* ready = reinterpret_cast<const volatile uint32_t*>(call.pinned() + 8);
  const auto* word = reinterpret_cast<const volatile unsigned long long*>(call.pinned());
  for (uint64_t polls = 1; *ready != 1; ++polls) {
    if (polls % 1024 != 0) continue;
    const cudaError_t e = cudaStreamQuery(call.stream());
    if (e == cudaErrorNotReady) continue;
    check_cuda(e, "append: waiting for the single launch");
    if (*ready != 1) fail(StatusCode::internal, "append: the single launch finished without its outcome");
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  return *word;
}

void CudaCache::append(AppendPlan& plan, const void* k, const void* v, void* stream) {
  Cache::Impl& m = m_;
  const uint32_t L = n_layers_, H = n_heads_, D = head_dim_, layer = plan.layer;
  const size_t n_entries = plan.entries.size(), n_tok = plan.packed.size();
  CudaContext::Call call(ctx_, stream);
  if (call.capturing())
    cache_detail::append_error(StatusCode::unsupported,
                               "a CUDA append cannot be captured in a CUDA graph (it waits for its value check)");
  const cudaStream_t s = call.stream();
  for (const SeqAppend& p : plan.entries)
    if (p.id >= slots_.size()) fail(StatusCode::internal, "cache: append: sequence id past max_sequences");
  flush_deferred(call);  // pages freed during a capture are zero before any is taken again

  // Host memory the commit needs, reserved now so that the commit cannot fail; new fp16 blocks.
  for (SeqAppend& p : plan.entries) {
    p.seq->pages.reserve(std::max(p.seq->pages.size(), m.pages_for(p.qend1)));
    if (m.sink + m.window > 0 && !p.seq->layers[layer].fp16)
      p.new_block = cache_detail::Fp16Block(alloc_block(ctx_, m.fp16_block_elems() * 2, s),
                                            cache_detail::Fp16Free{&CudaCache::release_block, this});
  }

  // ---- descriptors (cuda/append_tables.hpp) and the page-table arena ----
  AppendCall d = describe_append(m, plan);
  struct TablePlan {
    uint64_t final_len = 0, offset = 0, capacity = 0;
    bool relocate = false;
  };
  std::vector<TablePlan> tables(n_entries);
  std::vector<WordWrite> words;
  if (plan.pages_fit) {
    uint64_t demand = 0;
    std::vector<std::pair<uint64_t, uint64_t>> want;
    for (size_t e = 0; e < n_entries; ++e) {
      const SeqAppend& p = plan.entries[e];
      TablePlan& t = tables[e];
      t.final_len = std::max<uint64_t>(p.seq->pages.size(), m.pages_for(p.qend1));
      t.relocate = t.final_len > slots_[size_t(p.id)].capacity;
      if (t.relocate) demand += pow2_capacity(t.final_len), want.push_back({p.id, t.final_len});
    }
    if (arena_used_ + demand > arena_cap_) {
      compact(call, want, 0);  // every sequence of the call then fits its range
      for (TablePlan& t : tables) t.relocate = false;
    }
    for (TablePlan& t : tables) {
      if (!t.relocate) continue;
      t.capacity = pow2_capacity(t.final_len);
      t.offset = arena_used_;
      arena_used_ += t.capacity;  // a range left over by a failed call is reclaimed by compaction
    }
    // The decode mirror after the call: lengths, fp16 block, page-table entries.
    uint32_t* arena = arena_.as<uint32_t>();
    const FinalPages final_page(plan);
    for (size_t e = 0; e < n_entries; ++e) {
      const SeqAppend& p = plan.entries[e];
      const TablePlan& t = tables[e];
      const uint64_t id = p.id;
      words.push_back({state_word(id, layer, 0), p.len1});
      words.push_back({state_word(id, layer, 1), p.qend1});
      if (m.sink + m.window > 0) {
        const uint64_t block = uint64_t(reinterpret_cast<uintptr_t>(d.entries[e].fp16));
        words.push_back({state_word(id, layer, 2), uint32_t(block)});
        words.push_back({state_word(id, layer, 3), uint32_t(block >> 32)});
      }
      if (t.relocate) {
        for (uint64_t idx = 0; idx < t.final_len; ++idx)
          words.push_back({arena + t.offset + idx, final_page(uint32_t(e), size_t(idx))});
        words.push_back({offsets_.as<uint32_t>() + id, uint32_t(t.offset)});
      } else {
        for (size_t i = final_page.begin(uint32_t(e)); i < final_page.end(uint32_t(e)); ++i) {
          const PageStep& st = plan.page_steps[i];
          words.push_back({arena + slots_[size_t(id)].offset + st.index, st.page});
        }
      }
    }
  }
  const std::vector<AppendEntry>& entries = d.entries;
  const std::vector<AppendToken>& tokens = d.tokens;
  const std::vector<AppendCopy>& copies = d.copies;
  const std::vector<uint32_t>& copy_rows = d.copy_rows;

  // ---- workspace: error word, descriptors, staging, inputs ----
  const uint32_t code_stride = d.code_stride, scale_stride = d.scale_stride;
  const size_t in_bytes = plan.rows * H * D * dtype_size(plan.dtype);
  const bool k_dev = device_accessible(k), v_dev = device_accessible(v);
  WsLayout ws;
  const size_t o_err = ws.add(8), o_desc = ws.total;
  const size_t o_entries = ws.add(entries.size() * sizeof(AppendEntry));
  const size_t o_tokens = ws.add(tokens.size() * sizeof(AppendToken));
  const size_t o_copies = ws.add(copies.size() * sizeof(AppendCopy));
  const size_t o_rows = ws.add(copy_rows.size() * 4);
  const size_t o_words = ws.add(words.size() * sizeof(WordWrite));
  const size_t desc_end = ws.total;
  const size_t o_codes = ws.add(n_tok * H * code_stride);
  const size_t o_scales = ws.add(n_tok * H * scale_stride * 2);
  const size_t o_k = k_dev ? 0 : ws.add(in_bytes), o_v = v_dev ? 0 : ws.add(in_bytes);
  uint8_t* w = call.workspace(ws.total);
  if (!k_dev) upload(w + o_k, k, in_bytes, s, "append: cudaMemcpyAsync(k)");
  if (!v_dev) upload(w + o_v, v, in_bytes, s, "append: cudaMemcpyAsync(v)");

  AppendParams ap;
  ap.n_layers = L, ap.n_heads = H, ap.head_dim = D;
  ap.sink = m.sink, ap.window = m.window, ap.layer = layer;
  ap.fp16_layer = plan.layer_fp16;
  ap.dtype = uint32_t(plan.dtype);
  ap.k = k_dev ? k : w + o_k;
  ap.v = v_dev ? v : w + o_v;
  ap.rows = uint32_t(plan.rows);
  ap.n_entries = uint32_t(n_entries), ap.n_tokens = uint32_t(n_tok);
  ap.entries = reinterpret_cast<const AppendEntry*>(w + o_entries);
  ap.tokens = reinterpret_cast<const AppendToken*>(w + o_tokens);
  ap.heads = heads_.as<AppendHead>();
  ap.max_cb = max_cb_[layer];
  ap.stage_codes = w + o_codes;
  ap.stage_scales = reinterpret_cast<uint16_t*>(w + o_scales);
  ap.code_stride = code_stride, ap.scale_stride = scale_stride;
  ap.error = reinterpret_cast<unsigned long long*>(w + o_err);
  ap.force_exact = force_exact_;
  ap.copies = reinterpret_cast<const AppendCopy*>(w + o_copies);
  ap.n_copies = uint32_t(copies.size());
  ap.copy_rows = reinterpret_cast<const uint32_t*>(w + o_rows);
  ap.words = reinterpret_cast<const WordWrite*>(w + o_words);
  ap.n_words = uint32_t(words.size());

  // ---- check and encode (and, single-launch, commit), then the one wait of an append ----
  auto mark = [&](int i) {
    if (events_[i]) check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(events_[i]), s), "cudaEventRecord");
  };
  ap.step = step_state_.as<AppendStepState>();
  ap.commit = plan.pages_fit;
  const bool single = append_step_applies(ap);
  if (single) {
    ap.error = &ap.step->error;
    // The outcome lands in the context's page-locked buffer (device-accessible: unified
    // addressing); its flag is cleared before the launch that sets it.
    ap.outcome = reinterpret_cast<unsigned long long*>(call.pinned());
    ap.outcome_ready = reinterpret_cast<uint32_t*>(call.pinned() + 8);
    *reinterpret_cast<volatile uint32_t*>(ap.outcome_ready) = 0;
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // A single launch whose descriptors all fit its kernel parameter needs no upload.
  AppendStepInline& in = *step_inline_;
  const bool inline_all = single && n_tok <= in.kTokens && H <= in.kHeads && n_entries <= in.kEntries &&
                          words.size() <= in.kWords;
  if (inline_all) {
    std::copy(tokens.begin(), tokens.end(), in.tokens);
    std::copy_n(heads_host_.begin() + ptrdiff_t(layer) * H, H, in.heads);
    std::copy(entries.begin(), entries.end(), in.entries);
    std::copy(words.begin(), words.end(), in.words);
  } else {
    std::vector<uint8_t> blob(desc_end - o_desc, 0);
    auto put = [&](size_t at, const void* src, size_t bytes) {
      if (bytes) std::memcpy(blob.data() + (at - o_desc), src, bytes);
    };
    put(o_entries, entries.data(), entries.size() * sizeof(AppendEntry));
    put(o_tokens, tokens.data(), tokens.size() * sizeof(AppendToken));
    put(o_copies, copies.data(), copies.size() * sizeof(AppendCopy));
    put(o_rows, copy_rows.data(), copy_rows.size() * 4);
    put(o_words, words.data(), words.size() * sizeof(WordWrite));
    upload(w + o_desc, blob.data(), blob.size(), s, "append: cudaMemcpyAsync(descriptors)");
  }
  mark(0);
  if (single) {
    append_step(ap, inline_all ? &in : nullptr, s);
  } else {
    append_encode(ap, s);
  }
  mark(1);
  unsigned long long key = 0;
  if (single) {
    key = wait_step_outcome(call);
  } else {
    check_cuda(cudaMemcpyAsync(call.pinned(), ap.error, 8, cudaMemcpyDeviceToHost, s), "append: read back the error word");
    call.sync();
    std::memcpy(&key, call.pinned(), 8);
  }
  // The CPU backend's order: values, then capacity, then fp16 scales. An error left the device
  // cache as it was (the single launch zeroed the rows it had written).
  if (key != AppendError::kNone && key < AppendError::kScaleBase) throw_append_error(m, plan, key);
  if (!plan.pages_fit) cache_detail::capacity_error(m, plan);
  if (key != AppendError::kNone) throw_append_error(m, plan, key);

  // ---- commit: device, then the host bookkeeping (nothing below fails but the launch) ----
  mark(2);
  if (!single) append_commit(ap, s);
  mark(3);
  for (SeqAppend& p : plan.entries)
    if (p.new_block) p.seq->layers[layer].fp16 = std::move(p.new_block);
  cache_detail::commit_page_steps(m, plan, [](const PageStep&) {});  // copies ran on the device
  for (size_t e = 0; e < n_entries; ++e) {
    SeqAppend& p = plan.entries[e];
    cache_detail::SeqLayer& sl = p.seq->layers[layer];
    sl.len = p.len1;
    sl.qend = p.qend1;
    if (tables[e].relocate) slots_[size_t(p.id)] = {tables[e].offset, tables[e].capacity};
  }
}

void CudaCache::download(const Sequence& seq, uint32_t layer, uint32_t pos, uint32_t n,
                         cache_detail::HostCopy& out) const {
  CudaContext::Call call(ctx_, nullptr);
  refuse_capture(call, "read");
  const cache_detail::SeqLayer& sl = seq.layers[layer];
  const uint32_t end = pos + n;
  const bool needs_fp16 = sl.fp16 && (pos < m_.sink || end > sl.qend);
  // Copies to pageable memory return once done: every byte below is on the host afterwards.
  if (needs_fp16) {
    out.fp16.resize(m_.fp16_block_elems());
    check_cuda(cudaMemcpyAsync(out.fp16.data(), sl.fp16.get(), out.fp16.size() * 2, cudaMemcpyDeviceToHost,
                               call.stream()),
               "read: cudaMemcpyAsync(fp16 block)");
  }
  size_t column = 0;
  for (uint32_t h = 0; h < n_heads_; ++h) column += m_.layouts[m_.slot(layer, h)].page_bytes;
  const uint32_t first = std::max(pos, m_.sink), last = std::min(end, sl.qend);
  // The pages of [first, last), in runs of consecutive ids: one copy per (run, head).
  const size_t i_end = first < last ? m_.page_index(last - 1) + 1 : 0;
  std::vector<uint8_t> run;
  for (size_t i = first < last ? m_.page_index(first) : 0; i < i_end;) {
    size_t j = i + 1;
    while (j < i_end && seq.pages[j] == seq.pages[j - 1] + 1) ++j;
    for (size_t k = i; k < j; ++k) out.pages[seq.pages[k]].resize(column);
    size_t at = 0;
    for (uint32_t h = 0; h < n_heads_; ++h) {
      const size_t r = m_.slot(layer, h);
      const size_t pb = m_.layouts[r].page_bytes;
      run.resize((j - i) * pb);
      check_cuda(cudaMemcpyAsync(run.data(), m_.pool.page(r, seq.pages[i]), run.size(), cudaMemcpyDeviceToHost,
                                 call.stream()),
                 "read: cudaMemcpyAsync(pages)");
      call.sync();  // `run` is reused
      for (size_t k = i; k < j; ++k) std::memcpy(out.pages[seq.pages[k]].data() + at, run.data() + (k - i) * pb, pb);
      at += pb;
    }
    i = j;
  }
  call.sync();
}

void CudaCache::copy_fork_rows(uint16_t* to, const uint16_t* from, uint32_t sink_rows, uint32_t ring_first,
                               uint32_t ring_end) {
  CudaContext::Call call(ctx_, nullptr);
  refuse_capture(call, "fork");
  const size_t H = n_heads_, D = head_dim_, S = m_.sink, W = m_.window, row = D * 2;
  // Rows [first, first + count) of every head of one plane (heads `rows_per_head` rows apart).
  auto copy_plane = [&](size_t plane, size_t rows_per_head, size_t first, size_t count) {
    if (count == 0) return;
    const size_t off = plane + first * D;
    check_cuda(cudaMemcpy2DAsync(to + off, rows_per_head * row, from + off, rows_per_head * row, count * row, H,
                                 cudaMemcpyDeviceToDevice, call.stream()),
               "fork: cudaMemcpy2DAsync(fp16 rows)");
  };
  for (size_t tensor = 0; tensor < 2; ++tensor) copy_plane(tensor * H * S * D, S, 0, sink_rows);
  if (ring_end > ring_first) {
    const size_t start = (ring_first - S) % W, count = ring_end - ring_first;
    const size_t run1 = std::min(count, W - start), run2 = count - run1;
    for (size_t tensor = 0; tensor < 2; ++tensor) {
      const size_t plane = 2 * H * S * D + tensor * H * W * D;
      copy_plane(plane, W, start, run1);
      copy_plane(plane, W, 0, run2);
    }
  }
}

void CudaCache::mirror_sequence(uint64_t id, const Sequence& seq) {
  if (id >= slots_.size()) fail(StatusCode::internal, "cache: fork: sequence id past max_sequences");
  CudaContext::Call call(ctx_, nullptr);
  refuse_capture(call, "fork");
  flush_deferred(call);
  std::vector<WordWrite> words;
  for (uint32_t l = 0; l < n_layers_; ++l) {
    const cache_detail::SeqLayer& sl = seq.layers[l];
    const uint64_t block = uint64_t(reinterpret_cast<uintptr_t>(sl.fp16.get()));
    words.push_back({state_word(id, l, 0), sl.len});
    words.push_back({state_word(id, l, 1), sl.qend});
    words.push_back({state_word(id, l, 2), uint32_t(block)});
    words.push_back({state_word(id, l, 3), uint32_t(block >> 32)});
  }
  TableSlot slot;
  if (!seq.pages.empty()) {
    slot.capacity = pow2_capacity(seq.pages.size());
    if (arena_used_ + slot.capacity > arena_cap_) compact(call, {}, slot.capacity);
    slot.offset = arena_used_;
    arena_used_ += slot.capacity;
    for (size_t i = 0; i < seq.pages.size(); ++i) words.push_back({arena_.as<uint32_t>() + slot.offset + i, seq.pages[i]});
    words.push_back({offsets_.as<uint32_t>() + id, uint32_t(slot.offset)});
  }
  uint8_t* w = call.workspace(words.size() * sizeof(WordWrite));
  upload(w, words.data(), words.size() * sizeof(WordWrite), call.stream(), "fork: cudaMemcpyAsync(mirror)");
  write_words(reinterpret_cast<const WordWrite*>(w), uint32_t(words.size()), call.stream());
  slots_[size_t(id)] = slot;
}

void CudaCache::removed(uint64_t id, const std::vector<uint32_t>& freed_pages) {
  // Never throws past the host change it follows: the pages are zeroed now or by the next call.
  if (id < slots_.size()) slots_[size_t(id)] = TableSlot{};  // its range is reclaimed by compaction
  try {
    deferred_pages_.insert(deferred_pages_.end(), freed_pages.begin(), freed_pages.end());
    CudaContext::Call call(ctx_, nullptr);
    flush_deferred(call);
  } catch (const Error&) {
    // Left in deferred_pages_ for the next call (append flushes before it takes a page).
  }
}

void CudaCache::describe_layer(DecodeParams& p, const char* op, uint32_t layer, const uint64_t* seqs, size_t n_seqs,
                               float scale) const {
  const bool fp16_layer = m_.fp16_layer(layer);
  p.n_seqs = uint32_t(std::min<size_t>(n_seqs, 0xFFFFFFFFu));
  p.n_q_heads = m_.plan.shape.n_q_heads;
  if (fp16_layer) {
    p.heads = fp16_heads_[layer].as<DecodeHead>();
    p.heads_host = fp16_heads_host_[layer].data();
    p.n_kv_heads = n_heads_;
    p.head_dim = head_dim_;
  } else {
    decode_tables_[layer]->fill(p);
  }
  p.page_size = m_.page_size;
  p.sink_tokens = m_.sink, p.window_tokens = m_.window;
  p.fp16_layer = fp16_layer;
  p.scale = scale;
  p.sm_count = ctx_.properties().sm_count;
  for (size_t i = 0; i < n_seqs; ++i) {
    if (seqs[i] >= slots_.size()) fail(StatusCode::internal, std::string(op) + ": sequence id past max_sequences");
    p.max_len = std::max(p.max_len, m_.seqs.get(seqs[i]).layers[layer].len);
  }
}

void CudaCache::check_host_query(const char* op, const void* q, DType q_dtype, size_t q_rows) const {
  const size_t Hq = m_.plan.shape.n_q_heads, D = head_dim_;
  const size_t bad = attn::first_non_finite(q, q_dtype, q_rows * D);
  if (bad != q_rows * D)
    fail(StatusCode::invalid_argument, std::string(op) + ": query row " + std::to_string(bad / (Hq * D)) + ", head " +
                                           std::to_string(bad % (Hq * D) / D) + ", dim " + std::to_string(bad % D) +
                                           " is not finite");
}

SeqMirror CudaCache::seq_mirror() const {
  SeqMirror mirror;
  mirror.state = state_.as<uint32_t>();
  mirror.offsets = offsets_.as<uint32_t>();
  mirror.n_layers = n_layers_;
  return mirror;
}

void CudaCache::decode(uint32_t layer, const uint64_t* seqs, size_t n_seqs, const void* q, DType q_dtype, float* out,
                       float* lse, float scale, Precision precision, void* stream) {
  const ModelShape& sh = m_.plan.shape;
  const uint32_t Hq = sh.n_q_heads, D = head_dim_;
  const bool fp16_layer = m_.fp16_layer(layer);
  const bool fp16_tokens = m_.sink + m_.window > 0 || fp16_layer;
  const size_t q_rows = n_seqs * Hq;

  DecodeParams p;
  describe_layer(p, "attention_decode", layer, seqs, n_seqs, scale);
  p.fp32_products = precision == Precision::fp32;
  if (head_range_launch_) head_range_launch_->match_decode(p, layer);  // after fp32_products: it picks the kernel

  CudaContext::Call call(ctx_, stream);
  const bool q_dev = device_accessible(q), out_dev = device_accessible(out), lse_dev = lse && device_accessible(lse);
  if (!q_dev) check_host_query("attention_decode", q, q_dtype, q_rows);
  WsLayout ws;
  const size_t o_table = ws.add(n_seqs * 4), o_len = ws.add(n_seqs * 4), o_qend = ws.add(n_seqs * 4);
  const size_t o_blocks = ws.add(fp16_tokens ? n_seqs * 8 : 0);
  const size_t o_q = ws.add(q_dev ? 0 : q_rows * D * dtype_size(q_dtype));
  const size_t o_out = ws.add(out_dev ? 0 : q_rows * D * 4);
  const size_t o_lse = ws.add(lse && !lse_dev ? q_rows * 4 : 0);
  const size_t o_kernel = ws.add(decode_workspace_bytes(p));

  if (call.capturing() && (!q_dev || !out_dev || (lse && !lse_dev)))
    fail(StatusCode::unsupported, "attention_decode: q, out and lse must be device memory while the stream is "
                                  "captured into a CUDA graph (host tensors need a copy and a wait)");
  uint8_t* w = call.workspace(ws.total);
  const cudaStream_t s = call.stream();
  const void* q_device = q_dev ? q : w + o_q;
  if (!q_dev) upload(w + o_q, q, q_rows * D * dtype_size(q_dtype), s, "attention_decode: cudaMemcpyAsync(q)");

  const SeqMirror mirror = seq_mirror();
  auto* table_offset = reinterpret_cast<uint32_t*>(w + o_table);
  auto* seq_len = reinterpret_cast<uint32_t*>(w + o_len);
  auto* seq_qend = reinterpret_cast<uint32_t*>(w + o_qend);
  auto* blocks = fp16_tokens ? reinterpret_cast<const uint16_t**>(w + o_blocks) : nullptr;
  p.page_table = arena_.as<uint32_t>();
  p.table_offset = table_offset;
  p.seq_len = seq_len;
  if (fp16_tokens) {
    // The decode interface for fp16 tokens: lengths split at qend and the blocks.
    p.seq_qend = seq_qend;
    p.fp16_blocks = blocks;
  }
  // q as given: the decode launch rotates it per K group itself (fp32 sums; no separate
  // rotation launch, which cost ~15 us per call at batch 1 on an H100).
  p.q = q_device;
  p.q_dtype = uint32_t(q_dtype);
  p.out = out_dev ? out : reinterpret_cast<float*>(w + o_out);
  p.lse = lse ? (lse_dev ? lse : reinterpret_cast<float*>(w + o_lse)) : nullptr;
  p.workspace = w + o_kernel;
  // decode_attention checks its arguments before anything is enqueued: a refused call leaves
  // nothing behind. The gather only writes the workspace.
  gather_batch(mirror, layer, seqs, n_seqs, table_offset, seq_len, seq_qend, blocks, s);
  decode_attention(p, s);
  if (!out_dev)
    check_cuda(cudaMemcpyAsync(out, p.out, q_rows * D * 4, cudaMemcpyDeviceToHost, s), "attention_decode: copy out");
  if (lse && !lse_dev)
    check_cuda(cudaMemcpyAsync(lse, p.lse, q_rows * 4, cudaMemcpyDeviceToHost, s), "attention_decode: copy lse");
  if (!out_dev || (lse && !lse_dev)) call.sync();
}

void CudaCache::extend(uint32_t layer, const uint64_t* seqs, const uint32_t* q_len, size_t n_seqs, const void* q,
                       DType q_dtype, float* out, float* lse, float scale, void* stream) {
  const ModelShape& sh = m_.plan.shape;
  const uint32_t Hq = sh.n_q_heads, D = head_dim_;
  const bool fp16_layer = m_.fp16_layer(layer);
  const bool fp16_tokens = m_.sink + m_.window > 0 || fp16_layer;

  ExtendParams e;
  DecodeParams& p = e.base;
  describe_layer(p, "attention_extend", layer, seqs, n_seqs, scale);
  if (!fp16_layer) extend_tables_[layer]->fill(e);
  // Query counts and first rows, on the host; they travel with the call's descriptors.
  std::vector<uint32_t> counts(2 * n_seqs);
  uint64_t total = 0;
  for (size_t i = 0; i < n_seqs; ++i) {
    e.max_q_len = std::max(e.max_q_len, q_len[i]);
    counts[i] = q_len[i];
    counts[n_seqs + i] = uint32_t(total);
    total += q_len[i];
  }
  if (total > 0xFFFFFFFFull) fail(StatusCode::invalid_argument, "attention_extend: more than 2^32 - 1 query rows");
  e.total_q = uint32_t(total);
  const size_t q_rows = size_t(total) * Hq;
  if (total == 0) return;  // nothing to attend; out and lse have no rows
  if (head_range_launch_) head_range_launch_->match_extend(e);

  CudaContext::Call call(ctx_, stream);
  if (call.capturing())
    fail(StatusCode::unsupported, "attention_extend: cannot be captured into a CUDA graph (the per-sequence query "
                                  "counts are uploaded with the call); capture attention_decode instead");
  const bool q_dev = device_accessible(q), out_dev = device_accessible(out), lse_dev = lse && device_accessible(lse);
  if (!q_dev) check_host_query("attention_extend", q, q_dtype, q_rows);
  WsLayout ws;
  const size_t o_table = ws.add(n_seqs * 4), o_len = ws.add(n_seqs * 4), o_qend = ws.add(n_seqs * 4);
  const size_t o_blocks = ws.add(fp16_tokens ? n_seqs * 8 : 0);
  const size_t o_counts = ws.add(counts.size() * 4);
  const size_t o_q = ws.add(q_dev ? 0 : q_rows * D * dtype_size(q_dtype));
  const size_t o_out = ws.add(out_dev ? 0 : q_rows * D * 4);
  const size_t o_lse = ws.add(lse && !lse_dev ? q_rows * 4 : 0);
  const size_t o_kernel = ws.add(extend_workspace_bytes(e));
  uint8_t* w = call.workspace(ws.total);
  const cudaStream_t s = call.stream();
  const void* q_device = q_dev ? q : w + o_q;
  if (!q_dev) upload(w + o_q, q, q_rows * D * dtype_size(q_dtype), s, "attention_extend: cudaMemcpyAsync(q)");
  upload(w + o_counts, counts.data(), counts.size() * 4, s, "attention_extend: cudaMemcpyAsync(query counts)");

  const SeqMirror mirror = seq_mirror();
  auto* table_offset = reinterpret_cast<uint32_t*>(w + o_table);
  auto* seq_len = reinterpret_cast<uint32_t*>(w + o_len);
  auto* seq_qend = reinterpret_cast<uint32_t*>(w + o_qend);
  auto* blocks = fp16_tokens ? reinterpret_cast<const uint16_t**>(w + o_blocks) : nullptr;
  p.page_table = arena_.as<uint32_t>();
  p.table_offset = table_offset;
  p.seq_len = seq_len;
  if (fp16_tokens) {
    p.seq_qend = seq_qend;
    p.fp16_blocks = blocks;
  }
  p.q = q_device;
  p.q_dtype = uint32_t(q_dtype);
  e.q_len = reinterpret_cast<const uint32_t*>(w + o_counts);
  e.q_offset = e.q_len + n_seqs;
  p.out = out_dev ? out : reinterpret_cast<float*>(w + o_out);
  p.lse = lse ? (lse_dev ? lse : reinterpret_cast<float*>(w + o_lse)) : nullptr;
  p.workspace = w + o_kernel;
  gather_batch(mirror, layer, seqs, n_seqs, table_offset, seq_len, seq_qend, blocks, s);
  extend_attention(e, s);
  if (!out_dev)
    check_cuda(cudaMemcpyAsync(out, p.out, q_rows * D * 4, cudaMemcpyDeviceToHost, s), "attention_extend: copy out");
  if (lse && !lse_dev)
    check_cuda(cudaMemcpyAsync(lse, p.lse, q_rows * 4, cudaMemcpyDeviceToHost, s), "attention_extend: copy lse");
  if (!q_dev || !out_dev || (lse && !lse_dev)) call.sync();
}

}  // namespace cuda
}  // namespace kvbits
