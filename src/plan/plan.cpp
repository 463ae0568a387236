// kvbits — Plan: names, equality, fingerprints, accessors and byte accounting.
// (Plan::validate lives in plan_validate.cpp, the quantizer factory in plan_quantizers.cpp.)
#include "kvbits/plan.hpp"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "kvbits/bitpack.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

namespace {

// Floating-point fields compare by bit pattern: plans that compare equal serialise to equal
// bytes (0.0 and -0.0 differ, as they do on disk).
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

const char* method_name(Method m) noexcept {
  switch (m) {
    case Method::block_gtq: return "block-gtq";
    case Method::uniform_tq_mse: return "uniform-tq-mse";
  }
  return "unknown";
}

bool RotationSpec::operator==(const RotationSpec& o) const {
  return kind == o.kind && dim == o.dim && seed == o.seed && same_bits(matrix, o.matrix);
}

bool HeadPlan::operator==(const HeadPlan& o) const {
  return block_bits == o.block_bits && block_order == o.block_order && same_bits(q_energy, o.q_energy) &&
         same_bits(k_energy, o.k_energy) && k_rotations == o.k_rotations && v_bits == o.v_bits &&
         v_rotation == o.v_rotation;
}

bool LayerPlan::operator==(const LayerPlan& o) const { return keep_fp16 == o.keep_fp16 && heads == o.heads; }

bool Producer::operator==(const Producer& o) const {
  return tool == o.tool && corpus == o.corpus && date == o.date && calib_tokens == o.calib_tokens;
}

bool Plan::operator==(const Plan& o) const {
  if (unit_codebooks.size() != o.unit_codebooks.size()) return false;
  for (size_t b = 0; b < unit_codebooks.size(); ++b)
    if (!same_bits(unit_codebooks[b], o.unit_codebooks[b])) return false;
  return shape == o.shape && same_bits(shape.rope_theta, o.shape.rope_theta) && method == o.method &&
         score == o.score && recipe == o.recipe && same_bits(k_avg_bits, o.k_avg_bits) &&
         k_min_bits == o.k_min_bits && k_max_bits == o.k_max_bits && sink_tokens == o.sink_tokens &&
         window_tokens == o.window_tokens && rotation_seed == o.rotation_seed && fingerprint == o.fingerprint &&
         producer == o.producer && layers == o.layers;
}

std::string Fingerprint::hex() const {
  size_t n = 0;
  switch (kind) {
    case Kind::none: return "none";
    case Kind::xxh3_128: n = 16; break;
    case Kind::user: n = bytes.size(); break;
  }
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 15]);
  }
  return out;
}

Fingerprint fingerprint_from_hex(const std::string& hex) {
  if (hex.size() != 32)
    fail(StatusCode::invalid_argument, "fingerprint: expected 32 hex digits, got " + std::to_string(hex.size()) +
                                           " characters");
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail(StatusCode::invalid_argument, "fingerprint: '" + hex + "' is not hexadecimal");
  };
  Fingerprint fp;
  fp.kind = Fingerprint::Kind::xxh3_128;
  for (size_t i = 0; i < 16; ++i) fp.bytes[i] = uint8_t(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return fp;
}

Fingerprint fingerprint_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail(StatusCode::io_error, "fingerprint: cannot open '" + path + "': " + std::strerror(errno));
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(), &XXH3_freeState);
  if (!state) fail(StatusCode::out_of_memory, "fingerprint: cannot allocate the hash state");
  XXH3_128bits_reset(state.get());
  // Streamed in fixed chunks: model files are many GiB.
  std::vector<unsigned char> chunk(size_t(1) << 20);
  for (;;) {
    const size_t n = std::fread(chunk.data(), 1, chunk.size(), file.get());
    if (n > 0) XXH3_128bits_update(state.get(), chunk.data(), n);
    if (n < chunk.size()) {
      if (std::ferror(file.get()))
        fail(StatusCode::io_error, "fingerprint: read error on '" + path + "': " + std::strerror(errno));
      break;
    }
  }
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state.get()));
  Fingerprint fp;
  fp.kind = Fingerprint::Kind::xxh3_128;
  std::memcpy(fp.bytes.data(), canonical.digest, sizeof canonical.digest);
  return fp;
}

