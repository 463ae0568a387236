// kvbits — plan file container: header, section table, checksums and zstd
// (docs/plan-format.md §2, §5 steps 1-12, §7).
#include "plan/plan_container.hpp"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "kvbits/status.hpp"
#include "plan/byte_io.hpp"

namespace kvbits::plan_file {

namespace {

using plan_io::load_le;
using plan_io::store_le;

constexpr uint8_t kMagic[8] = {'K', 'V', 'B', 'P', 'L', 'A', 'N', 0};
constexpr uint32_t kZstdFrameMagic = 0xFD2FB528u;

// Header field offsets (docs/plan-format.md §2.1).
enum HeaderOffset : size_t {
  kOffMajor = 8,
  kOffMinor = 10,
  kOffHeaderSize = 12,
  kOffRequiredFlags = 16,
  kOffOptionalFlags = 24,
  kOffFileSize = 32,
  kOffSectionCount = 40,
  kOffEntrySize = 44,
  kOffTableChecksum = 48,
};
// Table entry field offsets (§2.2).
enum EntryOffset : size_t { kEntId = 0, kEntFlags = 4, kEntOffset = 8, kEntStored = 16, kEntRaw = 24, kEntChecksum = 32 };

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }

[[noreturn]] void corrupt(const std::string& m) { fail(StatusCode::corrupt_data, "plan file: " + m); }

std::string hex64(uint64_t v) {
  char buf[19];
  static const char digits[] = "0123456789abcdef";
  buf[0] = '0';
  buf[1] = 'x';
  for (int i = 0; i < 16; ++i) buf[2 + i] = digits[(v >> (60 - 4 * i)) & 15];
  buf[18] = 0;
  return buf;
}

std::vector<uint8_t> zstd_compress(const std::vector<uint8_t>& raw) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), &ZSTD_freeCCtx);
  if (!cctx) fail(StatusCode::out_of_memory, "plan file: cannot allocate a zstd compression context");
  // Every parameter that shapes the output is pinned (docs/plan-format.md §7).
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, kZstdLevel);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_windowLog, kZstdWindowLog);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_dictIDFlag, 0);
  std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
  const size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), raw.data(), raw.size());
  if (ZSTD_isError(n)) fail(StatusCode::internal, std::string("plan file: zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::vector<uint8_t> zstd_decompress(const StoredSection& s) {
  const std::string where = "section '" + id_text(s.id) + "': ";
  if (s.stored_size < 4 || load_le(s.stored, 4) != kZstdFrameMagic) corrupt(where + "compressed data is not a zstd frame");
  const unsigned long long declared = ZSTD_getFrameContentSize(s.stored, s.stored_size);
  if (declared == ZSTD_CONTENTSIZE_ERROR) corrupt(where + "bad zstd frame header");
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) corrupt(where + "zstd frame does not declare its content size");
  if (declared != s.raw_size)
    corrupt(where + "zstd frame declares " + std::to_string(declared) + " bytes, the table says raw_size " +
            std::to_string(s.raw_size));
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  if (!dctx) fail(StatusCode::out_of_memory, "plan file: cannot allocate a zstd decompression context");
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, kZstdWindowLog);

  // Grow the output only as bytes are produced: a declared size never buys memory by itself.
  std::vector<uint8_t> out(std::min<uint64_t>(s.raw_size, 64 * 1024));
  ZSTD_inBuffer in{s.stored, size_t(s.stored_size), 0};
  size_t produced = 0;
  for (;;) {
    ZSTD_outBuffer ob{out.data(), out.size(), produced};
    const size_t in_before = in.pos;
    const size_t r = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(r)) corrupt(where + "zstd: " + ZSTD_getErrorName(r));
    const bool progressed = ob.pos != produced || in.pos != in_before;
    produced = ob.pos;
    if (r == 0) break;  // frame complete
    if (produced == out.size()) {
      if (out.size() == s.raw_size) corrupt(where + "zstd frame decodes to more than raw_size " + std::to_string(s.raw_size));
      out.resize(std::min<uint64_t>(s.raw_size, uint64_t(out.size()) * 2));
    } else if (in.pos == in.size || !progressed) {
      corrupt(where + "zstd frame is truncated");
    }
  }
  if (in.pos != in.size)
    corrupt(where + std::to_string(in.size - in.pos) + " bytes after the zstd frame");
  if (produced != s.raw_size)
    corrupt(where + "zstd frame decodes to " + std::to_string(produced) + " bytes, raw_size says " +
            std::to_string(s.raw_size));
  return out;
}

