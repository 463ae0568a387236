#include "kivi_kv_store.hpp"

#include <algorithm>
#include <cmath>

#include "kvbits/eval.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"
#include "ops.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;

// G and R bound: longer than any sequence this runtime holds, and safe in int arithmetic.
constexpr uint32_t kMaxLength = 1u << 16;

[[noreturn]] void bad(const std::string& message) { kvbits::fail(StatusCode::invalid_argument, "kivi store: " + message); }

std::string at(int layer, int pos) { return "layer " + std::to_string(layer) + ", position " + std::to_string(pos); }

// KIVI keeps K and V in the model dtype, fp16.
float to_fp16(float x) { return kvbits::half_to_float(kvbits::float_to_half(x)); }

kvbits::eval::KiviOptions lab_options(const KiviStoreOptions& o) {
  kvbits::eval::KiviOptions lab;
  lab.bits = o.bits;
  lab.group = o.group;
  lab.residual = o.residual;
  return lab;
}

}  // namespace

std::string kivi_setting_name(const KiviStoreOptions& o) {
  const std::string b = std::to_string(o.bits);
  return "KIVI K" + b + "V" + b + " (G" + std::to_string(o.group) + " R" + std::to_string(o.residual) + ")";
}

KiviKvStore::KiviKvStore(const Config& config, const KiviStoreOptions& options)
    : options_(options),
      n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.n_heads > 0 ? config.head_dim() : 0),
      capacity_(config.seq_len) {
  const KiviStoreOptions& o = options_;
  if (o.bits < 1 || o.bits > 8) bad("bits must be in [1, 8], got " + std::to_string(o.bits));
  if (o.group < 1 || o.group > kMaxLength)
    bad("group size G must be in [1, " + std::to_string(kMaxLength) + "], got " + std::to_string(o.group));
  if (o.residual > kMaxLength)
    bad("residual length R must be at most " + std::to_string(kMaxLength) + ", got " + std::to_string(o.residual));
  // KIVI flushes the key buffer as whole G-token groups, so R must be a multiple of G.
  if (o.residual < o.group || o.residual % o.group != 0)
    bad("residual length R must be a positive multiple of the group size G = " + std::to_string(o.group) + ", got " +
        std::to_string(o.residual));
  if (o.prefill < 0 || o.prefill > capacity_)
    bad("prefill must be in [0, " + std::to_string(capacity_) + "], got " + std::to_string(o.prefill));
  if (config.n_layers < 1 || n_kv_heads_ < 1 || head_dim_ < 1 || capacity_ < 1 || n_heads_ % n_kv_heads_ != 0 ||
      config.dim != n_heads_ * head_dim_)
    bad("the model shape has no KV cache to hold");
  const size_t kv_dim = size_t(config.kv_dim());
  keys_.assign(size_t(config.n_layers) * size_t(capacity_) * kv_dim, 0.0f);
  values_.assign(keys_.size(), 0.0f);
  layers_.assign(size_t(config.n_layers), Layer{});
  // A key flush is R tokens, and never more than the store holds.
  scratch_in_.resize(size_t(std::min(int(o.residual), capacity_)) * size_t(head_dim_));
  scratch_out_.resize(scratch_in_.size());
  scores_.resize(size_t(capacity_));
}

float* KiviKvStore::keys_at(int layer, int pos) {
  return keys_.data() + (size_t(layer) * size_t(capacity_) + size_t(pos)) * size_t(n_kv_heads_ * head_dim_);
}

float* KiviKvStore::values_at(int layer, int pos) {
  return values_.data() + (size_t(layer) * size_t(capacity_) + size_t(pos)) * size_t(n_kv_heads_ * head_dim_);
}

void KiviKvStore::check_layer(int layer, int pos, const char* what) const {
  if (layer < 0 || size_t(layer) >= layers_.size()) bad(std::string(what) + " at " + at(layer, pos) + ": no such layer");
}

void KiviKvStore::append(int layer, int pos, const float* k, const float* v) {
  check_layer(layer, pos, "append");
  Layer& l = layers_[size_t(layer)];
  if (pos != l.length || pos >= capacity_)
    bad("append at " + at(layer, pos) + ": expected position " + std::to_string(l.length) + " (capacity " +
        std::to_string(capacity_) + ")");
  const size_t kv_dim = size_t(n_kv_heads_ * head_dim_);
  for (size_t i = 0; i < kv_dim; ++i)
    if (!std::isfinite(to_fp16(k[i])) || !std::isfinite(to_fp16(v[i])))
      bad("append at " + at(layer, pos) + ": element " + std::to_string(i) +
          " of K or V is not finite in fp16 (KIVI stores the model dtype)");
  if (l.step_open) finish_step(layer);
  float* kd = keys_at(layer, pos);
  float* vd = values_at(layer, pos);
  for (size_t i = 0; i < kv_dim; ++i) {
    kd[i] = to_fp16(k[i]);
    vd[i] = to_fp16(v[i]);
  }
  ++l.length;
  l.step_open = true;
}

