// Bad input through the C API, table-driven: every function with null handles and pointers,
// zero and huge sizes, unknown dtypes and enums, wrong layers, removed sequences, plans for
// another model, too-small struct sizes. Each row asserts the exact documented status, a
// message through kvb_error and the same text per handle (kvb_context_last_error) when the
// call has a context, NULL out-handles, untouched output buffers, and that nothing changed:
// every sequence is read back byte for byte, lengths and statistics compared, and the
// calibrator's plan rebuilt and compared.
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "capi_test_util.hpp"
#include "kvbits_config.h"

using namespace capi_test;

namespace {

constexpr uint32_t L = 2, HQ = 4, HKV = 2, D = 16;

struct Row {
  const char* name;
  kvb_status want;
  bool recorded;  // the failure is recorded in the fixture's context (the call reaches it)
  std::function<kvb_status(kvb_error*)> call;
};

template <class T>
T* sentinel() {
  static char byte;
  return reinterpret_cast<T*>(&byte);
}

// Runs f(&out) with out preset to garbage and checks the library reset it to NULL.
template <class T, class F>
kvb_status no_handle(F&& f) {
  T* out = sentinel<T>();
  const kvb_status s = f(&out);
  EXPECT_EQ(out, nullptr);
  return s;
}

// Runs f(&id) with id preset and checks it reads KVB_SEQ_NONE afterwards.
template <class F>
kvb_status no_id(F&& f) {
  uint64_t id = 7;
  const kvb_status s = f(&id);
  EXPECT_EQ(id, KVB_SEQ_NONE);
  return s;
}

// A float buffer filled with a pattern; untouched() says whether the library left it alone.
struct Canary {
  explicit Canary(size_t n) : data(n, -12345.0f) {}
  float* get() { return data.data(); }
  bool untouched() const {
    for (float x : data)
      if (x != -12345.0f) return false;
    return true;
  }
  std::vector<float> data;
};

std::vector<uint8_t> bytes_of(const std::vector<float>& x) {
  std::vector<uint8_t> b(x.size() * sizeof(float));
  if (!x.empty()) std::memcpy(b.data(), x.data(), b.size());
  return b;
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    shape_ = shape(L, HQ, HKV, D);
    ctx_ = cpu_context();
    cal_ = observed_calibrator(ctx_.get(), shape_, 32, 4.0);
    kvb_plan_options o = plan_options(3.0, 3);
    o.sink_tokens = 2, o.window_tokens = 3;
    kvb_plan* p = nullptr;
    KVB_ASSERT_OK(kvb_calibrator_build_plan(cal_.get(), &o, &p, err));
    plan_.reset(p);
    other_shape_ = shape(L + 1, HQ, HKV, D);
    auto other_cal = observed_calibrator(ctx_.get(), other_shape_, 16, 4.0);
    KVB_ASSERT_OK(kvb_calibrator_build_plan(other_cal.get(), nullptr, &p, err));
    other_plan_.reset(p);

    kvb_cache_params cp;
    kvb_cache_params_default(&cp);
    cp.page_size = 4, cp.max_pages = 16, cp.max_sequences = 4;
    kvb_cache* c = nullptr;
    KVB_ASSERT_OK(kvb_cache_create(ctx_.get(), plan_.get(), &cp, &c, err));
    cache_.reset(c);
    KVB_ASSERT_OK(kvb_cache_seq_add(cache(), &a_, err));
    KVB_ASSERT_OK(kvb_cache_seq_add(cache(), &b_, err));
    KVB_ASSERT_OK(kvb_cache_seq_add(cache(), &empty_, err));
    KVB_ASSERT_OK(kvb_cache_seq_add(cache(), &removed_, err));
    KVB_ASSERT_OK(kvb_cache_seq_remove(cache(), removed_, err));
    // a: sink, packed pages and window; b: sink, one packed token and window; empty: nothing.
    for (uint32_t l = 0; l < L; ++l) {
      const uint64_t seqs[2] = {a_, b_};
      const uint32_t n[2] = {13, 6};
      const auto k = activations(19, HKV, D, 3.0, 300 + l), v = activations(19, HKV, D, 1.0, 400 + l);
      KVB_ASSERT_OK(kvb_cache_append(cache(), l, seqs, n, 2, k.data(), v.data(), KVB_DTYPE_F32, nullptr, err));
    }
  }

  kvb_cache* cache() { return cache_.get(); }

  // Everything a failed call must leave as it was.
  std::vector<std::vector<uint8_t>> snapshot() {
    std::vector<std::vector<uint8_t>> s;
    for (uint64_t seq : {a_, b_, empty_})
      for (uint32_t l = 0; l < L; ++l) {
        uint32_t len = 0;
        kvb_error e = error();
        EXPECT_EQ(kvb_cache_seq_length(cache(), seq, l, &len, &e), KVB_OK) << e.message;
        s.push_back(bytes_of({float(len)}));
        if (len == 0) continue;
        std::vector<float> k(size_t(len) * HKV * D), v(k.size());
        EXPECT_EQ(kvb_cache_read(cache(), seq, l, 0, len, k.data(), v.data(), &e), KVB_OK) << e.message;
        s.push_back(bytes_of(k));
        s.push_back(bytes_of(v));
      }
    kvb_cache_stats st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    kvb_error e = error();
    EXPECT_EQ(kvb_cache_get_stats(cache(), &st, &e), KVB_OK) << e.message;
    s.emplace_back(reinterpret_cast<const uint8_t*>(&st), reinterpret_cast<const uint8_t*>(&st) + sizeof st);
    const kvb_plan_options o = plan_options(3.0, 3);
    kvb_plan* p = nullptr;
    EXPECT_EQ(kvb_calibrator_build_plan(cal_.get(), &o, &p, &e), KVB_OK) << e.message;
    s.push_back(serialized(p));
    kvb_plan_destroy(p);
    return s;
  }

