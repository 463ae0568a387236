#include "tokenizer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kvbits/status.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;
using namespace llama2c_test;

// A tokenizer file with the given (piece, score) entries.
std::vector<uint8_t> tokenizer_bytes(const std::vector<std::pair<std::string, float>>& vocab, int32_t max_len) {
  std::vector<uint8_t> out(4);
  std::memcpy(out.data(), &max_len, 4);
  for (const auto& [piece, score] : vocab) {
    const int32_t len = int32_t(piece.size());
    const size_t at = out.size();
    out.resize(at + 8 + piece.size());
    std::memcpy(out.data() + at, &score, 4);
    std::memcpy(out.data() + at + 4, &len, 4);
    std::memcpy(out.data() + at + 8, piece.data(), piece.size());
  }
  return out;
}

StatusCode load_status(const std::vector<uint8_t>& bytes, int vocab_size) {
  const std::string path = temp_path("tokenizer.bin");
  write_bytes(path, bytes);
  try {
    Tokenizer::load(path, vocab_size);
  } catch (const kvbits::Error& e) {
    return e.code();
  }
  return StatusCode::ok;
}

TEST(Tokenizer, EncodesOnceUponATimeLikeSentencepiece) {
  const Tokenizer& tok = stories_tokenizer();
  EXPECT_EQ(tok.encode("Once upon a time", true, false), (std::vector<int>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", false, true), (std::vector<int>{403, 407, 261, 378, 2}));
  EXPECT_EQ(tok.piece(403), " Once");
  EXPECT_EQ(tok.piece(410), " ");
  // No dummy prefix for empty text.
  EXPECT_EQ(tok.encode("", true, false), (std::vector<int>{1}));
  EXPECT_EQ(tok.encode("", false, false), (std::vector<int>{}));
}

TEST(Tokenizer, FallsBackToByteTokensForUnknownCharacters) {
  const Tokenizer& tok = stories_tokenizer();
  // U+4E2D (E4 B8 AD) is not a piece: three byte tokens, id = byte + 3, after the " " prefix.
  EXPECT_EQ(tok.encode("\xE4\xB8\xAD", false, false), (std::vector<int>{410, 0xE4 + 3, 0xB8 + 3, 0xAD + 3}));
  EXPECT_EQ(tok.piece(0xE4 + 3), "<0xE4>");
  EXPECT_EQ(tok.decode(410, 0xB8 + 3), "\xB8");
  // U+20AC (E2 82 AC) is one.
  EXPECT_EQ(tok.encode("\xE2\x82\xAC", false, false), (std::vector<int>{410, 503}));
}

TEST(Tokenizer, DecodeStripsTheDummySpaceOnlyAfterBos) {
  const Tokenizer& tok = stories_tokenizer();
  EXPECT_EQ(tok.decode(Tokenizer::kBos, 403), "Once");
  EXPECT_EQ(tok.decode(378, 403), " Once");
  EXPECT_EQ(tok.decode(-1, 403), " Once");
  EXPECT_EQ(tok.decode(378, 0x0A + 3), "\n");  // <0x0A>
  EXPECT_EQ(tok.decode(std::vector<int>{1, 403, 407, 261, 378, 2}), "Once upon a time");
  EXPECT_THROW(tok.decode(1, 512), kvbits::Error);
  EXPECT_THROW(tok.decode(1, -1), kvbits::Error);
}

TEST(Tokenizer, DecodeOfEncodeGivesTheTextBack) {
  const Tokenizer& tok = stories_tokenizer();
  for (const std::string text :
       {"Once upon a time, there was a little girl named Lily.", "  two leading spaces", "tabs\tand\nnewlines\n",
        "caf\xC3\xA9 \xE2\x82\xAC 100 \xE4\xB8\xAD \xF0\x9F\x98\x80!", "x", "\"Quotes\" and 'apostrophes' -- dashes."}) {
    const std::vector<int> ids = tok.encode(text, true, false);
    EXPECT_EQ(tok.decode(ids), text);
  }
}

// A toy vocabulary whose merge order is known: "bc" outranks "ab", which outranks "abc".
TEST(Tokenizer, MergesHighestScoreFirstLeftmostOnTies) {
  const std::vector<std::pair<std::string, float>> vocab = {
      {"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}, {" ", -1}, {"a", -2}, {"b", -3}, {"c", -4},
      {"ab", 1},    {"bc", 2},      {"abc", 0},      {" a", -5}, {"abab", 3}, {"aa", 1}};
  const std::string path = temp_path("toy_tokenizer.bin");
  write_bytes(path, tokenizer_bytes(vocab, 7));
  const Tokenizer tok = Tokenizer::load(path, int(vocab.size()));
  // " abc": pairs " a"(-5) "ab"(1) "bc"(2) -> bc; then " a"(-5) "abc"(0) -> abc; " abc" absent.
  EXPECT_EQ(tok.encode("abc", false, false), (std::vector<int>{3, 9}));
  // " aba": " a" vs "ab" twice -> leftmost "ab" wins; then " ab", "aba" absent -> stop.
  EXPECT_EQ(tok.encode("aba", false, false), (std::vector<int>{3, 7, 4}));
  // " abab": ab, ab, then "abab" (3).
  EXPECT_EQ(tok.encode("abab", false, false), (std::vector<int>{3, 11}));
  // " aaa": the two "aa" candidates tie; the leftmost merges.
  EXPECT_EQ(tok.encode("aaa", false, false), (std::vector<int>{3, 12, 4}));
  // "x" has neither a piece nor byte tokens: <unk>.
  EXPECT_EQ(tok.encode("x", false, false), (std::vector<int>{3, 0}));
}

TEST(Tokenizer, LoaderRejectsMalformedFiles) {
  const std::vector<uint8_t> good = read_bytes(tokenizer_path());
  ASSERT_EQ(good.size(), 6227u);
  EXPECT_EQ(load_status(good, 512), StatusCode::ok);
  for (size_t len : {size_t(0), size_t(3), size_t(4), size_t(11), size_t(100), good.size() / 2, good.size() - 1}) {
    EXPECT_EQ(load_status(std::vector<uint8_t>(good.begin(), good.begin() + std::ptrdiff_t(len)), 512),
              StatusCode::corrupt_data)
        << "truncated to " << len;
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_EQ(load_status(longer, 512), StatusCode::corrupt_data);
  EXPECT_EQ(load_status(good, 511), StatusCode::corrupt_data);  // bytes left over
  EXPECT_EQ(load_status(good, 513), StatusCode::corrupt_data);  // runs out

  EXPECT_EQ(load_status(tokenizer_bytes({{"ab", 0}}, 1), 1), StatusCode::corrupt_data);   // longer than max
  EXPECT_EQ(load_status(tokenizer_bytes({{"a", 0}}, 0), 1), StatusCode::corrupt_data);    // max_len 0
  EXPECT_EQ(load_status(tokenizer_bytes({{"a", 0}}, -7), 1), StatusCode::corrupt_data);
  EXPECT_EQ(load_status(tokenizer_bytes({{"a", std::nanf("")}}, 1), 1), StatusCode::corrupt_data);
  std::vector<uint8_t> negative = tokenizer_bytes({{"a", 0}}, 4);
  const int32_t minus_one = -1;
  std::memcpy(negative.data() + 8, &minus_one, 4);
  EXPECT_EQ(load_status(negative, 1), StatusCode::corrupt_data);

  try {
    Tokenizer::load(temp_path("missing_tokenizer.bin"), 512);
    FAIL() << "expected io_error";
  } catch (const kvbits::Error& e) {
    EXPECT_EQ(e.code(), StatusCode::io_error);
  }
}

}  // namespace
}  // namespace llama2c
