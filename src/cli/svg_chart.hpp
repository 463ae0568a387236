// kvbits CLI — two small SVG charts for reports: grouped bars and lines.
#pragma once

#include <string>
#include <vector>

namespace kvbits::cli {

struct ChartSeries {
  std::string name;
  std::string colour;          // "#rrggbb"
  std::vector<double> values;  // one per x position
};

struct Chart {
  std::string title;
  std::string x_label, y_label;
  std::vector<std::string> x_ticks;  // one label per x position
  std::vector<ChartSeries> series;
  bool log_y = false;  // values must then be > 0 (others are skipped)
};

// Bars grouped by x position, one bar per series; y starts at 0.
std::string bar_chart_svg(const Chart& chart);
// One polyline with markers per series over equally spaced x positions.
std::string line_chart_svg(const Chart& chart);

}  // namespace kvbits::cli
