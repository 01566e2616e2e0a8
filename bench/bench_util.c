#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
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

void *bench_cc_load(const char *src, const char *so, long *bytes, double *cc_s)
{
    struct stat sb;
    bench_check(stat(src, &sb) == 0, src);
    *bytes = (long)sb.st_size;
    const char *cc = getenv("CC");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -O2 -shared -fPIC -o %s %s -lm", cc && *cc ? cc : "cc", so, src);
    const double t0 = bench_now();
    bench_check(system(cmd) == 0, cmd);
    *cc_s = bench_now() - t0;
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    bench_check(h != NULL, dlerror());
    return h;
}

void *bench_sym(void *h, const char *prefix, const char *name)
{
    char s[128];
    snprintf(s, sizeof s, "%s_%s", prefix, name);
    void *p = dlsym(h, s);
    bench_check(p != NULL, s);
    return p;
}
