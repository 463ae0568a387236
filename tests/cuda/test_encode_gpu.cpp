// GPU encode must give exactly the CPU encoder's bytes (codes and fp16 scales).
// Skips cleanly when no GPU is present; run on a GPU machine with `meson test -C build --suite gpu`.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>

#include "cuda/encode.hpp"
#include "kvbits/codebook.hpp"
#include "kvbits/rotation.hpp"

using namespace kvbits;

namespace {

std::vector<std::vector<double>> all_codebooks() {
  std::vector<std::vector<double>> cb(9);
  for (int b = 1; b <= 8; ++b) cb[size_t(b)] = unit_gaussian_codebook(b, CodebookRecipe::lloyd_max);
  return cb;
}

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  explicit DeviceBuffer(size_t n) { EXPECT_EQ(cudaMalloc(&p, n * sizeof(T) + 1), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
};

void expect_gpu_matches_cpu(const TqQuantizer& q, size_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(rows * q.dim());
  for (size_t r = 0; r < rows; ++r) {
    const float scale = r % 7 == 3 ? 300.0f : (r % 5 == 1 ? 1e-3f : 1.0f);  // outliers and tiny rows
    for (uint32_t d = 0; d < q.dim(); ++d) x[r * q.dim() + d] = r == 2 ? 0.0f : scale * n(rng);
  }
  std::vector<uint8_t> cpu_codes(rows * q.code_bytes()), gpu_codes(cpu_codes.size());
  std::vector<uint16_t> cpu_scales(rows * q.n_groups()), gpu_scales(cpu_scales.size());
  for (size_t r = 0; r < rows; ++r)
    q.encode(&x[r * q.dim()], &cpu_codes[r * q.code_bytes()], &cpu_scales[r * q.n_groups()]);

  cuda::DeviceQuantizer dq(q);
  DeviceBuffer<float> dx(x.size());
  DeviceBuffer<uint8_t> dcodes(cpu_codes.size());
  DeviceBuffer<uint16_t> dscales(cpu_scales.size());
  ASSERT_EQ(cudaMemcpy(dx.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  cuda::encode_rows(dq.tables(), dx.p, rows, dcodes.p, dscales.p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(gpu_codes.data(), dcodes.p, gpu_codes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(gpu_scales.data(), dscales.p, gpu_scales.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  size_t code_diff = 0, scale_diff = 0;
  for (size_t i = 0; i < cpu_codes.size(); ++i) code_diff += cpu_codes[i] != gpu_codes[i];
  for (size_t i = 0; i < cpu_scales.size(); ++i) scale_diff += cpu_scales[i] != gpu_scales[i];
  EXPECT_EQ(code_diff, 0u) << "of " << cpu_codes.size() << " code bytes";
  EXPECT_EQ(scale_diff, 0u) << "of " << cpu_scales.size() << " scales";
}

class GpuEncode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

}  // namespace

TEST_F(GpuEncode, BlockGtqKeyHeadD128MatchesCpuBitForBit) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 8, s.n_kv_heads = 1, s.head_dim = 128, s.rotary_dim = 128;
  std::vector<uint8_t> bits(64);
  for (size_t b = 0; b < 64; ++b) bits[b] = uint8_t(1 + (b * 7 + 3) % 6);  // widths 1..6
  const HeadLayout lay = make_head_layout(s, bits);
  std::vector<std::vector<float>> rots;
  for (size_t g = 0; g < lay.groups.size(); ++g) rots.push_back(haar_rotation(lay.groups[g].dims, 100 + g));
  expect_gpu_matches_cpu(make_key_quantizer(lay, rots, all_codebooks()), 257, 1);
}

TEST_F(GpuEncode, UniformAndValueQuantizersMatchCpu) {
  const auto cb = all_codebooks();
  for (uint32_t D : {8u, 64u, 128u, 256u})
    for (int bits : {2, 3, 4, 8}) expect_gpu_matches_cpu(make_value_quantizer(D, bits, haar_rotation(D, D + bits), cb), 64, D * 10 + bits);
}
