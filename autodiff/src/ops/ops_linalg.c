/* ops_linalg.c -- matvec, matvec_t, matmul, matmul_nt, affine, outer, transpose.
 * matvec's backward does both of its products in one pass over W and dW, so
 * W is read once for dx and dW. Each vjp_to writes a fresh gradient (see
 * ad__op) instead of adding to it. */
#include "internal.h"
#include "dense.h"
#include "kernels.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* Elements of dW from which a written dW goes out with non-temporal
 * stores; by default never. Streaming saves the backward pass a read of
 * every line of dW, but whoever reads dW next (an optimizer step) then
 * finds it in memory, not in cache. On a 32 MiB-L3 machine a replay +
 * sweep + SGD step once gained 5-20 % from 16 MiB of dW on (stop 9); on
 * the same kind of VM in stop 12 the non-temporal stores ran at about
 * 1 GB/s: W4's backward at n = 4096 took 150-300 ms with them and 17 ms
 * without (0.54x hand-written C), in either kernel variant, and in the
 * code of stop 11 too. A gain of a few percent where it works does not
 * pay for a loss of ten times where it does not, so they are off; define
 * AD__STREAM_MIN (elements) to turn them on for a machine where they pay.
 * A training step with the update inside the sweep writes no dW at all. */
#ifndef AD__STREAM_MIN
#define AD__STREAM_MIN ((size_t)-1)
#endif

#ifdef AD_HAVE_CBLAS
/* Optional backend (cmake -DAD_BLAS=ON): the same products through CBLAS.
 * Used when every dimension fits BLAS's int; the loops below otherwise. */
#include <cblas.h>
static int fits(size_t a, size_t b, size_t c) { return a <= INT_MAX && b <= INT_MAX && c <= INT_MAX; }
#define BLAS_OK(a, b, c) fits((a), (b), (c))
#else
#define BLAS_OK(a, b, c) 0
#endif

static const char *S(ad_shape s, char *buf) { return ad__shape_str(s, buf, 48); }

/* ---- matvec: y = W x;  W (k x n), x (n), y (k) ----
 * dW += dy x^T;  dx += W^T dy */
static int matvec_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 2)
        return ad__shape_fail(msg, cap, "W is %s, not a matrix", S(in[0], a));
    if (in[1].ndim != 1)
        return ad__shape_fail(msg, cap, "x is %s, not a vector", S(in[1], b));
    if (in[1].rows != in[0].cols)
        return ad__shape_fail(msg, cap, "W is %s but x has length %u", S(in[0], a),
                              (unsigned)in[1].rows);
    *out = ad_shape_vec(in[0].rows);
    return AD_OK;
}
/* y = W x. Shared by matvec and affine. K: the dense kernels (dense.h). */
static void mv_fwd(const ad__kernels *K, const double *W, const double *x, double *y, size_t rows,
                   size_t n)
{
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(rows, n, 1)) {
        cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)n, 1.0, W, (int)n, x, 1, 0.0, y, 1);
        return;
    }
#endif
    K->mv(W, x, y, rows, n); /* W: (rows, n), x: (n) */
}
static void matvec_fwd(const ad_call *k)
{
    mv_fwd(ad__kern(k->ud), k->in[0].val, k->in[1].val, k->out.val, k->in[0].shape.rows,
           k->in[0].shape.cols);
}
/* dW (=|+=) dy x^T and dx (=|+=) W^T dy; gW or gx may be NULL (no gradient
 * wanted). fW, fx: write instead of add. Shared by matvec and affine. */
static void mv_vjp(const ad__kernels *K, const double *W, const double *x, const double *gy,
                   double *gW, double *gx, size_t rows, size_t n, int fW, int fx)
{
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(rows, n, 1)) {
        if (gW && fW) /* dger has no beta */
            memset(gW, 0, rows * n * sizeof *gW);
        if (gW) /* dW += dy x^T */
            cblas_dger(CblasRowMajor, (int)rows, (int)n, 1.0, gy, 1, x, 1, gW, (int)n);
        if (gx) /* dx += W^T dy; beta 0 does not read dx */
            cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)n, 1.0, W, (int)n, gy, 1,
                        fx ? 0.0 : 1.0, gx, 1);
        return;
    }
