// kvbits CUDA — TQ-MSE row encoding on the GPU, bit-identical to TqQuantizer::encode.
//
// Host launchers take raw pointers and plain structs only. The per-head tables live in device
// memory owned by a DeviceQuantizer (built once per plan head and reused by every launch).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvbits/tq_mse.hpp"

namespace kvbits::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count() noexcept;

// Plain descriptor of one quantizer in device memory (see encode.cu for the table layout).
struct QuantizerTables {
  uint32_t dim = 0;          // D
  uint32_t n_groups = 0;
  uint32_t code_bytes = 0;   // packed bytes per row
  const uint32_t* group_info = nullptr;  // per group: bits, first_slot, dims, byte_offset, rot_offset, cb_offset
  const uint32_t* slot_dim = nullptr;    // D
  const float* rotations = nullptr;      // concatenated d_g x d_g row-major matrices
  const float* centroids = nullptr;      // per group 2^bits, at cb_offset
  const float* boundaries = nullptr;     // per group 2^bits - 1, at cb_offset
};

// Owns the device copy of one TqQuantizer's tables. Error(device_error) on CUDA failures.
class DeviceQuantizer {
 public:
  explicit DeviceQuantizer(const TqQuantizer& q);
  ~DeviceQuantizer();
  DeviceQuantizer(const DeviceQuantizer&) = delete;
  DeviceQuantizer& operator=(const DeviceQuantizer&) = delete;
  const QuantizerTables& tables() const { return tables_; }

 private:
  void* block_ = nullptr;  // one allocation holding every table
  QuantizerTables tables_;
};

// Encodes n_rows fp32 vectors x[n_rows][D] (device memory) into packed[n_rows][code_bytes] and
// scales[n_rows][n_groups] (fp16 bits), with the canonical fp64 arithmetic of tq_mse.hpp.
// Asynchronous on `stream` (a cudaStream_t, or null for the default stream).
void encode_rows(const QuantizerTables& t, const float* x, size_t n_rows, uint8_t* packed, uint16_t* scales,
                 void* stream);

}  // namespace kvbits::cuda
