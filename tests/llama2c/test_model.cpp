#include "model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <xxhash.h>

#include "kv_store.hpp"
#include "kvbits/status.hpp"
#include "runner.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;
using namespace llama2c_test;

constexpr size_t kStoriesBytes = 1056540;

StatusCode load_status(const std::vector<uint8_t>& bytes, std::string* message = nullptr) {
  const std::string path = temp_path("checkpoint.bin");
  write_bytes(path, bytes);
  try {
    Model::load(path);
  } catch (const kvbits::Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return StatusCode::ok;
}

void set_header_field(std::vector<uint8_t>& bytes, int field, int32_t value) {
  std::memcpy(bytes.data() + 4 * field, &value, 4);
}

TEST(Model, LoadsTheStories260KHeader) {
  const Config& c = stories_model().config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_EQ(c.shape().describe(), "layers=5 q_heads=8 kv_heads=4 head_dim=8 rotary_dim=8 rope=interleaved theta=10000");
  EXPECT_EQ(stories_model().classifier(), stories_model().token_embedding());
}

// The per-layer tensors are bound at the right offsets: RMSNorm gains have the statistics
// the data README lists (rms_att mean 1.20 in 0.49..2.79; rms_final mean 1.81, max 4.43).
TEST(Model, WeightsAreBoundAtTheRightOffsets) {
  const Model& m = stories_model();
  double sum = 0, lo = 1e9, hi = -1e9;
  for (int l = 0; l < 5; ++l)
    for (int i = 0; i < 64; ++i) {
      const double g = m.layer(l).rms_att[i];
      sum += g;
      lo = std::min(lo, g);
      hi = std::max(hi, g);
    }
  EXPECT_NEAR(sum / 320, 1.20, 0.005);
  EXPECT_NEAR(lo, 0.49, 0.005);
  EXPECT_NEAR(hi, 2.79, 0.005);
  double fsum = 0, fmax = 0;
  for (int i = 0; i < 64; ++i) {
    fsum += m.rms_final()[i];
    fmax = std::max(fmax, double(m.rms_final()[i]));
  }
  EXPECT_NEAR(fsum / 64, 1.81, 0.005);
  EXPECT_NEAR(fmax, 4.43, 0.005);
  // Consecutive tensors: the stored RoPE tables start right after rms_final.
  EXPECT_EQ(m.stored_freq_cis_real(), m.rms_final() + 64);
  EXPECT_EQ(m.stored_freq_cis_real()[0], 1.0f);  // cos(0)
  EXPECT_EQ(m.stored_freq_cis_imag()[0], 0.0f);  // sin(0)
}

TEST(Model, RopeFromThetaMatchesTheStoredFreqCisTables) {
  const Model& m = stories_model();
  double worst = 0;
  for (int pos = 0; pos < 512; ++pos)
    for (int i = 0; i < 4; ++i) {
      worst = std::max(worst, double(std::fabs(m.rope_cos(pos)[i] - m.stored_freq_cis_real()[pos * 4 + i])));
      worst = std::max(worst, double(std::fabs(m.rope_sin(pos)[i] - m.stored_freq_cis_imag()[pos * 4 + i])));
    }
  EXPECT_LT(worst, 3e-6);
  // Spot value: block 1 at position 100 rotates by 100 * 10000^(-1/4) = 10 rad.
  EXPECT_FLOAT_EQ(m.rope_cos(100)[1], float(std::cos(10.0)));
  EXPECT_FLOAT_EQ(m.rope_sin(100)[1], float(std::sin(10.0)));
}

TEST(Model, FingerprintIsXxh3Of128TheFileBytes) {
  const std::vector<uint8_t> bytes = read_bytes(model_path());
  ASSERT_EQ(bytes.size(), kStoriesBytes);
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits(bytes.data(), bytes.size()));
  std::string hex;
  for (unsigned char b : canon.digest) {
    static const char d[] = "0123456789abcdef";
    hex += d[b >> 4];
    hex += d[b & 15];
  }
  EXPECT_EQ(stories_model().fingerprint_hex(), hex);
  EXPECT_EQ(stories_model().fingerprint_hex(), "48be2bfe231b489d0c9b5a18d38a945f");
}

