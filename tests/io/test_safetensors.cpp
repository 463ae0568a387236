#include "kvbits/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvbits/half.hpp"
#include "kvbits/status.hpp"
#include "../temp_dir.hpp"

namespace kvbits {
namespace {

using kvbits_test::temp_path;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file made of an 8-byte length, the given header text and data bytes.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data, uint64_t len) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(len >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  return make_file(header, data, header.size());
}

// Status of calling f(): ok, or the code of the kvbits::Error it throws (message kept).
template <typename F>
StatusCode status_of(F&& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return StatusCode::ok;
}

StatusCode parse_status(std::vector<uint8_t> bytes, std::string* message = nullptr) {
  return status_of([&] { SafetensorsFile::parse(std::move(bytes)); }, message);
}

StatusCode header_status(const std::string& header, size_t data_bytes = 16, std::string* message = nullptr) {
  return parse_status(make_file(header, std::vector<uint8_t>(data_bytes, 0)), message);
}

// Two F32 tensors and metadata, written by write_safetensors: the small file of the
// truncation test.
std::vector<uint8_t> small_file() {
  const float a[3] = {1.5f, -2.0f, 3.25f};
  const float b[2] = {4.0f, 5.0f};
  const std::string path = temp_path("small.safetensors");
  write_safetensors(path, {{"b", DType::f32, {2}, b}, {"a", DType::f32, {3}, a}}, {{"k", "v"}});
  return read_bytes(path);
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const float f32[6] = {0.0f, -1.0f, 3.5f, 1e-30f, -7.25f, 65504.0f};
  const uint16_t f16[4] = {float_to_half(1.0f), float_to_half(-2.5f), float_to_half(0.0f), 0x7C00};
  const uint16_t bf16[4] = {float_to_bf16(1.0f), float_to_bf16(-3.0f), float_to_bf16(1e20f), 0x0001};
  const std::map<std::string, std::string> meta = {{"kvbits.tokens", "3"}, {"note", "héllo \"quoted\""}};
  const std::string path = temp_path("roundtrip.safetensors");
  write_safetensors(path,
                    {{"x.f32", DType::f32, {2, 3}, f32},
                     {"x.bf16", DType::bf16, {1, 2, 2}, bf16},
                     {"x.f16", DType::f16, {4}, f16},
                     {"x.empty", DType::f32, {0, 5}, nullptr}},
                    meta);
  const SafetensorsFile f = SafetensorsFile::load(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"x.bf16", "x.empty", "x.f16", "x.f32"}));
  EXPECT_EQ(f.metadata(), meta);

  const TensorView& t32 = f.tensor("x.f32");
  EXPECT_EQ(t32.dtype, DType::f32);
  EXPECT_EQ(t32.shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(t32.numel(), 6u);
  ASSERT_EQ(t32.bytes, sizeof f32);
  EXPECT_EQ(std::memcmp(t32.data, f32, sizeof f32), 0);

  const TensorView& t16 = f.tensor("x.f16");
  EXPECT_EQ(t16.dtype, DType::f16);
  EXPECT_EQ(t16.shape, (std::vector<uint64_t>{4}));
  ASSERT_EQ(t16.bytes, 8u);
  EXPECT_EQ(std::memcmp(t16.data, f16, 8), 0);

  const TensorView& tb = f.tensor("x.bf16");
  EXPECT_EQ(tb.dtype, DType::bf16);
  EXPECT_EQ(tb.shape, (std::vector<uint64_t>{1, 2, 2}));
  ASSERT_EQ(tb.bytes, 8u);
  EXPECT_EQ(std::memcmp(tb.data, bf16, 8), 0);

  const TensorView& te = f.tensor("x.empty");
  EXPECT_EQ(te.shape, (std::vector<uint64_t>{0, 5}));
  EXPECT_EQ(te.numel(), 0u);
  EXPECT_EQ(te.bytes, 0u);

  // Data start is 8-byte aligned in the file and in memory.
  const std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[size_t(i)];
  EXPECT_EQ((8 + header_len) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_len + 24 + 8 + 8);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tb.data) % 8, 0u);
}

