#include "eval_report.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace llama2c {
namespace {

template <typename... Args>
std::string format(const char* fmt, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

}  // namespace

EvalRow reference_row(const Reference& ref, int head_dim) {
  EvalRow row;
  row.setting = "fp32 (reference)";
  row.bytes_per_token_head = 8.0 * head_dim;
  row.score.perplexity = ref.perplexity;
  row.score.top1 = 1.0;
  for (const std::vector<float>& lp : ref.log_probs) row.score.predictions += lp.size();
  row.score.greedy = ref.greedy;
  row.score.greedy_leading = int(ref.greedy.size());
  row.score.greedy_match = 1.0;
  return row;
}

std::string eval_markdown(const Reference& ref, const EvalOptions& o, int head_dim, const std::vector<EvalRow>& rows) {
  const double fp16_bytes = 4.0 * head_dim;
  std::string md = format(
      "%d held-out sequences x %d tokens (seed %llu, T = %g); greedy: %zu tokens after a %zu-token prompt\n\n",
      o.sequences, o.tokens, static_cast<unsigned long long>(o.seed), double(o.temperature), ref.greedy.size(),
      o.prompt.size());
  md += "| setting | B/token/KV head | vs fp16 | greedy = fp32: leading | greedy: all | perplexity | KL (nats) | top-1 |\n";
  md += "|---|---|---|---|---|---|---|---|\n";
  for (const EvalRow& r : rows) {
    const CacheScore& s = r.score;
    const double change = 100.0 * (s.perplexity / ref.perplexity - 1.0);
    md += format("| %s | %.1f | %.2fx | %d / %zu | %.0f %% | %.3f (%+.1f %%) | %.4f | %.1f %% |\n", r.setting.c_str(),
                 r.bytes_per_token_head, fp16_bytes / r.bytes_per_token_head, s.greedy_leading, ref.greedy.size(),
                 100.0 * s.greedy_match, s.perplexity, change, s.kl, 100.0 * s.top1);
  }
  return md;
}

std::string eval_json(const Reference& ref, const EvalOptions& o, int head_dim, const std::vector<EvalRow>& rows) {
  nlohmann::ordered_json j;
  j["options"] = {{"sequences", o.sequences}, {"tokens", o.tokens},       {"seed", o.seed},
                  {"temperature", o.temperature}, {"prompt_tokens", o.prompt}, {"gen_tokens", o.gen_tokens}};
  j["fp16_bytes_per_token_per_kv_head"] = 4 * head_dim;
  j["reference"] = {{"perplexity", ref.perplexity}, {"greedy", ref.greedy}};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const EvalRow& r : rows) {
    const CacheScore& s = r.score;
    nlohmann::ordered_json kivi = nullptr;
    if (r.kivi) kivi = {{"bits", r.kivi->bits}, {"group", r.kivi->group}, {"residual", r.kivi->residual}};
    list.push_back({{"setting", r.setting},
                    {"plan", r.plan_path},
                    {"kivi", kivi},
                    {"bytes_per_token_per_kv_head", r.bytes_per_token_head},
                    {"compression_vs_fp16", 4.0 * head_dim / r.bytes_per_token_head},
                    {"perplexity", s.perplexity},
                    {"perplexity_change", s.perplexity / ref.perplexity - 1.0},
                    {"kl", s.kl},
                    {"top1", s.top1},
                    {"predictions", s.predictions},
                    {"greedy_leading", s.greedy_leading},
                    {"greedy_match", s.greedy_match},
                    {"greedy", s.greedy},
                    {"seconds", r.seconds}});
  }
  j["caches"] = std::move(list);
  return j.dump(2) + "\n";
}

}  // namespace llama2c
