// kvbits verify: exit 0 if a plan file is intact (and fits a model, if asked), 1 otherwise.
#include <iostream>

#include "cli/commands.hpp"
#include "kvbits/activation_dump.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/safetensors.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cli {

void add_verify(CLI::App& app, VerifyArgs& a) {
  auto* c = app.add_subcommand("verify", "Check a plan file: structure, checksums, every invariant");
  c->add_option("plan", a.plan, "Plan file")->required();
  c->add_option("--dump", a.dump, "Also require the plan to match the model shape recorded in this activation dump")
      ->check(CLI::ExistingFile);
  c->add_flag("-q,--quiet", a.quiet, "Print nothing on success");
}

int run_verify(const VerifyArgs& a) {
  Plan plan;
  try {
    plan = load_plan_file(a.plan);
    if (!a.dump.empty()) check_plan_shape(plan, shape_from_dump_metadata(SafetensorsFile::load(a.dump).metadata()));
  } catch (const Error& e) {
    std::cerr << a.plan << ": INVALID (" << status_name(e.code()) << "): " << e.what() << "\n";
    return 1;
  }
  if (!a.quiet)
    std::cout << a.plan << ": OK — " << plan.shape.describe() << ", " << method_name(plan.method) << ", "
              << plan.mean_bytes_per_token() << " bytes/token/head\n";
  return 0;
}

}  // namespace kvbits::cli
