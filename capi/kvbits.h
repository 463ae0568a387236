/*
 * kvbits.h — the C API of kvbits, a low-bit (2-4 bits per value) KV-cache library.
 *
 * One header, C99, no CUDA headers needed. Link with -lkvbits (pkg-config: kvbits).
 * Data flow: calibrate -> plan -> cache (append) -> attention. docs/c-api.md walks through it.
 *
 * Conventions
 *   - Objects are opaque handles created by *_create / *_load / *_build with an out-parameter
 *     and freed by *_destroy, which accepts NULL (a no-op). On failure *out is set to NULL.
 *   - Every fallible call returns a kvb_status. Values are pinned forever; new ones are only added.
 *   - Every fallible call takes an optional `kvb_error* err` as its last argument. When non-NULL,
 *     it receives the status and a human-readable message in the same call, so no thread-local
 *     state is needed (safe from Go, where goroutines move between threads). Set
 *     err->struct_size = sizeof(kvb_error) first (kvb_error_init does it).
 *   - The same message is also kept per context: kvb_context_last_error() returns the latest
 *     failure of any call made with a context or with a cache / calibrator created from it.
 *   - Structs start with `uint32_t struct_size` (= sizeof the struct the caller was compiled
 *     with). The library reads and writes only min(struct_size, its own sizeof): old callers keep
 *     working with newer libraries. A struct_size below the first version of the struct gives
 *     KVB_ERR_INVALID_ARGUMENT; input bytes beyond what the library knows must be zero (else
 *     KVB_ERR_UNSUPPORTED: the caller asked for a feature this library lacks); output bytes
 *     beyond it are zeroed. Input structs are filled by *_default() and end with `reserved`
 *     fields that must be zero.
 *   - Parameter structs are passed by pointer; where documented, NULL means "all defaults".
 *   - Tensors are dense, row-major, caller-owned and only read or written during the call.
 *     Shapes are given in the comments: [n_tokens, n_kv_heads, head_dim] means head_dim varies
 *     fastest. Element types are kvb_dtype values.
 *   - Counts that say how much work a call does (n_tokens, n_seqs) must be >= 1: a zero count
 *     is KVB_ERR_INVALID_ARGUMENT (it is almost always a bookkeeping bug in the caller).
 *   - `void* stream` is a cudaStream_t for CUDA contexts (not owned; NULL = the default stream)
 *     and is ignored by the CPU backend. Calls return when the work is done (CPU) or enqueued.
 *
 * Where tensors live on a CUDA context (KVB_BACKEND_CUDA)
 *   - k, v, q, out and lse may be device memory (cudaMalloc, managed) OR host memory: the
 *     library tells them apart (cudaPointerGetAttributes). Host tensors are staged through the
 *     context and the call then waits for its result, so a program written for the CPU backend
 *     runs unchanged on the GPU. seqs, n_tokens and q_len are always host arrays.
 *   - The cache (pages, fp16 sink/window rows) lives in device memory with the CPU backend's
 *     byte layout; kvb_cache_read copies back to the host.
 *   - kvb_cache_append checks K/V on the device and waits for that check once (all-or-nothing
 *     needs its answer before anything changes), so it cannot be captured in a CUDA graph.
 *     kvb_attention_decode with device tensors only enqueues work on `stream`, allocates
 *     nothing and never waits: it can be captured, and a replay reads the cache's current
 *     lengths, so one graph serves every decode step of a batch. Query values in device
 *     memory are not checked (a non-finite query gives non-finite outputs).
 *   - Calls on one context are ordered among themselves whatever streams they use (an event
 *     chain); order your own work on those streams as usual. docs/c-api.md has the details.
 *   - A failed call leaves every object exactly as it was: nothing is half-appended, no sequence
 *     is half-removed, no output buffer is written.
 *
 * Thread safety
 *   free functions     (version, status strings, *_default, kvb_error_init) are thread-safe.
 *   kvb_plan           immutable once created: any number of threads, contexts and caches may
 *                      use one plan at once.
 *   kvb_context        thread-safe. Work submitted through it from several threads (append,
 *                      read and attention on any of its caches) takes turns on its one worker
 *                      pool: use one context per thread for parallel throughput.
 *                      kvb_context_last_error may be called at any time.
 *   kvb_cache          needs external synchronisation: never call two functions on the same
 *                      cache at once (queries included) unless you hold your own lock. Different
 *                      caches may be used from different threads.
 *   kvb_calibrator     needs external synchronisation, like a cache.
 *   kvb_error          owned by the caller; one per thread or call.
 *   Destroying a handle while another thread uses it is undefined behaviour.
 *
 * Lifetimes
 *   A cache or calibrator keeps its context and plan alive internally, so handles may be
 *   destroyed in any order (convenient for garbage-collected bindings whose finalizers run in
 *   no particular order): kvb_plan_destroy / kvb_context_destroy only drop the caller's reference.
 */
