// kvbits — encoding and decoding of the 1.0 plan sections (docs/plan-format.md §3).
#include "plan/plan_sections.hpp"

#include <array>
#include <string>

#include "kvbits/status.hpp"
#include "plan/byte_io.hpp"
#include "plan/plan_limits.hpp"

namespace kvbits::plan_sections {

namespace {

using plan_file::SectionId;
using plan_file::StoredSection;
using plan_io::ByteReader;
using plan_io::ByteWriter;

enum Index : size_t { kShap, kMeth, kFprt, kProd, kCode, kLayr, kHead, kCount };

constexpr uint64_t kShapBytes = 32;
constexpr uint64_t kMethBytes = 32;
constexpr uint64_t kFprtBytes = 40;
constexpr uint64_t kProdMinBytes = 8 + 3 * 4;
constexpr uint64_t kProdMaxBytes =
    kProdMinBytes + plan_limits::kMaxToolBytes + plan_limits::kMaxCorpusBytes + plan_limits::kMaxDateBytes;
constexpr uint64_t kCodeMaxBytes = 4 + 8 * 510;  // all widths 1..8: sum of 2^b = 510
constexpr uint64_t kRotSpecBytes = 1 + 4 + 8;
constexpr uint8_t kLayerKeepFp16 = 1;

// ---- encoding ----

std::vector<uint8_t> encode_shape(const ModelShape& s) {
  ByteWriter w;
  w.u32(s.n_layers);
  w.u32(s.n_q_heads);
  w.u32(s.n_kv_heads);
  w.u32(s.head_dim);
  w.u32(s.rotary_dim);
  w.u8(uint8_t(s.rope_layout));
  w.zeros(3);
  w.f64(s.rope_theta);
  return std::move(w.data());
}

std::vector<uint8_t> encode_method(const Plan& p) {
  ByteWriter w;
  w.u8(uint8_t(p.method));
  w.u8(uint8_t(p.score));
  w.u8(uint8_t(p.recipe));
  w.u8(p.k_min_bits);
  w.u8(p.k_max_bits);
  w.zeros(3);
  w.f64(p.k_avg_bits);
  w.u64(p.rotation_seed);
  w.u32(p.sink_tokens);
  w.u32(p.window_tokens);
  return std::move(w.data());
}

std::vector<uint8_t> encode_fingerprint(const Fingerprint& f) {
  ByteWriter w;
  w.u8(uint8_t(f.kind));
  w.zeros(7);
  w.bytes(f.bytes.data(), f.bytes.size());
  return std::move(w.data());
}

std::vector<uint8_t> encode_producer(const Producer& p) {
  ByteWriter w;
  w.u64(p.calib_tokens);
  w.str(p.tool);
  w.str(p.corpus);
  w.str(p.date);
  return std::move(w.data());
}

std::vector<uint8_t> encode_codebooks(const std::vector<std::vector<double>>& books) {
  ByteWriter w;
  uint32_t mask = 0;
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b)
    if (!books[size_t(b)].empty()) mask |= 1u << b;
  w.u32(mask);
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b)
    for (double c : books[size_t(b)]) w.f64(c);
  return std::move(w.data());
}

std::vector<uint8_t> encode_layers(const std::vector<LayerPlan>& layers) {
  ByteWriter w;
  for (const LayerPlan& l : layers) w.u8(l.keep_fp16 ? kLayerKeepFp16 : 0);
  return std::move(w.data());
}

void encode_rotation(ByteWriter& w, const RotationSpec& r) {
  w.u8(uint8_t(r.kind));
  w.u32(r.dim);
  w.u64(r.seed);
  if (r.kind == RotationSpec::Kind::explicit_matrix)
    for (float v : r.matrix) w.f32(v);
}

std::vector<uint8_t> encode_heads(const std::vector<LayerPlan>& layers) {
  ByteWriter w;
  for (const LayerPlan& l : layers) {
    for (const HeadPlan& h : l.heads) {
      w.u8(h.v_bits);
      w.bytes(h.block_bits.data(), h.block_bits.size());
      for (uint32_t id : h.block_order) w.u16(uint16_t(id));
      for (double e : h.q_energy) w.f64(e);
      for (double e : h.k_energy) w.f64(e);
      for (const RotationSpec& r : h.k_rotations) encode_rotation(w, r);
      encode_rotation(w, h.v_rotation);
    }
  }
  return std::move(w.data());
}

// ---- decoding ----

