/* ops_axis.c -- reductions along an axis (sum_axis, mean_axis, max_axis,
 * min_axis and the one-hot max_mask their gradient uses), the row-wise
 * softmax and log_softmax, and the L2 norm.
 *
 * Axis conventions (the node constant c is the axis), as numpy/PyTorch's
 * dim without keepdim:
 *   matrix (m x n), axis 0: over the rows, down each column -> vector (n)
 *   matrix (m x n), axis 1: over the columns, along each row -> vector (m)
 *   vector (n) or scalar, axis 0: over every element -> scalar
 * A reduced vector is a row for the elementwise ops; reshape an axis-1
 * result to m x 1 to broadcast it as a column.
 *
 * max/min ties: the first extreme element in the reduced order gets the
 * whole adjoint (PyTorch's torch.max(x, dim) and torch.min(x, dim): the
 * index they return is the first); a NaN is the extreme (the first NaN),
 * so NaN propagates to the value and its adjoint goes to that element.
 * Given the chosen element the op is linear: the jvp picks its tangent and
 * the second-order term is 0 (AD__LINEAR, away from ties, where the
 * derivative does not exist anyway).
 *
 * softmax and log_softmax act on each row of a matrix (one sample per
 * row, as softmax_xent and logsumexp) or on a whole vector, shifted by the
 * row's maximum (stable for any finite logits).
 *
 * norm: sqrt(sum x^2) over every element, without overflow or underflow
 * (rescaled by the largest |x| when the plain sum leaves the normal
 * range). At x = 0 its gradient is 0 (PyTorch's choice for
 * torch.linalg.vector_norm), and so are its tangent and second-order
 * term (PyTorch's double backward gives NaN there). */
#include "internal.h"
#include "kernels.h"

#include <float.h>
#include <math.h>

#define S(s, buf) ad__shape_str((s), (buf), sizeof(buf))

/* ---- the reduced view: G groups of L elements, element (g, l) at
 * g gs + l ls ---- */
typedef struct red {
    size_t G, L, gs, ls;
} red;

static red red_of(ad_shape x, double axis)
{
    red r = {1, ad_shape_size(x), 0, 1};
    if (x.ndim == 2 && axis == 0.0) {
        r.G = x.cols, r.L = x.rows, r.gs = 1, r.ls = x.cols;
    } else if (x.ndim == 2) {
        r.G = x.rows, r.L = x.cols, r.gs = x.cols, r.ls = 1;
    }
    return r;
}

static int axis_check(ad_shape x, double c, char *msg, size_t cap)
{
    char a[48];
    if (c == 0.0 || (c == 1.0 && x.ndim == 2))
        return AD_OK;
    if (c == 1.0)
        return ad__shape_fail(msg, cap, "axis 1 of %s (only a matrix has an axis 1)", S(x, a));
    return ad__shape_fail(msg, cap,
                          "axis %g of %s; 0 reduces down the columns (over the rows), 1 along "
                          "the rows",
                          c, S(x, a));
}

static int reduce_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                        size_t cap)
{
    (void)nin;
    if (axis_check(in[0], c, msg, cap) != AD_OK)
        return AD_ESHAPE;
    const red r = red_of(in[0], c);
    *out = in[0].ndim < 2 ? ad_shape_scalar() : ad_shape_vec((uint32_t)r.G);
    return AD_OK;
}

/* The reduced adjoint g (one per group), times s, spread over x's shape
 * into dx: written or added. */
static void spread(ad_shape xs, double axis, const double *g, double s, double *restrict dx,
                   int assign)
{
    if (xs.ndim < 2) {
        const size_t n = ad_shape_size(xs);
        const double v = g[0] * s;
        for (size_t i = 0; i < n; i++)
            dx[i] = (assign ? 0.0 : dx[i]) + v;
        return;
    }
    const size_t R = xs.rows, C = xs.cols;
    for (size_t i = 0; i < R; i++) {
        double *d = dx + i * C;
        if (axis == 0.0) {
            if (assign)
                for (size_t j = 0; j < C; j++)
                    d[j] = g[j] * s;
            else
                for (size_t j = 0; j < C; j++)
                    d[j] += g[j] * s;
        } else {
            const double v = g[i] * s;
            for (size_t j = 0; j < C; j++)
                d[j] = (assign ? 0.0 : d[j]) + v;
        }
    }
}

