/* bench_util.h -- timing, medians, a counting allocator and the report
 * format shared by the benchmark programs (not part of the library). */
#ifndef AD_BENCH_UTIL_H
#define AD_BENCH_UTIL_H

#include <stddef.h>

#define BENCH_REPS 7 /* timed repetitions after one warm-up (WORKLOADS.md: >= 5) */

double bench_now(void); /* seconds, monotonic */

typedef struct bench_stats {
    double median, min, max;
} bench_stats;

/* Sorts t[0..n) and summarises it. */
bench_stats bench_summarise(double *t, int n);

/* Prints one JSON line: workload, variant, median/min/max, unit, ratio to
 * hand-written (negative: not applicable). */
void bench_json(const char *workload, const char *variant, bench_stats s, const char *unit,
                double ratio);

/* A realloc-style allocator that counts, for "allocations per step". */
typedef struct bench_alloc {
    long allocs; /* allocations and growing reallocations */
    size_t bytes, peak;
} bench_alloc;
void *bench_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

/* Fails the run with a message: a fast wrong answer must not count. */
void bench_check(int ok, const char *what);

/* Generated code (W6, W7): compiles the C file src with $CC (else cc) -O2
 * into the shared object so, loads it (it stays loaded) and returns its
 * handle; *bytes gets src's size, *cc_s the compile time. Fails the run on
 * any error. */
void *bench_cc_load(const char *src, const char *so, long *bytes, double *cc_s);
/* The symbol prefix_name of a loaded object (fails the run if missing). */
void *bench_sym(void *h, const char *prefix, const char *name);

#endif