  void run(const std::vector<Row>& rows) {
    for (const Row& row : rows) {
      SCOPED_TRACE(row.name);
      const auto before = snapshot();
      const std::string text_before = last_error(ctx_.get());
      kvb_error e = error();
      e.status = -1;
      const kvb_status s = row.call(&e);
      EXPECT_EQ(s, row.want) << kvb_status_string(s) << ": " << e.message;
      EXPECT_EQ(e.status, row.want);
      EXPECT_GT(std::strlen(e.message), 0u);
      if (row.recorded)
        EXPECT_EQ(last_error(ctx_.get()), e.message);
      else
        EXPECT_EQ(last_error(ctx_.get()), text_before);
      EXPECT_EQ(row.call(nullptr), row.want) << "same call without kvb_error";
      EXPECT_TRUE(before == snapshot()) << "state changed";
    }
  }

  kvb_model_shape shape_{}, other_shape_{};
  Context ctx_;
  Calibrator cal_;
  Plan plan_, other_plan_;
  Cache cache_;
  uint64_t a_ = 0, b_ = 0, empty_ = 0, removed_ = 0;
};

kvb_context_params context_params() {
  kvb_context_params p;
  kvb_context_params_default(&p);
  p.backend = KVB_BACKEND_CPU;
  p.n_threads = 1;
  return p;
}

kvb_status create_context(const kvb_context_params* p, kvb_error* e) {
  return no_handle<kvb_context>([&](kvb_context** out) { return kvb_context_create(p, out, e); });
}

// A params struct as a newer header would lay it out: our struct plus 8 more bytes.
struct NewerContextParams {
  kvb_context_params known;
  uint64_t future_field;
};

}  // namespace

TEST_F(BadInput, Context) {
  std::vector<Row> rows = {
      {"create: out NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) { return kvb_context_create(nullptr, nullptr, e); }},
      {"create: struct_size 0", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.struct_size = 0;
         return create_context(&p, e);
       }},
      {"create: struct_size 4 (older than the first version)", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.struct_size = 4;
         return create_context(&p, e);
       }},
      {"create: struct_size huge", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.struct_size = 1u << 30;
         return create_context(&p, e);
       }},
      {"create: backend 7", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.backend = 7;
         return create_context(&p, e);
       }},
      {"create: device -1", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.device = -1;
         return create_context(&p, e);
       }},
      {"create: n_threads huge", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.n_threads = 1u << 20;
         return create_context(&p, e);
       }},
      {"create: reserved not zero", KVB_ERR_INVALID_ARGUMENT, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.reserved[3] = 1;
         return create_context(&p, e);
       }},
      {"create: a newer header's field set", KVB_ERR_UNSUPPORTED, false,
       [](kvb_error* e) {
         NewerContextParams p{context_params(), 1};
         p.known.struct_size = sizeof p;
         return create_context(&p.known, e);
       }},
#if !KVB_HAVE_CUDA
      {"create: CUDA in a build without CUDA", KVB_ERR_UNSUPPORTED, false,
       [](kvb_error* e) {
         auto p = context_params();
         p.backend = KVB_BACKEND_CUDA;
         return create_context(&p, e);
       }},
