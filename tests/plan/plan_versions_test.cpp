// Magic, versions, flags and unknown sections (docs/plan-format.md §2, §6).
#include <gtest/gtest.h>

#include <algorithm>

#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "plan_file_edit.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

struct Outcome {
  StatusCode code = StatusCode::ok;
  std::string message;
};

Outcome parse_outcome(const std::vector<uint8_t>& bytes) {
  try {
    parse_plan(bytes.data(), bytes.size());
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {};
}

test::PlanFile golden_file() { return test::split_plan_file(serialize_plan(test::golden_plan())); }

TEST(PlanVersions, SplitAndJoinReproduceTheWriter) {
  // The test-side container implementation agrees with the library byte for byte.
  const std::vector<uint8_t> bytes = serialize_plan(test::random_plan(test::split_half_128_shape(), 1));
  EXPECT_EQ(test::join_plan_file(test::split_plan_file(bytes)), bytes);
}

TEST(PlanVersions, WrongMagic) {
  std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  bytes[3] = 'X';
  const Outcome o = parse_outcome(bytes);
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_EQ(o.message, "plan file: not a kvbits plan (bad magic)");
  std::vector<uint8_t> short_junk = {'G', 'G', 'U', 'F'};
  EXPECT_EQ(parse_outcome(short_junk).message, "plan file: not a kvbits plan (bad magic)");
}

TEST(PlanVersions, NewerMajorIsVersionUnsupported) {
  test::PlanFile f = golden_file();
  f.major = 2;
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::version_unsupported);
  EXPECT_NE(o.message.find("format version 2.0 is newer"), std::string::npos) << o.message;
}

TEST(PlanVersions, NewerMajorWithAnotherHeaderSizeIsStillRecognised) {
  // Only the stable prefix and the trailing header checksum are read before the version.
  test::PlanFile f = golden_file();
  f.major = 3;
  f.header_size = 128;
  EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::version_unsupported);
}

TEST(PlanVersions, DamagedMajorIsCorruptNotUnsupported) {
  std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  bytes[8] = 2;  // major without resealing the header checksum
  const Outcome o = parse_outcome(bytes);
  EXPECT_EQ(o.code, StatusCode::corrupt_data);
  EXPECT_NE(o.message.find("header checksum mismatch"), std::string::npos) << o.message;
}

TEST(PlanVersions, MajorZeroIsCorrupt) {
  test::PlanFile f = golden_file();
  f.major = 0;
  EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::corrupt_data);
}

TEST(PlanVersions, UnknownRequiredFlagIsVersionUnsupported) {
  for (int bit : {0, 17, 63}) {
    test::PlanFile f = golden_file();
    f.required_flags = uint64_t(1) << bit;
    EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::version_unsupported) << bit;
  }
}

TEST(PlanVersions, UnknownOptionalFlagIsIgnored) {
  test::PlanFile f = golden_file();
  f.optional_flags = 0x8000000000000001ull;
  f.minor = 3;
  const std::vector<uint8_t> bytes = test::join_plan_file(f);
  EXPECT_TRUE(parse_plan(bytes.data(), bytes.size()) == test::golden_plan());
}

TEST(PlanVersions, UnknownOptionalSectionIsSkippedAnywhere) {
  for (size_t at : {size_t(0), size_t(3), size_t(7)}) {
    test::PlanFile f = golden_file();
    test::FileSection extra;
    extra.id = "XTRA";
    extra.flags = 0;
    extra.stored = {1, 2, 3, 4, 5};  // odd size: the next section needs padding
    extra.raw_size = 5;
    f.sections.insert(f.sections.begin() + long(at), extra);
    f.minor = 1;
    const std::vector<uint8_t> bytes = test::join_plan_file(f);
    EXPECT_TRUE(parse_plan(bytes.data(), bytes.size()) == test::golden_plan()) << at;
  }
}

TEST(PlanVersions, UnknownOptionalSectionIsStillChecksummed) {
  test::PlanFile f = golden_file();
  f.sections.push_back({"XTRA", 0, {9, 9, 9, 9}, 4});
  std::vector<uint8_t> bytes = test::join_plan_file(f);
  bytes[bytes.size() - 1] ^= 1;
  EXPECT_EQ(parse_outcome(bytes).code, StatusCode::corrupt_data);
}

