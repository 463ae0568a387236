// kvbits — the CUDA half of a Context, as the core sees it.
//
// The core never includes CUDA headers: it holds a DeviceContext through this interface, and
// the CUDA build implements it in cuda/cuda_context.cpp (make_device_context). Builds without
// CUDA never call these functions (KVB_HAVE_CUDA guards every call site).
#pragma once

#include <memory>

#include "kvbits/context.hpp"

namespace kvbits {
class Plan;
}

namespace kvbits::detail {

class DeviceContext {
 public:
  virtual ~DeviceContext() = default;
  virtual int device() const = 0;
  virtual const DeviceProperties& properties() const = 0;
  // Error(unsupported) naming what is missing when attention on caches of `plan` with pages of
  // `page_size` tokens cannot run on this device (the capability query of the C API).
  virtual void check_attention_support(const Plan& plan, uint32_t page_size) const = 0;
};

// Visible CUDA devices; 0 without a driver or a GPU (never throws).
int cuda_device_count() noexcept;
// Opens device `device`: Error(invalid_argument) for an ordinal out of range, Error(device_error)
// with the CUDA message when it cannot be used.
std::unique_ptr<DeviceContext> make_device_context(int device);

}  // namespace kvbits::detail
