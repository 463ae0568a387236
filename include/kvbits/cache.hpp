// kvbits — the paged, packed KV cache of one plan on one context.
//
// Storage (docs/cache-layout.md §Pages): a pool of `max_pages` pages of `page_size` tokens.
// A page id is valid in every (layer, KV head): each (layer, KV head) owns one array of
// max_pages page-sized slots, and a page of it holds, in separate 16-byte-aligned arrays,
//   quantized layer: K codes [page_size][k_code_bytes], K scales [page_size][n_groups] fp16,
//                    V codes [page_size][v_code_bytes], V scales [page_size] fp16;
//   fp16 layer:      K [page_size][D] fp16, V [page_size][D] fp16.
// Every sequence has its own page table, shared by all layers. Token positions of a sequence
// (for one layer) are split as
//   [0, sink)       fp16 "sink" tokens, kept forever (sink = min(len, sink_tokens));
//   [sink, qend)    packed in pages: token t in page pages[(t-sink)/page_size], row (t-sink)%page_size;
//   [qend, len)     fp16 "recent window" ring, at most window_tokens tokens: token t in ring
//                   row (t - sink) % window_tokens.
// Appending moves the oldest window tokens into pages once more than window_tokens are held.
// With a window, every non-sink token is encoded from its fp16 value (the value the window
// holds), so packed bytes never depend on how tokens were split into append calls.
// fp16 layers (plan keep_fp16) use the same positions; their "packed" rows are fp16.
// Each layer has its own len/qend (layers are appended one after another); pages are shared.
// Forked sequences share full pages (reference counted); a shared page is copied before it is
// written (copy-on-write), so a prefix is never re-quantized.
// Rows of a page that its owner has not written are zero; a shared page may also hold rows
// of another sharer past this sequence's qend (never read).
//
// Thread safety: const member functions may run concurrently with each other; append, add,
// remove and fork need exclusive access.
//
// On a CUDA context (docs/cache-layout.md §11) the pool, the fp16 blocks and everything
// attention reads live in device memory with the same byte layout; page tables, lengths and
// reference counts stay on the host. page_data() and SeqLayerView::fp16_base then hold device
// addresses; SeqLayerView::pages stays a host array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvbits/context.hpp"
#include "kvbits/plan.hpp"
#include "kvbits/types.hpp"

namespace kvbits {
namespace cache_detail {
class DeviceCache;
}

struct CacheConfig {
  uint32_t page_size = 64;     // tokens per page, 1..4096 (64: a decode tile; see docs)
  uint64_t max_pages = 0;      // pool capacity; 1..2^32-1
  uint32_t max_sequences = 1024;  // 1..2^24
  int64_t sink_tokens = -1;    // -1: the plan's policy
  int64_t window_tokens = -1;  // -1: the plan's policy; else 0..2^24 (as sink_tokens)
  // KV heads [kv_head_begin, kv_head_end) of the plan (tensor parallelism: one cache per GPU);
  // 0/0 = every head. Such a cache holds only those heads: see Cache::plan() (docs/transfer.md).
  uint32_t kv_head_begin = 0, kv_head_end = 0;
};

// Byte layout of one page of one (layer, KV head).
struct PageLayout {
  bool fp16 = false;             // a layer the plan keeps at 16 bits
  uint32_t k_code_bytes = 0;     // per token (fp16 layer: 2*D)
  uint32_t n_k_scales = 0;       // per token (fp16 layer: 0)
  uint32_t v_code_bytes = 0;     // per token (fp16 layer: 2*D)
  // Byte offsets in the page, each a multiple of 16 (fp16 layer: K rows at k_codes, V rows at
  // v_codes; k_scales == v_codes and v_scales == end of V name empty arrays).
  size_t k_codes = 0, k_scales = 0, v_codes = 0, v_scales = 0;
  size_t page_bytes = 0;         // multiple of 64: every page starts on a cache line
};

struct CacheStats {
  uint64_t pages_total = 0, pages_used = 0;
  uint64_t pool_bytes = 0;          // bytes of page storage (all layers and heads)
  uint64_t fp16_region_bytes = 0;   // sink + window buffers currently allocated
  uint64_t sequences = 0;
  uint64_t tokens = 0;              // sum over sequences of layer-0 length
  uint64_t packed_bytes_used = 0;   // bytes of pages in use
};

// What attention needs to read one (sequence, layer). Pointers stay valid until the next
// mutating call on the cache.
struct SeqLayerView {
  uint32_t len = 0, sink = 0, qend = 0;
  uint32_t window_capacity = 0;        // ring rows
  const uint32_t* pages = nullptr;     // page table, ceil((qend - sink) / page_size) entries
  // fp16 regions of KV head h: sink rows [sink_capacity][D], ring rows [window_capacity][D].
  // One block per (sequence, layer): K sink [H][S][D], V sink [H][S][D], K ring [H][W][D], V ring [H][W][D].
  const uint16_t* fp16_base = nullptr;
  uint32_t sink_capacity = 0, head_dim = 0, n_kv_heads = 0;
  const uint16_t* sink_k(uint32_t h) const { return fp16_base + size_t(h) * sink_capacity * head_dim; }
  const uint16_t* sink_v(uint32_t h) const { return sink_k(n_kv_heads) + size_t(h) * sink_capacity * head_dim; }
  const uint16_t* window_k(uint32_t h) const {
    return sink_k(2 * n_kv_heads) + size_t(h) * window_capacity * head_dim;
  }
  const uint16_t* window_v(uint32_t h) const { return window_k(n_kv_heads) + size_t(h) * window_capacity * head_dim; }
};

class Cache {
 public:
  // Error(invalid_argument | out_of_memory | unsupported), Error(null_pointer) for a null plan.
  // The whole pool (max_pages pages) is allocated here, once.
  Cache(std::shared_ptr<const Plan> plan, const Context& ctx, const CacheConfig& cfg);
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // The plan this cache serves: the plan it was created with, or for a KV-head range the same
  // plan cut to those heads (n_kv_heads = end - begin, n_q_heads = (end - begin) * GQA group,
  // the heads' plans unchanged), so every shape of append, read and attention follows it.
  const Plan& plan() const { return *plan_; }
  // The plan the cache was created with (all KV heads), and the cache's range of its heads.
  const Plan& full_plan() const { return *full_plan_; }
  uint32_t kv_head_begin() const { return head_begin_; }
  uint32_t kv_head_end() const { return head_end_; }
  const Context& context() const { return *ctx_; }
  const CacheConfig& config() const { return cfg_; }
  uint32_t sink_tokens() const { return sink_; }
  uint32_t window_tokens() const { return window_; }
  const PageLayout& page_layout(uint32_t layer, uint32_t kv_head) const;
  const HeadQuantizers& quantizers(uint32_t layer, uint32_t kv_head) const;  // quantized layers only

