// Test/benchmark helper: one layer of a CPU kvbits::Cache on the device, as extend_attention
// reads it. Unlike DeviceCacheMirror (decode's), it also mirrors fp16 sink/window blocks and fp16
// layers. Everything is copied synchronously at construction; later appends are not followed.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/device_cache_mirror.hpp"
#include "cuda/extend.hpp"
#include "cuda/extend_tables.hpp"
#include "kvbits/cache.hpp"

namespace kvbits::test_ext {

class ExtendMirror {
 public:
  // Layer `layer` of `cache` for the sequences `seqs` (batch order), with q_len[i] queries for
  // seqs[i] (0 allowed). Error(not_found) for an unknown sequence.
  ExtendMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs, const std::vector<uint32_t>& q_len);

  // q [total_q][n_q_heads][D] on the host, in `dtype` (unrotated, as the model gives them).
  void set_queries(const void* q, DType dtype);
  // Every input field (not out, lse, workspace, scale, splits).
  cuda::ExtendParams params() const;
  uint32_t total_q() const { return total_q_; }
  const std::vector<uint32_t>& lengths() const { return len_; }
  const std::vector<uint32_t>& q_offsets() const { return q_off_; }

 private:
  const Cache& cache_;
  uint32_t layer_, total_q_ = 0, max_q_len_ = 0, q_dtype_ = 0;
  std::vector<uint32_t> len_, q_len_, q_off_;
  std::vector<cuda::DeviceBlock> pools_, fp16_;
  std::vector<cuda::DecodeHead> fp16_heads_;  // fp16 layer: heads built here (no tables)
  cuda::DeviceBlock fp16_heads_dev_, table_, table_offset_, seq_len_, seq_qend_, fp16_ptrs_, d_q_len_, d_q_off_, q_;
  std::unique_ptr<cuda::DecodeTables> tables_;
  std::unique_ptr<cuda::ExtendQueryTables> ext_tables_;
};

}  // namespace kvbits::test_ext