#endif
      {"backend: ctx NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) {
         kvb_backend b;
         return kvb_context_backend(nullptr, &b, nullptr, e);
       }},
      {"backend: backend_out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_context_backend(ctx_.get(), nullptr, nullptr, e); }},
      {"plan_supported: ctx NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_supported(nullptr, plan_.get(), e); }},
      {"plan_supported: plan NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_plan_supported(ctx_.get(), nullptr, e); }},
  };
  run(rows);
}

TEST_F(BadInput, Plan) {
  const std::vector<uint8_t> good = serialized(plan_.get());
  const std::string missing_dir = ::testing::TempDir() + "/kvbits-no-such-dir/x/plan.kvbplan";
  std::vector<Row> rows = {
      {"load_file: path NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) { return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_file(nullptr, o, e); }); }},
      {"load_file: missing file", KVB_ERR_IO, false,
       [&](kvb_error* e) {
         return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_file(missing_dir.c_str(), o, e); });
       }},
      {"load_file: out NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_load_file(missing_dir.c_str(), nullptr, e); }},
      {"load_memory: data NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) { return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_memory(nullptr, 10, o, e); }); }},
      {"load_memory: 4 bytes", KVB_ERR_CORRUPT_DATA, false,
       [](kvb_error* e) { return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_memory("nope", 4, o, e); }); }},
      {"load_memory: size 0", KVB_ERR_CORRUPT_DATA, false,
       [&](kvb_error* e) {
         return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_memory(good.data(), 0, o, e); });
       }},
      {"load_memory: truncated by one byte", KVB_ERR_CORRUPT_DATA, false,
       [&](kvb_error* e) {
         return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_memory(good.data(), good.size() - 1, o, e); });
       }},
      {"load_memory: size SIZE_MAX", KVB_ERR_CORRUPT_DATA, false,
       [&](kvb_error* e) {
         return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_plan_load_memory(good.data(), SIZE_MAX, o, e); });
       }},
      {"save_file: plan NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_save_file(nullptr, missing_dir.c_str(), e); }},
      {"save_file: path NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_save_file(plan_.get(), nullptr, e); }},
      {"save_file: directory missing", KVB_ERR_IO, false,
       [&](kvb_error* e) { return kvb_plan_save_file(plan_.get(), missing_dir.c_str(), e); }},
      {"serialize: plan NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) {
         size_t n;
         return kvb_plan_serialize(nullptr, nullptr, 0, &n, e);
       }},
      {"serialize: size_out NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_serialize(plan_.get(), nullptr, 0, nullptr, e); }},
      {"serialize: buffer too small", KVB_ERR_INVALID_ARGUMENT, false,
       [&](kvb_error* e) {
         std::vector<uint8_t> buf(good.size() - 1, 0xA5);
         size_t n = 0;
         const kvb_status s = kvb_plan_serialize(plan_.get(), buf.data(), buf.size(), &n, e);
         EXPECT_EQ(n, good.size());
         EXPECT_EQ(buf, std::vector<uint8_t>(good.size() - 1, 0xA5));
         return s;
       }},
      {"get_info: plan NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) {
         kvb_plan_info info;
         info.struct_size = sizeof info;
         return kvb_plan_get_info(nullptr, &info, e);
       }},
      {"get_info: info NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_get_info(plan_.get(), nullptr, e); }},
      {"get_info: struct_size 8", KVB_ERR_INVALID_ARGUMENT, false,
       [&](kvb_error* e) {
         kvb_plan_info info;
         std::memset(&info, 0x5A, sizeof info);
         info.struct_size = 8;
         const kvb_status s = kvb_plan_get_info(plan_.get(), &info, e);
         EXPECT_EQ(info.n_layers, 0x5A5A5A5Au) << "untouched";
         return s;
       }},
      {"bytes_per_token: layer out of range", KVB_ERR_INVALID_ARGUMENT, false,
       [&](kvb_error* e) {
         uint64_t n = 77;
         const kvb_status s = kvb_plan_bytes_per_token(plan_.get(), L, 0, &n, e);
         EXPECT_EQ(n, 77u);
         return s;
       }},
      {"bytes_per_token: kv head out of range", KVB_ERR_INVALID_ARGUMENT, false,
       [&](kvb_error* e) {
         uint64_t n;
         return kvb_plan_bytes_per_token(plan_.get(), 0, HKV, &n, e);
       }},
      {"bytes_per_token: out NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_bytes_per_token(plan_.get(), 0, 0, nullptr, e); }},
      {"check_shape: plan for another model", KVB_ERR_SHAPE_MISMATCH, false,
       [&](kvb_error* e) { return kvb_plan_check_shape(other_plan_.get(), L, HQ, HKV, D, e); }},
      {"check_shape: plan NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_check_shape(nullptr, L, HQ, HKV, D, e); }},
      {"check_model: plan for another model", KVB_ERR_SHAPE_MISMATCH, false,
       [&](kvb_error* e) { return kvb_plan_check_model(other_plan_.get(), &shape_, e); }},
      {"check_model: other RoPE layout", KVB_ERR_SHAPE_MISMATCH, false,
       [&](kvb_error* e) {
         kvb_model_shape s = shape_;
         s.rope_layout = KVB_ROPE_INTERLEAVED;
         return kvb_plan_check_model(plan_.get(), &s, e);
       }},
      {"check_model: model NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_plan_check_model(plan_.get(), nullptr, e); }},
      {"check_model: invalid shape (odd head_dim)", KVB_ERR_INVALID_ARGUMENT, false,
       [&](kvb_error* e) {
         kvb_model_shape s = shape_;
         s.head_dim = 15;
         return kvb_plan_check_model(plan_.get(), &s, e);
       }},
  };
  run(rows);
}

TEST_F(BadInput, Calibrator) {
  const auto q = activations(4, HQ, D, 2.0, 1), k = activations(4, HKV, D, 2.0, 2);
  auto with_shape = [&](std::function<void(kvb_model_shape&)> edit) {
    return [&, edit](kvb_error* e) {
      kvb_model_shape s = shape_;
      edit(s);
      return no_handle<kvb_calibrator>([&](kvb_calibrator** o) { return kvb_calibrator_create(ctx_.get(), &s, o, e); });
    };
  };
  auto build_with = [&](std::function<void(kvb_plan_options&)> edit) {
    return [&, edit](kvb_error* e) {
      kvb_plan_options o = plan_options(3.0, 3);
      edit(o);
      return no_handle<kvb_plan>([&](kvb_plan** out) { return kvb_calibrator_build_plan(cal_.get(), &o, out, e); });
    };
  };
  static const uint32_t layer_99 = 99, layer_0 = 0;
  static const std::string long_corpus(5000, 'x');
  std::vector<Row> rows = {
      {"create: ctx NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         return no_handle<kvb_calibrator>([&](kvb_calibrator** o) { return kvb_calibrator_create(nullptr, &shape_, o, e); });
       }},
      {"create: shape NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         return no_handle<kvb_calibrator>([&](kvb_calibrator** o) { return kvb_calibrator_create(ctx_.get(), nullptr, o, e); });
       }},
      {"create: out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_calibrator_create(ctx_.get(), &shape_, nullptr, e); }},
      {"create: q heads not a multiple of kv heads", KVB_ERR_INVALID_ARGUMENT, true,
       with_shape([](kvb_model_shape& s) { s.n_q_heads = 3; })},
      {"create: head_dim 0", KVB_ERR_INVALID_ARGUMENT, true, with_shape([](kvb_model_shape& s) { s.head_dim = 0; })},
      {"create: n_layers 0", KVB_ERR_INVALID_ARGUMENT, true, with_shape([](kvb_model_shape& s) { s.n_layers = 0; })},
      {"create: rope_layout 256", KVB_ERR_INVALID_ARGUMENT, true,
       with_shape([](kvb_model_shape& s) { s.rope_layout = 256; })},
      {"create: rope_theta NaN", KVB_ERR_INVALID_ARGUMENT, true,
       with_shape([](kvb_model_shape& s) { s.rope_theta = std::numeric_limits<double>::quiet_NaN(); })},
      {"create: shape struct_size 0", KVB_ERR_INVALID_ARGUMENT, true,
       with_shape([](kvb_model_shape& s) { s.struct_size = 0; })},
      {"create: shape reserved not zero", KVB_ERR_INVALID_ARGUMENT, true,
       with_shape([](kvb_model_shape& s) { s.reserved = 1; })},
      {"observe: cal NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_calibrator_observe(nullptr, 0, q.data(), k.data(), 4, KVB_DTYPE_F32, e); }},
      {"observe: q and k NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_calibrator_observe(cal_.get(), 0, nullptr, nullptr, 4, KVB_DTYPE_F32, e); }},
      {"observe: layer out of range", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_calibrator_observe(cal_.get(), layer_99, q.data(), k.data(), 4, KVB_DTYPE_F32, e); }},
      {"observe: dtype 7", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_calibrator_observe(cal_.get(), layer_0, q.data(), k.data(), 4, 7, e); }},
      {"observe: n_tokens 0", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_calibrator_observe(cal_.get(), 0, q.data(), k.data(), 0, KVB_DTYPE_F32, e); }},
      {"observe: n_tokens SIZE_MAX", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_calibrator_observe(cal_.get(), 0, q.data(), k.data(), SIZE_MAX, KVB_DTYPE_F32, e); }},
      {"observe: n_tokens 2^40", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         return kvb_calibrator_observe(cal_.get(), 0, q.data(), k.data(), size_t(1) << 40, KVB_DTYPE_F32, e);
       }},
      {"observe: NaN in the last key", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         auto bad = k;
         bad.back() = std::numeric_limits<float>::quiet_NaN();
         return kvb_calibrator_observe(cal_.get(), 1, q.data(), bad.data(), 4, KVB_DTYPE_F32, e);
       }},
      {"build: cal NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_calibrator_build_plan(nullptr, nullptr, o, e); }); }},
      {"build: out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_calibrator_build_plan(cal_.get(), nullptr, nullptr, e); }},
      {"build: k_avg_bits 9", KVB_ERR_INVALID_ARGUMENT, true, build_with([](kvb_plan_options& o) { o.k_avg_bits = 9; })},
      {"build: k_avg_bits NaN", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.k_avg_bits = std::numeric_limits<double>::quiet_NaN(); })},
      {"build: v_bits 0", KVB_ERR_INVALID_ARGUMENT, true, build_with([](kvb_plan_options& o) { o.v_bits = 0; })},
      {"build: k_min_bits > k_max_bits", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.k_min_bits = 5, o.k_max_bits = 4; })},
      {"build: method 5", KVB_ERR_INVALID_ARGUMENT, true, build_with([](kvb_plan_options& o) { o.method = 5; })},
      {"build: score 9", KVB_ERR_INVALID_ARGUMENT, true, build_with([](kvb_plan_options& o) { o.score = 9; })},
      {"build: codebooks -1", KVB_ERR_INVALID_ARGUMENT, true, build_with([](kvb_plan_options& o) { o.codebooks = -1; })},
      {"build: uniform with 2.5 bits", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.method = KVB_METHOD_UNIFORM_TQ_MSE, o.k_avg_bits = 2.5; })},
      {"build: fp16_layers NULL", KVB_ERR_NULL_POINTER, true,
       build_with([](kvb_plan_options& o) { o.n_fp16_layers = 1; })},
      {"build: fp16 layer out of range", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.fp16_layers = &layer_99, o.n_fp16_layers = 1; })},
      {"build: n_fp16_layers huge", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.fp16_layers = &layer_0, o.n_fp16_layers = UINT32_MAX; })},
      {"build: fingerprint not hex", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.model_fingerprint_hex = "xyz"; })},
      {"build: corpus too long", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.corpus = long_corpus.c_str(); })},
      {"build: options struct_size 4", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.struct_size = 4; })},
      {"build: options reserved not zero", KVB_ERR_INVALID_ARGUMENT, true,
       build_with([](kvb_plan_options& o) { o.reserved[7] = 1; })},
      {"build: no samples", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         kvb_calibrator* fresh = nullptr;
         EXPECT_EQ(kvb_calibrator_create(ctx_.get(), &shape_, &fresh, nullptr), KVB_OK);
         const kvb_status s =
             no_handle<kvb_plan>([&](kvb_plan** o) { return kvb_calibrator_build_plan(fresh, nullptr, o, e); });
         kvb_calibrator_destroy(fresh);
         return s;
       }},
  };
  run(rows);
}

