// llama2c — judging a KV cache against the exact fp32 one on the same model.
//
// Two views: teacher-forced next-token distributions over held-out sequences sampled from the
// fp32 model (perplexity, KL(p_fp32 || p_cache), top-1 agreement), and greedy generation from a
// prompt (how many leading tokens stay the same). Any KvStore can be judged; the CLI's `eval`
// judges kvbits plans.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kv_store.hpp"
#include "model.hpp"

namespace llama2c {

struct EvalOptions {
  int sequences = 8;         // held-out sequences
  int tokens = 256;          // positions per sequence, the leading BOS included (>= 2)
  uint64_t seed = 2;         // sampler seed of the held-out sequences (one stream for all)
  float temperature = 1.0f;  // sampling temperature of the held-out sequences
  std::vector<int> prompt;   // greedy generation prompt (BOS first); empty: no greedy run
  int gen_tokens = 128;      // greedy tokens generated after the prompt at most
};

// What the fp32 cache gives, computed once and compared against every other cache.
struct Reference {
  std::vector<std::vector<int>> sequences;          // held-out token ids, BOS first
  std::vector<std::vector<float>> log_probs;        // per sequence [tokens - 1][vocab]
  double perplexity = 0;                            // of the held-out next tokens
  std::vector<int> greedy;                          // greedy continuation of the prompt
};

struct CacheScore {
  double perplexity = 0;  // exp(mean negative log-likelihood of the held-out next tokens)
  double kl = 0;          // mean KL(p_fp32 || p_cache) in nats, over all predictions
  double top1 = 0;        // fraction of predictions whose argmax equals the fp32 one
  size_t predictions = 0; // sequences * (tokens - 1)
  std::vector<int> greedy;   // greedy continuation of the prompt
  int greedy_leading = 0;    // leading tokens equal to the fp32 continuation
  double greedy_match = 0;   // positions equal / the longer of the two continuations (1 if both empty)
};

// A fresh, empty cache for one sequence.
using KvStoreFactory = std::function<std::unique_ptr<KvStore>()>;
// The same for caches that treat a prompt apart (KIVI's prefill): `prompt_tokens` leading
// positions are a prompt run before decoding; 0 for the teacher-forced runs, where every
// position is scored as a decode step.
using PromptKvStoreFactory = std::function<std::unique_ptr<KvStore>(int prompt_tokens)>;

// Samples the held-out sequences and runs them and the prompt with the fp32 cache.
// Error(invalid_argument) for bad options.
Reference run_reference(const Model& model, const EvalOptions& options);

// Runs the reference's sequences teacher-forced and the prompt greedily on caches from `make`.
CacheScore score_cache(const Model& model, const Reference& reference, const EvalOptions& options,
                       const KvStoreFactory& make);
// The same; the greedy run's cache is told the prompt's length.
CacheScore score_cache(const Model& model, const Reference& reference, const EvalOptions& options,
                       const PromptKvStoreFactory& make);

}  // namespace llama2c
