#include "attention/request.hpp"

#include <cmath>
#include <string>

#include "attention/query_input.hpp"
#include "kvbits/status.hpp"

namespace kvbits::attn {
namespace {

[[noreturn]] void reject(StatusCode code, const char* op, const std::string& what) {
  fail(code, std::string(op) + ": " + what);
}

}  // namespace

Request validate_request(const char* op, bool decode, const Cache& cache, uint32_t layer, const uint64_t* seqs,
                         const uint32_t* q_len, size_t n_seqs, const void* q, DType q_dtype, const float* out,
                         const AttentionParams& params) {
  const ModelShape& shape = cache.plan().shape;
  const bool on_device = cache.context().backend() == Backend::cuda;
  if (cache.context().backend() != Backend::cpu && !on_device)
    reject(StatusCode::unsupported, op, std::string("the ") + backend_name(cache.context().backend()) +
                                            " backend has no attention in this build");
  if (layer >= shape.n_layers)
    reject(StatusCode::invalid_argument, op,
           "layer " + std::to_string(layer) + " out of range (the plan has " + std::to_string(shape.n_layers) + ")");
  if (q_dtype != DType::f32 && q_dtype != DType::f16 && q_dtype != DType::bf16)
    reject(StatusCode::invalid_argument, op, "unknown query dtype " + std::to_string(int(q_dtype)));
  if (!std::isfinite(params.scale) || params.scale < 0.0f)
    reject(StatusCode::invalid_argument, op,
           "softmax scale " + std::to_string(params.scale) + " must be finite and > 0 (or 0 for 1/sqrt(head_dim))");

  Request req;
  req.op = op;
  req.layer = layer;
  if (params.precision != Precision::fp16 && params.precision != Precision::fp32)
    reject(StatusCode::invalid_argument, op, "precision must be fp16 (0) or fp32 (1)");
  req.scale = params.scale > 0.0f ? params.scale : float(1.0 / std::sqrt(double(shape.head_dim)));
  if (n_seqs == 0) return req;
  if (!seqs) reject(StatusCode::null_pointer, op, "seqs is null");
  if (!decode && !q_len) reject(StatusCode::null_pointer, op, "q_len is null");
  if (!q) reject(StatusCode::null_pointer, op, "q is null");
  if (!out) reject(StatusCode::null_pointer, op, "out is null");

  req.seqs.resize(n_seqs);
  for (size_t i = 0; i < n_seqs; ++i) {
    // Built only for a message: this loop runs for every sequence of every call and layer.
    const auto who = [&] { return "sequence " + std::to_string(seqs[i]) + " (batch index " + std::to_string(i) + ")"; };
    if (!cache.has_sequence(seqs[i])) reject(StatusCode::not_found, op, who() + " is not in the cache");
    SeqWork& w = req.seqs[i];
    w.len = cache.length(seqs[i], layer);
    w.q_len = decode ? 1 : q_len[i];
    if (decode && w.len == 0)
      reject(StatusCode::invalid_argument, op,
             who() + " holds no tokens in layer " + std::to_string(layer) + " (append the query's token first)");
    if (w.q_len == 0) reject(StatusCode::invalid_argument, op, who() + " has q_len 0");
    if (w.q_len > w.len)
      reject(StatusCode::invalid_argument, op,
             who() + " has q_len " + std::to_string(w.q_len) + " but holds only " + std::to_string(w.len) +
                 " tokens in layer " + std::to_string(layer) + " (append the chunk first)");
    w.first_row = req.total_rows;
    req.total_rows += w.q_len;
  }
  // On a CUDA cache q may be device memory: its values are the device backend's to check.
  if (on_device) return req;
  const size_t n_values = req.total_rows * shape.n_q_heads * shape.head_dim;
  const size_t bad = first_non_finite(q, q_dtype, n_values);
  if (bad != n_values) {
    const size_t per_row = size_t(shape.n_q_heads) * shape.head_dim;
    reject(StatusCode::invalid_argument, op,
           "query row " + std::to_string(bad / per_row) + ", head " + std::to_string(bad % per_row / shape.head_dim) +
               ", dim " + std::to_string(bad % shape.head_dim) + " is not finite");
  }
  // Views last: everything above is cheap and says what the caller got wrong.
  for (size_t i = 0; i < n_seqs; ++i) req.seqs[i].sources = make_seq_layer_sources(cache, layer, seqs[i]);
  return req;
}

}  // namespace kvbits::attn
