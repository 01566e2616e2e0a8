/* kernels.h -- the few dense loops the linear-algebra ops are built from.
 * Plain C that compilers vectorize; dot products keep four partial sums so
 * they vectorize without reassociation flags. */
#ifndef AD_KERNELS_H
#define AD_KERNELS_H

#include <stddef.h>

/* sum_i a[i] b[i] */
static inline double ad__kdot(const double *restrict a, const double *restrict b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* y[i] += alpha x[i] */
static inline void ad__kaxpy(double *restrict y, double alpha, const double *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

/* sum_i x[i] */
static inline double ad__ksum(const double *x, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++)
        s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/* Four dot products at once: out[r*2+c] = a_r . b_c for r, c in {0, 1}.
 * Each element loaded feeds two products, half the loads of four kdots. */
static inline void ad__kdot2x2(const double *restrict a0, const double *restrict a1,
                               const double *restrict b0, const double *restrict b1, size_t n,
                               double out[4])
{
    double s00 = 0, s01 = 0, s10 = 0, s11 = 0, t00 = 0, t01 = 0, t10 = 0, t11 = 0;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) { /* two partial sums per product: vectorizes */
        s00 += a0[i] * b0[i], t00 += a0[i + 1] * b0[i + 1];
        s01 += a0[i] * b1[i], t01 += a0[i + 1] * b1[i + 1];
        s10 += a1[i] * b0[i], t10 += a1[i + 1] * b0[i + 1];
        s11 += a1[i] * b1[i], t11 += a1[i + 1] * b1[i + 1];
    }
    for (; i < n; i++)
        s00 += a0[i] * b0[i], s01 += a0[i] * b1[i], s10 += a1[i] * b0[i], s11 += a1[i] * b1[i];
    out[0] = s00 + t00, out[1] = s01 + t01, out[2] = s10 + t10, out[3] = s11 + t11;
}

/* y[i] += a0 x0[i] + a1 x1[i] + a2 x2[i] + a3 x3[i]: one pass over y for
 * four rows of x. */
static inline void ad__kaxpy4(double *restrict y, const double a[4], const double *restrict x0,
                              const double *restrict x1, const double *restrict x2,
                              const double *restrict x3, size_t n)
{
    const double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    for (size_t i = 0; i < n; i++)
        y[i] += (a0 * x0[i] + a1 * x1[i]) + (a2 * x2[i] + a3 * x3[i]);
}

#endif
