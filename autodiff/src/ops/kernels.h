/* kernels.h -- the few dense loops the linear-algebra ops are built from.
 * Plain C that compilers vectorize; dot products keep four partial sums so
 * they vectorize without reassociation flags. The blocked dot products
 * (four rows sharing x; 2x2 and 2x4 blocks) use SSE2 intrinsics, x86-64's
 * baseline, because gcc vectorizes their plain-C form across rows with
 * shuffles and ran slower than one row at a time; each has a plain-C twin
 * for other targets, with the same partial sums in the same order. So
 * does the non-temporal store of a large dW. */
#ifndef AD_KERNELS_H
#define AD_KERNELS_H

#include <stddef.h>
/* AD_PORTABLE_KERNELS (cmake -DAD_PORTABLE_KERNELS=ON) builds the plain-C
 * twins on x86-64 too, so CI compiles and tests what other targets run. */
#if defined(__SSE2__) && !defined(AD_PORTABLE_KERNELS)
#define AD__SSE2 1
#include <emmintrin.h>
#endif

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

/* Four dot products sharing x: out[r] = w_r . x, each bit for bit what
 * ad__kdot(w_r, x, n) returns (the same four partial sums, added in the
 * same order), with x loaded once for the four rows. */
#if defined(AD__SSE2)
static inline double ad__khsum(__m128d a, __m128d b) /* (a0 + a1) + (b0 + b1) */
{
    return (_mm_cvtsd_f64(a) + _mm_cvtsd_f64(_mm_unpackhi_pd(a, a)))
           + (_mm_cvtsd_f64(b) + _mm_cvtsd_f64(_mm_unpackhi_pd(b, b)));
}
static inline void ad__kdot4(const double *restrict w0, const double *restrict w1,
                             const double *restrict w2, const double *restrict w3,
                             const double *restrict x, size_t n, double out[4])
{
    /* lo: partial sums s0, s1 of a row (j % 4 = 0, 1); hi: s2, s3 */
    __m128d l0 = _mm_setzero_pd(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const __m128d xl = _mm_loadu_pd(x + j), xh = _mm_loadu_pd(x + j + 2);
        l0 = _mm_add_pd(l0, _mm_mul_pd(_mm_loadu_pd(w0 + j), xl));
        h0 = _mm_add_pd(h0, _mm_mul_pd(_mm_loadu_pd(w0 + j + 2), xh));
        l1 = _mm_add_pd(l1, _mm_mul_pd(_mm_loadu_pd(w1 + j), xl));
        h1 = _mm_add_pd(h1, _mm_mul_pd(_mm_loadu_pd(w1 + j + 2), xh));
        l2 = _mm_add_pd(l2, _mm_mul_pd(_mm_loadu_pd(w2 + j), xl));
        h2 = _mm_add_pd(h2, _mm_mul_pd(_mm_loadu_pd(w2 + j + 2), xh));
        l3 = _mm_add_pd(l3, _mm_mul_pd(_mm_loadu_pd(w3 + j), xl));
        h3 = _mm_add_pd(h3, _mm_mul_pd(_mm_loadu_pd(w3 + j + 2), xh));
    }
    for (; j < n; j++) { /* the remainder goes into s0, as in ad__kdot */
        const __m128d xj = _mm_set_sd(x[j]);
        l0 = _mm_add_sd(l0, _mm_mul_sd(_mm_set_sd(w0[j]), xj));
        l1 = _mm_add_sd(l1, _mm_mul_sd(_mm_set_sd(w1[j]), xj));
        l2 = _mm_add_sd(l2, _mm_mul_sd(_mm_set_sd(w2[j]), xj));
        l3 = _mm_add_sd(l3, _mm_mul_sd(_mm_set_sd(w3[j]), xj));
    }
    out[0] = ad__khsum(l0, h0), out[1] = ad__khsum(l1, h1);
    out[2] = ad__khsum(l2, h2), out[3] = ad__khsum(l3, h3);
}
#else
static inline void ad__kdot4(const double *w0, const double *w1, const double *w2,
                             const double *w3, const double *x, size_t n, double out[4])
{
    out[0] = ad__kdot(w0, x, n), out[1] = ad__kdot(w1, x, n);
    out[2] = ad__kdot(w2, x, n), out[3] = ad__kdot(w3, x, n);
}
#endif

