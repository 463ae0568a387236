// Activations for the quality lab: dump conversion, per-head row gathering, calibration.
#include <cmath>
#include <cstring>
#include <string>

#include "kvbits/energy.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/half.hpp"
#include "kvbits/rope_blocks.hpp"
#include "common/dtype_load.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

[[noreturn]] void bad(const std::string& m) { fail(StatusCode::invalid_argument, "eval activations: " + m); }

// One tensor of any dump dtype as fp32 (fp16 and bf16 widen exactly).
std::vector<float> to_f32(const TensorView& t) {
  std::vector<float> out(size_t(t.numel()));
  load_row(t.data, 0, out.size(), t.dtype, out.data());
  return out;
}

// Rotates every head of every row by RoPE at the row's position times `sign` (fp64).
void rotate_rows(const ModelShape& s, std::vector<float>& x, uint32_t heads, uint32_t seq_tokens, double sign) {
  const uint32_t D = s.head_dim;
  std::vector<double> v(D);
  const size_t rows = x.size() / (size_t(heads) * D);
  for (size_t r = 0; r < rows; ++r) {
    const double pos = sign * double(r % seq_tokens);
    for (uint32_t h = 0; h < heads; ++h) {
      float* p = &x[(r * heads + h) * D];
      for (uint32_t d = 0; d < D; ++d) v[d] = p[d];
      apply_rope(s, pos, v.data());
      for (uint32_t d = 0; d < D; ++d) p[d] = float(v[d]);
    }
  }
}

}  // namespace

void Activations::validate() const {
  shape.validate();
  if (seq_tokens == 0) bad("seq_tokens must be >= 1");
  if (tokens == 0 || tokens % seq_tokens != 0)
    bad(std::to_string(tokens) + " token rows are not a positive multiple of " + std::to_string(seq_tokens) +
        " tokens per sequence");
  if (q.size() != shape.n_layers || k.size() != shape.n_layers)
    fail(StatusCode::shape_mismatch, "eval activations: " + std::to_string(q.size()) + " q / " +
                                         std::to_string(k.size()) + " k layers for " + shape.describe());
  for (uint32_t l = 0; l < shape.n_layers; ++l) {
    if (q[l].size() != tokens * shape.n_q_heads * shape.head_dim ||
        k[l].size() != tokens * shape.n_kv_heads * shape.head_dim)
      fail(StatusCode::shape_mismatch, "eval activations: layer " + std::to_string(l) + " does not hold " +
                                           std::to_string(tokens) + " rows of " + shape.describe());
    for (const auto* x : {&q[l], &k[l]})
      for (size_t i = 0; i < x->size(); ++i)
        if (!std::isfinite((*x)[i]))
          bad("non-finite " + std::string(x == &q[l] ? "query" : "key") + " value at layer " + std::to_string(l) +
              ", element " + std::to_string(i));
  }
}

Activations activations_from_dump(const ActivationDump& dump, uint32_t seq_tokens) {
  Activations a;
  a.shape = dump.metadata.shape;
  a.seq_tokens = seq_tokens;
  a.tokens = dump.metadata.tokens;
  a.source = dump.metadata.corpus;
  if (seq_tokens == 0 || a.tokens % seq_tokens != 0)
    bad("the dump holds " + std::to_string(a.tokens) + " tokens, not a multiple of " + std::to_string(seq_tokens) +
        " tokens per sequence (--seq-tokens)");
  for (const ActivationDump::Layer& layer : dump.layers) {
    a.q.push_back(to_f32(*layer.q));
    a.k.push_back(to_f32(*layer.k));
    if (dump.metadata.rope_applied == RopeApplied::post) {  // back to pre-RoPE: rotate by -position
      rotate_rows(a.shape, a.q.back(), a.shape.n_q_heads, seq_tokens, -1.0);
      rotate_rows(a.shape, a.k.back(), a.shape.n_kv_heads, seq_tokens, -1.0);
    }
  }
  a.validate();
  return a;
}

HeadRows head_rows(const Activations& a, uint32_t layer, uint32_t kv_head, bool post_rope) {
  const ModelShape& s = a.shape;
  if (layer >= s.n_layers || kv_head >= s.n_kv_heads)
    bad("(layer " + std::to_string(layer) + ", kv head " + std::to_string(kv_head) + ") out of range for " +
        s.describe());
  const uint32_t D = s.head_dim, G = s.gqa_group();
  const size_t T = size_t(a.tokens);
  HeadRows h;
  h.q.resize(T * G * D);
  h.k.resize(T * D);
  const float* q = a.q[layer].data();
  const float* k = a.k[layer].data();
  for (size_t t = 0; t < T; ++t) {
    std::memcpy(&h.k[t * D], &k[(t * s.n_kv_heads + kv_head) * D], D * sizeof(float));
    for (uint32_t g = 0; g < G; ++g)
      std::memcpy(&h.q[(t * G + g) * D], &q[(t * s.n_q_heads + kv_head * G + g) * D], D * sizeof(float));
  }
  if (post_rope) {
    rotate_rows(s, h.k, 1, a.seq_tokens, 1.0);
    rotate_rows(s, h.q, G, a.seq_tokens, 1.0);
  }
  return h;
}

EnergyAccumulator calibration_energies(const Activations& calib) {
  calib.validate();
  EnergyAccumulator acc(calib.shape);
  for (uint32_t l = 0; l < calib.shape.n_layers; ++l)
    acc.observe(l, calib.q[l].data(), calib.k[l].data(), size_t(calib.tokens), DType::f32);
  return acc;
}

}  // namespace kvbits::eval
