/* ops_reduce.c -- reductions to a scalar: sum, mean, dot. */
#include "internal.h"
#include "kernels.h"

static int scalar_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                        size_t cap)
{
    (void)in, (void)nin, (void)c, (void)msg, (void)cap;
    *out = ad_shape_scalar();
    return AD_OK;
}

/* y = sum_i x_i;  dx_i += dy */
static void sum_fwd(const ad_call *k)
{
    k->out.val[0] = ad__ksum(k->in[0].val, ad_shape_size(k->in[0].shape));
}
/* dx_i (+)= g for every i. */
static void fill_to(double *gx, double g, size_t n, int assign)
{
    if (assign)
        for (size_t i = 0; i < n; i++)
            gx[i] = g;
    else
        for (size_t i = 0; i < n; i++)
            gx[i] += g;
}
static void sum_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad)
        fill_to(k->in[0].grad, k->out.grad[0], ad_shape_size(k->in[0].shape), AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(sum)
/* dx = g 1 (g broadcast over x's shape) */
static void sum_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g, ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_mul(t, g, ad__fill(t, ad_node_shape(t, in[0]), 1.0));
}
const ad__op ad__op_sum = {{"sum", 1, scalar_shape, sum_fwd, sum_vjp, NULL, AD__NO_MODE_RULES}, false, false,
                           sum_vjp_to, NULL, AD__LINEAR, NULL, sum_rvjp};

/* y = (1/n) sum_i x_i;  dx_i += dy / n */
static void mean_fwd(const ad_call *k)
{
    size_t n = ad_shape_size(k->in[0].shape);
    k->out.val[0] = ad__ksum(k->in[0].val, n) / (double)n;
}
static void mean_vjp_to(const ad_call *k, unsigned fresh)
{
    size_t n = ad_shape_size(k->in[0].shape);
    if (k->in[0].grad)
        fill_to(k->in[0].grad, k->out.grad[0] / (double)n, n, AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(mean)
static void mean_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g, ad_node *dx)
{
    (void)out, (void)c;
    const ad_shape s = ad_node_shape(t, in[0]);
    dx[0] = ad_mul(t, g, ad__fill(t, s, 1.0 / (double)ad_shape_size(s)));
}
const ad__op ad__op_mean = {{"mean", 1, scalar_shape, mean_fwd, mean_vjp, NULL, AD__NO_MODE_RULES}, false, false,
                            mean_vjp_to, NULL, AD__LINEAR, NULL, mean_rvjp};

/* y = sum_i u_i v_i;  du += dy v;  dv += dy u */
static int dot_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    char sa[48], sb[48];
    if (in[0].ndim != in[1].ndim || in[0].rows != in[1].rows || in[0].cols != in[1].cols)
        return ad__shape_fail(msg, cap, "u is %s but v is %s", ad__shape_str(in[0], sa, sizeof sa),
                              ad__shape_str(in[1], sb, sizeof sb));
    *out = ad_shape_scalar();
    return AD_OK;
}
static void dot_fwd(const ad_call *k)
{
    k->out.val[0] = ad__kdot(k->in[0].val, k->in[1].val, ad_shape_size(k->in[0].shape));
}
static void dot_vjp_to(const ad_call *k, unsigned fresh)
{
    const double g = k->out.grad[0];
    size_t n = ad_shape_size(k->in[0].shape);
    if (k->in[0].grad)
        ad__kaxpy_to(k->in[0].grad, g, k->in[1].val, n, AD__FRESH(fresh, 0));
    if (k->in[1].grad)
        ad__kaxpy_to(k->in[1].grad, g, k->in[0].val, n, AD__FRESH(fresh, 1));
}
AD__VJP_ADDING(dot)
/* du = g v, dv = g u */
static void dot_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g, ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_mul(t, g, in[1]);
    dx[1] = ad_mul(t, g, in[0]);
}
const ad__op ad__op_dot = {{"dot", 2, dot_shape, dot_fwd, dot_vjp, NULL, AD__NO_MODE_RULES}, false, false,
                           dot_vjp_to, NULL, AD__BILINEAR, NULL, dot_rvjp};
