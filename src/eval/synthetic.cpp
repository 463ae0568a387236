// Synthetic LLM-like q/k activations for the quality lab. SYNTHETIC: a seeded generator that
// mimics the statistics real attention heads show, not a model; it stands in for the
// head_dim 64/128 models the bundled 260K-parameter model cannot represent.
//
// For each (layer, KV head), with n = D/2 RoPE blocks, block 0 the highest frequency:
//  * Energy trend: log10 of the mean key energy of block i is slope_k * i/(n-1) + 0.3 N(0,1),
//    slope_k ~ U(2, 3) decades (queries: slope_q ~ U(1, 2)): low frequencies carry more energy,
//    and the span covers orders of magnitude. Keys are scaled to a mean per-dim variance of 1;
//    queries so that a logit q.k/sqrt(D) of independent rows has a standard deviation of 2.
//  * Structure: a fraction rho_i = 0.5 i/(n-1) of each block's energy is a fixed mean
//    direction (strongest in low frequencies, which barely rotate), the rest is Gaussian.
//  * Outlier channels: max(2, D/32) key channels carry a constant offset of +-8 (8x the typical
//    per-dim std), as the per-channel key outliers KIVI was designed around.
//  * Sink: position 0 of every sequence adds a massive key (norm 10 sqrt(D)) in the two
//    lowest-frequency blocks; every query has a mean component along it giving a logit of
//    about +8, so position 0 draws most of the attention, as in real models.
//  * GQA: the query heads of a group share the KV head's energy profile (times a per-head
//    log-normal jitter, sigma 0.35), a common latent (correlation 0.7) and, roughly, its mean
//    directions.
// Model parameters come from `seed`; token draws from (seed, stream). Normals use the polar
// method on SplitMix64 with the SDK's portable logarithm; the same options give the same bytes.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * portable_log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// An independent stream per purpose: the SplitMix64 output of a mixed key.
uint64_t stream_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  Rng r(seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ (c * 0x165667B19E3779F9ull));
  return r.next();
}

using Vec2 = std::array<double, 2>;

Vec2 unit2(Rng& r) {
  const double a = r.normal(), b = r.normal(), n = std::sqrt(a * a + b * b);
  return n > 0 ? Vec2{a / n, b / n} : Vec2{1.0, 0.0};
}

// Everything fixed about one (layer, KV head).
struct HeadModel {
  std::vector<double> k_std, q_std;  // per block: std per dim of the Gaussian part
  std::vector<Vec2> k_mean;          // per block
  std::vector<std::vector<double>> q_std_head;  // [g][block]
  std::vector<std::vector<Vec2>> q_mean_head;   // [g][block]
  std::vector<std::pair<uint32_t, double>> outliers;  // (dim, offset)
  std::vector<double> sink;  // [D] added to the key at position 0
};

HeadModel make_head(const SyntheticOptions& o, const ModelShape& s, uint32_t layer, uint32_t kv_head) {
  Rng r(stream_seed(o.seed, 1, layer, kv_head));
  const uint32_t n = s.n_blocks(), D = s.head_dim, G = s.gqa_group();
  const double slope_k = 2.0 + r.uniform(), slope_q = 1.0 + r.uniform();
  std::vector<double> ek(n), eq(n), rho(n);
  for (uint32_t i = 0; i < n; ++i) {
    const double x = n > 1 ? double(i) / double(n - 1) : 0.0;
    ek[i] = std::pow(10.0, slope_k * x + 0.3 * r.normal());
    eq[i] = std::pow(10.0, slope_q * x + 0.3 * r.normal());
    rho[i] = 0.5 * x;
  }
  double sum_k = 0.0;
  for (double e : ek) sum_k += e;
  for (double& e : ek) e *= double(D) / sum_k;
  double cross = 0.0;
  for (uint32_t i = 0; i < n; ++i) cross += eq[i] * ek[i] / 2.0;
  const double q_scale = 2.0 * 2.0 * double(D) / cross;
  for (double& e : eq) e *= q_scale;

  HeadModel m;
  for (uint32_t i = 0; i < n; ++i) {
    m.k_std.push_back(std::sqrt((1.0 - rho[i]) * ek[i] / 2.0));
    const Vec2 u = unit2(r);
    const double a = std::sqrt(rho[i] * ek[i]);
    m.k_mean.push_back({a * u[0], a * u[1]});
  }
  // Query heads of the group: the KV head's profile and mean directions, jittered per head.
  std::vector<Vec2> q_dir(n);
  for (uint32_t i = 0; i < n; ++i) q_dir[i] = unit2(r);
  m.q_std_head.assign(G, std::vector<double>(n));
  m.q_mean_head.assign(G, std::vector<Vec2>(n));
  for (uint32_t g = 0; g < G; ++g)
    for (uint32_t i = 0; i < n; ++i) {
      const double e = eq[i] * std::exp(0.35 * r.normal());
      m.q_std_head[g][i] = std::sqrt((1.0 - rho[i]) * e / 2.0);
      Vec2 d = {q_dir[i][0] + 0.5 * r.normal(), q_dir[i][1] + 0.5 * r.normal()};
      const double dn = std::sqrt(d[0] * d[0] + d[1] * d[1]) + 1e-12, a = std::sqrt(rho[i] * e);
      m.q_mean_head[g][i] = {a * d[0] / dn, a * d[1] / dn};
    }
  // Outlier key channels at distinct dims.
  const uint32_t n_out = std::min(D, std::max(2u, D / 32));
  while (m.outliers.size() < n_out) {
    const uint32_t dim = uint32_t(r.next() % D);
    bool taken = false;
    for (const auto& p : m.outliers) taken = taken || p.first == dim;
    if (!taken) m.outliers.push_back({dim, r.uniform() < 0.5 ? -8.0 : 8.0});
  }
  // Sink direction in the two lowest-frequency blocks (one block when n == 1).
  m.sink.assign(D, 0.0);
  std::vector<uint32_t> sink_dims;
  for (uint32_t i = n - std::min(n, 2u); i < n; ++i)
    for (uint32_t d : block_dims(s, i)) sink_dims.push_back(d);
  std::vector<double> dir(sink_dims.size());
  double dn = 0.0;
  for (double& x : dir) x = r.normal(), dn += x * x;
  dn = std::sqrt(dn);
  const double sink_norm = 10.0 * std::sqrt(double(D));
  for (size_t j = 0; j < sink_dims.size(); ++j) m.sink[sink_dims[j]] = sink_norm * dir[j] / dn;
  // Queries lean towards the sink: q.sink / sqrt(D) is about +8 on average.
  const double lean = 8.0 * std::sqrt(double(D)) / sink_norm;
  for (uint32_t g = 0; g < G; ++g)
    for (uint32_t i = n - std::min(n, 2u); i < n; ++i) {
      const auto d = block_dims(s, i);
      m.q_mean_head[g][i][0] += lean * m.sink[d[0]] / sink_norm;
      m.q_mean_head[g][i][1] += lean * m.sink[d[1]] / sink_norm;
    }
  return m;
}

}  // namespace

