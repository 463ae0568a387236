// The C API on a CUDA context: a program written for the CPU backend (host tensors, NULL
// stream) runs unchanged and gets the CPU cache's bytes back (read-back bit for bit) and its
// attention to 4e-3 (KVB_PRECISION_FP16, the default) or 1e-4 (KVB_PRECISION_FP32); device tensors and a stream give the host tensors' results; errors leave
// the cache unchanged. Skips when kvb_context_create refuses CUDA (no GPU or a build without
// CUDA), after checking that the refusal is KVB_ERR_UNSUPPORTED.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "capi_test_util.hpp"

using namespace capi_test;

namespace {

// Flip with tests/cuda/test_attention_gpu.cpp once the GPU decode kernel serves fp16 tokens.
constexpr bool kDecodeServesFp16Tokens = true;

constexpr uint32_t L = 2, HQ = 8, HKV = 2, D = 64;

kvb_context* make_context(kvb_backend backend, kvb_status* status) {
  kvb_context_params p;
  kvb_context_params_default(&p);
  p.backend = backend;
  kvb_context* ctx = nullptr;
  kvb_error e = error();
  *status = kvb_context_create(&p, &ctx, &e);
  return ctx;
}

class CApiCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    kvb_status st = KVB_OK;
    gpu_.reset(make_context(KVB_BACKEND_CUDA, &st));
    if (st != KVB_OK) {
      ASSERT_EQ(st, KVB_ERR_UNSUPPORTED) << "a CUDA context fails with another status than unsupported";
      GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
    }
    cpu_ = cpu_context(2);
    const kvb_model_shape s = shape(L, HQ, HKV, D);
    Calibrator cal = observed_calibrator(cpu_.get(), s, 64, 3.0);
    kvb_plan_options o = plan_options(3.0, 3);
    kvb_plan* plan = nullptr;
    KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &plan, err));
    plan_.reset(plan);
  }

  Cache make_cache(kvb_context* ctx) {
    kvb_cache_params p;
    kvb_cache_params_default(&p);
    p.page_size = 16, p.max_pages = 256, p.max_sequences = 16;
    kvb_cache* c = nullptr;
    kvb_error e = error();
    EXPECT_EQ(kvb_cache_create(ctx, plan_.get(), &p, &c, &e), KVB_OK) << e.message;
    return Cache(c);
  }

  Context cpu_, gpu_;
  Plan plan_;
};

