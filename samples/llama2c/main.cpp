// kvbits-llama2c: run a llama2.c checkpoint (generate, with an fp32 or a kvbits KV cache),
// record its q/k activations into an activation dump for `kvbits calibrate` (capture), or judge
// kvbits plans against the fp32 cache (eval).
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cache_eval.hpp"
#include "capture.hpp"
#include "eval_report.hpp"
#include "generate.hpp"
#include "kv_store.hpp"
#include "kivi_kv_store.hpp"
#include "kvbits_kv_store.hpp"
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
  bool repeatable = false;    // may be given several times
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
     {"seed", "S", "seed of the SplitMix64 sampler", "1"},
     {"cache", "fp32|kvbits", "fp32 (exact) or kvbits (needs --plan); default: kvbits when --plan is given", ""},
     {"plan", "FILE", "kvbits bit plan for this model (from `kvbits calibrate`)", ""},
     {"backend", "auto|cpu|cuda", "where the kvbits cache lives; auto: the GPU when there is one", "auto"}}};

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

const Command kEval = {
    "eval",
    "judge kvbits plans (and KIVI) against the fp32 cache on held-out text",
    "Samples --sequences sequences of --tokens positions from the fp32 model (BOS first, then\n"
    "sampled at --temperature with --seed; use another seed than the calibration capture), runs\n"
    "them teacher-forced with each plan's kvbits cache, and greedily continues --prompt for\n"
    "--gen-tokens tokens with every cache. Prints a Markdown table: bytes per token per KV head\n"
    "and compression vs fp16, leading greedy tokens equal to fp32 and the overall match,\n"
    "perplexity (and its change vs fp32), mean KL(p_fp32 || p_plan) in nats, top-1 agreement.\n"
    "--kivi BITS adds KIVI at K<BITS>V<BITS>, simulated exactly (per-channel keys in G-token\n"
    "groups, per-token values, an fp16 residual of R tokens; every teacher-forced position is a\n"
    "decode step, the greedy prompt is a prefill). At least one --plan or --kivi is needed.",
    {{"model", "FILE", "llama2.c v0 checkpoint (.bin)", nullptr},
     {"tokenizer", "FILE", "llama2.c tokenizer (tok512.bin format)", nullptr},
     {"plan", "FILE", "kvbits bit plan to judge", "", true},
     {"kivi", "BITS", "also judge KIVI with BITS-bit keys and values, 1-8", "", true},
     {"kivi-group", "G", "KIVI group: tokens per key group, channels per value group", "32"},
     {"kivi-residual", "R", "KIVI fp16 residual length, a multiple of G", "32"},
     {"sequences", "N", "held-out sequences", "8"},
     {"tokens", "N", "positions per sequence, BOS included (<= the model's seq_len)", "256"},
     {"seed", "S", "seed of the SplitMix64 sampler of the held-out sequences", "2"},
     {"temperature", "T", "sampling temperature of the held-out sequences", "1"},
     {"prompt", "TEXT", "prompt of the greedy comparison", "Once upon a time"},
     {"gen-tokens", "N", "greedy tokens to generate after the prompt", "128"},
     {"json", "FILE", "also write the numbers (and greedy token ids) as JSON", ""},
     {"backend", "auto|cpu|cuda", "where the kvbits caches live; auto: the GPU when there is one", "auto"}}};

const Command* const kCommands[] = {&kGenerate, &kCapture, &kEval};

void print_command_help(const Command& cmd, std::FILE* to) {
  std::fprintf(to, "usage: %s %s [options]\n\n%s.\n%s\n\noptions:\n", kProgram, cmd.name, cmd.summary, cmd.details);
  for (const Option& o : cmd.options) {
    std::string left = std::string("--") + o.name + " " + o.value;
    std::string right = o.help;
    if (o.default_value == nullptr) right += " (required)";
    else if (*o.default_value != '\0') right += std::string(" (default ") + o.default_value + ")";
    if (o.repeatable) right += " (repeatable)";
    std::fprintf(to, "  %-22s %s\n", left.c_str(), right.c_str());
  }
  std::fprintf(to, "  %-22s %s\n", "--help", "show this help");
}

