#include "ops.hpp"

#include <cmath>
#include <cstddef>

namespace llama2c {

float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + tail;
}

void matvec(float* out, const float* w, const float* x, int rows, int cols) {
  for (int r = 0; r < rows; ++r) out[r] = dot(w + size_t(r) * size_t(cols), x, cols);
}

void rmsnorm(float* out, const float* x, const float* gain, int n) {
  const float mean_square = dot(x, x, n) / float(n);
  const float scale = 1.0f / std::sqrt(mean_square + 1e-5f);
  for (int i = 0; i < n; ++i) out[i] = gain[i] * (scale * x[i]);
}

void softmax(float* x, int n) {
  float max = x[0];
  for (int i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;
  float sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void rope_interleaved(float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
  for (int h = 0; h < n_heads; ++h) {
    float* head = x + h * head_dim;
    for (int i = 0; i < head_dim / 2; ++i) {
      const float re = head[2 * i], im = head[2 * i + 1];
      head[2 * i] = re * cos[i] - im * sin[i];
      head[2 * i + 1] = re * sin[i] + im * cos[i];
    }
  }
}

}  // namespace llama2c
