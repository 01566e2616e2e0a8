/* ops_solve.c -- linear solves, log-determinant and trace of a square
 * matrix A (n x n):
 *
 *   solve(A, B)     X = A^{-1} B, LU with partial pivoting
 *   solve_spd(A, B) X = S^{-1} B, Cholesky of S = (A + A^T) / 2
 *   logdet(A)       log|det A|, LU
 *   trace(A)        sum_i A_ii
 *
 * B is a vector (n) or a matrix (n x m) of right-hand sides, both stored
 * row-major as n x m (m = 1 for a vector). Forward factors A once and
 * keeps the factors in the node's own storage (ad__opstate.aux, right
 * after the value), so the vjp, the jvp and the second-order term solve
 * with them again instead of factoring (never an explicit inverse -- but
 * logdet's gradient is the inverse, A^{-T}, made from the factors on the
 * first call that needs it after a forward).
 *
 * A singular matrix -- a pivot that is 0, or at most n eps max|A_ij| in
 * magnitude, the size of the rounding noise of the elimination -- or, for
 * solve_spd, a pivot (a diagonal element of the Schur complement) at most
 * that is "singular": forward writes NaN into the value, keeps the pivot
 * in the node, and the op's check (ad__opstate.check) reports it, so the
 * error names the op and the pivot at recording (sticky) and at replay
 * (returned). The vjp, jvp and second-order term of such a node give NaN.
 * A matrix with a NaN or infinite entry is not checked: every value is
 * NaN then, as in any op. docs/math.md, "Linear algebra", has the rules. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *S(ad_shape s, char *buf) { return ad__shape_str(s, buf, 48); }

/* ---- per-node storage ----
 * aux[INFO]  0; the number (from 1) of the pivot that failed; or -1: A has
 *            a NaN or infinite entry (no factors; NaN everywhere, no error)
 * aux[PIV]   that pivot's value
 * aux[LIM]   the threshold it was compared with
 * aux[INV]   logdet: 1 when A^{-T} below is that of the current factors
 * then the op's arrays (each op lists its own). */
enum { INFO, PIV, LIM, INV, HDR };

static size_t nrows(const ad_call *k) { return k->in[0].shape.rows; }
/* Right-hand sides per row of B (and of X): 1 for a vector. */
static size_t ncols(ad_shape b) { return b.ndim == 2 ? b.cols : 1; }

static void fill_nan(double *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

/* The threshold below which a pivot counts as 0: n eps max|A_ij|; -1
 * when A has a NaN or infinite entry. sym: of (A + A^T) / 2. */
static double pivot_limit(const double *A, size_t n, int sym)
{
    double amax = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            const double a = fabs(sym ? 0.5 * (A[i * n + j] + A[j * n + i]) : A[i * n + j]);
            if (!(a <= DBL_MAX))
                return -1.0;
            amax = a > amax ? a : amax;
        }
    return (double)n * DBL_EPSILON * amax;
}

/* Records a failed pivot k (from 0) of value d against limit lim. */
static void fail_at(double *aux, size_t k, double d, double lim)
{
    aux[INFO] = (double)(k + 1);
    aux[PIV] = d;
    aux[LIM] = lim;
}

/* ---- LU with partial pivoting: P A = L U ----
 * f (n x n) holds L below the diagonal (unit diagonal implied) and U on
 * and above it; perm[i] is the row of A that is row i of P A. Returns 0,
 * or nonzero with aux[INFO] set: the pivot that failed, or -1 for a
 * non-finite A. */
static int lu_factor(const double *A, size_t n, double *f, double *perm, double *aux)
{
    const double lim = pivot_limit(A, n, 0);
    aux[INFO] = lim < 0 ? -1.0 : 0.0;
    if (lim < 0)
        return 1;
    memcpy(f, A, n * n * sizeof *f);
    for (size_t i = 0; i < n; i++)
        perm[i] = (double)i;
    for (size_t k = 0; k < n; k++) {
        size_t p = k;
        double best = fabs(f[k * n + k]);
        for (size_t i = k + 1; i < n; i++)
            if (fabs(f[i * n + k]) > best) {
                best = fabs(f[i * n + k]);
                p = i;
            }
        if (p != k) {
            for (size_t j = 0; j < n; j++) {
                const double s = f[k * n + j];
                f[k * n + j] = f[p * n + j];
                f[p * n + j] = s;
            }
            const double s = perm[k];
            perm[k] = perm[p];
            perm[p] = s;
        }
        const double d = f[k * n + k];
        if (!(fabs(d) > lim)) {
            fail_at(aux, k, d, lim);
            return 1;
        }
        for (size_t i = k + 1; i < n; i++) {
            const double l = f[i * n + k] / d;
            f[i * n + k] = l;
            if (l != 0.0)
                for (size_t j = k + 1; j < n; j++)
                    f[i * n + j] -= l * f[k * n + j];
        }
    }
    return 0;
}