/* y[i] += alpha x[i] */
static inline void ad__kaxpy(double *restrict y, double alpha, const double *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

/* y[i] = alpha x[i] when assign (y is not read), else y[i] += alpha x[i]. */
static inline void ad__kaxpy_to(double *restrict y, double alpha, const double *restrict x,
                                size_t n, int assign)
{
    if (assign)
        for (size_t i = 0; i < n; i++)
            y[i] = alpha * x[i];
    else
        ad__kaxpy(y, alpha, x, n);
}

/* A matvec's backward for four rows r < 4 of W in one pass over them:
 * dW[r,j] (=|+=) dz[r] x[j] for each row, and gx[j] (=|+=)
 * sum_r dz[r] W[r,j]. Four rows per pass keep gx's read-modify-write off
 * the critical path at small n and read W and write dW as streams at
 * large n. setw/setx: write instead of add. */
#define AD__KROWS_LOOP(DW_OP, GX_OP)                                                          \
    for (size_t j = 0; j < n; j++) {                                                          \
        d0[j] DW_OP a0 * x[j], d1[j] DW_OP a1 * x[j], d2[j] DW_OP a2 * x[j];                  \
        d3[j] DW_OP a3 * x[j];                                                                \
        gx[j] GX_OP (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j]);                    \
    }
static inline void ad__krows4_vjp(double *restrict d0, double *restrict d1, double *restrict d2,
                                  double *restrict d3, double *restrict gx, const double *dz,
                                  const double *restrict x, const double *restrict w0,
                                  const double *restrict w1, const double *restrict w2,
                                  const double *restrict w3, size_t n, int setw, int setx)
{
    const double a0 = dz[0], a1 = dz[1], a2 = dz[2], a3 = dz[3];
    if (setw && setx)
        AD__KROWS_LOOP(=, =)
    else if (setw)
        AD__KROWS_LOOP(=, +=)
    else if (setx)
        AD__KROWS_LOOP(+=, =)
    else
        AD__KROWS_LOOP(+=, +=)
}
#undef AD__KROWS_LOOP

#if defined(AD__SSE2)
/* ad__krows4_vjp writing dW (setw) with non-temporal stores: for a dW too
 * large to stay in cache, the stores skip the read of each line before
 * writing it, and dW's traffic halves. d0 must be 16-byte aligned and n even (so
 * every row is); gx is computed exactly as in ad__krows4_vjp. The caller
 * issues _mm_sfence() before anyone reads dW. */
static inline void ad__krows4_vjp_stream(double *restrict d0, double *restrict d1,
                                         double *restrict d2, double *restrict d3,
                                         double *restrict gx, const double *dz,
                                         const double *restrict x, const double *restrict w0,
                                         const double *restrict w1, const double *restrict w2,
                                         const double *restrict w3, size_t n, int setx)
{
    const __m128d a0 = _mm_set1_pd(dz[0]), a1 = _mm_set1_pd(dz[1]);
    const __m128d a2 = _mm_set1_pd(dz[2]), a3 = _mm_set1_pd(dz[3]);
    for (size_t j = 0; j < n; j += 2) {
        const __m128d xv = _mm_loadu_pd(x + j);
        _mm_stream_pd(d0 + j, _mm_mul_pd(a0, xv));
        _mm_stream_pd(d1 + j, _mm_mul_pd(a1, xv));
        _mm_stream_pd(d2 + j, _mm_mul_pd(a2, xv));
        _mm_stream_pd(d3 + j, _mm_mul_pd(a3, xv));
        __m128d s = _mm_add_pd(
            _mm_add_pd(_mm_mul_pd(a0, _mm_loadu_pd(w0 + j)), _mm_mul_pd(a1, _mm_loadu_pd(w1 + j))),
            _mm_add_pd(_mm_mul_pd(a2, _mm_loadu_pd(w2 + j)), _mm_mul_pd(a3, _mm_loadu_pd(w3 + j))));
        _mm_storeu_pd(gx + j, setx ? s : _mm_add_pd(_mm_loadu_pd(gx + j), s));
    }
}
#define AD__HAVE_STREAM 1
#endif

