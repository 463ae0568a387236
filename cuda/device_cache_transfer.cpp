// Sequence export / import on a CUDA cache (src/cache/cache_transfer.cpp decides what moves).
// The list's spans go to the device as tables of pieces of at most 64 KB and move in one launch
// (cuda/transfer_copy.cu), then a second launch zeroes the rows past the packed tokens:
//   - a buffer in this GPU's memory or in page-locked host memory: read or written in place
//     (page-locked memory through its mapped address);
//   - a pageable host buffer: 16 MB at a time through a staging chunk of the workspace, gathered
//     and copied down in one piece on export, copied up in one piece and scattered on import (as
//     fast as one cudaMemcpyAsync per run of pages where pages are in order, measured on an H100).
// So a sequence costs a few launches and bus copies whatever the order of its pages. The
// payload checksum is computed where the payload lives, so a device buffer never travels through
// the host. Every call waits.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cache/seq_transfer_format.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_cache.hpp"
#include "cuda/transfer_checksum.hpp"
#include "cuda/transfer_copy.hpp"

namespace kvbits::cuda {
namespace {

namespace transfer = cache_detail::transfer;
using cache_detail::TransferList;
using cache_detail::TransferSpan;

// Where a caller's buffer lives, from one cudaPointerGetAttributes: `device` for memory of the
// cache's GPU (or managed); `reach`, the address the GPU's kernels use, for that and for host
// memory page-locked for this GPU (mapped under unified addressing); neither for pageable
// memory (or page-locked while another GPU was current). Device memory of another GPU is
// refused (Error(invalid_argument)): nothing here copies between GPUs.
struct BufferPlace {
  bool device = false;
  uint8_t* reach = nullptr;
};
BufferPlace place_of(const void* p, int device, const char* op) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  if (a.type == cudaMemoryTypeDevice && a.device != device)
    fail(StatusCode::invalid_argument, "cache: " + std::string(op) + ": the buffer is device memory of GPU " +
                                           std::to_string(a.device) + ", the cache is on GPU " + std::to_string(device));
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged)
    return {true, static_cast<uint8_t*>(const_cast<void*>(p))};
  if (a.type == cudaMemoryTypeHost && a.device == device) return {false, static_cast<uint8_t*>(a.devicePointer)};
  return {};
}

// Spans of at most kPiece bytes: a merged run of pages is split so that many blocks share it.
constexpr uint64_t kPiece = 64 << 10;
// A pageable host payload moves through a device staging buffer of this size, chunk by chunk.
constexpr uint64_t kStage = 16 << 20;

// Calls f(span, payload offset, bytes) for every piece of `spans` in payload bytes [w0, w1).
template <class F>
void for_each_piece(const std::vector<TransferSpan>& spans, uint64_t w0, uint64_t w1, F&& f) {
  // Spans ascend by payload offset: start at the first one that ends past w0.
  auto it = std::lower_bound(spans.begin(), spans.end(), w0,
                             [](const TransferSpan& t, uint64_t at) { return t.buf + t.bytes <= at; });
  for (; it != spans.end() && it->buf < w1; ++it) {
    const uint64_t lo = std::max(it->buf, w0), hi = std::min(it->buf + it->bytes, w1);
    for (uint64_t at = lo; at < hi; at += kPiece) f(*it, at, std::min(kPiece, hi - at));
  }
}

size_t piece_count(const std::vector<TransferSpan>& spans, uint64_t w0, uint64_t w1) {
  size_t n = 0;
  for_each_piece(spans, w0, w1, [&](const TransferSpan&, uint64_t, uint64_t) { ++n; });
  return n;
}

// Appends the pieces of `spans` in payload bytes [w0, w1), the payload's byte w0 being at `base`
// (device-reachable): payload -> cache when `into_cache`, else cache -> payload; with `zero`,
// the pieces zero their payload bytes instead.
void add_pieces(std::vector<CopySpan>& out, const std::vector<TransferSpan>& spans, uint64_t w0, uint64_t w1,
                uint8_t* base, bool into_cache, bool zero) {
  for_each_piece(spans, w0, w1, [&](const TransferSpan& t, uint64_t at, uint64_t n) {
    uint8_t* pay = base + (at - w0);
    uint8_t* cache = t.cache + (at - t.buf);
    if (zero) out.push_back({nullptr, pay, n});
    else if (into_cache) out.push_back({pay, cache, n});
    else out.push_back({cache, pay, n});
  });
}

// Zero spans in the cache (an import's rows past the packed tokens), after its copies.
void add_cache_zeros(std::vector<CopySpan>& out, const TransferList& list) {
  for (const TransferSpan& z : list.zeros) out.push_back({nullptr, z.cache, z.bytes});
}

// Uploads `spans` as one table at `table` and copies [0, split) in one launch, then the rest in
// a second (the second's spans may overlap the first's, and run after them).
void launch_table(CudaContext::Call& call, CopySpan* table, const std::vector<CopySpan>& spans, size_t split) {
  if (spans.empty()) return;
  check_cuda(cudaMemcpyAsync(table, spans.data(), spans.size() * sizeof(CopySpan), cudaMemcpyHostToDevice,
                             call.stream()),
             "transfer: cudaMemcpyAsync(span table)");
  copy_spans(table, split, call.stream());
  copy_spans(table + split, spans.size() - split, call.stream());
}

