#include "attention/head_source.hpp"

#include <string>

#include "kvbits/status.hpp"

namespace kvbits::attn {
namespace {

[[noreturn]] void broken(const std::string& what) {
  fail(StatusCode::internal, "attention: inconsistent cache view: " + what);
}

}  // namespace

void check_head_source(const HeadSource& s) {
  if (s.dim == 0) broken("head dim 0");
  if (!(s.sink <= s.qend && s.qend <= s.len))
    broken("regions sink " + std::to_string(s.sink) + ", qend " + std::to_string(s.qend) + ", len " +
           std::to_string(s.len) + " are not ordered");
  if (s.sink > 0 && (!s.sink_k || !s.sink_v)) broken("sink rows without storage");
  if (s.len > s.qend) {
    if (!s.ring_k || !s.ring_v) broken("window rows without storage");
    if (s.len - s.qend > s.ring_rows)
      broken(std::to_string(s.len - s.qend) + " window tokens in a ring of " + std::to_string(s.ring_rows));
  }
  if (s.qend == s.sink) return;
  if (s.page_size == 0 || !s.pages) broken("packed tokens without pages");
  const size_t n_pages = (size_t(s.qend - s.sink) + s.page_size - 1) / s.page_size;
  for (size_t p = 0; p < n_pages; ++p)
    if (!s.pages[p]) broken("page " + std::to_string(p) + " has no storage");
  const PageLayout& lay = s.layout;
  if (!s.k) {
    if (!lay.fp16 || lay.k_code_bytes < 2 * s.dim || lay.v_code_bytes < 2 * s.dim)
      broken("fp16 page rows shorter than the head dim");
    return;
  }
  if (lay.fp16 || !s.v) broken("a quantized head whose pages are marked fp16");
  if (s.k->dim() != s.dim || s.v->dim() != s.dim) broken("quantizer dims differ from the head dim");
  if (lay.k_code_bytes < s.k->code_bytes() || lay.n_k_scales < s.k->n_groups())
    broken("K rows of " + std::to_string(lay.k_code_bytes) + " code bytes / " + std::to_string(lay.n_k_scales) +
           " scales, the quantizer needs " + std::to_string(s.k->code_bytes()) + " / " +
           std::to_string(s.k->n_groups()));
  if (lay.v_code_bytes < s.v->code_bytes())
    broken("V rows of " + std::to_string(lay.v_code_bytes) + " code bytes, the quantizer needs " +
           std::to_string(s.v->code_bytes()));
}

}  // namespace kvbits::attn
