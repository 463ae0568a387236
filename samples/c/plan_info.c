/* plan_info — load a kvbits bit plan and print what it costs per token.
 *
 *   cc plan_info.c $(pkg-config --cflags --libs kvbits) -o plan_info
 *   ./plan_info model.kvbplan
 */
#include <stdio.h>

#include <kvbits.h>

int main(int argc, char** argv) {
  kvb_error err;
  kvb_plan* plan = NULL;
  kvb_plan_info info;

  if (argc != 2) {
    fprintf(stderr, "usage: %s PLAN_FILE\n", argv[0]);
    return 2;
  }
  kvb_error_init(&err);
  if (kvb_plan_load_file(argv[1], &plan, &err) != KVB_OK) {
    fprintf(stderr, "%s: %s: %s\n", argv[1], kvb_status_string(err.status), err.message);
    return 1;
  }
  info.struct_size = sizeof info;
  if (kvb_plan_get_info(plan, &info, &err) != KVB_OK) {
    fprintf(stderr, "info: %s\n", err.message);
    kvb_plan_destroy(plan);
    return 1;
  }
  printf("kvbits %s\n", kvb_version_string());
  printf("model: %u layers, %u query heads, %u KV heads, head_dim %u (rotary %u)\n", info.n_layers,
         info.n_q_heads, info.n_kv_heads, info.head_dim, info.rotary_dim);
  printf("keys: %.2f bits/dim (%s), values: %u bits/dim\n", info.k_avg_bits,
         info.method == KVB_METHOD_BLOCK_GTQ ? "Block-GTQ" : "uniform TQ-MSE", info.v_bits);
  printf("bytes per token per KV head: %.2f (fp16: %u), whole model: %llu bytes per token\n",
         info.bytes_per_token_per_head, 4 * info.head_dim, (unsigned long long)info.bytes_per_token_total);
  kvb_plan_destroy(plan);
  return 0;
}
