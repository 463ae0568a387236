// Context: picks the backend, opens the CUDA device when there is one, and owns the CPU
// worker pool. Builds without CUDA refuse Backend::cuda with Error(unsupported) rather than
// silently running on the CPU; `automatic` then resolves to the CPU.
#include "kvbits/context.hpp"

#include <string>
#include <thread>

#include "context/device_context.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"
#include "thread_pool.hpp"

namespace kvbits {
namespace {

// More workers than this is a configuration mistake, not a machine.
constexpr uint32_t kMaxThreads = 1024;

uint32_t resolve_threads(uint32_t requested) {
  if (requested > kMaxThreads)
    fail(StatusCode::invalid_argument, "context: n_threads " + std::to_string(requested) + " exceeds " +
                                           std::to_string(kMaxThreads));
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw == 0) return 1;
  return hw > kMaxThreads ? kMaxThreads : uint32_t(hw);
}

}  // namespace

const char* backend_name(Backend b) noexcept {
  switch (b) {
    case Backend::cpu: return "cpu";
    case Backend::cuda: return "cuda";
    case Backend::automatic: return "automatic";
  }
  return "unknown";
}

Context::Context(const ContextConfig& cfg) : backend_(Backend::cpu), device_(-1) {
  bool want_cuda = false;
  switch (cfg.backend) {
    case Backend::cpu: break;
    case Backend::automatic:
#if KVB_HAVE_CUDA
      want_cuda = detail::cuda_device_count() > 0;
#endif
      break;
    case Backend::cuda:
#if KVB_HAVE_CUDA
      if (detail::cuda_device_count() == 0)
        fail(StatusCode::unsupported, "context: the CUDA backend was asked for but this machine has no CUDA device "
                                      "(or no driver)");
      want_cuda = true;
      break;
#else
      fail(StatusCode::unsupported, "context: this build of kvbits has no CUDA backend (built without nvcc or with "
                                    "-Dcuda=disabled)");
#endif
    default:
      fail(StatusCode::invalid_argument,
           "context: unknown backend " + std::to_string(static_cast<int>(cfg.backend)));
  }
  const uint32_t threads = resolve_threads(cfg.n_threads);
#if KVB_HAVE_CUDA
  if (want_cuda) {
    if (cfg.device < 0) fail(StatusCode::invalid_argument, "context: device " + std::to_string(cfg.device) + " < 0");
    cuda_ = detail::make_device_context(cfg.device);
    backend_ = Backend::cuda;
    device_ = cfg.device;
  }
#else
  (void)want_cuda;
#endif
  pool_ = std::make_unique<ThreadPool>(threads);
}

Context::~Context() = default;

uint32_t Context::n_threads() const { return pool_->size(); }

const DeviceProperties* Context::device_properties() const { return cuda_ ? &cuda_->properties() : nullptr; }

void Context::parallel_for(size_t n, const std::function<void(size_t)>& fn) const { pool_->run(n, fn); }

}  // namespace kvbits
