/* ops_elementwise.c -- elementwise ops: their descriptors, tensor kernels
 * and recording functions, all generated from the formulas in
 * scalar_ops.h so the scalar and tensor forms cannot disagree.
 *
 * Tensor kernels are one tight loop over the elements (no call per
 * element). Binary ops broadcast a scalar operand, and add also a vector
 * over the rows of a matrix (a bias). */
#include "internal.h"
#include "scalar_ops.h"

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
static void nop_vjp_to(const ad_call *k, unsigned fresh) { (void)k, (void)fresh; }
const ad__op ad__op_leaf = {{"leaf", 0, NULL, nop_call, nop_call, NULL}, true, false, nop_vjp_to};

/* ---- unary tensor kernels ---- */

#define TENSOR_UNARY(NAME, CODE, TAKES_C, FWD, DER)                                           \
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
    static void NAME##_vjp_to(const ad_call *k, unsigned fresh)                               \
    {                                                                                         \
        double *gx = k->in[0].grad;                                                           \
        if (!gx)                                                                              \
            return;                                                                           \
        const double *xs = k->in[0].val, *ys = k->out.val, *gy = k->out.grad;                 \
        const double c = k->c;                                                                \
        const size_t n = ad_shape_size(k->out.shape);                                         \
        const int fx = AD__FRESH(fresh, 0); /* loop-invariant: the compiler unswitches */    \
        (void)c;                                                                              \
        for (size_t i = 0; i < n; i++) {                                                      \
            const double x = xs[i], y = ys[i];                                                \
            (void)x, (void)y;                                                                 \
            gx[i] = (fx ? 0.0 : gx[i]) + gy[i] * (DER);                                       \
        }                                                                                     \
    }                                                                                         \
    AD__VJP_ADDING(NAME)                                                                      \
    const ad__op ad__op_##NAME = {{#NAME, 1, NULL, NAME##_fwd, NAME##_vjp, NULL}, true, (TAKES_C), \
                                  NAME##_vjp_to};

AD__UNARY_OPS(TENSOR_UNARY)

/* ---- binary tensor kernels ----
 * Operands are read by strides over an R x C view of the output:
 * same shape: 1 x N, both (0,1); a scalar: a (0,0); b scalar: b (0,0);
 * matrix (m x n) + vector (n): m x n, a (n,1), b (0,1). */
typedef struct bcast {
    size_t R, C;
    size_t ars, acs, brs, bcs;
} bcast;

static bcast bcast_of(const ad_call *k)
{
    ad_shape a = k->in[0].shape, b = k->in[1].shape;
    size_t n = ad_shape_size(k->out.shape);
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

/* Whether operand i's fresh gradient can be written in the loop: yes when
 * each of its elements gets one contribution; a broadcast operand gets
 * several, so it is zeroed here and added to. */
static int assign_ok(const ad_call *k, unsigned fresh, int i)
{
    if (!AD__FRESH(fresh, i))
        return 0;
    if (ad_shape_size(k->in[i].shape) == ad_shape_size(k->out.shape))
        return 1;
    ad__zero_fresh(k, 1u << i);
    return 0;
}

#define TENSOR_BINARY(NAME, CODE, FWD, DA, DB)                                                \
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
    static void NAME##_vjp_to(const ad_call *k, unsigned fresh)                               \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val, *zs = k->out.val;               \
        const double *gz = k->out.grad;                                                       \
        double *ga = k->in[0].grad, *gb = k->in[1].grad;                                      \
        const int fa = assign_ok(k, fresh, 0), fb = assign_ok(k, fresh, 1);                   \
        for (size_t r = 0; r < s.R; r++)                                                      \
            for (size_t j = 0; j < s.C; j++) {                                                \
                const size_t ia = r * s.ars + j * s.acs, ib = r * s.brs + j * s.bcs;          \
                const size_t o = r * s.C + j;                                                 \
                const double x = as[ia], y = bs[ib], z = zs[o];                               \
                (void)x, (void)y, (void)z;                                                    \
                if (ga)                                                                       \
                    ga[ia] = (fa ? 0.0 : ga[ia]) + gz[o] * (DA);                              \
                if (gb)                                                                       \
                    gb[ib] = (fb ? 0.0 : gb[ib]) + gz[o] * (DB);                              \
            }                                                                                 \
    }                                                                                         \
    AD__VJP_ADDING(NAME)                                                                      \
    const ad__op ad__op_##NAME = {{#NAME, 2, NAME##_shape, NAME##_fwd, NAME##_vjp, NULL}, true, \
                                  false, NAME##_vjp_to};

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
                              ? " (a vector added to a matrix must match its columns)"
                              : "");
}