/* row_i -= a * row_k over m columns. */
static void axpy_row(double *dst, double a, const double *src, size_t m)
{
    if (a != 0.0)
        for (size_t c = 0; c < m; c++)
            dst[c] -= a * src[c];
}

/* X = A^{-1} B (n x m) with the factors; B and X distinct. */
static void lu_solve(const double *f, const double *perm, size_t n, size_t m, const double *B,
                     double *X)
{
    for (size_t i = 0; i < n; i++)
        memcpy(X + i * m, B + (size_t)perm[i] * m, m * sizeof *X);
    for (size_t i = 1; i < n; i++) /* L y = P B */
        for (size_t k = 0; k < i; k++)
            axpy_row(X + i * m, f[i * n + k], X + k * m, m);
    for (size_t i = n; i-- > 0;) { /* U x = y */
        for (size_t k = i + 1; k < n; k++)
            axpy_row(X + i * m, f[i * n + k], X + k * m, m);
        const double d = f[i * n + i];
        for (size_t c = 0; c < m; c++)
            X[i * m + c] /= d;
    }
}

/* Y = A^{-T} G (n x m) with the factors: A^T = U^T L^T P, so U^T z = G,
 * L^T w = z, Y = P^T w. W (n x m) is scratch, distinct from Y; G may be Y. */
static void lu_solve_t(const double *f, const double *perm, size_t n, size_t m, const double *G,
                       double *Y, double *W)
{
    memcpy(W, G, n * m * sizeof *W);
    for (size_t k = 0; k < n; k++) { /* U^T z = G: row k of U, left to right */
        const double d = f[k * n + k];
        for (size_t c = 0; c < m; c++)
            W[k * m + c] /= d;
        for (size_t i = k + 1; i < n; i++)
            axpy_row(W + i * m, f[k * n + i], W + k * m, m);
    }
    for (size_t k = n; k-- > 0;) /* L^T w = z: row k of L */
        for (size_t i = 0; i < k; i++)
            axpy_row(W + i * m, f[k * n + i], W + k * m, m);
    for (size_t i = 0; i < n; i++)
        memcpy(Y + (size_t)perm[i] * m, W + i * m, m * sizeof *Y);
}

/* ---- Cholesky: S = L L^T, S = (A + A^T) / 2 ----
 * L (n x n) lower; the part above the diagonal is left as zeros. */
static int chol_factor(const double *A, size_t n, double *L, double *aux)
{
    const double lim = pivot_limit(A, n, 1);
    aux[INFO] = lim < 0 ? -1.0 : 0.0;
    if (lim < 0)
        return 1;
    memset(L, 0, n * n * sizeof *L);
    for (size_t j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (size_t k = 0; k < j; k++)
            d -= L[j * n + k] * L[j * n + k];
        if (!(d > lim)) {
            fail_at(aux, j, d, lim);
            return 1;
        }
        const double r = sqrt(d);
        L[j * n + j] = r;
        for (size_t i = j + 1; i < n; i++) {
            double s = 0.5 * (A[i * n + j] + A[j * n + i]);
            for (size_t k = 0; k < j; k++)
                s -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = s / r;
        }
    }
    return 0;
}

/* X = S^{-1} X in place (n x m): L y = X, then L^T x = y. */
static void chol_solve(const double *L, size_t n, size_t m, double *X)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < i; k++)
            axpy_row(X + i * m, L[i * n + k], X + k * m, m);
        const double d = L[i * n + i];
        for (size_t c = 0; c < m; c++)
            X[i * m + c] /= d;
    }
    for (size_t k = n; k-- > 0;) {
        const double d = L[k * n + k];
        for (size_t c = 0; c < m; c++)
            X[k * m + c] /= d;
        for (size_t i = 0; i < k; i++)
            axpy_row(X + i * m, L[k * n + i], X + k * m, m);
    }
}