#endif
    if (gW && gx && ad__overlap(gW, rows * n, gx, n)) {
        /* dW and dx share memory (ad_param views of one block): the fused
         * kernels below read and write both through restrict pointers,
         * so take the two products one after the other. Both only read
         * values and dy, so each element still gets its whole sum. */
        for (size_t i = 0; i < rows; i++)
            ad__kaxpy_to(gW + i * n, gy[i], x, n, fW);
        for (size_t i = 0; i < rows; i += 4)
            ad__kcombine_to(gx, gy + i, 1, W + i * n, n, rows - i < 4 ? rows - i : 4, n,
                            i == 0 && fx);
    } else if (gW && gx) {
        /* Both in one pass over W and dW, four rows at a time. With a fresh
         * dW (AD_SWEEP_ASSIGN, or a tape-owned W) dW is written, never
         * read: W4 at n = 1024 went from 1.16x to 1.0x of hand-written C. */
#ifdef AD__HAVE_STREAM
        const int stream = K->rows4_vjp_stream && fW && rows * n >= AD__STREAM_MIN &&
                           n % 2 == 0 && ((uintptr_t)gW & 15) == 0;
#endif
        size_t i = 0;
        for (; i + 4 <= rows; i += 4) {
            double *d = gW + i * n;
            const double *w = W + i * n;
#ifdef AD__HAVE_STREAM
            if (stream)
                K->rows4_vjp_stream(d, d + n, d + 2 * n, d + 3 * n, gx, gy + i, x, w, w + n,
                                    w + 2 * n, w + 3 * n, n, i == 0 && fx);
            else
#endif
                K->rows4_vjp(d, d + n, d + 2 * n, d + 3 * n, gx, gy + i, x, w, w + n, w + 2 * n,
                             w + 3 * n, n, fW, i == 0 && fx);
        }
#ifdef AD__HAVE_STREAM
        if (stream)
            _mm_sfence(); /* the streamed rows are visible before anyone reads dW */
#endif
        for (; i < rows; i++)
            ad__krow_vjp(gW + i * n, gx, gy[i], x, W + i * n, n, fW, i == 0 && fx);
    } else if (gW) { /* dW (rows x n) = dy (rows x 1) x^T (1 x n) */
        K->combine(gW, gy, 1, 1, x, rows, 1, n, fW);
    } else if (gx) { /* dx (1 x n) = dy^T (1 x rows) W (rows x n), four rows per pass */
        K->combine(gx, gy, 0, 1, W, 1, rows, n, fx);
    }
}
static void matvec_vjp_to(const ad_call *k, unsigned fresh);

/* Columns of the strips in which a fused update gets four rows of dW. */
#define AD__UPD_STRIP ((size_t)512)

/* mv_vjp with dW given to a fused update u instead of written: with dx,
 * four rows of dW at a time into u's scratch, in column strips that stay
 * in L1, by the kernel mv_vjp uses (so dx and every row of dW are the same
 * numbers), their part of dx taken from the old rows of W first, then
 * u->fn updates those rows of W; without dx, row by row, or through
 * u->scaled with no row stored. */
