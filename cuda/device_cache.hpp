// kvbits CUDA — the device half of a Cache on a CUDA context (src/cache/cache_device.hpp).
//
// Device memory of one cache:
//   pool          the page pool, the byte layout of docs/cache-layout.md §10 (zeroed at
//                 creation; pages are zeroed again when they are freed, so free pages are zero)
//   fp16 blocks   one per (sequence, layer) with sink/window tokens, cudaMallocAsync'd
//   tables        per (layer, KV head): AppendHead (page placement, K/V quantizers with the
//                 rotations in j-blocks of four, centroids, boundaries); DecodeTables per layer
//   mirror        what decode reads at run time: per (sequence slot, layer) len, qend and the
//                 fp16 block; per sequence slot the offset of its page table in the arena; the
//                 arena of page tables (each sequence a range of power-of-two capacity)
// The host keeps the bookkeeping; the mirror is written by the append's commit launch, by
// fork and by arena compaction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cache/cache_device.hpp"
#include "cuda/append.hpp"
#include "cuda/cache_kernels.hpp"
#include "cuda/cuda_context.hpp"
#include "cuda/device_cache_mirror.hpp"
#include "cuda/extend_tables.hpp"
#include "cuda/head_range_launch.hpp"

namespace kvbits::cuda {

class CudaCache final : public cache_detail::DeviceCache {
 public:
  CudaCache(Cache::Impl& impl, uint64_t pool_bytes);
  ~CudaCache() override;

  uint8_t* pool_base() const override { return pool_.as<uint8_t>(); }
  void attach() override;
  cache_detail::Fp16Block new_fp16_block() override;
  void append(cache_detail::AppendPlan& plan, const void* k, const void* v, void* stream) override;
  void download(const cache_detail::Sequence& seq, uint32_t layer, uint32_t pos, uint32_t n,
                cache_detail::HostCopy& out) const override;
  void copy_fork_rows(uint16_t* to, const uint16_t* from, uint32_t sink_rows, uint32_t ring_first,
                      uint32_t ring_end) override;
  void mirror_sequence(uint64_t id, const cache_detail::Sequence& seq) override;
  void removed(uint64_t id, const std::vector<uint32_t>& freed_pages) override;
  void decode(uint32_t layer, const uint64_t* seqs, size_t n_seqs, const void* q, DType q_dtype, float* out,
              float* lse, float scale, Precision precision, void* stream) override;
  void extend(uint32_t layer, const uint64_t* seqs, const uint32_t* q_len, size_t n_seqs, const void* q,
              DType q_dtype, float* out, float* lse, float scale, void* stream) override;
  // Sequence transfer (device_cache_transfer.cpp).
  uint64_t export_payload(const cache_detail::TransferList& list, uint8_t* payload, void* stream) const override;
  void import_payload(const cache_detail::TransferList& list, const uint8_t* payload, void* stream) override;
  void write_buffer(void* buf, const void* host, size_t n, void* stream) const override;
  void read_buffer(void* host, const void* buf, size_t n, void* stream) const override;
  uint64_t buffer_checksum(const uint8_t* buf, size_t n, void* stream) const override;

  // The attention calls' shared parts: the layer's descriptors in p (op names errors), the
  // non-finite check of a host query, the device mirror decode and extend gather from.
  void describe_layer(DecodeParams& p, const char* op, uint32_t layer, const uint64_t* seqs, size_t n_seqs,
                      float scale) const;
  void check_host_query(const char* op, const void* q, DType q_dtype, size_t q_rows) const;
  SeqMirror seq_mirror() const;

  // Tests: every coordinate takes the exact fp64 path of the append's encoder (append.cu).
  void set_force_exact(bool on) { force_exact_ = on; }
  // Benchmarks: cudaEvent_t handles recorded around the encode launch ([0], [1]) and the commit
  // launch ([2], [3]) of every append; null entries turn it off.
  void set_append_events(void* const events[4]) {
    for (int i = 0; i < 4; ++i) events_[i] = events ? events[i] : nullptr;
  }
  // Entries of the page-table arena and the number in use (tests of compaction).
  uint64_t arena_capacity() const { return arena_cap_; }
  uint64_t compactions() const { return compactions_; }

 private:
  struct TableSlot {
    uint64_t offset = 0, capacity = 0;  // its range of the arena (capacity 0: none)
  };
  struct DeviceRestore {  // declared first: puts the caller's device back after the members are freed
    int device = -1;
    ~DeviceRestore();
  };

  uint32_t* state_word(uint64_t id, uint32_t layer, uint32_t field) const {
    return state_.as<uint32_t>() + (size_t(id) * n_layers_ + layer) * 4 + field;
  }
  // Gives every live sequence a fresh range (capacity a power of two >= its length, or >=
  // want[id] where given) in an arena large enough for `extra` more entries; uploads the tables
  // and offsets. Synchronises the stream.
  void compact(CudaContext::Call& call, const std::vector<std::pair<uint64_t, uint64_t>>& want, uint64_t extra);
  static void release_block(void* owner, uint16_t* p);
  // Work a call made while its stream was being captured could not enqueue (it would have
  // landed in the user's graph): zeroing freed pages and freeing fp16 blocks. Done by the next
  // call that is not captured, before anything can reuse those pages.
  void flush_deferred(CudaContext::Call& call);
  // The single-launch append's outcome (its error word), once the launch has written it.
  static unsigned long long wait_step_outcome(CudaContext::Call& call);
  // Error(unsupported) naming `what` while the call's stream is being captured.
  static void refuse_capture(const CudaContext::Call& call, const char* what);
  // A synchronous copy of n bytes between host and/or device memory (a transfer's header).
  void copy_header(void* dst, const void* src, size_t n, void* stream, const char* op) const;

  DeviceRestore restore_;
  Cache::Impl& m_;
  CudaContext& ctx_;
  uint32_t n_layers_, n_heads_, head_dim_;
  DeviceBlock pool_;
  DeviceBlock heads_, tables_;  // AppendHead[L * H]; their slot_dim / rot / cent / bnd
  DeviceBlock step_state_;      // AppendStepState of the single-launch append
  std::unique_ptr<AppendStepInline> step_inline_;  // its kernel parameter, filled per call
  std::vector<AppendHead> heads_host_;
  std::vector<uint32_t> max_cb_;  // per layer
  std::vector<std::unique_ptr<DecodeTables>> decode_tables_;  // per quantized layer
  std::vector<std::unique_ptr<ExtendQueryTables>> extend_tables_;  // per quantized layer
  std::vector<std::vector<DecodeHead>> fp16_heads_host_;      // per fp16 layer
  std::vector<DeviceBlock> fp16_heads_;
  DeviceBlock state_, offsets_, arena_;
  uint64_t arena_cap_ = 0, arena_used_ = 0;
  std::vector<DeviceBlock> retired_arenas_;  // kept for graphs captured before a growth
  std::vector<TableSlot> slots_;             // per sequence id
  std::vector<uint32_t> deferred_pages_;
  std::vector<uint16_t*> deferred_blocks_;
  uint64_t compactions_ = 0;
  bool force_exact_ = false;
  void* events_[4] = {};
  // A cache over a range of KV heads: the launch shape of a cache of every head (null otherwise).
  std::unique_ptr<HeadRangeLaunch> head_range_launch_;
};

}  // namespace kvbits::cuda