/* ---- small dense products on n x m blocks ---- */

/* D (=|+=) s * P Q^T, P and Q n x m, D n x n; D NULL: nothing. */
static void add_pqt(double *D, double s, const double *P, const double *Q, size_t n, size_t m,
                    int assign)
{
    if (!D)
        return;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t c = 0; c < m; c++)
                acc += P[i * m + c] * Q[j * m + c];
            D[i * n + j] = (assign ? 0.0 : D[i * n + j]) + s * acc;
        }
}

/* D (=|+=) s * (P Q^T + Q P^T) / 2: the symmetric part, for solve_spd. */
static void add_sym_pqt(double *D, double s, const double *P, const double *Q, size_t n,
                        size_t m, int assign)
{
    if (!D)
        return;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t c = 0; c < m; c++)
                acc += P[i * m + c] * Q[j * m + c] + Q[i * m + c] * P[j * m + c];
            D[i * n + j] = (assign ? 0.0 : D[i * n + j]) + 0.5 * s * acc;
        }
}

/* d (=|+=) s * v over n; d NULL: nothing. */
static void add_vec(double *d, double s, const double *v, size_t n, int assign)
{
    if (d)
        for (size_t i = 0; i < n; i++)
            d[i] = (assign ? 0.0 : d[i]) + s * v[i];
}

/* R = T - M X (n x m), M n x n, T n x m or NULL (zero); M NULL: zero.
 * sym: M is replaced by (M + M^T) / 2. */
static void residual(double *R, const double *T, const double *M, const double *X, size_t n,
                     size_t m, int sym)
{
    for (size_t i = 0; i < n * m; i++)
        R[i] = T ? T[i] : 0.0;
    if (!M)
        return;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < n; k++) {
            const double a = sym ? 0.5 * (M[i * n + k] + M[k * n + i]) : M[i * n + k];
            axpy_row(R + i * m, a, X + k * m, m);
        }
}

/* R = -M^T P (n x m), M n x n; sym: (M + M^T) / 2 instead of M^T. */
static void mul_mt(double *R, const double *M, const double *P, size_t n, size_t m, int sym)
{
    memset(R, 0, n * m * sizeof *R);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < n; k++) {
            const double a = sym ? 0.5 * (M[i * n + k] + M[k * n + i]) : M[k * n + i];
            axpy_row(R + i * m, a, P + k * m, m);
        }
}

/* ---- the failure report shared by the three ops ---- */

static int report(const ad_call *k, char *msg, size_t cap, int spd)
{
    const double *aux = ad__aux(k);
    if (aux[INFO] <= 0.0) /* regular, or non-finite: NaN without an error */
        return AD_OK;
    if (msg) {
        const unsigned p = (unsigned)aux[INFO], n = (unsigned)nrows(k);
        const double d = aux[PIV], lim = aux[LIM];
        const char *what = spd ? "not positive definite" : "singular";
        if (spd ? d <= 0.0 : d == 0.0)
            snprintf(msg, cap, "A is %s (pivot %u of %u is %.3g)", what, p, n, d == 0 ? 0.0 : d);
        else
            snprintf(msg, cap,
                     "A is %s to working precision (pivot %u of %u is %.3g, at most %u eps "
                     "max|A_ij| = %.3g)",
                     what, p, n, d, n, lim);
    }
    return AD_ESINGULAR;
}

/* ---- shape rules ---- */

static int square_shape(const ad_shape *in, char *msg, size_t cap)
{
    char a[48];
    if (in[0].ndim != 2)
        return ad__shape_fail(msg, cap, "A is %s, not a square matrix", S(in[0], a));
    if (in[0].rows != in[0].cols)
        return ad__shape_fail(msg, cap, "A is %s, not square", S(in[0], a));
    return AD_OK;
}