static void mv_vjp_update(const ad__kernels *K, double *W, const double *x, const double *gy,
                          double *gx, size_t rows, size_t n, int fx, const ad__upd *u)
{
    double *d = u->scratch;
    size_t i = 0;
    if (u->scaled && !gx) {
        /* row i of dW is gy[i] x: no row is stored at all (one sample's
         * first layer: nothing else reads W in this backward) */
        for (; i < rows; i++)
            u->scaled(u->ud, i * n, W + i * n, gy[i], x, n);
        return;
    }
    if (!gx) /* a row at a time: the scratch row stays in L1 */
        for (; i < rows; i++) {
            ad__kaxpy_to(d, gy[i], x, n, 1);
            u->fn(u->ud, i * n, W + i * n, d, n);
        }
    for (; i + 4 <= rows; i += 4) {
        double *w = W + i * n;
        if (gx && !ad__overlap(gx, n, w, 4 * n)) {
            /* four rows, a column strip at a time: the strip of dW
             * (4 x AD__UPD_STRIP) stays in L1 between its two passes */
            for (size_t j = 0; j < n; j += AD__UPD_STRIP) {
                const size_t m = n - j < AD__UPD_STRIP ? n - j : AD__UPD_STRIP;
                double *wj = w + j;
                K->rows4_vjp(d, d + m, d + 2 * m, d + 3 * m, gx + j, gy + i, x + j, wj, wj + n,
                             wj + 2 * n, wj + 3 * n, m, 1, i == 0 && fx);
                if (m == n) /* one strip: the four rows are contiguous */
                    u->fn(u->ud, i * n, w, d, 4 * n);
                else
                    for (size_t r = 0; r < 4; r++)
                        u->fn(u->ud, (i + r) * n + j, wj + r * n, d + r * m, m);
            }
            continue;
        } else {
            for (size_t r = 0; r < 4; r++)
                ad__kaxpy_to(d + r * n, gy[i + r], x, n, 1);
            if (gx)
                ad__kcombine_to(gx, gy + i, 1, w, n, 4, n, i == 0 && fx);
        }
        u->fn(u->ud, i * n, w, d, 4 * n);
    }
    for (; i < rows; i++) {
        double *w = W + i * n;
        if (gx)
            for (size_t j = 0; j < n; j++)
                gx[j] = (i == 0 && fx ? 0.0 : gx[j]) + gy[i] * w[j];
        ad__kaxpy_to(d, gy[i], x, n, 1);
        u->fn(u->ud, i * n, w, d, n);
    }
}

/* The batch form's dW = dY^T X, AD__UPD_BATCH_ROWS rows at a time into the
 * scratch, each block handed to u (dX, which reads W, is done before).
 * The combine kernels reuse a panel of X across every row they are given,
 * so blocks of few rows would read X once per block. */
static void nt_vjp_update(const ad__kernels *K, const double *X, double *W, const double *gY,
                          size_t batch, size_t n, size_t kr, const ad__upd *u)
{
    for (size_t j = 0; j < kr; j += AD__UPD_BATCH_ROWS) {
        const size_t nr = kr - j < AD__UPD_BATCH_ROWS ? kr - j : AD__UPD_BATCH_ROWS;
        K->combine(u->scratch, gY + j, 1, kr, X, nr, batch, n, 1);
        u->fn(u->ud, j * n, W + j * n, u->scratch, nr * n);
    }
}

static void matvec_vjp_update(const ad_call *k, unsigned fresh, const ad__upd *const *upd)
{
    if (!upd[0]) {
        matvec_vjp_to(k, fresh);
        return;
    }
    mv_vjp_update(ad__kern(k->ud), k->in[0].val, k->in[1].val, k->out.grad, k->in[1].grad,
                  k->in[0].shape.rows,
                  k->in[0].shape.cols, AD__FRESH(fresh, 1), upd[0]);
}

static void matvec_vjp_to(const ad_call *k, unsigned fresh)
{
    mv_vjp(ad__kern(k->ud), k->in[0].val, k->in[1].val, k->out.grad, k->in[0].grad,
           k->in[1].grad, k->in[0].shape.rows, k->in[0].shape.cols, AD__FRESH(fresh, 0),
           AD__FRESH(fresh, 1));
}
AD__VJP_ADDING(matvec)
/* dW = g x^T, dx = W^T g */
static void matvec_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_outer(t, g, in[1]);
    dx[1] = ad_matvec_t(t, in[0], g);
}
const ad__op ad__op_matvec = {{"matvec", 2, matvec_shape, matvec_fwd, matvec_vjp, NULL, AD__NO_MODE_RULES},
                              false, false, matvec_vjp_to, NULL, AD__BILINEAR, NULL, matvec_rvjp};

/* ---- matvec_t: y = W^T x;  W (k x n), x (k), y (n) ----
 * dW += x dy^T;  dx += W dy */
