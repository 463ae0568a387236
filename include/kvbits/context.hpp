// kvbits — a context: one backend (CPU reference or one CUDA device) and its workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kvbits {

enum class Backend : uint8_t { cpu = 0, cuda = 1, automatic = 2 };
const char* backend_name(Backend b) noexcept;

struct ContextConfig {
  Backend backend = Backend::automatic;  // automatic: CUDA if a device is present, else CPU
  int device = 0;                        // CUDA device ordinal
  uint32_t n_threads = 0;                // CPU worker threads; 0 = hardware concurrency
};

class ThreadPool;
namespace detail {
class DeviceContext;  // the CUDA half of a context (src/context/device_context.hpp)
}

// What a CUDA context read off its device when it was created.
struct DeviceProperties {
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int sm_count = 0;                    // multiprocessors
  size_t shared_memory_per_block = 0;  // bytes a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin)
  size_t global_memory = 0;            // bytes
};

class Context {
 public:
  // `automatic` resolves to CUDA (device cfg.device) when this build has CUDA and the machine
  // a device, else to the CPU. Error(unsupported) if CUDA is asked for and this build or
  // machine has none; Error(invalid_argument) for n_threads > 1024, an unknown backend or a
  // device ordinal out of range; Error(device_error) with the CUDA message when the device
  // cannot be used; Error(out_of_memory) if the worker threads cannot be started.
  // A CUDA context also keeps CPU workers (read-back, quantizer set-up) and a launch workspace
  // in device memory that grows on demand (docs/gpu-decode.md, "CUDA backend").
  explicit Context(const ContextConfig& cfg);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Backend backend() const { return backend_; }
  int device() const { return device_; }  // -1 on the CPU backend
  uint32_t n_threads() const;
  // Properties of the CUDA device; null on the CPU backend.
  const DeviceProperties* device_properties() const;
  // The CUDA half, for kvbits' own GPU code; null on the CPU backend.
  detail::DeviceContext* device_context() const { return cuda_.get(); }

  // Runs fn(i) for i in [0, n) on the worker threads and waits. The first exception thrown by
  // any fn is rethrown here after all work has stopped.
  // [0, n) is cut into min(n, n_threads) contiguous ranges, the same for the same n; the
  // calling thread runs the first. After a throw at index i the other ranges skip their
  // indices above i but run those below it, so the exception rethrown is the one of the
  // lowest failing index, as a serial loop would throw. A nested call (from
  // inside fn) runs inline instead of deadlocking; callers on other threads take turns.
  void parallel_for(size_t n, const std::function<void(size_t)>& fn) const;

 private:
  Backend backend_;
  int device_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<detail::DeviceContext> cuda_;
};

}  // namespace kvbits
