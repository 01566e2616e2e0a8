#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bench_stats bench_summarise(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp);
    bench_stats s = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], t[n - 1]};
    return s;
}

void bench_json(const char *workload, const char *variant, bench_stats s, const char *unit,
                double ratio)
{
    printf("{\"workload\":\"%s\",\"variant\":\"%s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,"
           "\"unit\":\"%s\"",
           workload, variant, s.median, s.min, s.max, unit);
    if (ratio >= 0)
        printf(",\"ratio_to_hand\":%.4f", ratio);
    printf("}\n");
}

void *bench_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    bench_alloc *a = ud;
    if (nsize == 0) {
        a->bytes -= osize;
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) {
        a->allocs++;
        a->bytes += nsize - osize;
        if (a->bytes > a->peak)
            a->peak = a->bytes;
    }
    return p;
}

void bench_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "CHECK FAILED: %s\n", what);
        exit(1);
    }
}
