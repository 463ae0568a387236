// kvbits — activation dumps: the Q/K activations that `kvbits calibrate` reads.
//
// A dump is a safetensors file with tensors layers.N.q [T, n_q_heads, D], layers.N.k
// [T, n_kv_heads, D] and optionally layers.N.v [T, n_kv_heads, D], plus string metadata
// under "kvbits.*" keys that describe the model. The convention is specified in
// docs/activation-dumps.md; this header turns it into checked C++ values.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kvbits/safetensors.hpp"
#include "kvbits/types.hpp"

namespace kvbits {

// Whether the dumped q/k had RoPE applied. Both give the same block energies.
enum class RopeApplied : uint8_t { pre = 0, post = 1 };
const char* rope_applied_name(RopeApplied r) noexcept;  // "pre" | "post"

// Metadata keys of the convention.
namespace dump_key {
inline constexpr const char* n_layers = "kvbits.n_layers";
inline constexpr const char* n_q_heads = "kvbits.n_q_heads";
inline constexpr const char* n_kv_heads = "kvbits.n_kv_heads";
inline constexpr const char* head_dim = "kvbits.head_dim";
inline constexpr const char* rotary_dim = "kvbits.rotary_dim";
inline constexpr const char* rope_layout = "kvbits.rope_layout";
inline constexpr const char* rope_theta = "kvbits.rope_theta";
inline constexpr const char* rope_applied = "kvbits.rope_applied";
inline constexpr const char* corpus = "kvbits.corpus";
inline constexpr const char* fingerprint = "kvbits.model_fingerprint_xxh3_128";  // optional
inline constexpr const char* tokens = "kvbits.tokens";
}  // namespace dump_key

// What one dump file's metadata says.
struct DumpMetadata {
  ModelShape shape;
  RopeApplied rope_applied = RopeApplied::pre;
  std::string corpus;               // free text
  std::string model_fingerprint;    // 32 lower-case hex digits, or empty when absent
  uint64_t tokens = 0;              // T: token rows of every tensor in this file
};

// Reads the seven shape keys. Error(corrupt_data) naming the first missing or malformed key,
// or the shape rule it breaks.
ModelShape shape_from_dump_metadata(const std::map<std::string, std::string>& metadata);

// Reads every key of the convention (unknown keys are ignored). Error(corrupt_data) as above.
DumpMetadata parse_dump_metadata(const std::map<std::string, std::string>& metadata);

// The metadata map a writer stores; parse_dump_metadata reads it back equal.
// Error(invalid_argument) for an invalid shape or a fingerprint that is not 32 hex digits.
std::map<std::string, std::string> format_dump_metadata(const DumpMetadata& metadata);

// "layers.<layer>.<which>" with which = 'q', 'k' or 'v'. Error(invalid_argument) otherwise.
std::string dump_tensor_name(uint32_t layer, char which);

// One dump file's tensors, checked against its metadata. The views point into the
// SafetensorsFile it was made from, which must outlive it.
struct ActivationDump {
  struct Layer {
    const TensorView* q = nullptr;  // [T, n_q_heads, D]
    const TensorView* k = nullptr;  // [T, n_kv_heads, D]
    const TensorView* v = nullptr;  // [T, n_kv_heads, D] or null when the dump has no V
  };
  DumpMetadata metadata;
  std::vector<Layer> layers;  // n_layers
};

// Error(corrupt_data) for bad metadata, a missing q/k tensor or an unknown "layers.*" name;
// Error(shape_mismatch) for a tensor whose shape disagrees with the metadata.
ActivationDump view_activation_dump(const SafetensorsFile& file);

}  // namespace kvbits
