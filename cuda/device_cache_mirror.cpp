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
  std::vector<float> cent, rot, krot;
  std::vector<uint16_t> slots;
  std::vector<size_t> krot_off;
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
    krot_off.push_back(krot.size());
    for (size_t g = 0; g < k.n_groups(); ++g) {
      const KeyGroup& kg = k.groups()[g];
      d.k_groups[g] = {kg.bits, kg.first_slot, kg.dims, uint32_t(k.group_byte_offset(g)),
                       uint32_t(cent.size()) - d.centroid_base};
      cent.insert(cent.end(), k.codebook(g).centroids.begin(), k.codebook(g).centroids.end());
      krot.insert(krot.end(), k.rotation(g).begin(), k.rotation(g).end());
    }
    // Keep every head's K rotations 16-byte aligned (4 floats).
    krot.resize((krot.size() + 3) / 4 * 4, 0.0f);
    for (uint32_t sd : k.slot_dim()) slots.push_back(uint16_t(sd));
    d.v_bits = v.groups()[0].bits;
    d.v_centroid_offset = uint32_t(cent.size()) - d.centroid_base;
    cent.insert(cent.end(), v.codebook(0).centroids.begin(), v.codebook(0).centroids.end());
    d.n_centroids = uint32_t(cent.size()) - d.centroid_base;
    rot.insert(rot.end(), v.rotation(0).begin(), v.rotation(0).end());
  }
  centroids_ = DeviceBlock(cent.data(), cent.size() * 4);
  rotations_ = DeviceBlock(rot.data(), rot.size() * 4);
  k_rotations_ = DeviceBlock(krot.data(), krot.size() * 4);
  slot_dims_ = DeviceBlock(slots.data(), slots.size() * 2);
  const size_t dd = size_t(head_dim_) * head_dim_;
  for (size_t h = 0; h < n; ++h) {
    host_[h].v_rotation = rotations_.as<float>() + h * dd;
    host_[h].k_rotation = k_rotations_.as<float>() + krot_off[h];
    host_[h].k_slot_dim = slot_dims_.as<uint16_t>() + h * head_dim_;
  }
  upload_heads();
}

DecodeTables DecodeTables::fp16(uint32_t head_dim, const std::vector<PageLayout>& layouts,
                                const std::vector<const uint8_t*>& pools) {
  if (layouts.empty() || pools.size() != layouts.size())
    fail(StatusCode::invalid_argument, "DecodeTables: one layout and pool per KV head");
  DecodeTables t;
  t.head_dim_ = head_dim;
  t.fp16_ = true;
  t.host_.resize(layouts.size());
  for (size_t h = 0; h < layouts.size(); ++h) {
    const PageLayout& lay = layouts[h];
    if (!lay.fp16) fail(StatusCode::invalid_argument, "DecodeTables::fp16: head " + std::to_string(h) + " is packed");
    DecodeHead& d = t.host_[h];
    d.pool = pools[h];
    d.page_bytes = lay.page_bytes;
    d.k_scales = uint32_t(lay.k_scales), d.v_codes = uint32_t(lay.v_codes), d.v_scales = uint32_t(lay.v_scales);
    d.k_code_bytes = lay.k_code_bytes, d.v_code_bytes = lay.v_code_bytes;
  }
  t.upload_heads();
  return t;
}

void DecodeTables::upload_heads() { heads_ = DeviceBlock(host_.data(), host_.size() * sizeof(DecodeHead)); }

void DecodeTables::fill(DecodeParams& p) const {
  p.heads = heads_.as<DecodeHead>();
  p.heads_host = host_.data();
  p.centroids = fp16_ ? nullptr : centroids_.as<float>();
  p.n_kv_heads = uint32_t(host_.size());
  p.head_dim = head_dim_;
  p.fp16_layer = fp16_;
}

