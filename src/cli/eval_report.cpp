#include "cli/eval_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/plan_report.hpp"
#include "cli/svg_chart.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cli {
namespace {

using eval::EvalReport;
using eval::KeyMethod;
using eval::SettingResult;

// Four significant digits in fixed notation (14.15, 7.490, 0.01230).
std::string num(double v) {
  if (!std::isfinite(v)) return "—";
  const int mag = v == 0 ? 0 : int(std::floor(std::log10(std::fabs(v))));
  const int decimals = std::max(0, std::min(8, 3 - mag));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string percent(double rel) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.1f %%", 100.0 * rel);
  return buf;
}

const char* colour(KeyMethod m) {  // Okabe-Ito, readable for colour-blind readers
  switch (m) {
    case KeyMethod::uniform: return "#999999";
    case KeyMethod::bgt_energy: return "#0072B2";
    case KeyMethod::bgt_product: return "#D55E00";
    case KeyMethod::kivi: return "#009E73";
  }
  return "#000000";
}

std::string mae_plot_name(int bits) { return "mae_per_layer_" + std::to_string(bits) + "bit.svg"; }
std::string allocation_plot_name(KeyMethod m, int bits) {
  return std::string("allocation_") + eval::key_method_name(m) + "_" + std::to_string(bits) + "bit.svg";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f.flush()) fail(StatusCode::io_error, "cannot write " + path);
}

void header(std::ostringstream& s, const EvalReport& r, const EvalReportInfo& info) {
  const eval::EvalOptions& o = r.options;
  s << "# kvbits quality report (K only)\n\n"
    << "- date: " << info.date << "\n";
  if (!info.command.empty()) s << "- command: `" << info.command << "`\n";
  s << "- model: " << r.shape.describe() << "\n"
    << "- calibration: " << r.calib_tokens << " tokens — " << r.calib_source << "\n"
    << "- test: " << r.test_tokens << " tokens in sequences of " << r.seq_tokens << " — " << r.test_source << "\n"
    << "- TQ-MSE / Block-GTQ: codebooks " << codebook_recipe_name(o.recipe) << ", rotation seed " << o.rotation_seed
    << ", exact nearest centroid, fp16 norm-corrected group scales, min 1 / max 8 bits per block\n"
    << "- KIVI: per-channel key groups of " << o.kivi.group << " tokens, fp16 scale and minimum, fp16 residual of "
    << o.kivi.residual << " tokens\n"
    << "- MAE (spec §9.1): pre-RoPE keys quantized; same-token q/k rows; " << o.n_offsets
    << " offsets in [−" << num(o.max_offset) << ", " << num(o.max_offset)
    << "]; raw logits; mean over rows → offsets → KV heads\n";
  if (o.attention)
    s << "- KL / top-10 (spec §9.2, proposed): post-RoPE keys quantized at their real positions; queries are the last "
      << o.kl_window << " positions of every sequence, each attending causally to its own sequence; softmax of "
      << "q·k/√D; mean over positions, query heads, KV heads, then layers\n";
  s << "\n";
}

void mae_summary(std::ostringstream& s, const EvalReport& r, bool plots) {
  const auto& methods = r.options.methods;
  s << "## RoPE-logit MAE, layer mean (lower is better)\n\n| bits/dim |";
  for (KeyMethod m : methods) s << " " << eval::key_method_label(m) << " |";
  s << "\n|---|";
  for (size_t i = 0; i < methods.size(); ++i) s << "---|";
  s << "\n";
  for (int b : r.options.bits) {
    const SettingResult* uni = r.find(KeyMethod::uniform, b);
    s << "| " << b << " |";
    for (KeyMethod m : methods) {
      const SettingResult* x = r.find(m, b);
      s << " " << num(x->mae());
      if (uni && m != KeyMethod::uniform)
        s << " (" << percent(eval::relative_change(x->mae(), uni->mae())) << ", "
          << eval::layers_won(x->layer_mae, uni->layer_mae) << "/" << r.shape.n_layers << " layers won)";
      s << " |";
    }
    s << "\n";
  }
  s << "\nChange and layers won are against uniform TQ-MSE at the same bits.\n";
  const bool both = r.find(KeyMethod::bgt_energy, r.options.bits[0]) && r.find(KeyMethod::bgt_product, r.options.bits[0]);
  if (both) {
    s << "Product score vs paper score:";
    const char* sep = " ";
    for (int b : r.options.bits) {
      const SettingResult& e = *r.find(KeyMethod::bgt_energy, b);
      const SettingResult& p = *r.find(KeyMethod::bgt_product, b);
      s << sep << b << " bits " << percent(eval::relative_change(p.mae(), e.mae())) << " ("
        << eval::layers_won(p.layer_mae, e.layer_mae) << "/" << r.shape.n_layers << " layers lower)";
      sep = "; ";
    }
    s << ".\n";
  }
  s << "\n";
  for (int b : r.options.bits) {
    const SettingResult* uni = r.find(KeyMethod::uniform, b);
    s << "### " << b << " bits per dim, per layer\n\n| layer |";
    for (KeyMethod m : methods) s << " " << eval::key_method_name(m) << " |";
    s << "\n|---|";
    for (size_t i = 0; i < methods.size(); ++i) s << "---|";
    s << "\n";
    for (uint32_t l = 0; l < r.shape.n_layers; ++l) {
      s << "| " << l << " |";
      for (KeyMethod m : methods) {
        const double v = r.find(m, b)->layer_mae[l];
        s << " " << num(v);
        if (uni && m != KeyMethod::uniform) s << " (" << percent(eval::relative_change(v, uni->layer_mae[l])) << ")";
        s << " |";
      }
      s << "\n";
    }
    if (plots) s << "\n![MAE per layer at " << b << " bits](" << mae_plot_name(b) << ")\n";
    s << "\n";
  }
}

