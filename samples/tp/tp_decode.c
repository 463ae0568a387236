/* tp_decode — tensor-parallel decode on kvbits caches with NCCL, one process driving N GPUs.
 *
 *   kvbits-tp-decode [--gpus N] [--plan FILE] [--tokens T] [--one-gpu]
 *
 * Every GPU r holds a context and a cache of KV heads [r H/N, (r+1) H/N) of one plan (H KV
 * heads; kvb_cache_params.kv_head_begin/end). Each step:
 *   1. every rank appends its heads' slice of the new K/V rows;
 *   2. every rank runs kvb_attention_decode with the query heads of its KV heads
 *      (GQA group G = n_q_heads / H: query heads r H/N G .. (r+1) H/N G - 1);
 *   3. ncclAllGather puts the per-rank outputs side by side on every GPU.
 * A rank's output is [B][Hq/N][D] (sequence-major), so the gather yields [N][B][Hq/N][D]; with
 * B > 1 sequences one strided copy per rank block reorders it to the model's [B][Hq][D]. The
 * result is compared with an unsharded cache of the same plan on GPU 0: it must be identical
 * (kvbits makes a head-range launch split its work as the full launch does).
 *
 * Then a page transfer: sequence 0 of rank 0 is exported into device memory
 * (kvb_cache_seq_export), sent to GPU 1 with ncclSend/ncclRecv and imported there into a cache of
 * rank 0's head range (disaggregated prefill/decode moves sequences this way); its decode must
 * equal rank 0's.
 *
 * --one-gpu puts every rank on GPU 0 and replaces the NCCL calls by device copies: it checks
 * everything but NCCL itself on a machine with one GPU.
 *
 * Exit status: 0 identical; 1 a failure or a difference; 2 bad arguments; 77 fewer GPUs than
 * asked (skipped). NCCL_NVLS_ENABLE is set to 0 unless the environment sets it: NVLink SHARP
 * (multicast) is disabled on some machines (virtualised or partitioned GPUs), where NCCL's
 * NVLS initialisation fails instead of falling back.
 */
#define _POSIX_C_SOURCE 200112L
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvbits.h>

#define MAX_GPUS 8
#define DEV(rank) (one_gpu ? 0 : (rank)) /* the CUDA device of a rank */
#define EXIT_SKIPPED 77

static int kvb_failed(kvb_status s, const kvb_error* err, const char* what) {
  if (s == KVB_OK) return 0;
  fprintf(stderr, "%s: %s: %s\n", what, kvb_status_string(s), err->message);
  return 1;
}
static int cuda_failed(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return 0;
  fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
  return 1;
}
static int nccl_failed(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return 0;
  fprintf(stderr, "%s: %s\n", what, ncclGetErrorString(r));
  return 1;
}
#define KVB(call, what) \
  if (kvb_failed((call), &err, (what))) goto done
