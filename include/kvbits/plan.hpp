// kvbits — the bit plan: everything needed to quantize and attend for one model.
//
// A Plan is immutable once built or loaded and may be shared across threads. Its file form
// is specified in docs/plan-format.md (plan_format.hpp reads and writes it).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kvbits/codebook.hpp"
#include "kvbits/energy.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/tq_mse.hpp"
#include "kvbits/types.hpp"

namespace kvbits {

enum class Method : uint8_t {
  block_gtq = 0,       // per-block greedy widths (RoPE-aware), TQ-MSE per width group
  uniform_tq_mse = 1,  // every block at the same width: one group, one rotation
};
const char* method_name(Method m) noexcept;

// Where a rotation matrix comes from.
struct RotationSpec {
  enum class Kind : uint8_t { generated = 0, explicit_matrix = 1 };
  Kind kind = Kind::generated;
  uint32_t dim = 0;
  uint64_t seed = 0;          // generated: haar_rotation(dim, seed)
  std::vector<float> matrix;  // explicit_matrix: dim*dim row-major fp32
  bool operator==(const RotationSpec& o) const;
  std::vector<float> materialize() const;
};

struct HeadPlan {
  std::vector<uint8_t> block_bits;    // D/2, per block id, 1..8
  std::vector<uint32_t> block_order;  // D/2, hp order (see head_layout.hpp)
  std::vector<double> q_energy;       // D/2 calibration mean energies (0 if unknown)
  std::vector<double> k_energy;       // D/2
  std::vector<RotationSpec> k_rotations;  // one per K group, ascending width
  uint8_t v_bits = 0;                 // 1..8
  RotationSpec v_rotation;            // dim D
  bool operator==(const HeadPlan& o) const;
};

struct LayerPlan {
  bool keep_fp16 = false;  // "keep this layer at 16 bits": heads are then empty
  std::vector<HeadPlan> heads;  // n_kv_heads (unless keep_fp16)
  bool operator==(const LayerPlan& o) const;
};

struct Fingerprint {
  enum class Kind : uint8_t { none = 0, xxh3_128 = 1, user = 2 };
  Kind kind = Kind::none;
  std::array<uint8_t, 32> bytes{};  // xxh3_128: first 16 bytes (big-endian hash), rest zero
  bool operator==(const Fingerprint& o) const { return kind == o.kind && bytes == o.bytes; }
  std::string hex() const;  // "none" or lower-case hex of the meaningful bytes
};

// Parses the hex form written by Fingerprint::hex() for kind xxh3_128 (32 hex digits).
// Error(invalid_argument) for anything else.
Fingerprint fingerprint_from_hex(const std::string& hex);

// XXH3-128 fingerprint of a file's bytes (e.g. the model checkpoint). Error(io_error).
Fingerprint fingerprint_file(const std::string& path);

struct Producer {
  std::string tool;          // e.g. "kvbits 0.1.0"
  std::string corpus;        // free text: what the calibration data was
  std::string date;          // ISO-8601 UTC
  uint64_t calib_tokens = 0; // tokens observed per layer
  bool operator==(const Producer& o) const;
};

struct Plan {
  ModelShape shape;
  Method method = Method::block_gtq;
  ScoreKind score = ScoreKind::product;
  CodebookRecipe recipe = CodebookRecipe::lloyd_max;
  double k_avg_bits = 3.0;
  uint8_t k_min_bits = 1, k_max_bits = 8;
  uint32_t sink_tokens = 0;    // first S tokens of a sequence kept in fp16
  uint32_t window_tokens = 0;  // last R tokens kept in fp16
  uint64_t rotation_seed = 0;  // base seed the generated rotations were derived from
  Fingerprint fingerprint;
  Producer producer;
  // unit_codebooks[b] = 2^b unit-Gaussian centroids for every width b used; others empty.
  std::vector<std::vector<double>> unit_codebooks;  // size 9
  std::vector<LayerPlan> layers;

  // Checks every invariant (sizes, ranges, permutations, hp order sorted by width, one
  // rotation per group with matching dims, codebooks present and strictly increasing, ...).
  // Throws Error(corrupt_data) with a message naming the layer/head/field.
  void validate() const;
  bool operator==(const Plan& o) const;

  const HeadPlan& head(uint32_t layer, uint32_t kv_head) const;
  HeadLayout head_layout(uint32_t layer, uint32_t kv_head) const;
  // Packed bytes per token of one (layer, KV head): K codes + 2*n_groups + V codes + 2.
  // fp16 layers: 4*D.
  size_t bytes_per_token(uint32_t layer, uint32_t kv_head) const;
  // Mean of bytes_per_token over all (layer, KV head).
  double mean_bytes_per_token() const;
};

// Refuses a plan made for another model shape: Error(shape_mismatch) naming the field.
void check_plan_shape(const Plan& plan, const ModelShape& expected);

// The quantizers of one (layer, KV head), with rotations materialised.
struct HeadQuantizers {
  TqQuantizer k;
  TqQuantizer v;
};
HeadQuantizers make_head_quantizers(const Plan& plan, uint32_t layer, uint32_t kv_head);

}  // namespace kvbits
