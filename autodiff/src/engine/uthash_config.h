/* uthash_config.h -- include instead of <uthash.h>: routes uthash's memory
 * through the library allocator and makes out-of-memory non-fatal.
 *
 * The macros expect a variable `ad__mem *uthash_mem` in scope at each
 * HASH_ADD/HASH_DEL, and a `bool uthash_oom` that is set when an insert
 * ran out of memory (the element was then not added). */
#ifndef AD_UTHASH_CONFIG_H
#define AD_UTHASH_CONFIG_H

#include "internal.h"

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) ad__alloc(uthash_mem, (sz))
#define uthash_free(ptr, sz) ad__free(uthash_mem, (ptr), (sz))
#define uthash_nonfatal_oom(elt) (uthash_oom = true)
#define uthash_bzero(a, n) memset((a), 0, (n))
#define uthash_strlen(s) strlen(s)

#include <string.h>
#include <uthash.h>

#endif
