// kvbits — little-endian byte writer and bounds-checked reader for the plan format.
// Internal header. Values are assembled byte by byte, so the host's endianness and alignment
// never matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvbits/status.hpp"

namespace kvbits::plan_io {

inline uint64_t load_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

inline void store_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * i));
}

class ByteWriter {
 public:
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put(bits, 4);
  }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    put(bits, 8);
  }
  void zeros(size_t n) { out_.insert(out_.end(), n, 0); }
  void bytes(const uint8_t* p, size_t n) { out_.insert(out_.end(), p, p + n); }
  void str(const std::string& s) {
    u32(uint32_t(s.size()));
    bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::vector<uint8_t>& data() { return out_; }

 private:
  void put(uint64_t v, size_t n) {
    const size_t at = out_.size();
    out_.resize(at + n);
    store_le(out_.data() + at, v, n);
  }
  std::vector<uint8_t> out_;
};

// Reads fields of one section payload. Every read checks the remaining bytes first and fails
// with Error(corrupt_data) naming the section, the current context and the field.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string section)
      : p_(data), size_(size), section_(std::move(section)) {}

  // E.g. "layer 2 kv head 1"; included in every message until changed.
  void set_context(std::string context) { context_ = std::move(context); }

  uint8_t u8(const char* field) { return uint8_t(take(1, field)); }
  uint16_t u16(const char* field) { return uint16_t(take(2, field)); }
  uint32_t u32(const char* field) { return uint32_t(take(4, field)); }
  uint64_t u64(const char* field) { return take(8, field); }
  double f64(const char* field) {
    const uint64_t bits = take(8, field);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  // Arrays: the byte count is checked against what is left before anything is allocated.
  std::vector<uint8_t> u8_array(size_t n, const char* field) {
    const uint8_t* p = span(n, 1, field);
    return std::vector<uint8_t>(p, p + n);
  }
  std::vector<uint32_t> u16_array(size_t n, const char* field) { return array<uint32_t, uint16_t>(n, field); }
  std::vector<double> f64_array(size_t n, const char* field) { return array<double, uint64_t>(n, field); }
  std::vector<float> f32_array(size_t n, const char* field) { return array<float, uint32_t>(n, field); }
  // Length-prefixed string of at most max_bytes (checked before allocating).
  std::string str(size_t max_bytes, const char* field) {
    const uint32_t n = u32(field);
    if (n > max_bytes)
      fail_at(std::string(field) + " is " + std::to_string(n) + " bytes long, the limit is " + std::to_string(max_bytes));
    const uint8_t* p = span(n, 1, field);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  void reserved_zero(size_t n, const char* field) {
    const uint8_t* p = span(n, 1, field);
    for (size_t i = 0; i < n; ++i)
      if (p[i] != 0) fail_at(std::string(field) + " byte " + std::to_string(i) + " is " + std::to_string(p[i]) + ", expected 0");
  }

  size_t remaining() const { return size_ - pos_; }
  // The payload must be consumed exactly.
  void expect_end() {
    context_.clear();
    if (pos_ != size_)
      fail_at(std::to_string(size_ - pos_) + " unexpected bytes after the last field (at offset " +
              std::to_string(pos_) + ")");
  }
  [[noreturn]] void fail_at(const std::string& message) const {
    fail(StatusCode::corrupt_data, "plan file: section '" + section_ + "'" +
                                       (context_.empty() ? std::string() : " (" + context_ + ")") + ": " + message);
  }

 private:
  const uint8_t* span(size_t n, size_t elem, const char* field) {
    if (n > (size_ - pos_) / elem)
      fail_at("truncated reading " + std::string(field) + " at offset " + std::to_string(pos_) + ": need " +
              std::to_string(n) + " x " + std::to_string(elem) + " bytes, " + std::to_string(size_ - pos_) + " left");
    const uint8_t* p = p_ + pos_;
    pos_ += n * elem;
    return p;
  }
  uint64_t take(size_t n, const char* field) { return load_le(span(1, n, field), n); }
  // n values stored as little-endian Stored words, returned as T (integers widened, floats
  // reinterpreted from their bit patterns).
  template <typename T, typename Stored>
  std::vector<T> array(size_t n, const char* field) {
    const uint8_t* p = span(n, sizeof(Stored), field);
    std::vector<T> v(n);
    for (size_t i = 0; i < n; ++i) {
      const Stored bits = Stored(load_le(p + i * sizeof(Stored), sizeof(Stored)));
      if constexpr (std::is_floating_point_v<T>) {
        static_assert(sizeof(T) == sizeof(Stored));
        std::memcpy(&v[i], &bits, sizeof bits);
      } else {
        v[i] = T(bits);
      }
    }
    return v;
  }

  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  std::string section_;
  std::string context_;
};

}  // namespace kvbits::plan_io