static int matvec_t_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                          size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 2)
        return ad__shape_fail(msg, cap, "W is %s, not a matrix", S(in[0], a));
    if (in[1].ndim != 1)
        return ad__shape_fail(msg, cap, "x is %s, not a vector", S(in[1], b));
    if (in[1].rows != in[0].rows)
        return ad__shape_fail(msg, cap, "W is %s (W^T is %ux%u) but x has length %u",
                              S(in[0], a), (unsigned)in[0].cols, (unsigned)in[0].rows,
                              (unsigned)in[1].rows);
    *out = ad_shape_vec(in[0].cols);
    return AD_OK;
}
static void matvec_t_fwd(const ad_call *k)
{
    const double *W = k->in[0].val, *x = k->in[1].val;
    double *y = k->out.val;
    const size_t rows = k->in[0].shape.rows, n = k->in[0].shape.cols;
    ad__kcombine_to(y, x, 1, W, n, rows, n, 1); /* W: (rows, n), x: (rows), y: (n) */
}
static void matvec_t_vjp_to(const ad_call *k, unsigned fresh)
{
    const double *W = k->in[0].val, *x = k->in[1].val, *gy = k->out.grad;
    double *gW = k->in[0].grad, *gx = k->in[1].grad;
    const size_t rows = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const int fW = AD__FRESH(fresh, 0), fx = AD__FRESH(fresh, 1);
    for (size_t i = 0; i < rows; i++) {
        if (gW)
            ad__kaxpy_to(gW + i * n, x[i], gy, n, fW);
        if (gx)
            gx[i] = (fx ? 0.0 : gx[i]) + ad__kdot(W + i * n, gy, n);
    }
}
AD__VJP_ADDING(matvec_t)
/* y = W^T x: dW = x g^T, dx = W g */
static void matvec_t_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                          ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_outer(t, in[1], g);
    dx[1] = ad_matvec(t, in[0], g);
}
const ad__op ad__op_matvec_t = {{"matvec_t", 2, matvec_t_shape, matvec_t_fwd, matvec_t_vjp, NULL, AD__NO_MODE_RULES},
                                false, false, matvec_t_vjp_to, NULL, AD__BILINEAR, NULL, matvec_t_rvjp};

/* ---- matmul: C = A B;  A (m x p), B (p x n), C (m x n) ----
 * dA += dC B^T;  dB += A^T dC */
static int matmul_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 2 || in[1].ndim != 2)
        return ad__shape_fail(msg, cap, "A is %s and B is %s; both must be matrices",
                              S(in[0], a), S(in[1], b));
    if (in[0].cols != in[1].rows)
        return ad__shape_fail(msg, cap, "A is %s but B is %s (A's columns must equal B's rows)",
                              S(in[0], a), S(in[1], b));
    *out = ad_shape_mat(in[0].rows, in[1].cols);
    return AD_OK;
}
static void matmul_fwd(const ad_call *k)
{
    const double *A = k->in[0].val, *B = k->in[1].val;
    double *C = k->out.val;
    const size_t m = k->in[0].shape.rows, p = k->in[0].shape.cols, n = k->in[1].shape.cols;
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(m, p, n)) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)p, 1.0, A,
                    (int)p, B, (int)n, 0.0, C, (int)n);
        return;
    }
#endif
    for (size_t i = 0; i < m; i++) /* C[i,:] = sum_q A[i,q] B[q,:] */
        ad__kcombine_to(C + i * n, A + i * p, 1, B, n, p, n, 1);
}
static void matmul_vjp_to(const ad_call *k, unsigned fresh)
{
    const int fA = AD__FRESH(fresh, 0), fB = AD__FRESH(fresh, 1);
    const double *A = k->in[0].val, *B = k->in[1].val, *gC = k->out.grad;
    double *gA = k->in[0].grad, *gB = k->in[1].grad;
    const size_t m = k->in[0].shape.rows, p = k->in[0].shape.cols, n = k->in[1].shape.cols;
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(m, p, n)) {
        if (gA) /* dA (m x p) += dC (m x n) B^T; beta 0 does not read dA */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)p, (int)n, 1.0, gC,
                        (int)n, B, (int)n, fA ? 0.0 : 1.0, gA, (int)p);
        if (gB) /* dB (p x n) += A^T dC */
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)p, (int)n, (int)m, 1.0, A,
                        (int)p, gC, (int)n, fB ? 0.0 : 1.0, gB, (int)n);
        return;
    }
