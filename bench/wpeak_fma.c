/* wpeak_fma.c -- the arithmetic peak of one core, measured, and W3's
 * FLOP floor at that peak: the yardstick for the dense kernels (issue 19).
 *
 * Peak: twelve independent chains of multiply-adds in registers, long
 * enough to hide each instruction's latency: 4-wide FMA (AVX2+FMA, when
 * the CPU has them) and SSE2's 2-wide multiply + add (the x86-64
 * baseline). W3's work per sample, 784-128-10 with batch 64: forward
 * X W1^T and H W2^T, backward dW1 = dZ1^T X, dW2 = dZ2^T H, dH = dZ2 W2 (no
 * dX: the input needs none), 2 FLOPs per multiply-add; the elementwise
 * ops, bias and SGD update are left out (under 1 % of the FLOPs). */
#include "bench_util.h"

#include <stdio.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

__attribute__((target("avx2,fma"))) static double fma_gflops(long iters)
{
#define DECL(i) __m256d a##i = _mm256_set1_pd(1e-3 * (i + 1));
    CHAINS(DECL)
    const __m256d m = _mm256_set1_pd(0.999999), c = _mm256_set1_pd(1e-7);
    const double t0 = bench_now();
    for (long k = 0; k < iters; k++) {
#define STEP(i) a##i = _mm256_fmadd_pd(a##i, m, c);
        CHAINS(STEP)
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                         "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    const double t = bench_now() - t0;
    double o[4];
#define SUM(i) s = _mm256_add_pd(s, a##i);
    __m256d s = _mm256_setzero_pd();
    CHAINS(SUM)
    _mm256_storeu_pd(o, s);
    bench_check(o[0] == o[0], "fma chains");
    return (double)iters * 12 * 8 / t / 1e9;
}

static double sse2_gflops(long iters)
{
#define DECL2(i) __m128d a##i = _mm_set1_pd(1e-3 * (i + 1));
    CHAINS(DECL2)
    const __m128d m = _mm_set1_pd(0.999999), c = _mm_set1_pd(1e-7);
    const double t0 = bench_now();
    for (long k = 0; k < iters; k++) {
#define STEP2(i) a##i = _mm_add_pd(_mm_mul_pd(a##i, m), c);
        CHAINS(STEP2)
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                         "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    const double t = bench_now() - t0;
    double o[2];
    __m128d s = _mm_setzero_pd();
#define SUM2(i) s = _mm_add_pd(s, a##i);
    CHAINS(SUM2)
    _mm_storeu_pd(o, s);
    bench_check(o[0] == o[0], "sse2 chains");
    return (double)iters * 12 * 4 / t / 1e9;
}
#endif

int main(void)
{
    const double flops = 2.0 * (2.0 * 784 * 128 + 3.0 * 128 * 10); /* per W3 sample */
    printf("Peak of one core (12 independent chains in registers), W3 floor = peak / %.0f "
           "FLOP per sample\n",
           flops);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const long iters = 20000000;
    double t[BENCH_REPS];
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        fma_gflops(iters / 4);
        for (int r = 0; r < BENCH_REPS; r++)
            t[r] = fma_gflops(iters);
        bench_stats s = bench_summarise(t, BENCH_REPS);
        printf("  AVX2 FMA       %6.1f GFLOP/s   W3 floor %7.0f samples/s\n", s.median,
               s.median * 1e9 / flops);
        bench_json("peak", "avx2_fma_gflops", s, "GFLOP/s", -1);
    }
    sse2_gflops(iters / 4);
    for (int r = 0; r < BENCH_REPS; r++)
        t[r] = sse2_gflops(iters);
    bench_stats s = bench_summarise(t, BENCH_REPS);
    printf("  SSE2 mul + add %6.1f GFLOP/s   W3 floor %7.0f samples/s\n", s.median,
           s.median * 1e9 / flops);
    bench_json("peak", "sse2_gflops", s, "GFLOP/s", -1);
#else
    printf("  (x86-64 only)\n");
#endif
    return 0;
}
