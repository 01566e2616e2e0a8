#include "support.h"

#include <stdlib.h>

void *test_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    test_alloc *a = ud;
    if (nsize == 0) {
        if (ptr) {
            a->frees++;
            a->bytes -= osize;
        }
        free(ptr);
        return NULL;
    }
    a->count++;
    if (a->fail_at && a->count == a->fail_at)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p) {
        if (!ptr)
            a->allocs++;
        a->bytes += nsize - osize;
    }
    return p;
}