void print_main_help(std::FILE* to) {
  std::fprintf(to,
               "usage: %s <command> [options]\n\n"
               "A small llama2.c-format inference runtime (kvbits %s sample).\n\ncommands:\n",
               kProgram, KVB_VERSION_STRING);
  for (const Command* c : kCommands) std::fprintf(to, "  %-10s %s\n", c->name, c->summary);
  std::fprintf(to,
               "\n'%s <command> --help' describes a command's options.\n"
               "Exit status: 0 success, 1 runtime error (bad file, I/O), 2 usage error.\n",
               kProgram);
}

// Option values by name, defaults filled in; the values of repeatable options go to
// (*repeated)[name] instead, in order, and *given collects the names on the command line.
// Returns false when --help was asked for.
bool parse_options(const Command& cmd, int argc, char** argv, std::map<std::string, std::string>* values,
                   std::map<std::string, std::vector<std::string>>* repeated, std::set<std::string>* given) {
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
    const Option* option = nullptr;
    for (const Option& o : cmd.options)
      if (name == o.name) option = &o;
    if (option == nullptr) throw UsageError{"unknown option '--" + name + "' for " + cmd.name};
    if (!inline_value) {
      if (i + 1 >= argc) throw UsageError{"option '--" + name + "' needs a value"};
      value = argv[++i];
    }
    given->insert(name);
    if (option->repeatable) (*repeated)[name].push_back(value);
    else if (!values->emplace(name, value).second) throw UsageError{"option '--" + name + "' given twice"};
  }
  for (const Option& o : cmd.options) {
    if (o.repeatable && repeated->count(o.name) == 0 && o.default_value == nullptr)
      throw UsageError{std::string("missing required option --") + o.name};
    if (o.repeatable || values->count(o.name) != 0) continue;
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
T parse_text(const std::string& s, const char* name, T lo, T hi) {
  T x{};
  const auto r = std::from_chars(s.data(), s.data() + s.size(), x);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || !(x >= lo && x <= hi))
    throw UsageError{std::string("--") + name + " must be a number in [" + to_text(lo) + ", " + to_text(hi) +
                     "], got '" + s + "'"};
  return x;
}

template <typename T>
T parse_number(const std::map<std::string, std::string>& v, const char* name, T lo, T hi) {
  return parse_text<T>(v.at(name), name, lo, hi);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "Block-GTQ K3V3", "TQ-MSE K2V2", with what the plan keeps in fp16.
std::string setting_name(const kvb_plan_info& info) {
  std::string name = info.method == KVB_METHOD_BLOCK_GTQ ? "Block-GTQ" : "TQ-MSE";
  name += " K" + to_text(info.k_avg_bits) + "V" + std::to_string(info.v_bits);
  if (info.n_fp16_layers > 0) name += " +" + std::to_string(info.n_fp16_layers) + " fp16 layers";
  if (info.sink_tokens > 0) name += " sink " + std::to_string(info.sink_tokens);
  if (info.window_tokens > 0) name += " window " + std::to_string(info.window_tokens);
  return name;
}

kvb_backend parse_backend(const std::map<std::string, std::string>& v) {
  const std::string& b = v.at("backend");
  if (b == "auto") return KVB_BACKEND_AUTO;
  if (b == "cpu") return KVB_BACKEND_CPU;
  if (b == "cuda") return KVB_BACKEND_CUDA;
  throw UsageError{"--backend must be auto, cpu or cuda, got '" + b + "'"};
}

const char* backend_label(kvb_backend b) { return b == KVB_BACKEND_CUDA ? "CUDA (GPU)" : "CPU"; }

// --cache / --plan of generate: the exact fp32 cache, or a kvbits cache of the plan.
std::unique_ptr<KvStore> make_kv_store(const Config& config, const std::string& cache, const std::string& plan,
                                       kvb_backend backend) {
  if (cache != "" && cache != "fp32" && cache != "kvbits")
    throw UsageError{"--cache must be fp32 or kvbits, got '" + cache + "'"};
  if (cache == "fp32" && !plan.empty()) throw UsageError{"--plan selects the kvbits cache; drop --cache fp32"};
  if (cache == "kvbits" && plan.empty()) throw UsageError{"--cache kvbits needs --plan FILE"};
  if (plan.empty()) return std::make_unique<FloatKvStore>(config);
  auto store = std::make_unique<KvbitsKvStore>(config, plan, 1, backend);
  const kvb_plan_info& info = store->plan_info();
  std::fprintf(stderr, "%s: kvbits cache on the %s backend, %s: %.1f bytes per token per KV head (fp16: %u)\n",
               kProgram, backend_label(store->backend()), setting_name(info).c_str(), info.bytes_per_token_per_head,
               4 * info.head_dim);
  return store;
}

int run_generate(const std::map<std::string, std::string>& v) {
  const int steps = parse_number<int>(v, "steps", 0, 1 << 20);
  const float temperature = parse_number<float>(v, "temperature", 0.0f, 1e6f);
  const uint64_t seed = parse_number<uint64_t>(v, "seed", 0, UINT64_MAX);
  const Model model = Model::load(v.at("model"));
  const Tokenizer tokenizer = Tokenizer::load(v.at("tokenizer"), model.config().vocab_size);

  const std::vector<int> prompt = tokenizer.encode(v.at("prompt"), true, false);
  Sampler sampler(temperature, seed);
  std::unique_ptr<KvStore> kv = make_kv_store(model.config(), v.at("cache"), v.at("plan"), parse_backend(v));
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> generated = generate(model, *kv, prompt, steps, sampler);
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

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) kvbits::fail(kvbits::StatusCode::io_error, "cannot write '" + path + "'");
}

