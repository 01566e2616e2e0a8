/* ops_elementwise.c -- elementwise ops: unary (with an optional constant c)
 * and binary with scalar and row broadcasting.
 *
 * Every op has two forms that compute the same thing:
 *  - an inline scalar form (sfwd/svjp) on nodes that hold their value and
 *    adjoint, used when all operands are inline scalars;
 *  - a tensor form (forward/vjp on an ad_call) with one tight loop over
 *    the elements -- no function call per element.
 * Each is generated from one formula, so the two cannot disagree.
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

int ad__shape_fail(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return AD_ESHAPE;
}

/* ---- leaves: no forward, no vjp ---- */

static void nop_call(const ad_call *k) { (void)k; }
static void nop_sfwd(const ad_tape *t, ad__node *n) { (void)t; (void)n; }
static void nop_svjp(const ad_tape *t, const ad__node *n) { (void)t; (void)n; }

const ad__op ad__op_leaf = {{"leaf", 0, NULL, nop_call, nop_call, NULL}, nop_sfwd, nop_svjp, false};

/* ---- unary ----
 * FWD: y from x (and c); DER: dy/dx from x, y (and c). */
#define UNARY_OP(NAME, TAKES_C, FWD, DER)                                                     \
    static void NAME##_fwd(const ad_call *k)                                                  \
    {                                                                                         \
        const double *xs = k->in[0].val;                                                      \
        double *ys = k->out.val;                                                              \
        const double c = k->c;                                                                \
        const size_t n = ad_shape_size(k->out.shape);                                         \
        (void)c;                                                                              \
        for (size_t i = 0; i < n; i++) {                                                      \
            const double x = xs[i];                                                           \
            ys[i] = (FWD);                                                                    \
        }                                                                                     \
    }                                                                                         \
    static void NAME##_vjp(const ad_call *k)                                                  \
    {                                                                                         \
        double *gx = k->in[0].grad;                                                           \
        if (!gx)                                                                              \
            return;                                                                           \
        const double *xs = k->in[0].val, *ys = k->out.val, *gy = k->out.grad;                 \
        const double c = k->c;                                                                \
        const size_t n = ad_shape_size(k->out.shape);                                         \
        (void)c;                                                                              \
        for (size_t i = 0; i < n; i++) {                                                      \
            const double x = xs[i], y = ys[i];                                                \
            (void)x;                                                                          \
            (void)y;                                                                          \
            gx[i] += gy[i] * (DER);                                                           \
        }                                                                                     \
    }                                                                                         \
    static void NAME##_sfwd(const ad_tape *t, ad__node *o)                                    \
    {                                                                                         \
        const double x = ad__N(t, ad__a(o->h))->v;                                            \
        const double c = (TAKES_C) ? t->consts[ad__b(o->h)] : 0.0;                            \
        (void)c;                                                                              \
        o->v = (FWD);                                                                         \
    }                                                                                         \
    static void NAME##_svjp(const ad_tape *t, const ad__node *o)                              \
    {                                                                                         \
        ad__node *a = ad__N(t, ad__a(o->h));                                                  \
        const double x = a->v, y = o->v;                                                      \
        const double c = (TAKES_C) ? t->consts[ad__b(o->h)] : 0.0;                            \
        (void)x;                                                                              \
        (void)y;                                                                              \
        (void)c;                                                                              \
        a->g += o->g * (DER);                                                                 \
    }                                                                                         \
    const ad__op ad__op_##NAME = {{#NAME, 1, NULL, NAME##_fwd, NAME##_vjp, NULL},             \
                                  NAME##_sfwd, NAME##_svjp, (TAKES_C)};

UNARY_OP(neg, false, -x, -1.0)                          /* y = -x;       dx += -dy       */
UNARY_OP(scale, true, c * x, c)                         /* y = c x;      dx += c dy      */
UNARY_OP(addc, true, x + c, 1.0)                        /* y = x + c;    dx += dy        */
UNARY_OP(square, false, x * x, 2.0 * x)                 /* y = x^2;      dx += 2x dy     */
UNARY_OP(sqrt, false, sqrt(x), 0.5 / y)                 /* y = sqrt x;   dx += dy/(2y)   */
UNARY_OP(exp, false, exp(x), y)                         /* y = e^x;      dx += y dy      */
UNARY_OP(log, false, log(x), 1.0 / x)                   /* y = ln x;     dx += dy/x      */
UNARY_OP(tanh, false, tanh(x), 1.0 - y * y)             /* y = tanh x;   dx += (1-y^2)dy */
UNARY_OP(sigmoid, false, 1.0 / (1.0 + exp(-x)), y * (1.0 - y)) /* dx += y(1-y) dy        */
UNARY_OP(relu, false, x > 0.0 ? x : 0.0, x > 0.0 ? 1.0 : 0.0)  /* relu'(0) = 0           */
UNARY_OP(abs, false, fabs(x), x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0)) /* abs'(0) = 0     */
UNARY_OP(powc, true, pow(x, c), c * pow(x, c - 1.0))    /* y = x^c;      dx += c x^(c-1) dy */

/* ---- binary ----
 * Operands broadcast by strides over an R x C view of the output:
 * same shape: both (0,1) over 1 x N; a scalar: a (0,0); b scalar: b (0,0);
 * matrix (m x n) + vector (n): R = m, C = n, a (n,1), b (0,1). */
typedef struct bcast {
    size_t R, C;
    size_t ars, acs, brs, bcs;
} bcast;

