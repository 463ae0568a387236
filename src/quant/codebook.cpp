// Gaussian scalar codebooks: the authors' recipe and converged Lloyd-Max, plus their MSE.
#include "kvbits/codebook.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kPi = 3.14159265358979323846;
constexpr double kInf = HUGE_VAL;

double pdf(double x) { return std::isinf(x) ? 0.0 : kInvSqrt2Pi * std::exp(-0.5 * x * x); }

// Phi(x) through erfc, so the lower tail keeps full relative precision.
double cdf(double x) { return 0.5 * std::erfc(-x * kInvSqrt2); }

// Mass of the narrow cell [m - w, m + w] from the Taylor series of phi around m:
// phi(m + t) = phi(m) * sum_n (-1)^n He_n(m) t^n / n!  (He = probabilists' Hermite), so only
// even n survive the symmetric integral. No difference of nearly equal CDF values is formed.
double narrow_cell_mass(double m, double w) {
  double he = 1.0, he_next = m;  // He_n(m), He_{n+1}(m)
  double coef = w;               // w^(n+1) / n!
  double sum = 0.0;
  int small_terms = 0;
  for (int n = 0; n < 200 && small_terms < 2; n += 2) {
    const double term = 2.0 * he * coef / double(n + 1);
    sum += term;
    // Two tiny terms in a row: a single one may just sit near a root of He_n.
    small_terms = std::fabs(term) <= 1e-18 * std::fabs(sum) ? small_terms + 1 : 0;
    const double he2 = m * he_next - double(n + 1) * he;
    const double he3 = m * he2 - double(n + 2) * he_next;
    he = he2;
    he_next = he3;
    coef *= w * w / (double(n + 1) * double(n + 2));
  }
  return pdf(m) * sum;
}

// Probability mass of [a, b], a < b. Narrow cells use the series above; wide cells in the upper
// half are measured from the upper tail so that tail cells keep their relative precision.
double cell_mass(double a, double b) {
  if (std::isfinite(a) && std::isfinite(b) && b - a <= 0.5) return narrow_cell_mass(0.5 * (a + b), 0.5 * (b - a));
  if (a >= 0.0) return 0.5 * (std::erfc(a * kInvSqrt2) - std::erfc(b * kInvSqrt2));
  if (b <= 0.0) return cdf(b) - cdf(a);
  return 1.0 - cdf(a) - 0.5 * std::erfc(b * kInvSqrt2);
}

// phi(a) - phi(b) without cancellation for narrow cells: phi(a) * -expm1(-(b-a)(b+a)/2).
double pdf_difference(double a, double b) {
  if (std::isinf(a) || std::isinf(b)) return pdf(a) - pdf(b);
  if (std::fabs(a) <= std::fabs(b)) return -pdf(a) * std::expm1(-0.5 * (b - a) * (b + a));
  return pdf(b) * std::expm1(-0.5 * (a - b) * (a + b));
}

// E[X | a < X < b] for X ~ N(0, 1).
double conditional_mean(double a, double b) { return pdf_difference(a, b) / cell_mass(a, b); }

// Phi^-1(p) for 0 < p < 1: safeguarded Newton on Phi(x) = p inside a shrinking bracket.
double inverse_normal_cdf(double p) {
  if (p > 0.5) return -inverse_normal_cdf(1.0 - p);
  double lo = -40.0, hi = 0.0;
  double x = -std::sqrt(-2.0 * std::log(2.0 * p));  // rough tail-shaped start, exact at p = 1/2
  for (int it = 0; it < 200; ++it) {
    const double f = cdf(x) - p;
    if (f == 0.0) return x;
    (f < 0.0 ? lo : hi) = x;
    double next = x - f / pdf(x);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (std::fabs(next - x) <= 1e-16 * std::max(1.0, std::fabs(x))) return next;
    x = next;
  }
  return x;
}

// Centroids = conditional means of the n equal-probability quantile cells.
std::vector<double> quantile_init(size_t n) {
  std::vector<double> edges(n + 1);
  edges[0] = -kInf;
  edges[n] = kInf;
  for (size_t k = 1; k < n; ++k) edges[k] = inverse_normal_cdf(double(k) / double(n));
  std::vector<double> c(n);
  for (size_t k = 0; k < n; ++k) c[k] = conditional_mean(edges[k], edges[k + 1]);
  return c;
}

