// kvbits — Plan::validate: every invariant a plan must hold, in memory or on disk
// (docs/plan-format.md §3). Messages name the layer, head and field.
#include <cmath>
#include <string>

#include "kvbits/plan.hpp"
#include "kvbits/status.hpp"
#include "plan/plan_limits.hpp"

namespace kvbits {

namespace {

[[noreturn]] void bad(const std::string& message) { fail(StatusCode::corrupt_data, "plan: " + message); }

// Well-formed UTF-8 without NUL: no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_utf8_without_nul(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (n - i < len) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

void check_text(const std::string& value, const char* field, size_t max_bytes) {
  if (value.size() > max_bytes)
    bad(std::string("producer.") + field + " is " + std::to_string(value.size()) + " bytes, the limit is " +
        std::to_string(max_bytes));
  if (!is_utf8_without_nul(value)) bad(std::string("producer.") + field + " is not UTF-8 text without NUL");
}

void check_rotation(const RotationSpec& r, uint32_t expected_dim, const std::string& what) {
  if (r.kind != RotationSpec::Kind::generated && r.kind != RotationSpec::Kind::explicit_matrix)
    bad(what + ".kind is " + std::to_string(int(r.kind)) + ", expected 0 (generated) or 1 (explicit)");
  if (r.dim != expected_dim)
    bad(what + ".dim is " + std::to_string(r.dim) + ", expected " + std::to_string(expected_dim));
  if (r.kind == RotationSpec::Kind::generated) {
    if (!r.matrix.empty())
      bad(what + " is generated but carries " + std::to_string(r.matrix.size()) + " matrix values");
    return;
  }
  const size_t d = r.dim;
  if (r.matrix.size() != d * d)
    bad(what + ".matrix has " + std::to_string(r.matrix.size()) + " values, expected " + std::to_string(d * d));
  for (size_t row = 0; row < d; ++row) {
    double norm2 = 0.0;
    for (size_t col = 0; col < d; ++col) {
      const float v = r.matrix[row * d + col];
      if (!std::isfinite(v))
        bad(what + ".matrix[" + std::to_string(row) + "][" + std::to_string(col) + "] is not finite");
      norm2 += double(v) * double(v);
    }
    if (!(std::fabs(norm2 - 1.0) <= plan_limits::kRowNormTolerance))
      bad(what + ".matrix row " + std::to_string(row) + " has norm^2 " + std::to_string(norm2) + ", expected 1");
  }
}

void check_energies(const std::vector<double>& e, uint32_t n_blocks, const std::string& what) {
  if (e.size() != n_blocks)
    bad(what + " has " + std::to_string(e.size()) + " values, expected " + std::to_string(n_blocks));
  for (size_t i = 0; i < e.size(); ++i)
    if (!std::isfinite(e[i]) || e[i] < 0.0) bad(what + "[" + std::to_string(i) + "] is not a finite value >= 0");
}

void check_codebooks(const std::vector<std::vector<double>>& books) {
  if (books.size() != size_t(kMaxCodeBits) + 1)
    bad("unit_codebooks has " + std::to_string(books.size()) + " entries, expected 9 (index = bits)");
  if (!books[0].empty()) bad("unit_codebooks[0] must be empty");
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b) {
    const std::vector<double>& c = books[size_t(b)];
    if (c.empty()) continue;
    const std::string what = "unit_codebooks[" + std::to_string(b) + "]";
    if (c.size() != (size_t(1) << b))
      bad(what + " has " + std::to_string(c.size()) + " centroids, expected " + std::to_string(1u << b));
    for (size_t k = 0; k < c.size(); ++k) {
      if (!std::isfinite(c[k])) bad(what + "[" + std::to_string(k) + "] is not finite");
      if (k > 0 && !(c[k - 1] < c[k])) bad(what + " is not strictly increasing at index " + std::to_string(k));
    }
  }
}

void check_head(const Plan& plan, const HeadPlan& hp, const std::string& at) {
  const ModelShape& shape = plan.shape;
  const uint32_t n_blocks = shape.n_blocks();
  if (hp.block_bits.size() != n_blocks)
    bad(at + "block_bits has " + std::to_string(hp.block_bits.size()) + " entries, expected " +
        std::to_string(n_blocks));
  for (size_t i = 0; i < n_blocks; ++i)
    if (hp.block_bits[i] < plan.k_min_bits || hp.block_bits[i] > plan.k_max_bits)
      bad(at + "block_bits[" + std::to_string(i) + "] is " + std::to_string(int(hp.block_bits[i])) +
          ", outside [k_min_bits, k_max_bits] = [" + std::to_string(int(plan.k_min_bits)) + ", " +
          std::to_string(int(plan.k_max_bits)) + "]");
  HeadLayout layout;
  try {
    layout = make_head_layout(shape, hp.block_bits, &hp.block_order);
  } catch (const Error& e) {
    bad(at + "block_order: " + e.what());
  }
  if (plan.method == Method::uniform_tq_mse && layout.groups.size() != 1)
    bad(at + "method uniform-tq-mse needs one width per head, found " + std::to_string(layout.groups.size()));
  check_energies(hp.q_energy, n_blocks, at + "q_energy");
  check_energies(hp.k_energy, n_blocks, at + "k_energy");
  if (hp.k_rotations.size() != layout.groups.size())
    bad(at + "k_rotations has " + std::to_string(hp.k_rotations.size()) + " entries, expected one per group (" +
        std::to_string(layout.groups.size()) + ")");
  for (size_t g = 0; g < layout.groups.size(); ++g) {
    const KeyGroup& group = layout.groups[g];
    check_rotation(hp.k_rotations[g], group.dims,
                   at + "k_rotations[" + std::to_string(g) + "] (group of width " + std::to_string(int(group.bits)) + ")");
    if (plan.unit_codebooks[group.bits].empty())
      bad(at + "uses K width " + std::to_string(int(group.bits)) + " but unit_codebooks has no entry for it");
  }
  if (hp.v_bits < kMinCodeBits || hp.v_bits > kMaxCodeBits)
    bad(at + "v_bits is " + std::to_string(int(hp.v_bits)) + ", outside [1, 8]");
  check_rotation(hp.v_rotation, shape.head_dim, at + "v_rotation");
  if (plan.unit_codebooks[hp.v_bits].empty())
    bad(at + "uses V width " + std::to_string(int(hp.v_bits)) + " but unit_codebooks has no entry for it");
}

}  // namespace

