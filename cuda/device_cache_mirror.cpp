#include "cuda/device_cache_mirror.hpp"

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "kvbits/status.hpp"

namespace kvbits::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

DeviceBlock::DeviceBlock(size_t bytes) : bytes_(bytes) {
  check(cudaMalloc(&p_, bytes ? bytes : 1), "cudaMalloc");
}

DeviceBlock::DeviceBlock(const void* host, size_t bytes) : DeviceBlock(bytes) {
  if (bytes) check(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(upload)");
}

DeviceBlock::~DeviceBlock() { cudaFree(p_); }

DeviceBlock::DeviceBlock(DeviceBlock&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBlock& DeviceBlock::operator=(DeviceBlock&& o) noexcept {
  if (this != &o) {
    cudaFree(p_);
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

DecodeTables::DecodeTables(const std::vector<const HeadQuantizers*>& quantizers, const std::vector<PageLayout>& layouts,
                           const std::vector<const uint8_t*>& pools) {
  const size_t n = quantizers.size();
  if (n == 0 || layouts.size() != n || pools.size() != n)
    fail(StatusCode::invalid_argument, "DecodeTables: one quantizer, layout and pool per KV head");
  head_dim_ = quantizers[0]->k.dim();
  std::vector<float> cent, rot;
  host_.resize(n);
  for (size_t h = 0; h < n; ++h) {
    const TqQuantizer& k = quantizers[h]->k;
    const TqQuantizer& v = quantizers[h]->v;
    const PageLayout& lay = layouts[h];
    if (k.n_groups() > kDecodeMaxGroups || v.n_groups() != 1 || k.dim() != head_dim_ || v.dim() != head_dim_ || lay.fp16)
      fail(StatusCode::unsupported, "DecodeTables: head " + std::to_string(h) + " is not a packed K/V head");
    DecodeHead& d = host_[h];
    d.pool = pools[h];
    d.page_bytes = lay.page_bytes;
    d.k_scales = uint32_t(lay.k_scales), d.v_codes = uint32_t(lay.v_codes), d.v_scales = uint32_t(lay.v_scales);
    d.k_code_bytes = lay.k_code_bytes, d.n_k_groups = uint32_t(k.n_groups()), d.v_code_bytes = lay.v_code_bytes;
    if (lay.k_codes != 0) fail(StatusCode::invalid_argument, "DecodeTables: K codes must start the page");
    d.centroid_base = uint32_t(cent.size());
    for (size_t g = 0; g < k.n_groups(); ++g) {
      const KeyGroup& kg = k.groups()[g];
      d.k_groups[g] = {kg.bits, kg.first_slot, kg.dims, uint32_t(k.group_byte_offset(g)),
                       uint32_t(cent.size()) - d.centroid_base};
      cent.insert(cent.end(), k.codebook(g).centroids.begin(), k.codebook(g).centroids.end());
    }
    d.v_bits = v.groups()[0].bits;
    d.v_centroid_offset = uint32_t(cent.size()) - d.centroid_base;
    cent.insert(cent.end(), v.codebook(0).centroids.begin(), v.codebook(0).centroids.end());
    d.n_centroids = uint32_t(cent.size()) - d.centroid_base;
    rot.insert(rot.end(), v.rotation(0).begin(), v.rotation(0).end());
  }
  centroids_ = DeviceBlock(cent.data(), cent.size() * 4);
  rotations_ = DeviceBlock(rot.data(), rot.size() * 4);
  const size_t dd = size_t(head_dim_) * head_dim_;
  for (size_t h = 0; h < n; ++h) host_[h].v_rotation = rotations_.as<float>() + h * dd;
  heads_ = DeviceBlock(host_.data(), host_.size() * sizeof(DecodeHead));
}

void DecodeTables::fill(DecodeParams& p) const {
  p.heads = heads_.as<DecodeHead>();
  p.heads_host = host_.data();
  p.centroids = centroids_.as<float>();
  p.n_kv_heads = uint32_t(host_.size());
  p.head_dim = head_dim_;
}

DeviceCacheMirror::DeviceCacheMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs)
    : cache_(cache), layer_(layer) {
  const Plan& plan = cache.plan();
  if (layer >= plan.shape.n_layers) fail(StatusCode::invalid_argument, "DeviceCacheMirror: layer out of range");
  if (cache.sink_tokens() != 0 || cache.window_tokens() != 0)
    fail(StatusCode::unsupported, "DeviceCacheMirror: GPU decode serves caches without sink/window tokens only");
  if (plan.layers[layer].keep_fp16)
    fail(StatusCode::unsupported, "DeviceCacheMirror: GPU decode does not serve fp16 layers yet");
  const uint32_t H = plan.shape.n_kv_heads, P = cache.config().page_size;
  const uint64_t max_pages = cache.config().max_pages;
  std::vector<PageLayout> layouts;
  std::vector<const uint8_t*> pool_ptrs;
  for (uint32_t h = 0; h < H; ++h) {
    const PageLayout& lay = cache.page_layout(layer, h);
    // A region is max_pages pages back to back (docs/cache-layout.md §10.1): copy all of it.
    pools_.emplace_back(cache.page_data(layer, h, 0), size_t(max_pages) * lay.page_bytes);
    pool_ptrs.push_back(pools_.back().as<uint8_t>());
    layouts.push_back(lay);
    quant_.push_back(&cache.quantizers(layer, h));
  }
  tables_ = std::make_unique<DecodeTables>(quant_, layouts, pool_ptrs);

  std::vector<uint32_t> table, offsets;
  for (uint64_t s : seqs) {
    const SeqLayerView v = cache.view(s, layer);
    if (v.len == 0) fail(StatusCode::invalid_argument, "DeviceCacheMirror: a sequence has no tokens in the layer");
    if (v.sink != 0 || v.qend != v.len)
      fail(StatusCode::unsupported, "DeviceCacheMirror: sequence holds fp16 sink/window tokens");
    offsets.push_back(uint32_t(table.size()));
    table.insert(table.end(), v.pages, v.pages + (v.qend + P - 1) / P);
    len_.push_back(v.len);
  }
  if (table.empty()) table.push_back(0);
  table_ = DeviceBlock(table.data(), table.size() * 4);
  table_offset_ = DeviceBlock(offsets.data(), offsets.size() * 4);
  seq_len_ = DeviceBlock(len_.data(), len_.size() * 4);
}

void DeviceCacheMirror::set_queries(const float* q) {
  const std::vector<float> r = rotate_queries(cache_, layer_, q, len_.size());
  if (!q_rot_.get() || q_rot_.size() != r.size() * 4) q_rot_ = DeviceBlock(r.size() * 4);
  check(cudaMemcpy(q_rot_.get(), r.data(), r.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy(q')");
}

DecodeParams DeviceCacheMirror::params() const {
  DecodeParams p;
  const Plan& plan = cache_.plan();
  p.n_seqs = uint32_t(len_.size());
  p.n_q_heads = plan.shape.n_q_heads;
  tables_->fill(p);
  p.page_size = cache_.config().page_size;
  p.sink_tokens = cache_.sink_tokens(), p.window_tokens = cache_.window_tokens();
  p.fp16_layer = plan.layers[layer_].keep_fp16;
  p.page_table = table_.as<uint32_t>();
  p.table_offset = table_offset_.as<uint32_t>();
  p.seq_len = seq_len_.as<uint32_t>();
  p.max_len = 0;
  for (uint32_t l : len_) p.max_len = l > p.max_len ? l : p.max_len;
  p.q_rot = q_rot_.as<float>();
  return p;
}

std::vector<float> rotate_queries(const Cache& cache, uint32_t layer, const float* q, size_t n_seqs) {
  const ModelShape& sh = cache.plan().shape;
  const uint32_t D = sh.head_dim, G = sh.gqa_group();
  std::vector<float> out(n_seqs * sh.n_q_heads * D);
  for (size_t s = 0; s < n_seqs; ++s)
    for (uint32_t qh = 0; qh < sh.n_q_heads; ++qh) {
      const size_t off = (s * sh.n_q_heads + qh) * D;
      cache.quantizers(layer, qh / G).k.rotate_query(q + off, out.data() + off);
    }
  return out;
}

}  // namespace kvbits::cuda
