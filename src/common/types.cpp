#include "kvbits/types.hpp"

#include <cmath>
#include <sstream>

#include "kvbits/status.hpp"

namespace kvbits {

size_t dtype_size(DType t) noexcept { return t == DType::f32 ? 4 : 2; }

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "unknown";
}

const char* rope_layout_name(RopeLayout l) noexcept {
  return l == RopeLayout::split_half ? "split-half" : "interleaved";
}

void ModelShape::validate() const {
  auto bad = [](const std::string& m) { fail(StatusCode::invalid_argument, "model shape: " + m); };
  if (n_layers == 0 || n_layers > 4096) bad("n_layers must be in [1, 4096], got " + std::to_string(n_layers));
  if (n_kv_heads == 0 || n_kv_heads > 4096) bad("n_kv_heads must be in [1, 4096], got " + std::to_string(n_kv_heads));
  if (n_q_heads == 0 || n_q_heads > 65536) bad("n_q_heads must be in [1, 65536], got " + std::to_string(n_q_heads));
  if (n_q_heads % n_kv_heads != 0)
    bad("n_q_heads (" + std::to_string(n_q_heads) + ") must be a multiple of n_kv_heads (" +
        std::to_string(n_kv_heads) + ")");
  if (head_dim < 2 || head_dim > 1024 || head_dim % 2 != 0)
    bad("head_dim must be even and in [2, 1024], got " + std::to_string(head_dim));
  if (rotary_dim < 2 || rotary_dim > head_dim || rotary_dim % 2 != 0)
    bad("rotary_dim must be even and in [2, head_dim], got " + std::to_string(rotary_dim));
  if (rope_layout != RopeLayout::split_half && rope_layout != RopeLayout::interleaved)
    bad("unknown rope layout " + std::to_string(int(rope_layout)));
  if (!std::isfinite(rope_theta) || rope_theta <= 1.0) bad("rope_theta must be finite and > 1");
}

bool ModelShape::operator==(const ModelShape& o) const {
  return n_layers == o.n_layers && n_q_heads == o.n_q_heads && n_kv_heads == o.n_kv_heads &&
         head_dim == o.head_dim && rotary_dim == o.rotary_dim && rope_layout == o.rope_layout &&
         rope_theta == o.rope_theta;
}

std::string ModelShape::describe() const {
  std::ostringstream s;
  s << "layers=" << n_layers << " q_heads=" << n_q_heads << " kv_heads=" << n_kv_heads
    << " head_dim=" << head_dim << " rotary_dim=" << rotary_dim << " rope=" << rope_layout_name(rope_layout)
    << " theta=" << rope_theta;
  return s.str();
}

}  // namespace kvbits