static int add_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    return bcast_shape(in, out, msg, cap, true);
}
static int same_or_scalar_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                                size_t cap)
{
    (void)nin, (void)c;
    return bcast_shape(in, out, msg, cap, false);
}
#define sub_shape same_or_scalar_shape
#define mul_shape same_or_scalar_shape
#define div_shape same_or_scalar_shape

AD__BINARY_OPS(TENSOR_BINARY)

/* ---- recording ----
 * Fast path: operands are valid inline scalars and the current chunk has
 * room, so the node is written here with the kernel inlined. Anything else
 * (tensors, errors, growth) goes through ad__record. The handle test is
 * one subtraction (see hbase); an error zeroes rec_limit, so no status
 * test is needed either. */

/* The general path, kept out of line so the fast path stays small. */
static AD__COLD ad_node rec_slow(ad_tape *t, unsigned code, ad_node x, ad_node y, int n, double c)
{
    ad_node in[2] = {x, y};
    return ad__record(t, code, &ad__ops[code]->def, in, n, c);
}

AD__INLINE ad_node rec_unary(ad_tape *t, unsigned code, bool takes_c, ad_node x, double c)
{
    if (t) {
        const size_t len = t->len;
        if (len < t->rec_limit && ad__hbits(x) - t->hbase < len - 1
            && (!takes_c || t->nconsts < t->cap_consts)) {
            void *const *ch = t->nodes.chunk;
            const ad__node *a = ad__Nc(ch, x.id_);
            const uint64_t ha = a->h;
            if (!(ha & AD__EXT)) {
                uint32_t b = 0;
                if (takes_c) {
                    if (!ad__const_repeats(t, c))
                        t->consts[t->nconsts++] = c;
                    b = (uint32_t)t->nconsts - 1;
                }
                ad__node *o = ad__Nc(ch, (uint32_t)len);
                o->h = ad__hdr(code, ha & AD__GRAD, x.id_, b);
                o->v = ad__sval(code, a->v, 0.0, c);
                o->g = 0;
                t->len = len + 1;
                return ad__handle(t, (uint32_t)len);
            }
        }
    }
    return rec_slow(t, code, x, x, 1, c);
}

AD__INLINE ad_node rec_binary(ad_tape *t, unsigned code, ad_node x, ad_node y)
{
    if (t) {
        const size_t len = t->len;
        const uint64_t base = t->hbase;
        if (len < t->rec_limit && ad__hbits(x) - base < len - 1 && ad__hbits(y) - base < len - 1) {
            void *const *ch = t->nodes.chunk;
            const ad__node *a = ad__Nc(ch, x.id_), *b = ad__Nc(ch, y.id_);
            const uint64_t ha = a->h, hb = b->h;
            if (!((ha | hb) & AD__EXT)) {
                ad__node *o = ad__Nc(ch, (uint32_t)len);
                o->h = ad__hdr(code, (ha | hb) & AD__GRAD, x.id_, y.id_);
                o->v = ad__sval(code, a->v, b->v, 0.0);
                o->g = 0;
                t->len = len + 1;
                return ad__handle(t, (uint32_t)len);
            }
        }
    }
    return rec_slow(t, code, x, y, 2, 0.0);
}

ad_node ad_add(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_ADD, a, b); }
ad_node ad_sub(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_SUB, a, b); }
ad_node ad_mul(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_MUL, a, b); }
ad_node ad_div(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_DIV, a, b); }
ad_node ad_neg(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_NEG, false, x, 0.0); }
ad_node ad_scale(ad_tape *t, ad_node x, double c) { return rec_unary(t, AD_OP_SCALE, true, x, c); }
ad_node ad_add_const(ad_tape *t, ad_node x, double c) { return rec_unary(t, AD_OP_ADDC, true, x, c); }
ad_node ad_square(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SQUARE, false, x, 0.0); }
ad_node ad_sqrt(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SQRT, false, x, 0.0); }
ad_node ad_exp(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_EXP, false, x, 0.0); }
ad_node ad_log(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_LOG, false, x, 0.0); }
ad_node ad_tanh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_TANH, false, x, 0.0); }
ad_node ad_sigmoid(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SIGMOID, false, x, 0.0); }
ad_node ad_relu(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_RELU, false, x, 0.0); }
ad_node ad_abs(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ABS, false, x, 0.0); }
ad_node ad_pow_const(ad_tape *t, ad_node x, double p) { return rec_unary(t, AD_OP_POWC, true, x, p); }
