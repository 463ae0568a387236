// kvbits — the quality lab: K-only diagnostics of key quantizers (no paged cache needed).
//
// Keys of one (layer, KV head) are quantized and dequantized by a method (uniform TQ-MSE,
// Block-GTQ with the paper's or the product score, KIVI), and the reconstruction is judged
// by the metrics of the reference spec §9: the per-layer RoPE-logit MAE (§9.1, exact) and the
// softmax KL / top-10 overlap at real causal positions (§9.2, the proposed definition).
// docs/QUALITY.md states every definition and the measured numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvbits/activation_dump.hpp"
#include "kvbits/codebook.hpp"
#include "kvbits/plan.hpp"
#include "kvbits/types.hpp"

namespace kvbits::eval {

// ---------------------------------------------------------------------------------------------
// Activations: pre-RoPE q/k of every layer, cut into sequences of equal length.

struct Activations {
  ModelShape shape;
  uint32_t seq_tokens = 0;            // rows per sequence; row r is at position r % seq_tokens
  uint64_t tokens = 0;                // rows T, a multiple of seq_tokens
  std::vector<std::vector<float>> q;  // per layer [T, n_q_heads, D], pre-RoPE
  std::vector<std::vector<float>> k;  // per layer [T, n_kv_heads, D], pre-RoPE
  std::string source;                 // what the rows are (corpus, generator)