/* g, one per group, broadcast back over x's shape by the elementwise
 * rule: a scalar or a row as it is, an axis-1 vector as an m x 1 column. */
static ad_node expand(ad_tape *t, ad_node g, ad_shape xs, double axis)
{
    return xs.ndim == 2 && axis == 1.0 ? ad_reshape(t, g, ad_shape_mat(xs.rows, 1)) : g;
}

/* ---- sum_axis and mean_axis ---- */

static void sums(const ad_call *k, double s)
{
    const ad_shape xs = k->in[0].shape;
    const double *x = k->in[0].val;
    double *y = k->out.val;
    if (xs.ndim < 2) {
        y[0] = ad__ksum(x, ad_shape_size(xs)) * s;
        return;
    }
    const size_t R = xs.rows, C = xs.cols;
    if (k->c == 0.0) { /* y (C) = sum of the rows, one row at a time */
        memcpy(y, x, C * sizeof *y);
        for (size_t i = 1; i < R; i++)
            for (size_t j = 0; j < C; j++)
                y[j] += x[i * C + j];
        if (s != 1.0)
            for (size_t j = 0; j < C; j++)
                y[j] *= s;
    } else {
        for (size_t i = 0; i < R; i++)
            y[i] = ad__ksum(x + i * C, C) * s;
    }
}
static double mean_scale(const ad_call *k)
{
    return 1.0 / (double)red_of(k->in[0].shape, k->c).L;
}

static void sum_axis_fwd(const ad_call *k) { sums(k, 1.0); }
static void sum_axis_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad)
        spread(k->in[0].shape, k->c, k->out.grad, 1.0, k->in[0].grad, AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(sum_axis)
/* dx = g spread: ones(x) * g */
static void sum_axis_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                          ad_node *dx)
{
    (void)out;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, ad__fill(t, xs, 1.0), expand(t, g, xs, c));
}
const ad__op ad__op_sum_axis = {{"sum_axis", 1, reduce_shape, sum_axis_fwd, sum_axis_vjp, NULL,
                                 AD__NO_MODE_RULES},
                                false, false, sum_axis_vjp_to, NULL, AD__LINEAR, NULL,
                                sum_axis_rvjp};

static void mean_axis_fwd(const ad_call *k) { sums(k, mean_scale(k)); }
static void mean_axis_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad)
        spread(k->in[0].shape, k->c, k->out.grad, mean_scale(k), k->in[0].grad,
               AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(mean_axis)
static void mean_axis_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                           ad_node *dx)
{
    (void)out;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, ad__fill(t, xs, 1.0 / (double)red_of(xs, c).L), expand(t, g, xs, c));
}
const ad__op ad__op_mean_axis = {{"mean_axis", 1, reduce_shape, mean_axis_fwd, mean_axis_vjp,
                                  NULL, AD__NO_MODE_RULES},
                                 false, false, mean_axis_vjp_to, NULL, AD__LINEAR, NULL,
                                 mean_axis_rvjp};

/* ---- max_axis, min_axis, max_mask ---- */

/* The position (offset in x) of group g's first maximum (min: minimum); a
 * NaN counts as the extreme, the first one. */
static size_t arg_of(const double *x, const red *r, size_t g, bool min)
{
    const double *p = x + g * r->gs;
    size_t best = 0;
    double m = p[0];
    for (size_t l = 1; l < r->L && m == m; l++) {
        const double v = p[l * r->ls];
        if ((min ? v < m : v > m) || v != v)
            m = v, best = l;
    }
    return g * r->gs + best * r->ls;
}