TEST_F(BadInput, CacheCreate) {
  auto with_params = [&](std::function<void(kvb_cache_params&)> edit, const kvb_plan* plan = nullptr) {
    return [&, edit, plan](kvb_error* e) {
      kvb_cache_params p;
      kvb_cache_params_default(&p);
      p.max_pages = 8;
      edit(p);
      return no_handle<kvb_cache>([&](kvb_cache** o) {
        return kvb_cache_create(ctx_.get(), plan ? plan : plan_.get(), &p, o, e);
      });
    };
  };
  kvb_cache_params ok;
  kvb_cache_params_default(&ok);
  ok.max_pages = 8;
  std::vector<Row> rows = {
      {"create: ctx NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return no_handle<kvb_cache>([&](kvb_cache** o) { return kvb_cache_create(nullptr, plan_.get(), &ok, o, e); }); }},
      {"create: plan NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return no_handle<kvb_cache>([&](kvb_cache** o) { return kvb_cache_create(ctx_.get(), nullptr, &ok, o, e); }); }},
      {"create: params NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         return no_handle<kvb_cache>([&](kvb_cache** o) { return kvb_cache_create(ctx_.get(), plan_.get(), nullptr, o, e); });
       }},
      {"create: out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_create(ctx_.get(), plan_.get(), &ok, nullptr, e); }},
      {"create: max_pages left at 0", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.max_pages = 0; })},
      {"create: max_pages UINT64_MAX", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.max_pages = UINT64_MAX; })},
      {"create: a pool larger than this machine's memory", KVB_ERR_OUT_OF_MEMORY, true,
       with_params([](kvb_cache_params& p) { p.max_pages = UINT32_MAX, p.page_size = 4096; })},
      {"create: page_size 0", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.page_size = 0; })},
      {"create: page_size 5000", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.page_size = 5000; })},
      {"create: max_sequences 0", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.max_sequences = 0; })},
      {"create: max_sequences huge", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.max_sequences = UINT32_MAX; })},
      {"create: sink_tokens -2", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.sink_tokens = -2; })},
      {"create: window_tokens 2^40", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.window_tokens = int64_t(1) << 40; })},
      {"create: reserved not zero", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.reserved[0] = 9; })},
      {"create: last reserved not zero", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.reserved[4] = 1; })},
      {"create: kv_head_end past n_kv_heads", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.kv_head_end = HKV + 1; })},
      {"create: kv_head_begin == kv_head_end", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.kv_head_begin = 1, p.kv_head_end = 1; })},
      {"create: kv_head_begin without kv_head_end", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([](kvb_cache_params& p) { p.kv_head_begin = 1; })},
      {"create: struct_size 8", KVB_ERR_INVALID_ARGUMENT, true, with_params([](kvb_cache_params& p) { p.struct_size = 8; })},
      {"create: plan for another model shape", KVB_ERR_SHAPE_MISMATCH, true,
       with_params([&](kvb_cache_params& p) { p.model = &shape_; }, other_plan_.get())},
      {"create: model shape invalid", KVB_ERR_INVALID_ARGUMENT, true,
       with_params([&](kvb_cache_params& p) {
         static kvb_model_shape bad;
         bad = shape_;
         bad.n_kv_heads = 0;
         p.model = &bad;
       })},
  };
  run(rows);
}