// --kivi BITS (repeatable) with --kivi-group / --kivi-residual: one KIVI setting per BITS.
std::vector<KiviStoreOptions> kivi_settings(const std::map<std::string, std::string>& v,
                                            const std::vector<std::string>& bits, const Config& config) {
  std::vector<KiviStoreOptions> settings;
  for (const std::string& b : bits) {
    KiviStoreOptions k;
    k.bits = parse_text<int>(b, "kivi", 1, 8);
    k.group = parse_number<uint32_t>(v, "kivi-group", 1, 1u << 16);
    k.residual = parse_number<uint32_t>(v, "kivi-residual", 1, 1u << 16);
    for (const KiviStoreOptions& s : settings)
      if (s.bits == k.bits) throw UsageError{"--kivi " + b + " given twice"};
    try {
      const KiviKvStore probe(config, k);  // refuses R that is not a multiple of G
    } catch (const kvbits::Error& e) {
      throw UsageError{std::string("--kivi-group / --kivi-residual: ") + e.what()};
    }
    settings.push_back(k);
  }
  return settings;
}

int run_eval(const std::map<std::string, std::string>& v, const std::map<std::string, std::vector<std::string>>& repeated,
             const std::set<std::string>& given) {
  const auto list = [&](const char* name) {
    const auto it = repeated.find(name);
    return it == repeated.end() ? std::vector<std::string>() : it->second;
  };
  const std::vector<std::string> plans = list("plan"), kivi_bits = list("kivi");
  for (const char* name : {"kivi-group", "kivi-residual"})
    if (kivi_bits.empty() && given.count(name) != 0) throw UsageError{std::string("--") + name + " needs --kivi BITS"};
  if (plans.empty() && kivi_bits.empty()) throw UsageError{"missing required option --plan (or --kivi BITS)"};
  EvalOptions o;
  o.sequences = parse_number<int>(v, "sequences", 1, 1 << 16);
  o.tokens = parse_number<int>(v, "tokens", 2, 1 << 20);
  o.seed = parse_number<uint64_t>(v, "seed", 0, UINT64_MAX);
  o.temperature = parse_number<float>(v, "temperature", 0.0f, 1e6f);
  o.gen_tokens = parse_number<int>(v, "gen-tokens", 0, 1 << 20);
  const Model model = Model::load(v.at("model"));
  const Config& c = model.config();
  const Tokenizer tokenizer = Tokenizer::load(v.at("tokenizer"), c.vocab_size);
  o.prompt = tokenizer.encode(v.at("prompt"), true, false);
  if (o.tokens > c.seq_len) throw UsageError{"--tokens must be <= the model's seq_len " + std::to_string(c.seq_len)};
  if (o.prompt.size() + size_t(o.gen_tokens) > size_t(c.seq_len))
    throw UsageError{"the prompt (" + std::to_string(o.prompt.size()) + " tokens) + --gen-tokens exceeds seq_len " +
                     std::to_string(c.seq_len)};
  const std::vector<KiviStoreOptions> kivi = kivi_settings(v, kivi_bits, c);
  // Every plan is opened before the long runs, so a wrong file fails at once.
  std::vector<EvalRow> rows(plans.size() + kivi.size());
  const kvb_backend backend = parse_backend(v);
  for (size_t i = 0; i < plans.size(); ++i) {
    const KvbitsKvStore probe(c, plans[i], 1, backend);
    if (i == 0) std::fprintf(stderr, "eval: kvbits caches on the %s backend\n", backend_label(probe.backend()));
    rows[i].setting = setting_name(probe.plan_info());
    rows[i].plan_path = plans[i];
    // Packed bytes, and the fp16 sink / window rows averaged over the held-out sequence (as
    // KIVI's residual below).
    rows[i].bytes_per_token_head = probe.bytes_per_token_per_head(o.tokens);
  }
  for (size_t i = 0; i < kivi.size(); ++i) {
    EvalRow& row = rows[plans.size() + i];
    row.setting = kivi_setting_name(kivi[i]);
    row.kivi = kivi[i];
    // The lab's accounting, with the fp16 residual averaged over a held-out sequence.
    row.bytes_per_token_head = KiviKvStore(c, kivi[i]).bytes_per_token_per_head(o.tokens);
  }

  auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "eval: fp32 reference, %d sequences x %d tokens + %d greedy tokens ...", o.sequences,
               o.tokens, o.gen_tokens);
  const Reference ref = run_reference(model, o);
  std::fprintf(stderr, " %.1f s\n", seconds_since(t0));
  for (size_t i = 0; i < rows.size(); ++i) {
    t0 = std::chrono::steady_clock::now();
    const bool is_plan = i < plans.size();
    std::fprintf(stderr, "eval: [%zu/%zu] %s (%s) ...", i + 1, rows.size(), rows[i].setting.c_str(),
                 is_plan ? std::filesystem::path(plans[i]).filename().string().c_str() : "simulated");
    if (is_plan) {
      rows[i].score = score_cache(model, ref, o, [&] { return std::make_unique<KvbitsKvStore>(c, plans[i], 1, backend); });
    } else {
      const KiviStoreOptions setting = *rows[i].kivi;
      rows[i].score = score_cache(model, ref, o, [&](int prompt_tokens) {
        KiviStoreOptions k = setting;
        k.prefill = prompt_tokens;  // KIVI prefills a prompt; teacher-forced tokens are decode steps
        return std::make_unique<KiviKvStore>(c, k);
      });
    }
    rows[i].seconds = seconds_since(t0);
    std::fprintf(stderr, " %.1f s\n", rows[i].seconds);
  }
  rows.insert(rows.begin(), reference_row(ref, c.head_dim()));
  const std::string md = eval_markdown(ref, o, c.head_dim(), rows);
  std::fwrite(md.data(), 1, md.size(), stdout);
  if (!v.at("json").empty()) write_text_file(v.at("json"), eval_json(ref, o, c.head_dim(), rows));
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
  const Command* cmd = nullptr;
  for (const Command* c : kCommands)
    if (command == c->name) cmd = c;
  if (cmd == nullptr) throw UsageError{"unknown command '" + command + "'"};
  try {
    std::map<std::string, std::string> values;
    std::map<std::string, std::vector<std::string>> repeated;
    std::set<std::string> given;
    if (!parse_options(*cmd, argc - 2, argv + 2, &values, &repeated, &given)) {
      print_command_help(*cmd, stdout);
      return 0;
    }
    if (cmd == &kEval) return run_eval(values, repeated, given);
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
