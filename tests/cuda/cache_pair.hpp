// Two caches of one plan and config, one on the CPU backend and one on CUDA, driven through
// the same public calls; the GPU cache must hold exactly the CPU cache's bytes (pages in use,
// fp16 blocks, page tables, lengths, statistics) and keep every free page zero.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvbits/cache.hpp"
#include "kvbits/context.hpp"
#include "kvbits/status.hpp"

namespace kvbits::gputest {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x << ": " << cudaGetErrorString(cudaGetLastError())

bool have_gpu();
Context& cpu_context();
Context& gpu_context();

// A device copy of a host buffer, freed on destruction.
class DeviceCopy {
 public:
  DeviceCopy(const void* host, size_t bytes);
  ~DeviceCopy();
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
};

// The status and message of a call, or code ok.
struct Outcome {
  StatusCode code = StatusCode::ok;
  std::string message;
  bool operator==(const Outcome& o) const { return code == o.code && message == o.message; }
};
template <class F>
Outcome outcome_of(F&& f) {
  try {
    f();
    return {};
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
}

class CachePair {
 public:
  CachePair(std::shared_ptr<const Plan> plan, const CacheConfig& cfg);
  Cache& cpu() { return *cpu_; }
  Cache& gpu() { return *gpu_; }
  const ModelShape& shape() const { return cpu_->plan().shape; }

  uint64_t add();
  uint64_t fork(uint64_t src, uint32_t prefix);
  void remove(uint64_t seq);
  // The same tokens to both: k, v fp32 [sum n][H][D], converted to `dtype`; the GPU side gets
  // device or host buffers. Returns the two outcomes (an error must leave both unchanged).
  std::pair<Outcome, Outcome> append(uint32_t layer, const std::vector<uint64_t>& seqs,
                                     const std::vector<uint32_t>& n_tokens, const std::vector<float>& k,
                                     const std::vector<float>& v, DType dtype, bool device_inputs,
                                     void* stream = nullptr);

  // Every observable byte equal (gtest failures name the first difference).
  void expect_identical(const std::string& what);

 private:
  std::unique_ptr<Cache> cpu_, gpu_;
};

// The whole device pool of a CUDA cache, on the host.
std::vector<uint8_t> download_pool(const Cache& gpu);

// fp32 values as `dtype` bits (fp32: the floats' own bytes).
std::vector<uint8_t> as_dtype(const std::vector<float>& x, DType dtype);

}  // namespace kvbits::gputest
