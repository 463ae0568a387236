// Test helpers: the bundled stories260K model (found via KVBITS_DATA_DIR) and temp paths.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../temp_dir.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

namespace llama2c_test {

inline std::string data_path(const std::string& name) {
  const char* dir = std::getenv("KVBITS_DATA_DIR");
  EXPECT_NE(dir, nullptr) << "KVBITS_DATA_DIR is not set (meson test sets it)";
  return std::string(dir ? dir : "data") + "/stories260K/" + name;
}
inline std::string model_path() { return data_path("stories260K.bin"); }
inline std::string tokenizer_path() { return data_path("tok512.bin"); }

using kvbits_test::temp_path;

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// Loaded once per test binary.
inline const llama2c::Model& stories_model() {
  static const llama2c::Model model = llama2c::Model::load(model_path());
  return model;
}
inline const llama2c::Tokenizer& stories_tokenizer() {
  static const llama2c::Tokenizer tok = llama2c::Tokenizer::load(tokenizer_path(), 512);
  return tok;
}

}  // namespace llama2c_test
