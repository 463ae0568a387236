// kvbits — limits of a plan shared by Plan::validate and the file format
// (docs/plan-format.md §4). Internal header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits::plan_limits {

constexpr size_t kMaxToolBytes = 256;
constexpr size_t kMaxCorpusBytes = 4096;
constexpr size_t kMaxDateBytes = 64;
constexpr uint32_t kMaxPolicyTokens = uint32_t(1) << 24;  // sink_tokens, window_tokens
// Explicit rotation rows must have norm^2 within this of 1.
constexpr double kRowNormTolerance = 1e-4;

}  // namespace kvbits::plan_limits
