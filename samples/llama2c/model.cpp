#include "model.hpp"

#include <climits>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <xxhash.h>

#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

// The file is little-endian and is read straight into int32/float.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "llama2c checkpoints are read on little-endian hosts");

namespace llama2c {
namespace {

using kvbits::StatusCode;
using kvbits::fail;

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
// First int32 of llama2.c's later "ak42" export versions.
constexpr int32_t kVersionedMagic = 0x616b3432;

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  fail(StatusCode::corrupt_data, "checkpoint '" + path + "': " + what);
}

// Validates the header fields alone. Bounds keep every size product far from overflow.
Config config_from_header(const int32_t h[7], const std::string& path) {
  if (h[0] == kVersionedMagic)
    fail(StatusCode::version_unsupported,
         "checkpoint '" + path + "' is a versioned llama2.c export (magic ak42); only the legacy v0 format is read");
  Config c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] == INT32_MIN ? 0 : std::abs(h[5]);
  c.seq_len = h[6];
  auto check = [&](const char* name, int v, int lo, int hi) {
    if (v < lo || v > hi)
      corrupt(path, std::string("header field ") + name + " = " + std::to_string(v) + " is outside [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  check("dim", c.dim, 2, 1 << 16);
  check("hidden_dim", c.hidden_dim, 1, 1 << 18);
  check("n_layers", c.n_layers, 1, 1024);
  check("n_heads", c.n_heads, 1, c.dim);
  check("n_kv_heads", c.n_kv_heads, 1, c.n_heads);
  check("|vocab_size|", c.vocab_size, 1, 1 << 22);
  check("seq_len", c.seq_len, 1, 1 << 20);
  if (c.dim % c.n_heads != 0)
    corrupt(path, "dim " + std::to_string(c.dim) + " is not a multiple of n_heads " + std::to_string(c.n_heads));
  if (c.n_heads % c.n_kv_heads != 0)
    corrupt(path, "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                      std::to_string(c.n_kv_heads));
  if (c.head_dim() % 2 != 0) corrupt(path, "head_dim " + std::to_string(c.head_dim()) + " is odd; RoPE needs pairs");
  return c;
}

uint64_t weight_count(const Config& c) {
  const uint64_t dim = uint64_t(c.dim), hidden = uint64_t(c.hidden_dim), L = uint64_t(c.n_layers);
  const uint64_t kv_dim = uint64_t(c.kv_dim()), vocab = uint64_t(c.vocab_size);
  uint64_t n = vocab * dim;                     // token embedding
  n += L * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim);  // per-layer tensors
  n += dim;                                     // rms_final
  n += uint64_t(c.seq_len) * uint64_t(c.head_dim());  // freq_cis real + imag
  if (!c.shared_classifier) n += vocab * dim;
  return n;
}

std::string hex128(const XXH128_hash_t& h) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);  // big-endian: high 64 bits first
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : canon.digest) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

}  // namespace

kvbits::ModelShape Config::shape() const {
  kvbits::ModelShape s;
  s.n_layers = uint32_t(n_layers);
  s.n_q_heads = uint32_t(n_heads);
  s.n_kv_heads = uint32_t(n_kv_heads);
  s.head_dim = uint32_t(head_dim());
  s.rotary_dim = uint32_t(head_dim());
  s.rope_layout = kvbits::RopeLayout::interleaved;
  s.rope_theta = kRopeTheta;
  return s;
}

