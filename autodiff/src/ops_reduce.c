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
static void sum_vjp(const ad_call *k)
{
    double *gx = k->in[0].grad;
    const double g = k->out.grad[0];
    if (gx)
        for (size_t i = 0, n = ad_shape_size(k->in[0].shape); i < n; i++)
            gx[i] += g;
}
const ad__op ad__op_sum = {{"sum", 1, scalar_shape, sum_fwd, sum_vjp, NULL}, false, false};

/* y = (1/n) sum_i x_i;  dx_i += dy / n */
static void mean_fwd(const ad_call *k)
{
    size_t n = ad_shape_size(k->in[0].shape);
    k->out.val[0] = ad__ksum(k->in[0].val, n) / (double)n;
}
static void mean_vjp(const ad_call *k)
{
    double *gx = k->in[0].grad;
    size_t n = ad_shape_size(k->in[0].shape);
    const double g = k->out.grad[0] / (double)n;
    if (gx)
        for (size_t i = 0; i < n; i++)
            gx[i] += g;
}
const ad__op ad__op_mean = {{"mean", 1, scalar_shape, mean_fwd, mean_vjp, NULL}, false, false};

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
static void dot_vjp(const ad_call *k)
{
    const double g = k->out.grad[0];
    size_t n = ad_shape_size(k->in[0].shape);
    if (k->in[0].grad)
        ad__kaxpy(k->in[0].grad, g, k->in[1].val, n);
    if (k->in[1].grad)
        ad__kaxpy(k->in[1].grad, g, k->in[0].val, n);
}
const ad__op ad__op_dot = {{"dot", 2, dot_shape, dot_fwd, dot_vjp, NULL}, false, false};