static bcast bcast_of(const ad_call *k)
{
    ad_shape a = k->in[0].shape, b = k->in[1].shape, o = k->out.shape;
    size_t n = ad_shape_size(o);
    bcast s = {1, n, 0, 1, 0, 1};
    if (ad_shape_size(a) == 1 && n != 1)
        s.acs = 0;
    else if (ad_shape_size(b) == 1 && n != 1)
        s.bcs = 0;
    else if (a.ndim == 2 && b.ndim == 1 && n != ad_shape_size(b)) {
        s.R = a.rows;
        s.C = a.cols;
        s.ars = a.cols;
    }
    return s;
}

/* DA, DB: d(out)/da and d(out)/db from x = a, y = b, z = out. */
#define BINARY_OP(NAME, FWD, DA, DB)                                                          \
    static void NAME##_fwd(const ad_call *k)                                                  \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val;                                  \
        double *zs = k->out.val;                                                              \
        for (size_t r = 0; r < s.R; r++) /* out: (R, C) */                                    \
            for (size_t j = 0; j < s.C; j++) {                                                \
                const double x = as[r * s.ars + j * s.acs], y = bs[r * s.brs + j * s.bcs];    \
                zs[r * s.C + j] = (FWD);                                                      \
            }                                                                                 \
    }                                                                                         \
    static void NAME##_vjp(const ad_call *k)                                                  \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val, *zs = k->out.val;               \
        const double *gz = k->out.grad;                                                       \
        double *ga = k->in[0].grad, *gb = k->in[1].grad;                                      \
        if (ga)                                                                               \
            for (size_t r = 0; r < s.R; r++)                                                  \
                for (size_t j = 0; j < s.C; j++) {                                            \
                    const size_t ia = r * s.ars + j * s.acs, o = r * s.C + j;                 \
                    const double x = as[ia], y = bs[r * s.brs + j * s.bcs], z = zs[o];        \
                    (void)x, (void)y, (void)z;                                                \
                    ga[ia] += gz[o] * (DA);                                                   \
                }                                                                             \
        if (gb)                                                                               \
            for (size_t r = 0; r < s.R; r++)                                                  \
                for (size_t j = 0; j < s.C; j++) {                                            \
                    const size_t ib = r * s.brs + j * s.bcs, o = r * s.C + j;                 \
                    const double x = as[r * s.ars + j * s.acs], y = bs[ib], z = zs[o];        \
                    (void)x, (void)y, (void)z;                                                \
                    gb[ib] += gz[o] * (DB);                                                   \
                }                                                                             \
    }                                                                                         \
    static void NAME##_sfwd(const ad_tape *t, ad__node *o)                                    \
    {                                                                                         \
        const double x = ad__N(t, ad__a(o->h))->v, y = ad__N(t, ad__b(o->h))->v;              \
        o->v = (FWD);                                                                         \
    }                                                                                         \
    static void NAME##_svjp(const ad_tape *t, const ad__node *o)                              \
    {                                                                                         \
        ad__node *a = ad__N(t, ad__a(o->h)), *b = ad__N(t, ad__b(o->h));                      \
        const double x = a->v, y = b->v, z = o->v, g = o->g;                                  \
        (void)x, (void)y, (void)z;                                                            \
        a->g += g * (DA);                                                                     \
        b->g += g * (DB);                                                                     \
    }                                                                                         \
    const ad__op ad__op_##NAME = {{#NAME, 2, NAME##_shape, NAME##_fwd, NAME##_vjp, NULL},     \
                                  NAME##_sfwd, NAME##_svjp, false};

/* Same shapes, or a scalar against anything; with_row: also a matrix
 * (m x n) and a vector (n). */
static int bcast_shape(const ad_shape *in, ad_shape *out, char *msg, size_t cap, bool with_row)
{
    ad_shape a = in[0], b = in[1];
    char sa[48], sb[48];
    if (a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols) {
        *out = a;
        return AD_OK;
    }
    if (a.ndim == 0) {
        *out = b;
        return AD_OK;
    }
    if (b.ndim == 0) {
        *out = a;
        return AD_OK;
    }
    if (with_row && a.ndim == 2 && b.ndim == 1 && b.rows == a.cols) {
        *out = a;
        return AD_OK;
    }
    return ad__shape_fail(msg, cap, "a is %s but b is %s%s", ad__shape_str(a, sa, sizeof sa),
                          ad__shape_str(b, sb, sizeof sb),
                          with_row && a.ndim == 2 && b.ndim == 1
                              ? " (a row vector must match the matrix's columns)"
                              : "");
}

static int add_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    return bcast_shape(in, out, msg, cap, true);
}
#define sub_shape elementwise_shape
#define mul_shape elementwise_shape
#define div_shape elementwise_shape
static int elementwise_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                             size_t cap)
{
    (void)nin, (void)c;
    return bcast_shape(in, out, msg, cap, false);
}

BINARY_OP(add, x + y, 1.0, 1.0)            /* z = a + b;  da += dz;     db += dz        */
BINARY_OP(sub, x - y, 1.0, -1.0)           /* z = a - b;  da += dz;     db -= dz        */
BINARY_OP(mul, x * y, y, x)                /* z = a b;    da += b dz;   db += a dz      */
BINARY_OP(div, x / y, 1.0 / y, -z / y)     /* z = a / b;  da += dz/b;   db -= z dz / b  */
