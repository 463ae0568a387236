// llama2c — the few dense kernels of a Llama forward pass, plain fp32 on the CPU.
//
// Every reduction has a fixed summation order, so results are bit-identical run to run.
#pragma once

namespace llama2c {

// Dot product of a[n] and b[n]: eight interleaved partial sums (so the compiler may keep
// them in one vector register), combined pairwise, then the tail.
float dot(const float* a, const float* b, int n);

// out[rows] = W x with W [rows, cols] row-major (PyTorch nn.Linear layout). out != x.
void matvec(float* out, const float* w, const float* x, int rows, int cols);

// out[n] = x / sqrt(mean(x^2) + 1e-5) * gain. out may equal x.
void rmsnorm(float* out, const float* x, const float* gain, int n);

// In-place softmax of x[n] (max-subtracted).
void softmax(float* x, int n);

// Interleaved RoPE on n_heads heads of head_dim: pair (2i, 2i+1) of each head is rotated
// by the angle whose cosine and sine are cos[i] and sin[i].
void rope_interleaved(float* x, int n_heads, int head_dim, const float* cos, const float* sin);

}  // namespace llama2c
