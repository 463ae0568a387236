#include "cuda/cuda_context.hpp"

#include <string>

#include "cuda/cuda_check.hpp"
#include "cuda/decode.hpp"
#include "kvbits/plan.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace detail {

int cuda_device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the "no driver / no device" error
    return 0;
  }
  return n;
}

std::unique_ptr<DeviceContext> make_device_context(int device) {
  return std::make_unique<cuda::CudaContext>(device);
}

}  // namespace detail

namespace cuda {
namespace {

constexpr size_t kMinWorkspace = size_t(1) << 20;

// Keeps the calling thread's current device across a constructor that switches it.
struct DeviceGuard {
  int prev = -1;
  DeviceGuard() { cudaGetDevice(&prev); }
  ~DeviceGuard() {
    if (prev >= 0) cudaSetDevice(prev);
  }
};

}  // namespace

CudaContext::CudaContext(int device) : device_(device) {
  const int n = detail::cuda_device_count();
  if (device < 0 || device >= n)
    fail(StatusCode::invalid_argument,
         "context: CUDA device " + std::to_string(device) + " out of range (" + std::to_string(n) + " devices)");
  DeviceGuard guard;
  check_cuda(cudaSetDevice(device), "context: cudaSetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device), "context: cudaGetDeviceProperties");
  props_.name = prop.name;
  props_.compute_major = prop.major, props_.compute_minor = prop.minor;
  props_.sm_count = prop.multiProcessorCount;
  props_.shared_memory_per_block = prop.sharedMemPerBlockOptin;
  props_.global_memory = prop.totalGlobalMem;
  int pools = 0;
  if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) cudaGetLastError();
  memory_pools_ = pools != 0;
  try {
    check_cuda(cudaEventCreateWithFlags(&last_event_, cudaEventDisableTiming), "context: cudaEventCreate");
    void* p = nullptr;
    check_cuda(cudaMallocHost(&p, kPinnedBytes), "context: cudaMallocHost");
    pinned_ = static_cast<uint8_t*>(p);
    check_cuda(cudaMalloc(&p, kMinWorkspace), "context: cudaMalloc(workspace)");
    ws_ = static_cast<uint8_t*>(p);
    ws_bytes_ = kMinWorkspace;
  } catch (...) {
    if (last_event_) cudaEventDestroy(last_event_);
    if (pinned_) cudaFreeHost(pinned_);
    throw;
  }
}

CudaContext::~CudaContext() {
  DeviceGuard guard;
  cudaSetDevice(device_);
  cudaDeviceSynchronize();  // work of graphs or calls still in flight uses these blocks
  cudaFree(ws_);
  for (void* p : retired_) cudaFree(p);
  cudaFreeHost(pinned_);
  cudaEventDestroy(last_event_);
  cudaGetLastError();
}

void CudaContext::check_attention_support(const Plan& plan, uint32_t page_size) const {
  // Asks the decode kernel's own argument checks: a launch description with the plan's shape
  // and fp16 features and no buffers. A kernel that serves the shape answers null_pointer
  // (missing buffers) without launching; unsupported names what it lacks.
  DecodeParams p;
  p.n_seqs = 1;
  p.n_q_heads = plan.shape.n_q_heads, p.n_kv_heads = plan.shape.n_kv_heads, p.head_dim = plan.shape.head_dim;
  p.page_size = page_size;
  p.sink_tokens = plan.sink_tokens, p.window_tokens = plan.window_tokens;
  for (const LayerPlan& l : plan.layers) p.fp16_layer = p.fp16_layer || l.keep_fp16;
  static const uint32_t dummy[4] = {};
  static const uint16_t* const dummy_blocks[1] = {nullptr};
  if (p.sink_tokens + p.window_tokens > 0 || p.fp16_layer) {
    p.seq_qend = dummy;
    p.fp16_blocks = dummy_blocks;
    p.q = dummy;
  }
  try {
    decode_attention(p, nullptr);
  } catch (const Error& e) {
    if (e.code() == StatusCode::unsupported)
      fail(StatusCode::unsupported, std::string("CUDA attention on this plan: ") + e.what());
    return;  // any other answer is about the missing buffers
  }
}

CudaContext::Call::Call(CudaContext& ctx, void* stream) : ctx_(ctx), lock_(ctx.mu_) {
  stream_ = static_cast<cudaStream_t>(stream);
  int current = -1;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  if (current != ctx.device_) {
    check_cuda(cudaSetDevice(ctx.device_), "cudaSetDevice");
    caller_device_ = current;
  }
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(stream_, &status);
  if (e != cudaSuccess) {
    // The legacy stream while another stream captures globally: treat as capturing.
    cudaGetLastError();
    capturing_ = true;
  } else {
    capturing_ = status != cudaStreamCaptureStatusNone;
  }
  if (capturing_) {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess) {
      prev_mode_ = mode;
      relaxed_ = true;
    } else {
      cudaGetLastError();
    }
  } else if (ctx.has_last_ && ctx.last_stream_ != stream_) {
    const cudaError_t w = cudaStreamWaitEvent(stream_, ctx.last_event_, 0);
    if (w != cudaSuccess) {
      if (caller_device_ >= 0) cudaSetDevice(caller_device_);
      check_cuda(w, "cudaStreamWaitEvent");
    }
  }
}

CudaContext::Call::~Call() {
  if (!capturing_) {
    if (cudaEventRecord(ctx_.last_event_, stream_) == cudaSuccess) {
      ctx_.last_stream_ = stream_;
      ctx_.has_last_ = true;
    } else {
      cudaGetLastError();
    }
  }
  if (relaxed_) cudaThreadExchangeStreamCaptureMode(&prev_mode_);
  if (caller_device_ >= 0) cudaSetDevice(caller_device_);
}

uint8_t* CudaContext::Call::workspace(size_t bytes) {
  if (bytes <= ctx_.ws_bytes_) return ctx_.ws_;
  if (capturing_)
    fail(StatusCode::unsupported, "the context workspace must grow to " + std::to_string(bytes) +
                                      " bytes, which cannot happen while the stream is captured: run the same call "
                                      "once outside the capture first");
  size_t grown = ctx_.ws_bytes_;
  while (grown < bytes) grown *= 2;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, grown);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail(StatusCode::out_of_memory, "the context workspace cannot grow to " + std::to_string(grown) +
                                        " bytes: " + cudaGetErrorString(e));
  }
  ctx_.retired_.push_back(ctx_.ws_);
  ctx_.ws_ = static_cast<uint8_t*>(p);
  ctx_.ws_bytes_ = grown;
  return ctx_.ws_;
}

void CudaContext::Call::sync() { check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

}  // namespace cuda
}  // namespace kvbits
