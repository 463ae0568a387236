// Writes a few valid plan files to seed the fuzzer: make_plan_corpus DIR
#include <cstdio>
#include <string>
#include <vector>

#include "kvbits/plan_format.hpp"
#include "plan_file_edit.hpp"
#include "test_plans.hpp"

namespace {

bool write(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  using namespace kvbits;
  const std::string dir = argv[1];
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  seeds.emplace_back("golden", serialize_plan(test::golden_plan()));
  seeds.emplace_back("stories260k", serialize_plan(test::random_plan(test::stories260k_shape(), 1)));
  test::RandomPlanOptions uniform;
  uniform.min_bits = uniform.max_bits = 2;
  uniform.explicit_rotation = false;
  Plan u = test::random_plan(test::stories260k_shape(), 2, uniform);
  u.method = Method::uniform_tq_mse;
  seeds.emplace_back("uniform", serialize_plan(u));
  // D = 128, two quantized heads: HEAD is large enough to be zstd-compressed.
  ModelShape wide = test::split_half_128_shape();
  wide.n_layers = 4;
  wide.n_q_heads = 2;
  wide.n_kv_heads = 1;
  test::RandomPlanOptions generated;
  generated.fp16_layer = false;
  generated.explicit_rotation = false;
  seeds.emplace_back("d128_zstd", serialize_plan(test::random_plan(wide, 3, generated)));
  // A newer minor version with an unknown optional section.
  test::PlanFile newer = test::split_plan_file(serialize_plan(test::golden_plan()));
  newer.minor = 2;
  newer.sections.insert(newer.sections.begin() + 3, test::FileSection{"XTRA", 0, {1, 2, 3}, 3});
  seeds.emplace_back("newer_minor", test::join_plan_file(newer));
  for (const auto& [name, bytes] : seeds) {
    const std::string path = dir + "/" + name + ".kvbplan";
    if (!write(path, bytes)) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seed plans to %s\n", seeds.size(), dir.c_str());
  return 0;
}
