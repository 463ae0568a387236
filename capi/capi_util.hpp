// Shared plumbing of the C API: exception -> kvb_status translation and error reporting.
#pragma once

#include <cstring>
#include <new>
#include <string>

#include "kvbits.h"
#include "kvbits/status.hpp"

namespace kvbits::capi {

inline kvb_status report(kvb_error* err, kvb_status status, const char* message) {
  if (err && err->struct_size >= sizeof(kvb_error)) {
    err->status = status;
    std::strncpy(err->message, message, KVB_ERROR_MESSAGE_CAPACITY - 1);
    err->message[KVB_ERROR_MESSAGE_CAPACITY - 1] = '\0';
  }
  return status;
}

// Runs `body` and converts whatever it throws into a status plus message; never lets an
// exception cross the C boundary.
template <class F>
kvb_status guarded(kvb_error* err, F&& body) {
  try {
    body();
    return report(err, KVB_OK, "");
  } catch (const Error& e) {
    return report(err, kvb_status(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return report(err, KVB_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return report(err, KVB_ERR_INTERNAL, e.what());
  } catch (...) {
    return report(err, KVB_ERR_INTERNAL, "unknown exception");
  }
}

[[noreturn]] inline void null_arg(const char* what) {
  fail(StatusCode::null_pointer, std::string(what) + " must not be NULL");
}

}  // namespace kvbits::capi
