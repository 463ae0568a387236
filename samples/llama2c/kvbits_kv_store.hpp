// llama2c — a KvStore backed by a packed kvbits cache.
//
// It uses nothing but the public C API (kvbits.h, libkvbits), exactly as a game, a desktop app
// or a Rust/Go runtime would embed kvbits: one CPU context, one plan loaded from a file, one
// cache holding one sequence. The forward pass appends each layer's post-RoPE K/V in layer order
// (the cache keeps a length per layer) and asks kvb_attention_decode for the attended output.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kv_store.hpp"
#include "kvbits.h"
#include "model.hpp"

namespace llama2c {

// A failed kvbits call, or a call the store refused before reaching kvbits. what() reads
// "kvbits: <what was done>: <status name>: <kvbits' message>".
class KvbitsError : public std::runtime_error {
 public:
  KvbitsError(kvb_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  kvb_status status() const { return status_; }

 private:
  kvb_status status_;
};

// The model shape kvbits needs to check a plan against: llama2.c models rotate interleaved
// pairs over the whole head with theta 10000.
kvb_model_shape kvbits_model_shape(const Config& config);

// Bytes per token per KV head a plan costs over a sequence of seq_tokens (>= 1) tokens: its
// packed bytes (info.bytes_per_token_per_head, fp16 layers at 4 * head_dim) for the tokens it
// packs, and 4 * head_dim for the fp16 sink and window rows, the first sink_tokens + window_tokens
// tokens of the sequence held in fp16 — averaged over the sequence, as KIVI's fp16 residual is
// (KiviKvStore::bytes_per_token_per_head).
double kvbits_bytes_per_token_per_head(const kvb_plan_info& info, int seq_tokens);

class KvbitsKvStore final : public KvStore {
 public:
  // Loads `plan_path`, checks it was made for this model and runs on `backend` (CPU by default;
  // CUDA or AUTO put the cache in GPU memory: the store's host tensors are staged by kvbits), and
  // creates a cache for one sequence of up to config.seq_len positions. `n_threads` CPU workers
  // (1: a decode step of a small model is too short to share). KvbitsError on failure.
  KvbitsKvStore(const Config& config, const std::string& plan_path, uint32_t n_threads = 1,
                kvb_backend backend = KVB_BACKEND_CPU);

  // kvb_cache_append of one position. KvbitsError: a layer out of range or a position out of
  // order (the store refuses those itself), or the cache's own error (full, non-finite input).
  void append(int layer, int pos, const float* k, const float* v) override;
  // kvb_attention_decode with scale 1/sqrt(head_dim); `pos` must be the last appended position
  // of `layer` (decode attends over everything the layer holds).
  void attention(int layer, int pos, const float* q, float* out) override;

  // kvb_cache_read: the key and value of (layer, pos) as the cache holds them, dequantized.
  void read(int layer, int pos, float* k, float* v) const;

  // Empties the store for a new sequence; the cache and its pool are reused.
  void reset();

  const kvb_plan_info& plan_info() const { return info_; }
  // kvbits_bytes_per_token_per_head of the store's plan; KvbitsError for seq_tokens < 1.
  double bytes_per_token_per_head(int seq_tokens) const;
  // The backend the store's context runs on (never KVB_BACKEND_AUTO).
  kvb_backend backend() const;
  // kvb_cache_get_stats of the cache (memory in use).
  kvb_cache_stats cache_stats() const;

 private:
  // Throws KvbitsError for a status other than KVB_OK, with err_'s message.
  void check(kvb_status status, const std::string& what) const;

  // The C handles; kvbits lets them be destroyed in any order.
  std::unique_ptr<kvb_context, void (*)(kvb_context*)> ctx_{nullptr, kvb_context_destroy};
  std::unique_ptr<kvb_plan, void (*)(kvb_plan*)> plan_{nullptr, kvb_plan_destroy};
  std::unique_ptr<kvb_cache, void (*)(kvb_cache*)> cache_{nullptr, kvb_cache_destroy};
  mutable kvb_error err_;
  kvb_plan_info info_;
  uint64_t seq_ = KVB_SEQ_NONE;
  std::vector<int> length_;  // positions appended per layer
};

}  // namespace llama2c
