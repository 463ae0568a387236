// kvbits-llama2c eval --kivi: KIVI rows in the table and the JSON, and option mistakes.
#include <gtest/gtest.h>

#include <string>

#include "run_cli.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using namespace llama2c_test;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(KiviCli, EvalPrintsOneRowPerKiviSetting) {
  const std::string json = temp_path("kivi-eval.json");
  const CliResult r = run_cli("eval " + model_args() +
                              " --kivi 4 --kivi 2 --kivi-group 8 --kivi-residual 16 --sequences 2 --tokens 32"
                              " --gen-tokens 8 --json " + quote(json));
  ASSERT_EQ(r.status, 0) << r.err;
  // head_dim 8, 32 tokens, R = 16: half the tokens at 16 B each for K and V, half quantized:
  // K4 8 * 4 / 8 + 4 * 8 / 8 = 8 B, V4 4 + 4 = 8 B -> 24 B; K2/V2 6 + 6 B -> 22 B.
  EXPECT_TRUE(contains(r.out, "| fp32 (reference) | 64.0 | 0.50x | 8 / 8 | 100 % |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| KIVI K4V4 (G8 R16) | 24.0 | 1.33x | ")) << r.out;
  EXPECT_TRUE(contains(r.out, "| KIVI K2V2 (G8 R16) | 22.0 | 1.45x | ")) << r.out;
  EXPECT_LT(r.out.find("KIVI K4V4"), r.out.find("KIVI K2V2"));  // in the order given
  EXPECT_TRUE(contains(r.err, "eval: [2/2] KIVI K2V2 (G8 R16) (simulated)")) << r.err;
  const std::vector<uint8_t> bytes = read_bytes(json);
  const std::string text(bytes.begin(), bytes.end());
  EXPECT_TRUE(contains(text, "\"setting\": \"KIVI K4V4 (G8 R16)\",\n      \"plan\": \"\",\n      \"kivi\": {\n"
                             "        \"bits\": 4,\n        \"group\": 8,\n        \"residual\": 16\n      },\n"
                             "      \"bytes_per_token_per_kv_head\": 24.0,"))
      << text;
  EXPECT_TRUE(contains(text, "\"predictions\": 62")) << text;
}

TEST(KiviCli, DefaultsAreG32R32) {
  const CliResult r = run_cli("eval " + model_args() + " --kivi 3 --sequences 1 --tokens 64 --gen-tokens 4");
  ASSERT_EQ(r.status, 0) << r.err;
  // 64 tokens, R = 32: K3 3 + 1 B and V3 3 + 4 B for half the tokens, 16 + 16 B for the other.
  EXPECT_TRUE(contains(r.out, "| KIVI K3V3 (G32 R32) | 21.5 | 1.49x | ")) << r.out;
}

TEST(KiviCli, KiviMistakesAreUsageErrors) {
  const std::string eval = "eval " + model_args() + " --sequences 1 --tokens 8 --gen-tokens 2";
  struct Case {
    const char* args;
    const char* message;
  };
  for (const Case& c : {Case{" --kivi 9", "--kivi must be a number in [1, 8], got '9'"},
                        Case{" --kivi 0", "--kivi must be a number in [1, 8], got '0'"},
                        Case{" --kivi two", "--kivi must be a number in [1, 8], got 'two'"},
                        Case{" --kivi 2 --kivi 2", "--kivi 2 given twice"},
                        Case{" --kivi 2 --kivi-group 16 --kivi-residual 24",
                             "R must be a positive multiple of the group size G = 16, got 24"},
                        Case{" --kivi 2 --kivi-group 0", "--kivi-group must be a number in [1, 65536], got '0'"},
                        Case{" --kivi 2 --kivi-residual 131072", "--kivi-residual must be a number in [1, 65536]"},
                        Case{" --kivi-group 16", "--kivi-group needs --kivi BITS"},
                        Case{" --kivi-residual 128", "--kivi-residual needs --kivi BITS"},
                        Case{"", "missing required option --plan (or --kivi BITS)"}}) {
    const CliResult r = run_cli(eval + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, c.message)) << c.args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args << ": " << r.out;
  }
}

}  // namespace
}  // namespace llama2c