ModelShape decode_shape(const StoredSection& s) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, kShapBytes, kShapBytes);
  ByteReader r(raw.data(), raw.size(), "SHAP");
  ModelShape shape;
  shape.n_layers = r.u32("n_layers");
  shape.n_q_heads = r.u32("n_q_heads");
  shape.n_kv_heads = r.u32("n_kv_heads");
  shape.head_dim = r.u32("head_dim");
  shape.rotary_dim = r.u32("rotary_dim");
  shape.rope_layout = RopeLayout(r.u8("rope_layout"));
  r.reserved_zero(3, "reserved");
  shape.rope_theta = r.f64("rope_theta");
  r.expect_end();
  // Later sections are bounded by the shape, so it is checked here, before they are read.
  try {
    shape.validate();
  } catch (const Error& e) {
    r.fail_at(e.what());
  }
  return shape;
}

void decode_method(const StoredSection& s, Plan& p) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, kMethBytes, kMethBytes);
  ByteReader r(raw.data(), raw.size(), "METH");
  p.method = Method(r.u8("method"));
  p.score = ScoreKind(r.u8("score"));
  p.recipe = CodebookRecipe(r.u8("recipe"));
  p.k_min_bits = r.u8("k_min_bits");
  p.k_max_bits = r.u8("k_max_bits");
  r.reserved_zero(3, "reserved");
  p.k_avg_bits = r.f64("k_avg_bits");
  p.rotation_seed = r.u64("rotation_seed");
  p.sink_tokens = r.u32("sink_tokens");
  p.window_tokens = r.u32("window_tokens");
  r.expect_end();
}

Fingerprint decode_fingerprint(const StoredSection& s) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, kFprtBytes, kFprtBytes);
  ByteReader r(raw.data(), raw.size(), "FPRT");
  Fingerprint f;
  f.kind = Fingerprint::Kind(r.u8("kind"));
  r.reserved_zero(7, "reserved");
  const std::vector<uint8_t> bytes = r.u8_array(f.bytes.size(), "bytes");
  std::copy(bytes.begin(), bytes.end(), f.bytes.begin());
  r.expect_end();
  return f;
}

Producer decode_producer(const StoredSection& s) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, kProdMinBytes, kProdMaxBytes);
  ByteReader r(raw.data(), raw.size(), "PROD");
  Producer p;
  p.calib_tokens = r.u64("calib_tokens");
  p.tool = r.str(plan_limits::kMaxToolBytes, "tool");
  p.corpus = r.str(plan_limits::kMaxCorpusBytes, "corpus");
  p.date = r.str(plan_limits::kMaxDateBytes, "date");
  r.expect_end();
  return p;
}

std::vector<std::vector<double>> decode_codebooks(const StoredSection& s) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, 4, kCodeMaxBytes);
  ByteReader r(raw.data(), raw.size(), "CODE");
  const uint32_t mask = r.u32("width_mask");
  if (mask & ~uint32_t(0x1FE))
    r.fail_at("width_mask " + std::to_string(mask) + " has bits set outside 1..8");
  std::vector<std::vector<double>> books(size_t(kMaxCodeBits) + 1);
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b)
    if (mask & (1u << b)) {
      r.set_context("width " + std::to_string(b));
      books[size_t(b)] = r.f64_array(size_t(1) << b, "centroids");
    }
  r.expect_end();
  return books;
}

std::vector<LayerPlan> decode_layers(const StoredSection& s, const ModelShape& shape) {
  const std::vector<uint8_t> raw = plan_file::section_payload(s, shape.n_layers, shape.n_layers);
  ByteReader r(raw.data(), raw.size(), "LAYR");
  std::vector<LayerPlan> layers(shape.n_layers);
  for (uint32_t l = 0; l < shape.n_layers; ++l) {
    const uint8_t flags = r.u8("flags");
    if (flags & ~kLayerKeepFp16)
      r.fail_at("layer " + std::to_string(l) + " flags " + std::to_string(flags) + " have reserved bits set");
    layers[l].keep_fp16 = (flags & kLayerKeepFp16) != 0;
  }
  r.expect_end();
  return layers;
}

RotationSpec decode_rotation(ByteReader& r, uint32_t expected_dim, const std::string& what) {
  RotationSpec spec;
  const uint8_t kind = r.u8((what + ".kind").c_str());
  if (kind > uint8_t(RotationSpec::Kind::explicit_matrix))
    r.fail_at(what + ".kind is " + std::to_string(kind) + ", expected 0 (generated) or 1 (explicit)");
  spec.kind = RotationSpec::Kind(kind);
  spec.dim = r.u32((what + ".dim").c_str());
  // The dim sizes the matrix, so it must match the layout before anything is read for it.
  if (spec.dim != expected_dim)
    r.fail_at(what + ".dim is " + std::to_string(spec.dim) + ", expected " + std::to_string(expected_dim));
  spec.seed = r.u64((what + ".seed").c_str());
  if (spec.kind == RotationSpec::Kind::explicit_matrix)
    spec.matrix = r.f32_array(size_t(spec.dim) * spec.dim, (what + ".matrix").c_str());
  return spec;
}