// The same appends to both caches, host tensors and a NULL stream, as a CPU program writes them.
void fill_both(kvb_cache* a, kvb_cache* b, std::vector<uint64_t>& seqs) {
  for (int i = 0; i < 3; ++i) {
    uint64_t x = 0, y = 0;
    KVB_ASSERT_OK(kvb_cache_seq_add(a, &x, err));
    KVB_ASSERT_OK(kvb_cache_seq_add(b, &y, err));
    ASSERT_EQ(x, y);
    seqs.push_back(x);
  }
  const uint32_t steps[3][3] = {{40, 3, 17}, {1, 1, 1}, {0, 30, 2}};
  for (int step = 0; step < 3; ++step) {
    uint32_t total = 0;
    for (uint32_t n : steps[step]) total += n;
    for (uint32_t l = 0; l < L; ++l) {
      const auto k = activations(total, HKV, D, 3.0, 500 + 10 * step + l);
      const auto v = activations(total, HKV, D, 1.0, 600 + 10 * step + l);
      KVB_ASSERT_OK(kvb_cache_append(a, l, seqs.data(), steps[step], 3, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
      KVB_ASSERT_OK(kvb_cache_append(b, l, seqs.data(), steps[step], 3, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
    }
  }
}

void expect_same_reads(const kvb_cache* a, const kvb_cache* b, const std::vector<uint64_t>& seqs) {
  for (uint64_t s : seqs)
    for (uint32_t l = 0; l < L; ++l) {
      uint32_t n = 0, m = 0;
      KVB_ASSERT_OK(kvb_cache_seq_length(a, s, l, &n, err));
      KVB_ASSERT_OK(kvb_cache_seq_length(b, s, l, &m, err));
      ASSERT_EQ(n, m);
      std::vector<float> ka(size_t(n) * HKV * D), va(ka.size()), kb(ka.size()), vb(ka.size());
      KVB_ASSERT_OK(kvb_cache_read(a, s, l, 0, n, ka.data(), va.data(), err));
      KVB_ASSERT_OK(kvb_cache_read(b, s, l, 0, n, kb.data(), vb.data(), err));
      EXPECT_EQ(0, std::memcmp(ka.data(), kb.data(), ka.size() * 4)) << "K of seq " << s << " layer " << l;
      EXPECT_EQ(0, std::memcmp(va.data(), vb.data(), va.size() * 4)) << "V of seq " << s << " layer " << l;
    }
}

// tol: 4e-3 at KVB_PRECISION_FP16 (the default; fp16 tensor-core operands), 1e-4 at _FP32. The
// lse bound is relative to |lse| where that exceeds 1: fp16 operands perturb each logit in
// proportion to its terms' magnitudes, and lse follows the largest logits.
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>& got_lse,
                  const std::vector<float>& ref_lse, double tol = 4e-3) {
  for (size_t r = 0; r < ref_lse.size(); ++r) {
    double err = 0, mag = 0;
    for (uint32_t d = 0; d < D; ++d) {
      const double e = std::fabs(double(got[r * D + d]) - ref[r * D + d]);
      err = e == e ? std::max(err, e) : INFINITY;
      mag = std::max(mag, std::fabs(double(ref[r * D + d])));
    }
    EXPECT_LE(err / mag, tol) << "row " << r;
    EXPECT_LE(std::fabs(double(got_lse[r]) - ref_lse[r]), tol * std::max(1.0, std::fabs(double(ref_lse[r]))))
        << "row " << r;
  }
}

}  // namespace

TEST_F(CApiCuda, ContextsReportCuda) {
  kvb_backend b = -1;
  int32_t dev = -1;
  KVB_ASSERT_OK(kvb_context_backend(gpu_.get(), &b, &dev, err));
  EXPECT_EQ(b, KVB_BACKEND_CUDA);
  EXPECT_EQ(dev, 0);
  kvb_status st = KVB_OK;
  Context autoctx(make_context(KVB_BACKEND_AUTO, &st));
  ASSERT_EQ(st, KVB_OK);
  KVB_ASSERT_OK(kvb_context_backend(autoctx.get(), &b, &dev, err));
  EXPECT_EQ(b, KVB_BACKEND_CUDA) << "AUTO picks the GPU when there is one";
}

TEST_F(CApiCuda, ACpuProgramRunsUnchangedOnTheGpu) {
  KVB_ASSERT_OK(kvb_plan_supported(gpu_.get(), plan_.get(), err));
  Cache cc = make_cache(cpu_.get()), gc = make_cache(gpu_.get());
  std::vector<uint64_t> seqs;
  fill_both(cc.get(), gc.get(), seqs);
  if (HasFatalFailure()) return;
  expect_same_reads(cc.get(), gc.get(), seqs);
  kvb_cache_stats a, b;
  a.struct_size = b.struct_size = sizeof a;
  KVB_ASSERT_OK(kvb_cache_get_stats(cc.get(), &a, err));
  KVB_ASSERT_OK(kvb_cache_get_stats(gc.get(), &b, err));
  EXPECT_EQ(0, std::memcmp(&a, &b, sizeof a));
  // Decode with host tensors, fp16 queries.
  std::vector<uint16_t> q(seqs.size() * HQ * D);
  // fp16 bits of +-[1, 2): the exponent of 1.0 with a hashed sign and mantissa.
  for (size_t i = 0; i < q.size(); ++i) q[i] = uint16_t(0x3C00u ^ (uint32_t(i * 2654435761u) & 0x83FFu));
  std::vector<float> ref(q.size()), ref_lse(seqs.size() * HQ), out(q.size(), NAN), lse(ref_lse.size(), NAN);
  for (uint32_t l = 0; l < L; ++l) {
    KVB_ASSERT_OK(kvb_attention_decode(cc.get(), l, seqs.data(), seqs.size(), q.data(), KVB_DTYPE_F16, ref.data(),
                                       ref_lse.data(), nullptr, nullptr, err));
    KVB_ASSERT_OK(kvb_attention_decode(gc.get(), l, seqs.data(), seqs.size(), q.data(), KVB_DTYPE_F16, out.data(),
                                       lse.data(), nullptr, nullptr, err));
    expect_close(out, ref, lse, ref_lse);
    kvb_attention_params fp32;
    kvb_attention_params_default(&fp32);
    fp32.precision = KVB_PRECISION_FP32;
    KVB_ASSERT_OK(kvb_attention_decode(gc.get(), l, seqs.data(), seqs.size(), q.data(), KVB_DTYPE_F16, out.data(),
                                       lse.data(), &fp32, nullptr, err));
    expect_close(out, ref, lse, ref_lse, 1e-4);
  }
  // A fork and more tokens: still the same bytes.
  uint64_t fa = 0, fb = 0;
  KVB_ASSERT_OK(kvb_cache_seq_fork(cc.get(), seqs[1], 20, &fa, err));
  KVB_ASSERT_OK(kvb_cache_seq_fork(gc.get(), seqs[1], 20, &fb, err));
  ASSERT_EQ(fa, fb);
  const uint32_t n = 5;
  for (uint32_t l = 0; l < L; ++l) {
    const auto k = activations(n, HKV, D, 3.0, 900 + l), v = activations(n, HKV, D, 1.0, 910 + l);
    KVB_ASSERT_OK(kvb_cache_append(cc.get(), l, &fa, &n, 1, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
    KVB_ASSERT_OK(kvb_cache_append(gc.get(), l, &fb, &n, 1, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
  }
  seqs.push_back(fa);
  expect_same_reads(cc.get(), gc.get(), seqs);
  KVB_ASSERT_OK(kvb_cache_seq_remove(gc.get(), seqs[0], err));
  KVB_ASSERT_OK(kvb_cache_seq_remove(cc.get(), seqs[0], err));
  seqs.erase(seqs.begin());
  expect_same_reads(cc.get(), gc.get(), seqs);
}

TEST_F(CApiCuda, DeviceTensorsAndAStreamGiveTheHostResults) {
  Cache gc = make_cache(gpu_.get()), cc = make_cache(cpu_.get());
  std::vector<uint64_t> seqs;
  fill_both(cc.get(), gc.get(), seqs);
  if (HasFatalFailure()) return;
  const auto q = activations(seqs.size(), HQ, D, 1.0, 31);
  const size_t rows = seqs.size() * HQ;
  std::vector<float> host_out(rows * D), host_lse(rows);
  KVB_ASSERT_OK(kvb_attention_decode(gc.get(), 1, seqs.data(), seqs.size(), q.data(), KVB_DTYPE_F32, host_out.data(),
                                     host_lse.data(), nullptr, nullptr, err));
  float *dq, *dout, *dlse;
  ASSERT_EQ(cudaMalloc(&dq, q.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dout, rows * D * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dlse, rows * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t st;
  ASSERT_EQ(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), cudaSuccess);
  KVB_ASSERT_OK(kvb_attention_decode(gc.get(), 1, seqs.data(), seqs.size(), dq, KVB_DTYPE_F32, dout, dlse, nullptr,
                                     st, err));
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  std::vector<float> out(rows * D), lse(rows);
  ASSERT_EQ(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(lse.data(), dlse, lse.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(out.data(), host_out.data(), out.size() * 4));
  EXPECT_EQ(0, std::memcmp(lse.data(), host_lse.data(), lse.size() * 4));
  // Device K/V on the stream append the bytes host K/V append.
  const uint32_t one[3] = {1, 1, 1};
  const auto k = activations(3, HKV, D, 3.0, 41), v = activations(3, HKV, D, 1.0, 42);
  float *dk, *dv;
  ASSERT_EQ(cudaMalloc(&dk, k.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dv, v.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dk, k.data(), k.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dv, v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  KVB_ASSERT_OK(kvb_cache_append(gc.get(), 0, seqs.data(), one, 3, dk, dv, KVB_DTYPE_F32, st, err));
  KVB_ASSERT_OK(kvb_cache_append(cc.get(), 0, seqs.data(), one, 3, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  expect_same_reads(cc.get(), gc.get(), seqs);
  cudaFree(dq), cudaFree(dout), cudaFree(dlse), cudaFree(dk), cudaFree(dv);
  cudaStreamDestroy(st);
}

TEST_F(CApiCuda, ErrorsLeaveTheCacheUnchanged) {
  Cache cc = make_cache(cpu_.get()), gc = make_cache(gpu_.get());
  std::vector<uint64_t> seqs;
  fill_both(cc.get(), gc.get(), seqs);
  if (HasFatalFailure()) return;
  const uint32_t n[3] = {2, 2, 2};
  auto k = activations(6, HKV, D, 3.0, 51), v = activations(6, HKV, D, 1.0, 52);
  k[3 * HKV * D + D + 9] = NAN;
  kvb_error ea = error(), eb = error();
  EXPECT_EQ(kvb_cache_append(cc.get(), 1, seqs.data(), n, 3, k.data(), v.data(), KVB_DTYPE_F32, nullptr, &ea),
            KVB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvb_cache_append(gc.get(), 1, seqs.data(), n, 3, k.data(), v.data(), KVB_DTYPE_F32, nullptr, &eb),
            KVB_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(ea.message, eb.message);
  EXPECT_EQ(last_error(gpu_.get()), eb.message);
  expect_same_reads(cc.get(), gc.get(), seqs);
  // Extend on the GPU against the CPU (fp16 tensor-core operands: docs/gpu-extend.md's bound).
  const uint32_t q_len = 1;
  std::vector<float> q(HQ * D, 0.5f), out(q.size(), NAN), ref(q.size());
  ASSERT_EQ(kvb_attention_extend(cc.get(), 0, seqs.data(), &q_len, 1, q.data(), KVB_DTYPE_F32, ref.data(), nullptr,
                                 nullptr, nullptr, &ea),
            KVB_OK)
      << ea.message;
  ASSERT_EQ(kvb_attention_extend(gc.get(), 0, seqs.data(), &q_len, 1, q.data(), KVB_DTYPE_F32, out.data(), nullptr,
                                 nullptr, nullptr, &eb),
            KVB_OK)
      << eb.message;
  for (size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(out[i], ref[i], 4e-3 * (1.0 + std::fabs(ref[i]))) << i;
  // fp32 precision: the CPU backend computes in fp32 anyway; the CUDA extend kernel refuses it
  // and writes nothing.
  kvb_attention_params fp32;
  kvb_attention_params_default(&fp32);
  fp32.precision = KVB_PRECISION_FP32;
  EXPECT_EQ(kvb_attention_extend(cc.get(), 0, seqs.data(), &q_len, 1, q.data(), KVB_DTYPE_F32, ref.data(), nullptr,
                                 &fp32, nullptr, &ea),
            KVB_OK)
      << ea.message;
  std::vector<float> canary(q.size(), 7.0f);
  EXPECT_EQ(kvb_attention_extend(gc.get(), 0, seqs.data(), &q_len, 1, q.data(), KVB_DTYPE_F32, canary.data(), nullptr,
                                 &fp32, nullptr, &eb),
            KVB_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(eb.message).find("fp32"), std::string::npos) << eb.message;
  for (float x : canary) EXPECT_EQ(x, 7.0f);
}

TEST_F(CApiCuda, PlanSupportedSaysWhatTheGpuDecodeLacks) {
  const kvb_model_shape s = shape(L, HQ, HKV, D);
  Calibrator cal = observed_calibrator(cpu_.get(), s, 64, 3.0);
  kvb_plan_options o = plan_options(3.0, 3);
  o.sink_tokens = 4, o.window_tokens = 16;
  kvb_plan* p = nullptr;
  KVB_ASSERT_OK(kvb_calibrator_build_plan(cal.get(), &o, &p, err));
  Plan windowed(p);
  kvb_error e = error();
  const kvb_status st = kvb_plan_supported(gpu_.get(), windowed.get(), &e);
  if (kDecodeServesFp16Tokens) {
    EXPECT_EQ(st, KVB_OK) << e.message;
  } else {
    EXPECT_EQ(st, KVB_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(e.message).find("CUDA attention"), std::string::npos) << e.message;
  }
  // The cache itself works: appends and reads on a CUDA context.
  kvb_cache_params cp;
  kvb_cache_params_default(&cp);
  cp.page_size = 16, cp.max_pages = 64;
  kvb_cache* c = nullptr;
  KVB_ASSERT_OK(kvb_cache_create(gpu_.get(), windowed.get(), &cp, &c, err));
  Cache cache(c);
  EXPECT_EQ(kvb_plan_supported(cpu_.get(), windowed.get(), &e), KVB_OK);
}
