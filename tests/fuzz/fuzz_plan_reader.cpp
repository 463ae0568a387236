// libFuzzer target for the plan reader. parse_plan may only ever throw kvbits::Error; a crash,
// any other exception or a sanitizer report is a bug. Each input is tried twice: as given, and
// with its checksums recomputed (reseal) so mutations reach the section decoders instead of
// stopping at a checksum. A plan that is accepted must survive serialize -> parse unchanged.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "plan_file_edit.hpp"

namespace {

void parse_one(const uint8_t* data, size_t size) {
  kvbits::Plan plan;
  try {
    plan = kvbits::parse_plan(data, size);
  } catch (const kvbits::Error&) {
    return;  // refused cleanly
  }
  const std::vector<uint8_t> again = kvbits::serialize_plan(plan);
  if (!(kvbits::parse_plan(again.data(), again.size()) == plan)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse_one(data, size);
  std::vector<uint8_t> resealed(data, data + size);
  kvbits::test::reseal(resealed);
  parse_one(resealed.data(), resealed.size());
  return 0;
}
