/* dense_impl.h -- the ad__kernels table of kernels.h's loops, included by
 * dense_portable.c (plain C) and dense_sse2.c (SSE2 intrinsics), which
 * define AD__DENSE_TABLE, AD__DENSE_VARIANT and AD__DENSE_NAME first. */
#include "dense.h"
#include "kernels.h"

#include <string.h>

/* y = W x;  W (rows x n): four rows per pass over x */
static void k_mv(const double *W, const double *x, double *y, size_t rows, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        const double *w = W + i * n;
        ad__kdot4(w, w + n, w + 2 * n, w + 3 * n, x, n, y + i);
    }
    for (; i < rows; i++)
        y[i] = ad__kdot(W + i * n, x, n);
}

static void k_rows4_vjp(double *d0, double *d1, double *d2, double *d3, double *gx,
                        const double *dz, const double *x, const double *w0, const double *w1,
                        const double *w2, const double *w3, size_t n, int setw, int setx)
{
    ad__krows4_vjp(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, setw, setx);
}

#if defined(AD__HAVE_STREAM)
static void k_rows4_vjp_stream(double *d0, double *d1, double *d2, double *d3, double *gx,
                               const double *dz, const double *x, const double *w0,
                               const double *w1, const double *w2, const double *w3, size_t n,
                               int setx)
{
    ad__krows4_vjp_stream(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, setx);
}
#define AD__K_STREAM k_rows4_vjp_stream
#else
#define AD__K_STREAM NULL
#endif

/* C = A B^T;  A (m x p), B (n x p): 2x4 and 2x2 blocks of dot products */
static void k_nt(const double *A, const double *B, double *C, size_t m, size_t p, size_t n)
{
    size_t i = 0;
    for (; i + 2 <= m; i += 2) {
        size_t j = 0;
#if defined(AD__SSE2)
        for (; j + 4 <= n; j += 4) {
            double o[8];
            ad__kdot2x4(A + i * p, A + (i + 1) * p, B + j * p, B + (j + 1) * p, B + (j + 2) * p,
                        B + (j + 3) * p, p, o);
            memcpy(C + i * n + j, o, 4 * sizeof *o);
            memcpy(C + (i + 1) * n + j, o + 4, 4 * sizeof *o);
        }
#endif
        for (; j + 2 <= n; j += 2) {
            double o[4];
            ad__kdot2x2(A + i * p, A + (i + 1) * p, B + j * p, B + (j + 1) * p, p, o);
            C[i * n + j] = o[0], C[i * n + j + 1] = o[1];
            C[(i + 1) * n + j] = o[2], C[(i + 1) * n + j + 1] = o[3];
        }
        for (; j < n; j++) {
            C[i * n + j] = ad__kdot(A + i * p, B + j * p, p);
            C[(i + 1) * n + j] = ad__kdot(A + (i + 1) * p, B + j * p, p);
        }
    }
    for (; i < m; i++) /* C[i,j] = A[i,:] . B[j,:] */
        for (size_t j = 0; j < n; j++)
            C[i * n + j] = ad__kdot(A + i * p, B + j * p, p);
}

/* Y[r,:] (=|+=) sum_q c[r*rs + q*ks] X[q,:];  Y (rows x p), X (k x p) */
static void k_combine(double *Y, const double *c, size_t rs, size_t ks, const double *X,
                      size_t rows, size_t k, size_t p, int assign)
{
    for (size_t r = 0; r < rows; r++)
        ad__kcombine_to(Y + r * p, c + r * rs, ks, X, p, k, p, assign);
}

const ad__kernels AD__DENSE_TABLE = {AD__DENSE_VARIANT, AD__DENSE_NAME, k_mv, k_rows4_vjp,
                                     AD__K_STREAM, k_nt, k_combine};
