/* ops_elementwise.c -- elementwise ops: their descriptors, tensor kernels
 * and recording functions, all generated from the formulas in
 * scalar_ops.h so the scalar and tensor forms cannot disagree.
 *
 * Tensor kernels are one tight loop over the elements (no call per
 * element). Binary ops broadcast by one rule: a scalar, a row (a vector)
 * or a column (an m x 1 matrix) against a matrix, on either side
 * (broadcast_shape). */
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
const ad__op ad__op_leaf = {{"leaf", 0, NULL, nop_call, nop_call, NULL, AD__NO_MODE_RULES}, true, false, nop_vjp_to,
                             NULL, AD__LINEAR, NULL, NULL};

/* ---- unary tensor kernels ---- */

#define TENSOR_UNARY(NAME, CODE, TAKES_C, FWD, DER, D2, GOPS)                                         \
    static void NAME##_fwd(const ad_call *k)                                                  \
    {                                                                                         \
        NAME##_fwd_loop(k->out.val, k->in[0].val, k->c, ad_shape_size(k->out.shape));        \
    }                                                                                         \
    static void NAME##_vjp_to(const ad_call *k, unsigned fresh)                               \
    {                                                                                         \
        if (k->in[0].grad)                                                                    \
            NAME##_vjp_loop(k->in[0].grad, k->in[0].val, k->out.val, k->out.grad, k->c,       \
                            ad_shape_size(k->out.shape), AD__FRESH(fresh, 0));                \
    }                                                                                         \
    AD__VJP_ADDING(NAME)                                                                      \
    /* tangent: ty = f'(x) tx */                                                              \
    static void NAME##_jvp(const ad_call *k, const double *const *tin, double *tout,          \
                           double *scratch)                                                   \
    {                                                                                         \
        const size_t n = ad_shape_size(k->out.shape);                                         \
        const double *xs = k->in[0].val, *ys = k->out.val, *tx = tin[0];                      \
        const double c = k->c;                                                                \
        (void)scratch, (void)c;                                                               \
        for (size_t i = 0; i < n; i++) {                                                      \
            const double x = xs[i], y = ys[i];                                                \
            (void)x, (void)y;                                                                 \
            tout[i] = tx ? (DER) * tx[i] : 0.0;                                               \
        }                                                                                     \
    }                                                                                         \
    /* second order: tgx += gy f''(x) tx */                                                   \
    static void NAME##_so(const ad_call *k, const double *const *tin, double *const *tg)      \
    {                                                                                         \
        const size_t n = ad_shape_size(k->out.shape);                                         \
        const double *xs = k->in[0].val, *ys = k->out.val, *gy = k->out.grad, *tx = tin[0];   \
        const double c = k->c;                                                                \
        (void)c;                                                                              \
        if (tg[0])                                                                            \
            for (size_t i = 0; i < n; i++) {                                                  \
                const double x = xs[i], y = ys[i];                                            \
                (void)x, (void)y;                                                             \
                if (gy[i] != 0.0)                                                             \
                    tg[0][i] += gy[i] * (D2) * tx[i];                                         \
            }                                                                                 \
    }                                                                                         \
    /* the vjp as recorded ops: dx = g f'(x) */                                               \
    static void NAME##_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,  \
                            ad_node *dx)                                                      \
    {                                                                                         \
        const ad_node xn = in[0], yn = out;                                                   \
        (void)t, (void)g, (void)xn, (void)yn, (void)c;                                        \
        dx[0] = (GOPS);                                                                       \
    }                                                                                         \
    const ad__op ad__op_##NAME = {{#NAME, 1, NULL, NAME##_fwd, NAME##_vjp, NULL, AD__NO_MODE_RULES}, true, (TAKES_C), \
                                  NAME##_vjp_to, NAME##_jvp, AD__SO_FN, NAME##_so, NAME##_rvjp};

/* A zero adjoint contributes exactly zero ("strong zero"): g * d
 * is 0, not NaN, where the local derivative d is infinite or NaN -- as on
 * the inline path, whose sweep skips a zero adjoint. This is what keeps a
 * select's untaken branch harmless: it sends that branch an adjoint of 0,
 * and log(x) at x = 0 (d = inf) or sqrt(x) at x < 0 (d = NaN) there must
 * pass 0 on, not 0 * inf = NaN (docs/math.md, "Conditionals and replay
 * guards"). A compare and a blend per element; the loops still vectorize. */
#define AD__SZMUL(g, d) ((g) == 0.0 ? 0.0 : (g) * (d))

