// kvbits — the byte layout of one exported sequence (docs/transfer.md): a fixed header, one
// entry per layer, a header checksum, then the payload. Little-endian throughout.
//
//   offset  size  field
//        0     8  magic "KVBSEQ\0\0"
//        8     4  version (1)
//       12     4  header_size = 88 + 16 * n_layers (bytes before the payload)
//       16     8  plan fingerprint: FNV-1a 64 of the serialized plan (all KV heads)
//       24     4  n_kv_heads of the plan
//       28     4  kv_head_begin     32  4  kv_head_end
//       36     4  page_size         40  4  sink_tokens      44  4  window_tokens
//       48     4  n_layers          52  4  flags (0)
//       56     8  n_pages: page-table entries of the sequence (the most any layer uses)
//       64     8  payload_size
//       72     8  payload checksum (payload_checksum below)
//       80  16*L  per layer: len u32, qend u32, payload bytes of the layer u64
//   80+16L     8  header checksum: FNV-1a 64 of bytes [0, header_size - 8)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvbits/context.hpp"

namespace kvbits::cache_detail::transfer {

constexpr uint8_t kMagic[8] = {'K', 'V', 'B', 'S', 'E', 'Q', 0, 0};
constexpr uint32_t kVersion = 1;
constexpr size_t kFixedBytes = 80;      // up to the layer table
constexpr size_t kLayerEntryBytes = 16;
constexpr size_t kChecksumChunk = 4096;  // payload checksum chunk
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

// FNV-1a 64 of p[0, n), continuing from h.
uint64_t fnv1a64(const uint8_t* p, size_t n, uint64_t h = kFnvOffset);
// The payload checksum from the FNV-1a 64 of each kChecksumChunk-byte chunk (the last one may
// be shorter): FNV-1a 64 of those hashes as 8 little-endian bytes each, in chunk order.
uint64_t fold_chunk_hashes(const uint64_t* hashes, size_t n_chunks);
inline size_t checksum_chunks(size_t n) { return (n + kChecksumChunk - 1) / kChecksumChunk; }
// payload_checksum of host memory, chunks hashed on the context's workers.
uint64_t payload_checksum(const uint8_t* p, size_t n, const Context& ctx);

struct LayerEntry {
  uint32_t len = 0, qend = 0;
  uint64_t bytes = 0;
};

struct Header {
  uint64_t plan_fingerprint = 0;
  uint32_t n_kv_heads = 0, head_begin = 0, head_end = 0;
  uint32_t page_size = 0, sink = 0, window = 0;
  uint32_t flags = 0;
  uint64_t n_pages = 0, payload_size = 0, payload_checksum = 0;
  std::vector<LayerEntry> layers;

  size_t header_size() const { return header_bytes(layers.size()); }
  static size_t header_bytes(size_t n_layers) { return kFixedBytes + kLayerEntryBytes * n_layers + 8; }
};

// The header bytes, header checksum included.
std::vector<uint8_t> encode_header(const Header& h);

// The first 16 bytes: magic, version, header_size. Error(corrupt_data) "truncated" / "bad
// magic" / a header_size that is not 88 + 16 * L; Error(version_unsupported) for another version.
size_t read_header_size(const uint8_t* p, size_t size);
// A whole header (p holds header_size bytes, size is the buffer's): the checks above, the
// header checksum, n_layers against header_size, flags zero (else version_unsupported), and
// size == header_size + payload_size. Error(corrupt_data) naming what is wrong.
Header decode_header(const uint8_t* p, size_t header_size, size_t size);

}  // namespace kvbits::cache_detail::transfer
