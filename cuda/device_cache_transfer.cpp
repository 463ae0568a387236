// Sequence export / import on a CUDA cache (src/cache/cache_transfer.cpp decides what moves).
// A buffer in device memory or page-locked host memory: the list's spans go to the device as
// one table and move in one launch (cuda/transfer_copy.cu), then a second launch zeroes the rows
// past the packed tokens. A pageable host buffer: every span (pages with consecutive ids already
// merged) is one cudaMemcpyAsync (cudaMemcpyDefault). The payload checksum is computed where the payload lives, so a device
// buffer never travels through the host. Every call waits.
#include <cuda_runtime.h>

#include <cstring>
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

// Whether buffer p is device memory the cache's GPU reaches (its own, or managed); device
// memory of another GPU is refused (Error(invalid_argument)), as nothing here copies between
// GPUs.
bool on_device(const void* p, int device, const char* op) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (a.type == cudaMemoryTypeDevice && a.device != device)
    fail(StatusCode::invalid_argument, "cache: " + std::string(op) + ": the buffer is device memory of GPU " +
                                           std::to_string(a.device) + ", the cache is on GPU " + std::to_string(device));
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// The address kernels of `device` reach host buffer p at when it is page-locked for that device
// (cudaMallocHost or cudaHostRegister there: mapped under unified addressing), else null
// (pageable memory, or page-locked while another device was current: copied with cudaMemcpy).
uint8_t* mapped_host(const void* p, int device) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return a.type == cudaMemoryTypeHost && a.device == device ? static_cast<uint8_t*>(a.devicePointer) : nullptr;
}

// The list's copies (payload -> cache when `into_cache`, else cache -> payload), then its zeros
// (in the payload on export, in the cache on import), as two launches over span tables in the
// workspace. The copies' spans do not overlap one another; the zeros overlap copies, hence the
// second launch.
void launch_span_copies(CudaContext::Call& call, const TransferList& list, uint8_t* payload, bool into_cache) {
  // Spans of at most kPiece bytes: a merged run of pages is split so that many blocks share it.
  constexpr uint64_t kPiece = 64 << 10;
  std::vector<CopySpan> spans;
  auto add = [&](const uint8_t* src, uint8_t* dst, uint64_t bytes) {
    for (uint64_t at = 0; at < bytes; at += kPiece)
      spans.push_back({src ? src + at : nullptr, dst + at, bytes - at < kPiece ? bytes - at : kPiece});
  };
  for (const TransferSpan& c : list.copies) {
    if (into_cache) add(payload + c.buf, c.cache, c.bytes);
    else add(c.cache, payload + c.buf, c.bytes);
  }
  const size_t n_copies = spans.size();
  for (const TransferSpan& z : list.zeros) add(nullptr, into_cache ? z.cache : payload + z.buf, z.bytes);
  if (spans.empty()) return;
  auto* table = reinterpret_cast<CopySpan*>(call.workspace(spans.size() * sizeof(CopySpan)));
  check_cuda(cudaMemcpyAsync(table, spans.data(), spans.size() * sizeof(CopySpan), cudaMemcpyHostToDevice,
                             call.stream()),
             "transfer: cudaMemcpyAsync(span table)");
  copy_spans(table, n_copies, call.stream());
  copy_spans(table + n_copies, spans.size() - n_copies, call.stream());
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
  const cudaStream_t s = call.stream();
  if (on_device(payload, ctx_.device(), "export")) {
    launch_span_copies(call, list, payload, false);
    return device_checksum(call, payload, size_t(list.payload_bytes));
  }
  if (uint8_t* mapped = mapped_host(payload, ctx_.device())) {  // page-locked: the launch writes it over the bus
    launch_span_copies(call, list, mapped, false);
    call.sync();
  } else {
    for (const TransferSpan& c : list.copies)
      check_cuda(cudaMemcpyAsync(payload + c.buf, c.cache, c.bytes, cudaMemcpyDefault, s), "export: cudaMemcpyAsync");
    call.sync();
    for (const TransferSpan& z : list.zeros) std::memset(payload + z.buf, 0, z.bytes);
  }
  return transfer::payload_checksum(payload, size_t(list.payload_bytes), m_.ctx);
}

void CudaCache::import_payload(const TransferList& list, const uint8_t* payload, void* stream) {
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  flush_deferred(call);  // pages freed earlier are zeroed before they are written below
  const cudaStream_t s = call.stream();
  uint8_t* reachable =
      on_device(payload, ctx_.device(), "import") ? const_cast<uint8_t*>(payload) : mapped_host(payload, ctx_.device());
  if (reachable) {
    launch_span_copies(call, list, reachable, true);
  } else {
    for (const TransferSpan& c : list.copies)
      check_cuda(cudaMemcpyAsync(c.cache, payload + c.buf, c.bytes, cudaMemcpyDefault, s), "import: cudaMemcpyAsync");
    for (const TransferSpan& z : list.zeros) check_cuda(cudaMemsetAsync(z.cache, 0, z.bytes, s), "import: cudaMemsetAsync");
  }
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
  if (!on_device(buf, ctx_.device(), "import")) return transfer::payload_checksum(buf, n, m_.ctx);
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  return device_checksum(call, buf, n);
}

}  // namespace kvbits::cuda
