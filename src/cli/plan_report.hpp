// kvbits CLI — human-readable summaries and the allocation fingerprint picture of a plan.
#pragma once

#include <ostream>
#include <string>

#include "kvbits/plan.hpp"

namespace kvbits::cli {

// One paragraph: shape, method, score, bits, bytes per token and compression vs fp16.
void print_plan_summary(const Plan& plan, std::ostream& out);
// Per layer and KV head: widths per block, width histogram, bytes per token, compression.
void print_plan_table(const Plan& plan, std::ostream& out);
// SVG heat map, rows = (layer, KV head), columns = RoPE block (highest frequency left),
// colour = bit width; like the paper's allocation fingerprint figure.
std::string allocation_svg(const Plan& plan);

}  // namespace kvbits::cli
