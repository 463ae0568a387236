// TurboQuant-MSE encode/decode with the canonical arithmetic of tq_mse.hpp.
//
// Inputs to encode must be finite; the cache's append validates them, so encode does not
// re-check (it is the hot path). A group norm above ~65504 * ||c|| overflows the fp16 scale
// to +inf, which append also rejects up front.
#include "kvbits/tq_mse.hpp"

#include <cmath>
#include <string>

#include "kvbits/bitpack.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

// Largest head dim the quantizer accepts (as ModelShape); bounds the per-call stack scratch.
constexpr uint32_t kMaxDim = 1024;

[[noreturn]] void bad(const std::string& message) { fail(StatusCode::invalid_argument, "tq quantizer: " + message); }

void validate_groups(const std::vector<KeyGroup>& groups, size_t dim) {
  if (groups.empty()) bad("no groups");
  uint32_t next_slot = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const KeyGroup& gr = groups[g];
    const std::string name = "group " + std::to_string(g);
    if (gr.bits < kMinCodeBits || gr.bits > kMaxCodeBits)
      bad(name + " has bit width " + std::to_string(int(gr.bits)) + ", outside [1, 8]");
    if (g > 0 && gr.bits <= groups[g - 1].bits)
      bad(name + " bit width " + std::to_string(int(gr.bits)) + " does not ascend strictly (previous " +
          std::to_string(int(groups[g - 1].bits)) + ")");
    if (gr.dims == 0) bad(name + " is empty");
    if (gr.first_slot != next_slot)
      bad(name + " starts at slot " + std::to_string(gr.first_slot) + ", expected " + std::to_string(next_slot) +
          " (groups must tile [0, D) contiguously)");
    if (gr.dims > dim - next_slot) bad(name + " runs past the head dim " + std::to_string(dim));
    next_slot += gr.dims;
  }
  if (next_slot != dim)
    bad("groups cover " + std::to_string(next_slot) + " slots, head dim is " + std::to_string(dim));
}

void validate_slot_dim(const std::vector<uint32_t>& slot_dim) {
  if (slot_dim.empty()) bad("head dim is 0");
  if (slot_dim.size() > kMaxDim)
    bad("head dim " + std::to_string(slot_dim.size()) + " exceeds " + std::to_string(kMaxDim));
  std::vector<bool> seen(slot_dim.size(), false);
  for (size_t s = 0; s < slot_dim.size(); ++s) {
    const uint32_t d = slot_dim[s];
    if (d >= slot_dim.size() || seen[d])
      bad("slot_dim is not a permutation of [0, D) (slot " + std::to_string(s) + " -> dim " + std::to_string(d) + ")");
    seen[d] = true;
  }
}

// Cheap sanity check (O(d^2)): finite entries and unit rows. Full orthogonality is the
// producer's responsibility (haar_rotation, or a plan whose checksum was verified).
void validate_rotation(const std::vector<float>& r, uint32_t d, size_t g) {
  const std::string name = "rotation " + std::to_string(g);
  if (r.size() != size_t(d) * d)
    bad(name + " has " + std::to_string(r.size()) + " entries, expected " + std::to_string(d) + "x" +
        std::to_string(d));
  for (uint32_t i = 0; i < d; ++i) {
    double sq = 0.0;
    for (uint32_t j = 0; j < d; ++j) {
      const float v = r[size_t(i) * d + j];
      if (!std::isfinite(v)) bad(name + " has a non-finite entry at row " + std::to_string(i));
      sq += double(v) * v;
    }
    if (std::fabs(sq - 1.0) > 1e-3)
      bad(name + " row " + std::to_string(i) + " has squared norm " + std::to_string(sq) + ", not orthogonal");
  }
}

