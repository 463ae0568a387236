// A filled cache to run attention on: a calibrated plan, a context with a chosen thread
// count, sequences of given lengths appended layer by layer (in chunks, to move tokens through
// the recent window), the original K/V inputs, and the fp64 reference over either the
// cache's read-back or the originals.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "attention_test_util.hpp"
#include "kvbits/attention.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/context.hpp"

namespace kvbits::test_attn {

struct ScenarioConfig {
  ModelShape shape;
  PlanOptions plan;
  CacheConfig cache;
  uint32_t threads = 2;
  std::vector<uint32_t> lengths;  // tokens per sequence (every layer)
  uint32_t append_chunk = 0;      // tokens per append call and sequence; 0 = all at once
  uint64_t seed = 1;
};

class Scenario {
 public:
  explicit Scenario(const ScenarioConfig& cfg);

  const ModelShape& shape() const { return cfg_.shape; }
  Cache& cache() { return *cache_; }
  const Cache& cache() const { return *cache_; }
  const std::vector<uint64_t>& seqs() const { return seqs_; }

  // Appends n more tokens to sequence index s in every layer (fresh structured values).
  void append(size_t s, uint32_t n);

  // Query rows [rows][n_q_heads][D] for a call, deterministic in the salt.
  std::vector<float> queries(size_t rows, uint64_t salt) const;

  // fp64 attention for sequence indices `which` with q_len each (decode: all 1), query rows
  // q ([sum q_len][Hq][D] fp32), over the cache's read-back (original = false) or the K/V
  // that were appended (original = true). out [rows][Hq][D], lse [rows][Hq].
  void reference(uint32_t layer, const std::vector<size_t>& which, const std::vector<uint32_t>& q_len,
                 const float* q, double scale, bool original, std::vector<double>& out,
                 std::vector<double>& lse) const;

 private:
  ScenarioConfig cfg_;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Cache> cache_;
  std::vector<uint64_t> seqs_;
  std::vector<std::vector<std::vector<float>>> k_in_, v_in_;  // [seq][layer] tokens * Hkv * D
  uint64_t next_seed_ = 0;
};

// Compares a call's results with the reference: rows * Hq output rows of D, and lse if given.
ErrorStats compare(const std::vector<float>& out, const std::vector<double>& ref, const float* lse,
                   const std::vector<double>& ref_lse, uint32_t D);

}  // namespace kvbits::test_attn
