// Absurd declared sizes are refused cleanly and without a matching allocation
// (docs/plan-format.md §4). alloc_probe.cpp records the largest operator-new request.
#include <gtest/gtest.h>
#include <zstd.h>

#include "alloc_probe.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "plan_file_edit.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

constexpr size_t kSmallAllocation = 256 * 1024;

struct Outcome {
  StatusCode code = StatusCode::ok;
  std::string message;
  size_t largest_allocation = 0;
};

Outcome parse_outcome(const std::vector<uint8_t>& bytes) {
  Outcome o;
  test::reset_largest_allocation();
  try {
    parse_plan(bytes.data(), bytes.size());
  } catch (const Error& e) {
    o.code = e.code();
    o.message = e.what();
  }
  o.largest_allocation = test::largest_allocation();
  return o;
}

std::vector<uint8_t> zstd(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
  out.resize(ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), 3));
  return out;
}

test::PlanFile stories_file() { return test::split_plan_file(serialize_plan(test::random_plan(test::stories260k_shape(), 31))); }

// Patches a field of the raw payload of an uncompressed section.
void patch(test::PlanFile& f, const std::string& id, size_t offset, uint64_t value, size_t width) {
  std::vector<uint8_t> raw = test::raw_payload(f.section(id));
  test::store_u64(&raw[offset], value, width);
  test::set_raw_payload(f.section(id), raw);
}

TEST(PlanLimits, RawSize2Pow60IsOutOfMemoryWithoutAllocating) {
  test::PlanFile f = stories_file();
  test::FileSection& head = f.section("HEAD");
  head.stored = zstd(test::raw_payload(head));
  head.flags |= test::kSectionZstd;
  head.raw_size = uint64_t(1) << 60;
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::out_of_memory);
  EXPECT_NE(o.message.find("declares raw_size 1152921504606846976"), std::string::npos) << o.message;
  EXPECT_LT(o.largest_allocation, kSmallAllocation);
}

TEST(PlanLimits, RawSizeAboveTheShapeBoundIsCorrupt) {
  test::PlanFile f = stories_file();
  test::FileSection& head = f.section("HEAD");
  const std::vector<uint8_t> raw = test::raw_payload(head);
  head.stored = zstd(raw);
  head.flags |= test::kSectionZstd;
  head.raw_size = uint64_t(1) << 29;  // under the 2^30 cap, far above 16 heads of D = 8
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("section 'HEAD': raw_size is 536870912 bytes, expected between"), std::string::npos)
      << o.message;
  EXPECT_LT(o.largest_allocation, kSmallAllocation);
}

TEST(PlanLimits, ZstdFrameThatDisagreesWithRawSizeIsCorrupt) {
  test::PlanFile f = stories_file();
  test::FileSection& head = f.section("HEAD");
  std::vector<uint8_t> raw = test::raw_payload(head);
  const uint64_t real = raw.size();
  raw.push_back(0);
  head.stored = zstd(raw);  // declares real + 1
  head.flags |= test::kSectionZstd;
  head.raw_size = real;
  EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::corrupt_data);

  head.stored = zstd(test::raw_payload(f.section("CODE")));
  head.stored.push_back(0);  // trailing byte after the frame
  head.raw_size = real;
  EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::corrupt_data);

  head.stored = {1, 2, 3, 4, 5, 6, 7, 8};  // not a zstd frame at all
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("not a zstd frame"), std::string::npos) << o.message;
}

TEST(PlanLimits, HeaderCountsAndSizes) {
  const std::vector<uint8_t> good = serialize_plan(test::golden_plan());
  struct Case {
    const char* name;
    size_t offset, width;
    uint64_t value;
    StatusCode code;
  } cases[] = {
      {"section_count 1e9", 40, 4, 1000000000, StatusCode::corrupt_data},
      {"section_count 65", 40, 4, 65, StatusCode::corrupt_data},
      {"file_size 2^40", 32, 8, uint64_t(1) << 40, StatusCode::out_of_memory},
      {"file_size 2^64-1", 32, 8, ~uint64_t(0), StatusCode::out_of_memory},
      {"header_size 2^32-8", 12, 4, 0xFFFFFFF8u, StatusCode::corrupt_data},
      {"table_entry_size 2^31", 44, 4, uint64_t(1) << 31, StatusCode::corrupt_data},
      {"entry 0 stored_size 2^62", 64 + 16, 8, uint64_t(1) << 62, StatusCode::corrupt_data},
      {"entry 0 offset 2^63", 64 + 8, 8, uint64_t(1) << 63, StatusCode::corrupt_data},
      {"entry 6 raw_size 2^61 uncompressed", 64 + 6 * 40 + 24, 8, uint64_t(1) << 61, StatusCode::corrupt_data},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bytes = good;
    test::store_u64(&bytes[c.offset], c.value, c.width);
    if (c.offset != 12) test::reseal(bytes);
    const Outcome o = parse_outcome(bytes);
    EXPECT_EQ(o.code, c.code) << c.name << ": " << o.message;
    EXPECT_LT(o.largest_allocation, kSmallAllocation) << c.name;
  }
}

