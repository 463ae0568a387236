// Reading and writing the activation dump convention (docs/activation-dumps.md).
#include "kvbits/activation_dump.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>

#include "kvbits/status.hpp"

namespace kvbits {
namespace {

using Metadata = std::map<std::string, std::string>;

[[noreturn]] void bad_metadata(const std::string& what) {
  fail(StatusCode::corrupt_data, "activation dump metadata: " + what);
}

const std::string& required(const Metadata& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) bad_metadata(std::string("missing key '") + key + "'");
  return it->second;
}

// Plain decimal digits only: no sign, no spaces, no exponent.
uint64_t parse_uint(const Metadata& m, const char* key, uint64_t max) {
  const std::string& s = required(m, key);
  uint64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || s[0] == '+' || r.ec != std::errc() || r.ptr != s.data() + s.size() || v > max)
    bad_metadata(std::string("'") + key + "' must be a decimal integer <= " + std::to_string(max) + ", got '" +
                 s + "'");
  return v;
}

uint32_t parse_u32(const Metadata& m, const char* key) {
  return uint32_t(parse_uint(m, key, std::numeric_limits<uint32_t>::max()));
}

double parse_theta(const Metadata& m) {
  const std::string& s = required(m, dump_key::rope_theta);
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v))
    bad_metadata(std::string("'") + dump_key::rope_theta + "' must be a finite number, got '" + s + "'");
  return v;
}

bool is_hex_fingerprint(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

std::string to_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = char(c - 'A' + 'a');
  return s;
}

// Shortest text that reads back as the same double (locale-independent).
std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void check_tensor(const TensorView& t, const std::string& name, uint64_t tokens, uint32_t heads, uint32_t dim) {
  const std::vector<uint64_t> want = {tokens, heads, dim};
  if (t.shape == want) return;
  std::string got;
  for (uint64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
  fail(StatusCode::shape_mismatch, "activation dump: tensor '" + name + "' has shape [" + got + "], metadata says [" +
                                       std::to_string(tokens) + ", " + std::to_string(heads) + ", " +
                                       std::to_string(dim) + "]");
}

}  // namespace

const char* rope_applied_name(RopeApplied r) noexcept { return r == RopeApplied::pre ? "pre" : "post"; }

ModelShape shape_from_dump_metadata(const Metadata& m) {
  ModelShape s;
  s.n_layers = parse_u32(m, dump_key::n_layers);
  s.n_q_heads = parse_u32(m, dump_key::n_q_heads);
  s.n_kv_heads = parse_u32(m, dump_key::n_kv_heads);
  s.head_dim = parse_u32(m, dump_key::head_dim);
  s.rotary_dim = parse_u32(m, dump_key::rotary_dim);
  const std::string& layout = required(m, dump_key::rope_layout);
  if (layout == rope_layout_name(RopeLayout::split_half)) s.rope_layout = RopeLayout::split_half;
  else if (layout == rope_layout_name(RopeLayout::interleaved)) s.rope_layout = RopeLayout::interleaved;
  else bad_metadata(std::string("'") + dump_key::rope_layout + "' must be split-half or interleaved, got '" + layout + "'");
  s.rope_theta = parse_theta(m);
  try {
    s.validate();
  } catch (const Error& e) {
    bad_metadata(e.what());
  }
  return s;
}

DumpMetadata parse_dump_metadata(const Metadata& m) {
  DumpMetadata d;
  d.shape = shape_from_dump_metadata(m);
  const std::string& applied = required(m, dump_key::rope_applied);
  if (applied == "pre") d.rope_applied = RopeApplied::pre;
  else if (applied == "post") d.rope_applied = RopeApplied::post;
  else bad_metadata(std::string("'") + dump_key::rope_applied + "' must be pre or post, got '" + applied + "'");
  d.corpus = required(m, dump_key::corpus);
  d.tokens = parse_uint(m, dump_key::tokens, std::numeric_limits<uint64_t>::max());
  auto fp = m.find(dump_key::fingerprint);
  if (fp != m.end()) {
    if (!is_hex_fingerprint(fp->second))
      bad_metadata(std::string("'") + dump_key::fingerprint + "' must be 32 hex digits, got '" + fp->second + "'");
    d.model_fingerprint = to_lower(fp->second);
  }
  return d;
}

Metadata format_dump_metadata(const DumpMetadata& d) {
  d.shape.validate();
  if (!d.model_fingerprint.empty() && !is_hex_fingerprint(d.model_fingerprint))
    fail(StatusCode::invalid_argument, "activation dump: model fingerprint must be 32 hex digits");
  Metadata m;
  m[dump_key::n_layers] = std::to_string(d.shape.n_layers);
  m[dump_key::n_q_heads] = std::to_string(d.shape.n_q_heads);
  m[dump_key::n_kv_heads] = std::to_string(d.shape.n_kv_heads);
  m[dump_key::head_dim] = std::to_string(d.shape.head_dim);
  m[dump_key::rotary_dim] = std::to_string(d.shape.rotary_dim);
  m[dump_key::rope_layout] = rope_layout_name(d.shape.rope_layout);
  m[dump_key::rope_theta] = format_double(d.shape.rope_theta);
  m[dump_key::rope_applied] = rope_applied_name(d.rope_applied);
  m[dump_key::corpus] = d.corpus;
  m[dump_key::tokens] = std::to_string(d.tokens);
  if (!d.model_fingerprint.empty()) m[dump_key::fingerprint] = to_lower(d.model_fingerprint);
  return m;
}

std::string dump_tensor_name(uint32_t layer, char which) {
  if (which != 'q' && which != 'k' && which != 'v')
    fail(StatusCode::invalid_argument, std::string("activation dump: tensor kind must be q, k or v, got '") + which + "'");
  return "layers." + std::to_string(layer) + "." + which;
}

ActivationDump view_activation_dump(const SafetensorsFile& file) {
  ActivationDump dump;
  dump.metadata = parse_dump_metadata(file.metadata());
  const ModelShape& s = dump.metadata.shape;
  const uint64_t T = dump.metadata.tokens;

  std::set<std::string> expected;
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (char w : {'q', 'k', 'v'}) expected.insert(dump_tensor_name(l, w));
  for (const std::string& name : file.names())
    if (name.rfind("layers.", 0) == 0 && expected.count(name) == 0)
      fail(StatusCode::corrupt_data, "activation dump: unexpected tensor '" + name + "' for a model with " +
                                         std::to_string(s.n_layers) + " layers");

  auto find = [&](uint32_t layer, char which, uint32_t heads) -> const TensorView* {
    const std::string name = dump_tensor_name(layer, which);
    if (!file.has(name)) {
      if (which == 'v') return nullptr;
      fail(StatusCode::corrupt_data, "activation dump: missing tensor '" + name + "'");
    }
    const TensorView& t = file.tensor(name);
    check_tensor(t, name, T, heads, s.head_dim);
    return &t;
  };
  for (uint32_t l = 0; l < s.n_layers; ++l)
    dump.layers.push_back({find(l, 'q', s.n_q_heads), find(l, 'k', s.n_kv_heads), find(l, 'v', s.n_kv_heads)});
  return dump;
}

}  // namespace kvbits
