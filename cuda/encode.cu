// TQ-MSE encode kernel. One CTA per row; thread r of group g computes output coordinate r.
// Every floating-point step mirrors TqQuantizer::encode_codes: the fp32*fp32 products are exact
// in fp64, so fma vs mul+add cannot change a sum, and each sum runs in ascending index order
// inside one thread. That is what makes CPU and GPU codes and scales bit-identical.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "cuda/encode.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cuda {

namespace {

constexpr int kMaxDim = 1024;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

__device__ uint32_t code_of(const float* boundaries, uint32_t n_boundaries, double y) {
  // Number of boundaries strictly below y (boundaries ascending).
  uint32_t lo = 0, hi = n_boundaries;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (double(boundaries[mid]) < y) lo = mid + 1; else hi = mid;
  }
  return lo;
}

__global__ void encode_rows_kernel(QuantizerTables t, const float* x, uint8_t* packed, uint16_t* scales) {
  __shared__ float xs[kMaxDim];
  __shared__ uint8_t codes[kMaxDim];
  __shared__ double norms[64];
  const size_t row = blockIdx.x;
  const float* xr = x + row * t.dim;
  for (uint32_t s = threadIdx.x; s < t.dim; s += blockDim.x) xs[s] = xr[t.slot_dim[s]];
  __syncthreads();
  // Group norms: one thread per group, ascending slots.
  for (uint32_t g = threadIdx.x; g < t.n_groups; g += blockDim.x) {
    const uint32_t first = t.group_info[6 * g + 1], dims = t.group_info[6 * g + 2];
    double nsq = 0.0;
    for (uint32_t j = 0; j < dims; ++j) nsq = __dadd_rn(nsq, __dmul_rn(double(xs[first + j]), double(xs[first + j])));
    norms[g] = __dsqrt_rn(nsq);
  }
  __syncthreads();
  for (uint32_t s = threadIdx.x; s < t.dim; s += blockDim.x) {
    uint32_t g = 0;
    while (g + 1 < t.n_groups && t.group_info[6 * (g + 1) + 1] <= s) ++g;
    const uint32_t* gi = t.group_info + 6 * g;
    const uint32_t bits = gi[0], first = gi[1], dims = gi[2], rot_off = gi[4], cb_off = gi[5];
    const double n = norms[g];
    const float* bnd = t.boundaries + cb_off;
    if (n == 0.0) {
      codes[s] = uint8_t(code_of(bnd, (1u << bits) - 1, 0.0));
      continue;
    }
    const float* R = t.rotations + rot_off + size_t(s - first) * dims;
    double acc = 0.0;
    for (uint32_t j = 0; j < dims; ++j) acc = __dadd_rn(acc, __dmul_rn(double(R[j]), double(xs[first + j])));
    codes[s] = uint8_t(code_of(bnd, (1u << bits) - 1, __ddiv_rn(acc, n)));
  }
  __syncthreads();
  // Scales and bit packing: one thread per group, ascending order (cheap next to the rotation).
  uint8_t* out = packed + row * t.code_bytes;
  for (uint32_t g = threadIdx.x; g < t.n_groups; g += blockDim.x) {
    const uint32_t* gi = t.group_info + 6 * g;
    const uint32_t bits = gi[0], first = gi[1], dims = gi[2], byte_off = gi[3], cb_off = gi[5];
    const float* cent = t.centroids + cb_off;
    double csq = 0.0;
    for (uint32_t j = 0; j < dims; ++j) {
      const double c = double(cent[codes[first + j]]);
      csq = __dadd_rn(csq, __dmul_rn(c, c));
    }
    const double n = norms[g];
    scales[row * t.n_groups + g] = n == 0.0 ? uint16_t(0) : __half_as_ushort(__double2half(__ddiv_rn(n, __dsqrt_rn(csq))));
    const uint32_t nbytes = (dims * bits + 7) / 8;
    for (uint32_t b = 0; b < nbytes; ++b) out[byte_off + b] = 0;
    for (uint32_t j = 0; j < dims; ++j) {
      const uint32_t bit = j * bits, v = uint32_t(codes[first + j]) << (bit & 7);
      out[byte_off + (bit >> 3)] |= uint8_t(v);
      if ((bit & 7) + bits > 8) out[byte_off + (bit >> 3) + 1] |= uint8_t(v >> 8);
    }
  }
}

}  // namespace

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

