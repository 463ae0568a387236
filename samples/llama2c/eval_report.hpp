// llama2c — the `eval` command's output: one Markdown table row per cache, and the same
// numbers as JSON.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cache_eval.hpp"
#include "kivi_kv_store.hpp"

namespace llama2c {

struct EvalRow {
  std::string setting;          // e.g. "Block-GTQ K3V3"
  std::string plan_path;        // empty for the fp32 reference and KIVI
  std::optional<KiviStoreOptions> kivi;  // KIVI rows: bits, G, R
  double bytes_per_token_head;  // K + V bytes per token per KV head (codes and scales)
  CacheScore score;
  double seconds = 0;           // wall time of its runs
};

// The reference as a row: an fp32 cache, scored against itself.
EvalRow reference_row(const Reference& reference, int head_dim);

// Markdown: setting, bytes/token/KV head and compression vs fp16 (4 * head_dim bytes), greedy
// leading tokens equal to fp32 and the overall match, perplexity and its change, KL, top-1.
std::string eval_markdown(const Reference& reference, const EvalOptions& options, int head_dim,
                          const std::vector<EvalRow>& rows);

// The same, machine-readable, with the options, KIVI's bits / G / R and the greedy token ids.
std::string eval_json(const Reference& reference, const EvalOptions& options, int head_dim,
                      const std::vector<EvalRow>& rows);

}  // namespace llama2c
