/* decode_demo — the kvbits C API in one page: a context, a bit plan, a packed KV cache with two
 * sequences, and one decode step of attention on it.
 *
 *   cc -std=c99 decode_demo.c $(pkg-config --cflags --libs kvbits) -o decode_demo
 *   ./decode_demo [PLAN_FILE]
 *
 * With a plan file (made by `kvbits calibrate`) the demo uses that model's shape. Without one it
 * first calibrates a small 3-bit plan from synthetic activations, as you would from a few
 * hundred tokens of your model's real queries and keys. Real code would pass post-RoPE keys,
 * values and queries from its model where this demo makes up numbers.
 */
#include <stdio.h>
#include <stdlib.h>

#include <kvbits.h>

/* Prints the error and returns 1 when a call failed. */
static int failed(kvb_status status, const kvb_error* err, const char* what) {
  if (status == KVB_OK) return 0;
  fprintf(stderr, "%s: %s: %s\n", what, kvb_status_string(status), err->message);
  return 1;
}

/* Deterministic made-up activations, n_rows head vectors: roughly Gaussian, larger in higher
 * dims so that RoPE blocks differ in energy as they do in real models. */
static void fill(float* x, size_t n_rows, unsigned head_dim, unsigned* seed) {
  size_t i;
  for (i = 0; i < n_rows * head_dim; ++i) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < 4; ++j) {
      *seed = *seed * 1664525u + 1013904223u;
      sum += (float)(*seed >> 8) / 16777216.0f;
    }
    x[i] = (sum - 2.0f) * (1.0f + (float)(i % head_dim) * 0.25f);
  }
}

static kvb_status calibrate_plan(kvb_context* ctx, kvb_plan** plan, kvb_error* err) {
  kvb_model_shape shape;
  kvb_calibrator* cal = NULL;
  kvb_status s;
  unsigned layer, seed = 1;
  const size_t n_tokens = 256;
  float *q, *k;

  kvb_model_shape_default(&shape); /* split-half RoPE, theta 10000 */
  shape.n_layers = 2, shape.n_q_heads = 4, shape.n_kv_heads = 2, shape.head_dim = 64;
  q = malloc(n_tokens * shape.n_q_heads * shape.head_dim * sizeof *q);
  k = malloc(n_tokens * shape.n_kv_heads * shape.head_dim * sizeof *k);
  if (!q || !k) {
    free(q), free(k);
    return KVB_ERR_OUT_OF_MEMORY;
  }
  s = kvb_calibrator_create(ctx, &shape, &cal, err);
  for (layer = 0; s == KVB_OK && layer < shape.n_layers; ++layer) {
    fill(q, n_tokens * shape.n_q_heads, shape.head_dim, &seed);
    fill(k, n_tokens * shape.n_kv_heads, shape.head_dim, &seed);
    s = kvb_calibrator_observe(cal, layer, q, k, n_tokens, KVB_DTYPE_F32, err);
  }
  if (s == KVB_OK) {
    kvb_plan_options options;
    kvb_plan_options_default(&options); /* Block-GTQ, 3 key bits on average, 3 value bits */
    s = kvb_calibrator_build_plan(cal, &options, plan, err);
  }
  kvb_calibrator_destroy(cal);
  free(q), free(k);
  return s;
}