DeviceQuantizer::DeviceQuantizer(const TqQuantizer& q) {
  if (q.dim() > uint32_t(kMaxDim) || q.n_groups() > 64)
    fail(StatusCode::unsupported, "GPU encode supports head_dim <= 1024 and <= 64 groups");
  std::vector<uint32_t> info;
  std::vector<float> rot, cent, bnd;
  for (size_t g = 0; g < q.n_groups(); ++g) {
    const KeyGroup& kg = q.groups()[g];
    const GroupCodebook& cb = q.codebook(g);
    info.insert(info.end(), {uint32_t(kg.bits), kg.first_slot, kg.dims, uint32_t(q.group_byte_offset(g)),
                             uint32_t(rot.size()), uint32_t(cent.size())});
    rot.insert(rot.end(), q.rotation(g).begin(), q.rotation(g).end());
    cent.insert(cent.end(), cb.centroids.begin(), cb.centroids.end());
    bnd.insert(bnd.end(), cb.boundaries.begin(), cb.boundaries.end());
    bnd.push_back(0.0f);  // keep boundary offsets equal to centroid offsets
  }
  // One block: [info u32][slot_dim u32][rot f32][cent f32][bnd f32], each 256-byte aligned.
  auto align = [](size_t n) { return (n + 255) / 256 * 256; };
  const size_t o_info = 0, o_slot = align(info.size() * 4), o_rot = o_slot + align(q.dim() * 4),
               o_cent = o_rot + align(rot.size() * 4), o_bnd = o_cent + align(cent.size() * 4),
               total = o_bnd + align(bnd.size() * 4);
  std::vector<uint8_t> host(total, 0);
  std::memcpy(host.data() + o_info, info.data(), info.size() * 4);
  std::memcpy(host.data() + o_slot, q.slot_dim().data(), q.dim() * 4);
  std::memcpy(host.data() + o_rot, rot.data(), rot.size() * 4);
  std::memcpy(host.data() + o_cent, cent.data(), cent.size() * 4);
  std::memcpy(host.data() + o_bnd, bnd.data(), bnd.size() * 4);
  check(cudaMalloc(&block_, total), "cudaMalloc(quantizer tables)");
  const cudaError_t e = cudaMemcpy(block_, host.data(), total, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(block_);
    check(e, "cudaMemcpy(quantizer tables)");
  }
  auto* base = static_cast<uint8_t*>(block_);
  tables_.dim = q.dim();
  tables_.n_groups = uint32_t(q.n_groups());
  tables_.code_bytes = uint32_t(q.code_bytes());
  tables_.group_info = reinterpret_cast<const uint32_t*>(base + o_info);
  tables_.slot_dim = reinterpret_cast<const uint32_t*>(base + o_slot);
  tables_.rotations = reinterpret_cast<const float*>(base + o_rot);
  tables_.centroids = reinterpret_cast<const float*>(base + o_cent);
  tables_.boundaries = reinterpret_cast<const float*>(base + o_bnd);
}

DeviceQuantizer::~DeviceQuantizer() { cudaFree(block_); }

void encode_rows(const QuantizerTables& t, const float* x, size_t n_rows, uint8_t* packed, uint16_t* scales,
                 void* stream) {
  if (n_rows == 0) return;
  if (!x || !packed || !scales) fail(StatusCode::null_pointer, "encode_rows: null device pointer");
  if (n_rows > 0x7FFFFFFFu) fail(StatusCode::invalid_argument, "encode_rows: too many rows for one launch");
  const unsigned threads = t.dim >= 128 ? 128u : 32u * ((t.dim + 31) / 32);
  encode_rows_kernel<<<unsigned(n_rows), threads, 0, static_cast<cudaStream_t>(stream)>>>(t, x, packed, scales);
  check(cudaGetLastError(), "encode_rows launch");
}

}  // namespace kvbits::cuda
