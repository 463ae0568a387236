// kvbits CLI — subcommands. Each add_* registers options on the app; each run_* returns the
// process exit code (0 ok, 1 failure; CLI11 uses its own codes for usage errors).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace kvbits::cli {

struct CalibrateArgs {
  std::vector<std::string> dumps;
  std::string out;
  double k_bits = 3.0;
  int v_bits = 3;
  std::string method = "block-gtq";
  std::string score = "product";
  std::string codebooks = "lloyd-max";
  int min_bits = 1, max_bits = 8;
  uint64_t seed = 42;
  uint32_t sink = 0, window = 0;
  std::vector<uint32_t> fp16_layers;
  std::string fingerprint_file, corpus, date;
  // Shape overrides (0 / empty = take from the dump's metadata).
  uint32_t layers = 0, q_heads = 0, kv_heads = 0, head_dim = 0, rotary_dim = 0;
  std::string rope;
  double rope_theta = 0;
  bool quiet = false;
};
void add_calibrate(CLI::App& app, CalibrateArgs& a);
int run_calibrate(const CalibrateArgs& a);

struct InspectArgs {
  std::string plan, svg;
  bool table = true;
};
void add_inspect(CLI::App& app, InspectArgs& a);
int run_inspect(const InspectArgs& a);

struct VerifyArgs {
  std::string plan, dump;
  bool quiet = false;
};
void add_verify(CLI::App& app, VerifyArgs& a);
int run_verify(const VerifyArgs& a);

struct EvalArgs {
  std::string calib, test;
  uint32_t synthetic = 0;  // head_dim of the synthetic panel; 0 = use dumps
  uint64_t seed = 1;
  std::string layout = "split-half";
  uint32_t sequences = 8, seq_tokens = 256;
  std::vector<int> bits = {2, 3, 4};
  std::vector<std::string> methods = {"uniform", "bgt-energy", "bgt-product", "kivi"};
  std::string codebooks = "lloyd-max";
  uint64_t rotation_seed = 42;
  uint32_t kivi_group = 32, kivi_residual = 0, kl_window = 128;
  bool no_attention = false;
  std::string report, date;
  std::string command_line;  // recorded in the report
  bool quiet = false;
};
void add_eval(CLI::App& app, EvalArgs& a);
int run_eval(const EvalArgs& a);

}  // namespace kvbits::cli
