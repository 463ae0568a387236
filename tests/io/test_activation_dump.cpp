#include "kvbits/activation_dump.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kvbits/status.hpp"
#include "../temp_dir.hpp"

namespace kvbits {
namespace {

using Metadata = std::map<std::string, std::string>;

DumpMetadata stories_metadata() {
  DumpMetadata d;
  d.shape.n_layers = 2;
  d.shape.n_q_heads = 8;
  d.shape.n_kv_heads = 4;
  d.shape.head_dim = 8;
  d.shape.rotary_dim = 8;
  d.shape.rope_layout = RopeLayout::interleaved;
  d.shape.rope_theta = 10000.0;
  d.rope_applied = RopeApplied::pre;
  d.corpus = "unit test";
  d.model_fingerprint = "0123456789ABCDEF0123456789abcdef";
  d.tokens = 3;
  return d;
}

// Status and message of parse_dump_metadata on `m`.
StatusCode parse_status(const Metadata& m, std::string* message = nullptr) {
  try {
    parse_dump_metadata(m);
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return StatusCode::ok;
}

TEST(ActivationDump, MetadataRoundTripsWithExactText) {
  const Metadata m = format_dump_metadata(stories_metadata());
  const Metadata want = {
      {"kvbits.n_layers", "2"},
      {"kvbits.n_q_heads", "8"},
      {"kvbits.n_kv_heads", "4"},
      {"kvbits.head_dim", "8"},
      {"kvbits.rotary_dim", "8"},
      {"kvbits.rope_layout", "interleaved"},
      {"kvbits.rope_theta", "10000"},
      {"kvbits.rope_applied", "pre"},
      {"kvbits.corpus", "unit test"},
      {"kvbits.model_fingerprint_xxh3_128", "0123456789abcdef0123456789abcdef"},
      {"kvbits.tokens", "3"},
  };
  EXPECT_EQ(m, want);
  const DumpMetadata back = parse_dump_metadata(m);
  EXPECT_EQ(back.shape, stories_metadata().shape);
  EXPECT_EQ(back.rope_applied, RopeApplied::pre);
  EXPECT_EQ(back.corpus, "unit test");
  EXPECT_EQ(back.model_fingerprint, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(back.tokens, 3u);

  // A theta that is not a round number survives the text form exactly.
  DumpMetadata d = stories_metadata();
  d.shape.rope_theta = 500000.123456789;
  d.shape.rope_layout = RopeLayout::split_half;
  d.rope_applied = RopeApplied::post;
  d.model_fingerprint.clear();
  const Metadata m2 = format_dump_metadata(d);
  EXPECT_EQ(m2.count("kvbits.model_fingerprint_xxh3_128"), 0u);
  EXPECT_EQ(m2.at("kvbits.rope_layout"), "split-half");
  const DumpMetadata back2 = parse_dump_metadata(m2);
  EXPECT_EQ(back2.shape.rope_theta, 500000.123456789);
  EXPECT_EQ(back2.shape.rope_layout, RopeLayout::split_half);
  EXPECT_EQ(back2.rope_applied, RopeApplied::post);
  EXPECT_TRUE(back2.model_fingerprint.empty());
}

TEST(ActivationDump, EveryMissingRequiredKeyIsNamed) {
  const Metadata full = format_dump_metadata(stories_metadata());
  for (const char* key : {dump_key::n_layers, dump_key::n_q_heads, dump_key::n_kv_heads, dump_key::head_dim,
                          dump_key::rotary_dim, dump_key::rope_layout, dump_key::rope_theta,
                          dump_key::rope_applied, dump_key::corpus, dump_key::tokens}) {
    Metadata m = full;
    m.erase(key);
    std::string msg;
    EXPECT_EQ(parse_status(m, &msg), StatusCode::corrupt_data) << key;
    EXPECT_NE(msg.find(std::string("missing key '") + key + "'"), std::string::npos) << msg;
  }
  Metadata no_fp = full;
  no_fp.erase(dump_key::fingerprint);
  EXPECT_EQ(parse_status(no_fp), StatusCode::ok);
}

TEST(ActivationDump, MalformedValuesAreNamed) {
  const Metadata full = format_dump_metadata(stories_metadata());
  const std::vector<std::pair<const char*, std::string>> bad = {
      {dump_key::n_layers, "abc"},        {dump_key::n_layers, "-1"},
      {dump_key::n_layers, "+2"},         {dump_key::n_layers, " 2"},
      {dump_key::n_layers, "2.0"},        {dump_key::n_layers, ""},
      {dump_key::head_dim, "4294967304"}, {dump_key::tokens, "18446744073709551616"},
      {dump_key::rope_layout, "rotate_half"}, {dump_key::rope_theta, "nan"},
      {dump_key::rope_theta, "inf"},      {dump_key::rope_theta, "1e4x"},
      {dump_key::rope_applied, "both"},   {dump_key::fingerprint, "0123"},
      {dump_key::fingerprint, "0123456789abcdef0123456789abcdeg"},
  };
  for (const auto& kv : bad) {
    Metadata m = full;
    m[kv.first] = kv.second;
    std::string msg;
    EXPECT_EQ(parse_status(m, &msg), StatusCode::corrupt_data) << kv.first << "=" << kv.second;
    EXPECT_NE(msg.find(kv.first), std::string::npos) << msg;
  }
}

TEST(ActivationDump, ShapeRulesAreCheckedAsCorruptData) {
  Metadata m = format_dump_metadata(stories_metadata());
  m[dump_key::n_kv_heads] = "3";
  std::string msg;
  EXPECT_EQ(parse_status(m, &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("multiple of n_kv_heads"), std::string::npos) << msg;
  m = format_dump_metadata(stories_metadata());
  m[dump_key::rotary_dim] = "10";
  EXPECT_EQ(parse_status(m), StatusCode::corrupt_data);
  m[dump_key::rotary_dim] = "4";  // partial rotary is allowed
  EXPECT_EQ(shape_from_dump_metadata(m).rotary_dim, 4u);
}

TEST(ActivationDump, TensorNames) {
  EXPECT_EQ(dump_tensor_name(0, 'q'), "layers.0.q");
  EXPECT_EQ(dump_tensor_name(31, 'k'), "layers.31.k");
  EXPECT_EQ(dump_tensor_name(7, 'v'), "layers.7.v");
  EXPECT_THROW(dump_tensor_name(0, 'x'), Error);
}

class DumpFile : public ::testing::Test {
 protected:
  // Two layers, T = 3: q [3, 8, 8], k and v [3, 4, 8]; layer 1 has no v.
  void SetUp() override {
    q_.resize(3 * 8 * 8);
    kv_.resize(3 * 4 * 8);
    for (size_t i = 0; i < q_.size(); ++i) q_[i] = float(i);
    for (size_t i = 0; i < kv_.size(); ++i) kv_[i] = -float(i);
    tensors_ = {{"layers.0.q", DType::f32, {3, 8, 8}, q_.data()},
                {"layers.0.k", DType::f32, {3, 4, 8}, kv_.data()},
                {"layers.0.v", DType::f32, {3, 4, 8}, kv_.data()},
                {"layers.1.q", DType::f32, {3, 8, 8}, q_.data()},
                {"layers.1.k", DType::f32, {3, 4, 8}, kv_.data()},
                {"tokens", DType::f32, {3}, q_.data()}};
  }
  StatusCode view_status(std::string* message = nullptr) {
    const std::string path = kvbits_test::temp_path("dump.safetensors");
    write_safetensors(path, tensors_, format_dump_metadata(stories_metadata()));
    const SafetensorsFile f = SafetensorsFile::load(path);
    try {
      view_activation_dump(f);
    } catch (const Error& e) {
      if (message) *message = e.what();
      return e.code();
    }
    return StatusCode::ok;
  }
  std::vector<float> q_, kv_;
  std::vector<TensorToWrite> tensors_;
};

TEST_F(DumpFile, ViewsTensorsOfEveryLayer) {
  const std::string path = kvbits_test::temp_path("dump_ok.safetensors");
  write_safetensors(path, tensors_, format_dump_metadata(stories_metadata()));
  const SafetensorsFile f = SafetensorsFile::load(path);
  const ActivationDump d = view_activation_dump(f);
  EXPECT_EQ(d.metadata.tokens, 3u);
  ASSERT_EQ(d.layers.size(), 2u);
  EXPECT_EQ(d.layers[0].q, &f.tensor("layers.0.q"));
  EXPECT_EQ(d.layers[0].k, &f.tensor("layers.0.k"));
  EXPECT_EQ(d.layers[0].v, &f.tensor("layers.0.v"));
  EXPECT_EQ(d.layers[1].v, nullptr);
  EXPECT_EQ(reinterpret_cast<const float*>(d.layers[1].q->data)[191], 191.0f);
  EXPECT_EQ(reinterpret_cast<const float*>(d.layers[1].k->data)[95], -95.0f);
}

TEST_F(DumpFile, MissingKeyTensorIsCorrupt) {
  tensors_.erase(tensors_.begin() + 4);  // layers.1.k
  std::string msg;
  EXPECT_EQ(view_status(&msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("missing tensor 'layers.1.k'"), std::string::npos) << msg;
}

TEST_F(DumpFile, WrongShapeIsShapeMismatch) {
  tensors_[1].shape = {3, 8, 4};  // layers.0.k: heads and dims swapped, same bytes
  std::string msg;
  EXPECT_EQ(view_status(&msg), StatusCode::shape_mismatch);
  EXPECT_NE(msg.find("'layers.0.k' has shape [3, 8, 4], metadata says [3, 4, 8]"), std::string::npos) << msg;
  tensors_[1].shape = {3, 4, 8};
  tensors_[0].shape = {2, 8, 8};  // fewer tokens than kvbits.tokens
  EXPECT_EQ(view_status(), StatusCode::shape_mismatch);
}

TEST_F(DumpFile, UnknownLayerTensorIsCorrupt) {
  tensors_.push_back({"layers.2.q", DType::f32, {3, 8, 8}, q_.data()});
  std::string msg;
  EXPECT_EQ(view_status(&msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("layers.2.q"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvbits
