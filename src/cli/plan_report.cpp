#include "cli/plan_report.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <sstream>

#include "kvbits/codebook.hpp"

namespace kvbits::cli {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Mean code bits per key dim actually allocated (rotary and static blocks alike).
double mean_k_bits(const Plan& plan) {
  double sum = 0;
  size_t n = 0;
  for (const auto& layer : plan.layers)
    for (const auto& h : layer.heads)
      for (uint8_t b : h.block_bits) sum += b, ++n;
  return n ? sum / double(n) : 16.0;
}

}  // namespace

void print_plan_summary(const Plan& plan, std::ostream& out) {
  const double fp16 = 4.0 * plan.shape.head_dim;
  const double bpt = plan.mean_bytes_per_token();
  size_t fp16_layers = 0;
  for (const auto& l : plan.layers) fp16_layers += l.keep_fp16;
  out << "model:        " << plan.shape.describe() << "\n"
      << "method:       " << method_name(plan.method) << ", score " << score_kind_name(plan.score)
      << ", codebooks " << codebook_recipe_name(plan.recipe) << "\n"
      << "key bits:     " << fmt("%.3g", plan.k_avg_bits) << " per dim requested (" << int(plan.k_min_bits) << ".."
      << int(plan.k_max_bits) << "), " << fmt("%.3f", mean_k_bits(plan)) << " allocated\n";
  if (!plan.layers.empty() && !plan.layers[0].heads.empty())
    out << "value bits:   " << int(plan.layers[0].heads[0].v_bits) << "\n";
  out << "fp16 regions: " << plan.sink_tokens << " sink, " << plan.window_tokens << " recent window; "
      << fp16_layers << " layer(s) kept at 16 bits\n"
      << "bytes/token:  " << fmt("%.2f", bpt) << " per KV head (fp16: " << fmt("%.0f", fp16)
      << "), compression " << fmt("%.2f", fp16 / bpt) << "x\n"
      << "calibration:  " << plan.producer.calib_tokens << " tokens, corpus \"" << plan.producer.corpus << "\", "
      << plan.producer.date << ", " << plan.producer.tool << "\n"
      << "fingerprint:  " << plan.fingerprint.hex() << "\n";
}

void print_plan_table(const Plan& plan, std::ostream& out) {
  const double fp16 = 4.0 * plan.shape.head_dim;
  out << "layer head  bits per block (block 0 = highest frequency)      histogram 1..8 bits   B/token  ratio\n";
  for (uint32_t l = 0; l < plan.shape.n_layers; ++l) {
    if (plan.layers[l].keep_fp16) {
      out << fmt("%5.0f", l) << "    *  kept at 16 bits" << std::string(40, ' ') << fmt("%7.1f", fp16) << "  1.00x\n";
      continue;
    }
    for (uint32_t h = 0; h < plan.shape.n_kv_heads; ++h) {
      const HeadPlan& hp = plan.head(l, h);
      std::string widths;
      for (size_t b = 0; b < hp.block_bits.size() && b < 48; ++b) widths += char('0' + hp.block_bits[b]);
      if (hp.block_bits.size() > 48) widths += "...";
      std::array<int, 9> hist{};
      for (uint8_t b : hp.block_bits) ++hist[b];
      std::string hs;
      for (int b = 1; b <= 8; ++b) hs += (b > 1 ? " " : "") + std::to_string(hist[size_t(b)]);
      const double bpt = double(plan.bytes_per_token(l, h));
      widths.resize(std::max<size_t>(widths.size(), 51), ' ');
      out << fmt("%5.0f", l) << fmt("%5.0f", h) << "  " << widths << "  " << hs << std::string(hs.size() < 20 ? 20 - hs.size() : 1, ' ')
          << fmt("%7.1f", bpt) << "  " << fmt("%.2f", fp16 / bpt) << "x\n";
    }
  }
}

std::string allocation_svg(const Plan& plan) {
  // Colour ramp from light (1 bit) to dark (8 bits), readable in print and for colour-blind readers.
  static const char* kColour[9] = {"#ffffff", "#fff5d6", "#fdd49e", "#fdbb84", "#fc8d59",
                                   "#ef6548", "#d7301f", "#b30000", "#7f0000"};
  const uint32_t nb = plan.shape.n_blocks(), rows = plan.shape.n_layers * plan.shape.n_kv_heads;
  const int cell_w = std::max(4, std::min(40, int(720 / std::max(1u, nb))));
  const int cell_h = std::max(2, std::min(18, int(640 / std::max(1u, rows))));
  const int left = 90, top = 50, width = std::max(left + int(nb) * cell_w + 140, 640), height = top + int(rows) * cell_h + 50;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">Bit allocation per RoPE block — "
    << method_name(plan.method) << ", " << fmt("%.3g", plan.k_avg_bits) << " bits/dim, score "
    << score_kind_name(plan.score) << "</text>\n"
    << "<text x=\"" << left << "\" y=\"38\">columns: RoPE block 0 (highest frequency) → " << nb - 1 << "; rows: layer, then KV head</text>\n";
  for (uint32_t l = 0; l < plan.shape.n_layers; ++l) {
    for (uint32_t h = 0; h < plan.shape.n_kv_heads; ++h) {
      const int y = top + int(l * plan.shape.n_kv_heads + h) * cell_h;
      if (h == 0 && cell_h * int(plan.shape.n_kv_heads) >= 10)
        s << "<text x=\"4\" y=\"" << y + 10 << "\">layer " << l << "</text>\n";
      for (uint32_t b = 0; b < nb; ++b) {
        const int bits = plan.layers[l].keep_fp16 ? 8 : plan.head(l, h).block_bits[b];
        s << "<rect x=\"" << left + int(b) * cell_w << "\" y=\"" << y << "\" width=\"" << cell_w << "\" height=\""
          << cell_h << "\" fill=\"" << kColour[bits] << "\"><title>layer " << l << " head " << h << " block " << b
          << ": " << bits << " bits</title></rect>\n";
      }
    }
  }
  const int lx = left + int(nb) * cell_w + 20;
  for (int b = 1; b <= 8; ++b)
    s << "<rect x=\"" << lx << "\" y=\"" << top + (b - 1) * 18 << "\" width=\"14\" height=\"14\" fill=\""
      << kColour[b] << "\" stroke=\"#888\"/><text x=\"" << lx + 20 << "\" y=\"" << top + (b - 1) * 18 + 11 << "\">"
      << b << " bit" << (b > 1 ? "s" : "") << "</text>\n";
  s << "</svg>\n";
  return s.str();
}

}  // namespace kvbits::cli