#ifndef KVBITS_H
#define KVBITS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(KVBITS_BUILD)
#    define KVB_API __declspec(dllexport)
#  else
#    define KVB_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define KVB_API __attribute__((visibility("default")))
#else
#  define KVB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version --------------------------------------------------------------------------- */

#define KVB_VERSION_MAJOR 0
#define KVB_VERSION_MINOR 1
#define KVB_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH, comparable as an integer. */
#define KVB_VERSION_NUMBER (KVB_VERSION_MAJOR * 10000 + KVB_VERSION_MINOR * 100 + KVB_VERSION_PATCH)

/* Version of the library actually loaded (may differ from the header's macros). */
KVB_API uint32_t kvb_version_number(void);
/* "0.1.0"; static storage. */
KVB_API const char* kvb_version_string(void);

/* ---- status and errors ----------------------------------------------------------------- */

typedef int32_t kvb_status;
#define KVB_OK 0
#define KVB_ERR_INVALID_ARGUMENT 1     /* a value is out of its documented range            */
#define KVB_ERR_NULL_POINTER 2         /* a required pointer or handle is NULL              */
#define KVB_ERR_SHAPE_MISMATCH 3       /* shapes of tensors / plan / model do not agree     */
#define KVB_ERR_UNSUPPORTED 4          /* valid, but this build or backend cannot do it     */
#define KVB_ERR_CORRUPT_DATA 5         /* a file or buffer fails validation                 */
#define KVB_ERR_VERSION_UNSUPPORTED 6  /* needs a newer format version or unknown feature   */
#define KVB_ERR_IO 7                   /* open/read/write failed                            */
#define KVB_ERR_OUT_OF_MEMORY 8        /* an allocation failed or a size is absurd          */
#define KVB_ERR_CAPACITY_EXHAUSTED 9   /* the cache's page pool or sequence table is full   */
#define KVB_ERR_NOT_FOUND 10           /* unknown (e.g. removed) sequence, missing tensor   */
#define KVB_ERR_INTERNAL 11            /* a bug in kvbits: please report it                 */
#define KVB_ERR_DEVICE 12              /* the CUDA runtime reported an error                */

/* Static lower-case name of a status ("corrupt_data"); "unknown_status" for other values. */
KVB_API const char* kvb_status_string(kvb_status status);

#define KVB_ERROR_MESSAGE_CAPACITY 512
typedef struct kvb_error {
  uint32_t struct_size; /* = sizeof(kvb_error); a smaller value makes calls leave *err alone */
  kvb_status status;    /* the status the call returned */
  char message[KVB_ERROR_MESSAGE_CAPACITY]; /* NUL-terminated, truncated if longer; "" on success */
} kvb_error;

/* Zeroes *err and sets struct_size. NULL is a no-op. */
KVB_API void kvb_error_init(kvb_error* err);

/* ---- element types and enums --------------------------------------------------------------
 * Enumerations travel as int32_t so their size is the same in every language; out-of-range
 * values are refused with KVB_ERR_INVALID_ARGUMENT. */

typedef int32_t kvb_dtype;
enum { KVB_DTYPE_F32 = 0, KVB_DTYPE_F16 = 1, KVB_DTYPE_BF16 = 2 };

typedef int32_t kvb_backend;
enum {
  KVB_BACKEND_CPU = 0,  /* the CPU reference backend */
  KVB_BACKEND_CUDA = 1, /* one CUDA device: caches in device memory, GPU append and decode */
  KVB_BACKEND_AUTO = 2  /* CUDA if this build and machine have a device, else CPU */
};

typedef enum kvb_rope_layout { KVB_ROPE_SPLIT_HALF = 0, KVB_ROPE_INTERLEAVED = 1 } kvb_rope_layout;
typedef enum kvb_method { KVB_METHOD_BLOCK_GTQ = 0, KVB_METHOD_UNIFORM_TQ_MSE = 1 } kvb_method;
/* How the calibrator scores a RoPE block from its mean energies Eq, Ek. */
typedef enum kvb_score { KVB_SCORE_ENERGY = 0 /* (Eq+Ek)/2 */, KVB_SCORE_PRODUCT = 1 /* Eq*Ek */ } kvb_score;
typedef enum kvb_codebooks { KVB_CODEBOOKS_LLOYD_MAX = 0, KVB_CODEBOOKS_REFERENCE = 1 } kvb_codebooks;