static void extreme_fwd(const ad_call *k, bool min)
{
    const red r = red_of(k->in[0].shape, k->c);
    for (size_t g = 0; g < r.G; g++)
        k->out.val[g] = k->in[0].val[arg_of(k->in[0].val, &r, g, min)];
}
/* dx at each group's extreme (+)= g; 0 elsewhere */
static void extreme_vjp_to(const ad_call *k, unsigned fresh, bool min)
{
    double *dx = k->in[0].grad;
    if (!dx)
        return;
    ad__zero_fresh(k, fresh);
    const red r = red_of(k->in[0].shape, k->c);
    for (size_t g = 0; g < r.G; g++)
        dx[arg_of(k->in[0].val, &r, g, min)] += k->out.grad[g];
}
/* ty = tx at each group's extreme */
static void extreme_jvp(const ad_call *k, const double *const *tin, double *tout, bool min)
{
    const red r = red_of(k->in[0].shape, k->c);
    for (size_t g = 0; g < r.G; g++)
        tout[g] = tin[0] ? tin[0][arg_of(k->in[0].val, &r, g, min)] : 0.0;
}

static void max_axis_fwd(const ad_call *k) { extreme_fwd(k, false); }
static void max_axis_vjp_to(const ad_call *k, unsigned fresh) { extreme_vjp_to(k, fresh, false); }
AD__VJP_ADDING(max_axis)
static void max_axis_jvp(const ad_call *k, const double *const *tin, double *tout, double *scr)
{
    (void)scr;
    extreme_jvp(k, tin, tout, false);
}
/* dx = max_mask(x) * g spread */
static void max_axis_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                          ad_node *dx)
{
    (void)out;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, ad_max_mask(t, in[0], (int)c), expand(t, g, xs, c));
}
const ad__op ad__op_max_axis = {{"max_axis", 1, reduce_shape, max_axis_fwd, max_axis_vjp, NULL,
                                 AD__NO_MODE_RULES},
                                false, false, max_axis_vjp_to, max_axis_jvp, AD__LINEAR, NULL,
                                max_axis_rvjp};

static void min_axis_fwd(const ad_call *k) { extreme_fwd(k, true); }
static void min_axis_vjp_to(const ad_call *k, unsigned fresh) { extreme_vjp_to(k, fresh, true); }
AD__VJP_ADDING(min_axis)
static void min_axis_jvp(const ad_call *k, const double *const *tin, double *tout, double *scr)
{
    (void)scr;
    extreme_jvp(k, tin, tout, true);
}
/* dx = max_mask(-x) * g spread: the first minimum of x is the first
 * maximum of -x (and its first NaN the same element) */
static void min_axis_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                          ad_node *dx)
{
    (void)out;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, ad_max_mask(t, ad_neg(t, in[0]), (int)c), expand(t, g, xs, c));
}
const ad__op ad__op_min_axis = {{"min_axis", 1, reduce_shape, min_axis_fwd, min_axis_vjp, NULL,
                                 AD__NO_MODE_RULES},
                                false, false, min_axis_vjp_to, min_axis_jvp, AD__LINEAR, NULL,
                                min_axis_rvjp};

static int mask_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin;
    if (axis_check(in[0], c, msg, cap) != AD_OK)
        return AD_ESHAPE;
    *out = in[0];
    return AD_OK;
}
/* 1 at each group's first maximum, 0 elsewhere */
static void max_mask_fwd(const ad_call *k)
{
    const red r = red_of(k->in[0].shape, k->c);
    memset(k->out.val, 0, ad_shape_size(k->out.shape) * sizeof(double));
    for (size_t g = 0; g < r.G; g++)
        k->out.val[arg_of(k->in[0].val, &r, g, false)] = 1.0;
}
/* derivative 0: a fresh adjoint is written with 0 */
static void max_mask_vjp_to(const ad_call *k, unsigned fresh) { ad__zero_fresh(k, fresh); }
AD__VJP_ADDING(max_mask)
static void max_mask_jvp(const ad_call *k, const double *const *tin, double *tout, double *scr)
{
    (void)tin, (void)scr;
    memset(tout, 0, ad_shape_size(k->out.shape) * sizeof *tout);
}
static void max_mask_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                          ad_node *dx)
{
    (void)t, (void)in, (void)out, (void)c, (void)g, (void)dx; /* no contribution */
}
const ad__op ad__op_max_mask = {{"max_mask", 1, mask_shape, max_mask_fwd, max_mask_vjp, NULL,
                                 AD__NO_MODE_RULES},
                                false, false, max_mask_vjp_to, max_mask_jvp, AD__LINEAR, NULL,
                                max_mask_rvjp};

