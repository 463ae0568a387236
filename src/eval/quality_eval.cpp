// The evaluation driver: every (bits, method) setting over every (layer, KV head).
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

double mean(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

void check_options(const EvalOptions& o) {
  auto bad = [](const std::string& m) { fail(StatusCode::invalid_argument, "eval options: " + m); };
  if (o.bits.empty()) bad("no bit widths");
  for (int b : o.bits)
    if (b < 1 || b > 8) bad("bits must be in [1, 8], got " + std::to_string(b));
  if (o.methods.empty()) bad("no methods");
  if (o.n_offsets == 0) bad("n_offsets must be >= 1");
  if (o.kivi.group == 0) bad("KIVI group must be >= 1");
}

}  // namespace

double SettingResult::mae() const { return mean(layer_mae); }
double SettingResult::kl() const { return mean(layer_kl); }
double SettingResult::top10() const { return mean(layer_top10); }

const SettingResult* EvalReport::find(KeyMethod m, int bits) const {
  for (const SettingResult& s : settings)
    if (s.method == m && s.bits == bits) return &s;
  return nullptr;
}

double relative_change(double value, double baseline) { return (value - baseline) / baseline; }

uint32_t layers_won(const std::vector<double>& value, const std::vector<double>& baseline) {
  if (value.size() != baseline.size())
    fail(StatusCode::invalid_argument, "layers_won: " + std::to_string(value.size()) + " vs " +
                                           std::to_string(baseline.size()) + " layers");
  uint32_t n = 0;
  for (size_t i = 0; i < value.size(); ++i) n += value[i] < baseline[i];
  return n;
}

EvalReport run_quality_eval(const Activations& calib, const Activations& test, const EvalOptions& o) {
  check_options(o);
  calib.validate();
  test.validate();
  if (calib.shape != test.shape)
    fail(StatusCode::shape_mismatch, "eval: calibration set is " + calib.shape.describe() + ", test set is " +
                                         test.shape.describe());
  const ModelShape& s = test.shape;
  const size_t T = size_t(test.tokens);
  EvalReport rep;
  rep.shape = s;
  rep.calib_source = calib.source;
  rep.test_source = test.source;
  rep.calib_tokens = calib.tokens;
  rep.test_tokens = test.tokens;
  rep.seq_tokens = test.seq_tokens;
  rep.options = o;

  const EnergyAccumulator energies = calibration_energies(calib);
  const std::vector<double> offsets = logit_offsets(o.max_offset, o.n_offsets);
  std::vector<KeyQuantizer> quantizers;
  for (int bits : o.bits)
    for (KeyMethod m : o.methods) {
      quantizers.emplace_back(m, bits, energies, o);
      SettingResult r;
      r.method = m;
      r.bits = bits;
      r.plan = quantizers.back().shared_plan();
      r.key_bytes_per_token = quantizers.back().key_bytes_per_token(test.seq_tokens);
      r.kv_bytes_per_token = quantizers.back().kv_bytes_per_token(test.seq_tokens);
      r.layer_mae.assign(s.n_layers, 0.0);
      rep.settings.push_back(std::move(r));
    }

  // (layer, KV head) outermost so that the reference attention is computed once for all settings.
  const size_t n_set = quantizers.size(), D = s.head_dim;
  std::vector<std::vector<float>> k_hat(n_set, std::vector<float>(T * D));
  std::vector<const float*> k_hat_ptr;
  for (const auto& v : k_hat) k_hat_ptr.push_back(v.data());
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    std::vector<AttentionDivergence> div(n_set);
    for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
      // §9.1 quantizes the pre-RoPE keys (the metric applies its own offsets).
      const HeadRows pre = head_rows(test, l, h, false);
      for (size_t i = 0; i < n_set; ++i) {
        quantizers[i].roundtrip(l, h, pre.k.data(), T, test.seq_tokens, k_hat[i].data());
        rep.settings[i].layer_mae[l] +=
            rope_logit_mae(s, pre.q.data(), pre.k.data(), k_hat[i].data(), T, offsets) / s.n_kv_heads;
      }
      if (!o.attention) continue;
      // §9.2: the keys a cache stores, post-RoPE at their real positions.
      const HeadRows post = head_rows(test, l, h, true);
      for (size_t i = 0; i < n_set; ++i)
        quantizers[i].roundtrip(l, h, post.k.data(), T, test.seq_tokens, k_hat[i].data());
      const auto d = attention_divergence(s, post.q.data(), post.k.data(), k_hat_ptr, T, test.seq_tokens, o.kl_window);
      for (size_t i = 0; i < n_set; ++i) {
        div[i].kl_sum += d[i].kl_sum;
        div[i].top10_sum += d[i].top10_sum;
        div[i].queries += d[i].queries;
      }
    }
    if (o.attention)
      for (size_t i = 0; i < n_set; ++i) {
        rep.settings[i].layer_kl.push_back(div[i].kl());
        rep.settings[i].layer_top10.push_back(div[i].top10());
      }
  }
  return rep;
}

}  // namespace kvbits::eval