TEST(PlanLimits, SectionFieldsOutOfRange) {
  struct Case {
    const char* name;
    const char* section;
    size_t offset, width;
    uint64_t value;
    const char* message;
  } cases[] = {
      {"n_layers 1e9", "SHAP", 0, 4, 1000000000, "n_layers must be in [1, 4096], got 1000000000"},
      {"n_kv_heads 0", "SHAP", 8, 4, 0, "n_kv_heads must be in [1, 4096], got 0"},
      {"head_dim 2^31", "SHAP", 12, 4, uint64_t(1) << 31, "head_dim must be even and in [2, 1024]"},
      {"shape reserved", "SHAP", 22, 1, 1, "reserved byte 1 is 1, expected 0"},
      {"tool length 2^32-1", "PROD", 8, 4, 0xFFFFFFFFu, "tool is 4294967295 bytes long, the limit is 256"},
      {"codebook width 9", "CODE", 0, 4, 1u << 9, "has bits set outside 1..8"},
      {"fingerprint reserved", "FPRT", 3, 1, 7, "section 'FPRT': reserved byte 2 is 7"},
      {"method 7", "METH", 0, 1, 7, "method is 7"},
      {"v_bits 0", "HEAD", 0, 1, 0, "layer 0 kv head 0: v_bits is 0"},
      {"block width 9", "HEAD", 1, 1, 9, "section 'HEAD' (layer 0 kv head 0): block_bits[0] is 9, outside [1, 8]"},
  };
  for (const Case& c : cases) {
    test::PlanFile f = stories_file();
    patch(f, c.section, c.offset, c.value, c.width);
    const Outcome o = parse_outcome(test::join_plan_file(f));
    EXPECT_EQ(o.code, StatusCode::corrupt_data) << c.name;
    EXPECT_NE(o.message.find(c.message), std::string::npos) << c.name << ": " << o.message;
    EXPECT_LT(o.largest_allocation, kSmallAllocation) << c.name;
  }
}

TEST(PlanLimits, HugeShapeWithTinySectionsAllocatesLittle) {
  // 4096 layers x 4096 kv heads x D = 1024 would be an enormous plan; the HEAD section of the
  // file is tiny, so the reader must stop at the size bound, not allocate for the shape.
  test::PlanFile f = stories_file();
  patch(f, "SHAP", 0, 4096, 4);
  patch(f, "SHAP", 4, 4096, 4);
  patch(f, "SHAP", 8, 4096, 4);
  patch(f, "SHAP", 12, 1024, 4);
  patch(f, "SHAP", 16, 1024, 4);
  test::set_raw_payload(f.section("LAYR"), std::vector<uint8_t>(4096, 0));
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("section 'HEAD': raw_size is"), std::string::npos) << o.message;
  EXPECT_LT(o.largest_allocation, kSmallAllocation);
}

TEST(PlanLimits, ExplicitMatrixDimIsCheckedBeforeReading) {
  // Layer 0 head 0 of the random plan starts with an explicit K rotation; give it a huge dim.
  const Plan plan = test::random_plan(test::stories260k_shape(), 31);
  const HeadPlan& h = plan.layers[0].heads[0];
  ASSERT_EQ(h.k_rotations[0].kind, RotationSpec::Kind::explicit_matrix);
  const size_t dim_offset = 1 + 19 * 4 + 1;  // v_bits, fixed fields (L = 4), kind
  test::PlanFile f = stories_file();
  patch(f, "HEAD", dim_offset, 0x7FFFFFFF, 4);
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("k_rotations[0].dim is 2147483647, expected " + std::to_string(h.k_rotations[0].dim)),
            std::string::npos)
      << o.message;
  EXPECT_LT(o.largest_allocation, kSmallAllocation);
}

TEST(PlanLimits, LeftoverBytesInASectionAreCorrupt) {
  test::PlanFile f = stories_file();
  std::vector<uint8_t> raw = test::raw_payload(f.section("HEAD"));
  raw.push_back(0);
  test::set_raw_payload(f.section("HEAD"), raw);
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("section 'HEAD': 1 unexpected bytes after the last field"), std::string::npos) << o.message;
}

}  // namespace
}  // namespace kvbits