// out[r] = sum_j rot[r][j] * x[j] for every row, each sum in ascending j. Eight rows share a
// pass over j so that their independent sums overlap in the pipeline; the value of every
// sum is exactly the one-row-at-a-time result.
void rotate_rows(const float* rot, uint32_t d, const double* x, double* out) {
  constexpr uint32_t kRows = 8;
  uint32_t r = 0;
  for (; r + kRows <= d; r += kRows) {
    double acc[kRows] = {};
    const float* base = rot + size_t(r) * d;
    for (uint32_t j = 0; j < d; ++j) {
      const double xj = x[j];
      for (uint32_t k = 0; k < kRows; ++k) acc[k] += double(base[size_t(k) * d + j]) * xj;
    }
    for (uint32_t k = 0; k < kRows; ++k) out[r + k] = acc[k];
  }
  for (; r < d; ++r) {
    const float* row = rot + size_t(r) * d;
    double acc = 0.0;
    for (uint32_t j = 0; j < d; ++j) acc += double(row[j]) * x[j];
    out[r] = acc;
  }
}

// out[s] = sum_r rot[r][s] * y[r] (R^T y), each sum in ascending r; the inner loop runs over
// independent columns, so it vectorises without reordering any sum.
void rotate_cols(const float* rot, uint32_t d, const float* y, double* out) {
  for (uint32_t s = 0; s < d; ++s) out[s] = 0.0;
  for (uint32_t r = 0; r < d; ++r) {
    const double yr = y[r];
    const float* row = rot + size_t(r) * d;
    for (uint32_t s = 0; s < d; ++s) out[s] += double(row[s]) * yr;
  }
}

}  // namespace

TqQuantizer::TqQuantizer(std::vector<KeyGroup> groups, std::vector<uint32_t> slot_dim,
                         std::vector<std::vector<float>> rotations,
                         const std::vector<std::vector<double>>& unit_codebooks) {
  validate_slot_dim(slot_dim);
  validate_groups(groups, slot_dim.size());
  if (rotations.size() != groups.size())
    bad(std::to_string(rotations.size()) + " rotations for " + std::to_string(groups.size()) + " groups");
  codebooks_.reserve(groups.size());
  group_offsets_.reserve(groups.size());
  size_t offset = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const KeyGroup& gr = groups[g];
    validate_rotation(rotations[g], gr.dims, g);
    if (unit_codebooks.size() <= gr.bits || unit_codebooks[gr.bits].empty())
      bad("no unit codebook for bit width " + std::to_string(int(gr.bits)) + " (group " + std::to_string(g) + ")");
    codebooks_.push_back(make_group_codebook(unit_codebooks[gr.bits], gr.bits, gr.dims));
    group_offsets_.push_back(offset);
    offset += packed_bytes(gr.dims, gr.bits);
  }
  code_bytes_ = offset;
  groups_ = std::move(groups);
  slot_dim_ = std::move(slot_dim);
  rotations_ = std::move(rotations);
}

void TqQuantizer::encode_codes(const float* x, uint8_t* codes, uint16_t* scales) const {
  double xg[kMaxDim];
  for (size_t g = 0; g < groups_.size(); ++g) {
    const KeyGroup& gr = groups_[g];
    const uint32_t d = gr.dims, s0 = gr.first_slot;
    const GroupCodebook& cb = codebooks_[g];
    // Products of two fp32 values are exact in fp64; sums run over ascending j.
    double nsq = 0.0;
    for (uint32_t j = 0; j < d; ++j) {
      xg[j] = double(x[slot_dim_[s0 + j]]);
      nsq += xg[j] * xg[j];
    }
    const double n = std::sqrt(nsq);
    uint8_t* cg = codes + s0;
    if (n == 0.0) {
      const uint8_t zero_code = uint8_t(cb.code_of(0.0));
      for (uint32_t r = 0; r < d; ++r) cg[r] = zero_code;
      scales[g] = 0;
      continue;
    }
    double y[kMaxDim];
    rotate_rows(rotations_[g].data(), d, xg, y);
    double csq = 0.0;
    for (uint32_t r = 0; r < d; ++r) {
      const uint32_t code = cb.code_of(y[r] / n);
      cg[r] = uint8_t(code);
      const double c = cb.centroids[code];
      csq += c * c;
    }
    // csq is 0 only for a codebook with a zero centroid: the group then decodes to 0.
    scales[g] = csq > 0.0 ? double_to_half(n / std::sqrt(csq)) : uint16_t(0);
  }
}

