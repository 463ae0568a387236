// kvbits calibrate: activation dumps -> energies -> greedy allocation -> plan file.
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/utc_date.hpp"
#include "cli/plan_report.hpp"
#include "kvbits/activation_dump.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/safetensors.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"

namespace kvbits::cli {

void add_calibrate(CLI::App& app, CalibrateArgs& a) {
  auto* c = app.add_subcommand("calibrate", "Build a bit plan from Q/K activation dumps (docs/activation-dumps.md)");
  c->add_option("--dump", a.dumps, "Activation dump (.safetensors); repeat for several chunks")->required()->check(CLI::ExistingFile);
  c->add_option("-o,--out", a.out, "Plan file to write")->required();
  c->add_option("--k-bits", a.k_bits, "Average key code bits per dim (norms not counted)")->capture_default_str();
  c->add_option("--v-bits", a.v_bits, "Value bits per dim (uniform TQ-MSE)")->capture_default_str()->check(CLI::Range(1, 8));
  c->add_option("--method", a.method, "block-gtq | uniform")->capture_default_str()->check(CLI::IsMember({"block-gtq", "uniform"}));
  c->add_option("--score", a.score, "Block score: product (E|q|^2 * E|k|^2) | energy (the paper's mean)")
      ->capture_default_str()->check(CLI::IsMember({"product", "energy"}));
  c->add_option("--codebooks", a.codebooks, "lloyd-max (converged) | reference (the authors' recipe)")
      ->capture_default_str()->check(CLI::IsMember({"lloyd-max", "reference"}));
  c->add_option("--min-bits", a.min_bits, "Smallest width a block may get")->capture_default_str()->check(CLI::Range(1, 8));
  c->add_option("--max-bits", a.max_bits, "Largest width a block may get")->capture_default_str()->check(CLI::Range(1, 8));
  c->add_option("--seed", a.seed, "Base seed of the generated rotations")->capture_default_str();
  c->add_option("--sink", a.sink, "Keep the first N tokens of every sequence in fp16")->capture_default_str();
  c->add_option("--window", a.window, "Keep the last N tokens of every sequence in fp16")->capture_default_str();
  c->add_option("--fp16-layers", a.fp16_layers, "Layers kept at 16 bits (comma separated)")->delimiter(',');
  c->add_option("--fingerprint-file", a.fingerprint_file, "Model file whose XXH3-128 is recorded in the plan")->check(CLI::ExistingFile);
  c->add_option("--corpus", a.corpus, "Calibration corpus description (default: from the dump)");
  c->add_option("--date", a.date, "Producer date to record (default: SOURCE_DATE_EPOCH or now, UTC)");
  c->add_option("--layers", a.layers, "Override: number of layers");
  c->add_option("--q-heads", a.q_heads, "Override: query heads");
  c->add_option("--kv-heads", a.kv_heads, "Override: KV heads");
  c->add_option("--head-dim", a.head_dim, "Override: head dim");
  c->add_option("--rotary-dim", a.rotary_dim, "Override: rotary dim (partial RoPE)");
  c->add_option("--rope", a.rope, "Override: RoPE layout split-half | interleaved")->check(CLI::IsMember({"split-half", "interleaved"}));
  c->add_option("--rope-theta", a.rope_theta, "Override: RoPE base");
  c->add_flag("-q,--quiet", a.quiet, "Print nothing on success");
}

namespace {


ModelShape resolve_shape(const SafetensorsFile& first, const CalibrateArgs& a) {
  const bool all_flags = a.layers && a.q_heads && a.kv_heads && a.head_dim && !a.rope.empty();
  ModelShape s = all_flags ? ModelShape{} : shape_from_dump_metadata(first.metadata());
  if (all_flags) s.rotary_dim = a.head_dim;
  if (a.layers) s.n_layers = a.layers;
  if (a.q_heads) s.n_q_heads = a.q_heads;
  if (a.kv_heads) s.n_kv_heads = a.kv_heads;
  if (a.head_dim) s.head_dim = a.head_dim;
  if (a.rotary_dim) s.rotary_dim = a.rotary_dim;
  if (!a.rope.empty()) s.rope_layout = a.rope == "interleaved" ? RopeLayout::interleaved : RopeLayout::split_half;
  if (a.rope_theta > 0) s.rope_theta = a.rope_theta;
  s.validate();
  return s;
}

// Feeds one dump's layers.N.q / layers.N.k into the accumulator after checking their shapes.
void observe_dump(EnergyAccumulator& acc, const SafetensorsFile& f, const std::string& path) {
  const ModelShape& s = acc.shape();
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    const std::string qn = "layers." + std::to_string(l) + ".q", kn = "layers." + std::to_string(l) + ".k";
    if (!f.has(qn) || !f.has(kn))
      fail(StatusCode::not_found, path + ": missing tensor " + (f.has(qn) ? kn : qn));
    const TensorView& q = f.tensor(qn);
    const TensorView& k = f.tensor(kn);
    auto expect = [&](const TensorView& t, const std::string& name, uint32_t heads) {
      if (t.shape.size() != 3 || t.shape[1] != heads || t.shape[2] != s.head_dim)
        fail(StatusCode::shape_mismatch, path + ": " + name + " must be [T, " + std::to_string(heads) + ", " +
                                             std::to_string(s.head_dim) + "]");
    };
    expect(q, qn, s.n_q_heads);
    expect(k, kn, s.n_kv_heads);
    if (q.shape[0] != k.shape[0])
      fail(StatusCode::shape_mismatch, path + ": " + qn + " and " + kn + " have different token counts");
    acc.observe(l, q.data, nullptr, size_t(q.shape[0]), q.dtype);
    acc.observe(l, nullptr, k.data, size_t(k.shape[0]), k.dtype);
  }
}

}  // namespace