#define CUDA(call) \
  if (cuda_failed((call), #call)) goto done
#define NCCL(call) \
  if (nccl_failed((call), #call)) goto done

/* Deterministic made-up activations (as samples/c/decode_demo.c). */
static void fill(float* x, size_t n_rows, unsigned head_dim, unsigned* seed) {
  size_t i;
  for (i = 0; i < n_rows * head_dim; ++i) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < 4; ++j) {
      *seed = *seed * 1664525u + 1013904223u;
      sum += (float)(*seed >> 8) / 16777216.0f;
    }
    x[i] = (sum - 2.0f) * (1.0f + (float)(i % head_dim) * 0.05f);
  }
}

/* A 3-bit Block-GTQ plan from synthetic activations: 2 layers, 8 query heads, 4 KV heads,
 * head_dim 128, 4 fp16 sink tokens and a 16-token fp16 window. */
static kvb_status calibrate_plan(kvb_plan** plan, kvb_error* err) {
  kvb_context_params cp;
  kvb_context* ctx = NULL;
  kvb_model_shape shape;
  kvb_calibrator* cal = NULL;
  kvb_plan_options options;
  const size_t n = 256;
  unsigned layer, seed = 1;
  float *q = NULL, *k = NULL;
  kvb_status s;

  kvb_context_params_default(&cp);
  cp.backend = KVB_BACKEND_CPU;
  kvb_model_shape_default(&shape);
  shape.n_layers = 2, shape.n_q_heads = 8, shape.n_kv_heads = 4, shape.head_dim = 128;
  q = malloc(n * shape.n_q_heads * shape.head_dim * sizeof *q);
  k = malloc(n * shape.n_kv_heads * shape.head_dim * sizeof *k);
  s = q && k ? kvb_context_create(&cp, &ctx, err) : KVB_ERR_OUT_OF_MEMORY;
  if (s == KVB_OK) s = kvb_calibrator_create(ctx, &shape, &cal, err);
  for (layer = 0; s == KVB_OK && layer < shape.n_layers; ++layer) {
    fill(q, n * shape.n_q_heads, shape.head_dim, &seed);
    fill(k, n * shape.n_kv_heads, shape.head_dim, &seed);
    s = kvb_calibrator_observe(cal, layer, q, k, n, KVB_DTYPE_F32, err);
  }
  kvb_plan_options_default(&options);
  options.sink_tokens = 4, options.window_tokens = 16;
  if (s == KVB_OK) s = kvb_calibrator_build_plan(cal, &options, plan, err);
  kvb_calibrator_destroy(cal);
  kvb_context_destroy(ctx);
  free(q), free(k);
  return s;
}

/* rows [n][heads][D] -> rows [n][count][D] of heads [first, first + count) */
static void cut(float* dst, const float* src, size_t n, unsigned heads, unsigned first, unsigned count, unsigned D) {
  size_t t;
  for (t = 0; t < n; ++t) memcpy(dst + t * count * D, src + (t * heads + first) * D, (size_t)count * D * sizeof *dst);
}

static double max_abs_diff(const float* a, const float* b, size_t n, size_t* differing) {
  double m = 0.0;
  size_t i;
  *differing = 0;
  for (i = 0; i < n; ++i) {
    const double d = a[i] > b[i] ? (double)a[i] - b[i] : (double)b[i] - a[i];
    if (memcmp(&a[i], &b[i], sizeof a[i]) != 0) ++*differing;
    if (d > m) m = d;
  }
  return m;
}

int main(int argc, char** argv) {
  enum { B = 2 }; /* sequences decoded together */
  int n_gpus = 2, found = 0, r, a, rc = 1, step, one_gpu = 0;
  unsigned prompt = 300, H, Hq, D, L, G, h_per, q_per, layer, seed = 7;
  const char* plan_file = NULL;
  kvb_error err;
  kvb_plan* plan = NULL;
  kvb_plan_info info;
  kvb_context* ctx[MAX_GPUS] = {NULL};
  kvb_cache* cache[MAX_GPUS] = {NULL};
  kvb_context* ref_ctx = NULL;
  kvb_cache *ref = NULL, *standby = NULL;
  ncclComm_t comm[MAX_GPUS];
  int comm_ready = 0, devs[MAX_GPUS];
  cudaStream_t stream[MAX_GPUS] = {NULL};
  float *d_k[MAX_GPUS] = {NULL}, *d_v[MAX_GPUS] = {NULL}, *d_q[MAX_GPUS] = {NULL}, *d_out[MAX_GPUS] = {NULL};
  float *d_all[MAX_GPUS] = {NULL}, *d_full[MAX_GPUS] = {NULL}, *d_ref[3] = {NULL};
  float *k = NULL, *v = NULL, *q = NULL, *slice = NULL, *want = NULL, *got = NULL;
  void *d_send = NULL, *d_recv = NULL;
  unsigned char *h_sent = NULL, *h_again = NULL;
  uint64_t seqs[B], moved = KVB_SEQ_NONE;
  uint32_t n_prompt[B], one[B];
  size_t export_size = 0, again_size = 0, differing = 0, rows_max = 0, i;
  double worst = 0.0, moved_worst = 0.0;

  for (a = 1; a < argc; ++a) {
    if (strcmp(argv[a], "--gpus") == 0 && a + 1 < argc) n_gpus = atoi(argv[++a]);
    else if (strcmp(argv[a], "--plan") == 0 && a + 1 < argc) plan_file = argv[++a];
    else if (strcmp(argv[a], "--tokens") == 0 && a + 1 < argc) prompt = (unsigned)atoi(argv[++a]);
    else if (strcmp(argv[a], "--one-gpu") == 0) one_gpu = 1;
    else {
      fprintf(stderr, "usage: %s [--gpus N (2..%d)] [--plan FILE] [--tokens T] [--one-gpu]\n", argv[0], MAX_GPUS);
      return 2;
    }
  }
  if (n_gpus < 2 || n_gpus > MAX_GPUS || prompt < 1) {
    fprintf(stderr, "--gpus must be 2..%d and --tokens >= 1\n", MAX_GPUS);
    return 2;
  }
  if (cudaGetDeviceCount(&found) != cudaSuccess) found = 0;
  if (found < (one_gpu ? 1 : n_gpus)) {
    printf("skipped: tensor parallelism over %d GPUs needs %d CUDA devices, this machine has %d\n", n_gpus,
           one_gpu ? 1 : n_gpus, found);
    return EXIT_SKIPPED;
  }
  /* Before any NCCL call: NVLS (NVLink multicast) off unless the user decided otherwise. */
  setenv("NCCL_NVLS_ENABLE", "0", 0);

  kvb_error_init(&err);
  if (plan_file) {
    KVB(kvb_plan_load_file(plan_file, &plan, &err), plan_file);
  } else {
    KVB(calibrate_plan(&plan, &err), "calibration");
  }
  info.struct_size = sizeof info;
  KVB(kvb_plan_get_info(plan, &info, &err), "plan info");
  H = info.n_kv_heads, Hq = info.n_q_heads, D = info.head_dim, L = info.n_layers, G = Hq / H;
  if (H % (unsigned)n_gpus != 0) {
    fprintf(stderr, "the plan's %u KV heads do not split over %d GPUs\n", H, n_gpus);
    rc = 2;
    goto done;
  }
  h_per = H / (unsigned)n_gpus, q_per = h_per * G;
  printf("plan: %u layers, %u query heads, %u KV heads (GQA %u), head_dim %u; %d ranks%s, %u KV heads each\n", L,
         Hq, H, G, D, n_gpus, one_gpu ? " on GPU 0 (--one-gpu)" : " on as many GPUs", h_per);

  /* One context and one head-range cache per GPU; the unsharded reference on GPU 0. */
  for (r = 0; r <= n_gpus; ++r) {
    kvb_context_params cp;
    kvb_cache_params p;
    kvb_context** c = r < n_gpus ? &ctx[r] : &ref_ctx;
    kvb_context_params_default(&cp);
    cp.backend = KVB_BACKEND_CUDA;
    cp.device = r < n_gpus ? DEV(r) : 0;
    KVB(kvb_context_create(&cp, c, &err), "CUDA context");
    KVB(kvb_plan_supported(*c, plan, &err), "plan on the GPU");
    kvb_cache_params_default(&p);
    p.max_pages = 2u * B * (prompt / 64 + 4) * 2;
    if (r < n_gpus) p.kv_head_begin = (uint32_t)r * h_per, p.kv_head_end = (uint32_t)(r + 1) * h_per;
    KVB(kvb_cache_create(*c, plan, &p, r < n_gpus ? &cache[r] : &ref, &err), "cache");
  }
  for (r = 0; r < n_gpus; ++r) devs[r] = r;
  if (!one_gpu) {
    NCCL(ncclCommInitAll(comm, n_gpus, devs));
    comm_ready = 1;
  }

  rows_max = (size_t)B * (prompt * H > Hq ? prompt * H : Hq); /* head rows of any buffer below */
  k = malloc((size_t)B * prompt * H * D * sizeof *k);
  v = malloc((size_t)B * prompt * H * D * sizeof *v);
  q = malloc((size_t)B * Hq * D * sizeof *q);
  slice = malloc(rows_max * D * sizeof *slice);
  want = malloc((size_t)B * Hq * D * sizeof *want);
  got = malloc((size_t)B * Hq * D * sizeof *got);
  if (!k || !v || !q || !slice || !want || !got) goto done;
  for (r = 0; r < n_gpus; ++r) {
    const size_t rows = (size_t)B * prompt * h_per * D * sizeof(float);
    CUDA(cudaSetDevice(DEV(r)));
    CUDA(cudaStreamCreate(&stream[r]));
    CUDA(cudaMalloc((void**)&d_k[r], rows));
    CUDA(cudaMalloc((void**)&d_v[r], rows));
    CUDA(cudaMalloc((void**)&d_q[r], (size_t)B * q_per * D * sizeof(float)));
    CUDA(cudaMalloc((void**)&d_out[r], (size_t)B * q_per * D * sizeof(float)));
    CUDA(cudaMalloc((void**)&d_all[r], (size_t)B * Hq * D * sizeof(float)));
    CUDA(cudaMalloc((void**)&d_full[r], (size_t)B * Hq * D * sizeof(float)));
  }
  CUDA(cudaSetDevice(0));
  CUDA(cudaMalloc((void**)&d_ref[0], rows_max * D * sizeof(float)));
  CUDA(cudaMalloc((void**)&d_ref[1], (size_t)B * prompt * H * D * sizeof(float)));
  CUDA(cudaMalloc((void**)&d_ref[2], (size_t)B * Hq * D * sizeof(float)));

  for (i = 0; i < B; ++i) {
    for (r = 0; r < n_gpus; ++r) KVB(kvb_cache_seq_add(cache[r], &seqs[i], &err), "sequence");
    KVB(kvb_cache_seq_add(ref, &seqs[i], &err), "sequence");
    n_prompt[i] = prompt - (unsigned)i * prompt / 3, one[i] = 1;
  }

  /* step 0: the prompts (prefill, appended only); steps 1..3: decode steps. */
  for (step = 0; step < 4; ++step)
    for (layer = 0; layer < L; ++layer) {
      const uint32_t* counts = step == 0 ? n_prompt : one;
      size_t n_rows = 0;
      for (i = 0; i < B; ++i) n_rows += counts[i];
      fill(k, n_rows * H, D, &seed);
      fill(v, n_rows * H, D, &seed);
      /* 1. append: every rank its heads' slice, on its own device and stream */
      for (r = 0; r < n_gpus; ++r) {
        const size_t bytes = n_rows * h_per * D * sizeof(float);
        CUDA(cudaSetDevice(DEV(r)));
        cut(slice, k, n_rows, H, (unsigned)r * h_per, h_per, D);
        CUDA(cudaMemcpyAsync(d_k[r], slice, bytes, cudaMemcpyHostToDevice, stream[r]));
        CUDA(cudaStreamSynchronize(stream[r]));
        cut(slice, v, n_rows, H, (unsigned)r * h_per, h_per, D);
        CUDA(cudaMemcpyAsync(d_v[r], slice, bytes, cudaMemcpyHostToDevice, stream[r]));
        CUDA(cudaStreamSynchronize(stream[r]));
        KVB(kvb_cache_append(cache[r], layer, seqs, counts, B, d_k[r], d_v[r], KVB_DTYPE_F32, stream[r], &err),
            "append");
      }
      CUDA(cudaSetDevice(0));
      CUDA(cudaMemcpy(d_ref[0], k, n_rows * H * D * sizeof(float), cudaMemcpyHostToDevice));
      CUDA(cudaMemcpy(d_ref[1], v, n_rows * H * D * sizeof(float), cudaMemcpyHostToDevice));
      KVB(kvb_cache_append(ref, layer, seqs, counts, B, d_ref[0], d_ref[1], KVB_DTYPE_F32, NULL, &err), "append");
      if (step == 0) continue;

      /* 2. decode: every rank its query heads */
      fill(q, (size_t)B * Hq, D, &seed);
      for (r = 0; r < n_gpus; ++r) {
        CUDA(cudaSetDevice(DEV(r)));
        cut(slice, q, B, Hq, (unsigned)r * q_per, q_per, D);
        CUDA(cudaMemcpyAsync(d_q[r], slice, (size_t)B * q_per * D * sizeof(float), cudaMemcpyHostToDevice, stream[r]));
        CUDA(cudaStreamSynchronize(stream[r]));
        KVB(kvb_attention_decode(cache[r], layer, seqs, B, d_q[r], KVB_DTYPE_F32, d_out[r], NULL, NULL, stream[r],
                                 &err),
            "decode");
      }
      /* 3. all-gather [B][q_per][D] from every rank: d_all = [N][B][q_per][D] on every GPU */
      if (one_gpu) {
        for (r = 0; r < n_gpus; ++r) CUDA(cudaStreamSynchronize(stream[r]));
        for (r = 0; r < n_gpus; ++r)
          for (a = 0; a < n_gpus; ++a)
            CUDA(cudaMemcpy(d_all[r] + (size_t)a * B * q_per * D, d_out[a], (size_t)B * q_per * D * sizeof(float),
                            cudaMemcpyDeviceToDevice));
      } else {
        NCCL(ncclGroupStart());
        for (r = 0; r < n_gpus; ++r)
          NCCL(ncclAllGather(d_out[r], d_all[r], (size_t)B * q_per * D, ncclFloat, comm[r], stream[r]));
        NCCL(ncclGroupEnd());
      }
      /* head-major reorder: rank block j of sequence b goes to heads j q_per .. of row b */
      for (r = 0; r < n_gpus; ++r) {
        int j;
        CUDA(cudaSetDevice(DEV(r)));
        for (j = 0; j < n_gpus; ++j)
          CUDA(cudaMemcpy2DAsync(d_full[r] + (size_t)j * q_per * D, (size_t)Hq * D * sizeof(float),
                                 d_all[r] + (size_t)j * B * q_per * D, (size_t)q_per * D * sizeof(float),
                                 (size_t)q_per * D * sizeof(float), B, cudaMemcpyDeviceToDevice, stream[r]));
      }
      /* the unsharded reference */
      CUDA(cudaSetDevice(0));
      CUDA(cudaMemcpy(d_ref[0], q, (size_t)B * Hq * D * sizeof(float), cudaMemcpyHostToDevice));
      KVB(kvb_attention_decode(ref, layer, seqs, B, d_ref[0], KVB_DTYPE_F32, d_ref[2], NULL, NULL, NULL, &err),
          "reference decode");
      CUDA(cudaMemcpy(want, d_ref[2], (size_t)B * Hq * D * sizeof(float), cudaMemcpyDeviceToHost));
      for (r = 0; r < n_gpus; ++r) {
        size_t diff = 0;
        double m;
        CUDA(cudaSetDevice(DEV(r)));
        CUDA(cudaStreamSynchronize(stream[r]));
        CUDA(cudaMemcpy(got, d_full[r], (size_t)B * Hq * D * sizeof(float), cudaMemcpyDeviceToHost));
        m = max_abs_diff(got, want, (size_t)B * Hq * D, &diff);
        if (m > worst) worst = m;
        differing += diff;
      }
      printf("step %d layer %u: gathered output of %d ranks vs unsharded: max |diff| %.3g\n", step, layer, n_gpus,
             worst);
    }
  printf("tensor parallel decode: max |diff| %.3g, %zu values not bit-identical (must be 0)\n", worst, differing);

  /* Page transfer: sequence 0 of rank 0 -> GPU 1, imported into a cache of rank 0's heads. */
  {
    kvb_cache_params p;
    size_t written = 0, diff = 0;
    kvb_cache_params_default(&p);
    p.max_pages = 2u * B * (prompt / 64 + 4) * 2;
    p.kv_head_begin = 0, p.kv_head_end = h_per;
    KVB(kvb_cache_create(ctx[1], plan, &p, &standby, &err), "standby cache");
    KVB(kvb_cache_seq_export_size(cache[0], seqs[0], &export_size, &err), "export size");
    CUDA(cudaSetDevice(DEV(0)));
    CUDA(cudaMalloc(&d_send, export_size));
    CUDA(cudaSetDevice(DEV(1)));
    CUDA(cudaMalloc(&d_recv, export_size));
    KVB(kvb_cache_seq_export(cache[0], seqs[0], d_send, export_size, &written, stream[0], &err), "export");
    /* The receiver learns the size out of band here (one process); a real runtime sends it first. */
    if (one_gpu) {
      CUDA(cudaMemcpy(d_recv, d_send, export_size, cudaMemcpyDeviceToDevice));
    } else {
      NCCL(ncclGroupStart());
      NCCL(ncclSend(d_send, export_size, ncclUint8, 1, comm[0], stream[0]));
      NCCL(ncclRecv(d_recv, export_size, ncclUint8, 0, comm[1], stream[1]));
      NCCL(ncclGroupEnd());
    }
    CUDA(cudaSetDevice(DEV(1)));
    CUDA(cudaStreamSynchronize(stream[1]));
    KVB(kvb_cache_seq_import(standby, d_recv, export_size, &moved, stream[1], &err), "import");
    /* The moved sequence re-exports to the same bytes and decodes as on rank 0. */
    h_sent = malloc(export_size);
    h_again = malloc(export_size);
    if (!h_sent || !h_again) goto done;
    CUDA(cudaSetDevice(0));
    CUDA(cudaMemcpy(h_sent, d_send, export_size, cudaMemcpyDeviceToHost));
    KVB(kvb_cache_seq_export(standby, moved, h_again, export_size, &again_size, NULL, &err), "re-export");
    fill(q, (size_t)B * Hq, D, &seed);
    cut(slice, q, 1, Hq, 0, q_per, D);
    for (layer = 0; layer < L; ++layer) {
      KVB(kvb_attention_decode(cache[0], layer, &seqs[0], 1, slice, KVB_DTYPE_F32, want, NULL, NULL, NULL, &err),
          "decode on rank 0");
      KVB(kvb_attention_decode(standby, layer, &moved, 1, slice, KVB_DTYPE_F32, got, NULL, NULL, NULL, &err),
          "decode on GPU 1");
      const double m = max_abs_diff(got, want, (size_t)q_per * D, &diff);
      if (m > moved_worst) moved_worst = m;
      differing += diff;
    }
    printf("page transfer: %zu bytes rank 0 -> rank 1 %s, re-export %s, decode max |diff| %.3g\n", export_size,
           one_gpu ? "by a device copy (--one-gpu)" : "over NCCL",
           again_size == export_size && memcmp(h_sent, h_again, export_size) == 0 ? "identical" : "DIFFERENT",
           moved_worst);
    if (again_size != export_size || memcmp(h_sent, h_again, export_size) != 0) ++differing;
  }
  rc = differing == 0 ? 0 : 1;
  printf(rc == 0 ? "OK: identical to the unsharded cache\n" : "FAILED: results differ\n");

done:
  for (r = 0; r < n_gpus && r < MAX_GPUS; ++r) {
    if (comm_ready) ncclCommDestroy(comm[r]);
    cudaSetDevice(DEV(r));
    if (stream[r]) cudaStreamDestroy(stream[r]);
    cudaFree(d_k[r]), cudaFree(d_v[r]), cudaFree(d_q[r]), cudaFree(d_out[r]), cudaFree(d_all[r]), cudaFree(d_full[r]);
    kvb_cache_destroy(cache[r]);
    kvb_context_destroy(ctx[r]);
  }
  cudaFree(d_ref[0]), cudaFree(d_ref[1]), cudaFree(d_ref[2]), cudaFree(d_send), cudaFree(d_recv);
  kvb_cache_destroy(standby);
  kvb_cache_destroy(ref);
  kvb_context_destroy(ref_ctx);
  kvb_plan_destroy(plan);
  free(k), free(v), free(q), free(slice), free(want), free(got), free(h_sent), free(h_again);
  return rc;
}
