// kvbits — the container layer of plan files: header, section table, checksums, zstd
// (docs/plan-format.md §1-§2, §5 steps 1-12). Knows nothing about what sections hold.
// Internal header.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvbits::plan_file {

constexpr uint16_t kMajor = 1;
constexpr uint16_t kMinor = 0;
constexpr uint32_t kHeaderSize = 64;  // written; readers accept [64, 4096]
constexpr uint32_t kMaxHeaderSize = 4096;
constexpr uint32_t kEntrySize = 40;  // written; readers accept [40, 256]
constexpr uint32_t kMaxEntrySize = 256;
constexpr uint32_t kMaxSections = 64;
constexpr uint64_t kMaxFileSize = uint64_t(1) << 31;
constexpr uint64_t kMaxRawSize = uint64_t(1) << 30;
constexpr uint32_t kFlagZstd = 1u << 0;
constexpr uint32_t kFlagRequired = 1u << 1;
constexpr uint32_t kEncodingFlags = 0xFFFFu & ~kFlagZstd & ~kFlagRequired;  // unknown: must refuse
constexpr size_t kCompressMinBytes = 4096;
constexpr int kZstdLevel = 9;
constexpr int kZstdWindowLog = 22;

using SectionId = std::array<char, 4>;
std::string id_text(const SectionId& id);

struct SectionToWrite {
  SectionId id;
  std::vector<uint8_t> raw;
};

// Lays the sections out canonically in the given order, compressing those the writer rules
// select, and seals the table and header with their checksums.
std::vector<uint8_t> write_container(const std::vector<SectionToWrite>& sections);

struct StoredSection {
  SectionId id{};
  bool compressed = false;
  const uint8_t* stored = nullptr;
  uint64_t stored_size = 0;
  uint64_t raw_size = 0;
  uint64_t checksum = 0;  // as stored in the table
};

// Checks the header, table, layout, versions and every checksum. Returns the sections whose
// ids are in `known` (all of which must be present), in the order of `known`; unknown optional
// sections are skipped, unknown required ones refused.
std::vector<StoredSection> read_container(const uint8_t* data, size_t size, const std::vector<SectionId>& known);

// The raw bytes of a section after checking raw_size against [min_raw, max_raw]
// (Error(corrupt_data) otherwise) and decompressing if needed; the output buffer grows only
// as the decoder produces bytes.
std::vector<uint8_t> section_payload(const StoredSection& section, uint64_t min_raw, uint64_t max_raw);

}  // namespace kvbits::plan_file
