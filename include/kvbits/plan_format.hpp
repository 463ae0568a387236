// kvbits — reading and writing bit-plan files (docs/plan-format.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvbits/plan.hpp"

namespace kvbits {

// Deterministic: the same Plan always gives the same bytes. Calls plan.validate() first.
std::vector<uint8_t> serialize_plan(const Plan& plan);

// Validates everything; never allocates more than the input size justifies. Throws
// Error(corrupt_data | version_unsupported | out_of_memory) with a precise message
// ("section 'HEAD' checksum mismatch", "truncated: file is 812 bytes, header says 1024", ...).
Plan parse_plan(const uint8_t* data, size_t size);

Plan load_plan_file(const std::string& path);                     // + Error(io_error)
void save_plan_file(const Plan& plan, const std::string& path);   // atomic: temp file + rename

}  // namespace kvbits
