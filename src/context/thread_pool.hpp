// kvbits — a fixed-size pool of worker threads behind Context::parallel_for.
//
// The calling thread takes part in every job, so a pool of n threads starts n - 1 workers and
// a pool of 1 runs everything inline. Work is split into contiguous, equal-as-possible index
// ranges, one per thread, always the same way for the same (n, threads): which thread runs an
// index never depends on timing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvbits {

class ThreadPool {
 public:
  // Error(out_of_memory) if the operating system refuses to start the workers.
  explicit ThreadPool(uint32_t n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  uint32_t size() const { return uint32_t(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, n) and waits. After a throw, the parts still running stop
  // at their next index; the exception of the lowest failing index seen is rethrown. A call
  // from inside a job (or from a second thread while one runs) does not deadlock: nested
  // calls run inline, concurrent callers take turns.
  void run(size_t n, const std::function<void(size_t)>& fn);

 private:
  void worker_loop(uint32_t part);
  void run_part(uint32_t part);
  void stop_workers();

  std::vector<std::thread> workers_;
  std::mutex caller_mu_;  // one job at a time

  std::mutex mu_;  // guards everything below
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  size_t job_n_ = 0;
  uint32_t job_parts_ = 0;
  uint32_t parts_left_ = 0;  // worker parts not yet finished
  const std::function<void(size_t)>* job_fn_ = nullptr;
  std::atomic<bool> failed_{false};  // read without the lock between indices
  size_t error_index_ = 0;
  std::exception_ptr error_;
};

}  // namespace kvbits
