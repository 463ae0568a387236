#include "cli/svg_chart.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace kvbits::cli {
namespace {

constexpr int kLeft = 70, kTop = 50, kPlotW = 560, kPlotH = 300, kLegendW = 200;

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

// Maps a value to a y pixel; linear from 0 or logarithmic between decades.
struct YAxis {
  double lo = 0, hi = 1, step = 0.2;
  bool log = false;
  double pixel(double v) const {
    const double f = log ? (std::log10(v) - lo) / (hi - lo) : (v - lo) / (hi - lo);
    return kTop + kPlotH * (1.0 - f);
  }
};

// A 1, 2 or 5 times a power of ten giving about five grid lines up to `top`.
double nice_step(double top) {
  const double raw = top / 5.0, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * p >= raw) return m * p;
  return 10.0 * p;
}

YAxis make_axis(const Chart& c) {
  double lo = 1e300, hi = -1e300;
  for (const ChartSeries& s : c.series)
    for (double v : s.values) {
      if (!std::isfinite(v) || (c.log_y && v <= 0)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (lo > hi) lo = 0, hi = 1;  // nothing to draw
  YAxis a;
  a.log = c.log_y;
  if (a.log) {
    a.lo = std::floor(std::log10(lo));
    a.hi = std::max(a.lo + 1, std::ceil(std::log10(hi)));
  } else {
    a.lo = 0;
    a.step = nice_step(hi > 0 ? hi : 1);
    a.hi = a.step * std::ceil((hi > 0 ? hi : 1) / a.step);
  }
  return a;
}

void frame(std::ostringstream& s, const Chart& c, const YAxis& y) {
  const int width = kLeft + kPlotW + kLegendW, height = kTop + kPlotH + 60;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << kLeft << "\" y=\"22\" font-size=\"14\">" << escape(c.title) << "</text>\n";
  // y grid and labels
  std::vector<double> ticks;
  if (y.log) {
    for (double e = y.lo; e <= y.hi + 1e-9; e += 1) ticks.push_back(std::pow(10.0, e));
  } else {
    for (double t = y.lo; t <= y.hi + y.step / 2; t += y.step) ticks.push_back(t);
  }
  for (double t : ticks) {
    const double py = y.pixel(t);
    s << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + kPlotW << "\" y1=\"" << py << "\" y2=\"" << py
      << "\" stroke=\"#e0e0e0\"/>\n<text x=\"" << kLeft - 6 << "\" y=\"" << py + 4 << "\" text-anchor=\"end\">"
      << num(t) << "</text>\n";
  }
  s << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft << "\" y1=\"" << kTop << "\" y2=\"" << kTop + kPlotH
    << "\" stroke=\"black\"/>\n<line x1=\"" << kLeft << "\" x2=\"" << kLeft + kPlotW << "\" y1=\"" << kTop + kPlotH
    << "\" y2=\"" << kTop + kPlotH << "\" stroke=\"black\"/>\n"
    << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"" << kTop + kPlotH + 40 << "\" text-anchor=\"middle\">"
    << escape(c.x_label) << "</text>\n"
    << "<text transform=\"translate(16," << kTop + kPlotH / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << escape(c.y_label) << (y.log ? " (log scale)" : "") << "</text>\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    const int ly = kTop + int(i) * 18, lx = kLeft + kPlotW + 16;
    s << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"12\" height=\"12\" fill=\"" << c.series[i].colour
      << "\"/><text x=\"" << lx + 18 << "\" y=\"" << ly + 10 << "\">" << escape(c.series[i].name) << "</text>\n";
  }
}

double slot_centre(size_t i, size_t n) { return kLeft + kPlotW * (double(i) + 0.5) / double(std::max<size_t>(n, 1)); }

void x_ticks(std::ostringstream& s, const Chart& c) {
  for (size_t i = 0; i < c.x_ticks.size(); ++i)
    s << "<text x=\"" << slot_centre(i, c.x_ticks.size()) << "\" y=\"" << kTop + kPlotH + 16
      << "\" text-anchor=\"middle\">" << escape(c.x_ticks[i]) << "</text>\n";
}

}  // namespace

std::string bar_chart_svg(const Chart& c) {
  const YAxis y = make_axis(c);
  std::ostringstream s;
  frame(s, c, y);
  x_ticks(s, c);
  const size_t n = c.x_ticks.size(), m = std::max<size_t>(c.series.size(), 1);
  const double slot = double(kPlotW) / double(std::max<size_t>(n, 1)), bar = slot * 0.8 / double(m);
  for (size_t k = 0; k < c.series.size(); ++k)
    for (size_t i = 0; i < n && i < c.series[k].values.size(); ++i) {
      const double v = c.series[k].values[i];
      if (!std::isfinite(v) || (y.log && v <= 0)) continue;
      const double top = y.pixel(v), x = kLeft + slot * double(i) + slot * 0.1 + bar * double(k);
      const double base = y.log ? kTop + kPlotH : y.pixel(0);
      s << "<rect x=\"" << x << "\" y=\"" << top << "\" width=\"" << bar << "\" height=\"" << base - top
        << "\" fill=\"" << c.series[k].colour << "\"><title>" << escape(c.series[k].name) << ", "
        << escape(c.x_ticks[i]) << ": " << num(v) << "</title></rect>\n";
    }
  s << "</svg>\n";
  return s.str();
}

std::string line_chart_svg(const Chart& c) {
  const YAxis y = make_axis(c);
  std::ostringstream s;
  frame(s, c, y);
  x_ticks(s, c);
  const size_t n = c.x_ticks.size();
  for (const ChartSeries& ser : c.series) {
    std::ostringstream pts;
    for (size_t i = 0; i < n && i < ser.values.size(); ++i) {
      const double v = ser.values[i];
      if (!std::isfinite(v) || (y.log && v <= 0)) continue;
      pts << slot_centre(i, n) << "," << y.pixel(v) << " ";
      s << "<circle cx=\"" << slot_centre(i, n) << "\" cy=\"" << y.pixel(v) << "\" r=\"4\" fill=\"" << ser.colour
        << "\"><title>" << escape(ser.name) << ", " << escape(c.x_ticks[i]) << ": " << num(v) << "</title></circle>\n";
    }
    s << "<polyline points=\"" << pts.str() << "\" fill=\"none\" stroke=\"" << ser.colour << "\" stroke-width=\"2\"/>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace kvbits::cli