void Plan::validate() const {
  try {
    shape.validate();
  } catch (const Error& e) {
    bad(e.what());
  }
  if (method != Method::block_gtq && method != Method::uniform_tq_mse)
    bad("method is " + std::to_string(int(method)) + ", expected 0 (block-gtq) or 1 (uniform-tq-mse)");
  if (score != ScoreKind::energy && score != ScoreKind::product)
    bad("score is " + std::to_string(int(score)) + ", expected 0 (energy) or 1 (product)");
  if (recipe != CodebookRecipe::lloyd_max && recipe != CodebookRecipe::reference)
    bad("recipe is " + std::to_string(int(recipe)) + ", expected 0 (lloyd_max) or 1 (reference)");
  if (k_min_bits < kMinCodeBits || k_max_bits > kMaxCodeBits || k_min_bits > k_max_bits)
    bad("k_min_bits/k_max_bits are " + std::to_string(int(k_min_bits)) + "/" + std::to_string(int(k_max_bits)) +
        ", expected 1 <= min <= max <= 8");
  if (!std::isfinite(k_avg_bits) || k_avg_bits < k_min_bits || k_avg_bits > k_max_bits)
    bad("k_avg_bits is " + std::to_string(k_avg_bits) + ", outside [k_min_bits, k_max_bits]");
  if (sink_tokens > plan_limits::kMaxPolicyTokens)
    bad("sink_tokens is " + std::to_string(sink_tokens) + ", the limit is 2^24");
  if (window_tokens > plan_limits::kMaxPolicyTokens)
    bad("window_tokens is " + std::to_string(window_tokens) + ", the limit is 2^24");

  const size_t meaningful = fingerprint.kind == Fingerprint::Kind::none       ? 0
                            : fingerprint.kind == Fingerprint::Kind::xxh3_128 ? 16
                            : fingerprint.kind == Fingerprint::Kind::user     ? fingerprint.bytes.size()
                                                                              : ~size_t(0);
  if (meaningful == ~size_t(0))
    bad("fingerprint.kind is " + std::to_string(int(fingerprint.kind)) + ", expected 0, 1 or 2");
  for (size_t i = meaningful; i < fingerprint.bytes.size(); ++i)
    if (fingerprint.bytes[i] != 0) bad("fingerprint.bytes[" + std::to_string(i) + "] must be 0 for this kind");

  check_text(producer.tool, "tool", plan_limits::kMaxToolBytes);
  check_text(producer.corpus, "corpus", plan_limits::kMaxCorpusBytes);
  check_text(producer.date, "date", plan_limits::kMaxDateBytes);

  check_codebooks(unit_codebooks);

  if (layers.size() != shape.n_layers)
    bad("layers has " + std::to_string(layers.size()) + " entries, shape has n_layers=" +
        std::to_string(shape.n_layers));
  for (uint32_t l = 0; l < layers.size(); ++l) {
    const LayerPlan& lp = layers[l];
    if (lp.keep_fp16) {
      if (!lp.heads.empty())
        bad("layer " + std::to_string(l) + " is kept at 16 bits but has " + std::to_string(lp.heads.size()) +
            " head plans (expected none)");
      continue;
    }
    if (lp.heads.size() != shape.n_kv_heads)
      bad("layer " + std::to_string(l) + " has " + std::to_string(lp.heads.size()) + " head plans, expected " +
          std::to_string(shape.n_kv_heads));
    for (uint32_t h = 0; h < lp.heads.size(); ++h)
      check_head(*this, lp.heads[h], "layer " + std::to_string(l) + " kv head " + std::to_string(h) + ": ");
  }
}

}  // namespace kvbits
