#include "tokenizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "kvbits/status.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a "<0xHH>" piece stands for, or -1 for any other piece.
int byte_of_piece(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  const int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Reads little-endian scalars from a byte buffer, failing on truncation.
class Reader {
 public:
  Reader(const std::vector<uint8_t>& bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <typename T>
  T scalar(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  std::string string(size_t n, const char* what) { return std::string(reinterpret_cast<const char*>(take(n, what)), n); }
  size_t left() const { return bytes_.size() - at_; }

 private:
  const uint8_t* take(size_t n, const char* what) {
    if (left() < n)
      kvbits::fail(StatusCode::corrupt_data, "tokenizer '" + path_ + "' is truncated in " + what + " at byte " +
                                                 std::to_string(at_));
    const uint8_t* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }
  const std::vector<uint8_t>& bytes_;
  const std::string& path_;
  size_t at_ = 0;
};

}  // namespace

Tokenizer Tokenizer::load(const std::string& path, int vocab_size) {
  if (vocab_size < 1) kvbits::fail(StatusCode::invalid_argument, "tokenizer: vocab_size must be >= 1");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    kvbits::fail(StatusCode::io_error, "tokenizer '" + path + "' is not a readable regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) kvbits::fail(StatusCode::io_error, "cannot open tokenizer '" + path + "'");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  auto corrupt = [&](const std::string& what) {
    kvbits::fail(StatusCode::corrupt_data, "tokenizer '" + path + "': " + what);
  };
  Reader r(bytes, path);
  const int32_t max_len = r.scalar<int32_t>("the header");
  if (max_len < 1 || max_len > (1 << 16)) corrupt("max_token_length " + std::to_string(max_len) + " is not in [1, 65536]");

  Tokenizer t;
  std::fill(std::begin(t.byte_token_), std::end(t.byte_token_), -1);
  for (int id = 0; id < vocab_size; ++id) {
    const float score = r.scalar<float>("a score");
    const int32_t len = r.scalar<int32_t>("a piece length");
    if (!std::isfinite(score)) corrupt("score of token " + std::to_string(id) + " is not finite");
    if (len < 0 || len > max_len)
      corrupt("token " + std::to_string(id) + " has length " + std::to_string(len) + ", outside [0, " +
              std::to_string(max_len) + "]");
    t.pieces_.push_back(r.string(size_t(len), "a piece"));
    t.scores_.push_back(score);
    const int byte = byte_of_piece(t.pieces_.back());
    t.byte_value_.push_back(byte);
    if (byte >= 0 && t.byte_token_[byte] < 0) t.byte_token_[byte] = id;
    t.ids_.emplace(t.pieces_.back(), id);  // keeps the lowest id of a repeated piece
  }
  if (r.left() != 0)
    corrupt(std::to_string(r.left()) + " bytes follow the " + std::to_string(vocab_size) +
            " tokens (is vocab_size right?)");
  return t;
}

int Tokenizer::lookup(const std::string& piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<int> Tokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int> toks;
  if (!text.empty()) {
    const int space = lookup(" ");
    if (space >= 0) toks.push_back(space);
  }
  // One token per UTF-8 character: a lead byte and up to three continuation bytes.
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (len < 4 && i + len < text.size() && (uint8_t(text[i + len]) & 0xC0) == 0x80) ++len;
    const std::string ch = text.substr(i, len);
    const int id = lookup(ch);
    if (id >= 0) {
      toks.push_back(id);
    } else {
      for (char b : ch) {
        const int byte_id = byte_token_[uint8_t(b)];
        toks.push_back(byte_id >= 0 ? byte_id : kUnk);
      }
    }
    i += len;
  }

  // merge[j]: the token that merging toks[j] and toks[j+1] would give, or -1. Only the two
  // neighbours of a merge change, so each round is a scan over cached candidates.
  auto merge_of = [&](int a, int b) { return lookup(pieces_[size_t(a)] + pieces_[size_t(b)]); };
  std::vector<int> merge;
  for (size_t j = 0; j + 1 < toks.size(); ++j) merge.push_back(merge_of(toks[j], toks[j + 1]));
  for (;;) {
    int best = -1;
    float best_score = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < merge.size(); ++j)
      if (merge[j] >= 0 && scores_[size_t(merge[j])] > best_score) {
        best = int(j);
        best_score = scores_[size_t(merge[j])];
      }
    if (best < 0) break;
    const size_t b = size_t(best);
    toks[b] = merge[b];
    toks.erase(toks.begin() + std::ptrdiff_t(b) + 1);
    merge.erase(merge.begin() + std::ptrdiff_t(b));
    if (b > 0) merge[b - 1] = merge_of(toks[b - 1], toks[b]);
    if (b < merge.size()) merge[b] = merge_of(toks[b], toks[b + 1]);
  }

  std::vector<int> out;
  if (bos) out.push_back(kBos);
  out.insert(out.end(), toks.begin(), toks.end());
  if (eos) out.push_back(kEos);
  return out;
}

std::string Tokenizer::decode(int prev, int token) const {
  if (token < 0 || token >= vocab_size())
    kvbits::fail(StatusCode::invalid_argument, "token id " + std::to_string(token) + " is outside [0, " +
                                                   std::to_string(vocab_size()) + ")");
  const int byte = byte_value_[size_t(token)];
  if (byte >= 0) return std::string(1, char(byte));
  const std::string& p = pieces_[size_t(token)];
  if (prev == kBos && !p.empty() && p[0] == ' ') return p.substr(1);
  return p;
}

std::string Tokenizer::decode(const std::vector<int>& tokens) const {
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == kBos || tokens[i] == kEos) continue;
    text += decode(i > 0 ? tokens[i - 1] : -1, tokens[i]);
  }
  return text;
}

}  // namespace llama2c
