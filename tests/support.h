/* support.h -- helpers shared by the test files: a counting allocator that
 * can be told to fail the N-th allocation, and a finite-difference check. */
#ifndef AD_TEST_SUPPORT_H
#define AD_TEST_SUPPORT_H

#include <autodiff/autodiff.h>
#include <stddef.h>
#include <stdint.h>

typedef struct test_alloc {
    long allocs;      /* successful allocations */
    long frees;
    long fail_at;     /* fail the allocation with this 1-based number; 0: never */
    long count;       /* allocation attempts so far */
    size_t bytes;     /* bytes currently held */
    long bad_osize;   /* resizes/frees whose osize was not the block's size */
} test_alloc;

/* An ad_alloc_fn; ud is a test_alloc. Each block carries its size in a
 * hidden header, so an osize that differs from the size the block was
 * given is counted in bad_osize (the Lua-style contract). */
void *test_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

/* Tape options that route every allocation through a (zeroed by the
 * caller) test_alloc. */
ad_tape_opts test_alloc_opts(test_alloc *a);

/* A small deterministic generator (splitmix64): the same seed gives the
 * same numbers on every machine, so a failing case can be rerun. */
typedef struct test_rng {
    uint64_t s;
} test_rng;

uint64_t test_rng_next(test_rng *r);
/* Uniform in [lo, hi). */
double test_uniform(test_rng *r, double lo, double hi);
/* Uniform in [lo, hi) with a random sign: away from 0 when lo > 0. */
double test_signed(test_rng *r, double lo, double hi);

/* Combined error: |a - b| / max(1, |b|) -- absolute near 0, relative for
 * large values. b is the reference. */
double test_err(double a, double b);

/* Central difference (f(x + h e_i) - f(x - h e_i)) / 2h; x[i] is restored. */
double test_fd(double (*f)(void *ctx, const double *x), void *ctx, double *x, size_t i,
               double h);

/* Gradient check of a whole graph: f records a computation of n variable
 * operands in[] (shapes[i], values taken in order from x) and returns its
 * output; a non-scalar output is reduced to a scalar with a fixed random
 * weighting. Every gradient element of the tape is compared with a central
 * difference (step h). Returns the worst test_err, or INFINITY when a
 * recording or sweep fails; msg (if not NULL) receives a description of the
 * worst element or of the failure. opts: tape options (NULL: defaults),
 * e.g. a registry for ad_apply_named. */
typedef ad_node (*test_graph_fn)(ad_tape *t, const ad_node *in, void *ud);
double test_grad_check(test_graph_fn f, void *ud, const ad_shape *shapes, int n, const double *x,
                       double h, const ad_tape_opts *opts, char *msg, size_t msgcap);

#endif
