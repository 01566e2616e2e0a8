/* uthash_config.h -- include instead of <uthash.h>: routes uthash's memory
 * through the nn allocator and makes out-of-memory non-fatal.
 *
 * The macros expect `nn__mem *uthash_mem` in scope at each HASH_ADD/HASH_DEL
 * and a `bool uthash_oom` that is set when an insert ran out of memory (the
 * element was then not added and the table is unchanged). */
#ifndef NN_UTHASH_CONFIG_H
#define NN_UTHASH_CONFIG_H

#include "nn_internal.h"

#include <string.h>

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) nn__alloc(uthash_mem, (sz))
#define uthash_free(ptr, sz) nn__free(uthash_mem, (ptr), (sz))
#define uthash_nonfatal_oom(elt) (uthash_oom = true)
#define uthash_bzero(a, n) memset((a), 0, (n))
#define uthash_strlen(s) strlen(s)

#include <uthash.h>

#endif
