// kvbits — a minimal, validating safetensors reader/writer for activation dumps.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32"|"F16"|"BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value", ...}}, then the data. See docs/activation-dumps.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kvbits/types.hpp"

namespace kvbits {

struct TensorView {
  DType dtype = DType::f32;
  std::vector<uint64_t> shape;
  // Points into the owning SafetensorsFile. The data section starts at an allocation
  // boundary, so a tensor is as aligned as its data_offsets begin.
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  uint64_t numel() const;
};

// Move-only: the tensor views point into the file's own buffer.
class SafetensorsFile {
 public:
  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Reads and validates the whole file. Error(io_error | corrupt_data | unsupported).
  static SafetensorsFile load(const std::string& path);
  static SafetensorsFile parse(std::vector<uint8_t> bytes);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& tensor(const std::string& name) const;  // Error(not_found)
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::vector<uint8_t> bytes_;  // the data section only (the header is parsed away)
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<uint64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes
};

// Writes tensors (sorted by name, 8-byte aligned data) and string metadata; the same inputs
// give the same bytes. The file appears under `path` only once complete (temp file + rename).
// Error(invalid_argument | null_pointer) for empty, reserved or duplicate names, overflowing
// shapes or null data; Error(io_error) when writing fails.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace kvbits
