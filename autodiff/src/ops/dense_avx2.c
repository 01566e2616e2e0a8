/* dense_avx2.c -- the dense kernels with AVX2 and FMA. This file alone is
 * compiled with -mavx2 -mfma (CMake, on x86-64 when the compiler takes the
 * flags); nothing here runs unless ad__kernels_get found both features on
 * the CPU. Register-blocked micro-kernels:
 *   nt       C = A B^T: 3 rows of A x 4 rows of B, twelve dot products in
 *            ymm accumulators, A and B read once per block;
 *   combine  Y (=|+=) Cf X (dA = dC B, dB = dC^T A): a tile of 4 rows of Y
 *            x 12 columns held in ymm registers over the whole sum, each
 *            row of X loaded once per tile and each coefficient broadcast;
 *   mv       y = W x: 4 rows sharing each load of x, 8 accumulators;
 *   rows4_vjp  matvec's backward, dW = dz x^T and dx = W^T dz in one pass.
 * Sums are FMA chains over 4-wide partial sums, so values differ from the
 * portable kernels in rounding only. */
#include <autodiff/autodiff.h>

#include "dense.h"

#include <immintrin.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define AD__INLINE static inline __attribute__((always_inline))
#else
#define AD__INLINE static inline
#endif

/* lanes i < r set (r in 0..4) */
AD__INLINE __m256i tailmask(size_t r)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)r), _mm256_setr_epi64x(0, 1, 2, 3));
}

AD__INLINE double hsum4(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* ---- y = W x;  W (rows x n), x (n), y (rows) ---- */

/* MR rows sharing x, two 4-wide accumulators per row */
AD__INLINE void mv_rows(const double *W, const double *x, double *y, size_t n, const int MR)
{
    __m256d a[4], b[4];
    for (int r = 0; r < MR; r++)
        a[r] = _mm256_setzero_pd(), b[r] = _mm256_setzero_pd();
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256d x0 = _mm256_loadu_pd(x + j), x1 = _mm256_loadu_pd(x + j + 4);
        for (int r = 0; r < MR; r++) {
            a[r] = _mm256_fmadd_pd(_mm256_loadu_pd(W + r * n + j), x0, a[r]);
            b[r] = _mm256_fmadd_pd(_mm256_loadu_pd(W + r * n + j + 4), x1, b[r]);
        }
    }
    if (j + 4 <= n) {
        const __m256d x0 = _mm256_loadu_pd(x + j);
        for (int r = 0; r < MR; r++)
            a[r] = _mm256_fmadd_pd(_mm256_loadu_pd(W + r * n + j), x0, a[r]);
        j += 4;
    }
    if (j < n) {
        const __m256i m = tailmask(n - j);
        const __m256d x0 = _mm256_maskload_pd(x + j, m);
        for (int r = 0; r < MR; r++)
            b[r] = _mm256_fmadd_pd(_mm256_maskload_pd(W + r * n + j, m), x0, b[r]);
    }
    for (int r = 0; r < MR; r++)
        y[r] = hsum4(_mm256_add_pd(a[r], b[r]));
}

static void k_mv(const double *W, const double *x, double *y, size_t rows, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= rows; i += 4)
        mv_rows(W + i * n, x, y + i, n, 4);
    for (; i < rows; i++)
        mv_rows(W + i * n, x, y + i, n, 1);
}

/* ---- four rows of matvec's backward ----
 * d_r[j] (=|+=) dz[r] x[j];  gx[j] (=|+=) sum_r dz[r] w_r[j] */
