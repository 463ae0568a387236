// kvbits-llama2c with kvbits caches: generate --plan, eval, and their errors.
#include <gtest/gtest.h>

#include <string>

#include "kvbits_plans.hpp"
#include "run_cli.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using namespace llama2c_test;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(KvbitsCli, GenerateWithAPlanRunsOnTheKvbitsCache) {
  const CliResult r = run_cli("generate " + model_args() + " --prompt 'Once upon a time' --steps 10 --plan " +
                              quote(plan_file(8, 8)));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "Once upon a time, there was a little girl named Lily\n");  // 8 bits: the fp32 text
  EXPECT_TRUE(contains(r.err, "kvbits cache on the CPU backend, Block-GTQ K8V8: 20.0 bytes per token per KV head "
                              "(fp16: 32)") ||
              contains(r.err, "kvbits cache on the CUDA (GPU) backend, Block-GTQ K8V8: 20.0 bytes per token per KV "
                              "head (fp16: 32)"))
      << r.err;
}

TEST(KvbitsCli, BackendOptionPicksTheContext) {
  const CliResult cpu = run_cli("generate " + model_args() + " --prompt 'Once upon a time' --steps 4 --backend cpu --plan " +
                                quote(plan_file(8, 8)));
  ASSERT_EQ(cpu.status, 0) << cpu.err;
  EXPECT_TRUE(contains(cpu.err, "kvbits cache on the CPU backend")) << cpu.err;
  const CliResult bad = run_cli("generate " + model_args() + " --steps 4 --backend tpu --plan " + quote(plan_file(8, 8)));
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_TRUE(contains(bad.err, "--backend must be auto, cpu or cuda, got 'tpu'")) << bad.err;
}

TEST(KvbitsCli, EvalPrintsOneRowPerPlan) {
  const std::string json = temp_path("eval.json");
  const CliResult r = run_cli("eval " + model_args() + " --plan " + quote(plan_file(8, 8)) + " --plan " +
                              quote(plan_file(4, 4, KVB_METHOD_UNIFORM_TQ_MSE)) +
                              " --sequences 2 --tokens 32 --gen-tokens 8 --json " + quote(json));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "2 held-out sequences x 32 tokens (seed 2, T = 1); greedy: 8 tokens")) << r.out;
  EXPECT_TRUE(contains(r.out, "| fp32 (reference) | 64.0 | 0.50x | 8 / 8 | 100 % |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| Block-GTQ K8V8 | 20.0 | 1.60x | 8 / 8 | 100 % |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| TQ-MSE K4V4 | ")) << r.out;
  EXPECT_TRUE(contains(r.err, "eval: [2/2] TQ-MSE K4V4")) << r.err;
  const std::vector<uint8_t> bytes = read_bytes(json);
  const std::string text(bytes.begin(), bytes.end());
  EXPECT_TRUE(contains(text, "\"setting\": \"TQ-MSE K4V4\"")) << text;
  EXPECT_TRUE(contains(text, "\"predictions\": 62")) << text;
}

TEST(KvbitsCli, PlanMistakesAreReported) {
  const CliResult both = run_cli("generate " + model_args() + " --cache fp32 --plan " + quote(plan_file(4, 4)));
  EXPECT_EQ(both.status, 2);
  EXPECT_TRUE(contains(both.err, "--plan selects the kvbits cache")) << both.err;
  const CliResult none = run_cli("generate " + model_args() + " --cache kvbits");
  EXPECT_EQ(none.status, 2);
  EXPECT_TRUE(contains(none.err, "--cache kvbits needs --plan FILE")) << none.err;
  const CliResult no_plan = run_cli("eval " + model_args());
  EXPECT_EQ(no_plan.status, 2);
  EXPECT_TRUE(contains(no_plan.err, "missing required option --plan")) << no_plan.err;
  const CliResult missing = run_cli("eval " + model_args() + " --plan " + quote(temp_path("none.kvbplan")));
  EXPECT_EQ(missing.status, 1);
  EXPECT_TRUE(contains(missing.err, "none.kvbplan")) << missing.err;
  EXPECT_TRUE(contains(missing.err, ": io")) << missing.err;
}

}  // namespace
}  // namespace llama2c