static int solve_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                       size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (square_shape(in, msg, cap) != AD_OK)
        return AD_ESHAPE;
    if (in[1].ndim == 0 || in[1].rows != in[0].rows)
        return ad__shape_fail(msg, cap,
                              "A is %s but B is %s (B must be a vector of length %u or a "
                              "matrix with %u row%s)",
                              S(in[0], a), S(in[1], b), (unsigned)in[0].rows,
                              (unsigned)in[0].rows, in[0].rows == 1 ? "" : "s");
    *out = in[1];
    return AD_OK;
}

static int scalar_of_square(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                            size_t cap)
{
    (void)nin, (void)c;
    if (square_shape(in, msg, cap) != AD_OK)
        return AD_ESHAPE;
    *out = ad_shape_scalar();
    return AD_OK;
}

/* ---- solve: X = A^{-1} B ----
 * storage: HDR, the factors (n x n), perm (n), three n x m scratch blocks */

static size_t solve_aux(const ad_shape *in, int nin, ad_shape out)
{
    (void)nin;
    const size_t n = in[0].rows, nm = ad_shape_size(out);
    return HDR + n * n + n + 3 * nm;
}

typedef struct solve_parts {
    size_t n, m;
    double *aux, *f, *perm, *s1, *s2, *s3;
} solve_parts;

static solve_parts parts(const ad_call *k, int spd)
{
    solve_parts p;
    p.n = nrows(k);
    p.m = ncols(k->out.shape);
    p.aux = ad__aux(k);
    p.f = p.aux + HDR;
    p.perm = p.f + p.n * p.n;
    p.s1 = p.perm + (spd ? 0 : p.n);
    p.s2 = p.s1 + p.n * p.m;
    p.s3 = p.s2 + p.n * p.m;
    return p;
}

static void solve_fwd(const ad_call *k)
{
    solve_parts p = parts(k, 0);
    if (lu_factor(k->in[0].val, p.n, p.f, p.perm, p.aux)) {
        fill_nan(k->out.val, p.n * p.m);
        return;
    }
    lu_solve(p.f, p.perm, p.n, p.m, k->in[1].val, k->out.val);
}

static int solve_check(const ad_call *k, char *msg, size_t cap) { return report(k, msg, cap, 0); }

/* dB = A^{-T} G (one transposed solve with the factors), dA = -dB X^T. */
static void solve_vjp_to(const ad_call *k, unsigned fresh)
{
    solve_parts p = parts(k, 0);
    const size_t nm = p.n * p.m;
    double *gA = k->in[0].grad, *gB = k->in[1].grad;
    if (p.aux[INFO] != 0.0) { /* singular or non-finite: NaN */
        if (gA)
            fill_nan(gA, p.n * p.n);
        if (gB)
            fill_nan(gB, nm);
        return;
    }
    lu_solve_t(p.f, p.perm, p.n, p.m, k->out.grad, p.s1, p.s2);
    add_vec(gB, 1.0, p.s1, nm, AD__FRESH(fresh, 1));
    add_pqt(gA, -1.0, p.s1, k->out.val, p.n, p.m, AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(solve)

/* tX = A^{-1} (tB - tA X), with the factors. */
static void solve_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    solve_parts p = parts(k, 0);
    if (p.aux[INFO] != 0.0) {
        fill_nan(tout, p.n * p.m);
        return;
    }
    residual(scratch, tin[1], tin[0], k->out.val, p.n, p.m, 0);
    lu_solve(p.f, p.perm, p.n, p.m, scratch, tout);
}

/* The vjp dB = A^{-T} G, dA = -dB X^T along (tA, tB), G fixed:
 *   d(dB) = -A^{-T} tA^T dB,   d(dA) = -d(dB) X^T - dB tX^T. */
static void solve_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    solve_parts p = parts(k, 0);
    const size_t nm = p.n * p.m;
    if (p.aux[INFO] != 0.0) {
        if (tg[0])
            for (size_t i = 0; i < p.n * p.n; i++)
                tg[0][i] += NAN;
        if (tg[1])
            for (size_t i = 0; i < nm; i++)
                tg[1][i] += NAN;
        return;
    }
    lu_solve_t(p.f, p.perm, p.n, p.m, k->out.grad, p.s1, p.s2);  /* s1 = dB */
    residual(p.s3, tin[1], tin[0], k->out.val, p.n, p.m, 0);
    lu_solve(p.f, p.perm, p.n, p.m, p.s3, p.s2);                  /* s2 = tX */
    add_pqt(tg[0], -1.0, p.s1, p.s2, p.n, p.m, 0);                /* -dB tX^T */
    mul_mt(p.s3, tin[0], p.s1, p.n, p.m, 0);                      /* -tA^T dB */
    lu_solve_t(p.f, p.perm, p.n, p.m, p.s3, p.s3, p.s2);          /* d(dB) */
    add_vec(tg[1], 1.0, p.s3, nm, 0);
    add_pqt(tg[0], -1.0, p.s3, k->out.val, p.n, p.m, 0);          /* -d(dB) X^T */
}

