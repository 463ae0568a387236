/*
 * kvbits.h — the C API of kvbits, a low-bit (2-4 bits per value) KV-cache library.
 *
 * One header, C99, no CUDA headers needed. Link with -lkvbits (pkg-config: kvbits).
 *
 * Conventions
 *   - Objects are opaque handles created by *_create / *_load with an out-parameter and freed by
 *     *_destroy, which accepts NULL (a no-op).
 *   - Every fallible call returns a kvb_status. Values are pinned forever; new ones are only added.
 *   - Every fallible call takes an optional `kvb_error* err` as its last argument. When non-NULL,
 *     it receives the status and a human-readable message in the same call, so no thread-local
 *     state is needed (safe from Go, where goroutines move between threads). Set
 *     err->struct_size = sizeof(kvb_error) first (kvb_error_init does it).
 *   - Structs that the caller fills start with `uint32_t struct_size`; the library reads only the
 *     fields that fit, so old callers keep working with newer libraries.
 *   - A failed call leaves every object exactly as it was and sets *out handles to NULL.
 *
 * Thread safety
 *   kvb_plan       immutable after load: any number of threads may use one plan at once.
 *   free functions (version, status strings) are thread-safe.
 *   kvb_error      owned by the caller; one per thread or call.
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
#define KVB_ERR_CAPACITY_EXHAUSTED 9   /* the cache's page pool is full                     */
#define KVB_ERR_NOT_FOUND 10           /* unknown sequence, missing tensor, ...             */
#define KVB_ERR_INTERNAL 11            /* a bug in kvbits: please report it                 */
#define KVB_ERR_DEVICE 12              /* the CUDA runtime reported an error                */

/* Static lower-case name of a status ("corrupt_data"); "unknown_status" for other values. */
KVB_API const char* kvb_status_string(kvb_status status);

#define KVB_ERROR_MESSAGE_CAPACITY 512
typedef struct kvb_error {
  uint32_t struct_size; /* = sizeof(kvb_error) */
  kvb_status status;    /* the status the call returned */
  char message[KVB_ERROR_MESSAGE_CAPACITY]; /* NUL-terminated, truncated if longer */
} kvb_error;

/* Zeroes *err and sets struct_size. NULL is a no-op. */
KVB_API void kvb_error_init(kvb_error* err);

/* ---- plans ----------------------------------------------------------------------------- */

typedef struct kvb_plan kvb_plan;

/* Loads and fully validates a plan file (docs/plan-format.md).
 * Returns KVB_OK; KVB_ERR_NULL_POINTER (path or out NULL); KVB_ERR_IO; KVB_ERR_CORRUPT_DATA;
 * KVB_ERR_VERSION_UNSUPPORTED; KVB_ERR_OUT_OF_MEMORY. On failure *out = NULL. */
KVB_API kvb_status kvb_plan_load_file(const char* path, kvb_plan** out, kvb_error* err);

/* Same from a caller-owned buffer (not retained after the call). */
KVB_API kvb_status kvb_plan_load_memory(const void* data, size_t size, kvb_plan** out, kvb_error* err);

/* Writes the plan atomically (temporary file + rename). The same plan always gives the same bytes.
 * Returns KVB_OK; KVB_ERR_NULL_POINTER; KVB_ERR_IO. */
KVB_API kvb_status kvb_plan_save_file(const kvb_plan* plan, const char* path, kvb_error* err);

/* Serialises into buf[capacity]. *size_out receives the needed size. With buf == NULL (or too small a
 * capacity) nothing is written and KVB_ERR_INVALID_ARGUMENT is returned unless buf is NULL, in
 * which case the call is a size query returning KVB_OK. Returns KVB_ERR_NULL_POINTER if plan or
 * size_out is NULL. */
KVB_API kvb_status kvb_plan_serialize(const kvb_plan* plan, void* buf, size_t capacity, size_t* size_out,
                                      kvb_error* err);

/* Frees a plan. NULL is a no-op. Caches created from it must be destroyed first. */
KVB_API void kvb_plan_destroy(kvb_plan* plan);

typedef enum kvb_rope_layout { KVB_ROPE_SPLIT_HALF = 0, KVB_ROPE_INTERLEAVED = 1 } kvb_rope_layout;
typedef enum kvb_method { KVB_METHOD_BLOCK_GTQ = 0, KVB_METHOD_UNIFORM_TQ_MSE = 1 } kvb_method;

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
 * first version of the struct). */
KVB_API kvb_status kvb_plan_get_info(const kvb_plan* plan, kvb_plan_info* info, kvb_error* err);

/* Packed bytes per token of one (layer, KV head). Returns KVB_ERR_INVALID_ARGUMENT for an index
 * out of range. */
KVB_API kvb_status kvb_plan_bytes_per_token(const kvb_plan* plan, uint32_t layer, uint32_t kv_head,
                                            uint64_t* bytes_out, kvb_error* err);

/* Checks that a plan was made for this model shape. Returns KVB_OK or KVB_ERR_SHAPE_MISMATCH
 * (the message names the field), KVB_ERR_NULL_POINTER. */
KVB_API kvb_status kvb_plan_check_shape(const kvb_plan* plan, uint32_t n_layers, uint32_t n_q_heads,
                                        uint32_t n_kv_heads, uint32_t head_dim, kvb_error* err);

#ifdef __cplusplus
}
#endif

#endif /* KVBITS_H */
