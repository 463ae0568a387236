#include "capture.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "kvbits/activation_dump.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using namespace llama2c_test;

CaptureOptions small_options(kvbits::RopeApplied rope) {
  CaptureOptions o;
  o.sequences = 3;
  o.tokens = 64;
  o.seed = 5;
  o.rope = rope;
  o.corpus = "test";
  return o;
}

// Sum over rows of ||x^(b)||^2 per (head, block b = dims 2b, 2b+1), in fp64.
std::vector<double> block_energies(const std::vector<float>& x, int heads, int head_dim) {
  std::vector<double> e(size_t(heads * head_dim / 2), 0.0);
  const size_t row = size_t(heads * head_dim);
  for (size_t r = 0; r < x.size() / row; ++r)
    for (size_t i = 0; i < row / 2; ++i) {
      const double a = x[r * row + 2 * i], b = x[r * row + 2 * i + 1];
      e[i] += a * a + b * b;
    }
  return e;
}

TEST(Capture, RecordsEveryLayerAndPosition) {
  const Capture cap = capture_activations(stories_model(), small_options(kvbits::RopeApplied::pre));
  EXPECT_EQ(cap.metadata.tokens, 3u * 64u);
  EXPECT_EQ(cap.metadata.shape, stories_model().config().shape());
  EXPECT_EQ(cap.metadata.rope_applied, kvbits::RopeApplied::pre);
  EXPECT_EQ(cap.metadata.model_fingerprint, stories_model().fingerprint_hex());
  EXPECT_EQ(cap.metadata.corpus, "test");
  ASSERT_EQ(cap.sequences.size(), 3u);
  for (const std::vector<int>& seq : cap.sequences) {
    ASSERT_EQ(seq.size(), 64u);
    EXPECT_EQ(seq[0], 1);  // BOS
  }
  EXPECT_NE(cap.sequences[0], cap.sequences[1]);  // one RNG stream: sequences differ
  ASSERT_EQ(cap.q.size(), 5u);
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(cap.q[size_t(l)].size(), 192u * 64u);
    EXPECT_EQ(cap.k[size_t(l)].size(), 192u * 32u);
  }
}

// RoPE rotates inside each 2-D block, so block energies do not depend on where we record.
TEST(Capture, PreAndPostRopeBlockEnergiesAgree) {
  const Capture pre = capture_activations(stories_model(), small_options(kvbits::RopeApplied::pre));
  const Capture post = capture_activations(stories_model(), small_options(kvbits::RopeApplied::post));
  ASSERT_EQ(pre.sequences, post.sequences);
  double worst = 0;
  for (int l = 0; l < 5; ++l) {
    for (bool keys : {true, false}) {
      const int heads = keys ? 4 : 8;
      const std::vector<double> a = block_energies(keys ? pre.k[size_t(l)] : pre.q[size_t(l)], heads, 8);
      const std::vector<double> b = block_energies(keys ? post.k[size_t(l)] : post.q[size_t(l)], heads, 8);
      for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_GT(a[i], 0.0);
        worst = std::max(worst, std::fabs(a[i] - b[i]) / a[i]);
      }
    }
  }
  EXPECT_LT(worst, 1e-4);
  // The recordings themselves differ (RoPE did rotate), except at position 0.
  EXPECT_NE(pre.k[0], post.k[0]);
}

// The runtime's float RoPE equals kvbits' fp64 reference apply_rope (interleaved, theta 1e4).
TEST(Capture, PostRopeIsKvbitsApplyRopeOfPreRope) {
  const Capture pre = capture_activations(stories_model(), small_options(kvbits::RopeApplied::pre));
  const Capture post = capture_activations(stories_model(), small_options(kvbits::RopeApplied::post));
  const kvbits::ModelShape shape = stories_model().config().shape();
  double worst = 0;
  for (int l = 0; l < 5; ++l)
    for (bool keys : {true, false}) {
      const std::vector<float>& a = keys ? pre.k[size_t(l)] : pre.q[size_t(l)];
      const std::vector<float>& b = keys ? post.k[size_t(l)] : post.q[size_t(l)];
      for (size_t head = 0; head < a.size() / 8; ++head) {
        const size_t row = head / (keys ? 4 : 8);
        double x[8];
        for (int d = 0; d < 8; ++d) x[d] = a[head * 8 + size_t(d)];
        kvbits::apply_rope(shape, double(row % 64), x);  // every sequence has 64 positions
        for (int d = 0; d < 8; ++d)
          worst = std::max(worst, std::fabs(x[d] - b[head * 8 + size_t(d)]) / (1.0 + std::fabs(x[d])));
      }
    }
  EXPECT_LT(worst, 1e-5);
}

