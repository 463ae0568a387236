// kvbits — the cache's sequences: per sequence a page table shared by all layers and, per
// layer, the token counts and the fp16 sink/window block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

namespace kvbits::cache_detail {

// Frees an fp16 block: delete[] for host blocks, or the device cache's release function.
struct Fp16Free {
  void (*release)(void* owner, uint16_t* p) = nullptr;  // null: a host block from new[]
  void* owner = nullptr;
  void operator()(uint16_t* p) const {
    if (release) release(owner, p);
    else delete[] p;
  }
};
// One (sequence, layer)'s fp16 sink/window block: host memory on the CPU backend, device
// memory on CUDA.
using Fp16Block = std::unique_ptr<uint16_t, Fp16Free>;
// A zeroed host block of n values (throws std::bad_alloc).
inline Fp16Block host_fp16_block(size_t n) { return Fp16Block(new uint16_t[n]()); }

struct SeqLayer {
  uint32_t len = 0;   // tokens appended to this layer
  uint32_t qend = 0;  // tokens [sink, qend) are packed in pages; [qend, len) sit in the ring
  // K sink [H][S][D], V sink [H][S][D], K ring [H][W][D], V ring [H][W][D] (fp16 bits);
  // allocated on the first append that needs it, null while the layer is empty.
  Fp16Block fp16;
};

struct Sequence {
  std::vector<uint32_t> pages;  // page ids, shared by every layer
  std::vector<SeqLayer> layers;
};

// Ids are small integers: the lowest free id is handed out first.
class SequenceTable {
 public:
  explicit SequenceTable(uint32_t max_sequences) : max_(max_sequences) {}

  size_t size() const { return live_; }
  uint32_t capacity() const { return max_; }  // max_sequences: ids stay below it
  bool full() const { return live_ >= max_; }
  // The sequence, or null for an id not in use.
  Sequence* find(uint64_t id) const {
    return id < slots_.size() ? slots_[size_t(id)].get() : nullptr;
  }
  // Error(not_found) naming the id.
  Sequence& get(uint64_t id) const;
  // The id the next insert() will use.
  uint64_t next_id() const { return free_ids_.empty() ? slots_.size() : *free_ids_.begin(); }
  // Error(capacity_exhausted) when every id up to max_sequences is in use.
  void require_room() const;
  // Takes a fully built sequence; Error(capacity_exhausted) when full. Strong guarantee.
  uint64_t insert(std::unique_ptr<Sequence> seq);
  std::unique_ptr<Sequence> take(uint64_t id);  // the caller checked that the id is in use
  std::vector<uint64_t> ids() const;

 private:
  uint32_t max_;
  size_t live_ = 0;
  std::vector<std::unique_ptr<Sequence>> slots_;
  std::set<uint64_t> free_ids_;  // ids below slots_.size() not in use
};

}  // namespace kvbits::cache_detail