Model Model::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(StatusCode::io_error, "checkpoint '" + path + "' is not a readable regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(StatusCode::io_error, "cannot open checkpoint '" + path + "'");
  const uint64_t file_bytes = uint64_t(in.tellg());
  in.seekg(0);
  if (file_bytes < kHeaderBytes)
    corrupt(path, std::to_string(file_bytes) + " bytes is shorter than the 28-byte header");

  int32_t header[7];
  if (!in.read(reinterpret_cast<char*>(header), kHeaderBytes)) fail(StatusCode::io_error, "cannot read '" + path + "'");
  Model m;
  m.config_ = config_from_header(header, path);
  const uint64_t count = weight_count(m.config_);
  const uint64_t want_bytes = kHeaderBytes + 4 * count;
  if (file_bytes != want_bytes)
    corrupt(path, "file has " + std::to_string(file_bytes) + " bytes, but its header (dim=" +
                      std::to_string(m.config_.dim) + " hidden_dim=" + std::to_string(m.config_.hidden_dim) +
                      " n_layers=" + std::to_string(m.config_.n_layers) + " n_heads=" +
                      std::to_string(m.config_.n_heads) + " n_kv_heads=" + std::to_string(m.config_.n_kv_heads) +
                      " vocab_size=" + std::to_string(header[5]) + " seq_len=" + std::to_string(m.config_.seq_len) +
                      ", " + (m.config_.shared_classifier ? "shared" : "separate") + " classifier) needs " +
                      std::to_string(want_bytes));

  m.weights_.resize(size_t(count));
  if (!in.read(reinterpret_cast<char*>(m.weights_.data()), std::streamsize(4 * count)))
    fail(StatusCode::io_error, "cannot read the weights of '" + path + "'");
  for (size_t i = 0; i < m.weights_.size(); ++i)
    if (!std::isfinite(m.weights_[i])) corrupt(path, "weight float #" + std::to_string(i) + " is not finite");

  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) fail(StatusCode::out_of_memory, "cannot allocate an XXH3 state");
  XXH3_128bits_reset(state);
  XXH3_128bits_update(state, header, kHeaderBytes);
  XXH3_128bits_update(state, m.weights_.data(), 4 * count);
  m.fingerprint_hex_ = hex128(XXH3_128bits_digest(state));
  XXH3_freeState(state);

  m.bind_weights();
  m.compute_rope_tables();
  return m;
}

void Model::bind_weights() {
  const Config& c = config_;
  const size_t dim = size_t(c.dim), hidden = size_t(c.hidden_dim), kv_dim = size_t(c.kv_dim());
  const size_t L = size_t(c.n_layers);
  const float* p = weights_.data();
  auto take = [&p](size_t n) {
    const float* t = p;
    p += n;
    return t;
  };
  token_embedding_ = take(size_t(c.vocab_size) * dim);
  // Per-layer tensors are stored tensor-major: all layers of rms_att, then all of wq, ...
  const float* rms_att = take(L * dim);
  const float* wq = take(L * dim * dim);
  const float* wk = take(L * kv_dim * dim);
  const float* wv = take(L * kv_dim * dim);
  const float* wo = take(L * dim * dim);
  const float* rms_ffn = take(L * dim);
  const float* w1 = take(L * hidden * dim);
  const float* w2 = take(L * dim * hidden);
  const float* w3 = take(L * hidden * dim);
  rms_final_ = take(dim);
  const size_t half = size_t(c.head_dim() / 2);
  freq_cis_real_ = take(size_t(c.seq_len) * half);
  freq_cis_imag_ = take(size_t(c.seq_len) * half);
  classifier_ = c.shared_classifier ? token_embedding_ : take(size_t(c.vocab_size) * dim);

  layers_.clear();
  for (size_t l = 0; l < L; ++l)
    layers_.push_back({rms_att + l * dim, wq + l * dim * dim, wk + l * kv_dim * dim, wv + l * kv_dim * dim,
                       wo + l * dim * dim, rms_ffn + l * dim, w1 + l * hidden * dim, w2 + l * dim * hidden,
                       w3 + l * hidden * dim});
}

void Model::compute_rope_tables() {
  const kvbits::ModelShape shape = config_.shape();
  const uint32_t half = shape.n_rotary_blocks();
  rope_cos_.resize(size_t(config_.seq_len) * half);
  rope_sin_.resize(rope_cos_.size());
  for (uint32_t i = 0; i < half; ++i) {
    const double freq = kvbits::block_frequency(shape, i);  // theta^(-2i/head_dim)
    for (int pos = 0; pos < config_.seq_len; ++pos) {
      const double angle = double(pos) * freq;
      rope_cos_[size_t(pos) * half + i] = float(std::cos(angle));
      rope_sin_[size_t(pos) * half + i] = float(std::sin(angle));
    }
  }
}

}  // namespace llama2c