// A payload the device reaches at `payload`: every copy in one launch, then the zeros (in the
// payload on export, in the cache on import) in a second.
void launch_span_copies(CudaContext::Call& call, const TransferList& list, uint8_t* payload, bool into_cache) {
  std::vector<CopySpan> spans;
  add_pieces(spans, list.copies, 0, list.payload_bytes, payload, into_cache, false);
  const size_t split = spans.size();
  if (into_cache) add_cache_zeros(spans, list);
  else add_pieces(spans, list.zeros, 0, list.payload_bytes, payload, false, true);
  launch_table(call, reinterpret_cast<CopySpan*>(call.workspace(spans.size() * sizeof(CopySpan))), spans, split);
}

// A pageable host payload, kStage bytes at a time through the workspace: an export gathers the
// chunk on the device and copies it down in one piece; an import copies it up in one piece and
// scatters it, then zeroes the cache's rows past the packed tokens.
void staged_span_copies(CudaContext::Call& call, const TransferList& list, uint8_t* payload, bool into_cache) {
  std::vector<CopySpan> spans;
  for (uint64_t c0 = 0; c0 < list.payload_bytes; c0 += kStage) {
    const uint64_t c1 = std::min(c0 + kStage, list.payload_bytes);
    // The workspace: the staging chunk, then the span table (asked for per chunk: it may grow,
    // and work already queued keeps the retired buffer).
    const size_t n_pieces = piece_count(list.copies, c0, c1) + (into_cache ? 0 : piece_count(list.zeros, c0, c1));
    uint8_t* w = call.workspace(kStage + n_pieces * sizeof(CopySpan));
    spans.clear();
    add_pieces(spans, list.copies, c0, c1, w, into_cache, false);
    const size_t split = spans.size();
    if (!into_cache) add_pieces(spans, list.zeros, c0, c1, w, false, true);
    auto* table = reinterpret_cast<CopySpan*>(w + kStage);
    if (into_cache) {
      check_cuda(cudaMemcpyAsync(w, payload + c0, c1 - c0, cudaMemcpyHostToDevice, call.stream()),
                 "import: cudaMemcpyAsync(chunk)");
      launch_table(call, table, spans, split);
    } else {
      launch_table(call, table, spans, split);
      check_cuda(cudaMemcpyAsync(payload + c0, w, c1 - c0, cudaMemcpyDeviceToHost, call.stream()),
                 "export: cudaMemcpyAsync(chunk)");
    }
  }
  if (into_cache) {
    spans.clear();
    add_cache_zeros(spans, list);
    launch_table(call, reinterpret_cast<CopySpan*>(call.workspace(spans.size() * sizeof(CopySpan))), spans, 0);
  }
}

// Chunk hashes in the workspace, folded on the host.
uint64_t device_checksum(CudaContext::Call& call, const uint8_t* p, size_t n) {
  const size_t chunks = transfer::checksum_chunks(n);
  std::vector<uint64_t> hashes(chunks);
  if (chunks > 0) {
    auto* w = reinterpret_cast<uint64_t*>(call.workspace(chunks * 8));
    chunk_checksums(p, n, w, call.stream());
    check_cuda(cudaMemcpyAsync(hashes.data(), w, chunks * 8, cudaMemcpyDeviceToHost, call.stream()),
               "cudaMemcpyAsync(checksums)");
    call.sync();
  }
  return transfer::fold_chunk_hashes(hashes.data(), chunks);
}

}  // namespace

uint64_t CudaCache::export_payload(const TransferList& list, uint8_t* payload, void* stream) const {
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "export");
  const BufferPlace at = place_of(payload, ctx_.device(), "export");
  if (at.reach) launch_span_copies(call, list, at.reach, false);  // page-locked: written over the bus
  else staged_span_copies(call, list, payload, false);
  if (at.device) return device_checksum(call, payload, size_t(list.payload_bytes));
  call.sync();
  return transfer::payload_checksum(payload, size_t(list.payload_bytes), m_.ctx);
}

void CudaCache::import_payload(const TransferList& list, const uint8_t* payload, void* stream) {
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  flush_deferred(call);  // pages freed earlier are zeroed before they are written below
  const BufferPlace at = place_of(payload, ctx_.device(), "import");
  if (at.reach) launch_span_copies(call, list, at.reach, true);
  else staged_span_copies(call, list, const_cast<uint8_t*>(payload), true);
  call.sync();
}

void CudaCache::copy_header(void* dst, const void* src, size_t n, void* stream, const char* op) const {
  if (n == 0) return;
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, op);
  check_cuda(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, call.stream()),
             (std::string(op) + ": cudaMemcpyAsync(header)").c_str());
  call.sync();
}

void CudaCache::write_buffer(void* buf, const void* host, size_t n, void* stream) const {
  copy_header(buf, host, n, stream, "export");
}

void CudaCache::read_buffer(void* host, const void* buf, size_t n, void* stream) const {
  copy_header(host, buf, n, stream, "import");
}

uint64_t CudaCache::buffer_checksum(const uint8_t* buf, size_t n, void* stream) const {
  if (!place_of(buf, ctx_.device(), "import").device) return transfer::payload_checksum(buf, n, m_.ctx);
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  return device_checksum(call, buf, n);
}

}  // namespace kvbits::cuda
