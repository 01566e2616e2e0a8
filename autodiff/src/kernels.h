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

#endif
