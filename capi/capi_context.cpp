// C API: contexts (one backend and its workers), per-context error text, capability query.
#include <cstring>
#include <memory>

#include "capi_handles.hpp"
#include "context/device_context.hpp"
#include "kvbits_config.h"

using kvbits::capi::bad_arg;
using kvbits::capi::ContextState;
using kvbits::capi::guarded;
using kvbits::capi::null_arg;

namespace {

constexpr uint32_t kMaxThreads = 1024;

kvbits::ContextConfig to_config(const kvb_context_params* params) {
  kvb_context_params defaults;
  kvb_context_params_default(&defaults);
  const kvb_context_params p = kvbits::capi::read_versioned(params, defaults, "kvb_context_params");
  kvbits::capi::check_reserved_zero(p.reserved, "kvb_context_params");
  kvbits::ContextConfig cfg;
  switch (p.backend) {
    case KVB_BACKEND_CPU: cfg.backend = kvbits::Backend::cpu; break;
    case KVB_BACKEND_CUDA: cfg.backend = kvbits::Backend::cuda; break;
    case KVB_BACKEND_AUTO: cfg.backend = kvbits::Backend::automatic; break;
    default: bad_arg("kvb_context_params.backend is " + std::to_string(p.backend) + ", not a kvb_backend");
  }
  if (p.device < 0) bad_arg("kvb_context_params.device must be >= 0, got " + std::to_string(p.device));
  if (p.n_threads > kMaxThreads)
    bad_arg("kvb_context_params.n_threads must be at most " + std::to_string(kMaxThreads) + ", got " +
            std::to_string(p.n_threads));
  cfg.device = p.device;
  cfg.n_threads = p.n_threads;
  return cfg;
}

}  // namespace

namespace kvbits::capi {

void check_supported(const ContextState& ctx, const Plan& plan) {
  // Every valid plan runs on the CPU backend. On CUDA, caches of every plan work; attention
  // asks the GPU decode kernel what it serves (fp16 sink/window tokens and fp16 layers are
  // being added to it), at the default page size.
  const Backend b = ctx.context.backend();
  if (b == Backend::cpu) return;
  if (b == Backend::cuda && ctx.context.device_context()) {
    ctx.context.device_context()->check_attention_support(plan, CacheConfig{}.page_size);
    return;
  }
  fail(StatusCode::unsupported, std::string("caches and attention on the ") + backend_name(b) +
                                    " backend are not implemented in kvbits " KVB_VERSION_STRING);
}

}  // namespace kvbits::capi

extern "C" {

void kvb_context_params_default(kvb_context_params* params) {
  if (!params) return;
  std::memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
  params->backend = KVB_BACKEND_AUTO;
}

kvb_status kvb_context_create(const kvb_context_params* params, kvb_context** out, kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(err, [&] {
    if (!out) null_arg("out");
    const kvbits::ContextConfig cfg = to_config(params);
    auto ctx = std::make_unique<kvb_context>();
    ctx->state = std::make_shared<ContextState>(cfg);
    *out = ctx.release();
  });
}

void kvb_context_destroy(kvb_context* ctx) { delete ctx; }

kvb_status kvb_context_backend(const kvb_context* ctx, kvb_backend* backend_out, int32_t* device_out,
                               kvb_error* err) {
  return guarded(ctx ? &ctx->state->errors : nullptr, err, [&] {
    if (!ctx) null_arg("ctx");
    if (!backend_out) null_arg("backend_out");
    const kvbits::Context& c = ctx->state->context;
    const bool cuda = c.backend() == kvbits::Backend::cuda;
    *backend_out = cuda ? KVB_BACKEND_CUDA : KVB_BACKEND_CPU;
    if (device_out) *device_out = cuda ? int32_t(c.device()) : 0;
  });
}

size_t kvb_context_last_error(const kvb_context* ctx, char* buf, size_t cap) {
  if (!ctx) {
    if (buf && cap > 0) buf[0] = '\0';
    return 0;
  }
  return ctx->state->errors.copy(buf, cap);
}

kvb_status kvb_plan_supported(const kvb_context* ctx, const kvb_plan* plan, kvb_error* err) {
  return guarded(ctx ? &ctx->state->errors : nullptr, err, [&] {
    if (!ctx) null_arg("ctx");
    if (!plan) null_arg("plan");
    kvbits::capi::check_supported(*ctx->state, *plan->plan);
  });
}

}  // extern "C"