  // Sequences. Ids are chosen by the cache (small integers, reused after remove).
  uint64_t add_sequence();                         // Error(capacity_exhausted) at max_sequences
  void remove_sequence(uint64_t seq);              // Error(not_found); pages return to the pool
  // New sequence sharing the first prefix_len tokens of src (every layer must hold them).
  // Takes no page (full and partial pages are shared); Error(not_found | invalid_argument |
  // capacity_exhausted (max_sequences) | out_of_memory).
  uint64_t fork_sequence(uint64_t src, uint32_t prefix_len);
  uint32_t length(uint64_t seq, uint32_t layer) const;  // Error(not_found | invalid_argument)
  bool has_sequence(uint64_t seq) const;
  std::vector<uint64_t> sequences() const;

  // Appends post-RoPE K and V for one layer (all KV heads) of several sequences at once:
  // seqs[i] gets n_tokens[i] tokens; k and v are [sum n_tokens, n_kv_heads, D] row-major in
  // `dtype`, sequence after sequence. All-or-nothing: on any error (unknown or repeated
  // sequence, non-finite value, pool exhausted) nothing changes.
  // Errors: null_pointer (seqs, n_tokens, k or v null); not_found (unknown sequence);
  // invalid_argument (layer out of range, n_seqs == 0, some n_tokens[i] == 0, a sequence
  // twice, unknown dtype, a non-finite value, a value outside the fp16 range where it is to be
  // held in fp16, a group norm too large for an fp16 scale; the message names the sequence,
  // token, head and dim); capacity_exhausted ("needs N new pages, M free", counting the
  // copies of shared pages about to be written); out_of_memory.
  // CUDA context: k and v may be device or host memory; `stream` (a cudaStream_t, null = the
  // default stream) orders the work; the call checks the values on the device and waits for
  // that check (one small device-to-host read), so it cannot be captured in a CUDA graph
  // (Error(unsupported) while capturing), plus device_error with the CUDA message. The CPU
  // backend ignores `stream`.
  void append(uint32_t layer, const uint64_t* seqs, const uint32_t* n_tokens, size_t n_seqs, const void* k,
              const void* v, DType dtype, void* stream = nullptr);

  // Reads tokens [pos, pos+n) of (seq, layer) back as fp32 [n, n_kv_heads, D]: dequantized
  // for packed tokens, exact for fp16 ones. Either output may be null; n may be 0.
  // Error(not_found | invalid_argument (layer, or [pos, pos+n) past the length)).
  void read(uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n, float* k, float* v) const;

  CacheStats stats() const;

  // Sequence transfer (docs/transfer.md): one sequence, every layer, in a versioned
  // backend-independent byte layout. export_size: the bytes export_sequence writes
  // (Error(not_found)). export_sequence writes them to buf (host memory; on a CUDA context
  // also device memory) and returns the count; capacity too small: Error(invalid_argument),
  // buf untouched. import_sequence adds the sequence held in buf[size] (a cache of the same
  // plan, KV-head range, page size, sink and window) and returns its id; on any error
  // (corrupt_data, version_unsupported, shape_mismatch, capacity_exhausted, ...) the cache is
  // unchanged. Both wait for their copies (`stream` orders them on a CUDA context).
  size_t export_size(uint64_t seq) const;
  size_t export_sequence(uint64_t seq, void* buf, size_t capacity, void* stream = nullptr) const;
  uint64_t import_sequence(const void* buf, size_t size, void* stream = nullptr);
  // FNV-1a 64 of serialize_plan(full_plan()): what an export is tied to.
  uint64_t plan_fingerprint() const;

  // For attention backends (device addresses on a CUDA context, see above).
  SeqLayerView view(uint64_t seq, uint32_t layer) const;
  const uint8_t* page_data(uint32_t layer, uint32_t kv_head, uint32_t page) const;
  // The device half on a CUDA context, null on the CPU backend (for kvbits' own GPU code).
  cache_detail::DeviceCache* device_cache() const;

  struct Impl;  // defined in src/cache/cache_impl.hpp; named here for the backends' code
  Impl& impl() const { return *impl_; }  // kvbits' own backends and tests only

 private:
  std::shared_ptr<const Plan> full_plan_;  // as created with
  std::shared_ptr<const Plan> plan_;       // full_plan_, or its cut to [head_begin_, head_end_)
  uint32_t head_begin_ = 0, head_end_ = 0;
  const Context* ctx_;
  CacheConfig cfg_;
  uint32_t sink_ = 0, window_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvbits
