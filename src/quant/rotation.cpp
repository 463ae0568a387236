// kvbits — portable Haar rotations (see include/kvbits/rotation.hpp for the contract).
//
// Everything here must give the same bits on every IEEE-754 machine, so the code uses only
// integer arithmetic and binary64 + - * / and std::sqrt (all exactly rounded), each
// expression written in the order it is evaluated. No libm transcendental is called; the
// logarithm the polar method needs is portable_log below. Loops that accumulate always run
// in ascending index order; vectorising across independent accumulators does not change
// their results, and the build disables FMA contraction.
#include "kvbits/rotation.hpp"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kvbits/status.hpp"

// x87 extended-precision evaluation would round intermediates differently.
static_assert(FLT_EVAL_METHOD == 0, "kvbits rotations need binary64 evaluation of double expressions");
static_assert(std::numeric_limits<double>::is_iec559, "kvbits rotations need IEEE-754 doubles");

namespace kvbits {
namespace {

constexpr uint32_t kMaxDim = 4096;

// SplitMix64 (Steele, Lea, Flood 2014): the state advances by the odd "golden gamma"
// 0x9E3779B97F4A7C15 = 2^64 / phi, and each state is scrambled by a bijective finaliser
// (xor-shift 30, multiply 0xBF58476D1CE4E5B9, xor-shift 27, multiply 0x94D049BB133111EB,
// xor-shift 31; Stafford's "Mix13" constants).
constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ += kGoldenGamma;
    return mix64(state_);
  }

 private:
  uint64_t state_;
};

// Uniform double in the open interval (-1, 1) from the top 53 bits k of one draw:
// u = (2k + 1 - 2^53) / 2^53. The numerator is an odd integer of magnitude < 2^53, so the
// conversion and the power-of-two scaling are exact; u is never 0 and the 2^53 values are
// symmetric about 0.
double uniform_pm1(SplitMix64& rng) {
  const uint64_t k = rng.next() >> 11;
  const int64_t numerator = int64_t(2 * k + 1) - (int64_t(1) << 53);
  return double(numerator) * 0x1p-53;
}

// Standard normals by the Marsaglia polar method. One accepted pair (u, v) with
// 0 < s = u*u + v*v < 1 yields u*f and v*f, f = sqrt(-2 ln(s) / s); callers take both, in
// that order. u is drawn before v; rejected pairs are discarded whole.
void polar_pair(SplitMix64& rng, double& z0, double& z1) {
  for (;;) {
    const double u = uniform_pm1(rng);
    const double v = uniform_pm1(rng);
    const double s = u * u + v * v;
    if (!(s < 1.0) || s == 0.0) continue;  // s == 0 cannot happen (|u| >= 2^-53) but costs nothing
    const double t = (-2.0 * portable_log(s)) / s;
    const double f = std::sqrt(t);
    z0 = u * f;
    z1 = v * f;
    return;
  }
}

// ln 2 split so that e * kLn2Hi is exact for every binary exponent e (kLn2Hi has 29
// significant bits, |e| < 2^11) and kLn2Hi + kLn2Lo = ln 2 to about 2^-88.
constexpr double kLn2Hi = 0x1.62e42ffp-1;
constexpr double kLn2Lo = -0x1.718432a1b0e26p-35;
constexpr double kSqrt2 = 0x1.6a09e667f3bcdp+0;  // binary64 nearest sqrt(2)

// Taylor coefficients of atanh: 2 atanh(s) = 2s + s * sum_{n>=1} 2/(2n+1) * s^(2n).
// With |s| <= 0.1716 (z = s^2 <= 0.0295) the first omitted term, z^12 * 2/25 relative to 2s,
// is below 1e-19. Each literal is the correctly rounded quotient (constant-folded in IEEE).
constexpr int kLogTerms = 11;
constexpr double kAtanhCoef[kLogTerms] = {
    2.0 / 3.0,  2.0 / 5.0,  2.0 / 7.0,  2.0 / 9.0,  2.0 / 11.0, 2.0 / 13.0,
    2.0 / 15.0, 2.0 / 17.0, 2.0 / 19.0, 2.0 / 21.0, 2.0 / 23.0,
};

