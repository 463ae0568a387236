#include "thread_pool.hpp"

#include <string>
#include <system_error>

#include "kvbits/status.hpp"

namespace kvbits {
namespace {

// The pool whose job the current thread is executing (nested calls then run inline).
thread_local const ThreadPool* tl_active_pool = nullptr;

struct ActivePoolScope {
  const ThreadPool* saved;
  explicit ActivePoolScope(const ThreadPool* p) : saved(tl_active_pool) { tl_active_pool = p; }
  ~ActivePoolScope() { tl_active_pool = saved; }
};

size_t part_begin(size_t n, uint32_t parts, uint32_t p) { return size_t(uint64_t(n) * p / parts); }

}  // namespace

ThreadPool::ThreadPool(uint32_t n_threads) {
  if (n_threads < 1) n_threads = 1;
  try {
    workers_.reserve(n_threads - 1);
    for (uint32_t w = 1; w < n_threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  } catch (const std::system_error& e) {
    stop_workers();
    fail(StatusCode::out_of_memory, "context: could not start " + std::to_string(n_threads - 1) +
                                        " worker threads (" + e.what() + ")");
  } catch (const std::bad_alloc&) {
    stop_workers();
    fail(StatusCode::out_of_memory, "context: out of memory starting worker threads");
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

void ThreadPool::run(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (workers_.empty() || n == 1 || tl_active_pool == this) {
    ActivePoolScope scope(this);
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> caller_lock(caller_mu_);
  const uint32_t parts = n < size() ? uint32_t(n) : size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_n_ = n;
    job_parts_ = parts;
    parts_left_ = parts - 1;
    job_fn_ = &fn;
    failed_ = false;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_part(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return parts_left_ == 0; });
    job_fn_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::run_part(uint32_t part) {
  ActivePoolScope scope(this);
  const size_t end = part_begin(job_n_, job_parts_, part + 1);
  for (size_t i = part_begin(job_n_, job_parts_, part); i < end; ++i) {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      (*job_fn_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failed_.load() || i < error_index_) {
        error_index_ = i;
        error_ = std::current_exception();
      }
      failed_ = true;
      return;
    }
  }
}

void ThreadPool::worker_loop(uint32_t part) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (part >= job_parts_) continue;  // fewer indices than threads: nothing for this one
    }
    run_part(part);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --parts_left_;
    }
    done_.notify_one();
  }
}

}  // namespace kvbits
