// A second, test-side implementation of the plan container (docs/plan-format.md §2), written
// from the spec: split a file into its sections, edit them, join them back with fresh
// checksums. Lets tests craft files the library's writer never produces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvbits::test {

constexpr uint32_t kSectionZstd = 1u << 0;
constexpr uint32_t kSectionRequired = 1u << 1;

struct FileSection {
  std::string id;  // 4 chars
  uint32_t flags = kSectionRequired;
  std::vector<uint8_t> stored;
  uint64_t raw_size = 0;
};

struct PlanFile {
  uint16_t major = 1;
  uint16_t minor = 0;
  uint32_t header_size = 64;
  uint32_t entry_size = 40;
  uint64_t required_flags = 0;
  uint64_t optional_flags = 0;
  std::vector<FileSection> sections;

  FileSection& section(const std::string& id);  // throws std::out_of_range if absent
};

uint64_t load_u64(const uint8_t* p, size_t n);
void store_u64(uint8_t* p, uint64_t v, size_t n);

// Splits a well-formed file (throws std::runtime_error otherwise).
PlanFile split_plan_file(const std::vector<uint8_t>& bytes);
// Canonical layout, all checksums computed; extra header/entry bytes are zero.
std::vector<uint8_t> join_plan_file(const PlanFile& file);

// The raw payload of a section (decompressing zstd), and its replacement stored raw.
std::vector<uint8_t> raw_payload(const FileSection& s);
void set_raw_payload(FileSection& s, std::vector<uint8_t> raw);

// Recomputes every checksum that can be located in a possibly malformed file (section
// checksums of entries that lie inside it, the table checksum, the header checksum), so that
// a mutated file gets past the checksums into the decoders. Never reads out of bounds.
void reseal(std::vector<uint8_t>& bytes);

}  // namespace kvbits::test
