#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "context/device_context.hpp"
#include "kvbits/context.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"

using namespace kvbits;

namespace {

Context cpu(uint32_t threads) {
  ContextConfig c;
  c.n_threads = threads;
  return Context(c);
}

}  // namespace

// Whether this build and machine have a CUDA device (automatic then picks it).
bool cuda_here() {
#if KVB_HAVE_CUDA
  return detail::cuda_device_count() > 0;
#else
  return false;
#endif
}

TEST(Context, AutomaticPicksCudaOnlyWhereThereIsAGpuAndCudaIsRefusedWithoutOne) {
  ContextConfig c;
  Context ctx(c);
  const bool gpu = cuda_here();
  EXPECT_EQ(ctx.backend(), gpu ? Backend::cuda : Backend::cpu);
  EXPECT_EQ(ctx.device(), gpu ? 0 : -1);
  EXPECT_EQ(ctx.device_properties() != nullptr, gpu);
  if (gpu) {
    EXPECT_GT(ctx.device_properties()->sm_count, 0);
  }
  EXPECT_GE(ctx.n_threads(), 1u);
  EXPECT_EQ(ctx.n_threads(), std::max(1u, std::thread::hardware_concurrency()));
  c.backend = Backend::cuda;
  if (!gpu) {
    try {
      Context refused(c);
      FAIL() << "CUDA without a device (or without CUDA in this build)";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::unsupported);
      EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos);
    }
  } else {
    c.device = 1000;
    try {
      Context refused(c);
      FAIL() << "device 1000";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument) << e.what();
    }
    c.device = 0;
  }
  c.backend = Backend(7);
  EXPECT_THROW(Context{c}, Error);
  c.backend = Backend::cpu;
  c.n_threads = 100000;
  try {
    Context big(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
  }
  EXPECT_STREQ(backend_name(Backend::cpu), "cpu");
  EXPECT_STREQ(backend_name(Backend::cuda), "cuda");
  EXPECT_STREQ(backend_name(Backend::automatic), "automatic");
}

TEST(Context, ParallelForRunsEveryIndexExactlyOnce) {
  for (uint32_t threads : {1u, 2u, 3u, 8u}) {
    Context ctx = cpu(threads);
    EXPECT_EQ(ctx.n_threads(), threads);
    for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(7), size_t(1000)}) {
      std::vector<std::atomic<int>> hits(n);
      ctx.parallel_for(n, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n << " i " << i;
    }
  }
}

TEST(Context, OneThreadRunsInlineOnTheCaller) {
  Context ctx = cpu(1);
  const auto me = std::this_thread::get_id();
  bool all_here = true;
  ctx.parallel_for(100, [&](size_t) { all_here = all_here && std::this_thread::get_id() == me; });
  EXPECT_TRUE(all_here);
}

TEST(Context, PartitioningIsContiguousAndTheSameEveryTime) {
  Context ctx = cpu(4);
  auto owners = [&] {
    std::vector<std::thread::id> who(103);
    ctx.parallel_for(who.size(), [&](size_t i) { who[i] = std::this_thread::get_id(); });
    return who;
  };
  const auto a = owners();
  // Four contiguous ranges [k*103/4, (k+1)*103/4): a thread change only at 25, 51, 77.
  std::set<std::thread::id> distinct(a.begin(), a.end());
  EXPECT_EQ(distinct.size(), 4u);
  for (size_t i = 1; i < a.size(); ++i) {
    const bool boundary = i == 25 || i == 51 || i == 77;
    EXPECT_EQ(a[i] != a[i - 1], boundary) << i;
  }
  EXPECT_EQ(a[0], std::this_thread::get_id());  // the caller takes the first range
  const auto b = owners();
  EXPECT_EQ(a, b);
}

TEST(Context, TheLowestFailingIndexIsRethrownAfterAllWorkStopped) {
  for (uint32_t threads : {1u, 4u, 4u, 4u, 8u}) {
    Context ctx = cpu(threads);
    std::atomic<int> running{0};
    try {
      ctx.parallel_for(8, [&](size_t i) {
        running.fetch_add(1);
        if (i == 2 || i == 6) {
          running.fetch_sub(1);
          throw std::runtime_error("failed at " + std::to_string(i));
        }
        running.fetch_sub(1);
      });
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "failed at 2") << threads;  // as a serial loop, always
    }
    EXPECT_EQ(running.load(), 0);
    // The pool stays usable.
    std::atomic<size_t> sum{0};
    ctx.parallel_for(100, [&](size_t i) { sum += i; });
    EXPECT_EQ(sum.load(), 4950u);
  }
  // Indices below the failing one all run; the one that fails first in time may be higher.
  for (int rep = 0; rep < 20; ++rep) {
    Context ctx = cpu(4);
    std::vector<std::atomic<int>> ran(40);
    try {
      ctx.parallel_for(40, [&](size_t i) {
        ran[i] = 1;
        if (i == 35) throw std::runtime_error("late");
        if (i == 12) {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
          throw std::runtime_error("early");
        }
      });
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "early");
    }
    for (size_t i = 0; i <= 12; ++i) EXPECT_EQ(ran[i].load(), 1) << i;
  }
  Context ctx = cpu(3);
  try {
    ctx.parallel_for(5, [](size_t i) {
      if (i == 4) fail(StatusCode::internal, "boom");
    });
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::internal);
  }
}

TEST(Context, NestedAndConcurrentCallsDoNotDeadlock) {
  Context ctx = cpu(4);
  std::atomic<int> inner{0};
  ctx.parallel_for(8, [&](size_t) { ctx.parallel_for(8, [&](size_t) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 64);
  std::atomic<int> total{0};
  std::thread other([&] {
    for (int r = 0; r < 50; ++r) ctx.parallel_for(16, [&](size_t) { total.fetch_add(1); });
  });
  for (int r = 0; r < 50; ++r) ctx.parallel_for(16, [&](size_t) { total.fetch_add(1); });
  other.join();
  EXPECT_EQ(total.load(), 2 * 50 * 16);
}
