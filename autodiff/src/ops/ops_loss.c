/* ops_loss.c -- softmax cross-entropy, fused so it is stable for any logits.
 *
 * Per row r of logits z and target y (n columns):
 *   lse_r = max z + log sum_j exp(z_j - max z)
 *   L     = sum_r sum_j y_j (lse_r - z_j)          (= -sum y log softmax z)
 *   dz_j += dL (softmax(z)_j sum_i y_i - y_j)
 *   dy_j += dL (lse_r - z_j)
 */
#include "internal.h"

#include <math.h>

static int xent_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    if (in[0].ndim == 0)
        return ad__shape_fail(msg, cap, "logits are a scalar; need a vector or a matrix");
    if (in[0].ndim != in[1].ndim || in[0].rows != in[1].rows || in[0].cols != in[1].cols)
        return ad__shape_fail(msg, cap, "logits are %s but target is %s",
                              ad__shape_str(in[0], a, sizeof a), ad__shape_str(in[1], b, sizeof b));
    *out = ad_shape_scalar();
    return AD_OK;
}

/* Rows and columns: a vector is one row. */
static void rows_cols(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : s.rows;
}

static double row_lse(const double *z, size_t n)
{
    double m = z[0];
    for (size_t j = 1; j < n; j++)
        m = z[j] > m ? z[j] : m;
    double s = 0;
    for (size_t j = 0; j < n; j++)
        s += exp(z[j] - m);
    return m + log(s);
}

static void xent_fwd(const ad_call *k)
{
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val, *Y = k->in[1].val;
    double loss = 0;
    for (size_t r = 0; r < R; r++) { /* Z, Y: (R, C) */
        const double *z = Z + r * C, *y = Y + r * C;
        const double lse = row_lse(z, C);
        for (size_t j = 0; j < C; j++)
            loss += y[j] * (lse - z[j]);
    }
    k->out.val[0] = loss;
}

static void xent_vjp_to(const ad_call *k, unsigned fresh)
{
    const int fZ = AD__FRESH(fresh, 0), fY = AD__FRESH(fresh, 1);
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val, *Y = k->in[1].val;
    double *gZ = k->in[0].grad, *gY = k->in[1].grad;
    const double g = k->out.grad[0];
    for (size_t r = 0; r < R; r++) {
        const double *z = Z + r * C, *y = Y + r * C;
        const double lse = row_lse(z, C);
        if (gZ) {
            double ysum = 0;
            for (size_t j = 0; j < C; j++)
                ysum += y[j];
            for (size_t j = 0; j < C; j++)
                gZ[r * C + j] = (fZ ? 0.0 : gZ[r * C + j]) + g * (exp(z[j] - lse) * ysum - y[j]);
        }
        if (gY)
            for (size_t j = 0; j < C; j++)
                gY[r * C + j] = (fY ? 0.0 : gY[r * C + j]) + g * (lse - z[j]);
    }
}
AD__VJP_ADDING(xent)

/* Per row, p = softmax(z), S = sum y:
 *   tL = sum_j (p_j S - y_j) tz_j + (lse - z_j) ty_j */
static void xent_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val, *Y = k->in[1].val, *tZ = tin[0], *tY = tin[1];
    double t = 0;
    for (size_t r = 0; r < R; r++) {
        const double *z = Z + r * C, *y = Y + r * C;
        const double lse = row_lse(z, C);
        double S = 0;
        for (size_t j = 0; j < C; j++)
            S += y[j];
        for (size_t j = 0; j < C; j++) {
            if (tZ)
                t += (exp(z[j] - lse) * S - y[j]) * tZ[r * C + j];
            if (tY)
                t += (lse - z[j]) * tY[r * C + j];
        }
    }
    tout[0] = t;
}
/* The derivative of the vjp along (tz, ty), per row, with pz = p . tz and
 * tS = sum ty:
 *   tgz_j += g (S p_j (tz_j - pz) + p_j tS - ty_j)
 *   tgy_j += g (pz - tz_j) */
static void xent_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val, *Y = k->in[1].val, *tZ = tin[0], *tY = tin[1];
    const double g = k->out.grad[0];
    if (g == 0.0)
        return;
    for (size_t r = 0; r < R; r++) {
        const double *z = Z + r * C, *y = Y + r * C, *tz = tZ + r * C, *ty = tY + r * C;
        const double lse = row_lse(z, C);
        double S = 0, tS = 0, pz = 0;
        for (size_t j = 0; j < C; j++) {
            S += y[j];
            tS += ty[j];
            pz += exp(z[j] - lse) * tz[j];
        }
        for (size_t j = 0; j < C; j++) {
            const double p = exp(z[j] - lse);
            if (tg[0])
                tg[0][r * C + j] += g * (S * p * (tz[j] - pz) + p * tS - ty[j]);
            if (tg[1])
                tg[1][r * C + j] += g * (pz - tz[j]);
        }
    }
}