void KiviKvStore::attention(int layer, int pos, const float* q, float* out) {
  check_layer(layer, pos, "attention");
  const Layer& l = layers_[size_t(layer)];
  if (pos + 1 != l.length)
    bad("attention at " + at(layer, pos) + ": decode runs at the last appended position (" +
        std::to_string(l.length - 1) + ")");
  if (!l.step_open)
    bad("attention at " + at(layer, pos) + ": already answered; the step's quantization has run since");
  const size_t kv_dim = size_t(n_kv_heads_ * head_dim_);
  const float* keys = keys_at(layer, 0);
  const float* values = values_at(layer, 0);
  const int group = n_heads_ / n_kv_heads_;
  const float scale = 1.0f / std::sqrt(float(head_dim_));
  // The same arithmetic as FloatKvStore, over the reconstruction.
  for (int h = 0; h < n_heads_; ++h) {
    const float* qh = q + h * head_dim_;
    const size_t kv_offset = size_t(h / group) * size_t(head_dim_);
    for (int t = 0; t <= pos; ++t) scores_[size_t(t)] = dot(qh, keys + size_t(t) * kv_dim + kv_offset, head_dim_) * scale;
    softmax(scores_.data(), pos + 1);
    float* oh = out + h * head_dim_;
    std::fill(oh, oh + head_dim_, 0.0f);
    for (int t = 0; t <= pos; ++t) {
      const float* vt = values + size_t(t) * kv_dim + kv_offset;
      const float p = scores_[size_t(t)];
      for (int d = 0; d < head_dim_; ++d) oh[d] += p * vt[d];
    }
  }
  finish_step(layer);
}

// The spec's §1.3 rules after a step's attention. During the prefill nothing is quantized; at
// its last position the same rules quantize everything they allow at once, which is exactly
// the prefill split (keys: L - L mod R quantized; values: all but the last R).
void KiviKvStore::finish_step(int layer) {
  Layer& l = layers_[size_t(layer)];
  l.step_open = false;
  if (l.length < options_.prefill) return;
  const int r = int(options_.residual);
  const int flush = (l.length - l.keys_quantized) / r * r;
  if (flush > 0) {
    quantize_keys(layer, l.keys_quantized, l.keys_quantized + flush);
    l.keys_quantized += flush;
  }
  while (l.length - l.values_quantized > r) quantize_value(layer, l.values_quantized++);
}

void KiviKvStore::quantize_keys(int layer, int from, int to) {
  const size_t d = size_t(head_dim_);
  kvbits::eval::KiviOptions o = lab_options(options_);
  o.residual = 0;
  // R tokens at a time (the scratch size); R is a multiple of G, so groups stay aligned.
  for (int t0 = from; t0 < to; t0 += int(options_.residual)) {
    const size_t n = size_t(std::min(to - t0, int(options_.residual)));
    for (int h = 0; h < n_kv_heads_; ++h) {
      for (size_t t = 0; t < n; ++t)
        std::copy_n(keys_at(layer, t0 + int(t)) + size_t(h) * d, d, scratch_in_.begin() + std::ptrdiff_t(t * d));
      kvbits::eval::kivi_roundtrip_keys(scratch_in_.data(), n, uint32_t(d), o, scratch_out_.data());
      for (size_t t = 0; t < n; ++t)
        std::copy_n(scratch_out_.begin() + std::ptrdiff_t(t * d), d, keys_at(layer, t0 + int(t)) + size_t(h) * d);
    }
  }
}

void KiviKvStore::quantize_value(int layer, int pos) {
  kvbits::eval::KiviOptions o = lab_options(options_);
  o.residual = 0;
  float* v = values_at(layer, pos);
  for (int h = 0; h < n_kv_heads_; ++h) {
    float* vh = v + size_t(h) * size_t(head_dim_);
    kvbits::eval::kivi_roundtrip_values(vh, 1, uint32_t(head_dim_), o, scratch_out_.data());
    std::copy_n(scratch_out_.begin(), head_dim_, vh);
  }
}

void KiviKvStore::read(int layer, int pos, float* k, float* v) const {
  check_layer(layer, pos, "read");
  if (pos < 0 || pos >= layers_[size_t(layer)].length) bad("read at " + at(layer, pos) + ": not appended");
  const size_t kv_dim = size_t(n_kv_heads_ * head_dim_);
  const size_t offset = (size_t(layer) * size_t(capacity_) + size_t(pos)) * kv_dim;
  std::copy_n(keys_.begin() + std::ptrdiff_t(offset), kv_dim, k);
  std::copy_n(values_.begin() + std::ptrdiff_t(offset), kv_dim, v);
}

KiviSlot KiviKvStore::key_slot(int layer, int pos) const {
  check_layer(layer, pos, "key_slot");
  const Layer& l = layers_[size_t(layer)];
  if (pos < 0 || pos >= l.length) bad("key_slot at " + at(layer, pos) + ": not appended");
  return pos < l.keys_quantized ? KiviSlot::quantized : KiviSlot::fp16;
}

KiviSlot KiviKvStore::value_slot(int layer, int pos) const {
  check_layer(layer, pos, "value_slot");
  const Layer& l = layers_[size_t(layer)];
  if (pos < 0 || pos >= l.length) bad("value_slot at " + at(layer, pos) + ": not appended");
  return pos < l.values_quantized ? KiviSlot::quantized : KiviSlot::fp16;
}

int KiviKvStore::length(int layer) const {
  check_layer(layer, 0, "length");
  return layers_[size_t(layer)].length;
}

int KiviKvStore::quantized_keys(int layer) const {
  check_layer(layer, 0, "quantized_keys");
  return layers_[size_t(layer)].keys_quantized;
}

int KiviKvStore::quantized_values(int layer) const {
  check_layer(layer, 0, "quantized_values");
  return layers_[size_t(layer)].values_quantized;
}

void KiviKvStore::reset() { std::fill(layers_.begin(), layers_.end(), Layer{}); }

double KiviKvStore::bytes_per_token_per_head(int seq_tokens) const {
  if (seq_tokens < 1) bad("bytes per token: seq_tokens must be >= 1, got " + std::to_string(seq_tokens));
  const kvbits::eval::KiviOptions o = lab_options(options_);
  return kvbits::eval::kivi_key_bytes_per_token(uint32_t(head_dim_), o, uint32_t(seq_tokens)) +
         kvbits::eval::kivi_value_bytes_per_token(uint32_t(head_dim_), o, uint32_t(seq_tokens));
}

}  // namespace llama2c