/* ---- softmax and log_softmax, per row ---- */

/* Rows and columns: a vector is one row. */
static void rows_cols(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : s.rows;
}

static int rows_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    if (in[0].ndim == 0)
        return ad__shape_fail(msg, cap, "x is a scalar; need a vector or a matrix (one row per "
                                        "sample)");
    *out = in[0];
    return AD_OK;
}

/* The row's maximum (NaN if it has one) and sum of exp(x - max). */
static double row_max(const double *x, size_t C)
{
    double m = x[0];
    for (size_t j = 1; j < C && m == m; j++)
        m = x[j] > m || x[j] != x[j] ? x[j] : m;
    return m;
}

static void softmax_rows(const ad_call *k, bool log_form)
{
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *x = k->in[0].val + r * C;
        double *y = k->out.val + r * C;
        const double m = row_max(x, C);
        double s = 0;
        for (size_t j = 0; j < C; j++)
            s += exp(x[j] - m);
        if (log_form) {
            const double l = m + log(s);
            for (size_t j = 0; j < C; j++)
                y[j] = x[j] - l;
        } else {
            for (size_t j = 0; j < C; j++)
                y[j] = exp(x[j] - m) / s;
        }
    }
}

static double dotn(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t j = 0; j < n; j++)
        s += a[j] * b[j];
    return s;
}

/* y = softmax(x);  dx = y (g - <g, y>), per row */
static void softmax_fwd(const ad_call *k) { softmax_rows(k, false); }
static void softmax_vjp_to(const ad_call *k, unsigned fresh)
{
    double *dx = k->in[0].grad;
    if (!dx)
        return;
    const int f = AD__FRESH(fresh, 0);
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C, *g = k->out.grad + r * C;
        double *d = dx + r * C;
        const double gy = dotn(g, y, C);
        for (size_t j = 0; j < C; j++)
            d[j] = (f ? 0.0 : d[j]) + y[j] * (g[j] - gy);
    }
}
AD__VJP_ADDING(softmax)
/* ty = y (tx - <y, tx>) */
static void softmax_jvp(const ad_call *k, const double *const *tin, double *tout, double *scr)
{
    (void)scr;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C;
        double *ty = tout + r * C;
        if (!tin[0]) {
            memset(ty, 0, C * sizeof *ty);
            continue;
        }
        const double *tx = tin[0] + r * C;
        const double b = dotn(y, tx, C);
        for (size_t j = 0; j < C; j++)
            ty[j] = y[j] * (tx[j] - b);
    }
}
/* d/dt of y (g - <g, y>) along tx, with ty as above:
 * tg += ty (g - <g, y>) - y <g, ty> */
static void softmax_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (!tg[0])
        return;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C, *g = k->out.grad + r * C, *tx = tin[0] + r * C;
        double *d = tg[0] + r * C;
        const double a = dotn(g, y, C), b = dotn(y, tx, C);
        double gty = 0;
        for (size_t j = 0; j < C; j++)
            gty += g[j] * y[j] * (tx[j] - b);
        for (size_t j = 0; j < C; j++)
            d[j] += y[j] * (tx[j] - b) * (g[j] - a) - y[j] * gty;
    }
}
/* A per-row quantity (a scalar for a vector, a vector of R for a matrix)
 * as something that broadcasts over the rows: itself, or an R x 1 column. */