/* The attention shape of a model. Input struct: fill with kvb_model_shape_default first. */
typedef struct kvb_model_shape {
  uint32_t struct_size; /* = sizeof(kvb_model_shape) */
  uint32_t n_layers;    /* 1..4096 */
  uint32_t n_q_heads;   /* 1..65536, a multiple of n_kv_heads (GQA) */
  uint32_t n_kv_heads;  /* 1..4096 */
  uint32_t head_dim;    /* D: even, 2..1024 */
  uint32_t rotary_dim;  /* even, 2..D (partial rotary); 0 = head_dim */
  int32_t rope_layout;  /* kvb_rope_layout; default KVB_ROPE_SPLIT_HALF (Hugging Face) */
  uint32_t reserved;    /* must be zero */
  double rope_theta;    /* finite, > 1; default 10000 */
} kvb_model_shape;

/* Zeroes *shape, sets struct_size, split-half RoPE and theta 10000. NULL is a no-op. */
KVB_API void kvb_model_shape_default(kvb_model_shape* shape);

/* ---- contexts ----------------------------------------------------------------------------
 * A context is one backend (the CPU reference with its worker threads, or one CUDA device). */

typedef struct kvb_context kvb_context;

typedef struct kvb_context_params {
  uint32_t struct_size; /* = sizeof(kvb_context_params) */
  kvb_backend backend;  /* default KVB_BACKEND_AUTO */
  int32_t device;       /* CUDA device ordinal, >= 0; default 0 */
  uint32_t n_threads;   /* CPU worker threads, 0..1024; 0 (default) = hardware concurrency */
  uint32_t reserved[8]; /* must be zero */
} kvb_context_params;

/* Fills the defaults and sets struct_size. NULL is a no-op. */
KVB_API void kvb_context_params_default(kvb_context_params* params);

/* Creates a context. params may be NULL (all defaults: KVB_BACKEND_AUTO, so a machine with a
 * GPU gets a CUDA context). A CUDA context opens `device`, keeps its properties and a launch
 * workspace in device memory (1 MiB at first, grown by calls that need more).
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (out NULL); KVB_ERR_INVALID_ARGUMENT (unknown backend,
 * negative or absent device, n_threads > 1024, struct_size too small, reserved not zero);
 * KVB_ERR_UNSUPPORTED (CUDA asked for but this build or machine has none); KVB_ERR_DEVICE (the
 * CUDA message); KVB_ERR_OUT_OF_MEMORY. On failure *out = NULL and nothing is left allocated. */
KVB_API kvb_status kvb_context_create(const kvb_context_params* params, kvb_context** out, kvb_error* err);

/* Drops the caller's reference; the context lives on while caches or calibrators made from it
 * exist. NULL is a no-op. */
KVB_API void kvb_context_destroy(kvb_context* ctx);

/* The backend the context actually runs on (never KVB_BACKEND_AUTO) and its device (0 for the
 * CPU). device_out may be NULL. Returns KVB_OK; KVB_ERR_NULL_POINTER (ctx or backend_out). */
KVB_API kvb_status kvb_context_backend(const kvb_context* ctx, kvb_backend* backend_out, int32_t* device_out,
                                       kvb_error* err);

/* Copies the message of the most recent failed call made with ctx, or with a cache or
 * calibrator created from it, into buf[cap] (NUL-terminated, truncated to cap - 1 bytes; buf
 * may be NULL when cap is 0). Successful calls do not clear it. Returns the full length of the
 * message without the NUL (0 when nothing failed yet or ctx is NULL), like snprintf. When
 * several threads share a context, another thread's failure may replace the text: kvb_error
 * gives exact per-call attribution. Thread-safe. */
KVB_API size_t kvb_context_last_error(const kvb_context* ctx, char* buf, size_t cap);

/* ---- plans ----------------------------------------------------------------------------- */

typedef struct kvb_plan kvb_plan;

/* Loads and fully validates a plan file (docs/plan-format.md).
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (path or out NULL); KVB_ERR_IO; KVB_ERR_CORRUPT_DATA;
 * KVB_ERR_VERSION_UNSUPPORTED; KVB_ERR_OUT_OF_MEMORY. On failure *out = NULL. */
KVB_API kvb_status kvb_plan_load_file(const char* path, kvb_plan** out, kvb_error* err);

/* Same from a caller-owned buffer (not retained after the call). Also KVB_ERR_NULL_POINTER for
 * data NULL. On failure *out = NULL. */
KVB_API kvb_status kvb_plan_load_memory(const void* data, size_t size, kvb_plan** out, kvb_error* err);

/* Writes the plan atomically (temporary file + rename). The same plan always gives the same bytes.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_IO (the previous file, if any, is intact). */
KVB_API kvb_status kvb_plan_save_file(const kvb_plan* plan, const char* path, kvb_error* err);

