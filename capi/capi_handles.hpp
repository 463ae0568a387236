// What the opaque C handles hold. Handles share ownership of what they depend on, so the C
// caller may destroy them in any order (Go and Python finalizers run in no particular order).
#pragma once

#include <memory>

#include "capi_util.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/context.hpp"
#include "kvbits/energy.hpp"
#include "kvbits/plan.hpp"

namespace kvbits::capi {

// A context's worker pool takes calls from several threads in turns (context.hpp), so the C
// layer adds no lock of its own around work; only the error text needs one (ErrorSink).
struct ContextState {
  explicit ContextState(const ContextConfig& cfg) : context(cfg) {}
  Context context;
  ErrorSink errors;  // kvb_context_last_error
};

ModelShape to_model_shape(const kvb_model_shape* shape);  // Error(null_pointer | invalid_argument)

// What kvb_plan_supported answers: Error(unsupported) when caches of `plan` cannot be created
// and attended on ctx (on CUDA, what the GPU decode kernel does not serve yet).
void check_supported(const ContextState& ctx, const Plan& plan);

}  // namespace kvbits::capi

struct kvb_context {
  std::shared_ptr<kvbits::capi::ContextState> state;
};

struct kvb_plan {
  std::shared_ptr<const kvbits::Plan> plan;
};

struct kvb_calibrator {
  std::shared_ptr<kvbits::capi::ContextState> ctx;
  kvbits::EnergyAccumulator energies;
};

struct kvb_cache {
  std::shared_ptr<kvbits::capi::ContextState> ctx;  // declared first: outlives `cache`
  std::unique_ptr<kvbits::Cache> cache;             // holds its own shared_ptr to the plan
};
