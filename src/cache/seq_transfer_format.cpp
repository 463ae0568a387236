#include "seq_transfer_format.hpp"

#include <cstring>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits::cache_detail::transfer {
namespace {

[[noreturn]] void corrupt(const std::string& what) {
  fail(StatusCode::corrupt_data, "cache: import: " + what + "; nothing was imported");
}

void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

constexpr size_t kMaxLayers = 4096;  // as ModelShape

}  // namespace

uint64_t fnv1a64(const uint8_t* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

uint64_t fold_chunk_hashes(const uint64_t* hashes, size_t n_chunks) {
  uint64_t h = kFnvOffset;
  uint8_t le[8];
  for (size_t c = 0; c < n_chunks; ++c) {
    put64(le, hashes[c]);
    h = fnv1a64(le, 8, h);
  }
  return h;
}

uint64_t payload_checksum(const uint8_t* p, size_t n, const Context& ctx) {
  std::vector<uint64_t> hashes(checksum_chunks(n));
  ctx.parallel_for(hashes.size(), [&](size_t c) {
    const size_t at = c * kChecksumChunk;
    hashes[c] = fnv1a64(p + at, std::min(kChecksumChunk, n - at));
  });
  return fold_chunk_hashes(hashes.data(), hashes.size());
}

std::vector<uint8_t> encode_header(const Header& h) {
  std::vector<uint8_t> b(h.header_size(), 0);
  std::memcpy(b.data(), kMagic, 8);
  put32(&b[8], kVersion);
  put32(&b[12], uint32_t(b.size()));
  put64(&b[16], h.plan_fingerprint);
  put32(&b[24], h.n_kv_heads);
  put32(&b[28], h.head_begin);
  put32(&b[32], h.head_end);
  put32(&b[36], h.page_size);
  put32(&b[40], h.sink);
  put32(&b[44], h.window);
  put32(&b[48], uint32_t(h.layers.size()));
  put32(&b[52], h.flags);
  put64(&b[56], h.n_pages);
  put64(&b[64], h.payload_size);
  put64(&b[72], h.payload_checksum);
  for (size_t l = 0; l < h.layers.size(); ++l) {
    uint8_t* e = &b[kFixedBytes + kLayerEntryBytes * l];
    put32(e, h.layers[l].len);
    put32(e + 4, h.layers[l].qend);
    put64(e + 8, h.layers[l].bytes);
  }
  put64(&b[b.size() - 8], fnv1a64(b.data(), b.size() - 8));
  return b;
}

size_t read_header_size(const uint8_t* p, size_t size) {
  if (size < 16)
    corrupt("truncated: " + std::to_string(size) + " bytes, a sequence export starts with a header of at least " +
            std::to_string(Header::header_bytes(1)) + " bytes");
  if (std::memcmp(p, kMagic, 8) != 0) corrupt("bad magic: not a kvbits sequence export (\"KVBSEQ\")");
  const uint32_t version = get32(p + 8);
  if (version != kVersion)
    fail(StatusCode::version_unsupported, "cache: import: sequence export version " + std::to_string(version) +
                                              "; this kvbits reads version " + std::to_string(kVersion) +
                                              "; nothing was imported");
  const uint32_t hs = get32(p + 12);
  if (hs < Header::header_bytes(1) || (hs - Header::header_bytes(0)) % kLayerEntryBytes != 0 ||
      hs > Header::header_bytes(kMaxLayers))
    corrupt("header_size " + std::to_string(hs) + " is not 88 + 16 * n_layers");
  if (size < hs)
    corrupt("truncated: " + std::to_string(size) + " bytes, the header alone is " + std::to_string(hs));
  return hs;
}

Header decode_header(const uint8_t* p, size_t hs, size_t size) {
  const uint64_t want = get64(p + hs - 8), got = fnv1a64(p, hs - 8);
  if (want != got) corrupt("header checksum mismatch");
  Header h;
  h.plan_fingerprint = get64(p + 16);
  h.n_kv_heads = get32(p + 24);
  h.head_begin = get32(p + 28);
  h.head_end = get32(p + 32);
  h.page_size = get32(p + 36);
  h.sink = get32(p + 40);
  h.window = get32(p + 44);
  const uint32_t n_layers = get32(p + 48);
  h.flags = get32(p + 52);
  h.n_pages = get64(p + 56);
  h.payload_size = get64(p + 64);
  h.payload_checksum = get64(p + 72);
  if (Header::header_bytes(n_layers) != hs)
    corrupt("n_layers " + std::to_string(n_layers) + " does not match header_size " + std::to_string(hs));
  if (h.flags != 0)
    fail(StatusCode::version_unsupported, "cache: import: flags " + std::to_string(h.flags) +
                                              " name features this kvbits does not know; nothing was imported");
  h.layers.resize(n_layers);
  for (size_t l = 0; l < n_layers; ++l) {
    const uint8_t* e = p + kFixedBytes + kLayerEntryBytes * l;
    h.layers[l] = {get32(e), get32(e + 4), get64(e + 8)};
  }
  if (h.payload_size != size - hs)
    corrupt("the buffer holds " + std::to_string(size) + " bytes, the header says " + std::to_string(hs) + " + " +
            std::to_string(h.payload_size) + (size - hs < h.payload_size ? " (truncated)" : " (extra bytes)"));
  return h;
}

}  // namespace kvbits::cache_detail::transfer