/* Serialises into buf[capacity]; *size_out receives the needed size. buf == NULL is a size
 * query (KVB_OK). Returns KVB_ERR_INVALID_ARGUMENT when capacity is too small (nothing is
 * written to buf, *size_out is still set); KVB_ERR_NULL_POINTER if plan or size_out is NULL. */
KVB_API kvb_status kvb_plan_serialize(const kvb_plan* plan, void* buf, size_t capacity, size_t* size_out,
                                      kvb_error* err);

/* Drops the caller's reference to a plan. NULL is a no-op. Caches built on it keep their own
 * reference, so they stay valid. */
KVB_API void kvb_plan_destroy(kvb_plan* plan);

typedef struct kvb_plan_info {
  uint32_t struct_size; /* = sizeof(kvb_plan_info), set by the caller */
  uint32_t n_layers, n_q_heads, n_kv_heads, head_dim, rotary_dim;
  int32_t rope_layout; /* kvb_rope_layout */
  double rope_theta;
  int32_t method; /* kvb_method */
  double k_avg_bits;   /* requested average key code bits per dim */
  uint32_t v_bits;     /* value bits of the first quantised head (all heads share it today) */
  uint32_t sink_tokens, window_tokens;
  uint32_t n_fp16_layers;
  /* Packed bytes per token per KV head, averaged over all (layer, KV head), scales included. */
  double bytes_per_token_per_head;
  /* Packed bytes per token for the whole model (all layers and KV heads). */
  uint64_t bytes_per_token_total;
  uint64_t calib_tokens;
} kvb_plan_info;

/* Fills the fields of *info that fit in info->struct_size.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_INVALID_ARGUMENT (struct_size too small for the
 * first version of the struct; *info is then untouched). */
KVB_API kvb_status kvb_plan_get_info(const kvb_plan* plan, kvb_plan_info* info, kvb_error* err);

/* Packed bytes per token of one (layer, KV head). Returns KVB_ERR_INVALID_ARGUMENT for an index
 * out of range; KVB_ERR_NULL_POINTER. *bytes_out is written only on success. */
KVB_API kvb_status kvb_plan_bytes_per_token(const kvb_plan* plan, uint32_t layer, uint32_t kv_head,
                                            uint64_t* bytes_out, kvb_error* err);

/* Checks that a plan was made for this model shape. Returns KVB_OK or KVB_ERR_SHAPE_MISMATCH
 * (the message names the field), KVB_ERR_NULL_POINTER. */
KVB_API kvb_status kvb_plan_check_shape(const kvb_plan* plan, uint32_t n_layers, uint32_t n_q_heads,
                                        uint32_t n_kv_heads, uint32_t head_dim, kvb_error* err);

/* Same for every field of a model shape (rotary dim, RoPE layout and theta included).
 * Returns KVB_OK; KVB_ERR_SHAPE_MISMATCH; KVB_ERR_NULL_POINTER; KVB_ERR_INVALID_ARGUMENT (the
 * shape itself is invalid or its struct_size too small). */
KVB_API kvb_status kvb_plan_check_model(const kvb_plan* plan, const kvb_model_shape* model, kvb_error* err);

/* Capability query: can caches of this plan be created and attended on this context? Ask it
 * before building a runtime around a plan; kvbits never falls back to a slower path silently.
 * On CUDA it asks the GPU decode kernel (default page size 64): plans with fp16 sink/window
 * tokens or fp16 layers are refused until the kernel serves them (caches of them can still be
 * created, appended and read).
 * Returns KVB_OK; KVB_ERR_UNSUPPORTED (the message says what is missing);
 * KVB_ERR_NULL_POINTER. */
KVB_API kvb_status kvb_plan_supported(const kvb_context* ctx, const kvb_plan* plan, kvb_error* err);

/* ---- calibration ---------------------------------------------------------------------------
 * A calibrator accumulates per-RoPE-block energies of query and key activations (fp64), then
 * allocates bits per (layer, KV head) and builds a plan. Pre- or post-RoPE inputs give the same
 * statistics. */

typedef struct kvb_calibrator kvb_calibrator;

/* Creates an empty calibrator for a model shape on a context.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (ctx, shape or out); KVB_ERR_INVALID_ARGUMENT (the
 * message names the bad shape field; struct_size too small); KVB_ERR_OUT_OF_MEMORY.
 * On failure *out = NULL. */
KVB_API kvb_status kvb_calibrator_create(kvb_context* ctx, const kvb_model_shape* shape, kvb_calibrator** out,
                                         kvb_error* err);

/* NULL is a no-op. */
KVB_API void kvb_calibrator_destroy(kvb_calibrator* cal);