#endif
    if (gA) /* dA[i,q] += dC[i,:] . B[q,:] */
        for (size_t i = 0; i < m; i++)
            for (size_t q = 0; q < p; q++)
                gA[i * p + q] = (fA ? 0.0 : gA[i * p + q]) + ad__kdot(gC + i * n, B + q * n, n);
    if (gB) /* dB[q,:] += sum_i A[i,q] dC[i,:] */
        for (size_t q = 0; q < p; q++)
            ad__kcombine_to(gB + q * n, A + q, p, gC, n, m, n, fB);
}
AD__VJP_ADDING(matmul)
/* dA = G B^T, dB = A^T G */
static void matmul_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_matmul_nt(t, g, in[1]);
    dx[1] = ad_matmul(t, ad_transpose(t, in[0]), g);
}
const ad__op ad__op_matmul = {{"matmul", 2, matmul_shape, matmul_fwd, matmul_vjp, NULL, AD__NO_MODE_RULES},
                              false, false, matmul_vjp_to, NULL, AD__BILINEAR, NULL, matmul_rvjp};

/* ---- matmul_nt: C = A B^T;  A (m x p), B (n x p), C (m x n) ----
 * dA += dC B;  dB += dC^T A */
static int matmul_nt_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 2 || in[1].ndim != 2)
        return ad__shape_fail(msg, cap, "A is %s and B is %s; both must be matrices",
                              S(in[0], a), S(in[1], b));
    if (in[0].cols != in[1].cols)
        return ad__shape_fail(msg, cap, "A is %s but B is %s (A B^T needs equal column counts)",
                              S(in[0], a), S(in[1], b));
    *out = ad_shape_mat(in[0].rows, in[1].rows);
    return AD_OK;
}
/* C = A B^T;  A (m x p), B (n x p). Shared by matmul_nt and affine. */
static void nt_fwd(const ad__kernels *K, const double *A, const double *B, double *C, size_t m,
                   size_t p, size_t n)
{
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(m, p, n)) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)p, 1.0, A,
                    (int)p, B, (int)p, 0.0, C, (int)n);
        return;
    }
#endif
    K->nt(A, B, C, m, p, n); /* C[i,j] = A[i,:] . B[j,:] */
}
static void matmul_nt_fwd(const ad_call *k)
{
    nt_fwd(ad__kern(k->ud), k->in[0].val, k->in[1].val, k->out.val, k->in[0].shape.rows,
           k->in[0].shape.cols, k->in[1].shape.rows);
}
/* dA (=|+=) dC B and dB (=|+=) dC^T A; gA or gB may be NULL. */
static void nt_vjp(const ad__kernels *K, const double *A, const double *B, const double *gC,
                   double *gA, double *gB, size_t m, size_t p, size_t n, int fA, int fB)
{
#ifdef AD_HAVE_CBLAS
    if (BLAS_OK(m, p, n)) {
        if (gA) /* dA (m x p) += dC (m x n) B; beta 0 does not read dA */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)p, (int)n, 1.0, gC,
                        (int)n, B, (int)p, fA ? 0.0 : 1.0, gA, (int)p);
        if (gB) /* dB (n x p) += dC^T A */
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)p, (int)m, 1.0, gC,
                        (int)n, A, (int)p, fB ? 0.0 : 1.0, gB, (int)p);
        return;
    }
#endif
    if (gA) /* dA[i,:] += sum_j dC[i,j] B[j,:] */
        K->combine(gA, gC, n, 1, B, m, n, p, fA);
    if (gB) /* dB[j,:] += sum_i dC[i,j] A[i,:] */
        K->combine(gB, gC, 1, n, A, n, m, p, fB);
}
static void matmul_nt_vjp_to(const ad_call *k, unsigned fresh)
{
    nt_vjp(ad__kern(k->ud), k->in[0].val, k->in[1].val, k->out.grad, k->in[0].grad,
           k->in[1].grad, k->in[0].shape.rows, k->in[0].shape.cols, k->in[1].shape.rows,
           AD__FRESH(fresh, 0), AD__FRESH(fresh, 1));
}
AD__VJP_ADDING(matmul_nt)
/* C = A B^T: dA = G B, dB = G^T A */
static void matmul_nt_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                           ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_matmul(t, g, in[1]);
    dx[1] = ad_matmul(t, ad_transpose(t, g), in[0]);
}
const ad__op ad__op_matmul_nt = {{"matmul_nt", 2, matmul_nt_shape, matmul_nt_fwd, matmul_nt_vjp,
                                  NULL, AD__NO_MODE_RULES}, false, false, matmul_nt_vjp_to, NULL, AD__BILINEAR, NULL, matmul_nt_rvjp};

