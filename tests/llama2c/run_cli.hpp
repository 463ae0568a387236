// Test helper: runs the kvbits-llama2c executable of the build (KVBITS_BUILD_DIR) and collects
// its exit status, stdout and stderr.
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "stories.hpp"

namespace llama2c_test {

struct CliResult {
  int status = -1;
  std::string out, err;
};

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

inline CliResult run_cli(const std::string& args) {
  const char* build = std::getenv("KVBITS_BUILD_DIR");
  EXPECT_NE(build, nullptr) << "KVBITS_BUILD_DIR is not set (meson test sets it)";
  const std::string err_path = temp_path("cli_stderr.txt");
  const std::string cmd = quote(std::string(build ? build : ".") + "/samples/llama2c/kvbits-llama2c") + " " + args +
                          " 2>" + quote(err_path);
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  const std::vector<uint8_t> err = read_bytes(err_path);
  r.err.assign(err.begin(), err.end());
  return r;
}

inline std::string model_args() { return "--model " + quote(model_path()) + " --tokenizer " + quote(tokenizer_path()); }

}  // namespace llama2c_test
