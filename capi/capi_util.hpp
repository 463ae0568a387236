// Shared plumbing of the C API: exception -> kvb_status translation, error reporting (per call
// and per handle), versioned structs and argument checks.
#pragma once

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#include "kvbits.h"
#include "kvbits_config.h"
#include "kvbits/status.hpp"
#include "kvbits/types.hpp"

namespace kvbits::capi {

inline kvb_status report(kvb_error* err, kvb_status status, const char* message) {
  if (err && err->struct_size >= sizeof(kvb_error)) {
    err->status = status;
    std::strncpy(err->message, message, KVB_ERROR_MESSAGE_CAPACITY - 1);
    err->message[KVB_ERROR_MESSAGE_CAPACITY - 1] = '\0';
  }
  return status;
}

// The last failure seen by a handle (a context and everything made from it). A fixed buffer so
// that recording never allocates or throws; a mutex because any thread may record or read.
class ErrorSink {
 public:
  void record(const char* message) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    std::strncpy(text_, message, sizeof text_ - 1);
    text_[sizeof text_ - 1] = '\0';
  }
  // snprintf semantics: copies what fits, returns the full length.
  size_t copy(char* buf, size_t cap) const noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t n = std::strlen(text_);
    if (buf && cap > 0) {
      const size_t k = std::min(n, cap - 1);
      std::memcpy(buf, text_, k);
      buf[k] = '\0';
    }
    return n;
  }

 private:
  mutable std::mutex mu_;
  char text_[2 * KVB_ERROR_MESSAGE_CAPACITY] = {};
};

// Runs `body` and converts whatever it throws into a status plus message, reported through
// `err` and recorded in `sink` (either may be null); never lets an exception cross the C
// boundary.
template <class F>
kvb_status guarded(ErrorSink* sink, kvb_error* err, F&& body) {
  kvb_status status = KVB_ERR_INTERNAL;
  const char* message = "unknown exception";
  std::string text;  // keeps a what() copy alive; what() of a temporary is not ours to keep
  try {
    body();
    return report(err, KVB_OK, "");
  } catch (const Error& e) {
    status = kvb_status(e.code());
    message = e.what();
    if (status == KVB_OK) status = KVB_ERR_INTERNAL;  // an Error must never read as success
    try { text = message; message = text.c_str(); } catch (...) {}
  } catch (const std::bad_alloc&) {
    status = KVB_ERR_OUT_OF_MEMORY;
    message = "out of memory";
  } catch (const std::exception& e) {
    try { text = e.what(); message = text.c_str(); } catch (...) {}
  } catch (...) {
  }
  if (sink) sink->record(message);
  return report(err, status, message);
}

template <class F>
kvb_status guarded(kvb_error* err, F&& body) {
  return guarded(nullptr, err, std::forward<F>(body));
}

[[noreturn]] inline void null_arg(const char* what) {
  fail(StatusCode::null_pointer, std::string(what) + " must not be NULL");
}

[[noreturn]] inline void bad_arg(const std::string& message) { fail(StatusCode::invalid_argument, message); }

// Largest struct_size accepted, so a garbage size cannot make us read far past a struct.
constexpr uint32_t kMaxStructSize = 4096;

// Reads a caller's versioned input struct over `defaults`: min(struct_size, sizeof(T)) bytes.
// A size below the first version is invalid; bytes past sizeof(T) (fields of a newer header)
// must be zero, since ignoring a set field would silently drop what the caller asked for.
template <class T>
T read_versioned(const T* user, const T& defaults, const char* what, size_t first_size = sizeof(T)) {
  T out = defaults;
  if (!user) return out;
  const uint32_t size = user->struct_size;
  if (size < first_size || size > kMaxStructSize)
    bad_arg(std::string(what) + "->struct_size is " + std::to_string(size) + "; set it to sizeof(" + what +
            ") = " + std::to_string(sizeof(T)) + " (the *_default function does)");
  const auto* bytes = reinterpret_cast<const unsigned char*>(user);
  for (size_t i = sizeof(T); i < size; ++i)
    if (bytes[i] != 0)
      fail(StatusCode::unsupported, std::string(what) + " sets a field at byte " + std::to_string(i) +
                                        " that this kvbits (" KVB_VERSION_STRING
                                        ") does not know; update the library");
  std::memcpy(static_cast<void*>(&out), user, std::min<size_t>(size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

// Writes an output struct: min(struct_size, sizeof(T)) bytes, zeroes what a newer caller has
// beyond, keeps the caller's struct_size. Refuses a size below the first version untouched.
template <class T>
void write_versioned(T* user, const T& value, const char* what, size_t first_size = sizeof(T)) {
  const uint32_t size = user->struct_size;
  if (size < first_size || size > kMaxStructSize)
    bad_arg(std::string(what) + "->struct_size is " + std::to_string(size) + "; set it to sizeof(" + what +
            ") = " + std::to_string(sizeof(T)));
  auto* bytes = reinterpret_cast<unsigned char*>(user);
  std::memcpy(bytes, &value, std::min<size_t>(size, sizeof(T)));
  if (size > sizeof(T)) std::memset(bytes + sizeof(T), 0, size - sizeof(T));
  user->struct_size = size;
}

template <class T, size_t N>
void check_reserved_zero(const T (&reserved)[N], const char* what) {
  for (size_t i = 0; i < N; ++i)
    if (reserved[i] != 0) bad_arg(std::string(what) + ".reserved[" + std::to_string(i) + "] must be zero");
}

inline DType to_dtype(kvb_dtype d, const char* what) {
  if (d != KVB_DTYPE_F32 && d != KVB_DTYPE_F16 && d != KVB_DTYPE_BF16)
    bad_arg(std::string(what) + " is " + std::to_string(d) + ", not a kvb_dtype (KVB_DTYPE_F32, _F16 or _BF16)");
  return DType(d);
}

// a * b, refusing overflow of a byte count (sizes the caller's buffers must have).
inline size_t checked_mul(size_t a, size_t b, const char* what) {
  if (a != 0 && b > SIZE_MAX / a) bad_arg(std::string(what) + " overflows the address space");
  return a * b;
}

}  // namespace kvbits::capi
