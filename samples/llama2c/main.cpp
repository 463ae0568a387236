// kvbits-llama2c: run a llama2.c checkpoint (generate) or record its q/k activations into an
// activation dump for `kvbits calibrate` (capture).
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "capture.hpp"
#include "generate.hpp"
#include "kv_store.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"
#include "model.hpp"
#include "sampler.hpp"
#include "tokenizer.hpp"

namespace {

using namespace llama2c;

constexpr const char* kProgram = "kvbits-llama2c";

// A command-line mistake: reported with a hint to --help, exit status 2.
struct UsageError {
  std::string message;
  std::string help_hint = std::string(kProgram) + " --help";
};

struct Option {
  const char* name;
  const char* value;  // placeholder shown in help
  const char* help;
  const char* default_value;  // nullptr: required (or optional without default, see help)
};

struct Command {
  const char* name;
  const char* summary;
  const char* details;
  std::vector<Option> options;
};

const Command kGenerate = {
    "generate",
    "generate text from a prompt",
    "Prints the prompt followed by up to --steps sampled tokens; generation stops early when the\n"
    "model starts a new story (BOS or EOS). --temperature 0 is greedy decoding.",
    {{"model", "FILE", "llama2.c v0 checkpoint (.bin)", nullptr},
     {"tokenizer", "FILE", "llama2.c tokenizer (tok512.bin format)", nullptr},
     {"prompt", "TEXT", "text to continue", ""},
     {"steps", "N", "new tokens to generate at most", "256"},
     {"temperature", "T", "0 = greedy; > 0 samples from softmax(logits / T)", "0"},
     {"seed", "S", "seed of the SplitMix64 sampler", "1"}}};

const Command kCapture = {
    "capture",
    "record q and k of every layer and position into an activation dump",
    "Runs --sequences sequences of --tokens positions, each starting from BOS and continued by\n"
    "sampling the model itself, or teacher-forces the text of --prompt-file (cut into sequences\n"
    "of --tokens positions, BOS first). Writes layers.N.q [T, n_heads, head_dim] and layers.N.k\n"
    "[T, n_kv_heads, head_dim] (F32) with kvbits.* metadata, see docs/activation-dumps.md.",
    {{"model", "FILE", "llama2.c v0 checkpoint (.bin)", nullptr},
     {"tokenizer", "FILE", "llama2.c tokenizer; required with --prompt-file", ""},
     {"out", "FILE", "activation dump to write (.safetensors)", nullptr},
     {"sequences", "N", "sequences to run (at most this many with --prompt-file)", "8"},
     {"tokens", "N", "positions per sequence, BOS included (<= the model's seq_len)", "256"},
     {"seed", "S", "seed of the SplitMix64 sampler", "1"},
     {"temperature", "T", "sampling temperature (0 = greedy)", "1"},
     {"rope", "pre|post", "record q/k before or after RoPE (same block energies)", "pre"},
     {"prompt-file", "FILE", "teacher-force this text instead of self-sampling", ""},
     {"corpus", "TEXT", "kvbits.corpus text (default: describes what was run)", ""}}};

void print_command_help(const Command& cmd, std::FILE* to) {
  std::fprintf(to, "usage: %s %s [options]\n\n%s.\n%s\n\noptions:\n", kProgram, cmd.name, cmd.summary, cmd.details);
  for (const Option& o : cmd.options) {
    std::string left = std::string("--") + o.name + " " + o.value;
    std::string right = o.help;
    if (o.default_value == nullptr) right += " (required)";
    else if (*o.default_value != '\0') right += std::string(" (default ") + o.default_value + ")";
    std::fprintf(to, "  %-22s %s\n", left.c_str(), right.c_str());
  }
  std::fprintf(to, "  %-22s %s\n", "--help", "show this help");
}

void print_main_help(std::FILE* to) {
  std::fprintf(to,
               "usage: %s <command> [options]\n\n"
               "A small llama2.c-format inference runtime (kvbits %s sample).\n\ncommands:\n",
               kProgram, KVB_VERSION_STRING);
  for (const Command* c : {&kGenerate, &kCapture}) std::fprintf(to, "  %-10s %s\n", c->name, c->summary);
  std::fprintf(to,
               "\n'%s <command> --help' describes a command's options.\n"
               "Exit status: 0 success, 1 runtime error (bad file, I/O), 2 usage error.\n",
               kProgram);
}

// Option values by name, defaults filled in. Returns false when --help was asked for.
bool parse_options(const Command& cmd, int argc, char** argv, std::map<std::string, std::string>* values) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.rfind("--", 0) != 0) throw UsageError{"unexpected argument '" + arg + "'"};
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    bool known = false;
    for (const Option& o : cmd.options) known = known || name == o.name;
    if (!known) throw UsageError{"unknown option '--" + name + "' for " + cmd.name};
    if (!inline_value) {
      if (i + 1 >= argc) throw UsageError{"option '--" + name + "' needs a value"};
      value = argv[++i];
    }
    if (!values->emplace(name, value).second) throw UsageError{"option '--" + name + "' given twice"};
  }
  for (const Option& o : cmd.options) {
    if (values->count(o.name) != 0) continue;
    if (o.default_value == nullptr) throw UsageError{std::string("missing required option --") + o.name};
    (*values)[o.name] = o.default_value;
  }
  return true;
}

// Shortest decimal text of a number (round-trips; locale-free).
template <typename T>
std::string to_text(T x) {
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, x).ptr);
}