TEST(PlanVersions, UnknownRequiredSectionIsVersionUnsupported) {
  test::PlanFile f = golden_file();
  f.sections.push_back({"NEW!", test::kSectionRequired, {0, 0, 0, 0}, 4});
  const Outcome o = parse_outcome(test::join_plan_file(f));
  EXPECT_EQ(o.code, StatusCode::version_unsupported);
  EXPECT_NE(o.message.find("'NEW!') is required but unknown"), std::string::npos) << o.message;
}

TEST(PlanVersions, UnknownEncodingFlagOnKnownSectionIsVersionUnsupported) {
  test::PlanFile f = golden_file();
  f.section("CODE").flags |= 1u << 2;
  EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::version_unsupported);
  // Advisory bits are ignored.
  test::PlanFile g = golden_file();
  g.section("CODE").flags |= 1u << 20;
  const std::vector<uint8_t> bytes = test::join_plan_file(g);
  EXPECT_TRUE(parse_plan(bytes.data(), bytes.size()) == test::golden_plan());
}

TEST(PlanVersions, NewerMinorWithLargerHeaderAndEntriesIsAccepted) {
  test::PlanFile f = golden_file();
  f.minor = 7;
  f.header_size = 96;
  f.entry_size = 48;
  const std::vector<uint8_t> bytes = test::join_plan_file(f);
  EXPECT_TRUE(parse_plan(bytes.data(), bytes.size()) == test::golden_plan());
}

TEST(PlanVersions, SectionsInAnotherTableOrderAreAccepted) {
  test::PlanFile f = golden_file();
  std::reverse(f.sections.begin(), f.sections.end());
  const std::vector<uint8_t> bytes = test::join_plan_file(f);
  EXPECT_TRUE(parse_plan(bytes.data(), bytes.size()) == test::golden_plan());
}

TEST(PlanVersions, StructuralTableErrors) {
  {
    test::PlanFile f = golden_file();
    f.sections.erase(f.sections.begin() + 2);  // FPRT
    const Outcome o = parse_outcome(test::join_plan_file(f));
    EXPECT_EQ(o.code, StatusCode::corrupt_data);
    EXPECT_EQ(o.message, "plan file: section 'FPRT' is missing");
  }
  {
    test::PlanFile f = golden_file();
    f.sections.push_back(f.sections[0]);
    const Outcome o = parse_outcome(test::join_plan_file(f));
    EXPECT_EQ(o.code, StatusCode::corrupt_data);
    EXPECT_NE(o.message.find("duplicate section"), std::string::npos) << o.message;
  }
  {
    test::PlanFile f = golden_file();
    f.section("METH").flags = 0;
    const Outcome o = parse_outcome(test::join_plan_file(f));
    EXPECT_EQ(o.code, StatusCode::corrupt_data);
    EXPECT_NE(o.message.find("must carry the required flag"), std::string::npos) << o.message;
  }
  {
    test::PlanFile f = golden_file();
    f.sections[0].id = std::string("SH\x01P", 4);
    EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::corrupt_data);
  }
  {
    test::PlanFile f = golden_file();
    f.entry_size = 36;
    EXPECT_EQ(parse_outcome(test::join_plan_file(f)).code, StatusCode::corrupt_data);
  }
  {
    // A section placed off its canonical offset.
    std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
    uint8_t* e = &bytes[64 + 1 * 40];
    test::store_u64(e + 8, test::load_u64(e + 8, 8) + 8, 8);
    test::reseal(bytes);
    const Outcome o = parse_outcome(bytes);
    EXPECT_EQ(o.code, StatusCode::corrupt_data);
    EXPECT_NE(o.message.find("'METH'): offset is"), std::string::npos) << o.message;
  }
  {
    std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
    bytes.push_back(0);
    const Outcome o = parse_outcome(bytes);
    EXPECT_EQ(o.code, StatusCode::corrupt_data);
    EXPECT_NE(o.message.find("1 trailing bytes"), std::string::npos) << o.message;
  }
}

}  // namespace
}  // namespace kvbits