double lower_edge(const std::vector<double>& c, size_t k) { return k == 0 ? -kInf : 0.5 * (c[k - 1] + c[k]); }
double upper_edge(const std::vector<double>& c, size_t k) {
  return k + 1 == c.size() ? kInf : 0.5 * (c[k] + c[k + 1]);
}

// One Lloyd step: boundaries = midpoints, centroids = conditional means.
std::vector<double> lloyd_step(const std::vector<double>& c) {
  std::vector<double> out(c.size());
  for (size_t k = 0; k < c.size(); ++k) out[k] = conditional_mean(lower_edge(c, k), upper_edge(c, k));
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (size_t k = 0; k < a.size(); ++k) m = std::max(m, std::fabs(a[k] - b[k]));
  return m;
}

bool strictly_ascending(const std::vector<double>& c) {
  for (size_t k = 1; k < c.size(); ++k)
    if (!(c[k - 1] < c[k])) return false;
  return true;
}

// Newton step for the Lloyd fixed point T(c) = c. T_k depends on c_{k-1}, c_k, c_{k+1} only,
// so the Jacobian is tridiagonal; with dmu/da = phi(a)(mu-a)/M and dmu/db = phi(b)(b-mu)/M.
// Returns false if the system is singular.
bool newton_step(const std::vector<double>& c, const std::vector<double>& t, std::vector<double>& next) {
  const size_t n = c.size();
  std::vector<double> sub(n, 0.0), diag(n), sup(n, 0.0), rhs(n);
  for (size_t k = 0; k < n; ++k) {
    const double a = lower_edge(c, k), b = upper_edge(c, k);
    const double m = cell_mass(a, b);
    const double da = std::isinf(a) ? 0.0 : pdf(a) * (t[k] - a) / m;
    const double db = std::isinf(b) ? 0.0 : pdf(b) * (b - t[k]) / m;
    sub[k] = 0.5 * da;
    sup[k] = 0.5 * db;
    diag[k] = 0.5 * (da + db) - 1.0;
    rhs[k] = c[k] - t[k];  // J_F * delta = -F with F = T(c) - c
  }
  // Thomas algorithm.
  for (size_t k = 1; k < n; ++k) {
    if (diag[k - 1] == 0.0) return false;
    const double w = sub[k] / diag[k - 1];
    diag[k] -= w * sup[k - 1];
    rhs[k] -= w * rhs[k - 1];
  }
  if (diag[n - 1] == 0.0) return false;
  next.assign(n, 0.0);
  double delta = rhs[n - 1] / diag[n - 1];
  next[n - 1] = c[n - 1] + delta;
  for (size_t k = n - 1; k-- > 0;) {
    delta = (rhs[k] - sup[k] * delta) / diag[k];
    next[k] = c[k] + delta;
  }
  return std::isfinite(next[0]) && std::isfinite(next[n - 1]);
}

// Iterates Lloyd to its fixed point (largest centroid change of one Lloyd step < 1e-14).
// Plain Lloyd converges very slowly for many levels, so each round also tries a Newton step
// on T(c) = c and keeps it when it leaves the centroids ordered and shrinks the Lloyd change.
std::vector<double> converge_lloyd(std::vector<double> c) {
  constexpr double kTolerance = 1e-14;
  constexpr int kMaxRounds = 200000;
  std::vector<double> t = lloyd_step(c), trial;
  double change = max_abs_diff(t, c);
  for (int round = 0; round < kMaxRounds && change >= kTolerance; ++round) {
    if (newton_step(c, t, trial) && strictly_ascending(trial)) {
      std::vector<double> trial_t = lloyd_step(trial);
      const double trial_change = max_abs_diff(trial_t, trial);
      if (trial_change < change) {
        c.swap(trial);
        t.swap(trial_t);
        change = trial_change;
        continue;
      }
    }
    c.swap(t);
    t = lloyd_step(c);
    change = max_abs_diff(t, c);
  }
  return t;
}

std::vector<double> reference_codebook(int bits) {
  if (bits == 1) {
    const double c = std::sqrt(2.0 / kPi);
    return {-c, c};
  }
  if (bits == 2) return {-1.51, -0.453, 0.453, 1.51};
  std::vector<double> c = quantile_init(size_t(1) << bits);
  for (int it = 0; it < 100; ++it) c = lloyd_step(c);
  std::sort(c.begin(), c.end());
  return c;
}