TEST_F(BadInput, Sequences) {
  std::vector<Row> rows = {
      {"add: cache NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) { return no_id([&](uint64_t* id) { return kvb_cache_seq_add(nullptr, id, e); }); }},
      {"add: id_out NULL", KVB_ERR_NULL_POINTER, true, [&](kvb_error* e) { return kvb_cache_seq_add(cache(), nullptr, e); }},
      {"add: max_sequences live", KVB_ERR_CAPACITY_EXHAUSTED, true,
       [&](kvb_error* e) {
         kvb_cache_params p;
         kvb_cache_params_default(&p);
         p.max_pages = 2, p.max_sequences = 1;
         kvb_cache* small = nullptr;
         uint64_t first = 0;
         EXPECT_EQ(kvb_cache_create(ctx_.get(), plan_.get(), &p, &small, nullptr), KVB_OK);
         EXPECT_EQ(kvb_cache_seq_add(small, &first, nullptr), KVB_OK);
         const kvb_status s = no_id([&](uint64_t* id) { return kvb_cache_seq_add(small, id, e); });
         uint32_t len = 99;
         EXPECT_EQ(kvb_cache_seq_length(small, first, 0, &len, nullptr), KVB_OK);
         EXPECT_EQ(len, 0u);
         kvb_cache_destroy(small);
         return s;
       }},
      {"remove: cache NULL", KVB_ERR_NULL_POINTER, false, [&](kvb_error* e) { return kvb_cache_seq_remove(nullptr, a_, e); }},
      {"remove: removed sequence", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) { return kvb_cache_seq_remove(cache(), removed_, e); }},
      {"remove: id never added", KVB_ERR_NOT_FOUND, true, [&](kvb_error* e) { return kvb_cache_seq_remove(cache(), 123456, e); }},
      {"remove: KVB_SEQ_NONE", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) { return kvb_cache_seq_remove(cache(), KVB_SEQ_NONE, e); }},
      {"fork: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return no_id([&](uint64_t* id) { return kvb_cache_seq_fork(nullptr, a_, 1, id, e); }); }},
      {"fork: id_out NULL", KVB_ERR_NULL_POINTER, true, [&](kvb_error* e) { return kvb_cache_seq_fork(cache(), a_, 1, nullptr, e); }},
      {"fork: removed source", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) { return no_id([&](uint64_t* id) { return kvb_cache_seq_fork(cache(), removed_, 0, id, e); }); }},
      {"fork: prefix longer than the source", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return no_id([&](uint64_t* id) { return kvb_cache_seq_fork(cache(), b_, 7, id, e); }); }},
      {"fork: prefix UINT32_MAX", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return no_id([&](uint64_t* id) { return kvb_cache_seq_fork(cache(), a_, UINT32_MAX, id, e); }); }},
      {"length: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         uint32_t n;
         return kvb_cache_seq_length(nullptr, a_, 0, &n, e);
       }},
      {"length: len_out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_seq_length(cache(), a_, 0, nullptr, e); }},
      {"length: removed sequence", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) {
         uint32_t n = 5;
         const kvb_status s = kvb_cache_seq_length(cache(), removed_, 0, &n, e);
         EXPECT_EQ(n, 5u);
         return s;
       }},
      {"length: layer out of range", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         uint32_t n;
         return kvb_cache_seq_length(cache(), a_, L, &n, e);
       }},
      {"stats: cache NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) {
         kvb_cache_stats s;
         s.struct_size = sizeof s;
         return kvb_cache_get_stats(nullptr, &s, e);
       }},
      {"stats: stats NULL", KVB_ERR_NULL_POINTER, true, [&](kvb_error* e) { return kvb_cache_get_stats(cache(), nullptr, e); }},
      {"stats: struct_size 4", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         kvb_cache_stats s;
         std::memset(&s, 0x33, sizeof s);
         s.struct_size = 4;
         const kvb_status st = kvb_cache_get_stats(cache(), &s, e);
         EXPECT_EQ(s.pages_total, 0x3333333333333333u) << "untouched";
         return st;
       }},
  };
  run(rows);
}

