/* ops_select.c -- comparisons and select (issue 14, part 2).
 *
 * The comparisons lt le gt ge eq ne are elementwise lines in scalar_ops.h
 * (value 1 or 0, derivative 0); here are only their recording functions,
 * which go through ad__record so that each one becomes a replay guard
 * (guards.c) and is recorded without GRAD: no adjoint ever flows through
 * a comparison, so a sweep never multiplies anything by its derivative 0.
 *
 * select(cond, a, b) is cond != 0 ? a : b, element by element; each of the
 * three is the output's shape or a scalar (broadcast). Its vjp WRITES the
 * adjoint into the taken branch and 0 into the other, never g * 0: the
 * untaken branch gets exactly 0 even where g, or that branch's value, is
 * infinite or NaN (the problem of JAX #1052 and PyTorch #156212), and the
 * elementwise vjps upstream pass a zero adjoint on as exactly 0
 * (AD__SZMUL, ops_elementwise.c). cond gets no gradient. */
#include "internal.h"

#include <string.h>

/* ---- comparisons ---- */

static ad_node rec_compare(ad_tape *t, unsigned op, ad_node a, ad_node b)
{
    const ad_node in[2] = {a, b};
    return ad__record(t, op, &ad__ops[op]->def, in, 2, 0.0);
}

ad_node ad_lt(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_LT, a, b); }
ad_node ad_le(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_LE, a, b); }
ad_node ad_gt(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_GT, a, b); }
ad_node ad_ge(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_GE, a, b); }
ad_node ad_eq(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_EQ, a, b); }
ad_node ad_ne(ad_tape *t, ad_node a, ad_node b) { return rec_compare(t, AD_OP_NE, a, b); }

/* ---- select ---- */

static bool same_shape(ad_shape a, ad_shape b)
{
    return a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols;
}

/* Every operand that is not a scalar has one shape, the output's. */
static int select_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                        size_t cap)
{
    (void)nin, (void)c;
    const ad_shape *big = NULL;
    bool ok = true;
    for (int k = 0; k < 3; k++) {
        if (in[k].ndim == 0)
            continue;
        if (!big)
            big = &in[k];
        else
            ok &= same_shape(*big, in[k]);
    }
    if (!ok) {
        char s0[48], s1[48], s2[48];
        return ad__shape_fail(msg, cap,
                              "cond is %s, a is %s and b is %s (each must be a scalar or the "
                              "one shape of the others)",
                              ad__shape_str(in[0], s0, sizeof s0),
                              ad__shape_str(in[1], s1, sizeof s1),
                              ad__shape_str(in[2], s2, sizeof s2));
    }
    *out = big ? *big : in[0];
    return AD_OK;
}

/* Operand k's stride over the output's elements: 0 for a broadcast scalar. */
static size_t stride(const ad_call *k, int i)
{
    return ad_shape_size(k->in[i].shape) == 1 && ad_shape_size(k->out.shape) != 1 ? 0 : 1;
}

static void select_fwd(const ad_call *k)
{
    const size_t n = ad_shape_size(k->out.shape);
    const double *c = k->in[0].val, *a = k->in[1].val, *b = k->in[2].val;
    const size_t sc = stride(k, 0), sa = stride(k, 1), sb = stride(k, 2);
    double *z = k->out.val;
    for (size_t i = 0; i < n; i++)
        z[i] = c[i * sc] != 0.0 ? a[i * sa] : b[i * sb];
}

/* Operand i (1: a, taken where cond != 0; 2: b, where cond == 0) gets g
 * where it is taken and nothing elsewhere: written 0 into a fresh buffer,
 * never a product with 0. A broadcast scalar operand gets the sum of g
 * over the elements where it is taken (0 when it is taken nowhere). */
static void branch_vjp(const ad_call *k, int i, bool fresh)
{
    double *gi = k->in[i].grad;
    if (!gi)
        return;
    const size_t n = ad_shape_size(k->out.shape), sc = stride(k, 0);
    const double *c = k->in[0].val, *g = k->out.grad;
    const bool want = i == 1; /* the value of cond != 0 that takes operand i */
    if (stride(k, i) == 0) {
        double s = 0.0;
        for (size_t j = 0; j < n; j++)
            if ((c[j * sc] != 0.0) == want)
                s += g[j];
        gi[0] = fresh ? s : gi[0] + s;
    } else if (fresh) {
        for (size_t j = 0; j < n; j++)
            gi[j] = (c[j * sc] != 0.0) == want ? g[j] : 0.0;
    } else {
        for (size_t j = 0; j < n; j++)
            if ((c[j * sc] != 0.0) == want)
                gi[j] += g[j];
    }
}

static void select_vjp_to(const ad_call *k, unsigned fresh)
{
    /* cond: derivative 0. A fresh buffer (a variable used as a mask) is
     * written with zeros; otherwise nothing is added. */
    if (k->in[0].grad && AD__FRESH(fresh, 0))
        memset(k->in[0].grad, 0, ad_shape_size(k->in[0].shape) * sizeof(double));
    branch_vjp(k, 1, AD__FRESH(fresh, 1));
    branch_vjp(k, 2, AD__FRESH(fresh, 2));
}
AD__VJP_ADDING(select)

/* Forward mode: the select of the tangents (cond's is 0, and never read). */
static void select_jvp(const ad_call *k, const double *const *tin, double *tout,
                       double *scratch)
{
    (void)scratch;
    const size_t n = ad_shape_size(k->out.shape);
    const double *c = k->in[0].val, *ta = tin[1], *tb = tin[2];
    const size_t sc = stride(k, 0), sa = stride(k, 1), sb = stride(k, 2);
    for (size_t i = 0; i < n; i++) {
        const double *t = c[i * sc] != 0.0 ? ta : tb;
        tout[i] = t ? t[i * (t == ta ? sa : sb)] : 0.0;
    }
}

/* The vjp as recorded ops: da = select(cond, g, 0), db = select(cond, 0, g),
 * in the output's shape (the caller sums a broadcast operand back). */
static void select_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    (void)out, (void)c;
    const ad_node zero = ad_scalar(t, 0.0);
    if (ad_node_requires_grad(t, in[1]))
        dx[1] = ad_select(t, in[0], g, zero);
    if (ad_node_requires_grad(t, in[2]))
        dx[2] = ad_select(t, in[0], zero, g);
}

/* Second order: the vjp is linear in g and does not depend on a or b
 * (cond's tangent is 0), so there is no second-order term (AD__LINEAR);
 * the jvp is its own, since the forward at the tangents would read cond's
 * tangent as the condition. */
const ad__op ad__op_select = {{"select", 3, select_shape, select_fwd, select_vjp, NULL,
                               AD__NO_MODE_RULES},
                              false, false, select_vjp_to, select_jvp, AD__LINEAR, NULL,
                              select_rvjp};

ad_node ad_select(ad_tape *t, ad_node cond, ad_node a, ad_node b)
{
    const ad_node in[3] = {cond, a, b};
    return ad__record(t, AD_OP_SELECT, &ad__op_select.def, in, 3, 0.0);
}