const HeadPlan& Plan::head(uint32_t layer, uint32_t kv_head) const {
  if (layer >= layers.size())
    fail(StatusCode::invalid_argument, "plan: layer " + std::to_string(layer) + " out of range (plan has " +
                                           std::to_string(layers.size()) + " layers)");
  const LayerPlan& lp = layers[layer];
  if (lp.keep_fp16)
    fail(StatusCode::invalid_argument,
         "plan: layer " + std::to_string(layer) + " is kept at 16 bits and has no quantized heads");
  if (kv_head >= lp.heads.size())
    fail(StatusCode::invalid_argument, "plan: kv head " + std::to_string(kv_head) + " out of range (layer " +
                                           std::to_string(layer) + " has " + std::to_string(lp.heads.size()) +
                                           " kv heads)");
  return lp.heads[kv_head];
}

HeadLayout Plan::head_layout(uint32_t layer, uint32_t kv_head) const {
  const HeadPlan& hp = head(layer, kv_head);
  return make_head_layout(shape, hp.block_bits, &hp.block_order);
}

size_t Plan::bytes_per_token(uint32_t layer, uint32_t kv_head) const {
  if (layer < layers.size() && layers[layer].keep_fp16) {
    if (kv_head >= shape.n_kv_heads)
      fail(StatusCode::invalid_argument, "plan: kv head " + std::to_string(kv_head) + " out of range (" +
                                             std::to_string(shape.n_kv_heads) + " kv heads)");
    return size_t(4) * shape.head_dim;  // K and V in fp16
  }
  const HeadPlan& hp = head(layer, kv_head);
  const HeadLayout layout = head_layout(layer, kv_head);
  size_t bytes = 0;
  for (const KeyGroup& g : layout.groups) bytes += packed_bytes(g.dims, g.bits) + 2;  // codes + fp16 scale
  return bytes + packed_bytes(shape.head_dim, hp.v_bits) + 2;
}

double Plan::mean_bytes_per_token() const {
  if (layers.empty() || shape.n_kv_heads == 0) return 0.0;
  double total = 0.0;
  for (uint32_t l = 0; l < layers.size(); ++l)
    for (uint32_t h = 0; h < shape.n_kv_heads; ++h) total += double(bytes_per_token(l, h));
  return total / (double(layers.size()) * shape.n_kv_heads);
}

void check_plan_shape(const Plan& plan, const ModelShape& expected) {
  const ModelShape& got = plan.shape;
  auto mismatch = [](const char* field, const std::string& plan_value, const std::string& model_value) {
    fail(StatusCode::shape_mismatch, std::string("plan was made for ") + field + "=" + plan_value +
                                         ", the model has " + field + "=" + model_value);
  };
  auto check = [&](const char* field, uint32_t p, uint32_t m) {
    if (p != m) mismatch(field, std::to_string(p), std::to_string(m));
  };
  check("n_layers", got.n_layers, expected.n_layers);
  check("n_q_heads", got.n_q_heads, expected.n_q_heads);
  check("n_kv_heads", got.n_kv_heads, expected.n_kv_heads);
  check("head_dim", got.head_dim, expected.head_dim);
  check("rotary_dim", got.rotary_dim, expected.rotary_dim);
  if (got.rope_layout != expected.rope_layout)
    mismatch("rope_layout", rope_layout_name(got.rope_layout), rope_layout_name(expected.rope_layout));
  if (!(got.rope_theta == expected.rope_theta)) {
    char p[32], m[32];
    std::snprintf(p, sizeof p, "%.17g", got.rope_theta);
    std::snprintf(m, sizeof m, "%.17g", expected.rope_theta);
    mismatch("rope_theta", p, m);
  }
}

}  // namespace kvbits