TEST(Safetensors, WriterBytesAreExactAndIndependentOfInputOrder) {
  const float a[1] = {1.0f};
  const uint16_t b[2] = {0x3C00, 0xC000};
  const std::string p1 = temp_path("order1.safetensors"), p2 = temp_path("order2.safetensors");
  write_safetensors(p1, {{"a", DType::f32, {1}, a}, {"b", DType::f16, {2}, b}}, {{"z", "1"}, {"m", "2"}});
  write_safetensors(p2, {{"b", DType::f16, {2}, b}, {"a", DType::f32, {1}, a}}, {{"m", "2"}, {"z", "1"}});
  const std::vector<uint8_t> bytes = read_bytes(p1);
  EXPECT_EQ(bytes, read_bytes(p2));

  const std::string json =
      R"({"__metadata__":{"m":"2","z":"1"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1]},)"
      R"("b":{"data_offsets":[4,8],"dtype":"F16","shape":[2]}})";
  std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  std::vector<uint8_t> data(8);
  std::memcpy(data.data(), a, 4);
  std::memcpy(data.data() + 4, b, 4);
  EXPECT_EQ(bytes, make_file(padded, data));
}

TEST(Safetensors, EveryTruncationIsCorruptData) {
  const std::vector<uint8_t> full = small_file();
  ASSERT_GT(full.size(), 100u);
  EXPECT_EQ(parse_status(full), StatusCode::ok);
  for (size_t len = 0; len < full.size(); ++len) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + std::ptrdiff_t(len));
    EXPECT_EQ(parse_status(cut), StatusCode::corrupt_data) << "truncated to " << len << " bytes";
  }
}

TEST(Safetensors, EverySingleByteCorruptionIsCaughtOrHarmless) {
  const std::vector<uint8_t> full = small_file();
  size_t rejected = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t v : {uint8_t(0x00), uint8_t('"'), uint8_t('9'), uint8_t(0xFF), uint8_t(full[i] ^ 1)}) {
      std::vector<uint8_t> bad = full;
      bad[i] = v;
      const StatusCode s = parse_status(bad);
      EXPECT_TRUE(s == StatusCode::ok || s == StatusCode::corrupt_data || s == StatusCode::unsupported)
          << "byte " << i << " = " << int(v) << ": " << status_name(s);
      rejected += s != StatusCode::ok;
    }
  }
  EXPECT_GT(rejected, full.size());  // most header edits must be caught
}

TEST(Safetensors, LoadReportsIoErrorAndTruncation) {
  EXPECT_EQ(status_of([] { SafetensorsFile::load(temp_path("does_not_exist.safetensors")); }), StatusCode::io_error);
  EXPECT_EQ(status_of([] { SafetensorsFile::load(temp_path("")); }), StatusCode::io_error);
  std::vector<uint8_t> full = small_file();
  const std::string path = temp_path("truncated.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(full.data()), std::streamsize(full.size() - 3));
  }
  std::string msg;
  EXPECT_EQ(status_of([&] { SafetensorsFile::load(path); }, &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(Safetensors, RejectsMalformedJson) {
  EXPECT_EQ(header_status("{not json"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(""), StatusCode::corrupt_data);
  EXPECT_EQ(header_status("[1, 2]"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}} trailing)"),
            StatusCode::corrupt_data);
  EXPECT_EQ(header_status(std::string("{\"a\"\0:1}", 8)), StatusCode::corrupt_data);
  std::string msg;
  EXPECT_EQ(header_status(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                          R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                          16, &msg),
            StatusCode::corrupt_data);
  EXPECT_NE(msg.find("duplicate key 'a'"), std::string::npos) << msg;
  EXPECT_EQ(header_status(std::string(5000, '[') + std::string(5000, ']')), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"a": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})"),
            StatusCode::corrupt_data);
  // Padding with trailing spaces is legal.
  EXPECT_EQ(header_status(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}      )", 4),
            StatusCode::ok);
}

TEST(Safetensors, RejectsBadTensorEntries) {
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"t": {"dtype": ")" + dtype + R"(", "shape": )" + shape + R"(, "data_offsets": )" + offsets + "}}";
  };
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[0, 16]")), StatusCode::ok);
  // Offsets out of range, reversed, wrong arity or type.
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[4, 20]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[0]", "[17, 17]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[0]", "[8, 4]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[0]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[0, 16, 16]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[-1, 15]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[0.0, 16]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[1]", "[0, 18446744073709551620]")), StatusCode::corrupt_data);
  // Byte count disagrees with shape x dtype size.
  std::string msg;
  EXPECT_EQ(header_status(entry("F32", "[2, 2]", "[0, 8]"), 16, &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("need 16"), std::string::npos) << msg;
  EXPECT_EQ(header_status(entry("F16", "[2, 2]", "[0, 16]")), StatusCode::corrupt_data);
  // Shapes: negative, fractional, not an array, overflowing products.
  EXPECT_EQ(header_status(entry("F32", "[-2]", "[0, 8]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[2.0]", "[0, 8]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "2", "[0, 8]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[4294967296, 4294967296]", "[0, 0]")), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(entry("F32", "[4611686018427387904]", "[0, 0]")), StatusCode::corrupt_data);
  // Missing and unknown fields.
  EXPECT_EQ(header_status(R"({"t": {"dtype": "F32", "shape": [1]}})"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}})"),
            StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"t": [1, 2]})"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})"),
            StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"t": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})"),
            StatusCode::corrupt_data);
}