void attention_and_bytes(std::ostringstream& s, const EvalReport& r, bool plots) {
  const double fp16_k = 2.0 * r.shape.head_dim;
  s << "## Attention and memory\n\n"
    << "| bits/dim | method | softmax KL | top-10 overlap | K bytes/token | K vs fp16 | K+V bytes/token | K+V vs fp16 |\n"
    << "|---|---|---|---|---|---|---|---|\n";
  for (int b : r.options.bits)
    for (KeyMethod m : r.options.methods) {
      const SettingResult& x = *r.find(m, b);
      s << "| " << b << " | " << eval::key_method_label(m) << " | "
        << (r.options.attention ? num(x.kl()) : "—") << " | " << (r.options.attention ? num(x.top10()) : "—")
        << " | " << num(x.key_bytes_per_token) << " | " << num(fp16_k / x.key_bytes_per_token) << "× | "
        << num(x.kv_bytes_per_token) << " | " << num(2 * fp16_k / x.kv_bytes_per_token) << "× |\n";
    }
  s << "\nBytes are per token and (layer, KV head): codes plus fp16 scales (TQ-MSE / Block-GTQ: one per width "
       "group, from the plan; KIVI: scale and minimum per channel per group of tokens). K+V adds values at the "
       "same bits (uniform TQ-MSE for the TQ methods, KIVI's per-token groups for KIVI).\n";
  if (plots && r.options.attention)
    s << "\n![softmax KL vs bits](kl_vs_bits.svg)\n\n![top-10 overlap vs bits](top10_vs_bits.svg)\n";
  s << "\n";
}

void allocations(std::ostringstream& s, const EvalReport& r) {
  bool any = false;
  for (int b : r.options.bits)
    for (KeyMethod m : {KeyMethod::bgt_energy, KeyMethod::bgt_product})
      if (r.find(m, b)) {
        if (!any) s << "## Allocation fingerprints\n\n";
        any = true;
        s << "![" << eval::key_method_label(m) << ", " << b << " bits](" << allocation_plot_name(m, b) << ")\n\n";
      }
}

}  // namespace

std::string eval_markdown(const EvalReport& r, const EvalReportInfo& info, bool with_plots) {
  std::ostringstream s;
  header(s, r, info);
  mae_summary(s, r, with_plots);
  attention_and_bytes(s, r, with_plots);
  if (with_plots) allocations(s, r);
  return s.str();
}

std::vector<std::string> write_eval_plots(const EvalReport& r, const std::string& dir) {
  std::vector<std::string> written;
  auto put = [&](const std::string& name, const std::string& svg) {
    write_file(dir + "/" + name, svg);
    written.push_back(name);
  };
  std::vector<std::string> layers, bits;
  for (uint32_t l = 0; l < r.shape.n_layers; ++l) layers.push_back(std::to_string(l));
  for (int b : r.options.bits) bits.push_back(std::to_string(b));
  for (int b : r.options.bits) {
    Chart c;
    c.title = "RoPE-logit MAE per layer, " + std::to_string(b) + " bits per dim (lower is better)";
    c.x_label = "layer";
    c.y_label = "MAE of raw logits";
    c.x_ticks = layers;
    for (KeyMethod m : r.options.methods) c.series.push_back({eval::key_method_label(m), colour(m), r.find(m, b)->layer_mae});
    put(mae_plot_name(b), bar_chart_svg(c));
  }
  if (r.options.attention) {
    Chart kl, top;
    kl.title = "Softmax KL vs key bits (lower is better)";
    top.title = "Top-10 attended-token overlap vs key bits (higher is better)";
    kl.x_label = top.x_label = "key bits per dim";
    kl.y_label = "KL(p || p̂)";
    top.y_label = "overlap";
    kl.x_ticks = top.x_ticks = bits;
    kl.log_y = true;
    for (KeyMethod m : r.options.methods) {
      ChartSeries a{eval::key_method_label(m), colour(m), {}}, t = a;
      for (int b : r.options.bits) {
        a.values.push_back(r.find(m, b)->kl());
        t.values.push_back(r.find(m, b)->top10());
      }
      kl.series.push_back(a);
      top.series.push_back(t);
    }
    put("kl_vs_bits.svg", line_chart_svg(kl));
    put("top10_vs_bits.svg", line_chart_svg(top));
  }
  for (int b : r.options.bits)
    for (KeyMethod m : {KeyMethod::bgt_energy, KeyMethod::bgt_product})
      if (const SettingResult* x = r.find(m, b)) put(allocation_plot_name(m, b), allocation_svg(*x->plan));
  return written;
}

}  // namespace kvbits::cli
