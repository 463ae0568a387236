/* crosslang — the cross-language check in C: load the fixture's plan, append every sequence in
 * one kvb_cache_append call, decode, and write out.f32 / lse.f32 (bindings/crosslang/README.md).
 *
 *   cc -std=c99 crosslang.c $(pkg-config --cflags --libs kvbits) -o crosslang
 *   ./crosslang FIXTURE OUT
 */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <kvbits.h>

#define MAX_SEQS 64

typedef struct {
  unsigned page_size, n_seqs, n_kv_heads, n_q_heads, head_dim, layer;
  uint32_t tokens[MAX_SEQS];
  size_t total_tokens;
} fixture_case;

static int die(const char* what, const char* why) {
  fprintf(stderr, "crosslang: %s: %s\n", what, why);
  return 1;
}

static int kvb_failed(kvb_status status, const kvb_error* err, const char* what) {
  if (status == KVB_OK) return 0;
  fprintf(stderr, "crosslang: %s: %s: %s\n", what, kvb_status_string(status), err->message);
  return 1;
}

static void join(char* buf, size_t cap, const char* dir, const char* name) {
  snprintf(buf, cap, "%s/%s", dir, name);
}

/* Reads case.txt: `key value...` lines. Returns 0 on success. */
static int read_case(const char* dir, fixture_case* c) {
  char path[4096], key[64];
  unsigned seen = 0, tokens_seen = 0;
  FILE* f;
  memset(c, 0, sizeof *c);
  join(path, sizeof path, dir, "case.txt");
  if (!(f = fopen(path, "r"))) return die(path, "cannot open");
  while (fscanf(f, "%63s", key) == 1) {
    unsigned* field = NULL;
    if (!strcmp(key, "tokens")) {
      unsigned long v;
      int ch;
      for (;;) {
        while ((ch = fgetc(f)) == ' ' || ch == '\t') {}
        if (ch == '\n' || ch == EOF) break;
        ungetc(ch, f);
        if (fscanf(f, "%lu", &v) != 1 || tokens_seen == MAX_SEQS || v > UINT32_MAX) {
          fclose(f);
          return die(path, "bad tokens line");
        }
        c->tokens[tokens_seen++] = (uint32_t)v;
        c->total_tokens += v;
      }
      seen |= 1u << 6;
      continue;
    }
    if (!strcmp(key, "page_size")) field = &c->page_size, seen |= 1u << 0;
    else if (!strcmp(key, "sequences")) field = &c->n_seqs, seen |= 1u << 1;
    else if (!strcmp(key, "n_kv_heads")) field = &c->n_kv_heads, seen |= 1u << 2;
    else if (!strcmp(key, "n_q_heads")) field = &c->n_q_heads, seen |= 1u << 3;
    else if (!strcmp(key, "head_dim")) field = &c->head_dim, seen |= 1u << 4;
    else if (!strcmp(key, "layer")) field = &c->layer, seen |= 1u << 5;
    if (!field || fscanf(f, "%u", field) != 1) {
      fclose(f);
      return die(path, "unknown key or bad value");
    }
  }
  fclose(f);
  if (seen != 0x7f) return die(path, "a key is missing");
  if (c->n_seqs == 0 || c->n_seqs > MAX_SEQS || tokens_seen != c->n_seqs)
    return die(path, "sequences does not match the tokens line");
  return 0;
}

/* Reads exactly n little-endian fp32 values. */
static float* read_f32(const char* dir, const char* name, size_t n) {
  char path[4096];
  float* x = malloc(n * sizeof *x + 1);
  FILE* f;
  join(path, sizeof path, dir, name);
  if (!x || !(f = fopen(path, "rb"))) {
    free(x);
    die(path, "cannot open");
    return NULL;
  }
  if (fread(x, sizeof *x, n, f) != n || fgetc(f) != EOF) {
    fclose(f);
    free(x);
    die(path, "wrong size");
    return NULL;
  }
  fclose(f);
  return x;
}

static int write_f32(const char* dir, const char* name, const float* x, size_t n) {
  char path[4096];
  FILE* f;
  join(path, sizeof path, dir, name);
  if (!(f = fopen(path, "wb"))) return die(path, "cannot create");
  if (fwrite(x, sizeof *x, n, f) != n) {
    fclose(f);
    return die(path, "write failed");
  }
  return fclose(f) == 0 ? 0 : die(path, "write failed");
}

int main(int argc, char** argv) {
  const uint32_t probe = 1;
  fixture_case c;
  kvb_error err;
  kvb_context_params cp;
  kvb_cache_params params;
  kvb_context* ctx = NULL;
  kvb_plan* plan = NULL;
  kvb_cache* cache = NULL;
  uint64_t seqs[MAX_SEQS];
  float *k = NULL, *v = NULL, *q = NULL, *out = NULL, *lse = NULL;
  char path[4096];
  size_t kv_n, q_n;
  unsigned i;
  int rc = 1;

  if (argc != 3) return die("usage", "crosslang FIXTURE OUT");
  if (*(const unsigned char*)&probe != 1) return die("host", "the fixture is little-endian; this host is not");
  if (read_case(argv[1], &c)) return 1;
  kv_n = c.total_tokens * c.n_kv_heads * c.head_dim;
  q_n = (size_t)c.n_seqs * c.n_q_heads * c.head_dim;
  if (!(k = read_f32(argv[1], "k.f32", kv_n)) || !(v = read_f32(argv[1], "v.f32", kv_n)) ||
      !(q = read_f32(argv[1], "q.f32", q_n)))
    goto done;
  out = malloc(q_n * sizeof *out);
  lse = malloc((size_t)c.n_seqs * c.n_q_heads * sizeof *lse);
  if (!out || !lse) {
    die("memory", "out of memory");
    goto done;
  }

  kvb_error_init(&err);
  kvb_context_params_default(&cp);
  cp.backend = KVB_BACKEND_CPU;
  cp.n_threads = 2;
  if (kvb_failed(kvb_context_create(&cp, &ctx, &err), &err, "context")) goto done;
  join(path, sizeof path, argv[1], "plan.kvbplan");
  if (kvb_failed(kvb_plan_load_file(path, &plan, &err), &err, path)) goto done;
  kvb_cache_params_default(&params);
  params.page_size = c.page_size;
  params.max_pages = 256;
  if (kvb_failed(kvb_cache_create(ctx, plan, &params, &cache, &err), &err, "cache")) goto done;
  for (i = 0; i < c.n_seqs; ++i)
    if (kvb_failed(kvb_cache_seq_add(cache, &seqs[i], &err), &err, "sequence")) goto done;
  if (kvb_failed(kvb_cache_append(cache, c.layer, seqs, c.tokens, c.n_seqs, k, v, KVB_DTYPE_F32, NULL, &err), &err,
                 "append") ||
      kvb_failed(kvb_attention_decode(cache, c.layer, seqs, c.n_seqs, q, KVB_DTYPE_F32, out, lse, NULL, NULL, &err),
                 &err, "decode"))
    goto done;
  if (mkdir(argv[2], 0777) != 0 && errno != EEXIST) {
    die(argv[2], strerror(errno));
    goto done;
  }
  if (write_f32(argv[2], "out.f32", out, q_n) || write_f32(argv[2], "lse.f32", lse, (size_t)c.n_seqs * c.n_q_heads))
    goto done;
  rc = 0;

done:
  kvb_cache_destroy(cache);
  kvb_plan_destroy(plan);
  kvb_context_destroy(ctx);
  free(k), free(v), free(q), free(out), free(lse);
  return rc;
}
