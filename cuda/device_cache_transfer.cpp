// Sequence export / import on a CUDA cache (src/cache/cache_transfer.cpp decides what moves):
// every span is one cudaMemcpyAsync between the pool or an fp16 block and the caller's buffer,
// host or device memory alike (cudaMemcpyDefault). The payload checksum is computed where the
// payload lives, so a device buffer never travels through the host. Every call waits.
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "cache/seq_transfer_format.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_cache.hpp"
#include "cuda/transfer_checksum.hpp"

namespace kvbits::cuda {
namespace {

namespace transfer = cache_detail::transfer;
using cache_detail::TransferList;
using cache_detail::TransferSpan;

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
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
  for (const TransferSpan& c : list.copies)
    check_cuda(cudaMemcpyAsync(payload + c.buf, c.cache, c.bytes, cudaMemcpyDefault, s), "export: cudaMemcpyAsync");
  if (on_device(payload)) {
    for (const TransferSpan& z : list.zeros)
      check_cuda(cudaMemsetAsync(payload + z.buf, 0, z.bytes, s), "export: cudaMemsetAsync");
    return device_checksum(call, payload, size_t(list.payload_bytes));
  }
  call.sync();
  for (const TransferSpan& z : list.zeros) std::memset(payload + z.buf, 0, z.bytes);
  return transfer::payload_checksum(payload, size_t(list.payload_bytes), m_.ctx);
}

void CudaCache::import_payload(const TransferList& list, const uint8_t* payload, void* stream) {
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  flush_deferred(call);  // pages freed earlier are zeroed before they are written below
  const cudaStream_t s = call.stream();
  for (const TransferSpan& c : list.copies)
    check_cuda(cudaMemcpyAsync(c.cache, payload + c.buf, c.bytes, cudaMemcpyDefault, s), "import: cudaMemcpyAsync");
  for (const TransferSpan& z : list.zeros) check_cuda(cudaMemsetAsync(z.cache, 0, z.bytes, s), "import: cudaMemsetAsync");
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
  if (!on_device(buf)) return transfer::payload_checksum(buf, n, m_.ctx);
  CudaContext::Call call(ctx_, stream);
  refuse_capture(call, "import");
  return device_checksum(call, buf, n);
}

}  // namespace kvbits::cuda