TEST_F(BadInput, AppendAndRead) {
  const auto k = activations(80, HKV, D, 3.0, 7), v = activations(80, HKV, D, 1.0, 8);
  const uint64_t ab[2] = {a_, b_};
  const uint32_t one_each[2] = {1, 1};
  auto append = [&](uint32_t layer, std::vector<uint64_t> seqs, std::vector<uint32_t> n, const float* kk,
                    kvb_dtype dtype = KVB_DTYPE_F32) {
    return [=, &v](kvb_error* e) {
      return kvb_cache_append(cache(), layer, seqs.data(), n.data(), seqs.size(), kk, v.data(), dtype, nullptr, e);
    };
  };
  auto nan_in_b = k;
  nan_in_b[HKV * D + 3] = std::numeric_limits<float>::infinity();  // first token of b
  auto read = [&](uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n) {
    return [=](kvb_error* e) {
      Canary ko(64 * HKV * D), vo(64 * HKV * D);
      const kvb_status s = kvb_cache_read(cache(), seq, layer, pos, n, ko.get(), vo.get(), e);
      EXPECT_TRUE(ko.untouched() && vo.untouched());
      return s;
    };
  };
  std::vector<Row> rows = {
      {"append: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_cache_append(nullptr, 0, ab, one_each, 2, k.data(), v.data(), KVB_DTYPE_F32, nullptr, e); }},
      {"append: seqs NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_append(cache(), 0, nullptr, one_each, 2, k.data(), v.data(), KVB_DTYPE_F32, nullptr, e); }},
      {"append: n_tokens NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_append(cache(), 0, ab, nullptr, 2, k.data(), v.data(), KVB_DTYPE_F32, nullptr, e); }},
      {"append: k NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_append(cache(), 0, ab, one_each, 2, nullptr, v.data(), KVB_DTYPE_F32, nullptr, e); }},
      {"append: v NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_append(cache(), 0, ab, one_each, 2, k.data(), nullptr, KVB_DTYPE_F32, nullptr, e); }},
      {"append: n_seqs 0", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_cache_append(cache(), 0, ab, one_each, 0, k.data(), v.data(), KVB_DTYPE_F32, nullptr, e); }},
      {"append: n_seqs SIZE_MAX", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         return kvb_cache_append(cache(), 0, ab, one_each, SIZE_MAX, k.data(), v.data(), KVB_DTYPE_F32, nullptr, e);
       }},
      {"append: layer out of range", KVB_ERR_INVALID_ARGUMENT, true, append(L, {a_}, {1}, k.data())},
      {"append: layer UINT32_MAX", KVB_ERR_INVALID_ARGUMENT, true, append(UINT32_MAX, {a_}, {1}, k.data())},
      {"append: dtype 7", KVB_ERR_INVALID_ARGUMENT, true, append(0, {a_}, {1}, k.data(), 7)},
      {"append: dtype -1", KVB_ERR_INVALID_ARGUMENT, true, append(0, {a_}, {1}, k.data(), -1)},
      {"append: removed sequence", KVB_ERR_NOT_FOUND, true, append(0, {a_, removed_}, {1, 1}, k.data())},
      {"append: sequence listed twice", KVB_ERR_INVALID_ARGUMENT, true, append(0, {a_, b_, a_}, {1, 1, 1}, k.data())},
      {"append: an infinite key in the second sequence", KVB_ERR_INVALID_ARGUMENT, true,
       append(0, {a_, b_}, {1, 1}, nan_in_b.data())},
      {"append: n_tokens UINT32_MAX", KVB_ERR_CAPACITY_EXHAUSTED, true, append(0, {a_}, {UINT32_MAX}, k.data())},
      {"append: more tokens than the pool holds", KVB_ERR_CAPACITY_EXHAUSTED, true, append(1, {a_, b_}, {40, 40}, k.data())},
      {"read: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         float out[HKV * D];
         return kvb_cache_read(nullptr, a_, 0, 0, 1, out, out, e);
       }},
      {"read: both outputs NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_read(cache(), a_, 0, 0, 1, nullptr, nullptr, e); }},
      {"read: layer out of range", KVB_ERR_INVALID_ARGUMENT, true, read(a_, L, 0, 1)},
      {"read: removed sequence", KVB_ERR_NOT_FOUND, true, read(removed_, 0, 0, 1)},
      {"read: n_tokens 0", KVB_ERR_INVALID_ARGUMENT, true, read(a_, 0, 0, 0)},
      {"read: past the end", KVB_ERR_INVALID_ARGUMENT, true, read(a_, 0, 10, 4)},
      {"read: empty sequence", KVB_ERR_INVALID_ARGUMENT, true, read(empty_, 0, 0, 1)},
      {"read: pos UINT32_MAX", KVB_ERR_INVALID_ARGUMENT, true, read(a_, 0, UINT32_MAX, 2)},
  };
  run(rows);
}

TEST_F(BadInput, Transfer) {
  size_t size_a = 0;
  KVB_ASSERT_OK(kvb_cache_seq_export_size(cache(), a_, &size_a, err));
  std::vector<uint8_t> good(size_a);
  KVB_ASSERT_OK(kvb_cache_seq_export(cache(), a_, good.data(), good.size(), &size_a, nullptr, err));
  // Exports the caches below refuse: another plan's, and one longer than the free pages.
  auto export_from = [&](const kvb_plan* plan, uint32_t tokens, uint32_t max_pages) {
    kvb_cache_params p;
    kvb_cache_params_default(&p);
    p.page_size = 4, p.max_pages = max_pages;
    kvb_cache* c = nullptr;
    kvb_error e = error();
    EXPECT_EQ(kvb_cache_create(ctx_.get(), plan, &p, &c, &e), KVB_OK) << e.message;
    uint64_t id = 0;
    EXPECT_EQ(kvb_cache_seq_add(c, &id, &e), KVB_OK);
    kvb_plan_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT_EQ(kvb_plan_get_info(plan, &info, &e), KVB_OK);
    const auto k = activations(tokens, HKV, D, 1.0, 5);
    for (uint32_t l = 0; l < info.n_layers; ++l)
      EXPECT_EQ(kvb_cache_append(c, l, &id, &tokens, 1, k.data(), k.data(), KVB_DTYPE_F32, nullptr, &e), KVB_OK)
          << e.message;
    size_t n = 0;
    EXPECT_EQ(kvb_cache_seq_export_size(c, id, &n, &e), KVB_OK);
    std::vector<uint8_t> b(n);
    EXPECT_EQ(kvb_cache_seq_export(c, id, b.data(), n, &n, nullptr, &e), KVB_OK) << e.message;
    kvb_cache_destroy(c);
    return b;
  };
  const std::vector<uint8_t> foreign = export_from(other_plan_.get(), 5, 8);
  const std::vector<uint8_t> long_one = export_from(plan_.get(), 60, 64);
  auto import = [&](std::vector<uint8_t> bytes) {
    return [=](kvb_error* e) {
      return no_id([&](uint64_t* id) { return kvb_cache_seq_import(cache(), bytes.data(), bytes.size(), id, nullptr, e); });
    };
  };
  auto flipped = [&](size_t at) {
    std::vector<uint8_t> b = good;
    b[at] ^= 0x10;
    return b;
  };
  std::vector<Row> rows = {
      {"kv_heads: cache NULL", KVB_ERR_NULL_POINTER, false,
       [](kvb_error* e) {
         uint32_t b = 0, x = 0;
         return kvb_cache_kv_heads(nullptr, &b, &x, e);
       }},
      {"export_size: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         size_t n = 0;
         return kvb_cache_seq_export_size(nullptr, a_, &n, e);
       }},
      {"export_size: size_out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_seq_export_size(cache(), a_, nullptr, e); }},
      {"export_size: removed sequence", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) {
         size_t n = 5;
         const kvb_status s = kvb_cache_seq_export_size(cache(), removed_, &n, e);
         EXPECT_EQ(n, 5u);
         return s;
       }},
      {"export: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         size_t n = 0;
         std::vector<uint8_t> b(size_a);
         return kvb_cache_seq_export(nullptr, a_, b.data(), b.size(), &n, nullptr, e);
       }},
      {"export: buf NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         size_t n = 0;
         return kvb_cache_seq_export(cache(), a_, nullptr, size_a, &n, nullptr, e);
       }},
      {"export: size_out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         std::vector<uint8_t> b(size_a);
         return kvb_cache_seq_export(cache(), a_, b.data(), b.size(), nullptr, nullptr, e);
       }},
      {"export: removed sequence", KVB_ERR_NOT_FOUND, true,
       [&](kvb_error* e) {
         size_t n = 0;
         std::vector<uint8_t> b(size_a);
         return kvb_cache_seq_export(cache(), removed_, b.data(), b.size(), &n, nullptr, e);
       }},
      {"export: capacity one byte short", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         size_t n = 0;
         std::vector<uint8_t> b(size_a, 0x5A);
         const kvb_status s = kvb_cache_seq_export(cache(), a_, b.data(), size_a - 1, &n, nullptr, e);
         EXPECT_EQ(n, size_a);  // the size needed
         EXPECT_EQ(b, std::vector<uint8_t>(size_a, 0x5A));
         return s;
       }},
      {"import: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         return no_id([&](uint64_t* id) { return kvb_cache_seq_import(nullptr, good.data(), good.size(), id, nullptr, e); });
       }},
      {"import: buf NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         return no_id([&](uint64_t* id) { return kvb_cache_seq_import(cache(), nullptr, good.size(), id, nullptr, e); });
       }},
      {"import: id_out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_cache_seq_import(cache(), good.data(), good.size(), nullptr, nullptr, e); }},
      {"import: size 0", KVB_ERR_CORRUPT_DATA, true,
       [&](kvb_error* e) {
         return no_id([&](uint64_t* id) { return kvb_cache_seq_import(cache(), good.data(), 0, id, nullptr, e); });
       }},
      {"import: truncated by one byte", KVB_ERR_CORRUPT_DATA, true,
       [&](kvb_error* e) {
         return no_id([&](uint64_t* id) { return kvb_cache_seq_import(cache(), good.data(), good.size() - 1, id, nullptr, e); });
       }},
      {"import: bad magic", KVB_ERR_CORRUPT_DATA, true, import(flipped(2))},
      {"import: another version", KVB_ERR_VERSION_UNSUPPORTED, true, import(flipped(9))},
      {"import: header checksum", KVB_ERR_CORRUPT_DATA, true, import(flipped(30))},
      {"import: payload checksum", KVB_ERR_CORRUPT_DATA, true, import(flipped(good.size() - 1))},
      {"import: another plan", KVB_ERR_SHAPE_MISMATCH, true, import(foreign)},
      {"import: more pages than are free", KVB_ERR_CAPACITY_EXHAUSTED, true, import(long_one)},
  };
  run(rows);
}

