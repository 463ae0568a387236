#include "cache_eval.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "generate.hpp"
#include "kvbits/status.hpp"
#include "runner.hpp"
#include "sampler.hpp"
#include "tokenizer.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;

// log softmax(logits) in fp64 (max-subtracted), so tiny KL values are not lost to rounding.
void log_softmax(const float* logits, int n, std::vector<double>* out) {
  const double max = logits[argmax(logits, n)];
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - max);
  const double log_norm = max + std::log(sum);
  out->resize(size_t(n));
  for (int i = 0; i < n; ++i) (*out)[size_t(i)] = double(logits[i]) - log_norm;
}

void check_options(const Model& model, const EvalOptions& o) {
  const int seq_len = model.config().seq_len;
  if (o.sequences < 1) kvbits::fail(StatusCode::invalid_argument, "eval: sequences must be >= 1");
  if (o.tokens < 2 || o.tokens > seq_len)
    kvbits::fail(StatusCode::invalid_argument, "eval: tokens must be in [2, " + std::to_string(seq_len) + "], got " +
                                                   std::to_string(o.tokens));
  if (o.gen_tokens < 0) kvbits::fail(StatusCode::invalid_argument, "eval: gen_tokens must be >= 0");
}

std::vector<int> greedy_continuation(const Model& model, KvStore& kv, const EvalOptions& o) {
  if (o.prompt.empty()) return {};
  Sampler greedy(0.0f, 1);
  return generate(model, kv, o.prompt, o.gen_tokens, greedy);
}

}  // namespace

Reference run_reference(const Model& model, const EvalOptions& o) {
  check_options(model, o);
  const int vocab = model.config().vocab_size;
  Reference ref;
  Runner runner(model);
  Sampler sampler(o.temperature, o.seed);
  std::vector<double> lp;
  double nll = 0;
  for (int s = 0; s < o.sequences; ++s) {
    FloatKvStore kv(model.config());
    std::vector<int> seq = {Tokenizer::kBos};
    std::vector<float> log_probs;
    log_probs.reserve(size_t(o.tokens - 1) * size_t(vocab));
    for (int pos = 0; pos + 1 < o.tokens; ++pos) {
      const float* logits = runner.forward(seq[size_t(pos)], pos, kv);
      seq.push_back(sampler.sample(logits, vocab));
      log_softmax(logits, vocab, &lp);
      nll -= lp[size_t(seq.back())];
      log_probs.insert(log_probs.end(), lp.begin(), lp.end());
    }
    ref.sequences.push_back(std::move(seq));
    ref.log_probs.push_back(std::move(log_probs));
  }
  ref.perplexity = std::exp(nll / (double(o.sequences) * double(o.tokens - 1)));
  FloatKvStore kv(model.config());
  ref.greedy = greedy_continuation(model, kv, o);
  return ref;
}

CacheScore score_cache(const Model& model, const Reference& ref, const EvalOptions& o, const KvStoreFactory& make) {
  return score_cache(model, ref, o, PromptKvStoreFactory([&](int) { return make(); }));
}

CacheScore score_cache(const Model& model, const Reference& ref, const EvalOptions& o,
                       const PromptKvStoreFactory& make) {
  check_options(model, o);
  const int vocab = model.config().vocab_size;
  CacheScore score;
  Runner runner(model);
  std::vector<double> lq;
  double nll = 0, kl = 0;
  size_t agree = 0;
  for (size_t s = 0; s < ref.sequences.size(); ++s) {
    const std::vector<int>& seq = ref.sequences[s];
    std::unique_ptr<KvStore> kv = make(0);
    for (size_t pos = 0; pos + 1 < seq.size(); ++pos) {
      const float* logits = runner.forward(seq[pos], int(pos), *kv);
      log_softmax(logits, vocab, &lq);
      const float* lp = ref.log_probs[s].data() + pos * size_t(vocab);
      nll -= lq[size_t(seq[pos + 1])];
      double kl_pos = 0;
      for (int i = 0; i < vocab; ++i) kl_pos += std::exp(double(lp[i])) * (double(lp[i]) - lq[size_t(i)]);
      kl += kl_pos;
      agree += argmax(lp, vocab) == argmax(logits, vocab) ? 1 : 0;
      ++score.predictions;
    }
  }
  const double n = double(std::max<size_t>(score.predictions, 1));
  score.perplexity = std::exp(nll / n);
  score.kl = kl / n;
  score.top1 = double(agree) / n;

  std::unique_ptr<KvStore> kv = make(int(o.prompt.size()));
  score.greedy = greedy_continuation(model, *kv, o);
  const std::vector<int>& a = ref.greedy;
  const std::vector<int>& b = score.greedy;
  const size_t common = std::min(a.size(), b.size()), longer = std::max(a.size(), b.size());
  size_t same = 0;
  while (size_t(score.greedy_leading) < common && a[size_t(score.greedy_leading)] == b[size_t(score.greedy_leading)])
    ++score.greedy_leading;
  for (size_t i = 0; i < common; ++i) same += a[i] == b[i] ? 1 : 0;
  score.greedy_match = longer == 0 ? 1.0 : double(same) / double(longer);
  return score;
}

}  // namespace llama2c