static ad_node per_row(ad_tape *t, ad_node v, ad_shape xs)
{
    return xs.ndim == 2 ? ad_reshape(t, v, ad_shape_mat(xs.rows, 1)) : v;
}
static ad_node row_sums(ad_tape *t, ad_node v, ad_shape xs)
{
    return per_row(t, xs.ndim == 2 ? ad_sum_axis(t, v, 1) : ad_sum(t, v), xs);
}
/* dx = y (g - rowsum(g y)) */
static void softmax_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                         ad_node *dx)
{
    (void)c;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, out, ad_sub(t, g, row_sums(t, ad_mul(t, g, out), xs)));
}
const ad__op ad__op_softmax = {{"softmax", 1, rows_shape, softmax_fwd, softmax_vjp, NULL,
                                AD__NO_MODE_RULES},
                               false, false, softmax_vjp_to, softmax_jvp, AD__SO_FN, softmax_so,
                               softmax_rvjp};

/* y = x - logsumexp(x);  dx = g - p sum(g), p = exp(y), per row */
static void log_softmax_fwd(const ad_call *k) { softmax_rows(k, true); }
static void log_softmax_vjp_to(const ad_call *k, unsigned fresh)
{
    double *dx = k->in[0].grad;
    if (!dx)
        return;
    const int f = AD__FRESH(fresh, 0);
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C, *g = k->out.grad + r * C;
        double *d = dx + r * C;
        const double S = ad__ksum(g, C);
        for (size_t j = 0; j < C; j++)
            d[j] = (f ? 0.0 : d[j]) + g[j] - exp(y[j]) * S;
    }
}
AD__VJP_ADDING(log_softmax)
/* ty = tx - <p, tx> */
static void log_softmax_jvp(const ad_call *k, const double *const *tin, double *tout,
                            double *scr)
{
    (void)scr;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C;
        double *ty = tout + r * C;
        if (!tin[0]) {
            memset(ty, 0, C * sizeof *ty);
            continue;
        }
        const double *tx = tin[0] + r * C;
        double b = 0;
        for (size_t j = 0; j < C; j++)
            b += exp(y[j]) * tx[j];
        for (size_t j = 0; j < C; j++)
            ty[j] = tx[j] - b;
    }
}
/* tg += -sum(g) p (tx - <p, tx>) */
static void log_softmax_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (!tg[0])
        return;
    size_t R, C;
    rows_cols(k->in[0].shape, &R, &C);
    for (size_t r = 0; r < R; r++) {
        const double *y = k->out.val + r * C, *g = k->out.grad + r * C, *tx = tin[0] + r * C;
        double *d = tg[0] + r * C;
        const double S = ad__ksum(g, C);
        if (S == 0.0)
            continue;
        double b = 0;
        for (size_t j = 0; j < C; j++)
            b += exp(y[j]) * tx[j];
        for (size_t j = 0; j < C; j++)
            d[j] -= S * exp(y[j]) * (tx[j] - b);
    }
}
/* dx = g - exp(y) rowsum(g) */
static void log_softmax_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                             ad_node *dx)
{
    (void)c;
    const ad_shape xs = ad_node_shape(t, in[0]);
    dx[0] = ad_sub(t, g, ad_mul(t, ad_exp(t, out), row_sums(t, g, xs)));
}
const ad__op ad__op_log_softmax = {{"log_softmax", 1, rows_shape, log_softmax_fwd,
                                    log_softmax_vjp, NULL, AD__NO_MODE_RULES},
                                   false, false, log_softmax_vjp_to, log_softmax_jvp, AD__SO_FN,
                                   log_softmax_so, log_softmax_rvjp};

/* ---- norm: y = sqrt(sum x^2) ----
 * dx = g x / y;  0 at y = 0 */
