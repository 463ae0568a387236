// Helpers for the cache tests: plans made by the calibrator from random activations, random
// K/V inputs, a model of what every token must read back as, and whole-cache snapshots.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "kvbits/cache.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/context.hpp"

namespace kvbits::cachetest {

// The CPU context the cache tests share (two worker threads, so the parallel paths run).
inline Context& ctx() {
  static Context c{ContextConfig{Backend::cpu, 0, 2}};
  return c;
}

ModelShape make_shape(uint32_t layers, uint32_t kv_heads, uint32_t head_dim, uint32_t rotary_dim = 0,
                      RopeLayout layout = RopeLayout::split_half);

// A validated plan from build_plan over random activations whose block energies span orders
// of magnitude (so the widths differ per block).
std::shared_ptr<const Plan> make_plan(const ModelShape& shape, PlanOptions options = {}, uint64_t seed = 1);

// Replaces the K widths of one head (canonical hp order, generated rotations, codebooks for
// every width) and re-validates.
void set_head_widths(Plan& plan, uint32_t layer, uint32_t kv_head, const std::vector<uint8_t>& block_bits);

// n_tokens rows of n_kv_heads * D Gaussian values times `scale`, deterministic in the seed.
std::vector<float> random_rows(size_t n_tokens, const ModelShape& shape, uint64_t seed, float scale = 1.0f);

// Inputs converted to another dtype (raw bits) and back to fp32 exactly.
std::vector<uint16_t> to_bits(const std::vector<float>& x, DType t);
std::vector<float> from_bits(const std::vector<uint16_t>& b, DType t);

float fp16_round(float x);

// What a cache must hold: every token's fp32 input per (sequence, layer), and qend.
class Model {
 public:
  explicit Model(const Cache& cache) : cache_(cache) {}
  void add(uint64_t seq);
  // Records K and V rows [n, H, D] appended to (seq, layer); recomputes qend as the cache must.
  void append(uint64_t seq, uint32_t layer, const float* k, const float* v, uint32_t n);
  void fork(uint64_t src, uint64_t dst, uint32_t prefix);
  void remove(uint64_t seq) { seqs_.erase(seq); }
  uint32_t qend(uint64_t seq, uint32_t layer) const { return seqs_.at(seq).qend.at(layer); }
  uint32_t len(uint64_t seq, uint32_t layer) const;
  // Expected read-back of token t, head h: fp16-exact for sink/ring tokens and fp16 layers,
  // TqQuantizer encode -> decode (of the fp16-rounded input when there is a window) otherwise.
  void expected(uint64_t seq, uint32_t layer, uint32_t t, uint32_t h, float* k, float* v) const;
  // Reads every token of every sequence back and compares bit for bit (gtest failures).
  void check_all() const;

 private:
  struct Seq {
    std::vector<std::vector<float>> k, v;  // [layer] -> tokens * H * D
    std::vector<uint32_t> qend;
  };
  const Cache& cache_;
  std::map<uint64_t, Seq> seqs_;
};

// Appends fp32 k, v ([sum n, H, D]) to the cache in one call and records them in the model.
void append_both(Cache& cache, Model& model, uint32_t layer, const std::vector<uint64_t>& seqs,
                 const std::vector<uint32_t>& n_tokens, const std::vector<float>& k, const std::vector<float>& v);

// Everything observable through the public API, for "unchanged after an error" checks.
struct Snapshot {
  std::vector<uint64_t> ids;
  std::vector<std::vector<uint32_t>> lens;          // [seq][layer]
  std::vector<std::vector<std::vector<uint32_t>>> bits;  // [seq][layer] K then V as fp32 bits
  uint64_t pages_used = 0, fp16_bytes = 0, tokens = 0;
  bool operator==(const Snapshot& o) const;
};
Snapshot snapshot(const Cache& cache);

// Bytes of every page of every (layer, head) that `seq` uses, in page-table order.
std::vector<uint8_t> page_bytes_of(const Cache& cache, uint64_t seq);

}  // namespace kvbits::cachetest
