#include "plan_file_edit.hpp"

#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <stdexcept>

namespace kvbits::test {

namespace {
constexpr uint8_t kMagic[8] = {'K', 'V', 'B', 'P', 'L', 'A', 'N', 0};
uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }
}  // namespace

FileSection& PlanFile::section(const std::string& id) {
  for (FileSection& s : sections)
    if (s.id == id) return s;
  throw std::out_of_range("no section " + id);
}

uint64_t load_u64(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

void store_u64(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(v >> (8 * i));
}

PlanFile split_plan_file(const std::vector<uint8_t>& b) {
  if (b.size() < 64 || std::memcmp(b.data(), kMagic, 8) != 0) throw std::runtime_error("not a plan file");
  PlanFile f;
  f.major = uint16_t(load_u64(&b[8], 2));
  f.minor = uint16_t(load_u64(&b[10], 2));
  f.header_size = uint32_t(load_u64(&b[12], 4));
  f.required_flags = load_u64(&b[16], 8);
  f.optional_flags = load_u64(&b[24], 8);
  const uint32_t count = uint32_t(load_u64(&b[40], 4));
  f.entry_size = uint32_t(load_u64(&b[44], 4));
  for (uint32_t i = 0; i < count; ++i) {
    const size_t e = f.header_size + size_t(i) * f.entry_size;
    if (e + 40 > b.size()) throw std::runtime_error("table past the end");
    FileSection s;
    s.id.assign(reinterpret_cast<const char*>(&b[e]), 4);
    s.flags = uint32_t(load_u64(&b[e + 4], 4));
    const uint64_t offset = load_u64(&b[e + 8], 8), stored = load_u64(&b[e + 16], 8);
    s.raw_size = load_u64(&b[e + 24], 8);
    if (offset > b.size() || stored > b.size() - offset) throw std::runtime_error("section past the end");
    s.stored.assign(b.begin() + long(offset), b.begin() + long(offset + stored));
    f.sections.push_back(std::move(s));
  }
  return f;
}

std::vector<uint8_t> join_plan_file(const PlanFile& f) {
  const uint64_t table_end = f.header_size + uint64_t(f.sections.size()) * f.entry_size;
  std::vector<uint64_t> offsets;
  uint64_t pos = table_end;
  for (const FileSection& s : f.sections) {
    offsets.push_back(align8(pos));
    pos = offsets.back() + s.stored.size();
  }
  std::vector<uint8_t> b(pos, 0);
  std::memcpy(b.data(), kMagic, 8);
  store_u64(&b[8], f.major, 2);
  store_u64(&b[10], f.minor, 2);
  store_u64(&b[12], f.header_size, 4);
  store_u64(&b[16], f.required_flags, 8);
  store_u64(&b[24], f.optional_flags, 8);
  store_u64(&b[32], pos, 8);
  store_u64(&b[40], f.sections.size(), 4);
  store_u64(&b[44], f.entry_size, 4);
  for (size_t i = 0; i < f.sections.size(); ++i) {
    const FileSection& s = f.sections[i];
    uint8_t* e = &b[f.header_size + i * f.entry_size];
    std::memcpy(e, s.id.data(), 4);
    store_u64(e + 4, s.flags, 4);
    store_u64(e + 8, offsets[i], 8);
    store_u64(e + 16, s.stored.size(), 8);
    store_u64(e + 24, s.raw_size, 8);
    store_u64(e + 32, XXH3_64bits(s.stored.data(), s.stored.size()), 8);
    if (!s.stored.empty()) std::memcpy(&b[offsets[i]], s.stored.data(), s.stored.size());
  }
  store_u64(&b[48], XXH3_64bits(&b[f.header_size], table_end - f.header_size), 8);
  store_u64(&b[f.header_size - 8], XXH3_64bits(b.data(), f.header_size - 8), 8);
  return b;
}

std::vector<uint8_t> raw_payload(const FileSection& s) {
  if (!(s.flags & kSectionZstd)) return s.stored;
  std::vector<uint8_t> raw(s.raw_size);
  const size_t n = ZSTD_decompress(raw.data(), raw.size(), s.stored.data(), s.stored.size());
  if (ZSTD_isError(n) || n != raw.size()) throw std::runtime_error("bad zstd section");
  return raw;
}

void set_raw_payload(FileSection& s, std::vector<uint8_t> raw) {
  s.flags &= ~kSectionZstd;
  s.raw_size = raw.size();
  s.stored = std::move(raw);
}

void reseal(std::vector<uint8_t>& b) {
  if (b.size() < 64) return;
  const uint64_t header_size = load_u64(&b[12], 4);
  if (header_size < 16 || header_size > b.size()) return;
  const uint64_t count = load_u64(&b[40], 4), entry_size = load_u64(&b[44], 4);
  if (header_size >= 56 && entry_size >= 40 && count <= 1024 && header_size + count * entry_size <= b.size()) {
    for (uint64_t i = 0; i < count; ++i) {
      uint8_t* e = &b[header_size + i * entry_size];
      const uint64_t offset = load_u64(e + 8, 8), stored = load_u64(e + 16, 8);
      if (offset <= b.size() && stored <= b.size() - offset)
        store_u64(e + 32, XXH3_64bits(b.data() + offset, stored), 8);
    }
    store_u64(&b[48], XXH3_64bits(&b[header_size], count * entry_size), 8);
  }
  store_u64(&b[header_size - 8], XXH3_64bits(b.data(), header_size - 8), 8);
}

}  // namespace kvbits::test