/* -P Q^T as tape ops, for P and Q shaped like X (a vector: an outer
 * product). */
static ad_node neg_pqt(ad_tape *t, ad_node P, ad_node Q)
{
    const int vec = ad_node_shape(t, P).ndim == 1;
    return ad_neg(t, vec ? ad_outer(t, P, Q) : ad_matmul_nt(t, P, Q));
}

/* dB = solve(A^T, G), dA = -dB X^T */
static void solve_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                       ad_node *dx)
{
    (void)c;
    ad_node dB = ad_solve(t, ad_transpose(t, in[0]), g);
    dx[1] = dB;
    dx[0] = neg_pqt(t, dB, out);
}

const ad__op ad__op_solve = {{"solve", 2, solve_shape, solve_fwd, solve_vjp, NULL, AD__NO_MODE_RULES},
                             false, false, solve_vjp_to, solve_jvp, AD__SO_FN, solve_so, solve_rvjp};
const ad__opstate ad__opstate_solve = {solve_aux, solve_check};

/* ---- solve_spd: X = S^{-1} B, S = (A + A^T) / 2 = L L^T ----
 * storage: HDR, L (n x n), three n x m scratch blocks. The function of A
 * is that of its symmetric part, so its gradient is symmetric. */

static size_t spd_aux(const ad_shape *in, int nin, ad_shape out)
{
    (void)nin;
    const size_t n = in[0].rows;
    return HDR + n * n + 3 * ad_shape_size(out);
}

static void spd_fwd(const ad_call *k)
{
    solve_parts p = parts(k, 1);
    if (chol_factor(k->in[0].val, p.n, p.f, p.aux)) {
        fill_nan(k->out.val, p.n * p.m);
        return;
    }
    memcpy(k->out.val, k->in[1].val, p.n * p.m * sizeof(double));
    chol_solve(p.f, p.n, p.m, k->out.val);
}

static int spd_check(const ad_call *k, char *msg, size_t cap) { return report(k, msg, cap, 1); }

/* dB = S^{-1} G, dA = -(dB X^T + X dB^T) / 2 */
static void spd_vjp_to(const ad_call *k, unsigned fresh)
{
    solve_parts p = parts(k, 1);
    const size_t nm = p.n * p.m;
    double *gA = k->in[0].grad, *gB = k->in[1].grad;
    if (p.aux[INFO] != 0.0) {
        if (gA)
            fill_nan(gA, p.n * p.n);
        if (gB)
            fill_nan(gB, nm);
        return;
    }
    memcpy(p.s1, k->out.grad, nm * sizeof(double));
    chol_solve(p.f, p.n, p.m, p.s1);
    add_vec(gB, 1.0, p.s1, nm, AD__FRESH(fresh, 1));
    add_sym_pqt(gA, -1.0, p.s1, k->out.val, p.n, p.m, AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(spd)

/* tX = S^{-1} (tB - tS X), tS = (tA + tA^T) / 2 */
static void spd_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    solve_parts p = parts(k, 1);
    if (p.aux[INFO] != 0.0) {
        fill_nan(tout, p.n * p.m);
        return;
    }
    residual(tout, tin[1], tin[0], k->out.val, p.n, p.m, 1);
    chol_solve(p.f, p.n, p.m, tout);
}

/* d(dB) = -S^{-1} tS dB;  d(dA) = sym(-d(dB) X^T - dB tX^T) */
static void spd_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    solve_parts p = parts(k, 1);
    const size_t nm = p.n * p.m;
    if (p.aux[INFO] != 0.0) {
        if (tg[0])
            for (size_t i = 0; i < p.n * p.n; i++)
                tg[0][i] += NAN;
        if (tg[1])
            for (size_t i = 0; i < nm; i++)
                tg[1][i] += NAN;
        return;
    }
    memcpy(p.s1, k->out.grad, nm * sizeof(double));
    chol_solve(p.f, p.n, p.m, p.s1);                               /* s1 = dB */
    residual(p.s2, tin[1], tin[0], k->out.val, p.n, p.m, 1);
    chol_solve(p.f, p.n, p.m, p.s2);                               /* s2 = tX */
    add_sym_pqt(tg[0], -1.0, p.s1, p.s2, p.n, p.m, 0);
    mul_mt(p.s3, tin[0], p.s1, p.n, p.m, 1);                       /* -tS dB */
    chol_solve(p.f, p.n, p.m, p.s3);                               /* d(dB) */
    add_vec(tg[1], 1.0, p.s3, nm, 0);
    add_sym_pqt(tg[0], -1.0, p.s3, k->out.val, p.n, p.m, 0);
}