Activations synthetic_activations(const SyntheticOptions& o) {
  if (o.sequences == 0 || o.seq_tokens == 0)
    fail(StatusCode::invalid_argument, "synthetic: sequences and seq_tokens must be >= 1");
  Activations a;
  ModelShape& s = a.shape;
  s.n_layers = o.n_layers;
  s.n_q_heads = o.n_q_heads;
  s.n_kv_heads = o.n_kv_heads;
  s.head_dim = o.head_dim;
  s.rotary_dim = o.head_dim;
  s.rope_layout = o.layout;
  s.rope_theta = o.rope_theta;
  s.validate();
  if (s.n_kv_heads == 0 || s.n_q_heads % s.n_kv_heads != 0)
    fail(StatusCode::invalid_argument, "synthetic: n_q_heads must be a multiple of n_kv_heads");
  a.seq_tokens = o.seq_tokens;
  a.tokens = uint64_t(o.sequences) * o.seq_tokens;
  a.source = "synthetic LLM-like, head_dim " + std::to_string(o.head_dim) + ", " + rope_layout_name(o.layout) +
             ", seed " + std::to_string(o.seed) + ", stream " + std::to_string(o.stream);
  const uint32_t D = s.head_dim, G = s.gqa_group(), n = s.n_blocks();
  const size_t T = size_t(a.tokens);
  a.q.assign(s.n_layers, std::vector<float>(T * s.n_q_heads * D));
  a.k.assign(s.n_layers, std::vector<float>(T * s.n_kv_heads * D));
  std::vector<double> shared(D), x(D);
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
      const HeadModel m = make_head(o, s, l, h);
      Rng r(stream_seed(o.seed, 2 + o.stream, l, h));
      for (size_t t = 0; t < T; ++t) {
        for (uint32_t i = 0; i < n; ++i) {
          const auto d = block_dims(s, i);
          for (int c = 0; c < 2; ++c) x[d[size_t(c)]] = m.k_mean[i][size_t(c)] + m.k_std[i] * r.normal();
        }
        for (const auto& [dim, offset] : m.outliers) x[dim] += offset;
        if (t % o.seq_tokens == 0)
          for (uint32_t d = 0; d < D; ++d) x[d] += m.sink[d];
        float* k = &a.k[l][(t * s.n_kv_heads + h) * D];
        for (uint32_t d = 0; d < D; ++d) k[d] = float(x[d]);

        for (uint32_t d = 0; d < D; ++d) shared[d] = r.normal();
        for (uint32_t g = 0; g < G; ++g) {
          float* q = &a.q[l][(t * s.n_q_heads + h * G + g) * D];
          for (uint32_t i = 0; i < n; ++i) {
            const auto d = block_dims(s, i);
            for (int c = 0; c < 2; ++c) {
              const uint32_t dd = d[size_t(c)];
              const double z = 0.7 * shared[dd] + std::sqrt(1.0 - 0.49) * r.normal();
              q[dd] = float(m.q_mean_head[g][i][size_t(c)] + m.q_std_head[g][i] * z);
            }
          }
        }
      }
    }
  a.validate();
  return a;
}

}  // namespace kvbits::eval
