// kvbits CUDA — the CUDA half of a Context: one device, its properties, a launch workspace
// in device memory and a small pinned read-back buffer, shared by every cache of the context.
//
// Every kvbits call that touches the device holds a Call for its duration. A Call
//   - locks the context (calls from several threads take turns, as on the CPU backend),
//   - makes the context's device current and restores the caller's device afterwards,
//   - orders its stream after the previous kvbits call on this context when that ran on
//     another stream (an event wait), so caches stay consistent whatever streams are used,
//   - hands out the workspace, grown first if too small.
// While the stream is being captured into a CUDA graph the Call neither waits on nor records
// events, switches this thread to the relaxed capture mode (pointer and attribute queries stay
// legal) and the workspace cannot grow (Error(unsupported): run the call once outside the
// capture first). A grown workspace never frees the old block before the context dies, so a
// graph captured earlier keeps valid memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "context/device_context.hpp"

namespace kvbits::cuda {

class CudaContext final : public detail::DeviceContext {
 public:
  explicit CudaContext(int device);
  ~CudaContext() override;
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const override { return device_; }
  const DeviceProperties& properties() const override { return props_; }
  void check_attention_support(const Plan& plan, uint32_t page_size) const override;

  bool memory_pools() const { return memory_pools_; }  // cudaMallocAsync is available
  size_t workspace_bytes() const { return ws_bytes_; }

  static constexpr size_t kPinnedBytes = 4096;

  class Call {
   public:
    // stream: a cudaStream_t, or null for the legacy default stream (what the calls that take
    // no stream use: create, fork, remove, read, freeing fp16 blocks). A user's stream is never
    // kept beyond its call, so destroying it afterwards is fine.
    Call(CudaContext& ctx, void* stream);
    ~Call();
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

    cudaStream_t stream() const { return stream_; }
    bool capturing() const { return capturing_; }
    // The workspace, at least `bytes` long (256-byte aligned). Error(unsupported) when it must
    // grow while capturing, Error(out_of_memory) when it cannot.
    uint8_t* workspace(size_t bytes);
    uint8_t* pinned() const { return ctx_.pinned_; }  // kPinnedBytes of page-locked memory
    void sync();  // waits for the stream (Error(device_error) with the CUDA message)

   private:
    CudaContext& ctx_;
    std::unique_lock<std::recursive_mutex> lock_;
    cudaStream_t stream_ = nullptr;
    bool capturing_ = false;
    bool relaxed_ = false;  // this thread's capture mode was swapped; prev_mode_ goes back
    cudaStreamCaptureMode prev_mode_ = cudaStreamCaptureModeGlobal;
    int caller_device_ = -1;
  };

 private:
  int device_;
  DeviceProperties props_;
  bool memory_pools_ = false;
  std::recursive_mutex mu_;  // recursive: a block freed inside a call takes its own Call
  uint8_t* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::vector<void*> retired_;  // earlier workspaces, freed with the context
  uint8_t* pinned_ = nullptr;
  cudaEvent_t last_event_ = nullptr;
  cudaStream_t last_stream_ = nullptr;
  bool has_last_ = false;
};

}  // namespace kvbits::cuda