/* The loops, with restrict parameters so that compilers vectorize them;
 * the writing form (a fresh gradient) is a loop of its own. */
#define UNARY_LOOPS(NAME, CODE, TAKES_C, FWD, DER, D2, GOPS)                                          \
    static inline void NAME##_fwd_loop(double *restrict ys, const double *restrict xs,        \
                                       double c, size_t n)                                    \
    {                                                                                         \
        (void)c;                                                                              \
        for (size_t i = 0; i < n; i++) {                                                      \
            const double x = xs[i];                                                           \
            ys[i] = (FWD);                                                                    \
        }                                                                                     \
    }                                                                                         \
    static inline void NAME##_vjp_loop(double *restrict gx, const double *restrict xs,        \
                                       const double *restrict ys, const double *restrict gy,  \
                                       double c, size_t n, int assign)                        \
    {                                                                                         \
        (void)c;                                                                              \
        if (assign)                                                                           \
            for (size_t i = 0; i < n; i++) {                                                  \
                const double x = xs[i], y = ys[i];                                            \
                (void)x, (void)y;                                                             \
                const double d = (DER); /* apart: a select of constants */                    \
                gx[i] = AD__SZMUL(gy[i], d);                                                  \
            }                                                                                 \
        else                                                                                  \
            for (size_t i = 0; i < n; i++) {                                                  \
                const double x = xs[i], y = ys[i];                                            \
                (void)x, (void)y;                                                             \
                const double d = (DER);                                                       \
                gx[i] += AD__SZMUL(gy[i], d);                                                 \
            }                                                                                 \
    }

AD__UNARY_OPS(UNARY_LOOPS)
AD__UNARY_OPS(TENSOR_UNARY)

/* ---- binary tensor kernels ----
 * Every binary op broadcasts by one rule (broadcast_shape, below): each
 * operand is seen as rows x cols -- a scalar 1 x 1, a vector of n a row
 * 1 x n, a matrix as it is -- and each dimension must be equal in both or
 * 1 in one, which is then repeated. The kernels read the operands by
 * strides (rs, cs) over an R x C view of the output:
 *   all of the output's elements:  1 x N, (0, 1), or (C, 1) in R x C
 *   one element (a scalar):        (0, 0)
 *   a row (a vector, or 1 x C):    R x C, (0, 1)
 *   a column (R x 1):              R x C, (1, 0)
 * Same sizes take the first form, one unit-stride loop (the fast path). */
typedef struct bcast {
    size_t R, C;
    size_t ars, acs, brs, bcs;
} bcast;

/* An operand's strides in the R x C view of an output of n elements. */
static void bcast_strides(ad_shape s, size_t n, size_t C, size_t *rs, size_t *cs)
{
    const size_t m = ad_shape_size(s);
    if (m == n)
        *rs = C, *cs = 1;
    else if (m == 1)
        *rs = 0, *cs = 0;
    else if (s.ndim == 2 && s.cols == 1) /* a column */
        *rs = 1, *cs = 0;
    else /* a row */
        *rs = 0, *cs = 1;
}

static bcast bcast_of(const ad_call *k)
{
    const ad_shape a = k->in[0].shape, b = k->in[1].shape, o = k->out.shape;
    const size_t n = ad_shape_size(o), na = ad_shape_size(a), nb = ad_shape_size(b);
    bcast s = {1, n, 0, 1, 0, 1};
    if (na == n && nb == n)
        return s;
    if ((na == n || na == 1) && (nb == n || nb == 1)) { /* a scalar against the other */
        s.acs = na == n;
        s.bcs = nb == n;
        return s;
    }
    /* a row or a column against a matrix (the output is one) */
    s.R = o.rows;
    s.C = o.cols;
    bcast_strides(a, n, s.C, &s.ars, &s.acs);
    bcast_strides(b, n, s.C, &s.brs, &s.bcs);
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

/* One row of C elements: operand a read with stride sa, b with sb (0 or
 * 1); the unit-stride case is a loop of its own so it vectorizes. The
 * gradient rows write or add into one operand's gradient g (stride gs,
 * that operand's stride), so two operands that are one node never meet
 * in one loop. */
#define BINARY_LOOPS(NAME, CODE, FWD, DA, DB, DAA, DAB, DBB, GA, GB)                                               \
    static inline void NAME##_fwd_row(double *restrict zs, const double *restrict as,         \
                                      size_t sa, const double *restrict bs, size_t sb,        \
                                      size_t n)                                               \
    {                                                                                         \
        if (sa == 1 && sb == 1)                                                               \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j], y = bs[j];                                            \
                zs[j] = (FWD);                                                                \
            }                                                                                 \
        else if (sa == 1 && sb == 0) { /* b one number along the row */                      \
            const double y = bs[0];                                                           \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j];                                                       \
                zs[j] = (FWD);                                                                \
            }                                                                                 \
        } else if (sa == 0 && sb == 1) {                                                      \
            const double x = as[0];                                                           \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double y = bs[j];                                                       \
                zs[j] = (FWD);                                                                \
            }                                                                                 \
        } else                                                                                \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j * sa], y = bs[j * sb];                                  \
                zs[j] = (FWD);                                                                \
            }                                                                                 \
    }                                                                                         \
    BINARY_GRAD_ROW(NAME, a, DA)                                                              \
    BINARY_GRAD_ROW(NAME, b, DB)