AD__INLINE void rows4(double *restrict d0, double *restrict d1, double *restrict d2,
                      double *restrict d3, double *restrict gx, const double *dz,
                      const double *restrict x, const double *restrict w0,
                      const double *restrict w1, const double *restrict w2,
                      const double *restrict w3, size_t n, const int setw, const int setx,
                      const int stream)
{
    const __m256d a0 = _mm256_set1_pd(dz[0]), a1 = _mm256_set1_pd(dz[1]);
    const __m256d a2 = _mm256_set1_pd(dz[2]), a3 = _mm256_set1_pd(dz[3]);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const __m256d xv = _mm256_loadu_pd(x + j);
        if (stream) { /* two 16-byte non-temporal stores per vector */
            __m256d v = _mm256_mul_pd(a0, xv);
            _mm_stream_pd(d0 + j, _mm256_castpd256_pd128(v));
            _mm_stream_pd(d0 + j + 2, _mm256_extractf128_pd(v, 1));
            v = _mm256_mul_pd(a1, xv);
            _mm_stream_pd(d1 + j, _mm256_castpd256_pd128(v));
            _mm_stream_pd(d1 + j + 2, _mm256_extractf128_pd(v, 1));
            v = _mm256_mul_pd(a2, xv);
            _mm_stream_pd(d2 + j, _mm256_castpd256_pd128(v));
            _mm_stream_pd(d2 + j + 2, _mm256_extractf128_pd(v, 1));
            v = _mm256_mul_pd(a3, xv);
            _mm_stream_pd(d3 + j, _mm256_castpd256_pd128(v));
            _mm_stream_pd(d3 + j + 2, _mm256_extractf128_pd(v, 1));
        } else if (setw) {
            _mm256_storeu_pd(d0 + j, _mm256_mul_pd(a0, xv));
            _mm256_storeu_pd(d1 + j, _mm256_mul_pd(a1, xv));
            _mm256_storeu_pd(d2 + j, _mm256_mul_pd(a2, xv));
            _mm256_storeu_pd(d3 + j, _mm256_mul_pd(a3, xv));
        } else {
            _mm256_storeu_pd(d0 + j, _mm256_fmadd_pd(a0, xv, _mm256_loadu_pd(d0 + j)));
            _mm256_storeu_pd(d1 + j, _mm256_fmadd_pd(a1, xv, _mm256_loadu_pd(d1 + j)));
            _mm256_storeu_pd(d2 + j, _mm256_fmadd_pd(a2, xv, _mm256_loadu_pd(d2 + j)));
            _mm256_storeu_pd(d3 + j, _mm256_fmadd_pd(a3, xv, _mm256_loadu_pd(d3 + j)));
        }
        __m256d s = _mm256_mul_pd(a0, _mm256_loadu_pd(w0 + j));
        s = _mm256_fmadd_pd(a1, _mm256_loadu_pd(w1 + j), s);
        s = _mm256_fmadd_pd(a2, _mm256_loadu_pd(w2 + j), s);
        s = _mm256_fmadd_pd(a3, _mm256_loadu_pd(w3 + j), s);
        _mm256_storeu_pd(gx + j, setx ? s : _mm256_add_pd(_mm256_loadu_pd(gx + j), s));
    }
    for (; j < n; j++) {
        const double z0 = dz[0], z1 = dz[1], z2 = dz[2], z3 = dz[3];
        d0[j] = (setw ? 0.0 : d0[j]) + z0 * x[j];
        d1[j] = (setw ? 0.0 : d1[j]) + z1 * x[j];
        d2[j] = (setw ? 0.0 : d2[j]) + z2 * x[j];
        d3[j] = (setw ? 0.0 : d3[j]) + z3 * x[j];
        gx[j] = (setx ? 0.0 : gx[j]) + ((z0 * w0[j] + z1 * w1[j]) + (z2 * w2[j] + z3 * w3[j]));
    }
}

static void k_rows4_vjp(double *d0, double *d1, double *d2, double *d3, double *gx,
                        const double *dz, const double *x, const double *w0, const double *w1,
                        const double *w2, const double *w3, size_t n, int setw, int setx)
{
    if (setw && setx)
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 1, 1, 0);
    else if (setw)
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 1, 0, 0);
    else if (setx)
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 0, 1, 0);
    else
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 0, 0, 0);
}