/* dB = solve_spd(A, G) (S is symmetric), dA = -(dB X^T + X dB^T) / 2 */
static void spd_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                     ad_node *dx)
{
    (void)c;
    ad_node dB = ad_solve_spd(t, in[0], g);
    dx[1] = dB;
    dx[0] = ad_scale(t, ad_add(t, neg_pqt(t, dB, out), neg_pqt(t, out, dB)), 0.5);
}

const ad__op ad__op_solve_spd = {{"solve_spd", 2, solve_shape, spd_fwd, spd_vjp, NULL, AD__NO_MODE_RULES},
                                 false, false, spd_vjp_to, spd_jvp, AD__SO_FN, spd_so, spd_rvjp};
const ad__opstate ad__opstate_solve_spd = {spd_aux, spd_check};

/* ---- logdet: y = log|det A| = sum_k log|U_kk| ----
 * storage: HDR, the factors (n x n), perm (n), Z = A^{-T} (n x n, made
 * from the factors when first needed after a forward), scratch (n x n).
 * dy/dA = A^{-T} for either sign of det A. */

static size_t logdet_aux(const ad_shape *in, int nin, ad_shape out)
{
    (void)nin, (void)out;
    const size_t n = in[0].rows;
    return HDR + 3 * n * n + n;
}

typedef struct logdet_parts {
    size_t n;
    double *aux, *f, *perm, *Z, *W;
} logdet_parts;

static logdet_parts lparts(const ad_call *k)
{
    logdet_parts p;
    p.n = nrows(k);
    p.aux = ad__aux(k);
    p.f = p.aux + HDR;
    p.perm = p.f + p.n * p.n;
    p.Z = p.perm + p.n;
    p.W = p.Z + p.n * p.n;
    return p;
}

static void logdet_fwd(const ad_call *k)
{
    logdet_parts p = lparts(k);
    p.aux[INV] = 0;
    if (lu_factor(k->in[0].val, p.n, p.f, p.perm, p.aux)) {
        k->out.val[0] = NAN;
        return;
    }
    double s = 0;
    for (size_t i = 0; i < p.n; i++)
        s += log(fabs(p.f[i * p.n + i]));
    k->out.val[0] = s;
}

static int logdet_check(const ad_call *k, char *msg, size_t cap) { return report(k, msg, cap, 0); }

/* A^{-T}: n transposed solves with the factors, once per forward. */
static const double *inv_t(const logdet_parts *p)
{
    if (p->aux[INV] == 0.0) {
        const size_t n = p->n;
        memset(p->Z, 0, n * n * sizeof(double));
        for (size_t i = 0; i < n; i++)
            p->Z[i * n + i] = 1.0;
        lu_solve_t(p->f, p->perm, n, n, p->Z, p->Z, p->W);
        p->aux[INV] = 1.0;
    }
    return p->Z;
}

