// kvbits CUDA — device copies of what decode_attention reads, for tests and benchmarks.
//
// The GPU cache backend is a later step; until then a CPU kvbits::Cache is mirrored to the
// device one layer at a time: page pools (the whole region of every KV head), page tables,
// lengths and qend, the fp16 sink/window block of every sequence, plus the per-head tables
// (group descriptors, centroids, K and V rotations, hp slot order). Everything is copied
// synchronously when the mirror is built; the mirror does not follow later appends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/decode.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/plan.hpp"
#include "kvbits/types.hpp"

namespace kvbits::cuda {

// One cudaMalloc'd block, freed on destruction. Error(device_error) on failure.
class DeviceBlock {
 public:
  DeviceBlock() = default;
  explicit DeviceBlock(size_t bytes);
  DeviceBlock(const void* host, size_t bytes);  // allocate and upload
  ~DeviceBlock();
  DeviceBlock(DeviceBlock&& o) noexcept;
  DeviceBlock& operator=(DeviceBlock&& o) noexcept;
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;
  void* get() const { return p_; }
  size_t size() const { return bytes_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// DecodeHead descriptors of one layer from its quantizers and page layouts; pools[h] is the
// device base of KV head h's page region. Owns the device centroids, K and V rotations, slot
// maps and heads.
class DecodeTables {
 public:
  DecodeTables(const std::vector<const HeadQuantizers*>& quantizers, const std::vector<PageLayout>& layouts,
               const std::vector<const uint8_t*>& pools);
  // A layer kept at 16 bits: fp16 page layouts, no tables.
  static DecodeTables fp16(uint32_t head_dim, const std::vector<PageLayout>& layouts,
                           const std::vector<const uint8_t*>& pools);
  // Sets heads, heads_host, centroids, n_kv_heads, head_dim and fp16_layer.
  void fill(DecodeParams& p) const;
  const std::vector<DecodeHead>& host() const { return host_; }

 private:
  DecodeTables() = default;
  void upload_heads();
  std::vector<DecodeHead> host_;
  DeviceBlock heads_, centroids_, rotations_, k_rotations_, slot_dims_;
  uint32_t head_dim_ = 0;
  bool fp16_ = false;
};

// Layer `layer` of a CPU cache for the sequences `seqs` (that order is the batch order), fp16
// sink/window tokens and fp16 layers included. Error(invalid_argument) for a bad layer or a
// sequence without tokens in it; Error(not_found) for an unknown sequence.
class DeviceCacheMirror {
 public:
  DeviceCacheMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs);

  // q [n_seqs][n_q_heads][D] fp32 (host) -> q' = R_g q per group in hp order, uploaded; params()
  // then passes q_rot. Error(unsupported) for an fp16 layer (it has no rotation).
  void set_queries(const float* q);
  // q [n_seqs][n_q_heads][D] in `dtype` (host), uploaded as given; params() then passes q and
  // q_dtype, and the decode launch rotates the queries itself.
  void set_raw_queries(const void* q, DType dtype);
  // Every input field of DecodeParams (not out, lse, workspace, scale, splits, variant).
  DecodeParams params() const;
  const std::vector<uint32_t>& lengths() const { return len_; }

 private:
  const Cache& cache_;
  uint32_t layer_;
  std::vector<uint32_t> len_, qend_;
  std::vector<DeviceBlock> pools_, fp16_blocks_;
  DeviceBlock table_, table_offset_, seq_len_, seq_qend_, fp16_block_ptrs_, q_rot_, q_raw_;
  DType q_dtype_ = DType::f32;
  bool raw_ = false;
  std::vector<const HeadQuantizers*> quant_;
  std::unique_ptr<DecodeTables> tables_;
};

// q' for every query head of a batch, on the host: rotated by the K quantizer of its KV head.
std::vector<float> rotate_queries(const Cache& cache, uint32_t layer, const float* q, size_t n_seqs);

}  // namespace kvbits::cuda