HeadPlan decode_head(ByteReader& r, uint32_t head_dim) {
  const uint32_t n_blocks = head_dim / 2;
  HeadPlan h;
  h.v_bits = r.u8("v_bits");
  h.block_bits = r.u8_array(n_blocks, "block_bits");
  // Widths decide how many rotations follow and their dims.
  std::array<uint32_t, kMaxCodeBits + 1> blocks_of_width{};
  for (uint32_t i = 0; i < n_blocks; ++i) {
    const uint8_t b = h.block_bits[i];
    if (b < kMinCodeBits || b > kMaxCodeBits)
      r.fail_at("block_bits[" + std::to_string(i) + "] is " + std::to_string(int(b)) + ", outside [1, 8]");
    ++blocks_of_width[b];
  }
  h.block_order = r.u16_array(n_blocks, "block_order");
  h.q_energy = r.f64_array(n_blocks, "q_energy");
  h.k_energy = r.f64_array(n_blocks, "k_energy");
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b)
    if (blocks_of_width[size_t(b)] > 0)
      h.k_rotations.push_back(decode_rotation(r, 2 * blocks_of_width[size_t(b)],
                                              "k_rotations[" + std::to_string(h.k_rotations.size()) + "]"));
  h.v_rotation = decode_rotation(r, head_dim, "v_rotation");
  return h;
}

void decode_heads(const StoredSection& s, const ModelShape& shape, std::vector<LayerPlan>& layers) {
  uint64_t n_heads = 0;
  for (const LayerPlan& l : layers)
    if (!l.keep_fp16) n_heads += shape.n_kv_heads;
  // Per record: fixed fields 1 + 19L; 2..9 rotation specs; explicit matrices up to 2 D^2 floats.
  const uint64_t L = shape.n_blocks();
  const uint64_t min_bytes = n_heads * (1 + 19 * L + 2 * kRotSpecBytes);
  const uint64_t max_bytes = n_heads * (1 + 19 * L + 9 * kRotSpecBytes + 32 * L * L);
  const std::vector<uint8_t> raw = plan_file::section_payload(s, min_bytes, max_bytes);
  ByteReader r(raw.data(), raw.size(), "HEAD");
  for (uint32_t l = 0; l < layers.size(); ++l) {
    if (layers[l].keep_fp16) continue;
    layers[l].heads.reserve(shape.n_kv_heads);
    for (uint32_t h = 0; h < shape.n_kv_heads; ++h) {
      r.set_context("layer " + std::to_string(l) + " kv head " + std::to_string(h));
      layers[l].heads.push_back(decode_head(r, shape.head_dim));
    }
  }
  r.expect_end();
}

}  // namespace

const std::vector<SectionId>& section_ids() {
  static const std::vector<SectionId> ids = {
      {'S', 'H', 'A', 'P'}, {'M', 'E', 'T', 'H'}, {'F', 'P', 'R', 'T'}, {'P', 'R', 'O', 'D'},
      {'C', 'O', 'D', 'E'}, {'L', 'A', 'Y', 'R'}, {'H', 'E', 'A', 'D'},
  };
  return ids;
}

std::vector<plan_file::SectionToWrite> encode_sections(const Plan& p) {
  const std::vector<SectionId>& ids = section_ids();
  std::vector<plan_file::SectionToWrite> out(kCount);
  for (size_t i = 0; i < kCount; ++i) out[i].id = ids[i];
  out[kShap].raw = encode_shape(p.shape);
  out[kMeth].raw = encode_method(p);
  out[kFprt].raw = encode_fingerprint(p.fingerprint);
  out[kProd].raw = encode_producer(p.producer);
  out[kCode].raw = encode_codebooks(p.unit_codebooks);
  out[kLayr].raw = encode_layers(p.layers);
  out[kHead].raw = encode_heads(p.layers);
  return out;
}

Plan decode_sections(const std::vector<StoredSection>& sections) {
  Plan p;
  p.shape = decode_shape(sections[kShap]);
  decode_method(sections[kMeth], p);
  p.fingerprint = decode_fingerprint(sections[kFprt]);
  p.producer = decode_producer(sections[kProd]);
  p.unit_codebooks = decode_codebooks(sections[kCode]);
  p.layers = decode_layers(sections[kLayr], p.shape);
  decode_heads(sections[kHead], p.shape, p.layers);
  return p;
}

}  // namespace kvbits::plan_sections