#define BINARY_GRAD_ROW(NAME, WHICH, DER)                                                     \
    static inline void NAME##_grad_##WHICH(double *restrict g, size_t gs,                    \
                                           const double *restrict as, size_t sa,              \
                                           const double *restrict bs, size_t sb,              \
                                           const double *restrict zs,                         \
                                           const double *restrict gz, size_t n, int assign)   \
    {                                                                                         \
        if (sa == 1 && sb == 1 && assign)                                                     \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j], y = bs[j], z = zs[j];                                 \
                (void)x, (void)y, (void)z;                                                    \
                g[j] = AD__SZMUL(gz[j], (DER));                                               \
            }                                                                                 \
        else if (sa == 1 && sb == 1)                                                          \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j], y = bs[j], z = zs[j];                                 \
                (void)x, (void)y, (void)z;                                                    \
                g[j] += AD__SZMUL(gz[j], (DER));                                              \
            }                                                                                 \
        else if (assign) /* the other operand is broadcast; this one, not (gs 1) */          \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j * sa], y = bs[j * sb], z = zs[j];                       \
                (void)x, (void)y, (void)z;                                                    \
                g[j] = AD__SZMUL(gz[j], (DER));                                               \
            }                                                                                 \
        else /* a broadcast operand (gs 0) is only ever added to */                           \
            for (size_t j = 0; j < n; j++) {                                                  \
                const double x = as[j * sa], y = bs[j * sb], z = zs[j];                       \
                (void)x, (void)y, (void)z;                                                    \
                g[j * gs] += AD__SZMUL(gz[j], (DER));                                         \
            }                                                                                 \
    }

AD__BINARY_OPS(BINARY_LOOPS)
AD__COMPARE_OPS(BINARY_LOOPS)