TEST_F(BadInput, Attention) {
  const auto q = activations(3, HQ, D, 2.0, 9);
  auto decode = [&](uint32_t layer, std::vector<uint64_t> seqs, kvb_dtype dtype = KVB_DTYPE_F32,
                    const kvb_attention_params* params = nullptr) {
    return [=, &q](kvb_error* e) {
      Canary out(3 * HQ * D), lse(3 * HQ);
      const kvb_status s = kvb_attention_decode(cache(), layer, seqs.data(), seqs.size(), q.data(), dtype, out.get(),
                                                lse.get(), params, nullptr, e);
      EXPECT_TRUE(out.untouched() && lse.untouched());
      return s;
    };
  };
  auto extend = [&](uint32_t layer, std::vector<uint64_t> seqs, std::vector<uint32_t> q_len,
                    kvb_dtype dtype = KVB_DTYPE_F32) {
    return [=, &q](kvb_error* e) {
      Canary out(3 * HQ * D), lse(3 * HQ);
      const kvb_status s = kvb_attention_extend(cache(), layer, seqs.data(), q_len.data(), seqs.size(), q.data(), dtype,
                                                out.get(), lse.get(), nullptr, nullptr, e);
      EXPECT_TRUE(out.untouched() && lse.untouched());
      return s;
    };
  };
  static kvb_attention_params nan_scale, small_size, reserved_set, bad_precision;
  kvb_attention_params_default(&nan_scale);
  nan_scale.scale = std::numeric_limits<float>::quiet_NaN();
  kvb_attention_params_default(&small_size);
  small_size.struct_size = 4;
  kvb_attention_params_default(&reserved_set);
  reserved_set.reserved[4] = 1;
  kvb_attention_params_default(&bad_precision);
  bad_precision.precision = 2;
  const uint64_t ab[2] = {a_, b_};
  const uint32_t q_len[2] = {1, 1};
  float out[3 * HQ * D];
  std::vector<Row> rows = {
      {"decode: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) { return kvb_attention_decode(nullptr, 0, ab, 2, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e); }},
      {"decode: seqs NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_attention_decode(cache(), 0, nullptr, 2, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e); }},
      {"decode: q NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_attention_decode(cache(), 0, ab, 2, nullptr, KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e); }},
      {"decode: out NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) { return kvb_attention_decode(cache(), 0, ab, 2, q.data(), KVB_DTYPE_F32, nullptr, nullptr, nullptr, nullptr, e); }},
      {"decode: n_seqs 0", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_attention_decode(cache(), 0, ab, 0, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e); }},
      {"decode: n_seqs SIZE_MAX", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) { return kvb_attention_decode(cache(), 0, ab, SIZE_MAX, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e); }},
      {"decode: layer out of range", KVB_ERR_INVALID_ARGUMENT, true, decode(L, {a_, b_})},
      {"decode: q_dtype 7", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_, b_}, 7)},
      {"decode: removed sequence", KVB_ERR_NOT_FOUND, true, decode(0, {a_, removed_})},
      {"decode: sequence with no tokens", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_, empty_})},
      {"decode: scale NaN", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_}, KVB_DTYPE_F32, &nan_scale)},
      {"decode: params struct_size 4", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_}, KVB_DTYPE_F32, &small_size)},
      {"decode: params reserved not zero", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_}, KVB_DTYPE_F32, &reserved_set)},
      {"decode: precision 2", KVB_ERR_INVALID_ARGUMENT, true, decode(0, {a_}, KVB_DTYPE_F32, &bad_precision)},
      {"extend: q_len NULL", KVB_ERR_NULL_POINTER, true,
       [&](kvb_error* e) {
         return kvb_attention_extend(cache(), 0, ab, nullptr, 2, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e);
       }},
      {"extend: cache NULL", KVB_ERR_NULL_POINTER, false,
       [&](kvb_error* e) {
         return kvb_attention_extend(nullptr, 0, ab, q_len, 2, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e);
       }},
      {"extend: n_seqs 0", KVB_ERR_INVALID_ARGUMENT, true,
       [&](kvb_error* e) {
         return kvb_attention_extend(cache(), 0, ab, q_len, 0, q.data(), KVB_DTYPE_F32, out, nullptr, nullptr, nullptr, e);
       }},
      {"extend: layer out of range", KVB_ERR_INVALID_ARGUMENT, true, extend(7, {a_}, {1})},
      {"extend: q_dtype 3", KVB_ERR_INVALID_ARGUMENT, true, extend(0, {a_}, {1}, 3)},
      {"extend: removed sequence", KVB_ERR_NOT_FOUND, true, extend(0, {removed_}, {1})},
      {"extend: more queries than tokens", KVB_ERR_INVALID_ARGUMENT, true, extend(0, {a_, b_}, {1, 7})},
      {"extend: q_len UINT32_MAX", KVB_ERR_INVALID_ARGUMENT, true, extend(0, {a_}, {UINT32_MAX})},
  };
  run(rows);
}