  // Error(invalid_argument | shape_mismatch) naming the first inconsistency.
  void validate() const;
};

// Converts a dump (any dtype) to fp32 pre-RoPE rows; a post-RoPE dump is un-rotated with
// apply_rope(-position). Error(invalid_argument) when tokens is not a multiple of seq_tokens.
Activations activations_from_dump(const ActivationDump& dump, uint32_t seq_tokens);

// One (layer, KV head): keys [T, D] and the queries of its GQA group [T, G, D] (row t*G + g
// is query head kv_head*G + g at token t). post_rope applies RoPE at each row's position.
struct HeadRows {
  std::vector<float> q;
  std::vector<float> k;
};
HeadRows head_rows(const Activations& acts, uint32_t layer, uint32_t kv_head, bool post_rope);

// ---------------------------------------------------------------------------------------------
// KIVI reference quantizer (peer-methods spec §1): asymmetric min-max with an fp16 scale and
// an fp16 minimum per group. Inputs are rounded to fp16 (the model dtype) and every operation
// is rounded to fp16 as KIVI's fp16 tensors do; ties round half to even; a group whose scale
// is 0 (max == min) gets code 0, which decodes to its minimum.

struct KiviGroup {
  float min = 0.0f;    // fp16 value
  float scale = 0.0f;  // fp16 value, (max - min) / (2^bits - 1)
};
// Error(invalid_argument) for bits outside [1, 8] or non-finite bounds.
KiviGroup kivi_group(float lo, float hi, int bits);
uint32_t kivi_encode(float x, const KiviGroup& g, int bits);
float kivi_decode(uint32_t code, const KiviGroup& g);

struct KiviOptions {
  int bits = 2;
  uint32_t group = 32;     // G: tokens per key group, channels per value group
  uint32_t residual = 0;   // R: the last R tokens of each sequence stay in fp16
};

// Keys [n_tokens, dim] of one head and one sequence -> reconstruction. Per channel, groups of
// G consecutive tokens (the last group of the quantized part may be shorter); the last R
// tokens are only rounded to fp16. Error(invalid_argument) for bad options.
void kivi_roundtrip_keys(const float* k, size_t n_tokens, uint32_t dim, const KiviOptions& o, float* k_hat);
// Values [n_tokens, dim]: per token, groups of min(G, dim) consecutive channels (the last
// group may be shorter); the last R tokens are only rounded to fp16.
void kivi_roundtrip_values(const float* v, size_t n_tokens, uint32_t dim, const KiviOptions& o, float* v_hat);

// Stored bytes per token of one head in a sequence of seq_tokens tokens: codes dim*bits/8,
// fp16 scale + min (4 bytes) per G tokens for each of dim channels (keys) or per group of
// min(G, dim) channels (values), and 2*dim bytes for each of the R residual tokens, averaged
// over the sequence.
double kivi_key_bytes_per_token(uint32_t dim, const KiviOptions& o, uint32_t seq_tokens);
double kivi_value_bytes_per_token(uint32_t dim, const KiviOptions& o, uint32_t seq_tokens);

// ---------------------------------------------------------------------------------------------
// Metrics.

// The §9.1 offsets: linspace(-max_offset, max_offset, count), real-valued.
std::vector<double> logit_offsets(double max_offset, uint32_t count);

// The RoPE logit kernel s(q, k, Δ) = Σ_rotary-blocks q^(i)·R(Δθ_i) k^(i) + q[static]·k[static],
// raw (no 1/√D), blocks in the shape's own layout. s(q, k, 0) = q·k.
double rope_logit(const ModelShape& shape, const double* q, const double* k, double delta);

// §9.1 MAE of one (layer, KV head): mean over Δ of the mean over rows r = (t, g) of
// |s(q_{t,g}, k_t, Δ) - s(q_{t,g}, k̂_t, Δ)|. q [T, G, D], k and k_hat [T, D].
double rope_logit_mae(const ModelShape& shape, const float* q, const float* k, const float* k_hat, size_t n_tokens,
                      const std::vector<double>& offsets);

// KL(p || p̂) = Σ p_j ln(p_j / p̂_j) of two distributions over n outcomes (terms with p_j = 0
// contribute 0). Error(invalid_argument) when p̂_j = 0 where p_j > 0.
double kl_divergence(const double* p, const double* p_hat, size_t n);
// Indices of the k largest values, largest first; ties go to the lower index.
std::vector<size_t> top_k(const double* x, size_t n, size_t k);
// |top_k(a) ∩ top_k(b)| / min(k, n).
double top_k_overlap(const double* a, const double* b, size_t n, size_t k);

// Softmax KL and top-10 overlap of one (layer, KV head), §9.2 (proposed): for every query
// head g of the group and every query position t among the last `window` positions of each
// sequence, p = softmax_j(q_t·k_j/√D) over j <= t of the same sequence, p̂ the same with k̂.
// q [T, G, D] and keys post-RoPE at their real positions.
struct AttentionDivergence {
  double kl_sum = 0.0;
  double top10_sum = 0.0;
  uint64_t queries = 0;
  double kl() const { return queries ? kl_sum / double(queries) : 0.0; }
  double top10() const { return queries ? top10_sum / double(queries) : 0.0; }
};
AttentionDivergence attention_divergence(const ModelShape& shape, const float* q, const float* k, const float* k_hat,
                                         size_t n_tokens, uint32_t seq_tokens, uint32_t window);
// The same for several reconstructions of the same keys at once (p is computed once).
std::vector<AttentionDivergence> attention_divergence(const ModelShape& shape, const float* q, const float* k,
                                                      const std::vector<const float*>& k_hats, size_t n_tokens,
                                                      uint32_t seq_tokens, uint32_t window);

// ---------------------------------------------------------------------------------------------
// Methods and the evaluation driver.

enum class KeyMethod : uint8_t { uniform = 0, bgt_energy = 1, bgt_product = 2, kivi = 3 };
const char* key_method_name(KeyMethod m) noexcept;   // "uniform" | "bgt-energy" | "bgt-product" | "kivi"
const char* key_method_label(KeyMethod m) noexcept;  // human-readable, for tables
KeyMethod key_method_from_name(const std::string& name);  // Error(invalid_argument)

struct EvalOptions {
  std::vector<int> bits = {2, 3, 4};
  std::vector<KeyMethod> methods = {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product,
                                    KeyMethod::kivi};
  CodebookRecipe recipe = CodebookRecipe::lloyd_max;
  uint64_t rotation_seed = 42;
  KiviOptions kivi;                // bits is taken from the setting
  double max_offset = 1024.0;      // §9.1
  uint32_t n_offsets = 50;         // §9.1
  bool attention = true;           // compute KL / top-10 (§9.2)
  uint32_t kl_window = 128;        // last positions of each sequence used as queries
};

// The key quantizer of one setting for every (layer, KV head): a plan for the TQ methods
// (calibrated on `calib`), KIVI's options otherwise.
class KeyQuantizer {
 public:
  KeyQuantizer(KeyMethod method, int bits, const EnergyAccumulator& calib, const EvalOptions& options);
  KeyMethod method() const { return method_; }
  int bits() const { return bits_; }
  const Plan* plan() const { return plan_.get(); }  // null for KIVI
  std::shared_ptr<const Plan> shared_plan() const { return plan_; }
  // Keys [n_tokens, D] of (layer, KV head), sequences of seq_tokens rows -> reconstruction.
  void roundtrip(uint32_t layer, uint32_t kv_head, const float* k, size_t n_tokens, uint32_t seq_tokens,
                 float* k_hat) const;
  // Mean over (layer, KV head) of the stored bytes per token: keys only, and keys + values
  // (TQ: Plan::bytes_per_token with V at the same bits; KIVI: its value quantizer).
  double key_bytes_per_token(uint32_t seq_tokens) const;
  double kv_bytes_per_token(uint32_t seq_tokens) const;

