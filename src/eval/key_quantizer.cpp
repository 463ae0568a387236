// K-only quantize -> dequantize for one setting (method, bits) over every (layer, KV head).
// The TQ methods go through the SDK's own path: build_plan -> make_head_quantizers ->
// TqQuantizer::encode/decode; KIVI through the reference quantizer of kivi.cpp.
#include <string>
#include <vector>

#include "kvbits/bitpack.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {

const char* key_method_name(KeyMethod m) noexcept {
  switch (m) {
    case KeyMethod::uniform: return "uniform";
    case KeyMethod::bgt_energy: return "bgt-energy";
    case KeyMethod::bgt_product: return "bgt-product";
    case KeyMethod::kivi: return "kivi";
  }
  return "unknown";
}

const char* key_method_label(KeyMethod m) noexcept {
  switch (m) {
    case KeyMethod::uniform: return "uniform TQ-MSE";
    case KeyMethod::bgt_energy: return "Block-GTQ (paper score)";
    case KeyMethod::bgt_product: return "Block-GTQ (product score)";
    case KeyMethod::kivi: return "KIVI";
  }
  return "unknown";
}

KeyMethod key_method_from_name(const std::string& name) {
  for (KeyMethod m : {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product, KeyMethod::kivi})
    if (name == key_method_name(m)) return m;
  fail(StatusCode::invalid_argument,
       "unknown key method '" + name + "' (expected uniform, bgt-energy, bgt-product or kivi)");
}

KeyQuantizer::KeyQuantizer(KeyMethod method, int bits, const EnergyAccumulator& calib, const EvalOptions& options)
    : method_(method), bits_(bits), shape_(calib.shape()), kivi_(options.kivi) {
  if (bits < 1 || bits > 8)
    fail(StatusCode::invalid_argument, "eval: key bits must be in [1, 8], got " + std::to_string(bits));
  if (method == KeyMethod::kivi) {
    kivi_.bits = bits;
    return;
  }
  PlanOptions o;
  o.method = method == KeyMethod::uniform ? Method::uniform_tq_mse : Method::block_gtq;
  o.score = method == KeyMethod::bgt_energy ? ScoreKind::energy : ScoreKind::product;
  o.recipe = options.recipe;
  o.k_avg_bits = bits;
  o.v_bits = bits;  // V only enters the K+V byte count
  o.rotation_seed = options.rotation_seed;
  o.producer.tool = "kvbits eval";
  plan_ = std::make_shared<const Plan>(build_plan(calib, o));
  heads_.reserve(size_t(shape_.n_layers) * shape_.n_kv_heads);
  for (uint32_t l = 0; l < shape_.n_layers; ++l)
    for (uint32_t h = 0; h < shape_.n_kv_heads; ++h) heads_.push_back(make_head_quantizers(*plan_, l, h));
}

void KeyQuantizer::roundtrip(uint32_t layer, uint32_t kv_head, const float* k, size_t n_tokens, uint32_t seq_tokens,
                             float* k_hat) const {
  if (layer >= shape_.n_layers || kv_head >= shape_.n_kv_heads)
    fail(StatusCode::invalid_argument, "eval: (layer " + std::to_string(layer) + ", kv head " +
                                           std::to_string(kv_head) + ") out of range for " + shape_.describe());
  const uint32_t D = shape_.head_dim;
  if (method_ == KeyMethod::kivi) {
    if (seq_tokens == 0 || n_tokens % seq_tokens != 0)
      fail(StatusCode::invalid_argument, "eval: KIVI needs whole sequences of " + std::to_string(seq_tokens) + " tokens");
    for (size_t s0 = 0; s0 < n_tokens; s0 += seq_tokens)  // groups never straddle two sequences
      kivi_roundtrip_keys(k + s0 * D, seq_tokens, D, kivi_, k_hat + s0 * D);
    return;
  }
  const TqQuantizer& q = heads_[size_t(layer) * shape_.n_kv_heads + kv_head].k;
  std::vector<uint8_t> packed(q.code_bytes());
  std::vector<uint16_t> scales(q.n_groups());
  for (size_t t = 0; t < n_tokens; ++t) {
    q.encode(k + t * D, packed.data(), scales.data());
    for (uint16_t sc : scales)
      if ((sc & 0x7c00u) == 0x7c00u)  // fp16 inf: a group norm beyond the scale's range
        fail(StatusCode::invalid_argument, "eval: key of token " + std::to_string(t) + " (layer " +
                                               std::to_string(layer) + ", kv head " + std::to_string(kv_head) +
                                               ") overflows the fp16 group scale");
    q.decode(packed.data(), scales.data(), k_hat + t * D);
  }
}

double KeyQuantizer::key_bytes_per_token(uint32_t seq_tokens) const {
  if (method_ == KeyMethod::kivi) return kivi_key_bytes_per_token(shape_.head_dim, kivi_, seq_tokens);
  // Plan::bytes_per_token counts K codes + K scales + V codes + the V scale; take V away.
  const double v_bytes = double(packed_bytes(shape_.head_dim, bits_) + 2);
  return plan_->mean_bytes_per_token() - v_bytes;
}

double KeyQuantizer::kv_bytes_per_token(uint32_t seq_tokens) const {
  if (method_ == KeyMethod::kivi)
    return kivi_key_bytes_per_token(shape_.head_dim, kivi_, seq_tokens) +
           kivi_value_bytes_per_token(shape_.head_dim, kivi_, seq_tokens);
  return plan_->mean_bytes_per_token();
}

}  // namespace kvbits::eval