/* ---- affine: y = W x + b, or Y = X W^T + b on every row ----
 * W (k x n), b (k); x (n) -> y (k); X (B x n), one sample per row -> Y (B x k).
 * A dense layer in one node instead of two (matvec or matmul_nt, then add):
 * one node less to record, replay and sweep, and no adjoint for W x.
 * Its value equals the two-op form's bit for bit (the bias is added to the
 * finished product). dW, dx as matvec (matmul_nt); db += dy, summed over
 * rows. */
static int affine_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 2)
        return ad__shape_fail(msg, cap, "W is %s, not a matrix", S(in[0], a));
    if (in[1].ndim == 0)
        return ad__shape_fail(msg, cap, "x is a scalar, not a vector or a matrix of samples");
    if (in[1].ndim == 1 && in[1].rows != in[0].cols)
        return ad__shape_fail(msg, cap, "W is %s but x has length %u", S(in[0], a),
                              (unsigned)in[1].rows);
    if (in[1].ndim == 2 && in[1].cols != in[0].cols)
        return ad__shape_fail(msg, cap, "W is %s but X is %s (X W^T needs X to have %u columns)",
                              S(in[0], a), S(in[1], b), (unsigned)in[0].cols);
    if (in[2].ndim != 1 || in[2].rows != in[0].rows)
        return ad__shape_fail(msg, cap, "W is %s but b is %s, not a vector of length %u",
                              S(in[0], a), S(in[2], b), (unsigned)in[0].rows);
    *out = in[1].ndim == 1 ? ad_shape_vec(in[0].rows) : ad_shape_mat(in[1].rows, in[0].rows);
    return AD_OK;
}
static void affine_fwd(const ad_call *k)
{
    const double *W = k->in[0].val, *x = k->in[1].val, *b = k->in[2].val;
    double *y = k->out.val;
    const size_t kr = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const size_t batch = k->in[1].shape.ndim == 2 ? k->in[1].shape.rows : 1;
    if (k->in[1].shape.ndim == 1)
        mv_fwd(ad__kern(k->ud), W, x, y, kr, n);
    else
        nt_fwd(ad__kern(k->ud), x, W, y, batch, n, kr);
    for (size_t r = 0; r < batch; r++)
        for (size_t i = 0; i < kr; i++)
            y[r * kr + i] += b[i];
}
static void affine_vjp_to(const ad_call *k, unsigned fresh)
{
    const double *W = k->in[0].val, *x = k->in[1].val, *gy = k->out.grad;
    double *gW = k->in[0].grad, *gx = k->in[1].grad, *gb = k->in[2].grad;
    const size_t kr = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const int fW = AD__FRESH(fresh, 0), fx = AD__FRESH(fresh, 1), fb = AD__FRESH(fresh, 2);
    const size_t batch = k->in[1].shape.ndim == 2 ? k->in[1].shape.rows : 1;
    if (gb) /* db = dy, or dY summed over its rows */
        for (size_t r = 0; r < batch; r++)
            ad__kaxpy_to(gb, 1.0, gy + r * kr, kr, r == 0 && fb);
    if (k->in[1].shape.ndim == 1)
        mv_vjp(ad__kern(k->ud), W, x, gy, gW, gx, kr, n, fW, fx);
    else
        nt_vjp(ad__kern(k->ud), x, W, gy, gx, gW, batch, n, kr, fx, fW);
}
AD__VJP_ADDING(affine)
/* affine_vjp_to with W (upd[0]) and/or b (upd[2]) updated in the sweep:
 * db first (it reads no value), then dx from the old W, then W's rows. */
