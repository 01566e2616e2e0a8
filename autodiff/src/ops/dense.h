/* dense.h -- the dense kernels of matvec, matmul_nt and affine, one table
 * per instruction-set variant, chosen at run time.
 *
 * Each variant (portable C, SSE2, AVX2+FMA) is a const table of function
 * pointers, built from its own source file (dense_avx2.c alone is compiled
 * with -mavx2 -mfma). A tape picks one at ad_tape_new (the best the CPU
 * supports, or what AD_KERNELS / ad_tape_set_kernels asks for) and the
 * built-in ops recorded on it carry it in ad_call.ud; a NULL ud (calls
 * built outside a tape, e.g. by the chain-rule trace) means "the best the
 * CPU supports". No state: the tables are const, the choice lives in the
 * tape and in the calls. Variants differ only in rounding (FMA, the order
 * of partial sums): each agrees with the portable one to about
 * 1e-13 * sum |terms| (tests/test_kernels.c). */
#ifndef AD_DENSE_H
#define AD_DENSE_H

#include <stddef.h>

typedef struct ad__kernels {
    int variant;      /* AD_KERNELS_PORTABLE, _SSE2 or _AVX2 */
    const char *name; /* "portable", "sse2", "avx2" */
    /* y = W x;  W (rows x n), x (n), y (rows) */
    void (*mv)(const double *W, const double *x, double *y, size_t rows, size_t n);
    /* Four rows of a matvec's backward in one pass: d_r[j] (=|+=) dz[r] x[j]
     * (setw: =), gx[j] (=|+=) sum_r dz[r] w_r[j] (setx: =), r < 4. */
    void (*rows4_vjp)(double *d0, double *d1, double *d2, double *d3, double *gx,
                      const double *dz, const double *x, const double *w0, const double *w1,
                      const double *w2, const double *w3, size_t n, int setw, int setx);
    /* rows4_vjp with setw, dW written with non-temporal stores (x86-64;
     * NULL elsewhere): d0 16-byte aligned, n even; gx computed exactly as
     * rows4_vjp computes it. The caller fences (_mm_sfence) before dW is
     * read. */
    void (*rows4_vjp_stream)(double *d0, double *d1, double *d2, double *d3, double *gx,
                             const double *dz, const double *x, const double *w0,
                             const double *w1, const double *w2, const double *w3, size_t n,
                             int setx);
    /* C = A B^T;  A (m x p), B (n x p), C (m x n), written */
    void (*nt)(const double *A, const double *B, double *C, size_t m, size_t p, size_t n);
    /* Y (=|+=) Cf X: Y (rows x p), X (k x p), Cf[r,q] = c[r*rs + q*ks]
     * (rows x k); assign: Y is written, not read. dA = dC B is
     * (c = dC, rs = n, ks = 1); dB = dC^T A is (c = dC, rs = 1, ks = n). */
    void (*combine)(double *Y, const double *c, size_t rs, size_t ks, const double *X,
                    size_t rows, size_t k, size_t p, int assign);
} ad__kernels;

extern const ad__kernels ad__kernels_portable;
#if defined(AD_HAVE_SSE2_KERNELS)
extern const ad__kernels ad__kernels_sse2;
#endif
#if defined(AD_HAVE_AVX2_KERNELS)
extern const ad__kernels ad__kernels_avx2;
#endif

/* The table of a variant (AD_KERNELS_*; AUTO: the best the CPU supports),
 * or NULL when this build or this CPU lacks it. */
const ad__kernels *ad__kernels_get(int variant);
/* The table a call's ud names (NULL: the best the CPU supports). */
static inline const ad__kernels *ad__kern(const void *ud)
{
    return ud ? (const ad__kernels *)ud : ad__kernels_get(0);
}

#endif