TEST_F(BadInput, LastErrorCopiesLikeSnprintf) {
  kvb_error e = error();
  ASSERT_EQ(kvb_cache_seq_remove(cache(), removed_, &e), KVB_ERR_NOT_FOUND);
  const size_t n = std::strlen(e.message);
  ASSERT_GT(n, 8u);
  EXPECT_EQ(kvb_context_last_error(ctx_.get(), nullptr, 0), n);
  char small[8];
  std::memset(small, 'z', sizeof small);
  EXPECT_EQ(kvb_context_last_error(ctx_.get(), small, sizeof small), n);
  EXPECT_EQ(std::string(small), std::string(e.message, 7));
  char one = 'z';
  EXPECT_EQ(kvb_context_last_error(ctx_.get(), &one, 1), n);
  EXPECT_EQ(one, '\0');
  // Success does not clear it: the text stays available for a binding to fetch later.
  uint32_t len = 0;
  ASSERT_EQ(kvb_cache_seq_length(cache(), a_, 0, &len, &e), KVB_OK);
  EXPECT_STREQ(e.message, "");
  EXPECT_EQ(kvb_context_last_error(ctx_.get(), nullptr, 0), n);
  // NULL context: empty text.
  char buf[4] = "abc";
  EXPECT_EQ(kvb_context_last_error(nullptr, buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "");
}

TEST_F(BadInput, ErrorStructTooSmallIsLeftAlone) {
  kvb_error e;
  std::memset(&e, 0x11, sizeof e);
  e.struct_size = 4;
  EXPECT_EQ(kvb_cache_seq_remove(cache(), removed_, &e), KVB_ERR_NOT_FOUND);
  EXPECT_EQ(e.status, 0x11111111);
  EXPECT_EQ(e.message[0], 0x11);
}

TEST(CapiDestroy, NullIsANoOp) {
  kvb_context_destroy(nullptr);
  kvb_plan_destroy(nullptr);
  kvb_calibrator_destroy(nullptr);
  kvb_cache_destroy(nullptr);
  kvb_error_init(nullptr);
  kvb_model_shape_default(nullptr);
  kvb_context_params_default(nullptr);
  kvb_plan_options_default(nullptr);
  kvb_cache_params_default(nullptr);
  kvb_attention_params_default(nullptr);
  SUCCEED();
}
