// Scratch files for tests: one directory per test process (several worktrees or builds may
// run the same tests at once), removed when the process exits.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace kvbits_test {

class ScratchDir {
 public:
  ScratchDir() : path_(::testing::TempDir() + "kvbits_test_" + std::to_string(::getpid())) {
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Path of a scratch file `name` in this process's directory.
inline std::string temp_path(const std::string& name) {
  static const ScratchDir dir;
  return dir.path() + "/" + name;
}

}  // namespace kvbits_test
