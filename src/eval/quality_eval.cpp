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

// The rows of one (layer, KV head), pre- and post-RoPE, for the test set.
struct TestHead {
  HeadRows pre, post;
};

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
  std::vector<TestHead> heads;
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h)
      heads.push_back({head_rows(test, l, h, false), o.attention ? head_rows(test, l, h, true) : HeadRows{}});

  std::vector<float> k_hat(T * s.head_dim);
  for (int bits : o.bits) {
    for (KeyMethod m : o.methods) {
      const KeyQuantizer kq(m, bits, energies, o);
      SettingResult r;
      r.method = m;
      r.bits = bits;
      r.plan = kq.shared_plan();
      r.key_bytes_per_token = kq.key_bytes_per_token(test.seq_tokens);
      r.kv_bytes_per_token = kq.kv_bytes_per_token(test.seq_tokens);
      for (uint32_t l = 0; l < s.n_layers; ++l) {
        double mae = 0.0;
        AttentionDivergence div;
        for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
          const TestHead& th = heads[size_t(l) * s.n_kv_heads + h];
          // §9.1 quantizes the pre-RoPE keys (the metric applies its own offsets).
          kq.roundtrip(l, h, th.pre.k.data(), T, test.seq_tokens, k_hat.data());
          mae += rope_logit_mae(s, th.pre.q.data(), th.pre.k.data(), k_hat.data(), T, offsets);
          if (!o.attention) continue;
          // §9.2: the keys a cache stores, post-RoPE at their real positions.
          kq.roundtrip(l, h, th.post.k.data(), T, test.seq_tokens, k_hat.data());
          const AttentionDivergence d = attention_divergence(s, th.post.q.data(), th.post.k.data(), k_hat.data(), T,
                                                             test.seq_tokens, o.kl_window);
          div.kl_sum += d.kl_sum;
          div.top10_sum += d.top10_sum;
          div.queries += d.queries;
        }
        r.layer_mae.push_back(mae / s.n_kv_heads);
        if (o.attention) {
          r.layer_kl.push_back(div.kl());
          r.layer_top10.push_back(div.top10());
        }
      }
      rep.settings.push_back(std::move(r));
    }
  }
  return rep;
}

}  // namespace kvbits::eval
