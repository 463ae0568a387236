// C API: version, status strings and plans.
#include <memory>

#include "capi_handles.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits_config.h"

using kvbits::capi::guarded;
using kvbits::capi::null_arg;

namespace {

std::shared_ptr<const kvbits::Plan> shared_plan(kvbits::Plan&& p) {
  return std::make_shared<const kvbits::Plan>(std::move(p));
}

}  // namespace

static_assert(KVB_VERSION_MAJOR == KVB_VERSION_MAJOR_BUILD && KVB_VERSION_MINOR == KVB_VERSION_MINOR_BUILD &&
                  KVB_VERSION_PATCH == KVB_VERSION_PATCH_BUILD,
              "capi/kvbits.h version macros must match meson.build's project version");

extern "C" {

uint32_t kvb_version_number(void) { return KVB_VERSION_NUMBER; }
const char* kvb_version_string(void) { return KVB_VERSION_STRING; }

const char* kvb_status_string(kvb_status status) {
  if (status < 0 || status > KVB_ERR_DEVICE) return "unknown_status";
  return kvbits::status_name(kvbits::StatusCode(status));
}

void kvb_error_init(kvb_error* err) {
  if (!err) return;
  std::memset(err, 0, sizeof *err);
  err->struct_size = sizeof *err;
}

kvb_status kvb_plan_load_file(const char* path, kvb_plan** out, kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(err, [&] {
    if (!path) null_arg("path");
    if (!out) null_arg("out");
    *out = new kvb_plan{shared_plan(kvbits::load_plan_file(path))};
  });
}

kvb_status kvb_plan_load_memory(const void* data, size_t size, kvb_plan** out, kvb_error* err) {
  if (out) *out = nullptr;
  return guarded(err, [&] {
    if (!data) null_arg("data");
    if (!out) null_arg("out");
    *out = new kvb_plan{shared_plan(kvbits::parse_plan(static_cast<const uint8_t*>(data), size))};
  });
}

kvb_status kvb_plan_save_file(const kvb_plan* plan, const char* path, kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    if (!path) null_arg("path");
    kvbits::save_plan_file(*plan->plan, path);
  });
}

kvb_status kvb_plan_serialize(const kvb_plan* plan, void* buf, size_t capacity, size_t* size_out, kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    if (!size_out) null_arg("size_out");
    const auto bytes = kvbits::serialize_plan(*plan->plan);
    *size_out = bytes.size();
    if (!buf) return;
    if (capacity < bytes.size())
      kvbits::fail(kvbits::StatusCode::invalid_argument, "buffer holds " + std::to_string(capacity) +
                                                             " bytes, the plan needs " + std::to_string(bytes.size()));
    std::memcpy(buf, bytes.data(), bytes.size());
  });
}

void kvb_plan_destroy(kvb_plan* plan) { delete plan; }

kvb_status kvb_plan_get_info(const kvb_plan* plan, kvb_plan_info* info, kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    if (!info) null_arg("info");
    const kvbits::Plan& p = *plan->plan;
    kvb_plan_info r;
    std::memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.n_layers = p.shape.n_layers, r.n_q_heads = p.shape.n_q_heads, r.n_kv_heads = p.shape.n_kv_heads;
    r.head_dim = p.shape.head_dim, r.rotary_dim = p.shape.rotary_dim;
    r.rope_layout = int32_t(p.shape.rope_layout), r.rope_theta = p.shape.rope_theta;
    r.method = int32_t(p.method), r.k_avg_bits = p.k_avg_bits;
    r.sink_tokens = p.sink_tokens, r.window_tokens = p.window_tokens;
    r.calib_tokens = p.producer.calib_tokens;
    for (uint32_t l = 0; l < p.shape.n_layers; ++l) {
      r.n_fp16_layers += p.layers[l].keep_fp16;
      if (!p.layers[l].keep_fp16 && r.v_bits == 0) r.v_bits = p.layers[l].heads[0].v_bits;
      for (uint32_t h = 0; h < p.shape.n_kv_heads; ++h) r.bytes_per_token_total += p.bytes_per_token(l, h);
    }
    r.bytes_per_token_per_head = p.mean_bytes_per_token();
    kvbits::capi::write_versioned(info, r, "kvb_plan_info");
  });
}

kvb_status kvb_plan_bytes_per_token(const kvb_plan* plan, uint32_t layer, uint32_t kv_head, uint64_t* bytes_out,
                                    kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    if (!bytes_out) null_arg("bytes_out");
    const auto& s = plan->plan->shape;
    if (layer >= s.n_layers || kv_head >= s.n_kv_heads)
      kvbits::fail(kvbits::StatusCode::invalid_argument, "(layer " + std::to_string(layer) + ", kv head " +
                                                             std::to_string(kv_head) + ") out of range");
    *bytes_out = plan->plan->bytes_per_token(layer, kv_head);
  });
}

kvb_status kvb_plan_check_shape(const kvb_plan* plan, uint32_t n_layers, uint32_t n_q_heads, uint32_t n_kv_heads,
                                uint32_t head_dim, kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    kvbits::ModelShape want = plan->plan->shape;
    want.n_layers = n_layers, want.n_q_heads = n_q_heads, want.n_kv_heads = n_kv_heads, want.head_dim = head_dim;
    kvbits::check_plan_shape(*plan->plan, want);
  });
}

kvb_status kvb_plan_check_model(const kvb_plan* plan, const kvb_model_shape* model, kvb_error* err) {
  return guarded(err, [&] {
    if (!plan) null_arg("plan");
    kvbits::check_plan_shape(*plan->plan, kvbits::capi::to_model_shape(model));
  });
}

}  // extern "C"