DeviceCacheMirror::DeviceCacheMirror(const Cache& cache, uint32_t layer, const std::vector<uint64_t>& seqs)
    : cache_(cache), layer_(layer) {
  const Plan& plan = cache.plan();
  if (layer >= plan.shape.n_layers) fail(StatusCode::invalid_argument, "DeviceCacheMirror: layer out of range");
  const bool fp16_layer = plan.layers[layer].keep_fp16;
  const uint32_t H = plan.shape.n_kv_heads, P = cache.config().page_size, D = plan.shape.head_dim;
  const uint64_t max_pages = cache.config().max_pages;
  std::vector<PageLayout> layouts;
  std::vector<const uint8_t*> pool_ptrs;
  for (uint32_t h = 0; h < H; ++h) {
    const PageLayout& lay = cache.page_layout(layer, h);
    // A region is max_pages pages back to back (docs/cache-layout.md §10.1): copy all of it.
    pools_.emplace_back(cache.page_data(layer, h, 0), size_t(max_pages) * lay.page_bytes);
    pool_ptrs.push_back(pools_.back().as<uint8_t>());
    layouts.push_back(lay);
    if (!fp16_layer) quant_.push_back(&cache.quantizers(layer, h));
  }
  tables_ = fp16_layer ? std::make_unique<DecodeTables>(DecodeTables::fp16(D, layouts, pool_ptrs))
                       : std::make_unique<DecodeTables>(quant_, layouts, pool_ptrs);

  const uint32_t S = cache.sink_tokens(), W = cache.window_tokens();
  const size_t block_elems = size_t(2) * H * (size_t(S) + W) * D;  // K and V, sink and ring rows
  std::vector<uint32_t> table, offsets;
  std::vector<const uint16_t*> block_ptrs;
  for (uint64_t s : seqs) {
    const SeqLayerView v = cache.view(s, layer);
    if (v.len == 0) fail(StatusCode::invalid_argument, "DeviceCacheMirror: a sequence has no tokens in the layer");
    offsets.push_back(uint32_t(table.size()));
    table.insert(table.end(), v.pages, v.pages + (v.qend - v.sink + P - 1) / P);
    len_.push_back(v.len);
    qend_.push_back(v.qend);
    if (S + W > 0) {
      if (v.fp16_base) {
        fp16_blocks_.emplace_back(v.fp16_base, block_elems * 2);
        block_ptrs.push_back(fp16_blocks_.back().as<uint16_t>());
      } else {
        block_ptrs.push_back(nullptr);
      }
    }
  }
  if (table.empty()) table.push_back(0);
  table_ = DeviceBlock(table.data(), table.size() * 4);
  table_offset_ = DeviceBlock(offsets.data(), offsets.size() * 4);
  seq_len_ = DeviceBlock(len_.data(), len_.size() * 4);
  seq_qend_ = DeviceBlock(qend_.data(), qend_.size() * 4);
  if (!block_ptrs.empty()) fp16_block_ptrs_ = DeviceBlock(block_ptrs.data(), block_ptrs.size() * sizeof(void*));
}

void DeviceCacheMirror::set_queries(const float* q) {
  if (cache_.plan().layers[layer_].keep_fp16)
    fail(StatusCode::unsupported, "DeviceCacheMirror::set_queries: an fp16 layer has no rotated queries; use "
                                  "set_raw_queries");
  const std::vector<float> r = rotate_queries(cache_, layer_, q, len_.size());
  if (!q_rot_.get() || q_rot_.size() != r.size() * 4) q_rot_ = DeviceBlock(r.size() * 4);
  check(cudaMemcpy(q_rot_.get(), r.data(), r.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy(q')");
  raw_ = false;
}

void DeviceCacheMirror::set_raw_queries(const void* q, DType dtype) {
  const ModelShape& sh = cache_.plan().shape;
  const size_t bytes = len_.size() * sh.n_q_heads * sh.head_dim * dtype_size(dtype);
  if (!q_raw_.get() || q_raw_.size() != bytes) q_raw_ = DeviceBlock(bytes);
  check(cudaMemcpy(q_raw_.get(), q, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(q)");
  q_dtype_ = dtype;
  raw_ = true;
}

DecodeParams DeviceCacheMirror::params() const {
  DecodeParams p;
  const Plan& plan = cache_.plan();
  p.n_seqs = uint32_t(len_.size());
  p.n_q_heads = plan.shape.n_q_heads;
  tables_->fill(p);
  p.page_size = cache_.config().page_size;
  p.sink_tokens = cache_.sink_tokens(), p.window_tokens = cache_.window_tokens();
  p.seq_qend = seq_qend_.as<uint32_t>();
  p.fp16_blocks = fp16_block_ptrs_.get() ? fp16_block_ptrs_.as<const uint16_t* const>() : nullptr;
  p.page_table = table_.as<uint32_t>();
  p.table_offset = table_offset_.as<uint32_t>();
  p.seq_len = seq_len_.as<uint32_t>();
  p.max_len = 0;
  for (uint32_t l : len_) p.max_len = l > p.max_len ? l : p.max_len;
  if (raw_) {
    p.q = q_raw_.get();
    p.q_dtype = uint32_t(q_dtype_);
  } else {
    p.q_rot = q_rot_.as<float>();
  }
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