#define TENSOR_BINARY(NAME, CODE, FWD, DA, DB, DAA, DAB, DBB, GA, GB)                                              \
    static void NAME##_fwd(const ad_call *k)                                                  \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val;                                  \
        for (size_t r = 0; r < s.R; r++) /* out: (R, C) */                                    \
            NAME##_fwd_row(k->out.val + r * s.C, as + r * s.ars, s.acs, bs + r * s.brs,       \
                           s.bcs, s.C);                                                       \
    }                                                                                         \
    static void NAME##_vjp_to(const ad_call *k, unsigned fresh)                               \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val, *zs = k->out.val;               \
        const double *gz = k->out.grad;                                                       \
        double *ga = k->in[0].grad, *gb = k->in[1].grad;                                      \
        const int fa = assign_ok(k, fresh, 0), fb = assign_ok(k, fresh, 1);                   \
        for (size_t r = 0; r < s.R; r++) {                                                    \
            const double *ar = as + r * s.ars, *br = bs + r * s.brs;                          \
            const size_t o = r * s.C;                                                         \
            if (ga)                                                                           \
                NAME##_grad_a(ga + r * s.ars, s.acs, ar, s.acs, br, s.bcs, zs + o, gz + o,    \
                              s.C, fa);                                                       \
            if (gb)                                                                           \
                NAME##_grad_b(gb + r * s.brs, s.bcs, ar, s.acs, br, s.bcs, zs + o, gz + o,    \
                              s.C, fb);                                                       \
        }                                                                                     \
    }                                                                                         \
    AD__VJP_ADDING(NAME)                                                                      \
    /* tangent: tz = dz/dx tx + dz/dy ty, broadcast as the values are */                      \
    static void NAME##_jvp(const ad_call *k, const double *const *tin, double *tout,          \
                           double *scratch)                                                   \
    {                                                                                         \
        (void)scratch;                                                                        \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val, *zs = k->out.val;               \
        const double *ta = tin[0], *tb = tin[1];                                              \
        for (size_t r = 0; r < s.R; r++)                                                      \
            for (size_t j = 0; j < s.C; j++) {                                                \
                const size_t ia = r * s.ars + j * s.acs, ib = r * s.brs + j * s.bcs;          \
                const double x = as[ia], y = bs[ib], z = zs[r * s.C + j];                     \
                (void)x, (void)y, (void)z;                                                    \
                double t = 0.0;                                                               \
                if (ta)                                                                       \
                    t += (DA) * ta[ia];                                                       \
                if (tb)                                                                       \
                    t += (DB) * tb[ib];                                                       \
                tout[r * s.C + j] = t;                                                        \
            }                                                                                 \
    }                                                                                         \
    /* second order: tga += gz (d2z/dx2 tx + d2z/dxdy ty), tgb likewise */                    \
    static void NAME##_so(const ad_call *k, const double *const *tin, double *const *tg)      \
    {                                                                                         \
        const bcast s = bcast_of(k);                                                          \
        const double *as = k->in[0].val, *bs = k->in[1].val, *zs = k->out.val;               \
        const double *gz = k->out.grad, *ta = tin[0], *tb = tin[1];                           \
        for (size_t r = 0; r < s.R; r++)                                                      \
            for (size_t j = 0; j < s.C; j++) {                                                \
                const size_t ia = r * s.ars + j * s.acs, ib = r * s.brs + j * s.bcs;          \
                const double g = gz[r * s.C + j];                                             \
                if (g == 0.0)                                                                 \
                    continue;                                                                 \
                const double x = as[ia], y = bs[ib], z = zs[r * s.C + j];                     \
                (void)x, (void)y, (void)z;                                                    \
                const double daa = (DAA), dab = (DAB), dbb = (DBB);                           \
                if (tg[0])                                                                    \
                    tg[0][ia] += g * (daa * ta[ia] + dab * tb[ib]);                           \
                if (tg[1])                                                                    \
                    tg[1][ib] += g * (dab * ta[ia] + dbb * tb[ib]);                           \
            }                                                                                 \
    }                                                                                         \
    /* the vjp as recorded ops, in the output's shape (the caller sums a   */                 \
    /* broadcast operand's contribution back to its shape)                 */                 \
    static void NAME##_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,  \
                            ad_node *dx)                                                      \
    {                                                                                         \
        const ad_node xn = in[0], yn = in[1], zn = out;                                       \
        (void)t, (void)xn, (void)yn, (void)zn, (void)c;                                       \
        dx[0] = (GA);                                                                         \
        dx[1] = (GB);                                                                         \
    }                                                                                         \
    const ad__op ad__op_##NAME = {{#NAME, 2, NAME##_shape, NAME##_fwd, NAME##_vjp, NULL, AD__NO_MODE_RULES}, true, \
                                  false, NAME##_vjp_to, NAME##_jvp, AD__SO_FN, NAME##_so, NAME##_rvjp};

/* An operand as rows x cols: a scalar is 1 x 1, a vector of n a row 1 x n. */
static void as_rows_cols(ad_shape s, uint32_t *r, uint32_t *c)
{
    *r = s.ndim == 2 ? s.rows : 1;
    *c = s.ndim == 2 ? s.cols : s.rows;
}

/* The one broadcasting rule of every binary elementwise op (numpy's, in
 * two dimensions): seen as rows x cols, each dimension must be equal in
 * both operands or 1 in one of them; the output has the larger of each,
 * and is a matrix if an operand is one, else a vector if one is, else a
 * scalar. So a scalar goes with anything, a vector (a row) with a matrix
 * of as many columns, an m x 1 column with a matrix of m rows, on either
 * side -- and a row (n) with a column (m x 1) gives m x n. */