TEST(Capture, SameSeedGivesIdenticalDumpBytes) {
  CaptureOptions o = small_options(kvbits::RopeApplied::pre);
  const std::string p1 = temp_path("dump1.safetensors"), p2 = temp_path("dump2.safetensors"),
                    p3 = temp_path("dump3.safetensors");
  write_capture(p1, capture_activations(stories_model(), o));
  write_capture(p2, capture_activations(stories_model(), o));
  o.seed = 6;
  write_capture(p3, capture_activations(stories_model(), o));
  const std::vector<uint8_t> a = read_bytes(p1);
  ASSERT_GT(a.size(), 192u * 96u * 4u * 5u);
  EXPECT_EQ(a, read_bytes(p2));
  EXPECT_NE(a, read_bytes(p3));
}

TEST(Capture, DumpReadsBackThroughTheActivationDumpReader) {
  const Capture cap = capture_activations(stories_model(), small_options(kvbits::RopeApplied::post));
  const std::string path = temp_path("dump_readback.safetensors");
  write_capture(path, cap);
  const kvbits::SafetensorsFile file = kvbits::SafetensorsFile::load(path);
  const kvbits::ActivationDump dump = kvbits::view_activation_dump(file);
  EXPECT_EQ(dump.metadata.shape, cap.metadata.shape);
  EXPECT_EQ(dump.metadata.tokens, 192u);
  EXPECT_EQ(dump.metadata.rope_applied, kvbits::RopeApplied::post);
  EXPECT_EQ(dump.metadata.model_fingerprint, "48be2bfe231b489d0c9b5a18d38a945f");
  ASSERT_EQ(dump.layers.size(), 5u);
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_EQ(dump.layers[l].q->dtype, kvbits::DType::f32);
    EXPECT_EQ(std::memcmp(dump.layers[l].q->data, cap.q[l].data(), cap.q[l].size() * 4), 0);
    EXPECT_EQ(std::memcmp(dump.layers[l].k->data, cap.k[l].data(), cap.k[l].size() * 4), 0);
    EXPECT_EQ(dump.layers[l].v, nullptr);
  }
}

TEST(Capture, TeacherForcesGivenTokensInBosLedChunks) {
  CaptureOptions o = small_options(kvbits::RopeApplied::pre);
  o.tokens = 4;
  o.sequences = 8;
  o.forced_tokens = stories_tokenizer().encode("Once upon a time, there was", false, false);
  ASSERT_EQ(o.forced_tokens, (std::vector<int>{403, 407, 261, 378, 432, 383, 286}));
  const Capture cap = capture_activations(stories_model(), o);
  ASSERT_EQ(cap.sequences.size(), 3u);
  EXPECT_EQ(cap.sequences[0], (std::vector<int>{1, 403, 407, 261}));
  EXPECT_EQ(cap.sequences[1], (std::vector<int>{1, 378, 432, 383}));
  EXPECT_EQ(cap.sequences[2], (std::vector<int>{1, 286}));
  EXPECT_EQ(cap.metadata.tokens, 10u);
  EXPECT_EQ(cap.q[0].size(), 10u * 64u);
  // Position 0 always sees BOS: its rows are identical across sequences.
  EXPECT_EQ(std::memcmp(cap.k[3].data(), cap.k[3].data() + 4 * 32, 32 * 4), 0);

  o.sequences = 2;  // caps the chunks
  EXPECT_EQ(capture_activations(stories_model(), o).metadata.tokens, 8u);
}

TEST(Capture, RejectsBadOptions) {
  CaptureOptions o = small_options(kvbits::RopeApplied::pre);
  o.tokens = 513;
  EXPECT_THROW(capture_activations(stories_model(), o), kvbits::Error);
  o.tokens = 0;
  EXPECT_THROW(capture_activations(stories_model(), o), kvbits::Error);
  o.tokens = 8;
  o.sequences = 0;
  EXPECT_THROW(capture_activations(stories_model(), o), kvbits::Error);
  o.sequences = 1;
  o.temperature = -1;
  EXPECT_THROW(capture_activations(stories_model(), o), kvbits::Error);
}

// The README's first command captures 8 x 256 tokens; report how long that takes here.
TEST(Capture, FullSizeCaptureTiming) {
  CaptureOptions o;  // 8 x 256, seed 1, T = 1
  const auto t0 = std::chrono::steady_clock::now();
  const Capture cap = capture_activations(stories_model(), o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(cap.metadata.tokens, 2048u);
  std::printf("capture 8 x 256 tokens: %.3f s\n", secs);
  RecordProperty("capture_8x256_seconds", std::to_string(secs));
}

}  // namespace
}  // namespace llama2c
