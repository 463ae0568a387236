// llama2c — recording q and k of every layer and position into an activation dump
// (docs/activation-dumps.md), for `kvbits calibrate`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvbits/activation_dump.hpp"
#include "model.hpp"

namespace llama2c {

struct CaptureOptions {
  int sequences = 8;    // sequences to run (at most this many when teacher-forcing)
  int tokens = 256;     // positions per sequence, the leading BOS included; <= seq_len
  uint64_t seed = 1;    // sampler seed; one RNG stream across all sequences
  float temperature = 1.0f;
  kvbits::RopeApplied rope = kvbits::RopeApplied::pre;  // which q/k to record
  // Empty: every sequence starts from BOS and samples its continuation from the model.
  // Otherwise these token ids (no BOS) are teacher-forced, cut into consecutive chunks of
  // tokens - 1 ids, each run as its own sequence after a BOS.
  std::vector<int> forced_tokens;
  std::string corpus;  // stored as kvbits.corpus
};

struct Capture {
  kvbits::DumpMetadata metadata;
  std::vector<std::vector<int>> sequences;  // token ids fed at positions 0, 1, ...
  std::vector<std::vector<float>> q;        // per layer: [T, n_heads, head_dim]
  std::vector<std::vector<float>> k;        // per layer: [T, n_kv_heads, head_dim]
};

// Runs the sequences with an fp32 KV cache and records the chosen RoPE stage. Deterministic:
// the same model and options give the same numbers. Error(invalid_argument) for bad options.
Capture capture_activations(const Model& model, const CaptureOptions& options);

// Writes layers.N.q / layers.N.k (F32) and the dump metadata. Error(io_error) on failure.
void write_capture(const std::string& path, const Capture& capture);

}  // namespace llama2c
