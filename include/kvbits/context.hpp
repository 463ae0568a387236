// kvbits — a context: one backend (CPU reference or one CUDA device) and its workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace kvbits {

enum class Backend : uint8_t { cpu = 0, cuda = 1, automatic = 2 };
const char* backend_name(Backend b) noexcept;

struct ContextConfig {
  Backend backend = Backend::automatic;  // automatic: CUDA if a device is present, else CPU
  int device = 0;                        // CUDA device ordinal
  uint32_t n_threads = 0;                // CPU worker threads; 0 = hardware concurrency
};

class ThreadPool;

class Context {
 public:
  // Error(unsupported) if CUDA is asked for and this build or machine has none. The CUDA
  // backend arrives with the GPU issue: until then `automatic` resolves to the CPU and `cuda`
  // is always refused. Error(invalid_argument) for n_threads > 1024 or an unknown backend;
  // Error(out_of_memory) if the worker threads cannot be started.
  explicit Context(const ContextConfig& cfg);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Backend backend() const { return backend_; }
  int device() const { return device_; }  // -1 on the CPU backend
  uint32_t n_threads() const;

  // Runs fn(i) for i in [0, n) on the worker threads and waits. The first exception thrown by
  // any fn is rethrown here after all work has stopped.
  // [0, n) is cut into min(n, n_threads) contiguous ranges, the same for the same n; the
  // calling thread runs the first. After a throw the other ranges stop at their next index
  // and the exception of the lowest failing index seen is rethrown. A nested call (from
  // inside fn) runs inline instead of deadlocking; callers on other threads take turns.
  void parallel_for(size_t n, const std::function<void(size_t)>& fn) const;

 private:
  Backend backend_;
  int device_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kvbits
