#include "generate.hpp"

#include <string>

#include "kvbits/status.hpp"
#include "runner.hpp"
#include "tokenizer.hpp"

namespace llama2c {

std::vector<int> generate(const Model& model, KvStore& kv, const std::vector<int>& prompt, int steps,
                          Sampler& sampler) {
  const int seq_len = model.config().seq_len;
  if (prompt.empty()) kvbits::fail(kvbits::StatusCode::invalid_argument, "generate: the prompt has no tokens");
  if (steps < 0 || prompt.size() + size_t(steps) > size_t(seq_len))
    kvbits::fail(kvbits::StatusCode::invalid_argument,
                 "generate: prompt (" + std::to_string(prompt.size()) + " tokens) + steps (" + std::to_string(steps) +
                     ") exceeds the model's seq_len " + std::to_string(seq_len));
  Runner runner(model);
  std::vector<int> out;
  int token = prompt[0];
  for (int pos = 0;; ++pos) {
    const float* logits = runner.forward(token, pos, kv);
    if (size_t(pos) + 1 < prompt.size()) {
      token = prompt[size_t(pos) + 1];
      continue;
    }
    if (out.size() == size_t(steps)) break;
    const int next = sampler.sample(logits, model.config().vocab_size);
    if (next == Tokenizer::kBos || next == Tokenizer::kEos) break;
    out.push_back(next);
    token = next;
  }
  return out;
}

}  // namespace llama2c