TEST(Safetensors, RejectsOverlappingTensors) {
  const std::string two = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                          R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  std::string msg;
  EXPECT_EQ(header_status(two, 16, &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("'a' and 'b' overlap"), std::string::npos) << msg;
  const std::string same = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}})";
  EXPECT_EQ(header_status(same), StatusCode::corrupt_data);
  // Adjacent tensors and an empty tensor inside another's range do not overlap.
  const std::string ok = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                         R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},)"
                         R"( "c": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})";
  EXPECT_EQ(header_status(ok), StatusCode::ok);
}

TEST(Safetensors, HugeOrOversizedHeaderLengthIsCorrupt) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  const std::vector<uint8_t> data(4, 0);
  EXPECT_EQ(parse_status(make_file(header, data, header.size())), StatusCode::ok);
  EXPECT_EQ(parse_status(make_file(header, data, header.size() + 5)), StatusCode::corrupt_data);
  EXPECT_EQ(parse_status(make_file(header, data, uint64_t(1) << 63)), StatusCode::corrupt_data);
  EXPECT_EQ(parse_status(make_file(header, data, ~uint64_t(0))), StatusCode::corrupt_data);
  std::string msg;
  EXPECT_EQ(parse_status(make_file(header, data, 100000001), &msg), StatusCode::corrupt_data);
  EXPECT_NE(msg.find("100 MB"), std::string::npos) << msg;
}

TEST(Safetensors, UnsupportedDtypeNamesTensorAndDtype) {
  for (const char* dtype : {"I64", "F64", "U8", "BOOL", "F8_E4M3", "f32"}) {
    std::string msg;
    const std::string h = std::string(R"({"layers.0.q": {"dtype": ")") + dtype +
                          R"(", "shape": [1], "data_offsets": [0, 8]}})";
    EXPECT_EQ(header_status(h, 16, &msg), StatusCode::unsupported) << dtype;
    EXPECT_NE(msg.find("layers.0.q"), std::string::npos) << msg;
    EXPECT_NE(msg.find(dtype), std::string::npos) << msg;
  }
}

TEST(Safetensors, MetadataMustMapStringsToStrings) {
  EXPECT_EQ(header_status(R"({"__metadata__": {"a": "b"}})"), StatusCode::ok);
  EXPECT_EQ(header_status(R"({"__metadata__": {"a": 1}})"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"__metadata__": ["a", "b"]})"), StatusCode::corrupt_data);
  EXPECT_EQ(header_status(R"({"__metadata__": {"a": null}})"), StatusCode::corrupt_data);
}

TEST(Safetensors, MissingTensorIsNotFound) {
  const SafetensorsFile f = SafetensorsFile::parse(small_file());
  EXPECT_TRUE(f.has("a"));
  EXPECT_FALSE(f.has("c"));
  EXPECT_EQ(status_of([&] { f.tensor("c"); }), StatusCode::not_found);
  const float* a = reinterpret_cast<const float*>(f.tensor("a").data);
  EXPECT_EQ(a[2], 3.25f);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST(Safetensors, WriterRejectsBadInputsAndLeavesNoFile) {
  const float x[1] = {1.0f};
  const std::string path = temp_path("rejected.safetensors");
  std::remove(path.c_str());
  auto status = [&](const std::vector<TensorToWrite>& t) { return status_of([&] { write_safetensors(path, t, {}); }); };
  EXPECT_EQ(status({{"a", DType::f32, {1}, x}, {"a", DType::f32, {1}, x}}), StatusCode::invalid_argument);
  EXPECT_EQ(status({{"__metadata__", DType::f32, {1}, x}}), StatusCode::invalid_argument);
  EXPECT_EQ(status({{"", DType::f32, {1}, x}}), StatusCode::invalid_argument);
  EXPECT_EQ(status({{"a", DType::f32, {1}, nullptr}}), StatusCode::null_pointer);
  EXPECT_EQ(status({{"a", DType::f32, {uint64_t(1) << 40, uint64_t(1) << 40}, x}}), StatusCode::invalid_argument);
  EXPECT_TRUE(read_bytes(path).empty());
  EXPECT_EQ(status_of([&] {
              write_safetensors(temp_path("no_such_dir/x.safetensors"), {{"a", DType::f32, {1}, x}}, {});
            }),
            StatusCode::io_error);
}

}  // namespace
}  // namespace kvbits