/* Broadcasts a per-row quantity v (a scalar for a vector z, a vector of R
 * for an R x C matrix) to z's shape: v itself (scalar broadcast does it)
 * or v 1^T. */
static ad_node per_row(ad_tape *t, ad_node v, ad_shape zs)
{
    if (zs.ndim != 2)
        return v;
    return ad_outer(t, v, ad__fill(t, ad_shape_vec(zs.cols), 1.0));
}

/* dz = g (softmax(z) S - y), dy = g (lse - z), with lse = logsumexp(z)
 * and S = sum of y, per row, recorded as ops. */
static void xent_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                      ad_node *dx)
{
    (void)out, (void)c;
    const ad_shape zs = ad_node_shape(t, in[0]);
    ad_node lse = per_row(t, ad_logsumexp(t, in[0]), zs);
    ad_node p = ad_exp(t, ad_sub(t, in[0], lse));
    ad_node S = zs.ndim == 2 ? ad_matvec(t, in[1], ad__fill(t, ad_shape_vec(zs.cols), 1.0))
                             : ad_sum(t, in[1]);
    dx[0] = ad_mul(t, g, ad_sub(t, ad_mul(t, p, per_row(t, S, zs)), in[1]));
    dx[1] = ad_mul(t, g, ad_sub(t, lse, in[0]));
}

const ad__op ad__op_softmax_xent = {{"softmax_xent", 2, xent_shape, xent_fwd, xent_vjp, NULL, AD__NO_MODE_RULES},
                                    false, false, xent_vjp_to, xent_jvp, AD__SO_FN, xent_so,
                                    xent_rvjp};

/* ---- logsumexp: y_r = log sum_j exp(z_rj), per row ----
 * dz_rj += dy_r p_rj with p = exp(z - y) (the row's softmax) */
static int lse_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    if (in[0].ndim == 0)
        return ad__shape_fail(msg, cap, "z is a scalar; need a vector or a matrix");
    *out = in[0].ndim == 2 ? ad_shape_vec(in[0].rows) : ad_shape_scalar();
    return AD_OK;
}
static void lse_fwd(const ad_call *k)
{
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++)
        k->out.val[r] = row_lse(k->in[0].val + r * C, C);
}
static void lse_vjp_to(const ad_call *k, unsigned fresh)
{
    double *gz = k->in[0].grad;
    if (!gz)
        return;
    const int f = AD__FRESH(fresh, 0);
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val;
    for (size_t r = 0; r < R; r++) /* Z, dZ: (R, C); y, dy: (R) */
        for (size_t j = 0; j < C; j++)
            gz[r * C + j] = (f ? 0.0 : gz[r * C + j])
                            + k->out.grad[r] * exp(Z[r * C + j] - k->out.val[r]);
}
AD__VJP_ADDING(lse)
/* ty_r = p_r . tz_r */
static void lse_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val;
    for (size_t r = 0; r < R; r++) {
        double s = 0;
        if (tin[0])
            for (size_t j = 0; j < C; j++)
                s += exp(Z[r * C + j] - k->out.val[r]) * tin[0][r * C + j];
        tout[r] = s;
    }
}
/* d/dt (g_r p_r) along tz: g_r p_r (tz_r - p_r . tz_r) */
static void lse_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (!tg[0])
        return;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    const double *Z = k->in[0].val, *tz = tin[0];
    for (size_t r = 0; r < R; r++) {
        const double g = k->out.grad[r], y = k->out.val[r];
        if (g == 0.0)
            continue;
        double pz = 0;
        for (size_t j = 0; j < C; j++)
            pz += exp(Z[r * C + j] - y) * tz[r * C + j];
        for (size_t j = 0; j < C; j++)
            tg[0][r * C + j] += g * exp(Z[r * C + j] - y) * (tz[r * C + j] - pz);
    }
}
/* dz = g p, per row */
static void lse_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                     ad_node *dx)
{
    (void)c;
    const ad_shape zs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, per_row(t, g, zs), ad_exp(t, ad_sub(t, in[0], per_row(t, out, zs))));
}
const ad__op ad__op_logsumexp = {{"logsumexp", 1, lse_shape, lse_fwd, lse_vjp, NULL,
                                  AD__NO_MODE_RULES},
                                 false, false, lse_vjp_to, lse_jvp, AD__SO_FN, lse_so, lse_rvjp};
