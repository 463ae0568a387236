#include "capture.hpp"

#include <algorithm>

#include "kv_store.hpp"
#include "kvbits/safetensors.hpp"
#include "kvbits/status.hpp"
#include "runner.hpp"
#include "sampler.hpp"
#include "tokenizer.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;

// Token ids of each teacher-forced sequence: BOS, then the next tokens - 1 forced ids.
std::vector<std::vector<int>> forced_sequences(const CaptureOptions& o) {
  std::vector<std::vector<int>> out;
  const size_t chunk = size_t(o.tokens) - 1, n = o.forced_tokens.size();
  for (size_t at = 0; at < n && out.size() < size_t(o.sequences); at += chunk) {
    std::vector<int> seq = {Tokenizer::kBos};
    seq.insert(seq.end(), o.forced_tokens.begin() + std::ptrdiff_t(at),
               o.forced_tokens.begin() + std::ptrdiff_t(std::min(n, at + chunk)));
    out.push_back(std::move(seq));
  }
  return out;
}

}  // namespace

Capture capture_activations(const Model& model, const CaptureOptions& o) {
  const Config& c = model.config();
  if (o.sequences < 1) kvbits::fail(StatusCode::invalid_argument, "capture: sequences must be >= 1");
  if (o.tokens < 1 || o.tokens > c.seq_len)
    kvbits::fail(StatusCode::invalid_argument,
                 "capture: tokens must be in [1, " + std::to_string(c.seq_len) + "], got " + std::to_string(o.tokens));
  const bool forced = !o.forced_tokens.empty();
  if (forced && o.tokens < 2) kvbits::fail(StatusCode::invalid_argument, "capture: teacher-forcing needs tokens >= 2");

  Capture cap;
  cap.q.resize(size_t(c.n_layers));
  cap.k.resize(size_t(c.n_layers));
  const size_t max_rows = size_t(o.sequences) * size_t(o.tokens);
  for (int l = 0; l < c.n_layers; ++l) {
    cap.q[size_t(l)].reserve(max_rows * size_t(c.dim));
    cap.k[size_t(l)].reserve(max_rows * size_t(c.kv_dim()));
  }
  const RopeStage wanted = o.rope == kvbits::RopeApplied::pre ? RopeStage::pre : RopeStage::post;
  const QkObserver record = [&](int layer, int, RopeStage stage, const float* q, const float* k) {
    if (stage != wanted) return;
    cap.q[size_t(layer)].insert(cap.q[size_t(layer)].end(), q, q + c.dim);
    cap.k[size_t(layer)].insert(cap.k[size_t(layer)].end(), k, k + c.kv_dim());
  };

  Runner runner(model);
  Sampler sampler(o.temperature, o.seed);
  // Runs one sequence of `length` positions; tokens beyond those given are sampled.
  auto run = [&](std::vector<int> seq, size_t length) {
    FloatKvStore kv(c);
    for (size_t pos = 0; pos < length; ++pos) {
      const float* logits = runner.forward(seq[pos], int(pos), kv, record);
      if (seq.size() == pos + 1 && pos + 1 < length) seq.push_back(sampler.sample(logits, c.vocab_size));
    }
    cap.metadata.tokens += length;
    cap.sequences.push_back(std::move(seq));
  };
  if (forced) {
    for (const std::vector<int>& seq : forced_sequences(o)) run(seq, seq.size());
  } else {
    for (int i = 0; i < o.sequences; ++i) run({Tokenizer::kBos}, size_t(o.tokens));
  }

  cap.metadata.shape = c.shape();
  cap.metadata.rope_applied = o.rope;
  cap.metadata.corpus = o.corpus;
  cap.metadata.model_fingerprint = model.fingerprint_hex();
  return cap;
}

void write_capture(const std::string& path, const Capture& cap) {
  const kvbits::ModelShape& s = cap.metadata.shape;
  const uint64_t T = cap.metadata.tokens;
  std::vector<kvbits::TensorToWrite> tensors;
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    tensors.push_back({kvbits::dump_tensor_name(l, 'q'), kvbits::DType::f32, {T, s.n_q_heads, s.head_dim},
                       cap.q[l].data()});
    tensors.push_back({kvbits::dump_tensor_name(l, 'k'), kvbits::DType::f32, {T, s.n_kv_heads, s.head_dim},
                       cap.k[l].data()});
  }
  kvbits::write_safetensors(path, tensors, kvbits::format_dump_metadata(cap.metadata));
}

}  // namespace llama2c
