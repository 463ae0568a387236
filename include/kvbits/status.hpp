// kvbits — error model of the C++ core.
//
// The core reports failures by throwing kvbits::Error, which carries a StatusCode whose
// numeric values are pinned: the C API (capi/kvbits.h) returns exactly these numbers as
// kvb_status. Code that catches an Error must leave every object as it was before the call.
#pragma once

#include <stdexcept>
#include <string>

namespace kvbits {

enum class StatusCode : int {
  ok = 0,
  invalid_argument = 1,     // a value is out of its documented range
  null_pointer = 2,         // a required pointer or handle is null
  shape_mismatch = 3,       // tensor/plan shapes do not agree
  unsupported = 4,          // a valid request this build or backend cannot serve
  corrupt_data = 5,         // a file or buffer fails validation (checksum, bounds, ...)
  version_unsupported = 6,  // a file needs a format version or feature we do not know
  io_error = 7,             // open/read/write failed
  out_of_memory = 8,        // an allocation failed or a size is absurd
  capacity_exhausted = 9,   // the cache's page pool is full
  not_found = 10,           // unknown sequence id, missing tensor name, ...
  internal = 11,            // a bug in kvbits
  device_error = 12,        // the CUDA runtime reported an error
};

// Stable lower-case name of a status ("invalid_argument"), never null.
const char* status_name(StatusCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(StatusCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  StatusCode code() const noexcept { return code_; }

 private:
  StatusCode code_;
};

[[noreturn]] void fail(StatusCode code, const std::string& message);

}  // namespace kvbits