/* Observes one chunk of one layer:
 *   q [n_tokens, n_q_heads, head_dim], k [n_tokens, n_kv_heads, head_dim] in `dtype`.
 * Either q or k may be NULL to observe only the other side. Chunks may come in any number and
 * size; every query head of a GQA group counts as its own sample.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cal, or both q and k); KVB_ERR_INVALID_ARGUMENT (layer
 * out of range, unknown dtype, n_tokens 0 or over 2^32 - 1, a non-finite value).
 * On failure nothing is accumulated. */
KVB_API kvb_status kvb_calibrator_observe(kvb_calibrator* cal, uint32_t layer, const void* q, const void* k,
                                          size_t n_tokens, kvb_dtype dtype, kvb_error* err);

typedef struct kvb_plan_options {
  uint32_t struct_size;  /* = sizeof(kvb_plan_options) */
  int32_t method;        /* kvb_method; default KVB_METHOD_BLOCK_GTQ */
  double k_avg_bits;     /* average key code bits per dim, in [k_min_bits, k_max_bits]; default 3 */
  int32_t k_min_bits;    /* 1..8; default 1 */
  int32_t k_max_bits;    /* k_min_bits..8; default 8 */
  int32_t v_bits;        /* 1..8; default 3 */
  int32_t score;         /* kvb_score; default KVB_SCORE_PRODUCT */
  int32_t codebooks;     /* kvb_codebooks; default KVB_CODEBOOKS_LLOYD_MAX */
  uint32_t sink_tokens;  /* first tokens of every sequence kept in fp16; default 0 */
  uint32_t window_tokens;      /* last tokens of every sequence kept in fp16; default 0 */
  uint32_t n_fp16_layers;      /* entries in fp16_layers */
  const uint32_t* fp16_layers; /* layers kept at 16 bits (boundary / sliding-window layers) */
  uint64_t rotation_seed;      /* base seed of the generated rotations; default 42 */
  const char* corpus;          /* NULL or UTF-8 text recorded in the plan: what the data was */
  const char* date;            /* NULL or ISO-8601 date recorded as given (no clock is read, so
                                  the same inputs always give the same plan bytes) */
  const char* model_fingerprint_hex; /* NULL or 32 hex digits: XXH3-128 of the model file */
  uint32_t reserved[8];        /* must be zero */
} kvb_plan_options;

/* Fills the defaults and sets struct_size. NULL is a no-op. */
KVB_API void kvb_plan_options_default(kvb_plan_options* options);

/* Allocates bits from everything observed so far and builds a validated plan. options may be
 * NULL (defaults). The calibrator is unchanged and may observe more and build again.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cal or out; fp16_layers NULL with n_fp16_layers > 0);
 * KVB_ERR_INVALID_ARGUMENT (bad option, the message names it; a (layer, KV head) without query
 * or key samples under Block-GTQ); KVB_ERR_OUT_OF_MEMORY. On failure *out = NULL. */
KVB_API kvb_status kvb_calibrator_build_plan(const kvb_calibrator* cal, const kvb_plan_options* options,
                                             kvb_plan** out, kvb_error* err);

/* ---- caches ------------------------------------------------------------------------------
 * A paged, packed KV cache of one plan on one context (docs/cache-layout.md). Sequences share a
 * pool of pages; every sequence has its own length per layer (layers are appended one after
 * another). The first sink_tokens and last window_tokens of a sequence stay in fp16. */

typedef struct kvb_cache kvb_cache;

/* Sequence ids are chosen by the cache (small integers, reused after removal). */
#define KVB_SEQ_NONE UINT64_MAX /* never a valid id; written to id outputs on failure */

typedef struct kvb_cache_params {
  uint32_t struct_size;   /* = sizeof(kvb_cache_params) */
  uint32_t page_size;     /* tokens per page, 1..4096; default 64 */
  uint64_t max_pages;     /* pool capacity in pages, 1..2^32-1; default 0: must be set */
  int64_t sink_tokens;    /* fp16 sink tokens per sequence, 0..2^24; -1 (default) = the plan's */
  int64_t window_tokens;  /* fp16 recent window per sequence, 0..2^24; -1 (default) = the plan's */
  const kvb_model_shape* model; /* optional: your model's shape; a plan made for another model
                                   is then refused with KVB_ERR_SHAPE_MISMATCH */
  uint32_t max_sequences; /* 1..2^24; default 1024 */
  /* KV heads [kv_head_begin, kv_head_end) of the plan (tensor parallelism: one cache per GPU,
   * docs/transfer.md); 0/0 (default) = every head. Such a cache holds only those heads: append
   * takes k, v [.., kv_head_end - kv_head_begin, head_dim], attention takes q and writes out for
   * their query heads [.., (kv_head_end - kv_head_begin) * group, head_dim] (group = n_q_heads /
   * n_kv_heads; the model's query heads kv_head_begin * group ..), kvb_cache_read returns those
   * heads and statistics count only their bytes. Results are bit-identical to the same heads of
   * a cache of every head, on the CPU and on CUDA. Else 0 <= begin < end <= n_kv_heads. */
  uint32_t kv_head_begin;
  uint32_t kv_head_end;
  uint32_t reserved[5];   /* must be zero */
} kvb_cache_params;

