#include "kvbits/status.hpp"

namespace kvbits {

const char* status_name(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::ok: return "ok";
    case StatusCode::invalid_argument: return "invalid_argument";
    case StatusCode::null_pointer: return "null_pointer";
    case StatusCode::shape_mismatch: return "shape_mismatch";
    case StatusCode::unsupported: return "unsupported";
    case StatusCode::corrupt_data: return "corrupt_data";
    case StatusCode::version_unsupported: return "version_unsupported";
    case StatusCode::io_error: return "io_error";
    case StatusCode::out_of_memory: return "out_of_memory";
    case StatusCode::capacity_exhausted: return "capacity_exhausted";
    case StatusCode::not_found: return "not_found";
    case StatusCode::internal: return "internal";
    case StatusCode::device_error: return "device_error";
  }
  return "unknown_status";
}

void fail(StatusCode code, const std::string& message) { throw Error(code, message); }

}  // namespace kvbits
