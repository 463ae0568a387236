// kvbits CLI — the quality lab's report: Markdown tables and SVG plots of an EvalReport.
#pragma once

#include <string>
#include <vector>

#include "kvbits/eval.hpp"

namespace kvbits::cli {

struct EvalReportInfo {
  std::string date;     // ISO-8601 UTC
  std::string command;  // the invocation, for reproduction
};

// The summary tables (MAE per layer and method, Δ% vs uniform and wins, KL / top-10, bytes
// per token and compression). With plots, a Markdown image line follows each table it
// illustrates (file names as written by write_eval_plots).
std::string eval_markdown(const eval::EvalReport& report, const EvalReportInfo& info, bool with_plots);

// Writes the SVG plots into `dir` (which must exist); returns the file names written.
std::vector<std::string> write_eval_plots(const eval::EvalReport& report, const std::string& dir);

}  // namespace kvbits::cli