int main(int argc, char** argv) {
  kvb_error err;
  kvb_context_params cp;
  kvb_context* ctx = NULL;
  kvb_plan* plan = NULL;
  kvb_plan_info info;
  kvb_cache_params params;
  kvb_cache* cache = NULL;
  kvb_cache_stats stats;
  uint64_t seqs[2];
  uint32_t prompt[2] = {20, 7}, one[2] = {1, 1};
  float *k = NULL, *v = NULL, *q = NULL, *out = NULL, *lse = NULL;
  unsigned layer, seed = 7, i, kv_row, q_row;
  int rc = 1;

  kvb_error_init(&err);
  /* 1. A context: the CPU backend with one worker per core (KVB_BACKEND_AUTO picks a GPU). */
  kvb_context_params_default(&cp);
  cp.backend = KVB_BACKEND_CPU;
  if (failed(kvb_context_create(&cp, &ctx, &err), &err, "context")) goto done;

  /* 2. A plan: loaded from a file, or calibrated here. */
  if (argc > 1) {
    if (failed(kvb_plan_load_file(argv[1], &plan, &err), &err, argv[1])) goto done;
  } else if (failed(calibrate_plan(ctx, &plan, &err), &err, "calibration")) {
    goto done;
  }
  if (failed(kvb_plan_supported(ctx, plan, &err), &err, "plan on this context")) goto done;
  info.struct_size = sizeof info;
  if (failed(kvb_plan_get_info(plan, &info, &err), &err, "plan info")) goto done;
  printf("plan: %u layers, %u query heads, %u KV heads, head_dim %u; %.2f key bits, %u value bits\n",
         info.n_layers, info.n_q_heads, info.n_kv_heads, info.head_dim, info.k_avg_bits, info.v_bits);
  printf("      %.1f bytes per token per KV head (fp16: %u)\n", info.bytes_per_token_per_head, 4 * info.head_dim);

  /* 3. A cache: a pool of 64 pages of 16 tokens, and two sequences. */
  kvb_cache_params_default(&params);
  params.page_size = 16;
  params.max_pages = 64;
  if (failed(kvb_cache_create(ctx, plan, &params, &cache, &err), &err, "cache")) goto done;
  if (failed(kvb_cache_seq_add(cache, &seqs[0], &err), &err, "sequence") ||
      failed(kvb_cache_seq_add(cache, &seqs[1], &err), &err, "sequence"))
    goto done;

  kv_row = info.n_kv_heads * info.head_dim; /* floats per token in k and v */
  q_row = info.n_q_heads * info.head_dim;   /* floats per token in q and out */
  k = malloc((prompt[0] + prompt[1]) * kv_row * sizeof *k);
  v = malloc((prompt[0] + prompt[1]) * kv_row * sizeof *v);
  q = malloc(2 * q_row * sizeof *q);
  out = malloc(2 * q_row * sizeof *out);
  lse = malloc(2 * info.n_q_heads * sizeof *lse);
  if (!k || !v || !q || !out || !lse) goto done;

  /* 4. The prompts: 20 and 7 tokens, every layer, both sequences in one call per layer. */
  for (layer = 0; layer < info.n_layers; ++layer) {
    fill(k, (prompt[0] + prompt[1]) * info.n_kv_heads, info.head_dim, &seed);
    fill(v, (prompt[0] + prompt[1]) * info.n_kv_heads, info.head_dim, &seed);
    if (failed(kvb_cache_append(cache, layer, seqs, prompt, 2, k, v, KVB_DTYPE_F32, NULL, &err), &err, "append"))
      goto done;
  }

  /* 5. One decode step: append each sequence's new token, then attend with its query. */
  for (layer = 0; layer < info.n_layers; ++layer) {
    fill(k, 2 * info.n_kv_heads, info.head_dim, &seed);
    fill(v, 2 * info.n_kv_heads, info.head_dim, &seed);
    fill(q, 2 * info.n_q_heads, info.head_dim, &seed);
    if (failed(kvb_cache_append(cache, layer, seqs, one, 2, k, v, KVB_DTYPE_F32, NULL, &err), &err, "append") ||
        failed(kvb_attention_decode(cache, layer, seqs, 2, q, KVB_DTYPE_F32, out, lse, NULL, NULL, &err), &err,
               "decode"))
      goto done;
    for (i = 0; i < 2; ++i)
      printf("layer %u, sequence %u: out[head 0] = %+.4f %+.4f %+.4f %+.4f ..., lse %.4f\n", layer, i,
             out[i * q_row], out[i * q_row + 1], out[i * q_row + 2], out[i * q_row + 3], lse[i * info.n_q_heads]);
  }

  /* 6. What the cache holds and what it costs. */
  stats.struct_size = sizeof stats;
  if (failed(kvb_cache_get_stats(cache, &stats, &err), &err, "stats")) goto done;
  printf("cache: %llu sequences, %llu tokens, %llu of %llu pages used\n", (unsigned long long)stats.sequences,
         (unsigned long long)stats.tokens, (unsigned long long)stats.pages_used,
         (unsigned long long)stats.pages_total);
  /* Pages are taken whole: a page that is partly filled still counts in full. */
  printf("bytes used: %llu in pages of %u tokens + %llu fp16 sink/window (the same tokens in fp16: %llu)\n",
         (unsigned long long)stats.packed_bytes_used, stats.page_size, (unsigned long long)stats.fp16_region_bytes,
         (unsigned long long)stats.tokens * info.n_layers * 4u * kv_row);
  rc = 0;

done:
  free(k), free(v), free(q), free(out), free(lse);
  kvb_cache_destroy(cache); /* destroy in any order; NULL is fine */
  kvb_plan_destroy(plan);
  kvb_context_destroy(ctx);
  return rc;
}