static void logdet_vjp_to(const ad_call *k, unsigned fresh)
{
    logdet_parts p = lparts(k);
    double *gA = k->in[0].grad;
    if (!gA)
        return;
    if (p.aux[INFO] != 0.0) {
        fill_nan(gA, p.n * p.n);
        return;
    }
    add_vec(gA, k->out.grad[0], inv_t(&p), p.n * p.n, AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(logdet)

/* ty = tr(A^{-1} tA) = <A^{-T}, tA> */
static void logdet_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    logdet_parts p = lparts(k);
    if (p.aux[INFO] != 0.0) {
        tout[0] = NAN;
        return;
    }
    double s = 0;
    if (tin[0]) {
        const double *Z = inv_t(&p);
        for (size_t i = 0; i < p.n * p.n; i++)
            s += Z[i] * tin[0][i];
    }
    tout[0] = s;
}

/* d(g A^{-T}) along tA = -g A^{-T} tA^T A^{-T} = -g Z tA^T Z */
static void logdet_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    logdet_parts p = lparts(k);
    const size_t n = p.n;
    if (!tg[0])
        return;
    if (p.aux[INFO] != 0.0) {
        for (size_t i = 0; i < n * n; i++)
            tg[0][i] += NAN;
        return;
    }
    const double *Z = inv_t(&p);
    mul_mt(p.W, tin[0], Z, n, n, 0); /* W = -tA^T Z */
    const double g = k->out.grad[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t q = 0; q < n; q++)
                acc += Z[i * n + q] * p.W[q * n + j];
            tg[0][i * n + j] += g * acc;
        }
}

/* The identity n x n as a constant of t. */
static ad_node eye(ad_tape *t, uint32_t n)
{
    ad_node e = ad__fill(t, ad_shape_mat(n, n), 0.0);
    if (!ad_node_is_nil(e)) {
        double *v = ad__X(t, ad__a(ad__N(t, e.id_)->h))->call.out.val;
        for (size_t i = 0; i < n; i++)
            v[i * n + i] = 1.0;
    }
    return e;
}

/* dA = g A^{-T} = g solve(A^T, I) */
static void logdet_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    (void)out, (void)c;
    const uint32_t n = ad_node_shape(t, in[0]).rows;
    dx[0] = ad_mul(t, g, ad_solve(t, ad_transpose(t, in[0]), eye(t, n)));
}

const ad__op ad__op_logdet = {{"logdet", 1, scalar_of_square, logdet_fwd, logdet_vjp, NULL, AD__NO_MODE_RULES},
                              false, false, logdet_vjp_to, logdet_jvp, AD__SO_FN, logdet_so, logdet_rvjp};
const ad__opstate ad__opstate_logdet = {logdet_aux, logdet_check};

/* ---- trace: y = sum_i A_ii; dA = g I (linear) ---- */

static void trace_fwd(const ad_call *k)
{
    const size_t n = nrows(k);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += k->in[0].val[i * n + i];
    k->out.val[0] = s;
}

static void trace_vjp_to(const ad_call *k, unsigned fresh)
{
    double *gA = k->in[0].grad;
    const size_t n = nrows(k);
    if (!gA)
        return;
    if (AD__FRESH(fresh, 0))
        memset(gA, 0, n * n * sizeof *gA);
    for (size_t i = 0; i < n; i++)
        gA[i * n + i] += k->out.grad[0];
}
AD__VJP_ADDING(trace)

static void trace_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                       ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_mul(t, g, eye(t, ad_node_shape(t, in[0]).rows));
}

const ad__op ad__op_trace = {{"trace", 1, scalar_of_square, trace_fwd, trace_vjp, NULL, AD__NO_MODE_RULES},
                             false, false, trace_vjp_to, NULL, AD__LINEAR, NULL, trace_rvjp};

/* ---- recording ---- */

static ad_node rec(ad_tape *t, unsigned op, const ad_node *in, int n)
{
    return ad__record(t, op, &ad__ops[op]->def, in, n, 0.0);
}

ad_node ad_solve(ad_tape *t, ad_node A, ad_node B)
{
    const ad_node in[2] = {A, B};
    return rec(t, AD_OP_SOLVE, in, 2);
}
ad_node ad_solve_spd(ad_tape *t, ad_node A, ad_node B)
{
    const ad_node in[2] = {A, B};
    return rec(t, AD_OP_SOLVE_SPD, in, 2);
}
ad_node ad_logdet(ad_tape *t, ad_node A) { return rec(t, AD_OP_LOGDET, &A, 1); }
ad_node ad_matrix_trace(ad_tape *t, ad_node A) { return rec(t, AD_OP_TRACE, &A, 1); }
