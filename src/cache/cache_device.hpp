// kvbits — the device half of a Cache on a CUDA context, as the core sees it.
//
// The host keeps every piece of bookkeeping (PagePool, SequenceTable, the append plan); the
// device half holds the bytes (page pool, fp16 blocks, a mirror of lengths and page tables
// that decode reads) and runs the kernels. It is implemented in cuda/device_cache.cpp and
// built by make_device_cache only in builds with CUDA (KVB_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "cache_impl.hpp"
#include "kvbits/attention.hpp"
#include "transfer_list.hpp"

namespace kvbits::cache_detail {

struct AppendPlan;

// Bytes of one (sequence, layer) copied to the host for Cache::read.
struct HostCopy {
  std::vector<uint16_t> fp16;                               // the fp16 block (empty: none)
  std::unordered_map<uint32_t, std::vector<uint8_t>> pages;  // page id -> its bytes in every head of the layer
};

class DeviceCache {
 public:
  virtual ~DeviceCache() = default;

  // Device address of byte 0 of the page pool (PagePool's external base).
  virtual uint8_t* pool_base() const = 0;
  // Builds the device tables once the Impl is complete (layouts, quantizers, pool).
  virtual void attach() = 0;

  // A zeroed fp16 block of Impl::fp16_block_elems() values in device memory.
  virtual Fp16Block new_fp16_block() = 0;

  // The rest of Cache::append for a plan that passed its structural checks: values are checked
  // on the device, then the cache changes (pages, fp16 rows, host bookkeeping) or nothing does.
  virtual void append(AppendPlan& plan, const void* k, const void* v, void* stream) = 0;

  // Copies what Cache::read needs for tokens [pos, pos + n) of (seq, layer) to the host.
  virtual void download(const Sequence& seq, uint32_t layer, uint32_t pos, uint32_t n, HostCopy& out) const = 0;

  // Fork: copies sink rows [0, sink_rows) and the ring rows of tokens [ring_first, ring_end)
  // from one device fp16 block to another.
  virtual void copy_fork_rows(uint16_t* to, const uint16_t* from, uint32_t sink_rows, uint32_t ring_first,
                              uint32_t ring_end) = 0;
  // A sequence that is about to be inserted under `id` (fork): mirrors its lengths, fp16
  // blocks and page table to the device.
  virtual void mirror_sequence(uint64_t id, const Sequence& seq) = 0;
  // A removed sequence: the pages it freed are zeroed on the device (free pages stay zero).
  virtual void removed(uint64_t id, const std::vector<uint32_t>& freed_pages) = 0;

  // Sequence transfer (cache_transfer.cpp); each waits for its work. `payload` and `buf` are
  // a caller's buffer in host or device memory.
  // Export: runs list.copies (cache -> payload), zeroes list.zeros in the payload and returns
  // the payload checksum (seq_transfer_format.hpp), computed where the payload lives.
  virtual uint64_t export_payload(const TransferList& list, uint8_t* payload, void* stream) const = 0;
  // Import: runs list.copies (payload -> pages just taken and new fp16 blocks) and zeroes
  // list.zeros in the pages.
  virtual void import_payload(const TransferList& list, const uint8_t* payload, void* stream) = 0;
  // n bytes between a caller's buffer and host memory, and the payload checksum of a buffer.
  virtual void write_buffer(void* buf, const void* host, size_t n, void* stream) const = 0;
  virtual void read_buffer(void* host, const void* buf, size_t n, void* stream) const = 0;
  virtual uint64_t buffer_checksum(const uint8_t* buf, size_t n, void* stream) const = 0;

  // attention_decode on this cache (inputs validated by the caller except q's values).
  virtual void decode(uint32_t layer, const uint64_t* seqs, size_t n_seqs, const void* q, DType q_dtype, float* out,
                      float* lse, float scale, Precision precision, void* stream) = 0;
  // attention_extend on this cache (inputs validated by the caller except q's values).
  virtual void extend(uint32_t layer, const uint64_t* seqs, const uint32_t* q_len, size_t n_seqs, const void* q,
                      DType q_dtype, float* out, float* lse, float scale, void* stream) = 0;
};

// Allocates `pool_bytes` of zeroed device memory for a cache on a CUDA context.
std::unique_ptr<DeviceCache> make_device_cache(Cache::Impl& impl, uint64_t pool_bytes);

}  // namespace kvbits::cache_detail
