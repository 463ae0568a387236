// llama2c — the llama2.c tokenizer file and its sentencepiece-style BPE.
//
// File (little-endian): int32 max_token_length, then per id: float32 merge score, int32 byte
// length, the piece's raw bytes. The vocabulary size is not stored; it is the model's.
// Pieces "<0xHH>" are byte-fallback tokens standing for one raw byte.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace llama2c {

class Tokenizer {
 public:
  static constexpr int kUnk = 0, kBos = 1, kEos = 2;

  // Error(io_error | corrupt_data): lengths outside [0, max_token_length], truncation, or
  // bytes left over after vocab_size entries.
  static Tokenizer load(const std::string& path, int vocab_size);

  // Sentencepiece-style encoding: optional BOS, a dummy-prefix space before non-empty text,
  // one token per UTF-8 character (byte tokens for characters not in the vocabulary, <unk>
  // where those are missing too), then repeatedly the adjacent pair whose merged piece has
  // the highest score is merged (leftmost on ties), until no pair merges.
  std::vector<int> encode(const std::string& text, bool bos, bool eos) const;

  // Bytes of `token` when it follows `prev`: byte tokens give their byte, and a piece that
  // follows BOS loses its leading space (the dummy prefix). Error(invalid_argument) for an id
  // out of range.
  std::string decode(int prev, int token) const;
  // Text of a token sequence: BOS/EOS produce nothing, the rest as decode(previous, token).
  std::string decode(const std::vector<int>& tokens) const;

  int vocab_size() const { return int(pieces_.size()); }
  const std::string& piece(int id) const { return pieces_.at(size_t(id)); }
  float score(int id) const { return scores_.at(size_t(id)); }

 private:
  int lookup(const std::string& piece) const;  // -1 when absent

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int> byte_value_;                  // per id: the byte of a <0xHH> piece, or -1
  int byte_token_[256] = {};                     // byte -> its <0xHH> id, or -1
  std::unordered_map<std::string, int> ids_;     // piece -> lowest id with that piece
};

}  // namespace llama2c