/* The same for one row (the rows left over after blocks of four). */
static inline void ad__krow_vjp(double *restrict dw, double *restrict gx, double dz,
                                const double *restrict x, const double *restrict w, size_t n,
                                int setw, int setx)
{
    for (size_t j = 0; j < n; j++) {
        dw[j] = (setw ? 0.0 : dw[j]) + dz * x[j];
        gx[j] = (setx ? 0.0 : gx[j]) + dz * w[j];
    }
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
 * Each element loaded feeds two products, half the loads of four kdots.
 * Each product keeps two partial sums (even and odd i) added at the end,
 * in every form below and in ad__kdot2x4, so a product's bits do not
 * depend on which of these blocks computed it. */
#if defined(AD__SSE2)
/* out[r*4+c] = a_r . b_c for r < 2, c < 4: eight products, six loads per
 * two elements. */
static inline void ad__kdot2x4(const double *restrict a0, const double *restrict a1,
                               const double *restrict b0, const double *restrict b1,
                               const double *restrict b2, const double *restrict b3, size_t n,
                               double out[8])
{
    __m128d s00 = _mm_setzero_pd(), s01 = s00, s02 = s00, s03 = s00;
    __m128d s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const __m128d x0 = _mm_loadu_pd(a0 + i), x1 = _mm_loadu_pd(a1 + i);
        __m128d y = _mm_loadu_pd(b0 + i);
        s00 = _mm_add_pd(s00, _mm_mul_pd(x0, y)), s10 = _mm_add_pd(s10, _mm_mul_pd(x1, y));
        y = _mm_loadu_pd(b1 + i);
        s01 = _mm_add_pd(s01, _mm_mul_pd(x0, y)), s11 = _mm_add_pd(s11, _mm_mul_pd(x1, y));
        y = _mm_loadu_pd(b2 + i);
        s02 = _mm_add_pd(s02, _mm_mul_pd(x0, y)), s12 = _mm_add_pd(s12, _mm_mul_pd(x1, y));
        y = _mm_loadu_pd(b3 + i);
        s03 = _mm_add_pd(s03, _mm_mul_pd(x0, y)), s13 = _mm_add_pd(s13, _mm_mul_pd(x1, y));
    }
    double r[8][2];
    _mm_storeu_pd(r[0], s00), _mm_storeu_pd(r[1], s01), _mm_storeu_pd(r[2], s02);
    _mm_storeu_pd(r[3], s03), _mm_storeu_pd(r[4], s10), _mm_storeu_pd(r[5], s11);
    _mm_storeu_pd(r[6], s12), _mm_storeu_pd(r[7], s13);
    if (i < n) { /* the last element of an odd n goes into the even sums */
        const double *b[4] = {b0, b1, b2, b3};
        for (int c = 0; c < 4; c++)
            r[c][0] += a0[i] * b[c][i], r[4 + c][0] += a1[i] * b[c][i];
    }
    for (int k = 0; k < 8; k++)
        out[k] = r[k][0] + r[k][1];
}