uint64_t double_bits(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

double bits_double(uint64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

}  // namespace

double portable_log(double x) {
  if (std::isnan(x)) return x;
  if (x < 0.0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0.0) return -std::numeric_limits<double>::infinity();
  if (std::isinf(x)) return x;

  // x = m * 2^e with m in [1, 2), read from the bits. Subnormals are first scaled by 2^54
  // (exact) so that they have an implicit leading one.
  int e = 0;
  uint64_t b = double_bits(x);
  if ((b >> 52) == 0) {
    b = double_bits(x * 0x1p54);
    e = -54;
  }
  e += int((b >> 52) & 0x7ff) - 1023;
  double m = bits_double((b & 0x000fffffffffffffull) | (uint64_t(1023) << 52));
  // Centre m on 1: m in [sqrt(1/2), sqrt(2)) keeps |s| below 0.1716.
  if (m >= kSqrt2) {
    m = m * 0.5;
    e += 1;
  }

  // log(1 + f) = 2 atanh(s), s = f / (2 + f). Writing 2s = f - s*f and s*f = hfsq - s*hfsq
  // (hfsq = f^2 / 2) gives log(1 + f) = f - (hfsq - s * (hfsq + R)) with R the tail of the
  // series beyond 2s. f is exact (Sterbenz), so the rounding errors only touch the small
  // correction terms; this is what keeps the result within about one ulp.
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double poly = kAtanhCoef[kLogTerms - 1];
  for (int n = kLogTerms - 2; n >= 0; --n) poly = kAtanhCoef[n] + z * poly;
  const double R = z * poly;
  const double hfsq = 0.5 * (f * f);
  const double de = double(e);
  // e * ln2_lo joins the small terms before f; e * ln2_hi (exact) is added last.
  const double small = hfsq - (s * (hfsq + R) + de * kLn2Lo);
  return de * kLn2Hi + (f - small);
}

// Algorithm (fixed; any change alters the golden hashes in tests/quant/test_rotation.cpp):
//  1. G (d x d, fp64, row-major) is filled with normals in row-major order, two per polar
//     draw; for odd d*d the second normal of the last draw is dropped.
//  2. Householder QR, k = 0 .. d-2, on A = G in place. alpha = A[k][k],
//     sigma = sum_{i>k} A[i][k]^2 (ascending i). If sigma == 0 the step is trivial
//     (H_k = I, R_kk = alpha). Otherwise beta = -normx for alpha >= 0 (incl. -0) and +normx
//     for alpha < 0, normx = sqrt(alpha^2 + sigma); v = (alpha - beta, A[k+1..][k]),
//     tau = 2 / (v0^2 + sigma), H_k = I - tau v v^T, R_kk = beta. H_k is applied to the
//     columns j > k as w_j = tau * (v0 A[k][j] + sum_{i>k} v_i A[i][j]) (ascending i,
//     multiply by tau last), then A[i][j] -= v_i w_j. R_{d-1,d-1} = A[d-1][d-1] afterwards.
//     The tail of v stays below the diagonal of A.
//  3. Q = H_0 H_1 ... H_{d-2} by backward accumulation in the same storage: start from the
//     identity and for k = d-2 .. 0 do Q <- H_k Q, which only touches rows and columns >= k.
//     Row k of the current Q is zero beyond column k, so for j > k
//     w_j = tau * sum_{i>k} v_i Q[i][j]; column k starts as e_k, so w_k = tau * v0. Then
//     Q[i][j] -= v_i w_j for i, j >= k. Trivial steps leave e_k in column k.
//  4. Column j is multiplied by sign(R_jj) (0 -> +1). det(Q) = (-1)^(number of non-trivial
//     reflections) since each is a reflection (det -1), and every column flip multiplies
//     it by -1; if the total count is odd column 0 is negated as well, so det = +1.
//  5. Each entry is rounded to fp32 (round-to-nearest-even), row-major.
std::vector<float> haar_rotation(uint32_t dim, uint64_t seed) {
  if (dim == 0 || dim > kMaxDim) {
    fail(StatusCode::invalid_argument,
         "haar_rotation: dim " + std::to_string(dim) + " outside [1, " + std::to_string(kMaxDim) + "]");
  }
  const size_t d = dim;
  std::vector<double> A(d * d);

  SplitMix64 rng(seed);
  for (size_t idx = 0; idx < d * d; idx += 2) {
    double z0 = 0.0;
    double z1 = 0.0;
    polar_pair(rng, z0, z1);
    A[idx] = z0;
    if (idx + 1 < d * d) A[idx + 1] = z1;
  }

  std::vector<double> v0(d, 0.0);    // head of each Householder vector
  std::vector<double> tau(d, 0.0);   // 0 marks a trivial step
  std::vector<double> rdiag(d, 0.0);
  std::vector<double> w(d, 0.0);
  unsigned parity = 0;  // number of reflections plus column flips, mod 2

  // Step 2: QR.
  for (size_t k = 0; k + 1 < d; ++k) {
    const double alpha = A[k * d + k];
    double sigma = 0.0;
    for (size_t i = k + 1; i < d; ++i) sigma = sigma + A[i * d + k] * A[i * d + k];
    if (sigma == 0.0) {
      rdiag[k] = alpha;
      continue;
    }
    const double normx = std::sqrt(alpha * alpha + sigma);
    const double beta = alpha >= 0.0 ? -normx : normx;  // opposite sign of alpha: no cancellation in v0
    const double vk = alpha - beta;
    const double t = 2.0 / (vk * vk + sigma);
    v0[k] = vk;
    tau[k] = t;
    rdiag[k] = beta;
    parity ^= 1u;

    double* rowk = &A[k * d];
    for (size_t j = k + 1; j < d; ++j) w[j] = vk * rowk[j];
    for (size_t i = k + 1; i < d; ++i) {
      const double* row = &A[i * d];
      const double vi = row[k];
      for (size_t j = k + 1; j < d; ++j) w[j] = w[j] + vi * row[j];
    }
    for (size_t j = k + 1; j < d; ++j) w[j] = t * w[j];
    for (size_t j = k + 1; j < d; ++j) rowk[j] = rowk[j] - vk * w[j];
    for (size_t i = k + 1; i < d; ++i) {
      double* row = &A[i * d];
      const double vi = row[k];
      for (size_t j = k + 1; j < d; ++j) row[j] = row[j] - vi * w[j];
    }
    rowk[k] = beta;
  }
  rdiag[d - 1] = A[(d - 1) * d + (d - 1)];

  // Step 3: form Q in place. The trailing 1x1 block starts as the identity.
  A[(d - 1) * d + (d - 1)] = 1.0;
  for (size_t kk = d - 1; kk-- > 0;) {
    const size_t k = kk;
    double* rowk = &A[k * d];
    for (size_t j = k + 1; j < d; ++j) rowk[j] = 0.0;  // R's row k is no longer needed
    const double t = tau[k];
    if (t == 0.0) {
      rowk[k] = 1.0;
      for (size_t i = k + 1; i < d; ++i) A[i * d + k] = 0.0;
      continue;
    }
    const double vk = v0[k];
    for (size_t j = k + 1; j < d; ++j) w[j] = 0.0;
    for (size_t i = k + 1; i < d; ++i) {
      const double* row = &A[i * d];
      const double vi = row[k];
      for (size_t j = k + 1; j < d; ++j) w[j] = w[j] + vi * row[j];
    }
    for (size_t j = k + 1; j < d; ++j) w[j] = t * w[j];
    const double wk = t * vk;
    // Row k: Q[k][j] was 0 (j > k) and 1 (j == k).
    for (size_t j = k + 1; j < d; ++j) rowk[j] = 0.0 - vk * w[j];
    rowk[k] = 1.0 - vk * wk;
    for (size_t i = k + 1; i < d; ++i) {
      double* row = &A[i * d];
      const double vi = row[k];  // read v_i before column k is overwritten
      for (size_t j = k + 1; j < d; ++j) row[j] = row[j] - vi * w[j];
      row[k] = 0.0 - vi * wk;
    }
  }

  // Step 4: signs.
  std::vector<bool> negate(d, false);
  for (size_t j = 0; j < d; ++j) {
    if (rdiag[j] < 0.0) {
      negate[j] = true;
      parity ^= 1u;
    }
  }
  if (parity != 0) negate[0] = !negate[0];

  // Step 5: fp32, row-major.
  std::vector<float> out(d * d);
  for (size_t i = 0; i < d; ++i) {
    for (size_t j = 0; j < d; ++j) {
      const double q = A[i * d + j];
      out[i * d + j] = static_cast<float>(negate[j] ? -q : q);
    }
  }
  return out;
}

// seed = step(step(mix64(base ^ kDomain), layer:kv_head), role:group) with
// step(h, x) = mix64((h + golden gamma) ^ x) and a:b = (uint64(a) << 32) | b. mix64 is a
// bijection, so for a fixed prefix each step maps distinct fields to distinct seeds; across
// different prefixes a collision needs a 64-bit coincidence. The domain tag keeps these
// seeds apart from SplitMix64 streams seeded with base_seed directly.
uint64_t derive_rotation_seed(uint64_t base_seed, uint32_t layer, uint32_t kv_head, uint32_t role,
                              uint32_t group) {
  constexpr uint64_t kDomain = 0x6B76626974735231ull;  // "kvbitsR1"
  uint64_t h = mix64(base_seed ^ kDomain);
  h = mix64((h + kGoldenGamma) ^ ((uint64_t(layer) << 32) | kv_head));
  h = mix64((h + kGoldenGamma) ^ ((uint64_t(role) << 32) | group));
  return h;
}

}  // namespace kvbits
