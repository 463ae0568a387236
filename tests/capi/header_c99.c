/* Compiled as strict C99 with -Wall -Wextra -Werror -pedantic: the public header must be clean C,
 * every function it declares must exist in the library (the table below does not link
 * otherwise), and the library it links against must report the header's version. */
#include "kvbits.h"

#include <stdio.h>
#include <string.h>

typedef void (*any_fn)(void);
#define FN(f) ((any_fn)(f))
static const any_fn every_function[] = {
    FN(kvb_version_number), FN(kvb_version_string), FN(kvb_status_string), FN(kvb_error_init),
    FN(kvb_model_shape_default), FN(kvb_context_params_default), FN(kvb_context_create), FN(kvb_context_destroy),
    FN(kvb_context_backend), FN(kvb_context_last_error), FN(kvb_plan_load_file), FN(kvb_plan_load_memory),
    FN(kvb_plan_save_file), FN(kvb_plan_serialize), FN(kvb_plan_destroy), FN(kvb_plan_get_info),
    FN(kvb_plan_bytes_per_token), FN(kvb_plan_check_shape), FN(kvb_plan_check_model), FN(kvb_plan_supported),
    FN(kvb_calibrator_create), FN(kvb_calibrator_destroy), FN(kvb_calibrator_observe), FN(kvb_plan_options_default),
    FN(kvb_calibrator_build_plan), FN(kvb_cache_params_default), FN(kvb_cache_create), FN(kvb_cache_destroy),
    FN(kvb_cache_seq_add), FN(kvb_cache_seq_remove), FN(kvb_cache_seq_fork), FN(kvb_cache_seq_length),
    FN(kvb_cache_append), FN(kvb_cache_read), FN(kvb_cache_get_stats), FN(kvb_attention_params_default),
    FN(kvb_attention_decode), FN(kvb_attention_extend), FN(kvb_cache_kv_heads), FN(kvb_cache_seq_export_size),
    FN(kvb_cache_seq_export), FN(kvb_cache_seq_import),
};

int main(void) {
  char expect[32], text[8];
  size_t i;
  kvb_error err;
  kvb_plan* plan = (kvb_plan*)&err; /* must be reset to NULL on failure */
  kvb_context* ctx = NULL;
  kvb_cache* cache = (kvb_cache*)&err;
  kvb_context_params cp;
  kvb_cache_params params;
  kvb_model_shape shape;
  kvb_plan_options options;
  kvb_attention_params ap;
  kvb_dtype dtype = KVB_DTYPE_BF16;
  uint64_t id = 0;

  for (i = 0; i < sizeof every_function / sizeof every_function[0]; ++i)
    if (every_function[i] == NULL) return 1;
  snprintf(expect, sizeof expect, "%d.%d.%d", KVB_VERSION_MAJOR, KVB_VERSION_MINOR, KVB_VERSION_PATCH);
  if (kvb_version_number() != KVB_VERSION_NUMBER || strcmp(kvb_version_string(), expect) != 0) {
    fprintf(stderr, "version mismatch: header %s, library %s\n", expect, kvb_version_string());
    return 1;
  }
  kvb_error_init(&err);
  if (kvb_plan_load_memory("nope", 4, &plan, &err) != KVB_ERR_CORRUPT_DATA || plan != NULL ||
      err.status != KVB_ERR_CORRUPT_DATA || err.message[0] == '\0') {
    fprintf(stderr, "expected corrupt_data for a 4-byte plan, got %s: %s\n", kvb_status_string(err.status), err.message);
    return 1;
  }
  if (kvb_plan_load_file(NULL, &plan, &err) != KVB_ERR_NULL_POINTER || strstr(err.message, "path") == NULL) return 1;
  if (strcmp(kvb_status_string(KVB_ERR_CAPACITY_EXHAUSTED), "capacity_exhausted") != 0) return 1;
  if (strcmp(kvb_status_string(-7), "unknown_status") != 0) return 1;

  /* Every struct has a default and a struct_size; a CPU context reports errors per handle. */
  kvb_model_shape_default(&shape);
  kvb_plan_options_default(&options);
  kvb_attention_params_default(&ap);
  kvb_cache_params_default(&params);
  kvb_context_params_default(&cp);
  if (shape.struct_size != sizeof shape || options.struct_size != sizeof options || ap.struct_size != sizeof ap ||
      params.struct_size != sizeof params || cp.struct_size != sizeof cp || cp.backend != KVB_BACKEND_AUTO ||
      params.kv_head_begin != 0 || params.kv_head_end != 0)
    return 1;
  cp.backend = KVB_BACKEND_CPU;
  if (kvb_context_create(&cp, &ctx, &err) != KVB_OK) return 1;
  if (kvb_cache_create(ctx, NULL, &params, &cache, &err) != KVB_ERR_NULL_POINTER || cache != NULL) return 1;
  if (kvb_context_last_error(ctx, text, sizeof text) != strlen(err.message) || strncmp(text, err.message, 7) != 0)
    return 1;
  if (kvb_cache_seq_add(NULL, &id, NULL) != KVB_ERR_NULL_POINTER || id != KVB_SEQ_NONE || dtype != 2) return 1;
  kvb_context_destroy(ctx);
  kvb_plan_destroy(NULL);
  kvb_context_destroy(NULL);
  kvb_calibrator_destroy(NULL);
  kvb_cache_destroy(NULL);
  printf("1 passed, 0 failed\n");
  return 0;
}
