// A device-side delay for benchmarks: a one-thread kernel that spins for a given time, so that
// the work a call enqueues behind it waits in the stream and then runs back to back. CUDA events
// recorded by that work then time the device alone, not the host submitting it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvbits::bench {

// Enqueues the spin on `stream`; exits with a message on a CUDA error.
void enqueue_gpu_delay(uint32_t microseconds, cudaStream_t stream);

}  // namespace kvbits::bench
