// llama2c — KIVI (Liu et al., ICML 2024) behind KvStore, to measure its quality end to end.
//
// A faithful simulation for quality measurement, not a packed implementation: the store holds
// the dequantized reconstruction KIVI's kernels would read (fp32 numbers that are exactly the
// fp16 values KIVI stores or decodes) and attends over it in fp32 like FloatKvStore, so every
// difference from the fp32 cache is KIVI's storage. Quantization is the lab's reference
// quantizer (kvbits/eval.hpp: kivi_roundtrip_keys / kivi_roundtrip_values), and the state
// machine is the peer-methods spec §1.3, per layer:
//   keys    an fp16 buffer; after a step's attention, once it holds R tokens it is quantized
//           per channel as R/G groups of G tokens and emptied (0..R-1 fp16 keys between steps);
//   values  an fp16 window; after a step's attention, while it holds more than R tokens its
//           oldest token is quantized per token in groups of min(G, head_dim) channels.
// The first `prefill` positions are KIVI's prefill: they attend over the unquantized (fp16)
// prompt and the rules above apply once, after the attention of position prefill - 1
// (keys: all but L mod R tokens quantized; values: all but the last R).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv_store.hpp"
#include "model.hpp"

namespace llama2c {

struct KiviStoreOptions {
  int bits = 2;            // code bits of keys and values, in [1, 8]
  uint32_t group = 32;     // G: tokens per key group, channels per value group (KIVI's example.py)
  uint32_t residual = 32;  // R: fp16 residual length, a positive multiple of G (example.py: 32)
  int prefill = 0;         // leading positions run as KIVI's prefill (0: every one is a decode step)
};

// "KIVI K2V2 (G32 R32)".
std::string kivi_setting_name(const KiviStoreOptions& options);

// Where a position's key or value is, after the last finished step.
enum class KiviSlot : uint8_t { fp16, quantized };

class KiviKvStore final : public KvStore {
 public:
  // One sequence of up to config.seq_len positions. Error(invalid_argument) for bad options,
  // naming the option.
  KiviKvStore(const Config& config, const KiviStoreOptions& options);

  // Stores position `pos` of `layer` in the fp16 buffers (and first finishes the previous step
  // if its attention was not asked for). Error(invalid_argument), store unchanged: layer out of
  // range, position out of order or past seq_len, a non-finite element.
  void append(int layer, int pos, const float* k, const float* v) override;
  // fp32 attention over the reconstruction at the last appended position of `layer`, then the
  // end-of-step quantization. Error(invalid_argument) for another position or a second call at
  // the same step (its answer would differ: the step has been quantized).
  void attention(int layer, int pos, const float* q, float* out) override;

  // The key and value of (layer, pos) as KIVI holds them now (fp16 or dequantized), kv_dim each.
  void read(int layer, int pos, float* k, float* v) const;
  KiviSlot key_slot(int layer, int pos) const;
  KiviSlot value_slot(int layer, int pos) const;
  int length(int layer) const;            // positions appended
  int quantized_keys(int layer) const;    // leading positions whose keys are quantized
  int quantized_values(int layer) const;  // leading positions whose values are quantized

  // Empties the store for a new sequence.
  void reset();

  const KiviStoreOptions& options() const { return options_; }
  // K + V bytes per token per KV head with the lab's accounting (kivi_key_bytes_per_token +
  // kivi_value_bytes_per_token): codes, fp16 scale + min per group, 2 * head_dim per fp16
  // residual token counted as R tokens out of seq_tokens.
  double bytes_per_token_per_head(int seq_tokens) const;

 private:
  struct Layer {
    int length = 0;
    int keys_quantized = 0;    // keys [0, keys_quantized) quantized, the rest the fp16 buffer
    int values_quantized = 0;  // values [0, values_quantized) quantized, the rest the fp16 window
    bool step_open = false;    // the last position's end-of-step rules have not run yet
  };

  void check_layer(int layer, int pos, const char* what) const;
  void finish_step(int layer);
  // Replaces positions [from, to) of one layer's keys (per channel, G-token groups) or one
  // value position (per token) by their KIVI reconstruction, head by head.
  void quantize_keys(int layer, int from, int to);
  void quantize_value(int layer, int pos);
  float* keys_at(int layer, int pos);
  float* values_at(int layer, int pos);

  KiviStoreOptions options_;
  int n_heads_, n_kv_heads_, head_dim_, capacity_;
  std::vector<float> keys_, values_;  // [layer][pos][kv_dim], the reconstruction
  std::vector<Layer> layers_;
  std::vector<float> scratch_in_, scratch_out_, scores_;
};

}  // namespace llama2c
