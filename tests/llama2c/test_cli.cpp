// Runs the kvbits-llama2c executable and checks its output and exit status.
#include <gtest/gtest.h>

#include <string>

#include "kvbits/activation_dump.hpp"
#include "run_cli.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using namespace llama2c_test;

using Result = CliResult;

TEST(Cli, GenerateGreedyPrintsTheReferenceText) {
  const Result r = run_cli("generate " + model_args() + " --prompt 'Once upon a time' --steps 10 --temperature 0");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "Once upon a time, there was a little girl named Lily\n");
  EXPECT_NE(r.err.find("5 prompt + 10 generated tokens"), std::string::npos) << r.err;
}

TEST(Cli, CaptureWritesADumpWithDescriptiveMetadata) {
  const std::string out = temp_path("cli_dump.safetensors");
  const Result r = run_cli("capture " + model_args() + " --out " + quote(out) + " --sequences 2 --tokens 16 --seed 3");
  ASSERT_EQ(r.status, 0) << r.err;
  const kvbits::SafetensorsFile file = kvbits::SafetensorsFile::load(out);
  const kvbits::ActivationDump dump = kvbits::view_activation_dump(file);
  EXPECT_EQ(dump.metadata.tokens, 32u);
  EXPECT_EQ(dump.metadata.corpus, "stories260K self-sampled, 2x16 tokens, seed 3, temperature 1");
  EXPECT_EQ(dump.metadata.rope_applied, kvbits::RopeApplied::pre);
  EXPECT_EQ(dump.metadata.model_fingerprint, "48be2bfe231b489d0c9b5a18d38a945f");
}

TEST(Cli, CaptureTeacherForcesAPromptFile) {
  const std::string text = temp_path("prompt.txt"), out = temp_path("cli_forced.safetensors");
  write_bytes(text, {'O', 'n', 'c', 'e', ' ', 'u', 'p', 'o', 'n', ' ', 'a', ' ', 't', 'i', 'm', 'e'});
  const Result r = run_cli("capture " + model_args() + " --out " + quote(out) + " --tokens 3 --rope post --prompt-file " +
                           quote(text));
  ASSERT_EQ(r.status, 0) << r.err;
  const kvbits::SafetensorsFile file = kvbits::SafetensorsFile::load(out);
  const kvbits::ActivationDump dump = kvbits::view_activation_dump(file);
  EXPECT_EQ(dump.metadata.tokens, 6u);  // [BOS, Once, upon], [BOS, a, time]
  EXPECT_EQ(dump.metadata.rope_applied, kvbits::RopeApplied::post);
  EXPECT_EQ(dump.metadata.corpus, "prompt.txt teacher-forced, 2 sequences, 6 tokens");
}

TEST(Cli, HelpExitsZeroAndMistakesExitTwo) {
  for (const char* args : {"--help", "generate --help", "capture --help", "capture --model x -h"}) {
    const Result r = run_cli(args);
    EXPECT_EQ(r.status, 0) << args;
    EXPECT_EQ(r.out.rfind("usage: kvbits-llama2c", 0), 0u) << r.out;
  }
  struct Case {
    std::string args, message;
  };
  for (const Case& c : {Case{"", "usage:"}, Case{"train", "unknown command 'train'"},
                        Case{"generate --bogus 1", "unknown option '--bogus' for generate"},
                        Case{"generate --tokenizer t", "missing required option --model"},
                        Case{"generate --model m --model m", "given twice"},
                        Case{"generate --model", "needs a value"},
                        Case{"generate --model m --tokenizer t --steps 1e3", "--steps must be a number"},
                        Case{"capture --model m --out o --rope sideways", "--rope must be pre or post"},
                        Case{"capture --model m --out o --prompt-file p", "--prompt-file needs --tokenizer"}}) {
    const Result r = run_cli(c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(Cli, RuntimeErrorsExitOneWithTheStatusName) {
  const Result missing = run_cli("generate --model " + quote(temp_path("none.bin")) + " --tokenizer t");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("error (io_error)"), std::string::npos) << missing.err;
  const Result too_long = run_cli("capture " + model_args() + " --out " + quote(temp_path("x.safetensors")) +
                                  " --tokens 600");
  EXPECT_EQ(too_long.status, 1);
  EXPECT_NE(too_long.err.find("error (invalid_argument)"), std::string::npos) << too_long.err;
}

}  // namespace
}  // namespace llama2c
