#include "kvbits/calibrator.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/rotation.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

namespace {

void check_options(const PlanOptions& o, const ModelShape& shape) {
  auto bad = [](const std::string& m) { fail(StatusCode::invalid_argument, "plan options: " + m); };
  if (o.method != Method::block_gtq && o.method != Method::uniform_tq_mse) bad("unknown method");
  if (o.score != ScoreKind::energy && o.score != ScoreKind::product) bad("unknown score kind");
  if (o.recipe != CodebookRecipe::lloyd_max && o.recipe != CodebookRecipe::reference) bad("unknown codebook recipe");
  if (o.k_min_bits < 1 || o.k_max_bits > 8 || o.k_min_bits > o.k_max_bits)
    bad("need 1 <= k_min_bits <= k_max_bits <= 8");
  if (!std::isfinite(o.k_avg_bits) || o.k_avg_bits < o.k_min_bits || o.k_avg_bits > o.k_max_bits)
    bad("k_avg_bits " + std::to_string(o.k_avg_bits) + " outside [k_min_bits, k_max_bits]");
  if (o.method == Method::uniform_tq_mse && o.k_avg_bits != std::floor(o.k_avg_bits))
    bad("uniform TQ-MSE needs a whole number of key bits, got " + std::to_string(o.k_avg_bits));
  if (o.v_bits < 1 || o.v_bits > 8) bad("v_bits must be in [1, 8], got " + std::to_string(o.v_bits));
  for (uint32_t l : o.fp16_layers)
    if (l >= shape.n_layers) bad("fp16 layer " + std::to_string(l) + " >= n_layers " + std::to_string(shape.n_layers));
}

std::vector<uint8_t> head_bits(const EnergyAccumulator& acc, const PlanOptions& o, uint32_t layer, uint32_t h) {
  const ModelShape& shape = acc.shape();
  const uint32_t n_rot = shape.n_rotary_blocks();
  std::vector<uint8_t> bits(shape.n_blocks(), uint8_t(static_block_bits(o)));
  if (o.method == Method::uniform_tq_mse) {
    std::fill(bits.begin(), bits.end(), uint8_t(o.k_avg_bits));
    return bits;
  }
  if (acc.q_samples(layer, h) == 0 || acc.k_samples(layer, h) == 0)
    fail(StatusCode::invalid_argument, "calibration: layer " + std::to_string(layer) + " kv head " +
                                           std::to_string(h) + " has no query or key samples");
  std::vector<double> s = acc.scores(layer, h, o.score);
  s.resize(n_rot);  // only rotary blocks enter the greedy budget
  const auto rot_bits = allocate_bits(s, AllocatorConfig{o.k_avg_bits, o.k_min_bits, o.k_max_bits});
  std::copy(rot_bits.begin(), rot_bits.end(), bits.begin());
  return bits;
}

}  // namespace

int static_block_bits(const PlanOptions& opt) {
  return std::clamp(int(std::floor(opt.k_avg_bits)), opt.k_min_bits, opt.k_max_bits);
}

Plan build_plan(const EnergyAccumulator& acc, const PlanOptions& o) {
  const ModelShape& shape = acc.shape();
  check_options(o, shape);
  Plan plan;
  plan.shape = shape;
  plan.method = o.method;
  plan.score = o.score;
  plan.recipe = o.recipe;
  plan.k_avg_bits = o.k_avg_bits;
  plan.k_min_bits = uint8_t(o.method == Method::uniform_tq_mse ? int(o.k_avg_bits) : o.k_min_bits);
  plan.k_max_bits = uint8_t(o.method == Method::uniform_tq_mse ? int(o.k_avg_bits) : o.k_max_bits);
  plan.sink_tokens = o.sink_tokens;
  plan.window_tokens = o.window_tokens;
  plan.rotation_seed = o.rotation_seed;
  plan.fingerprint = o.fingerprint;
  plan.producer = o.producer;
  plan.producer.calib_tokens = UINT64_MAX;

  std::vector<bool> used(9, false);
  used[size_t(o.v_bits)] = true;
  plan.layers.resize(shape.n_layers);
  for (uint32_t l = 0; l < shape.n_layers; ++l) {
    LayerPlan& layer = plan.layers[l];
    for (uint32_t h = 0; h < shape.n_kv_heads; ++h)
      plan.producer.calib_tokens = std::min<uint64_t>(plan.producer.calib_tokens, acc.k_samples(l, h));
    if (std::find(o.fp16_layers.begin(), o.fp16_layers.end(), l) != o.fp16_layers.end()) {
      layer.keep_fp16 = true;
      continue;
    }
    for (uint32_t h = 0; h < shape.n_kv_heads; ++h) {
      HeadPlan head;
      head.block_bits = head_bits(acc, o, l, h);
      const HeadLayout lay = make_head_layout(shape, head.block_bits);
      head.block_order = lay.block_order;
      head.q_energy = acc.mean_q_energy(l, h);
      head.k_energy = acc.mean_k_energy(l, h);
      for (uint32_t g = 0; g < lay.groups.size(); ++g) {
        used[lay.groups[g].bits] = true;
        head.k_rotations.push_back(RotationSpec{RotationSpec::Kind::generated, lay.groups[g].dims,
                                                derive_rotation_seed(o.rotation_seed, l, h, 0, g), {}});
      }
      head.v_bits = uint8_t(o.v_bits);
      head.v_rotation = RotationSpec{RotationSpec::Kind::generated, shape.head_dim,
                                     derive_rotation_seed(o.rotation_seed, l, h, 1, 0), {}};
      layer.heads.push_back(std::move(head));
    }
  }
  if (plan.producer.calib_tokens == UINT64_MAX) plan.producer.calib_tokens = 0;
  plan.unit_codebooks.assign(9, {});
  for (int b = 1; b <= 8; ++b)
    if (used[size_t(b)]) plan.unit_codebooks[size_t(b)] = unit_gaussian_codebook(b, o.recipe);
  plan.validate();
  return plan;
}

}  // namespace kvbits