static int norm_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)in, (void)nin, (void)c, (void)msg, (void)cap;
    *out = ad_shape_scalar();
    return AD_OK;
}
static void norm_fwd(const ad_call *k)
{
    const double *x = k->in[0].val;
    const size_t n = ad_shape_size(k->in[0].shape);
    const double s = ad__kdot(x, x, n);
    if (s >= DBL_MIN && s <= DBL_MAX) { /* the plain sum is exact enough */
        k->out.val[0] = sqrt(s);
        return;
    }
    /* overflow, underflow (or 0, inf, NaN): rescale by the largest |x| */
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double a = fabs(x[i]);
        if (a != a) {
            k->out.val[0] = a;
            return;
        }
        m = a > m ? a : m;
    }
    if (m == 0.0 || m > DBL_MAX) {
        k->out.val[0] = m;
        return;
    }
    double q = 0;
    for (size_t i = 0; i < n; i++)
        q += (x[i] / m) * (x[i] / m);
    k->out.val[0] = m * sqrt(q);
}
static void norm_vjp_to(const ad_call *k, unsigned fresh)
{
    double *dx = k->in[0].grad;
    if (!dx)
        return;
    const double y = k->out.val[0], s = y == 0.0 ? 0.0 : k->out.grad[0] / y;
    const double *x = k->in[0].val;
    const size_t n = ad_shape_size(k->in[0].shape);
    if (AD__FRESH(fresh, 0))
        for (size_t i = 0; i < n; i++)
            dx[i] = s * x[i];
    else
        for (size_t i = 0; i < n; i++)
            dx[i] += s * x[i];
}
AD__VJP_ADDING(norm)
/* ty = <x, tx> / y;  0 at y = 0 */
static void norm_jvp(const ad_call *k, const double *const *tin, double *tout, double *scr)
{
    (void)scr;
    const double y = k->out.val[0];
    tout[0] = tin[0] && y != 0.0
                  ? ad__kdot(k->in[0].val, tin[0], ad_shape_size(k->in[0].shape)) / y
                  : 0.0;
}
/* d/dt (g x / y) = g (tx - x <x, tx> / y^2) / y;  0 at y = 0 */
static void norm_so(const ad_call *k, const double *const *tin, double *const *tg)
{
    const double y = k->out.val[0], g = k->out.grad[0];
    if (!tg[0] || y == 0.0 || g == 0.0)
        return;
    const double *x = k->in[0].val, *tx = tin[0];
    const size_t n = ad_shape_size(k->in[0].shape);
    const double u = ad__kdot(x, tx, n) / (y * y);
    for (size_t i = 0; i < n; i++)
        tg[0][i] += g * (tx[i] - x[i] * u) / y;
}
/* dx = g step(y) x / d with d = y + (1 - step(y)): g x / y where y > 0;
 * at y = 0 (x = 0) it is 0 with no division by 0, and so are its
 * derivatives (step(y) = 0 there, and x = 0 multiplies the rest), as the
 * so rule has it */
static void norm_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                      ad_node *dx)
{
    (void)c;
    const ad_node s = ad_step(t, out);
    const ad_node d = ad_add(t, out, ad_add_const(t, ad_neg(t, s), 1.0));
    dx[0] = ad_mul(t, g, ad_div(t, ad_mul(t, in[0], s), d));
}
const ad__op ad__op_norm = {{"norm", 1, norm_shape, norm_fwd, norm_vjp, NULL, AD__NO_MODE_RULES},
                            false, false, norm_vjp_to, norm_jvp, AD__SO_FN, norm_so, norm_rvjp};

/* ---- recording ---- */

#define REC1(op, x, c) ad__record(t, (op), &ad__ops[(op)]->def, &(x), 1, (c))

ad_node ad_sum_axis(ad_tape *t, ad_node x, int axis) { return REC1(AD_OP_SUM_AXIS, x, axis); }
ad_node ad_mean_axis(ad_tape *t, ad_node x, int axis) { return REC1(AD_OP_MEAN_AXIS, x, axis); }
ad_node ad_max_axis(ad_tape *t, ad_node x, int axis) { return REC1(AD_OP_MAX_AXIS, x, axis); }
ad_node ad_min_axis(ad_tape *t, ad_node x, int axis) { return REC1(AD_OP_MIN_AXIS, x, axis); }
ad_node ad_max_mask(ad_tape *t, ad_node x, int axis) { return REC1(AD_OP_MAX_MASK, x, axis); }
ad_node ad_softmax(ad_tape *t, ad_node x) { return REC1(AD_OP_SOFTMAX, x, 0.0); }
ad_node ad_log_softmax(ad_tape *t, ad_node x) { return REC1(AD_OP_LOG_SOFTMAX, x, 0.0); }
ad_node ad_norm(ad_tape *t, ad_node x) { return REC1(AD_OP_NORM, x, 0.0); }