TEST(Model, RejectsTruncatedAndOversizedFiles) {
  const std::vector<uint8_t> good = read_bytes(model_path());
  for (size_t len : {size_t(0), size_t(27), size_t(28), size_t(29), good.size() / 2, good.size() - 4, good.size() - 1}) {
    std::string msg;
    EXPECT_EQ(load_status(std::vector<uint8_t>(good.begin(), good.begin() + std::ptrdiff_t(len)), &msg),
              StatusCode::corrupt_data)
        << "truncated to " << len;
    if (len >= 28) {
      EXPECT_NE(msg.find("needs 1056540"), std::string::npos) << msg;
    }
  }
  for (size_t extra : {1, 4, 4 * 64}) {
    std::vector<uint8_t> longer = good;
    longer.resize(good.size() + extra, 0);
    EXPECT_EQ(load_status(longer), StatusCode::corrupt_data) << "+" << extra << " bytes";
  }
}

TEST(Model, RejectsBadHeaderFieldsAndWeights) {
  const std::vector<uint8_t> good = read_bytes(model_path());
  struct Case {
    int field;
    int32_t value;
    const char* message;
  };
  for (const Case& c : {Case{0, 0, "dim = 0"}, Case{0, -64, "dim = -64"}, Case{1, 0, "hidden_dim = 0"},
                        Case{2, 0, "n_layers = 0"}, Case{3, 7, "not a multiple of n_heads 7"},
                        Case{3, 64, "head_dim 1 is odd"}, Case{4, 3, "not a multiple of n_kv_heads 3"},
                        Case{4, 16, "n_kv_heads = 16"}, Case{5, 0, "|vocab_size| = 0"},
                        Case{6, 0, "seq_len = 0"}, Case{6, 511, "needs 1056508"}}) {
    std::vector<uint8_t> bad = good;
    set_header_field(bad, c.field, c.value);
    std::string msg;
    EXPECT_EQ(load_status(bad, &msg), StatusCode::corrupt_data) << c.message;
    EXPECT_NE(msg.find(c.message), std::string::npos) << msg;
  }
  std::vector<uint8_t> versioned = good;
  set_header_field(versioned, 0, 0x616b3432);  // "ak42"
  EXPECT_EQ(load_status(versioned), StatusCode::version_unsupported);

  std::vector<uint8_t> nan = good;
  const float not_a_number = std::nanf("");
  std::memcpy(nan.data() + 28 + 4 * 1000, &not_a_number, 4);
  std::string msg;
  EXPECT_EQ(load_status(nan, &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("#1000"), std::string::npos) << msg;

  for (const std::string& path : {temp_path("no_such_model.bin"), temp_path("")}) {
    try {
      Model::load(path);
      FAIL() << "expected io_error for " << path;
    } catch (const kvbits::Error& e) {
      EXPECT_EQ(e.code(), StatusCode::io_error);
    }
  }
}

// A negative vocab_size means a separate classifier follows; with the embedding copied there
// the logits must be bit-identical to the shared version.
TEST(Model, LoadsASeparateClassifier) {
  std::vector<uint8_t> bytes = read_bytes(model_path());
  set_header_field(bytes, 5, -512);
  bytes.insert(bytes.end(), bytes.begin() + 28, bytes.begin() + 28 + 512 * 64 * 4);
  const std::string path = temp_path("separate_classifier.bin");
  write_bytes(path, bytes);
  const Model separate = Model::load(path);
  EXPECT_FALSE(separate.config().shared_classifier);
  EXPECT_EQ(separate.config().vocab_size, 512);
  EXPECT_NE(separate.classifier(), separate.token_embedding());
  EXPECT_EQ(separate.classifier(), separate.stored_freq_cis_imag() + 512 * 4);

  Runner a(stories_model()), b(separate);
  FloatKvStore kv_a(stories_model().config()), kv_b(separate.config());
  for (int pos = 0; pos < 3; ++pos) {
    const int token = std::vector<int>{1, 403, 407}[size_t(pos)];
    const float* la = a.forward(token, pos, kv_a);
    const float* lb = b.forward(token, pos, kv_b);
    EXPECT_EQ(std::memcmp(la, lb, 512 * sizeof(float)), 0) << "position " << pos;
  }
  // Without the appended classifier the file is 4 * 512 * 64 bytes short.
  bytes.resize(bytes.size() - 512 * 64 * 4);
  EXPECT_EQ(load_status(bytes), StatusCode::corrupt_data);
}

}  // namespace
}  // namespace llama2c
