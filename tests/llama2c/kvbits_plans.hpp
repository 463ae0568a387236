// Test helper: kvbits plans for stories260K, calibrated through the C API from a small
// self-sampled capture (4 x 128 tokens, seed 11), written once per test process.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>

#include "capture.hpp"
#include "kvbits.h"
#include "kvbits_kv_store.hpp"
#include "stories.hpp"

namespace llama2c_test {

inline const llama2c::Capture& calibration_capture() {
  static const llama2c::Capture cap = [] {
    llama2c::CaptureOptions o;
    o.sequences = 4;
    o.tokens = 128;
    o.seed = 11;  // the held-out sets of the tests use other seeds
    return llama2c::capture_activations(stories_model(), o);
  }();
  return cap;
}

// Path of a plan file with k_bits average key bits and v_bits value bits (method: kvb_method).
inline std::string plan_file(int k_bits, int v_bits, int method = KVB_METHOD_BLOCK_GTQ) {
  static std::map<std::tuple<int, int, int>, std::string> made;
  const auto key = std::make_tuple(k_bits, v_bits, method);
  if (made.count(key) != 0) return made[key];
  const llama2c::Capture& cap = calibration_capture();
  kvb_error err;
  kvb_error_init(&err);
  kvb_context* ctx = nullptr;
  EXPECT_EQ(kvb_context_create(nullptr, &ctx, &err), KVB_OK) << err.message;
  const kvb_model_shape shape = llama2c::kvbits_model_shape(stories_model().config());
  kvb_calibrator* cal = nullptr;
  EXPECT_EQ(kvb_calibrator_create(ctx, &shape, &cal, &err), KVB_OK) << err.message;
  for (uint32_t l = 0; l < shape.n_layers; ++l)
    EXPECT_EQ(kvb_calibrator_observe(cal, l, cap.q[l].data(), cap.k[l].data(), cap.metadata.tokens, KVB_DTYPE_F32,
                                     &err),
              KVB_OK)
        << err.message;
  kvb_plan_options options;
  kvb_plan_options_default(&options);
  options.method = method;
  options.k_avg_bits = k_bits;
  options.v_bits = v_bits;
  kvb_plan* plan = nullptr;
  EXPECT_EQ(kvb_calibrator_build_plan(cal, &options, &plan, &err), KVB_OK) << err.message;
  const std::string path = temp_path("stories260K-K" + std::to_string(k_bits) + "V" + std::to_string(v_bits) +
                                     (method == KVB_METHOD_BLOCK_GTQ ? "" : "-uniform") + ".kvbplan");
  EXPECT_EQ(kvb_plan_save_file(plan, path.c_str(), &err), KVB_OK) << err.message;
  kvb_plan_destroy(plan);
  kvb_calibrator_destroy(cal);
  kvb_context_destroy(ctx);
  return made[key] = path;
}

}  // namespace llama2c_test