void TqQuantizer::encode(const float* x, uint8_t* packed, uint16_t* scales) const {
  uint8_t codes[kMaxDim];
  encode_codes(x, codes, scales);
  for (size_t g = 0; g < groups_.size(); ++g)
    pack_codes(codes + groups_[g].first_slot, groups_[g].dims, groups_[g].bits, packed + group_offsets_[g]);
}

void TqQuantizer::dequantize_rotated(const uint8_t* packed, const uint16_t* scales, float* y) const {
  uint8_t codes[kMaxDim];
  for (size_t g = 0; g < groups_.size(); ++g) {
    const KeyGroup& gr = groups_[g];
    unpack_codes(packed + group_offsets_[g], gr.dims, gr.bits, codes);
    const float s = half_to_float(scales[g]);
    const float* c = codebooks_[g].centroids.data();
    for (uint32_t r = 0; r < gr.dims; ++r) y[gr.first_slot + r] = s * c[codes[r]];
  }
}

void TqQuantizer::decode(const uint8_t* packed, const uint16_t* scales, float* x) const {
  float y[kMaxDim];
  dequantize_rotated(packed, scales, y);
  for (size_t g = 0; g < groups_.size(); ++g) {
    const KeyGroup& gr = groups_[g];
    const uint32_t d = gr.dims, s0 = gr.first_slot;
    double xg[kMaxDim];
    rotate_cols(rotations_[g].data(), d, y + s0, xg);  // x_g = R_g^T y_g
    for (uint32_t s = 0; s < d; ++s) x[slot_dim_[s0 + s]] = float(xg[s]);
  }
}

void TqQuantizer::rotate_query(const float* q, float* q_rot) const {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const KeyGroup& gr = groups_[g];
    const uint32_t d = gr.dims, s0 = gr.first_slot;
    double qg[kMaxDim], out[kMaxDim];
    for (uint32_t j = 0; j < d; ++j) qg[j] = q[slot_dim_[s0 + j]];
    rotate_rows(rotations_[g].data(), d, qg, out);
    for (uint32_t r = 0; r < d; ++r) q_rot[s0 + r] = float(out[r]);
  }
}

TqQuantizer make_key_quantizer(const HeadLayout& layout, std::vector<std::vector<float>> rotations,
                               const std::vector<std::vector<double>>& unit_codebooks) {
  return TqQuantizer(layout.groups, layout.slot_dim, std::move(rotations), unit_codebooks);
}

TqQuantizer make_value_quantizer(uint32_t head_dim, int bits, std::vector<float> rotation,
                                 const std::vector<std::vector<double>>& unit_codebooks) {
  if (bits < kMinCodeBits || bits > kMaxCodeBits)
    fail(StatusCode::invalid_argument, "value quantizer: bit width " + std::to_string(bits) + " outside [1, 8]");
  if (head_dim == 0 || head_dim > kMaxDim)
    fail(StatusCode::invalid_argument,
         "value quantizer: head dim " + std::to_string(head_dim) + " outside [1, " + std::to_string(kMaxDim) + "]");
  std::vector<uint32_t> identity(head_dim);
  for (uint32_t i = 0; i < head_dim; ++i) identity[i] = i;
  std::vector<std::vector<float>> rotations;
  rotations.push_back(std::move(rotation));
  return TqQuantizer({KeyGroup{uint8_t(bits), 0, head_dim}}, std::move(identity), std::move(rotations),
                     unit_codebooks);
}

}  // namespace kvbits