int run_calibrate(const CalibrateArgs& a) {
  std::vector<SafetensorsFile> files;
  files.reserve(a.dumps.size());
  files.push_back(SafetensorsFile::load(a.dumps[0]));
  const ModelShape shape = resolve_shape(files[0], a);
  EnergyAccumulator acc(shape);
  observe_dump(acc, files[0], a.dumps[0]);
  for (size_t i = 1; i < a.dumps.size(); ++i) observe_dump(acc, SafetensorsFile::load(a.dumps[i]), a.dumps[i]);

  PlanOptions o;
  o.method = a.method == "uniform" ? Method::uniform_tq_mse : Method::block_gtq;
  o.score = a.score == "energy" ? ScoreKind::energy : ScoreKind::product;
  o.recipe = a.codebooks == "reference" ? CodebookRecipe::reference : CodebookRecipe::lloyd_max;
  o.k_avg_bits = a.k_bits;
  o.k_min_bits = a.min_bits;
  o.k_max_bits = a.max_bits;
  o.v_bits = a.v_bits;
  o.rotation_seed = a.seed;
  o.sink_tokens = a.sink;
  o.window_tokens = a.window;
  o.fp16_layers = a.fp16_layers;
  const auto& meta = files[0].metadata();
  if (!a.fingerprint_file.empty()) {
    o.fingerprint = fingerprint_file(a.fingerprint_file);
  } else if (auto it = meta.find("kvbits.model_fingerprint_xxh3_128"); it != meta.end()) {
    o.fingerprint = fingerprint_from_hex(it->second);
  }
  o.producer.tool = "kvbits " KVB_VERSION_STRING;
  o.producer.corpus = a.corpus;
  if (o.producer.corpus.empty())
    if (auto it = meta.find("kvbits.corpus"); it != meta.end()) o.producer.corpus = it->second;
  o.producer.date = utc_date(a.date, "%Y-%m-%dT%H:%M:%SZ");

  const Plan plan = build_plan(acc, o);
  save_plan_file(plan, a.out);
  if (!a.quiet) {
    std::cout << "wrote " << a.out << "\n";
    print_plan_summary(plan, std::cout);
  }
  return 0;
}

}  // namespace kvbits::cli
