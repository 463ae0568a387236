// llama2c — text generation: run a prompt, then sample token after token.
#pragma once

#include <vector>

#include "kv_store.hpp"
#include "model.hpp"
#include "sampler.hpp"

namespace llama2c {

// Feeds prompt[0..] at positions 0, 1, ... into a fresh `kv`, then draws up to `steps` new
// tokens, stopping early when the model emits BOS or EOS (a story boundary for llama2.c
// models; the boundary token is not returned). Returns the new tokens only.
// Error(invalid_argument) for an empty prompt, negative steps, or prompt + steps > seq_len.
std::vector<int> generate(const Model& model, KvStore& kv, const std::vector<int>& prompt, int steps,
                          Sampler& sampler);

}  // namespace llama2c