static inline void ad__kdot2x2(const double *restrict a0, const double *restrict a1,
                               const double *restrict b0, const double *restrict b1, size_t n,
                               double out[4])
{
    __m128d s00 = _mm_setzero_pd(), s01 = s00, s10 = s00, s11 = s00;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const __m128d x0 = _mm_loadu_pd(a0 + i), x1 = _mm_loadu_pd(a1 + i);
        const __m128d y0 = _mm_loadu_pd(b0 + i), y1 = _mm_loadu_pd(b1 + i);
        s00 = _mm_add_pd(s00, _mm_mul_pd(x0, y0)), s01 = _mm_add_pd(s01, _mm_mul_pd(x0, y1));
        s10 = _mm_add_pd(s10, _mm_mul_pd(x1, y0)), s11 = _mm_add_pd(s11, _mm_mul_pd(x1, y1));
    }
    double r[4][2];
    _mm_storeu_pd(r[0], s00), _mm_storeu_pd(r[1], s01), _mm_storeu_pd(r[2], s10),
        _mm_storeu_pd(r[3], s11);
    for (; i < n; i++) /* the last element of an odd n goes into the even sums */
        r[0][0] += a0[i] * b0[i], r[1][0] += a0[i] * b1[i], r[2][0] += a1[i] * b0[i],
            r[3][0] += a1[i] * b1[i];
    for (int k = 0; k < 4; k++)
        out[k] = r[k][0] + r[k][1];
}
#else
static inline void ad__kdot2x2(const double *restrict a0, const double *restrict a1,
                               const double *restrict b0, const double *restrict b1, size_t n,
                               double out[4])
{
    double s00 = 0, s01 = 0, s10 = 0, s11 = 0, t00 = 0, t01 = 0, t10 = 0, t11 = 0;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) { /* two partial sums per product */
        s00 += a0[i] * b0[i], t00 += a0[i + 1] * b0[i + 1];
        s01 += a0[i] * b1[i], t01 += a0[i + 1] * b1[i + 1];
        s10 += a1[i] * b0[i], t10 += a1[i + 1] * b0[i + 1];
        s11 += a1[i] * b1[i], t11 += a1[i + 1] * b1[i + 1];
    }
    for (; i < n; i++)
        s00 += a0[i] * b0[i], s01 += a0[i] * b1[i], s10 += a1[i] * b0[i], s11 += a1[i] * b1[i];
    out[0] = s00 + t00, out[1] = s01 + t01, out[2] = s10 + t10, out[3] = s11 + t11;
}
#endif

/* y[i] += a0 x0[i] + a1 x1[i] + a2 x2[i] + a3 x3[i]. The restrict
 * parameters are what lets compilers vectorize it. */
static inline void ad__kaxpy4(double *restrict y, double a0, double a1, double a2, double a3,
                              const double *restrict x0, const double *restrict x1,
                              const double *restrict x2, const double *restrict x3, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += (a0 * x0[i] + a1 * x1[i]) + (a2 * x2[i] + a3 * x3[i]);
}

/* y[i] = a0 x0[i] + a1 x1[i] + a2 x2[i] + a3 x3[i] (y is not read). */
static inline void ad__kset4(double *restrict y, double a0, double a1, double a2, double a3,
                             const double *restrict x0, const double *restrict x1,
                             const double *restrict x2, const double *restrict x3, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = (a0 * x0[i] + a1 * x1[i]) + (a2 * x2[i] + a3 * x3[i]);
}

/* y[0..n) += sum_r c[r*cs] X[r*xs .. r*xs+n), r < rows: a combination of
 * rows of X (coefficients read with stride cs), four rows per pass over y
 * so y is read and written once per four rows instead of once per row.
 * assign: y holds no value yet, and the first pass writes it instead of
 * adding to it (rows >= 1). */
static inline void ad__kcombine_to(double *y, const double *c, size_t cs, const double *X,
                                   size_t xs, size_t rows, size_t n, int assign)
{
    size_t r = 0;
    if (assign && rows >= 4) {
        ad__kset4(y, c[0], c[cs], c[2 * cs], c[3 * cs], X, X + xs, X + 2 * xs, X + 3 * xs, n);
        r = 4;
    } else if (assign) {
        ad__kaxpy_to(y, c[0], X, n, 1);
        r = 1;
    }
    for (; r + 4 <= rows; r += 4) {
        const double *x0 = X + r * xs;
        ad__kaxpy4(y, c[r * cs], c[(r + 1) * cs], c[(r + 2) * cs], c[(r + 3) * cs], x0, x0 + xs,
                   x0 + 2 * xs, x0 + 3 * xs, n);
    }
    for (; r < rows; r++)
        ad__kaxpy(y, c[r * cs], X + r * xs, n);
}

#endif