bool printable_id(const uint8_t* p) {
  for (int i = 0; i < 4; ++i)
    if (p[i] < 0x21 || p[i] > 0x7E) return false;
  return true;
}

}  // namespace

std::string id_text(const SectionId& id) { return std::string(id.data(), id.size()); }

std::vector<uint8_t> write_container(const std::vector<SectionToWrite>& sections) {
  struct Placed {
    std::vector<uint8_t> compressed;  // empty when stored raw
    uint64_t offset = 0;
  };
  std::vector<Placed> placed(sections.size());
  const uint64_t table_end = kHeaderSize + uint64_t(sections.size()) * kEntrySize;
  uint64_t pos = table_end;
  for (size_t i = 0; i < sections.size(); ++i) {
    const std::vector<uint8_t>& raw = sections[i].raw;
    if (raw.size() >= kCompressMinBytes) {
      std::vector<uint8_t> z = zstd_compress(raw);
      if (z.size() < raw.size()) placed[i].compressed = std::move(z);
    }
    placed[i].offset = align8(pos);
    pos = placed[i].offset + (placed[i].compressed.empty() ? raw.size() : placed[i].compressed.size());
  }
  const uint64_t file_size = pos;
  if (file_size > kMaxFileSize)
    fail(StatusCode::out_of_memory, "plan file: the plan needs " + std::to_string(file_size) +
                                        " bytes, more than the format's limit of 2^31");

  std::vector<uint8_t> out(file_size, 0);
  uint8_t* h = out.data();
  std::memcpy(h, kMagic, sizeof kMagic);
  store_le(h + kOffMajor, kMajor, 2);
  store_le(h + kOffMinor, kMinor, 2);
  store_le(h + kOffHeaderSize, kHeaderSize, 4);
  store_le(h + kOffFileSize, file_size, 8);
  store_le(h + kOffSectionCount, sections.size(), 4);
  store_le(h + kOffEntrySize, kEntrySize, 4);
  for (size_t i = 0; i < sections.size(); ++i) {
    const bool z = !placed[i].compressed.empty();
    const std::vector<uint8_t>& stored = z ? placed[i].compressed : sections[i].raw;
    uint8_t* e = h + kHeaderSize + i * kEntrySize;
    std::memcpy(e + kEntId, sections[i].id.data(), 4);
    store_le(e + kEntFlags, kFlagRequired | (z ? kFlagZstd : 0), 4);
    store_le(e + kEntOffset, placed[i].offset, 8);
    store_le(e + kEntStored, stored.size(), 8);
    store_le(e + kEntRaw, sections[i].raw.size(), 8);
    store_le(e + kEntChecksum, XXH3_64bits(stored.data(), stored.size()), 8);
    if (!stored.empty()) std::memcpy(h + placed[i].offset, stored.data(), stored.size());
  }
  store_le(h + kOffTableChecksum, XXH3_64bits(h + kHeaderSize, table_end - kHeaderSize), 8);
  store_le(h + kHeaderSize - 8, XXH3_64bits(h, kHeaderSize - 8), 8);
  return out;
}

