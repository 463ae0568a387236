#include "kvbits_kv_store.hpp"

#include <algorithm>
#include <cmath>

namespace llama2c {

namespace {

std::string at(int layer, int pos) {
  return "layer " + std::to_string(layer) + ", position " + std::to_string(pos);
}

}  // namespace

kvb_model_shape kvbits_model_shape(const Config& config) {
  kvb_model_shape shape;
  kvb_model_shape_default(&shape);
  shape.n_layers = uint32_t(config.n_layers);
  shape.n_q_heads = uint32_t(config.n_heads);
  shape.n_kv_heads = uint32_t(config.n_kv_heads);
  shape.head_dim = uint32_t(config.head_dim());
  shape.rotary_dim = shape.head_dim;
  shape.rope_layout = KVB_ROPE_INTERLEAVED;
  shape.rope_theta = kRopeTheta;
  return shape;
}

KvbitsKvStore::KvbitsKvStore(const Config& config, const std::string& plan_path, uint32_t n_threads,
                             kvb_backend backend)
    : info_(), length_(size_t(config.n_layers), 0) {
  kvb_error_init(&err_);
  // The backend by name (an app should not get a device it did not ask for); the store passes
  // host tensors either way, which a CUDA context copies in and out itself.
  kvb_context_params cp;
  kvb_context_params_default(&cp);
  cp.backend = backend;
  cp.n_threads = n_threads;
  kvb_context* ctx = nullptr;
  check(kvb_context_create(&cp, &ctx, &err_), "kvb_context_create");
  ctx_.reset(ctx);

  kvb_plan* plan = nullptr;
  check(kvb_plan_load_file(plan_path.c_str(), &plan, &err_), "loading plan '" + plan_path + "'");
  plan_.reset(plan);
  info_.struct_size = sizeof info_;
  check(kvb_plan_get_info(plan_.get(), &info_, &err_), "kvb_plan_get_info");
  check(kvb_plan_supported(ctx_.get(), plan_.get(), &err_), "plan '" + plan_path + "' on this backend");

  // The model's shape goes in, so a plan made for another model is refused here, not garbled.
  const kvb_model_shape shape = kvbits_model_shape(config);
  kvb_cache_params params;
  kvb_cache_params_default(&params);
  params.max_pages = (uint64_t(config.seq_len) + params.page_size - 1) / params.page_size;
  params.max_sequences = 1;
  params.model = &shape;
  kvb_cache* cache = nullptr;
  check(kvb_cache_create(ctx_.get(), plan_.get(), &params, &cache, &err_),
        "plan '" + plan_path + "' for this model (kvb_cache_create)");
  cache_.reset(cache);
  check(kvb_cache_seq_add(cache_.get(), &seq_, &err_), "kvb_cache_seq_add");
}

double kvbits_bytes_per_token_per_head(const kvb_plan_info& info, int seq_tokens) {
  const double fp16 = 4.0 * info.head_dim, layers = info.n_layers, fp16_layers = info.n_fp16_layers;
  if (info.n_layers == 0 || info.n_fp16_layers >= info.n_layers) return fp16;
  // The packed layers' mean: the plan's mean counts its fp16 layers at 4 * head_dim.
  const double packed = (info.bytes_per_token_per_head * layers - fp16_layers * fp16) / (layers - fp16_layers);
  const double tokens = seq_tokens, held = std::min(tokens, double(info.sink_tokens) + double(info.window_tokens));
  const double quantized_layer = (held * fp16 + (tokens - held) * packed) / tokens;
  return (fp16_layers * fp16 + (layers - fp16_layers) * quantized_layer) / layers;
}

double KvbitsKvStore::bytes_per_token_per_head(int seq_tokens) const {
  if (seq_tokens < 1)
    throw KvbitsError(KVB_ERR_INVALID_ARGUMENT,
                      "kvbits store: bytes per token: seq_tokens must be >= 1, got " + std::to_string(seq_tokens));
  return kvbits_bytes_per_token_per_head(info_, seq_tokens);
}

kvb_backend KvbitsKvStore::backend() const {
  kvb_backend b = KVB_BACKEND_CPU;
  check(kvb_context_backend(ctx_.get(), &b, nullptr, &err_), "kvb_context_backend");
  return b;
}

void KvbitsKvStore::check(kvb_status status, const std::string& what) const {
  if (status == KVB_OK) return;
  throw KvbitsError(status, "kvbits: " + what + ": " + kvb_status_string(status) + ": " + err_.message);
}

void KvbitsKvStore::append(int layer, int pos, const float* k, const float* v) {
  if (layer < 0 || size_t(layer) >= length_.size())
    throw KvbitsError(KVB_ERR_INVALID_ARGUMENT, "kvbits store: append at " + at(layer, pos) + ": no such layer");
  if (pos != length_[size_t(layer)])
    throw KvbitsError(KVB_ERR_INVALID_ARGUMENT, "kvbits store: append at " + at(layer, pos) + ": expected position " +
                                                    std::to_string(length_[size_t(layer)]));
  const uint32_t one = 1;
  check(kvb_cache_append(cache_.get(), uint32_t(layer), &seq_, &one, 1, k, v, KVB_DTYPE_F32, nullptr, &err_),
        "kvb_cache_append at " + at(layer, pos));
  ++length_[size_t(layer)];
}

void KvbitsKvStore::attention(int layer, int pos, const float* q, float* out) {
  if (layer < 0 || size_t(layer) >= length_.size())
    throw KvbitsError(KVB_ERR_INVALID_ARGUMENT, "kvbits store: attention at " + at(layer, pos) + ": no such layer");
  if (pos + 1 != length_[size_t(layer)])
    throw KvbitsError(KVB_ERR_INVALID_ARGUMENT, "kvbits store: attention at " + at(layer, pos) +
                                                    ": decode runs at the last appended position (" +
                                                    std::to_string(length_[size_t(layer)] - 1) + ")");
  kvb_attention_params params;
  kvb_attention_params_default(&params);
  params.scale = float(1.0 / std::sqrt(double(info_.head_dim)));
  check(kvb_attention_decode(cache_.get(), uint32_t(layer), &seq_, 1, q, KVB_DTYPE_F32, out, nullptr, &params,
                             nullptr, &err_),
        "kvb_attention_decode at " + at(layer, pos));
}

void KvbitsKvStore::read(int layer, int pos, float* k, float* v) const {
  check(kvb_cache_read(cache_.get(), seq_, uint32_t(layer), uint32_t(pos), 1, k, v, &err_),
        "kvb_cache_read at " + at(layer, pos));
}

void KvbitsKvStore::reset() {
  check(kvb_cache_seq_remove(cache_.get(), seq_, &err_), "kvb_cache_seq_remove");
  seq_ = KVB_SEQ_NONE;
  std::fill(length_.begin(), length_.end(), 0);
  check(kvb_cache_seq_add(cache_.get(), &seq_, &err_), "kvb_cache_seq_add");
}

kvb_cache_stats KvbitsKvStore::cache_stats() const {
  kvb_cache_stats stats{};
  stats.struct_size = sizeof stats;
  check(kvb_cache_get_stats(cache_.get(), &stats, &err_), "kvb_cache_get_stats");
  return stats;
}

}  // namespace llama2c