/* Fills the defaults and sets struct_size. NULL is a no-op. */
KVB_API void kvb_cache_params_default(kvb_cache_params* params);

/* Creates an empty cache; its whole page pool is allocated now (kvb_cache_get_stats reports
 * pool_bytes). The cache keeps the context and the plan alive.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (ctx, plan, params or out); KVB_ERR_INVALID_ARGUMENT (a
 * parameter out of range, the message names it; struct_size too small; reserved not zero);
 * KVB_ERR_SHAPE_MISMATCH (params->model given and the plan was made for another shape);
 * KVB_ERR_OUT_OF_MEMORY (the pool does not fit in this machine's (CUDA: the device's) memory,
 * or allocating it failed); KVB_ERR_DEVICE. On failure *out = NULL.
 * CUDA: the pool, the fp16 blocks and a device mirror of lengths and page tables (16 bytes per
 * (sequence slot, layer) for max_sequences slots, plus a page-table arena of
 * 2 * max_pages + 16 * max_sequences entries of 4 bytes) live in device memory. */
KVB_API kvb_status kvb_cache_create(kvb_context* ctx, const kvb_plan* plan, const kvb_cache_params* params,
                                    kvb_cache** out, kvb_error* err);

/* Frees the cache and its pool. NULL is a no-op. */
KVB_API void kvb_cache_destroy(kvb_cache* cache);

/* Adds an empty sequence. Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_CAPACITY_EXHAUSTED
 * (max_sequences live). On failure *id_out = KVB_SEQ_NONE and the cache is unchanged. */
KVB_API kvb_status kvb_cache_seq_add(kvb_cache* cache, uint64_t* id_out, kvb_error* err);

/* Removes a sequence; its pages return to the pool (shared pages once no fork uses them).
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_NOT_FOUND (unknown or already removed id;
 * the cache is unchanged). */
KVB_API kvb_status kvb_cache_seq_remove(kvb_cache* cache, uint64_t seq, kvb_error* err);

/* Adds a sequence that shares the first prefix_len tokens of src (in every layer, which must
 * all hold at least prefix_len tokens). Pages are shared copy-on-write, never re-quantized, so a
 * fork takes no page until one side writes to a shared page.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_NOT_FOUND (src); KVB_ERR_INVALID_ARGUMENT
 * (prefix_len longer than a layer of src); KVB_ERR_CAPACITY_EXHAUSTED (max_sequences live);
 * KVB_ERR_OUT_OF_MEMORY. On failure *id_out = KVB_SEQ_NONE and the cache is unchanged. */
KVB_API kvb_status kvb_cache_seq_fork(kvb_cache* cache, uint64_t src, uint32_t prefix_len, uint64_t* id_out,
                                      kvb_error* err);

/* Tokens held by (seq, layer). Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_NOT_FOUND;
 * KVB_ERR_INVALID_ARGUMENT (layer out of range). *len_out is written only on success. */
KVB_API kvb_status kvb_cache_seq_length(const kvb_cache* cache, uint64_t seq, uint32_t layer, uint32_t* len_out,
                                        kvb_error* err);

/* Appends post-RoPE keys and values of one layer (all KV heads) for several sequences at once:
 * seqs[i] gets n_tokens[i] new tokens (0 is allowed for an entry).
 *   k, v [sum(n_tokens), n_kv_heads, head_dim] in `dtype`, sequence after sequence.
 * All-or-nothing.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cache, seqs, n_tokens, k or v);
 * KVB_ERR_INVALID_ARGUMENT (n_seqs 0 or over max_sequences, layer out of range, unknown dtype,
 * a sequence listed twice, a non-finite value); KVB_ERR_NOT_FOUND (unknown sequence);
 * KVB_ERR_CAPACITY_EXHAUSTED (the pool is full, or a sequence would exceed the most tokens the
 * cache can hold); KVB_ERR_DEVICE; KVB_ERR_OUT_OF_MEMORY; KVB_ERR_UNSUPPORTED (CUDA: `stream`
 * is being captured into a graph). On failure the cache is unchanged.
 * CUDA: k and v in device or host memory; codes and scales are bit-identical to the CPU
 * backend's. The call waits once for its device-side value check (see the top of this file). */