static void affine_vjp_update(const ad_call *k, unsigned fresh, const ad__upd *const *upd)
{
    double *W = k->in[0].val, *b = k->in[2].val;
    const double *x = k->in[1].val, *gy = k->out.grad;
    double *gW = k->in[0].grad, *gx = k->in[1].grad, *gb = k->in[2].grad;
    const size_t kr = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const int fW = AD__FRESH(fresh, 0), fx = AD__FRESH(fresh, 1), fb = AD__FRESH(fresh, 2);
    const size_t batch = k->in[1].shape.ndim == 2 ? k->in[1].shape.rows : 1;
    if (upd[2]) { /* db = dy summed over the rows, then b's update */
        double *d = upd[2]->scratch;
        for (size_t r = 0; r < batch; r++)
            ad__kaxpy_to(d, 1.0, gy + r * kr, kr, r == 0);
        upd[2]->fn(upd[2]->ud, 0, b, d, kr);
    } else if (gb) {
        for (size_t r = 0; r < batch; r++)
            ad__kaxpy_to(gb, 1.0, gy + r * kr, kr, r == 0 && fb);
    }
    if (k->in[1].shape.ndim == 1) {
        if (upd[0])
            mv_vjp_update(ad__kern(k->ud), W, x, gy, gx, kr, n, fx, upd[0]);
        else
            mv_vjp(ad__kern(k->ud), W, x, gy, gW, gx, kr, n, fW, fx);
    } else if (upd[0]) {
        nt_vjp(ad__kern(k->ud), x, W, gy, gx, NULL, batch, n, kr, fx, 0); /* dX = dY W, old W */
        nt_vjp_update(ad__kern(k->ud), x, W, gy, batch, n, kr, upd[0]);
    } else {
        nt_vjp(ad__kern(k->ud), x, W, gy, gx, gW, batch, n, kr, fx, fW);
    }
}
/* vector: dW = g x^T, dx = W^T g, db = g; batch: dW = G^T X, dX = G W,
 * db = G^T 1 (the column sums of G) */
static void affine_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    (void)out, (void)c;
    const ad_shape xs = ad_node_shape(t, in[1]);
    if (xs.ndim == 1) {
        dx[0] = ad_outer(t, g, in[1]);
        dx[1] = ad_matvec_t(t, in[0], g);
        dx[2] = g;
    } else {
        dx[0] = ad_matmul(t, ad_transpose(t, g), in[1]);
        dx[1] = ad_matmul(t, g, in[0]);
        dx[2] = ad_matvec_t(t, g, ad__fill(t, ad_shape_vec(xs.rows), 1.0));
    }
}
/* ty = tW x + W tx + tb (TY = TX W^T + X TW^T + tb on every row); a NULL
 * tangent is a zero one. */
static void affine_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    const double *W = k->in[0].val, *x = k->in[1].val;
    const size_t kr = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const int vec = k->in[1].shape.ndim == 1;
    const size_t batch = vec ? 1 : k->in[1].shape.rows, m = batch * kr;
    memset(tout, 0, m * sizeof *tout);
    for (int term = 0; term < 2; term++) {
        const double *tA = tin[term];
        if (!tA)
            continue;
        if (vec)
            mv_fwd(ad__kern(k->ud), term == 0 ? tA : W, term == 0 ? x : tA, scratch, kr, n);
        else
            nt_fwd(ad__kern(k->ud), term == 0 ? x : tA, term == 0 ? tA : W, scratch, batch, n, kr);
        for (size_t i = 0; i < m; i++)
            tout[i] += scratch[i];
    }
    if (tin[2])
        for (size_t r = 0; r < batch; r++)
            for (size_t i = 0; i < kr; i++)
                tout[r * kr + i] += tin[2][i];
}
/* The vjp's dW = dy x^T and dx = W^T dy are bilinear in (W, x): their
 * derivative along the tangents is the same products at (tW, tx); db = dy
 * is linear and adds nothing. */
static void affine_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    const size_t kr = k->in[0].shape.rows, n = k->in[0].shape.cols;
    if (k->in[1].shape.ndim == 1)
        mv_vjp(ad__kern(k->ud), tin[0], tin[1], k->out.grad, tg[0], tg[1], kr, n, 0, 0);
    else
        nt_vjp(ad__kern(k->ud), tin[1], tin[0], k->out.grad, tg[1], tg[0], k->in[1].shape.rows, n,
               kr, 0, 0);
}
const ad__op ad__op_affine = {{"affine", 3, affine_shape, affine_fwd, affine_vjp, NULL, AD__NO_MODE_RULES},
                              false, false, affine_vjp_to, affine_jvp, AD__SO_FN, affine_so, affine_rvjp};

