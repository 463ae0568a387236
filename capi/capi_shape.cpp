// C API: the model shape struct shared by calibrators, plan checks and caches.
#include <cstring>

#include "capi_handles.hpp"

namespace kvbits::capi {

ModelShape to_model_shape(const kvb_model_shape* shape) {
  if (!shape) null_arg("shape");
  kvb_model_shape defaults;
  kvb_model_shape_default(&defaults);
  const kvb_model_shape s = read_versioned(shape, defaults, "kvb_model_shape");
  if (s.reserved != 0) bad_arg("kvb_model_shape.reserved must be zero");
  // Range-check before narrowing to the C++ enum, or 256 would pass as split-half.
  if (s.rope_layout != KVB_ROPE_SPLIT_HALF && s.rope_layout != KVB_ROPE_INTERLEAVED)
    bad_arg("model shape: rope_layout is " + std::to_string(s.rope_layout) +
            ", not KVB_ROPE_SPLIT_HALF or KVB_ROPE_INTERLEAVED");
  ModelShape m;
  m.n_layers = s.n_layers, m.n_q_heads = s.n_q_heads, m.n_kv_heads = s.n_kv_heads;
  m.head_dim = s.head_dim, m.rotary_dim = s.rotary_dim == 0 ? s.head_dim : s.rotary_dim;
  m.rope_layout = RopeLayout(s.rope_layout), m.rope_theta = s.rope_theta;
  m.validate();
  return m;
}

}  // namespace kvbits::capi

extern "C" void kvb_model_shape_default(kvb_model_shape* shape) {
  if (!shape) return;
  std::memset(shape, 0, sizeof *shape);
  shape->struct_size = sizeof *shape;
  shape->rope_layout = KVB_ROPE_SPLIT_HALF;
  shape->rope_theta = 10000.0;
}
