// kvbits CUDA — device copies of what decode_attention reads, for tests and benchmarks.
//
// The GPU cache backend is a later step; until then a CPU kvbits::Cache is mirrored to the
// device one layer at a time: page pools (the whole region of every KV head), page tables and
// lengths, plus the per-head tables (group descriptors, centroids, V rotations). Everything is
// copied synchronously when the mirror is built; the mirror does not follow later appends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/decode.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/plan.hpp"

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
// device base of KV head h's page region. Owns the device centroids, V rotations and heads.
class DecodeTables {
 public:
  DecodeTables(const std::vector<const HeadQuantizers*>& quantizers, const std::vector<PageLayout>& layouts,
               const std::vector<const uint8_t*>& pools);
  // Sets heads, heads_host, centroids, n_kv_heads and head_dim.
  void fill(DecodeParams& p) const;
  const std::vector<DecodeHead>& host() const { return host_; }

 private:
  std::vector<DecodeHead> host_;
  DeviceBlock heads_, centroids_, rotations_;
  uint32_t head_dim_ = 0;
};

// Layer `layer` of a CPU cache for the sequences `seqs` (that order is the batch order).
// Error(unsupported) when the cache has sink or window tokens or the layer is kept in fp16
// (decode_attention serves packed tokens only); Error(invalid_argument) for a bad layer or a
// sequence without tokens in it; Error(not_found) for an unknown sequence.
class DeviceCacheMirror {
 public:
  DeviceCacheMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs);

  // q [n_seqs][n_q_heads][D] fp32 (host) -> q' = R_g q per group in hp order, uploaded.
  void set_queries(const float* q);
  // Every input field of DecodeParams (not out, lse, workspace, scale, splits).
  DecodeParams params() const;
  const std::vector<uint32_t>& lengths() const { return len_; }

 private:
  const Cache& cache_;
  uint32_t layer_;
  std::vector<uint32_t> len_;
  std::vector<DeviceBlock> pools_;
  DeviceBlock table_, table_offset_, seq_len_, q_rot_;
  std::vector<const HeadQuantizers*> quant_;
  std::unique_ptr<DecodeTables> tables_;
};

// q' for every query head of a batch, on the host: rotated by the K quantizer of its KV head.
std::vector<float> rotate_queries(const Cache& cache, uint32_t layer, const float* q, size_t n_seqs);

}  // namespace kvbits::cuda
