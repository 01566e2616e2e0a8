/* support.h -- helpers shared by the test files: a counting allocator that
 * can be told to fail the N-th allocation, and a finite-difference check. */
#ifndef AD_TEST_SUPPORT_H
#define AD_TEST_SUPPORT_H

#include <autodiff/autodiff.h>
#include <stddef.h>

typedef struct test_alloc {
    long allocs;      /* successful allocations */
    long frees;
    long fail_at;     /* fail the allocation with this 1-based number; 0: never */
    long count;       /* allocation attempts so far */
    size_t bytes;     /* bytes currently held */
} test_alloc;

/* An ad_alloc_fn; ud is a test_alloc. */
void *test_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