static int broadcast_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)nin, (void)c;
    const ad_shape a = in[0], b = in[1];
    char sa[48], sb[48];
    if (a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols) {
        *out = a;
        return AD_OK;
    }
    uint32_t ar, ac, br, bc;
    as_rows_cols(a, &ar, &ac);
    as_rows_cols(b, &br, &bc);
    if ((ar == br || ar == 1 || br == 1) && (ac == bc || ac == 1 || bc == 1)) {
        const uint32_t r = ar > br ? ar : br, cols = ac > bc ? ac : bc;
        const int nd = a.ndim > b.ndim ? a.ndim : b.ndim;
        *out = nd == 2 ? ad_shape_mat(r, cols) : nd == 1 ? ad_shape_vec(cols) : ad_shape_scalar();
        return AD_OK;
    }
    const char *why = a.ndim + b.ndim == 3 /* a vector and a matrix */
                          ? " (a vector broadcasts as a row: its length must equal the "
                            "matrix's columns)"
                          : "";
    return ad__shape_fail(msg, cap, "a is %s but b is %s%s", ad__shape_str(a, sa, sizeof sa),
                          ad__shape_str(b, sb, sizeof sb), why);
}
#define same_or_scalar_shape broadcast_shape
#define add_shape broadcast_shape
#define sub_shape same_or_scalar_shape
#define mul_shape same_or_scalar_shape
#define div_shape same_or_scalar_shape
/* comparisons */
#define lt_shape same_or_scalar_shape
#define le_shape same_or_scalar_shape
#define gt_shape same_or_scalar_shape
#define ge_shape same_or_scalar_shape
#define eq_shape same_or_scalar_shape
#define ne_shape same_or_scalar_shape
/* elementwise math */
#define pow_shape same_or_scalar_shape
#define atan2_shape same_or_scalar_shape
#define hypot_shape same_or_scalar_shape
#define min_shape same_or_scalar_shape
#define max_shape same_or_scalar_shape

AD__BINARY_OPS(TENSOR_BINARY)
AD__COMPARE_OPS(TENSOR_BINARY)

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
ad_node ad_step(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_STEP, false, x, 0.0); }
ad_node ad_sign(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SIGN, false, x, 0.0); }
/* elementwise math */
ad_node ad_sin(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SIN, false, x, 0.0); }
ad_node ad_cos(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_COS, false, x, 0.0); }
ad_node ad_tan(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_TAN, false, x, 0.0); }
ad_node ad_asin(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ASIN, false, x, 0.0); }
ad_node ad_acos(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ACOS, false, x, 0.0); }
ad_node ad_atan(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ATAN, false, x, 0.0); }
ad_node ad_sinh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SINH, false, x, 0.0); }
ad_node ad_cosh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_COSH, false, x, 0.0); }
ad_node ad_asinh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ASINH, false, x, 0.0); }
ad_node ad_acosh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ACOSH, false, x, 0.0); }
ad_node ad_atanh(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ATANH, false, x, 0.0); }
ad_node ad_log1p(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_LOG1P, false, x, 0.0); }
ad_node ad_expm1(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_EXPM1, false, x, 0.0); }
ad_node ad_log2(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_LOG2, false, x, 0.0); }
ad_node ad_log10(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_LOG10, false, x, 0.0); }
ad_node ad_erf(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ERF, false, x, 0.0); }
ad_node ad_erfc(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ERFC, false, x, 0.0); }
ad_node ad_softplus(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_SOFTPLUS, false, x, 0.0); }
ad_node ad_gelu(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_GELU, false, x, 0.0); }
ad_node ad_floor(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_FLOOR, false, x, 0.0); }
ad_node ad_ceil(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_CEIL, false, x, 0.0); }
ad_node ad_round(ad_tape *t, ad_node x) { return rec_unary(t, AD_OP_ROUND, false, x, 0.0); }
ad_node ad_elu(ad_tape *t, ad_node x, double alpha) { return rec_unary(t, AD_OP_ELU, true, x, alpha); }
ad_node ad_leaky_relu(ad_tape *t, ad_node x, double slope)
{
    return rec_unary(t, AD_OP_LEAKY_RELU, true, x, slope);
}
ad_node ad_clamp_min(ad_tape *t, ad_node x, double lo) { return rec_unary(t, AD_OP_CLAMP_MIN, true, x, lo); }
ad_node ad_clamp_max(ad_tape *t, ad_node x, double hi) { return rec_unary(t, AD_OP_CLAMP_MAX, true, x, hi); }
/* Two nodes; a failed first one makes the second fail too (sticky). */
ad_node ad_clamp(ad_tape *t, ad_node x, double lo, double hi)
{
    return ad_clamp_max(t, ad_clamp_min(t, x, lo), hi);
}
ad_node ad_pow(ad_tape *t, ad_node x, ad_node y) { return rec_binary(t, AD_OP_POW, x, y); }
ad_node ad_atan2(ad_tape *t, ad_node y, ad_node x) { return rec_binary(t, AD_OP_ATAN2, y, x); }
ad_node ad_hypot(ad_tape *t, ad_node x, ad_node y) { return rec_binary(t, AD_OP_HYPOT, x, y); }
ad_node ad_min(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_MIN, a, b); }
ad_node ad_max(ad_tape *t, ad_node a, ad_node b) { return rec_binary(t, AD_OP_MAX, a, b); }
