// C API: the calibrator (activations -> per-block energies -> bit plan).
#include <cstring>
#include <memory>

#include "capi_handles.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits_config.h"

using kvbits::capi::bad_arg;
using kvbits::capi::guarded;
using kvbits::capi::null_arg;

namespace {

constexpr uint64_t kMaxTokensPerCall = UINT32_MAX;

kvbits::PlanOptions to_options(const kvb_plan_options* options, uint32_t n_layers) {
  kvb_plan_options defaults;
  kvb_plan_options_default(&defaults);
  const kvb_plan_options o = kvbits::capi::read_versioned(options, defaults, "kvb_plan_options");
  kvbits::capi::check_reserved_zero(o.reserved, "kvb_plan_options");
  kvbits::PlanOptions r;
  // Enumerations are range-checked here, before narrowing to the C++ enums.
  if (o.method != KVB_METHOD_BLOCK_GTQ && o.method != KVB_METHOD_UNIFORM_TQ_MSE)
    bad_arg("plan options: method is " + std::to_string(o.method) + ", not a kvb_method");
  if (o.score != KVB_SCORE_ENERGY && o.score != KVB_SCORE_PRODUCT)
    bad_arg("plan options: score is " + std::to_string(o.score) + ", not a kvb_score");
  if (o.codebooks != KVB_CODEBOOKS_LLOYD_MAX && o.codebooks != KVB_CODEBOOKS_REFERENCE)
    bad_arg("plan options: codebooks is " + std::to_string(o.codebooks) + ", not a kvb_codebooks");
  r.method = kvbits::Method(o.method);
  r.score = kvbits::ScoreKind(o.score);
  r.recipe = kvbits::CodebookRecipe(o.codebooks);
  r.k_avg_bits = o.k_avg_bits;
  r.k_min_bits = o.k_min_bits, r.k_max_bits = o.k_max_bits, r.v_bits = o.v_bits;
  r.rotation_seed = o.rotation_seed;
  r.sink_tokens = o.sink_tokens, r.window_tokens = o.window_tokens;
  if (o.n_fp16_layers > 0 && !o.fp16_layers) null_arg("kvb_plan_options.fp16_layers (n_fp16_layers > 0)");
  if (o.n_fp16_layers > n_layers)
    bad_arg("plan options: n_fp16_layers " + std::to_string(o.n_fp16_layers) + " > n_layers " +
            std::to_string(n_layers));
  r.fp16_layers.assign(o.fp16_layers, o.fp16_layers + o.n_fp16_layers);
  if (o.model_fingerprint_hex) r.fingerprint = kvbits::fingerprint_from_hex(o.model_fingerprint_hex);
  r.producer.tool = "kvbits " KVB_VERSION_STRING;
  if (o.corpus) r.producer.corpus = o.corpus;
  if (o.date) r.producer.date = o.date;
  return r;
}

}  // namespace

extern "C" {

kvb_status kvb_calibrator_create(kvb_context* ctx, const kvb_model_shape* shape, kvb_calibrator** out,
                                 kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(ctx ? &ctx->state->errors : nullptr, err, [&] {
    if (!ctx) null_arg("ctx");
    if (!shape) null_arg("shape");
    if (!out) null_arg("out");
    *out = new kvb_calibrator{ctx->state, kvbits::EnergyAccumulator(kvbits::capi::to_model_shape(shape))};
  });
}

void kvb_calibrator_destroy(kvb_calibrator* cal) { delete cal; }

kvb_status kvb_calibrator_observe(kvb_calibrator* cal, uint32_t layer, const void* q, const void* k,
                                  size_t n_tokens, kvb_dtype dtype, kvb_error* err) {
  return guarded(cal ? &cal->ctx->errors : nullptr, err, [&] {
    if (!cal) null_arg("cal");
    if (!q && !k) null_arg("q and k (at least one)");
    const kvbits::ModelShape& s = cal->energies.shape();
    if (layer >= s.n_layers)
      bad_arg("layer " + std::to_string(layer) + " out of range (" + std::to_string(s.n_layers) + " layers)");
    const kvbits::DType t = kvbits::capi::to_dtype(dtype, "dtype");
    if (n_tokens == 0) bad_arg("n_tokens must be >= 1");
    if (n_tokens > kMaxTokensPerCall)
      bad_arg("n_tokens " + std::to_string(n_tokens) + " is more than one call takes (2^32 - 1)");
    // The byte counts of both tensors must be representable before anything is read.
    const size_t row = kvbits::capi::checked_mul(size_t(s.n_q_heads) * s.head_dim, kvbits::dtype_size(t), "q row");
    kvbits::capi::checked_mul(n_tokens, row, "n_tokens * n_q_heads * head_dim");
    cal->energies.observe(layer, q, k, n_tokens, t);
  });
}

void kvb_plan_options_default(kvb_plan_options* options) {
  if (!options) return;
  std::memset(options, 0, sizeof *options);
  const kvbits::PlanOptions d;
  options->struct_size = sizeof *options;
  options->method = KVB_METHOD_BLOCK_GTQ;
  options->k_avg_bits = d.k_avg_bits;
  options->k_min_bits = d.k_min_bits, options->k_max_bits = d.k_max_bits, options->v_bits = d.v_bits;
  options->score = int32_t(d.score);
  options->codebooks = int32_t(d.recipe);
  options->rotation_seed = d.rotation_seed;
}

kvb_status kvb_calibrator_build_plan(const kvb_calibrator* cal, const kvb_plan_options* options, kvb_plan** out,
                                     kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(cal ? &cal->ctx->errors : nullptr, err, [&] {
    if (!cal) null_arg("cal");
    if (!out) null_arg("out");
    const kvbits::PlanOptions o = to_options(options, cal->energies.shape().n_layers);
    kvbits::Plan plan;
    try {
      plan = kvbits::build_plan(cal->energies, o);
    } catch (const kvbits::Error& e) {
      // The only caller-supplied content that validation can reject is option text
      // (corpus, date): that is a bad argument, not corrupt data.
      if (e.code() != kvbits::StatusCode::corrupt_data) throw;
      bad_arg(std::string("plan options make an invalid plan: ") + e.what());
    }
    *out = new kvb_plan{std::make_shared<const kvbits::Plan>(std::move(plan))};
  });
}

}  // extern "C"