KVB_API kvb_status kvb_cache_append(kvb_cache* cache, uint32_t layer, const uint64_t* seqs,
                                    const uint32_t* n_tokens, size_t n_seqs, const void* k, const void* v,
                                    kvb_dtype dtype, void* stream, kvb_error* err);

/* Reads tokens [pos, pos + n_tokens) of (seq, layer) back as fp32: dequantized for packed
 * tokens, exact for fp16 ones. For tests and debugging, not for the hot path.
 *   k_out, v_out [n_tokens, n_kv_heads, head_dim] fp32; either (not both) may be NULL.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_NOT_FOUND; KVB_ERR_INVALID_ARGUMENT (layer out of
 * range, n_tokens 0, range past the sequence's length). On failure nothing is written. */
KVB_API kvb_status kvb_cache_read(const kvb_cache* cache, uint64_t seq, uint32_t layer, uint32_t pos,
                                  uint32_t n_tokens, float* k_out, float* v_out, kvb_error* err);

typedef struct kvb_cache_stats {
  uint32_t struct_size;        /* = sizeof(kvb_cache_stats), set by the caller */
  uint32_t page_size;          /* tokens per page */
  uint64_t pages_total;        /* pool capacity */
  uint64_t pages_used;         /* pages holding tokens of some sequence */
  uint64_t pool_bytes;         /* bytes of page storage, all layers and KV heads (allocated) */
  uint64_t packed_bytes_used;  /* bytes of the pages in use */
  uint64_t fp16_region_bytes;  /* sink + window buffers currently allocated */
  uint64_t sequences;          /* live sequences */
  uint64_t tokens;             /* sum over sequences of their layer-0 length */
} kvb_cache_stats;

/* Memory statistics. Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_INVALID_ARGUMENT
 * (struct_size too small; *stats is then untouched). */
KVB_API kvb_status kvb_cache_get_stats(const kvb_cache* cache, kvb_cache_stats* stats, kvb_error* err);

/* The cache's KV heads [*begin_out, *end_out) of its plan (0 and n_kv_heads unless created for
 * a range). Either output may be NULL. Returns KVB_OK; KVB_ERR_NULL_POINTER (cache). */
KVB_API kvb_status kvb_cache_kv_heads(const kvb_cache* cache, uint32_t* begin_out, uint32_t* end_out,
                                      kvb_error* err);

/* ---- sequence transfer ---------------------------------------------------------------------
 * One sequence, every layer, as a self-describing byte string (docs/transfer.md): a versioned
 * little-endian header (plan fingerprint, KV-head range, page size, sink/window, per-layer
 * lengths, checksums) and the cache's own bytes (page rows, fp16 sink/window rows), copied, never
 * re-encoded. Import it into a cache of the same plan, KV-head range, page size and sink/window,
 * on either backend (disaggregated prefill/decode, moving a sequence between GPUs or machines):
 * the imported sequence reads back and attends bit for bit as the exported one. */

/* Bytes kvb_cache_seq_export writes for `seq` (its size changes as the sequence grows).
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cache or size_out); KVB_ERR_NOT_FOUND. */
KVB_API kvb_status kvb_cache_seq_export_size(const kvb_cache* cache, uint64_t seq, size_t* size_out, kvb_error* err);

/* Writes `seq` into buf[capacity]; *size_out receives the bytes written (or needed).
 * buf: host memory; on a CUDA context also device memory (the copies are then device to device
 * and the checksum is computed on the GPU). `stream` orders the copies on CUDA; the call waits
 * for them. The cache is not modified.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cache, buf or size_out); KVB_ERR_NOT_FOUND;
 * KVB_ERR_INVALID_ARGUMENT (capacity too small: buf untouched, *size_out = the size needed);
 * KVB_ERR_UNSUPPORTED (CUDA: `stream` is being captured); KVB_ERR_DEVICE; KVB_ERR_OUT_OF_MEMORY.
 * On other failures buf's contents are unspecified. */
KVB_API kvb_status kvb_cache_seq_export(const kvb_cache* cache, uint64_t seq, void* buf, size_t capacity,
                                        size_t* size_out, void* stream, kvb_error* err);

/* Adds the sequence exported in buf[size] (exactly the bytes kvb_cache_seq_export wrote) as a new
 * sequence; *id_out receives its id. buf: host memory, or device memory on a CUDA context.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cache, buf or id_out); KVB_ERR_CORRUPT_DATA (truncated or
 * extra bytes, bad magic, a header or payload checksum mismatch, impossible lengths);
 * KVB_ERR_VERSION_UNSUPPORTED (another layout version); KVB_ERR_SHAPE_MISMATCH (another plan,
 * KV-head range, page size or sink/window); KVB_ERR_CAPACITY_EXHAUSTED (lengths beyond what the
 * pool can hold, not enough free pages, max_sequences live); KVB_ERR_UNSUPPORTED (stream being
 * captured); KVB_ERR_DEVICE; KVB_ERR_OUT_OF_MEMORY. On failure *id_out = KVB_SEQ_NONE and the
 * cache is unchanged. */
