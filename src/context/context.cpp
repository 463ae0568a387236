// Context: picks the backend and owns the CPU worker pool.
//
// The CUDA backend arrives with the GPU issue. Until then this core library serves only the
// CPU: `automatic` resolves to the CPU and an explicit `cuda` request is refused with
// Error(unsupported) rather than silently running on the CPU.
#include "kvbits/context.hpp"

#include <string>
#include <thread>

#include "kvbits/status.hpp"
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
  switch (cfg.backend) {
    case Backend::cpu:
    case Backend::automatic: break;
    case Backend::cuda:
      fail(StatusCode::unsupported, "context: the CUDA backend is not available yet in this build");
    default:
      fail(StatusCode::invalid_argument,
           "context: unknown backend " + std::to_string(static_cast<int>(cfg.backend)));
  }
  pool_ = std::make_unique<ThreadPool>(resolve_threads(cfg.n_threads));
}

Context::~Context() = default;

uint32_t Context::n_threads() const { return pool_->size(); }

void Context::parallel_for(size_t n, const std::function<void(size_t)>& fn) const { pool_->run(n, fn); }

}  // namespace kvbits