std::vector<StoredSection> read_container(const uint8_t* data, size_t size, const std::vector<SectionId>& known) {
  // Steps follow docs/plan-format.md §5.
  if (size > 0 && !data) fail(StatusCode::null_pointer, "plan file: data is null");
  if (size < kHeaderSize) {
    if (size > 0 && std::memcmp(data, kMagic, std::min<size_t>(size, sizeof kMagic)) != 0)
      corrupt("not a kvbits plan (bad magic)");
    corrupt("truncated: file is " + std::to_string(size) + " bytes, a plan header needs at least " +
            std::to_string(kHeaderSize));
  }
  if (std::memcmp(data, kMagic, sizeof kMagic) != 0) corrupt("not a kvbits plan (bad magic)");
  const uint32_t header_size = uint32_t(load_le(data + kOffHeaderSize, 4));
  if (header_size < kHeaderSize || header_size > kMaxHeaderSize || header_size % 8 != 0)
    corrupt("header: header_size is " + std::to_string(header_size) + ", expected a multiple of 8 in [64, 4096]");
  if (header_size > size)
    corrupt("truncated: file is " + std::to_string(size) + " bytes, the header alone is " + std::to_string(header_size));
  const uint64_t header_sum = load_le(data + header_size - 8, 8);
  const uint64_t header_want = XXH3_64bits(data, header_size - 8);
  if (header_sum != header_want)
    corrupt("header checksum mismatch: stored " + hex64(header_sum) + ", computed " + hex64(header_want));

  const uint16_t major = uint16_t(load_le(data + kOffMajor, 2));
  const uint16_t minor = uint16_t(load_le(data + kOffMinor, 2));
  const std::string version = std::to_string(major) + "." + std::to_string(minor);
  if (major == 0) corrupt("header: major version 0 does not exist");
  if (major > kMajor)
    fail(StatusCode::version_unsupported, "plan file: format version " + version + " is newer than this reader (1.x)");
  const uint64_t required_flags = load_le(data + kOffRequiredFlags, 8);
  if (required_flags != 0)
    fail(StatusCode::version_unsupported, "plan file: format " + version + " needs required features " +
                                              hex64(required_flags) + " this reader does not know");

  const uint64_t file_size = load_le(data + kOffFileSize, 8);
  if (file_size > kMaxFileSize)
    fail(StatusCode::out_of_memory, "plan file: header says the file is " + std::to_string(file_size) +
                                        " bytes, more than the limit of 2^31");
  if (file_size > size)
    corrupt("truncated: file is " + std::to_string(size) + " bytes, header says " + std::to_string(file_size));
  if (file_size < size)
    corrupt(std::to_string(size - file_size) + " trailing bytes: file is " + std::to_string(size) +
            " bytes, header says " + std::to_string(file_size));

  const uint32_t entry_size = uint32_t(load_le(data + kOffEntrySize, 4));
  const uint32_t count = uint32_t(load_le(data + kOffSectionCount, 4));
  if (entry_size < kEntrySize || entry_size > kMaxEntrySize || entry_size % 8 != 0)
    corrupt("header: table_entry_size is " + std::to_string(entry_size) + ", expected a multiple of 8 in [40, 256]");
  if (count > kMaxSections)
    corrupt("header: section_count is " + std::to_string(count) + ", the limit is " + std::to_string(kMaxSections));
  const uint64_t table_end = uint64_t(header_size) + uint64_t(count) * entry_size;
  if (table_end > file_size)
    corrupt("section table (" + std::to_string(count) + " entries) runs past the end of the file");
  const uint64_t table_sum = load_le(data + kOffTableChecksum, 8);
  const uint64_t table_want = XXH3_64bits(data + header_size, size_t(table_end - header_size));
  if (table_sum != table_want)
    corrupt("section table checksum mismatch: stored " + hex64(table_sum) + ", computed " + hex64(table_want));

  std::vector<StoredSection> found(known.size());
  std::vector<bool> seen(known.size(), false);
  std::vector<StoredSection> all;
  uint64_t end = table_end;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = data + header_size + uint64_t(i) * entry_size;
    const std::string entry = "section table entry " + std::to_string(i);
    if (!printable_id(e + kEntId)) corrupt(entry + ": id is not four printable ASCII characters");
    StoredSection s;
    std::memcpy(s.id.data(), e + kEntId, 4);
    const std::string name = entry + " ('" + id_text(s.id) + "')";
    const uint32_t flags = uint32_t(load_le(e + kEntFlags, 4));
    const uint64_t offset = load_le(e + kEntOffset, 8);
    s.stored_size = load_le(e + kEntStored, 8);
    s.raw_size = load_le(e + kEntRaw, 8);
    s.checksum = load_le(e + kEntChecksum, 8);
    s.compressed = (flags & kFlagZstd) != 0;
    if (offset != align8(end))
      corrupt(name + ": offset is " + std::to_string(offset) + ", expected " + std::to_string(align8(end)));
    if (offset > file_size || s.stored_size > file_size - offset)
      corrupt(name + ": " + std::to_string(s.stored_size) + " stored bytes at offset " + std::to_string(offset) +
              " run past the end of the file (" + std::to_string(file_size) + " bytes)");
    for (uint64_t p = end; p < offset; ++p)
      if (data[p] != 0) corrupt(name + ": padding byte at offset " + std::to_string(p) + " is not 0");
    if (!s.compressed && s.raw_size != s.stored_size)
      corrupt(name + ": uncompressed but raw_size " + std::to_string(s.raw_size) + " differs from stored_size " +
              std::to_string(s.stored_size));
    s.stored = data + offset;
    end = offset + s.stored_size;

    const auto k = std::find(known.begin(), known.end(), s.id);
    if (k == known.end()) {
      if (flags & kFlagRequired)
        fail(StatusCode::version_unsupported, "plan file: " + name + " is required but unknown to this reader (format 1.0)");
    } else {
      const size_t idx = size_t(k - known.begin());
      if (seen[idx]) corrupt(name + ": duplicate section");
      if (!(flags & kFlagRequired)) corrupt(name + ": a 1.0 section must carry the required flag");
      if (flags & kEncodingFlags)
        fail(StatusCode::version_unsupported, "plan file: " + name + " uses encoding flags " +
                                                  hex64(flags & kEncodingFlags) + " this reader does not know");
      if (s.raw_size > kMaxRawSize)
        fail(StatusCode::out_of_memory, "plan file: " + name + " declares raw_size " + std::to_string(s.raw_size) +
                                            ", more than the reader's limit of 2^30 bytes");
      seen[idx] = true;
      found[idx] = s;
    }
    all.push_back(s);
  }
  if (end != file_size)
    corrupt(std::to_string(file_size - end) + " bytes after the last section (it ends at " + std::to_string(end) +
            ", file_size is " + std::to_string(file_size) + ")");
  for (const StoredSection& s : all) {
    const uint64_t want = XXH3_64bits(s.stored, size_t(s.stored_size));
    if (s.checksum != want)
      corrupt("section '" + id_text(s.id) + "' checksum mismatch: stored " + hex64(s.checksum) + ", computed " +
              hex64(want));
  }
  for (size_t k = 0; k < known.size(); ++k)
    if (!seen[k]) corrupt("section '" + id_text(known[k]) + "' is missing");
  return found;
}

std::vector<uint8_t> section_payload(const StoredSection& s, uint64_t min_raw, uint64_t max_raw) {
  if (s.raw_size < min_raw || s.raw_size > max_raw) {
    const std::string want = min_raw == max_raw ? "exactly " + std::to_string(min_raw)
                                                : "between " + std::to_string(min_raw) + " and " + std::to_string(max_raw);
    corrupt("section '" + id_text(s.id) + "': raw_size is " + std::to_string(s.raw_size) + " bytes, expected " + want +
            " for this shape");
  }
  if (s.compressed) return zstd_decompress(s);
  return std::vector<uint8_t>(s.stored, s.stored + s.stored_size);
}

}  // namespace kvbits::plan_file
