/* Compiled as strict C99 with -Wall -Wextra -Werror -pedantic: the public header must be clean C
 * and the library it links against must report the header's version. */
#include "kvbits.h"

#include <stdio.h>
#include <string.h>

int main(void) {
  char expect[32];
  kvb_error err;
  kvb_plan* plan = (kvb_plan*)&err; /* must be reset to NULL on failure */
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
  kvb_plan_destroy(NULL);
  printf("1 passed, 0 failed\n");
  return 0;
}