template <typename T>
T parse_number(const std::map<std::string, std::string>& v, const char* name, T lo, T hi) {
  const std::string& s = v.at(name);
  T x{};
  const auto r = std::from_chars(s.data(), s.data() + s.size(), x);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || !(x >= lo && x <= hi))
    throw UsageError{std::string("--") + name + " must be a number in [" + to_text(lo) + ", " + to_text(hi) +
                     "], got '" + s + "'"};
  return x;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_generate(const std::map<std::string, std::string>& v) {
  const int steps = parse_number<int>(v, "steps", 0, 1 << 20);
  const float temperature = parse_number<float>(v, "temperature", 0.0f, 1e6f);
  const uint64_t seed = parse_number<uint64_t>(v, "seed", 0, UINT64_MAX);
  const Model model = Model::load(v.at("model"));
  const Tokenizer tokenizer = Tokenizer::load(v.at("tokenizer"), model.config().vocab_size);

  const std::vector<int> prompt = tokenizer.encode(v.at("prompt"), true, false);
  Sampler sampler(temperature, seed);
  FloatKvStore kv(model.config());
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> generated = generate(model, kv, prompt, steps, sampler);
  const double secs = seconds_since(t0);

  std::vector<int> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string text = tokenizer.decode(all);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fprintf(stderr, "%s: %zu prompt + %zu generated tokens in %.3f s (%.0f tok/s)\n", kProgram, prompt.size(),
               generated.size(), secs, double(all.size() - 1) / (secs > 0 ? secs : 1e-9));
  return 0;
}

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    kvbits::fail(kvbits::StatusCode::io_error, "prompt file '" + path + "' is not a readable regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) kvbits::fail(kvbits::StatusCode::io_error, "cannot open prompt file '" + path + "'");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int run_capture(const std::map<std::string, std::string>& v) {
  CaptureOptions o;
  o.sequences = parse_number<int>(v, "sequences", 1, 1 << 20);
  o.tokens = parse_number<int>(v, "tokens", 1, 1 << 20);
  o.seed = parse_number<uint64_t>(v, "seed", 0, UINT64_MAX);
  o.temperature = parse_number<float>(v, "temperature", 0.0f, 1e6f);
  const std::string& rope = v.at("rope");
  if (rope != "pre" && rope != "post") throw UsageError{"--rope must be pre or post, got '" + rope + "'"};
  o.rope = rope == "pre" ? kvbits::RopeApplied::pre : kvbits::RopeApplied::post;
  const std::string& prompt_file = v.at("prompt-file");
  if (!prompt_file.empty() && v.at("tokenizer").empty()) throw UsageError{"--prompt-file needs --tokenizer"};

  const auto t0 = std::chrono::steady_clock::now();
  const Model model = Model::load(v.at("model"));
  const std::string model_name = std::filesystem::path(v.at("model")).stem().string();
  if (!prompt_file.empty()) {
    const Tokenizer tokenizer = Tokenizer::load(v.at("tokenizer"), model.config().vocab_size);
    o.forced_tokens = tokenizer.encode(read_text_file(prompt_file), false, false);
    if (o.forced_tokens.empty()) throw UsageError{"--prompt-file '" + prompt_file + "' holds no text"};
    if (o.tokens < 2) throw UsageError{"--tokens must be >= 2 with --prompt-file"};
  }
  Capture cap = capture_activations(model, o);
  std::string& corpus = cap.metadata.corpus;
  corpus = v.at("corpus");
  if (corpus.empty() && prompt_file.empty())
    corpus = model_name + " self-sampled, " + std::to_string(o.sequences) + "x" + std::to_string(o.tokens) +
             " tokens, seed " + std::to_string(o.seed) + ", temperature " + to_text(o.temperature);
  else if (corpus.empty())
    corpus = std::filesystem::path(prompt_file).filename().string() + " teacher-forced, " +
             std::to_string(cap.sequences.size()) + " sequences, " + std::to_string(cap.metadata.tokens) + " tokens";
  write_capture(v.at("out"), cap);
  std::printf("wrote %s: %u layers, %llu tokens (%zu sequences), %s-RoPE q/k, %.3f s\n  corpus: %s\n  model fingerprint: %s\n",
              v.at("out").c_str(), cap.metadata.shape.n_layers, static_cast<unsigned long long>(cap.metadata.tokens),
              cap.sequences.size(), rope.c_str(), seconds_since(t0), corpus.c_str(),
              cap.metadata.model_fingerprint.c_str());
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2) {
    print_main_help(stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    print_main_help(stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("%s (kvbits %s)\n", kProgram, KVB_VERSION_STRING);
    return 0;
  }
  const Command* cmd = command == kGenerate.name ? &kGenerate : command == kCapture.name ? &kCapture : nullptr;
  if (cmd == nullptr) throw UsageError{"unknown command '" + command + "'"};
  try {
    std::map<std::string, std::string> values;
    if (!parse_options(*cmd, argc - 2, argv + 2, &values)) {
      print_command_help(*cmd, stdout);
      return 0;
    }
    return cmd == &kGenerate ? run_generate(values) : run_capture(values);
  } catch (UsageError& e) {
    e.help_hint = std::string(kProgram) + " " + cmd->name + " --help";
    throw;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s (see '%s')\n", kProgram, e.message.c_str(), e.help_hint.c_str());
    return 2;
  } catch (const kvbits::Error& e) {
    std::fprintf(stderr, "%s: error (%s): %s\n", kProgram, kvbits::status_name(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
    return 1;
  }
}