ad__vjp_update_fn ad__vjp_update(unsigned op)
{
    return op == AD_OP_MATVEC ? matvec_vjp_update : op == AD_OP_AFFINE ? affine_vjp_update : NULL;
}

/* ---- outer: C = u v^T;  u (m), v (n), C (m x n) ----
 * du += dC v;  dv += dC^T u */
static int outer_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim != 1 || in[1].ndim != 1)
        return ad__shape_fail(msg, cap, "u is %s and v is %s; both must be vectors",
                              S(in[0], a), S(in[1], b));
    *out = ad_shape_mat(in[0].rows, in[1].rows);
    return AD_OK;
}
static void outer_fwd(const ad_call *k)
{
    const double *u = k->in[0].val, *v = k->in[1].val;
    double *C = k->out.val;
    const size_t m = k->in[0].shape.rows, n = k->in[1].shape.rows;
    for (size_t i = 0; i < m; i++) /* C: (m, n) */
        for (size_t j = 0; j < n; j++)
            C[i * n + j] = u[i] * v[j];
}
static void outer_vjp_to(const ad_call *k, unsigned fresh)
{
    const double *u = k->in[0].val, *v = k->in[1].val, *gC = k->out.grad;
    double *gu = k->in[0].grad, *gv = k->in[1].grad;
    const size_t m = k->in[0].shape.rows, n = k->in[1].shape.rows;
    const int fu = AD__FRESH(fresh, 0), fv = AD__FRESH(fresh, 1);
    for (size_t i = 0; i < m; i++) {
        if (gu)
            gu[i] = (fu ? 0.0 : gu[i]) + ad__kdot(gC + i * n, v, n);
        if (gv)
            ad__kaxpy_to(gv, u[i], gC + i * n, n, i == 0 && fv);
    }
}
AD__VJP_ADDING(outer)
/* du = G v, dv = G^T u */
static void outer_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                       ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_matvec(t, g, in[1]);
    dx[1] = ad_matvec_t(t, g, in[0]);
}
const ad__op ad__op_outer = {{"outer", 2, outer_shape, outer_fwd, outer_vjp, NULL, AD__NO_MODE_RULES},
                             false, false, outer_vjp_to, NULL, AD__BILINEAR, NULL, outer_rvjp};

/* ---- transpose: B = A^T;  A (m x n), B (n x m);  dA += dB^T ---- */
static int transpose_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)nin, (void)c;
    char a[48];
    if (in[0].ndim != 2)
        return ad__shape_fail(msg, cap, "A is %s, not a matrix", S(in[0], a));
    *out = ad_shape_mat(in[0].cols, in[0].rows);
    return AD_OK;
}
static void transpose_fwd(const ad_call *k)
{
    const double *A = k->in[0].val;
    double *B = k->out.val;
    const size_t m = k->in[0].shape.rows, n = k->in[0].shape.cols;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            B[j * m + i] = A[i * n + j];
}
static void transpose_vjp_to(const ad_call *k, unsigned fresh)
{
    double *gA = k->in[0].grad;
    const double *gB = k->out.grad;
    const size_t m = k->in[0].shape.rows, n = k->in[0].shape.cols;
    const int fA = AD__FRESH(fresh, 0);
    if (gA)
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++)
                gA[i * n + j] = (fA ? 0.0 : gA[i * n + j]) + gB[j * m + i];
}
AD__VJP_ADDING(transpose)
static void transpose_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                           ad_node *dx)
{
    (void)in, (void)out, (void)c;
    dx[0] = ad_transpose(t, g);
}
const ad__op ad__op_transpose = {{"transpose", 1, transpose_shape, transpose_fwd, transpose_vjp,
                                  NULL, AD__NO_MODE_RULES}, false, false, transpose_vjp_to, NULL, AD__LINEAR, NULL, transpose_rvjp};