KVB_API kvb_status kvb_cache_seq_import(kvb_cache* cache, const void* buf, size_t size, uint64_t* id_out,
                                        void* stream, kvb_error* err);

/* ---- attention ---------------------------------------------------------------------------
 * Attention on the packed cache. The query's own key and value must have been appended first. */

/* How the CUDA backend forms its products (the CPU backend computes in fp32 either way).
 * KVB_PRECISION_FP16 (default): fp16 tensor-core operands (q, centroids, softmax weights) with fp32
 *   accumulation, the precision of an fp16 attention kernel: outputs within about 2e-3 relative of
 *   the fp32 CPU backend.
 * KVB_PRECISION_FP32: fp32-grade products: decode within about 1e-5 of the CPU backend, 1.2-1.4x
 *   slower at long contexts; extend refuses it (KVB_ERR_UNSUPPORTED). */
#define KVB_PRECISION_FP16 0u
#define KVB_PRECISION_FP32 1u

typedef struct kvb_attention_params {
  uint32_t struct_size; /* = sizeof(kvb_attention_params) */
  float scale;          /* softmax scale, finite and >= 0; 0 (default) = 1/sqrt(head_dim) */
  uint32_t precision;   /* KVB_PRECISION_FP16 (default) or KVB_PRECISION_FP32 */
  uint32_t reserved[5]; /* must be zero */
} kvb_attention_params;

/* Fills the defaults and sets struct_size. NULL is a no-op. */
KVB_API void kvb_attention_params_default(kvb_attention_params* params);

/* Decode: one query token per sequence over everything (seq, layer) holds.
 *   q   [n_seqs, n_q_heads, head_dim] in q_dtype
 *   out [n_seqs, n_q_heads, head_dim] fp32
 *   lse [n_seqs, n_q_heads] fp32 natural-log sum-exp of the scaled logits; may be NULL
 * params may be NULL (defaults). The cache is not modified.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (cache, seqs, q or out); KVB_ERR_INVALID_ARGUMENT
 * (n_seqs 0 or over max_sequences, layer out of range, unknown dtype, a sequence with no tokens
 * in this layer, a non-finite query value, bad params); KVB_ERR_NOT_FOUND (unknown sequence);
 * KVB_ERR_OUT_OF_MEMORY; KVB_ERR_DEVICE; KVB_ERR_UNSUPPORTED (CUDA: what the GPU decode kernel
 * does not serve yet, see kvb_plan_supported; host tensors while `stream` is being captured).
 * On failure out and lse are not written.
 * CUDA: KVB_PRECISION_FP16 (default) is within about 2e-3 relative of the CPU backend (fp16
 * tensor-core operands), KVB_PRECISION_FP32 within about 1e-5 (fp32-grade products). */
KVB_API kvb_status kvb_attention_decode(kvb_cache* cache, uint32_t layer, const uint64_t* seqs, size_t n_seqs,
                                        const void* q, kvb_dtype q_dtype, float* out, float* lse,
                                        const kvb_attention_params* params, void* stream, kvb_error* err);

/* Extend (chunked prefill, speculative verification): q_len[i] query tokens for sequence i,
 * which are the last q_len[i] tokens (seq, layer) holds (appended already); causal, so the
 * query at position p sees tokens [0, p]. q_len[i] may be 0 for an entry.
 *   q   [sum(q_len), n_q_heads, head_dim] in q_dtype, sequence after sequence
 *   out [sum(q_len), n_q_heads, head_dim] fp32;  lse [sum(q_len), n_q_heads] fp32 or NULL
 * Returns what kvb_attention_decode returns, plus KVB_ERR_NULL_POINTER for q_len and
 * KVB_ERR_INVALID_ARGUMENT when q_len[i] exceeds the sequence's length.
 * CUDA: tensor cores with fp16 operands, within about 3e-3 relative of the fp32 CPU backend;
 * KVB_PRECISION_FP32 is refused with KVB_ERR_UNSUPPORTED
 * (docs/gpu-extend.md); the call uploads the query counts, so it cannot be graph-captured.
 * On failure out and lse are not written. */
KVB_API kvb_status kvb_attention_extend(kvb_cache* cache, uint32_t layer, const uint64_t* seqs,
                                        const uint32_t* q_len, size_t n_seqs, const void* q, kvb_dtype q_dtype,
                                        float* out, float* lse, const kvb_attention_params* params,
                                        void* stream, kvb_error* err);

#ifdef __cplusplus
}
#endif

#endif /* KVBITS_H */