/* rows4 writing dW with non-temporal stores; gx exactly as k_rows4_vjp */
static void k_rows4_vjp_stream(double *d0, double *d1, double *d2, double *d3, double *gx,
                               const double *dz, const double *x, const double *w0,
                               const double *w1, const double *w2, const double *w3, size_t n,
                               int setx)
{
    if (setx)
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 1, 1, 1);
    else
        rows4(d0, d1, d2, d3, gx, dz, x, w0, w1, w2, w3, n, 1, 0, 1);
}

/* ---- C = A B^T;  A (m x p), B (n x p), C (m x n) ----
 * One block: C[r, c] = A[r,:] . B[c,:] for r < MR (<= 3), c < NR (<= 4);
 * twelve accumulators, three rows of A and one of B in registers. */
AD__INLINE void nt_block(const double *A, const double *B, double *C, size_t p, size_t ldc,
                         const int MR, const int NR)
{
    __m256d acc[3][4];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++)
            acc[r][c] = _mm256_setzero_pd();
    size_t q = 0;
    for (; q + 4 <= p; q += 4) {
        __m256d a[3];
        for (int r = 0; r < MR; r++)
            a[r] = _mm256_loadu_pd(A + r * p + q);
        for (int c = 0; c < NR; c++) {
            const __m256d b = _mm256_loadu_pd(B + c * p + q);
            for (int r = 0; r < MR; r++)
                acc[r][c] = _mm256_fmadd_pd(a[r], b, acc[r][c]);
        }
    }
    if (q < p) {
        const __m256i m = tailmask(p - q);
        __m256d a[3];
        for (int r = 0; r < MR; r++)
            a[r] = _mm256_maskload_pd(A + r * p + q, m);
        for (int c = 0; c < NR; c++) {
            const __m256d b = _mm256_maskload_pd(B + c * p + q, m);
            for (int r = 0; r < MR; r++)
                acc[r][c] = _mm256_fmadd_pd(a[r], b, acc[r][c]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++)
            C[r * ldc + c] = hsum4(acc[r][c]);
}

/* the edge blocks, MR and NR known at compile time in each case */
static void nt_edge(const double *A, const double *B, double *C, size_t p, size_t ldc, size_t mr,
                    size_t nr)
{
    switch (mr * 4 + nr) {
#define AD__NT_CASE(M, N)                                                                     \
    case M * 4 + N:                                                                           \
        nt_block(A, B, C, p, ldc, M, N);                                                      \
        break;
        AD__NT_CASE(1, 1) AD__NT_CASE(1, 2) AD__NT_CASE(1, 3) AD__NT_CASE(1, 4)
        AD__NT_CASE(2, 1) AD__NT_CASE(2, 2) AD__NT_CASE(2, 3) AD__NT_CASE(2, 4)
        AD__NT_CASE(3, 1) AD__NT_CASE(3, 2) AD__NT_CASE(3, 3)
#undef AD__NT_CASE
    default:
        break;
    }
}

/* Rows of A per chunk: a chunk of A (at most 512 KiB) is read again from
 * L2 for every four rows of B, and B is read once per chunk. */
#define AD__NT_CHUNK_BYTES ((size_t)512 * 1024)

static void k_nt(const double *A, const double *B, double *C, size_t m, size_t p, size_t n)
{
    size_t mc = p ? AD__NT_CHUNK_BYTES / (p * sizeof *A) : m;
    mc = mc < 3 ? 3 : mc - mc % 3;
    for (size_t i0 = 0; i0 < m; i0 += mc) {
        const size_t i1 = m - i0 < mc ? m : i0 + mc;
        for (size_t j = 0; j < n; j += 4) {
            const size_t nr = n - j < 4 ? n - j : 4;
            size_t i = i0;
            if (nr == 4)
                for (; i + 3 <= i1; i += 3)
                    nt_block(A + i * p, B + j * p, C + i * n + j, p, n, 3, 4);
            for (; i < i1; i += 3)
                nt_edge(A + i * p, B + j * p, C + i * n + j, p, n, i1 - i < 3 ? i1 - i : 3, nr);
        }
    }
}

/* ---- Y (=|+=) Cf X;  Y (rows x p), X (k x p), Cf[r,q] = c[r*rs + q*ks] ----
 * One tile: MR (<= 4) rows of Y x NV (<= 3) vectors of 4 columns, the
 * last one masked to the columns that exist when mask is not all ones. */
AD__INLINE void comb_tile(double *Y, const double *c, size_t rs, size_t ks, const double *X,
                          size_t k, size_t p, int assign, const int MR, const int NV,
                          const int MASKED, __m256i m)
{
    __m256d acc[4][3];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = assign                  ? _mm256_setzero_pd()
                        : MASKED && v == NV - 1 ? _mm256_maskload_pd(Y + r * p + 4 * v, m)
                                                : _mm256_loadu_pd(Y + r * p + 4 * v);
    for (size_t q = 0; q < k; q++) {
        const double *xq = X + q * p, *cq = c + q * ks;
        __m256d xv[3];
        for (int v = 0; v < NV; v++)
            xv[v] = MASKED && v == NV - 1 ? _mm256_maskload_pd(xq + 4 * v, m)
                                          : _mm256_loadu_pd(xq + 4 * v);
        for (int r = 0; r < MR; r++) {
            const __m256d cr = _mm256_broadcast_sd(cq + r * rs);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm256_fmadd_pd(cr, xv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) {
            if (MASKED && v == NV - 1)
                _mm256_maskstore_pd(Y + r * p + 4 * v, m, acc[r][v]);
            else
                _mm256_storeu_pd(Y + r * p + 4 * v, acc[r][v]);
        }
}

/* a column panel [j, j + 4 NV) (the last vector masked by m) over all rows */
AD__INLINE void comb_panel(double *Y, const double *c, size_t rs, size_t ks, const double *X,
                           size_t rows, size_t k, size_t p, int assign, const int NV,
                           const int MASKED, __m256i m)
{
    size_t r = 0;
    for (; r + 4 <= rows; r += 4)
        comb_tile(Y + r * p, c + r * rs, rs, ks, X, k, p, assign, 4, NV, MASKED, m);
    switch (rows - r) {
    case 3:
        comb_tile(Y + r * p, c + r * rs, rs, ks, X, k, p, assign, 3, NV, MASKED, m);
        break;
    case 2:
        comb_tile(Y + r * p, c + r * rs, rs, ks, X, k, p, assign, 2, NV, MASKED, m);
        break;
    case 1:
        comb_tile(Y + r * p, c + r * rs, rs, ks, X, k, p, assign, 1, NV, MASKED, m);
        break;
    default:
        break;
    }
}

static void k_combine(double *Y, const double *c, size_t rs, size_t ks, const double *X,
                      size_t rows, size_t k, size_t p, int assign)
{
    const __m256i all = _mm256_set1_epi64x(-1);
    size_t j = 0;
    for (; j + 12 <= p; j += 12)
        comb_panel(Y + j, c, rs, ks, X + j, rows, k, p, assign, 3, 0, all);
    const size_t rem = p - j; /* 0 .. 11 columns left, the last vector masked */
    if (rem > 8)
        comb_panel(Y + j, c, rs, ks, X + j, rows, k, p, assign, 3, 1, tailmask(rem - 8));
    else if (rem > 4)
        comb_panel(Y + j, c, rs, ks, X + j, rows, k, p, assign, 2, 1, tailmask(rem - 4));
    else if (rem > 0)
        comb_panel(Y + j, c, rs, ks, X + j, rows, k, p, assign, 1, 1, tailmask(rem));
}

const ad__kernels ad__kernels_avx2 = {AD_KERNELS_AVX2, "avx2", k_mv, k_rows4_vjp,
                                      k_rows4_vjp_stream, k_nt, k_combine};
