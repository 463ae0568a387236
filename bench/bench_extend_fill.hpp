// Device-side fill of fp16 benchmark data (bench_extend_gpu only).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits::bench {

// n fp16 values at `dst` (device), pseudo-random and roughly N(0, 1) (sum of four uniforms,
// rescaled), never NaN or inf. Synchronous; exits with a message on a CUDA error.
void fill_fp16_random(uint16_t* dst, size_t n, uint64_t seed);

}  // namespace kvbits::bench