 private:
  KeyMethod method_;
  int bits_;
  ModelShape shape_;
  KiviOptions kivi_;
  std::shared_ptr<const Plan> plan_;
  std::vector<HeadQuantizers> heads_;  // [layer * n_kv_heads + head], TQ methods
};

// Energies of every (layer, KV head) of a calibration set.
EnergyAccumulator calibration_energies(const Activations& calib);

struct SettingResult {
  KeyMethod method = KeyMethod::uniform;
  int bits = 0;
  std::vector<double> layer_mae;    // per layer, mean over KV heads
  std::vector<double> layer_kl;     // per layer, mean over (KV head, query head, position)
  std::vector<double> layer_top10;  // idem
  double key_bytes_per_token = 0;   // mean per (layer, KV head)
  double kv_bytes_per_token = 0;
  std::shared_ptr<const Plan> plan;  // TQ methods
  double mae() const;    // mean over layers
  double kl() const;
  double top10() const;
};

struct EvalReport {
  ModelShape shape;
  std::string calib_source, test_source;
  uint64_t calib_tokens = 0, test_tokens = 0;
  uint32_t seq_tokens = 0;
  EvalOptions options;
  std::vector<SettingResult> settings;  // bits-major, then methods in option order
  const SettingResult* find(KeyMethod m, int bits) const;  // null when not run
};

// Runs every (bits, method) setting. Error(shape_mismatch) when the two sets disagree.
EvalReport run_quality_eval(const Activations& calib, const Activations& test, const EvalOptions& options);

// (value - baseline) / baseline.
double relative_change(double value, double baseline);
// Number of layers where value < baseline.
uint32_t layers_won(const std::vector<double>& value, const std::vector<double>& baseline);

// ---------------------------------------------------------------------------------------------
// Synthetic LLM-like activations (src/eval/synthetic.cpp documents the model). Synthetic: it
// mimics the statistics real models show, it is not a model.

struct SyntheticOptions {
  uint32_t head_dim = 128;
  uint32_t n_layers = 4;
  uint32_t n_q_heads = 8;
  uint32_t n_kv_heads = 2;
  RopeLayout layout = RopeLayout::split_half;
  double rope_theta = 10000.0;
  uint32_t sequences = 8;
  uint32_t seq_tokens = 256;
  uint64_t seed = 1;    // the "model": energy profiles, outlier channels, sink direction
  uint64_t stream = 0;  // the token draws: use different streams for calibration and test
};
// Error(invalid_argument) for a bad shape or zero sizes.
Activations synthetic_activations(const SyntheticOptions& options);

}  // namespace kvbits::eval
