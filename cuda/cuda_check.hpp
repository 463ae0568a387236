// kvbits CUDA — turning CUDA runtime errors into kvbits::Error(device_error).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "kvbits/status.hpp"

namespace kvbits::cuda {

// Error(device_error) "<what>: <CUDA message>" unless e is cudaSuccess. The sticky per-thread
// error is cleared, so one failure is reported once.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace kvbits::cuda
