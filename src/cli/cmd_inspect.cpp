// kvbits inspect: what a plan allocates, what it costs, and a picture of it.
#include <fstream>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/plan_report.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cli {

void add_inspect(CLI::App& app, InspectArgs& a) {
  auto* c = app.add_subcommand("inspect", "Show a plan: per layer and KV head widths, histogram, bytes per token");
  c->add_option("plan", a.plan, "Plan file")->required()->check(CLI::ExistingFile);
  c->add_option("--svg", a.svg, "Also write the allocation fingerprint picture to this SVG file");
  c->add_flag("!--no-table", a.table, "Print only the summary");
}

int run_inspect(const InspectArgs& a) {
  const Plan plan = load_plan_file(a.plan);
  print_plan_summary(plan, std::cout);
  if (a.table) {
    std::cout << "\n";
    print_plan_table(plan, std::cout);
  }
  if (!a.svg.empty()) {
    std::ofstream f(a.svg, std::ios::binary);
    f << allocation_svg(plan);
    if (!f.flush()) fail(StatusCode::io_error, "cannot write " + a.svg);
    std::cout << "\nwrote " << a.svg << "\n";
  }
  return 0;
}

}  // namespace kvbits::cli
