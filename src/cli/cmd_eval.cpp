// kvbits eval: the quality lab. Calibrates every method on one set of activations, quantizes
// the keys of another (K only) and reports the spec §9 metrics, bytes per token and plots.
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/utc_date.hpp"
#include "cli/eval_report.hpp"
#include "kvbits/activation_dump.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/safetensors.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cli {

void add_eval(CLI::App& app, EvalArgs& a) {
  auto* c = app.add_subcommand("eval", "Quality lab: K-only RoPE-logit MAE, softmax KL / top-10 and bytes per token "
                                       "of uniform TQ-MSE, Block-GTQ and KIVI (docs/QUALITY.md)");
  auto* calib = c->add_option("--calib", a.calib, "Activation dump to calibrate on")->check(CLI::ExistingFile);
  auto* test = c->add_option("--test", a.test, "Activation dump to evaluate on (other sequences than --calib)")
                   ->check(CLI::ExistingFile);
  auto* synth = c->add_option("--synthetic", a.synthetic, "Use the synthetic LLM-like panel at this head_dim instead of dumps")
                    ->check(CLI::IsMember({64, 128}));
  calib->needs(test);
  test->needs(calib);
  synth->excludes(calib)->excludes(test);
  c->add_option("--seed", a.seed, "Synthetic panel seed (calibration = stream 1, test = stream 2)")->capture_default_str();
  c->add_option("--layout", a.layout, "Synthetic RoPE layout split-half | interleaved")
      ->capture_default_str()->check(CLI::IsMember({"split-half", "interleaved"}));
  c->add_option("--sequences", a.sequences, "Synthetic sequences per set")->capture_default_str()->check(CLI::Range(1, 4096));
  c->add_option("--seq-tokens", a.seq_tokens, "Tokens per sequence (dumps: how the rows were captured)")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  c->add_option("--bits", a.bits, "Key bits per dim to evaluate (comma separated)")->delimiter(',')->capture_default_str()
      ->check(CLI::Range(1, 8));
  c->add_option("--methods", a.methods, "uniform, bgt-energy, bgt-product, kivi (comma separated)")->delimiter(',')
      ->capture_default_str()->check(CLI::IsMember({"uniform", "bgt-energy", "bgt-product", "kivi"}));
  c->add_option("--codebooks", a.codebooks, "lloyd-max (converged) | reference (the authors' recipe)")
      ->capture_default_str()->check(CLI::IsMember({"lloyd-max", "reference"}));
  c->add_option("--rotation-seed", a.rotation_seed, "Base seed of the plans' rotations")->capture_default_str();
  c->add_option("--kivi-group", a.kivi_group, "KIVI group size G")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  c->add_option("--kivi-residual", a.kivi_residual, "KIVI fp16 residual: the last R tokens of each sequence")
      ->capture_default_str();
  c->add_option("--kl-window", a.kl_window, "KL / top-10 queries: the last N positions of each sequence")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  c->add_flag("--no-attention", a.no_attention, "Skip the softmax KL / top-10 metric");
  c->add_option("--report", a.report, "Directory for report.md and the SVG plots (created if missing)");
  c->add_option("--date", a.date, "Date to record (default: SOURCE_DATE_EPOCH or now, UTC)");
  c->add_flag("-q,--quiet", a.quiet, "Print nothing on success");
}

namespace {


eval::Activations load_dump(const std::string& path, uint32_t seq_tokens) {
  const SafetensorsFile file = SafetensorsFile::load(path);
  try {
    return eval::activations_from_dump(view_activation_dump(file), seq_tokens);
  } catch (const Error& e) {
    fail(e.code(), path + ": " + e.what());
  }
}

eval::Activations synthetic_set(const EvalArgs& a, uint64_t stream) {
  eval::SyntheticOptions o;
  o.head_dim = a.synthetic;
  o.layout = a.layout == "interleaved" ? RopeLayout::interleaved : RopeLayout::split_half;
  o.sequences = a.sequences;
  o.seq_tokens = a.seq_tokens;
  o.seed = a.seed;
  o.stream = stream;
  return eval::synthetic_activations(o);
}

}  // namespace

int run_eval(const EvalArgs& a) {
  if (a.synthetic == 0 && a.calib.empty())
    fail(StatusCode::invalid_argument, "eval needs --calib DUMP --test DUMP or --synthetic 64|128");
  const auto t0 = std::chrono::steady_clock::now();
  const eval::Activations calib = a.synthetic ? synthetic_set(a, 1) : load_dump(a.calib, a.seq_tokens);
  const eval::Activations test = a.synthetic ? synthetic_set(a, 2) : load_dump(a.test, a.seq_tokens);

  eval::EvalOptions o;
  o.bits = a.bits;
  o.methods.clear();
  for (const std::string& m : a.methods) o.methods.push_back(eval::key_method_from_name(m));
  o.recipe = a.codebooks == "reference" ? CodebookRecipe::reference : CodebookRecipe::lloyd_max;
  o.rotation_seed = a.rotation_seed;
  o.kivi.group = a.kivi_group;
  o.kivi.residual = a.kivi_residual;
  o.attention = !a.no_attention;
  o.kl_window = a.kl_window;
  const eval::EvalReport report = eval::run_quality_eval(calib, test, o);

  const EvalReportInfo info{utc_date(a.date, "%Y-%m-%d"), a.command_line};
  if (!a.report.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(a.report, ec);
    if (ec) fail(StatusCode::io_error, "cannot create report directory " + a.report + ": " + ec.message());
    write_eval_plots(report, a.report);
    std::ofstream f(a.report + "/report.md", std::ios::binary | std::ios::trunc);
    f << eval_markdown(report, info, true);
    if (!f.flush()) fail(StatusCode::io_error, "cannot write " + a.report + "/report.md");
  }
  if (!a.quiet) {
    std::cout << eval_markdown(report, info, false);
    if (!a.report.empty()) std::cout << "wrote " << a.report << "/report.md and its SVG plots\n";
    std::cerr << "kvbits eval: "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  }
  return 0;
}

}  // namespace kvbits::cli