// Averages c_k with -c_{n-1-k} so the codebook is exactly symmetric about 0.
void symmetrize(std::vector<double>& c) {
  const size_t n = c.size();
  for (size_t k = 0; k < n / 2; ++k) {
    const double m = 0.5 * (c[n - 1 - k] - c[k]);
    c[k] = -m;
    c[n - 1 - k] = m;
  }
}

}  // namespace

const char* codebook_recipe_name(CodebookRecipe r) noexcept {
  switch (r) {
    case CodebookRecipe::lloyd_max: return "lloyd-max";
    case CodebookRecipe::reference: return "reference";
  }
  return "unknown";
}

std::vector<double> unit_gaussian_codebook(int bits, CodebookRecipe recipe) {
  if (bits < kMinCodeBits || bits > kMaxCodeBits)
    fail(StatusCode::invalid_argument,
         "codebook: bit width " + std::to_string(bits) + " outside [1, 8]");
  std::vector<double> c;
  switch (recipe) {
    case CodebookRecipe::reference: c = reference_codebook(bits); break;
    case CodebookRecipe::lloyd_max: c = converge_lloyd(quantile_init(size_t(1) << bits)); break;
    default:
      fail(StatusCode::invalid_argument, "codebook: unknown recipe " + std::to_string(int(recipe)));
  }
  symmetrize(c);
  return c;
}

double gaussian_codebook_mse(const std::vector<double>& unit_centroids) {
  const std::vector<double>& c = unit_centroids;
  if (c.empty()) fail(StatusCode::invalid_argument, "codebook mse: empty codebook");
  for (double v : c)
    if (!std::isfinite(v)) fail(StatusCode::invalid_argument, "codebook mse: non-finite centroid");
  if (!strictly_ascending(c))
    fail(StatusCode::invalid_argument, "codebook mse: centroids must be strictly ascending");
  // Per cell [a, b] around c: integral of (x-c)^2 phi(x) dx
  //   = M (1 + c^2) + phi(a)(a - 2c) - phi(b)(b - 2c),  M = Phi(b) - Phi(a).
  double total = 0.0;
  for (size_t k = 0; k < c.size(); ++k) {
    const double a = lower_edge(c, k), b = upper_edge(c, k);
    const double pa = std::isinf(a) ? 0.0 : pdf(a) * (a - 2.0 * c[k]);
    const double pb = std::isinf(b) ? 0.0 : pdf(b) * (b - 2.0 * c[k]);
    total += cell_mass(a, b) * (1.0 + c[k] * c[k]) + pa - pb;
  }
  return total;
}

uint32_t GroupCodebook::code_of(double y) const {
  // First boundary that is not below y == number of boundaries strictly below y.
  const auto it = std::lower_bound(boundaries.begin(), boundaries.end(), y,
                                   [](float b, double v) { return double(b) < v; });
  return uint32_t(it - boundaries.begin());
}

GroupCodebook make_group_codebook(const std::vector<double>& unit_centroids, int bits, uint32_t dim) {
  const std::string where = "group codebook (bits " + std::to_string(bits) + ", dim " + std::to_string(dim) + "): ";
  if (bits < kMinCodeBits || bits > kMaxCodeBits)
    fail(StatusCode::invalid_argument, where + "bit width outside [1, 8]");
  if (dim == 0) fail(StatusCode::invalid_argument, where + "dimension must be positive");
  const size_t n = size_t(1) << bits;
  if (unit_centroids.size() != n)
    fail(StatusCode::invalid_argument, where + "expected " + std::to_string(n) + " unit centroids, got " +
                                           std::to_string(unit_centroids.size()));
  GroupCodebook g;
  g.bits = bits;
  g.dim = dim;
  g.centroids.resize(n);
  const double sqrt_d = std::sqrt(double(dim));
  for (size_t k = 0; k < n; ++k) {
    if (!std::isfinite(unit_centroids[k]))
      fail(StatusCode::invalid_argument, where + "unit centroid " + std::to_string(k) + " is not finite");
    g.centroids[k] = float(unit_centroids[k] / sqrt_d);
    // Checked on the fp32 table: equal fp32 centroids would make codes ambiguous.
    if (k > 0 && !(g.centroids[k - 1] < g.centroids[k]))
      fail(StatusCode::invalid_argument, where + "centroids are not strictly ascending at index " +
                                             std::to_string(k) + " (after scaling to fp32)");
  }
  g.boundaries.resize(n - 1);
  for (size_t k = 0; k + 1 < n; ++k) g.boundaries[k] = float((double(g.centroids[k]) + g.centroids[k + 1]) / 2.0);
  return g;
}

}  // namespace kvbits
