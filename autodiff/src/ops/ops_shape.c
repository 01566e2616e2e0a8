/* ops_shape.c -- structure: reshape, slice and its adjoint slice_add, take
 * (gather) and its adjoint index_add (scatter-add), concat; the public
 * functions ad_reshape, ad_slice, ad_slice_block, ad_slice_add, ad_take,
 * ad_at, ad_index_add, ad_concat and ad_stack.
 *
 * Integer arguments. A node carries one double constant c, and an op's
 * shape rule sees only its operands' shapes and c; so what fixes the
 * output's shape is in c, and where the op reads (slice starts, take's
 * indices) is an operand: a constant node the public function records
 * from the caller's integers (copied), which replay, workspaces and the
 * gradient tape handle like any node -- as XLA's dynamic_slice and gather
 * take theirs. The public functions check every integer at recording and
 * name the op and the shapes on error; the kernels read the index
 * operands at every evaluation and clamp them into range (an index node
 * changed later with ad_set_value, or one given through ad_apply, can
 * never read outside x), so they never fail. An index operand gets no
 * gradient (its derivative is 0).
 *
 *   reshape(x; c)          c: -1 a scalar, 0 a vector, k >= 1 a matrix of
 *                          k columns; the elements in row-major order
 *   slice(x, s; c)         x a vector (s = [start], c = length) or an
 *                          R x C matrix (s = [row, col], c = rows * (C + 1)
 *                          + cols of the block)
 *   slice_add(x, s, v)     x with v added into the block at s (v's shape)
 *   take(x, i)             x[i] along the first axis: elements of a vector,
 *                          rows of a matrix; i a scalar or a vector
 *   index_add(x, i, v)     x with v[k] added at x[i[k]] (repeats add)
 *   concat(a, b; c)        c = 0: one after the other (a vector beside a
 *                          matrix is one row); c = 1: side by side
 *
 * Each is linear in its data operands, so second order is 0 (AD__LINEAR);
 * the ops with an index operand have their own jvp (the modes' default
 * runs forward at the tangents, and an index has none), and each vjp is
 * recorded with the others (rvjp): slice <-> slice_add, take <->
 * index_add, concat -> slices, reshape -> reshape. */
#include "internal.h"

#include <math.h>
#include <stdio.h>

#define S(s, buf) ad__shape_str((s), (buf), sizeof(buf))

static bool same_shape(ad_shape a, ad_shape b)
{
    return a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols;
}

/* Writes (assign) or adds n doubles of src into dst. */
static void put(double *restrict dst, const double *restrict src, size_t n, int assign)
{
    if (assign)
        memcpy(dst, src, n * sizeof *dst);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] += src[i];
}

/* An index operand's gradient (ad_apply with a variable there): 0. */
static void zero_index_grad(const ad_call *k, unsigned fresh, int i)
{
    ad__zero_fresh(k, fresh & (1u << i));
}

/* A public function that records several nodes (an index constant and
 * the op; a tree of concats) records all or nothing: on failure (out of
 * memory, a full tape) the nodes it made are dropped again. */
typedef struct mark {
    size_t len, next_ext, ext_grads;
} mark;
static mark mark_of(const ad_tape *t)
{
    const mark m = {t->len, t->next_ext, t->ext_grads};
    return m;
}
static ad_node or_undo(ad_tape *t, mark m, ad_node n)
{
    if (ad_node_is_nil(n) && t->len > m.len) {
        t->len = m.len;
        t->next_ext = m.next_ext;
        t->ext_grads = m.ext_grads;
    }
    return n;
}

/* An index value as a position in [0, n - 1]: rounded down and clamped
 * (NaN reads position 0). */
static size_t clamp_index(double v, size_t n)
{
    if (!(v > 0.0))
        return 0;
    if (v >= (double)(n - 1))
        return n - 1;
    return (size_t)v;
}

/* ================================================================= */
/* reshape                                                            */
/* ================================================================= */

static int reshape_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                         size_t cap)
{
    (void)nin;
    char sx[48];
    const size_t n = ad_shape_size(in[0]);
    if (c == -1.0) {
        if (n != 1)
            return ad__shape_fail(msg, cap, "x is %s (%zu elements), not one element for a scalar",
                                  S(in[0], sx), n);
        *out = ad_shape_scalar();
        return AD_OK;
    }
    if (c == 0.0) {
        if (n > UINT32_MAX)
            return ad__shape_fail(msg, cap, "x is %s: %zu elements are too many for a vector",
                                  S(in[0], sx), n);
        *out = ad_shape_vec((uint32_t)n);
        return AD_OK;
    }
    if (!(c >= 1.0 && c <= (double)UINT32_MAX && c == floor(c)))
        return ad__shape_fail(msg, cap,
                              "c = %g is not a shape (-1 a scalar, 0 a vector, k >= 1 a matrix "
                              "of k columns)",
                              c);
    const size_t cols = (size_t)c;
    if (n % cols != 0 || n / cols > UINT32_MAX)
        return ad__shape_fail(msg, cap, "x is %s (%zu elements), which is not rows of %zu columns",
                              S(in[0], sx), n, cols);
    *out = ad_shape_mat((uint32_t)(n / cols), (uint32_t)cols);
    return AD_OK;
}
static void reshape_fwd(const ad_call *k)
{
    memcpy(k->out.val, k->in[0].val, ad_shape_size(k->out.shape) * sizeof(double));
}
static void reshape_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad)
        put(k->in[0].grad, k->out.grad, ad_shape_size(k->out.shape), AD__FRESH(fresh, 0));
}
AD__VJP_ADDING(reshape)
static void reshape_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                         ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = ad_reshape(t, g, ad_node_shape(t, in[0]));
}
const ad__op ad__op_reshape = {{"reshape", 1, reshape_shape, reshape_fwd, reshape_vjp, NULL,
                                AD__NO_MODE_RULES},
                               false, false, reshape_vjp_to, NULL, AD__LINEAR, NULL,
                               reshape_rvjp};

static double reshape_code(ad_shape s)
{
    return s.ndim == 0 ? -1.0 : s.ndim == 1 ? 0.0 : (double)s.cols;
}

ad_node ad_reshape(ad_tape *t, ad_node x, ad_shape shape)
{
    static const char who[] = "reshape";
    if (!t || t->status != AD_OK)
        return ad_nil();
    if (!ad__check(t, x, who, 1))
        return ad_nil();
    const ad_shape xs = ad_node_shape(t, x);
    char a[48], b[48];
    const bool valid = (shape.ndim == 0 && shape.rows == 1 && shape.cols == 1)
                       || (shape.ndim == 1 && shape.cols == 1) || shape.ndim == 2;
    if (!valid) {
        ad__fail(t, AD_EMISUSE, "%s: invalid target shape (ndim %d, %ux%u)", who, shape.ndim,
                 (unsigned)shape.rows, (unsigned)shape.cols);
        return ad_nil();
    }
    if (ad_shape_size(shape) != ad_shape_size(xs)) {
        ad__fail(t, AD_ESHAPE, "%s: x is %s (%zu elements) but the target %s has %zu", who,
                 S(xs, a), ad_shape_size(xs), S(shape, b), ad_shape_size(shape));
        return ad_nil();
    }
    return ad__record(t, AD_OP_RESHAPE, &ad__op_reshape.def, &x, 1, reshape_code(shape));
}

/* ================================================================= */
/* slice and slice_add                                                */
/* ================================================================= */

/* A block of x: rows r0.. (nr of them) and columns c0.. (nc). A vector
 * is seen as n x 1 here: its elements are its first axis, as for take. */
typedef struct block {
    size_t R, C;   /* x as R x C (a vector: n x 1) */
    size_t nr, nc; /* the block */
    size_t r0, c0; /* where it starts (clamped) */
} block;

static void dims(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 2 ? s.rows : s.ndim == 1 ? s.rows : 1;
    *C = s.ndim == 2 ? s.cols : 1;
}

/* The starts operand: one entry per dimension of x. */
static int starts_ok(ad_shape x, ad_shape s, char *msg, size_t cap)
{
    char a[48], b[48];
    const size_t want = x.ndim == 2 ? 2 : 1;
    if (ad_shape_size(s) != want || s.ndim == 2)
        return ad__shape_fail(msg, cap, "x is %s but the starts are %s (need %s)", S(x, a),
                              S(s, b), want == 2 ? "a vector of 2: row, column" : "one number");
    return AD_OK;
}

/* The block a slice of x with constant c cuts out (c = the length for a
 * vector, rows * (cols of x + 1) + cols for a matrix). */
static int slice_block(ad_shape x, double c, size_t *nr, size_t *nc, char *msg, size_t cap)
{
    char a[48];
    size_t R, C;
    dims(x, &R, &C);
    if (x.ndim == 0)
        return ad__shape_fail(msg, cap, "x is a scalar; slice takes a vector or a matrix");
    if (!(c >= 1.0 && c < 9007199254740992.0 && c == floor(c)))
        goto bad;
    const uint64_t v = (uint64_t)c;
    if (x.ndim == 1) {
        *nr = (size_t)v, *nc = 1;
        if (*nr > R)
            return ad__shape_fail(msg, cap, "%zu elements of a vector of length %zu", *nr, R);
        return AD_OK;
    }
    *nr = (size_t)(v / ((uint64_t)C + 1));
    *nc = (size_t)(v % ((uint64_t)C + 1));
    if (*nr >= 1 && *nc >= 1 && *nr <= R)
        return AD_OK;
bad:
    return ad__shape_fail(msg, cap,
                          x.ndim == 1 ? "c = %g is not a length for a slice of %s"
                                      : "c = %g is not a block of %s (rows * (cols of x + 1) "
                                        "+ cols)",
                          c, S(x, a));
}

static double slice_code(ad_shape x, size_t nr, size_t nc)
{
    return x.ndim == 2 ? (double)nr * ((double)x.cols + 1.0) + (double)nc : (double)nr;
}

static int slice_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                       size_t cap)
{
    (void)nin;
    size_t nr = 0, nc = 0;
    if (slice_block(in[0], c, &nr, &nc, msg, cap) != AD_OK || starts_ok(in[0], in[1], msg, cap))
        return AD_ESHAPE;
    *out = in[0].ndim == 2 ? ad_shape_mat((uint32_t)nr, (uint32_t)nc) : ad_shape_vec((uint32_t)nr);
    return AD_OK;
}

/* The block of x (shape xs) of shape bs at the starts in s, clamped so
 * that it lies in x. */
static block block_at(ad_shape xs, ad_shape bs, const double *s)
{
    block b;
    dims(xs, &b.R, &b.C);
    dims(bs, &b.nr, &b.nc);
    b.r0 = clamp_index(s[0], b.R - b.nr + 1);
    b.c0 = xs.ndim == 2 ? clamp_index(s[1], b.C - b.nc + 1) : 0;
    return b;
}

/* y (+)= the block b of x, or x's block (+)= y (into). */
static void block_copy(const block *b, double *x, double *y, int into, int assign)
{
    for (size_t i = 0; i < b->nr; i++) {
        double *xr = x + (b->r0 + i) * b->C + b->c0, *yr = y + i * b->nc;
        if (into)
            put(xr, yr, b->nc, assign);
        else
            put(yr, xr, b->nc, assign);
    }
}

static void slice_fwd(const ad_call *k)
{
    const block b = block_at(k->in[0].shape, k->out.shape, k->in[1].val);
    block_copy(&b, k->in[0].val, k->out.val, 0, 1);
}
/* dx: g in the block, 0 elsewhere */
static void slice_vjp_to(const ad_call *k, unsigned fresh)
{
    double *gx = k->in[0].grad;
    if (gx) {
        const block b = block_at(k->in[0].shape, k->out.shape, k->in[1].val);
        if (AD__FRESH(fresh, 0))
            memset(gx, 0, b.R * b.C * sizeof *gx);
        block_copy(&b, gx, k->out.grad, 1, 0);
    }
    zero_index_grad(k, fresh, 1);
}
AD__VJP_ADDING(slice)
static void slice_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    const block b = block_at(k->in[0].shape, k->out.shape, k->in[1].val);
    if (tin[0])
        block_copy(&b, (double *)tin[0], tout, 0, 1);
    else
        memset(tout, 0, ad_shape_size(k->out.shape) * sizeof *tout);
}
static ad_node rec_slice_add(ad_tape *t, ad_node x, ad_node s, ad_node v)
{
    const ad_node in[3] = {x, s, v};
    return ad__record(t, AD_OP_SLICE_ADD, &ad__op_slice_add.def, in, 3, 0.0);
}
/* dx = slice_add(0, s, g) */
static void slice_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                       ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = rec_slice_add(t, ad__fill(t, ad_node_shape(t, in[0]), 0.0), in[1], g);
}
const ad__op ad__op_slice = {{"slice", 2, slice_shape, slice_fwd, slice_vjp, NULL,
                              AD__NO_MODE_RULES},
                             false, false, slice_vjp_to, slice_jvp, AD__LINEAR, NULL, slice_rvjp};

static int slice_add_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48];
    const ad_shape x = in[0], v = in[2];
    if (x.ndim == 0)
        return ad__shape_fail(msg, cap, "x is a scalar; slice_add takes a vector or a matrix");
    if (starts_ok(x, in[1], msg, cap) != AD_OK)
        return AD_ESHAPE;
    if (v.ndim != x.ndim || v.rows > x.rows || v.cols > x.cols)
        return ad__shape_fail(msg, cap, "v is %s but x is %s (v must be a block of x: %s)",
                              S(v, a), S(x, b),
                              x.ndim == 2 ? "a matrix of at most as many rows and columns"
                                          : "a vector no longer than x");
    *out = x;
    return AD_OK;
}
static void slice_add_fwd(const ad_call *k)
{
    const block b = block_at(k->in[0].shape, k->in[2].shape, k->in[1].val);
    memcpy(k->out.val, k->in[0].val, b.R * b.C * sizeof(double));
    block_copy(&b, k->out.val, k->in[2].val, 1, 0);
}
/* dx = g, dv = g's block */
static void slice_add_vjp_to(const ad_call *k, unsigned fresh)
{
    const block b = block_at(k->in[0].shape, k->in[2].shape, k->in[1].val);
    if (k->in[0].grad)
        put(k->in[0].grad, k->out.grad, b.R * b.C, AD__FRESH(fresh, 0));
    if (k->in[2].grad)
        block_copy(&b, k->out.grad, k->in[2].grad, 0, AD__FRESH(fresh, 2));
    zero_index_grad(k, fresh, 1);
}
AD__VJP_ADDING(slice_add)
static void slice_add_jvp(const ad_call *k, const double *const *tin, double *tout,
                          double *scratch)
{
    (void)scratch;
    const block b = block_at(k->in[0].shape, k->in[2].shape, k->in[1].val);
    if (tin[0])
        memcpy(tout, tin[0], b.R * b.C * sizeof *tout);
    else
        memset(tout, 0, b.R * b.C * sizeof *tout);
    if (tin[2])
        block_copy(&b, tout, (double *)tin[2], 1, 0);
}
static void slice_add_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                           ad_node *dx)
{
    (void)out, (void)c;
    const ad_shape xs = ad_node_shape(t, in[0]), vs = ad_node_shape(t, in[2]);
    size_t nr, nc;
    dims(vs, &nr, &nc);
    const ad_node sl[2] = {g, in[1]};
    dx[0] = g;
    dx[2] = ad__record(t, AD_OP_SLICE, &ad__op_slice.def, sl, 2, slice_code(xs, nr, nc));
}
const ad__op ad__op_slice_add = {{"slice_add", 3, slice_add_shape, slice_add_fwd, slice_add_vjp,
                                  NULL, AD__NO_MODE_RULES},
                                 false, false, slice_add_vjp_to, slice_add_jvp, AD__LINEAR, NULL,
                                 slice_add_rvjp};

/* The starts constant of a slice: [r0] or [r0, c0]. */
static ad_node starts_node(ad_tape *t, ad_shape xs, size_t r0, size_t c0)
{
    const double s[2] = {(double)r0, (double)c0};
    return ad_constant(t, ad_shape_vec(xs.ndim == 2 ? 2 : 1), s);
}

/* "a 5x2 matrix", "a vector of length 5". */
static const char *noun(ad_shape s, char *buf, size_t cap)
{
    char a[48];
    if (s.ndim == 2)
        snprintf(buf, cap, "a %s matrix", S(s, a));
    else
        snprintf(buf, cap, "%s", S(s, a));
    return buf;
}

/* Checks a range of n from r0 within dim elements/rows/columns: the
 * message names the inclusive range ("rows 3..7 of a 5x2 matrix"). */
static bool range_ok(ad_tape *t, const char *who, const char *what, size_t r0, size_t n,
                     size_t dim, ad_shape xs)
{
    char a[64];
    if (n == 0) {
        ad__fail(t, AD_ESHAPE, "%s: no %s (an empty block) of %s", who, what,
                 noun(xs, a, sizeof a));
        return false;
    }
    if (r0 >= dim || n > dim - r0) {
        ad__fail(t, AD_ESHAPE, "%s: %s %zu..%zu of %s", who, what, r0, r0 + n - 1,
                 noun(xs, a, sizeof a));
        return false;
    }
    return true;
}

/* The shape of a node for the public functions: nil on a bad handle
 * (reported). */
static bool operand(ad_tape *t, ad_node x, const char *who, int k, ad_shape *s)
{
    if (!t || t->status != AD_OK || !ad__check(t, x, who, k))
        return false;
    *s = ad_node_shape(t, x);
    return true;
}

ad_node ad_slice_block(ad_tape *t, ad_node x, uint32_t r0, uint32_t nr, uint32_t c0, uint32_t nc)
{
    static const char who[] = "slice";
    ad_shape xs;
    char a[48];
    if (!operand(t, x, who, 1, &xs))
        return ad_nil();
    if (xs.ndim != 2) {
        ad__fail(t, AD_ESHAPE, "%s: x is %s; a block needs a matrix (ad_slice cuts a vector)",
                 who, S(xs, a));
        return ad_nil();
    }
    if (!range_ok(t, who, "rows", r0, nr, xs.rows, xs)
        || !range_ok(t, who, "columns", c0, nc, xs.cols, xs))
        return ad_nil();
    const mark m = mark_of(t);
    const ad_node in[2] = {x, starts_node(t, xs, r0, c0)};
    return or_undo(t, m, ad__record(t, AD_OP_SLICE, &ad__op_slice.def, in, 2,
                                    slice_code(xs, nr, nc)));
}

ad_node ad_slice(ad_tape *t, ad_node x, uint32_t start, uint32_t len)
{
    static const char who[] = "slice";
    ad_shape xs;
    if (!operand(t, x, who, 1, &xs))
        return ad_nil();
    if (xs.ndim == 0) {
        ad__fail(t, AD_ESHAPE, "%s: x is a scalar; slice takes a vector or a matrix", who);
        return ad_nil();
    }
    if (xs.ndim == 2)
        return ad_slice_block(t, x, start, len, 0, xs.cols);
    if (!range_ok(t, who, "elements", start, len, xs.rows, xs))
        return ad_nil();
    const mark m = mark_of(t);
    const ad_node in[2] = {x, starts_node(t, xs, start, 0)};
    return or_undo(t, m, ad__record(t, AD_OP_SLICE, &ad__op_slice.def, in, 2,
                                    slice_code(xs, len, 1)));
}

ad_node ad_slice_add(ad_tape *t, ad_node x, uint32_t r0, uint32_t c0, ad_node v)
{
    static const char who[] = "slice_add";
    ad_shape xs, vs;
    char a[48], b[48];
    if (!operand(t, x, who, 1, &xs) || !operand(t, v, who, 2, &vs))
        return ad_nil();
    if (xs.ndim == 0 || vs.ndim != xs.ndim) {
        ad__fail(t, AD_ESHAPE, "%s: x is %s but v is %s (v must be a block of x%s)", who,
                 S(xs, a), S(vs, b), xs.ndim == 0 ? "; x must be a vector or a matrix" : "");
        return ad_nil();
    }
    if (xs.ndim == 1 && c0 != 0) {
        ad__fail(t, AD_ESHAPE, "%s: column %u of %s (a vector has column 0 only)", who,
                 (unsigned)c0, S(xs, a));
        return ad_nil();
    }
    if (!range_ok(t, who, xs.ndim == 2 ? "rows" : "elements", r0, vs.rows, xs.rows, xs)
        || (xs.ndim == 2 && !range_ok(t, who, "columns", c0, vs.cols, xs.cols, xs)))
        return ad_nil();
    const mark m = mark_of(t);
    return or_undo(t, m, rec_slice_add(t, x, starts_node(t, xs, r0, c0), v));
}

/* ================================================================= */
/* take and index_add                                                 */
/* ================================================================= */

/* x as items along its first axis: R items of C numbers. */
static int take_out(ad_shape x, ad_shape i, ad_shape *out, char *msg, size_t cap)
{
    char b[48];
    if (x.ndim == 0)
        return ad__shape_fail(msg, cap, "x is a scalar; take indexes a vector or a matrix");
    if (i.ndim == 2)
        return ad__shape_fail(msg, cap, "the indices are %s; need a scalar or a vector of them",
                              S(i, b));
    if (x.ndim == 1)
        *out = i.ndim == 0 ? ad_shape_scalar() : ad_shape_vec(i.rows);
    else
        *out = i.ndim == 0 ? ad_shape_vec(x.cols) : ad_shape_mat(i.rows, x.cols);
    return AD_OK;
}
static int take_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)nin, (void)c;
    return take_out(in[0], in[1], out, msg, cap);
}
/* y[k] (+)= x[i[k]] (gather), or x[i[k]] += y[k] (scatter). */
static void gather(ad_shape xs, const double *idx, size_t n, double *x, double *y, int scatter,
                   int assign)
{
    size_t R, C;
    dims(xs, &R, &C);
    for (size_t k = 0; k < n; k++) {
        double *xr = x + clamp_index(idx[k], R) * C, *yr = y + k * C;
        if (scatter)
            put(xr, yr, C, 0);
        else
            put(yr, xr, C, assign);
    }
}
static void take_fwd(const ad_call *k)
{
    gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), k->in[0].val,
           k->out.val, 0, 1);
}
/* dx[i[k]] += g[k], repeated indices adding up */
static void take_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad) {
        ad__zero_fresh(k, fresh & 1u);
        gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), k->in[0].grad,
               k->out.grad, 1, 0);
    }
    zero_index_grad(k, fresh, 1);
}
AD__VJP_ADDING(take)
static void take_jvp(const ad_call *k, const double *const *tin, double *tout, double *scratch)
{
    (void)scratch;
    if (tin[0])
        gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), (double *)tin[0],
               tout, 0, 1);
    else
        memset(tout, 0, ad_shape_size(k->out.shape) * sizeof *tout);
}
static ad_node rec_index_add(ad_tape *t, ad_node x, ad_node i, ad_node v)
{
    const ad_node in[3] = {x, i, v};
    return ad__record(t, AD_OP_INDEX_ADD, &ad__op_index_add.def, in, 3, 0.0);
}
/* dx = index_add(0, i, g) */
static void take_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                      ad_node *dx)
{
    (void)out, (void)c;
    dx[0] = rec_index_add(t, ad__fill(t, ad_node_shape(t, in[0]), 0.0), in[1], g);
}
const ad__op ad__op_take = {{"take", 2, take_shape, take_fwd, take_vjp, NULL, AD__NO_MODE_RULES},
                            false, false, take_vjp_to, take_jvp, AD__LINEAR, NULL, take_rvjp};

static int index_add_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)nin, (void)c;
    char a[48], b[48], d[48], e[48];
    ad_shape want;
    if (take_out(in[0], in[1], &want, msg, cap) != AD_OK)
        return AD_ESHAPE;
    if (!same_shape(want, in[2]))
        return ad__shape_fail(msg, cap, "x is %s and the indices %s, so v must be %s, not %s",
                              S(in[0], a), S(in[1], b), S(want, d), S(in[2], e));
    *out = in[0];
    return AD_OK;
}
static void index_add_fwd(const ad_call *k)
{
    memcpy(k->out.val, k->in[0].val, ad_shape_size(k->out.shape) * sizeof(double));
    gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), k->out.val,
           k->in[2].val, 1, 0);
}
/* dx = g, dv[k] = g[i[k]] */
static void index_add_vjp_to(const ad_call *k, unsigned fresh)
{
    if (k->in[0].grad)
        put(k->in[0].grad, k->out.grad, ad_shape_size(k->out.shape), AD__FRESH(fresh, 0));
    if (k->in[2].grad)
        gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), k->out.grad,
               k->in[2].grad, 0, AD__FRESH(fresh, 2));
    zero_index_grad(k, fresh, 1);
}
AD__VJP_ADDING(index_add)
static void index_add_jvp(const ad_call *k, const double *const *tin, double *tout,
                          double *scratch)
{
    (void)scratch;
    const size_t n = ad_shape_size(k->out.shape);
    if (tin[0])
        memcpy(tout, tin[0], n * sizeof *tout);
    else
        memset(tout, 0, n * sizeof *tout);
    if (tin[2])
        gather(k->in[0].shape, k->in[1].val, ad_shape_size(k->in[1].shape), tout,
               (double *)tin[2], 1, 0);
}
static void index_add_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                           ad_node *dx)
{
    (void)out, (void)c;
    const ad_node tk[2] = {g, in[1]};
    dx[0] = g;
    dx[2] = ad__record(t, AD_OP_TAKE, &ad__op_take.def, tk, 2, 0.0);
}
const ad__op ad__op_index_add = {{"index_add", 3, index_add_shape, index_add_fwd, index_add_vjp,
                                  NULL, AD__NO_MODE_RULES},
                                 false, false, index_add_vjp_to, index_add_jvp, AD__LINEAR, NULL,
                                 index_add_rvjp};

/* The index constant: n indices checked against the R items of x. */
static ad_node index_node(ad_tape *t, const char *who, ad_shape xs, size_t n, const uint32_t *idx,
                          bool scalar)
{
    char a[64];
    size_t R, C;
    dims(xs, &R, &C);
    if (xs.ndim == 0) {
        ad__fail(t, AD_ESHAPE, "%s: x is a scalar; it has no elements or rows to index", who);
        return ad_nil();
    }
    if (n == 0 || !idx) {
        ad__fail(t, n == 0 ? AD_ESHAPE : AD_EMISUSE, "%s: %s", who,
                 n == 0 ? "no indices (n = 0)" : "idx is NULL");
        return ad_nil();
    }
    if (n > UINT32_MAX) {
        ad__fail(t, AD_ELIMIT, "%s: %zu indices are too many (at most 2^32 - 1)", who, n);
        return ad_nil();
    }
    for (size_t k = 0; k < n; k++)
        if (idx[k] >= R) {
            ad__fail(t, AD_ESHAPE, "%s: index %u (entry %zu) is out of range for %s%s (%s 0..%zu)",
                     who, (unsigned)idx[k], k, xs.ndim == 2 ? "the rows of " : "",
                     noun(xs, a, sizeof a), xs.ndim == 2 ? "rows" : "elements", R - 1);
            return ad_nil();
        }
    if (scalar)
        return ad_scalar(t, (double)idx[0]);
    ad_node in = ad_constant(t, ad_shape_vec((uint32_t)n), NULL);
    if (ad_node_is_nil(in))
        return in;
    double *p = ad__X(t, ad__a(ad__N(t, in.id_)->h))->call.out.val;
    for (size_t k = 0; k < n; k++)
        p[k] = (double)idx[k];
    return in;
}

ad_node ad_take(ad_tape *t, ad_node x, size_t n, const uint32_t *idx)
{
    ad_shape xs;
    if (!operand(t, x, "take", 1, &xs))
        return ad_nil();
    const mark m = mark_of(t);
    const ad_node in[2] = {x, index_node(t, "take", xs, n, idx, false)};
    if (ad_node_is_nil(in[1]))
        return ad_nil();
    return or_undo(t, m, ad__record(t, AD_OP_TAKE, &ad__op_take.def, in, 2, 0.0));
}

ad_node ad_at(ad_tape *t, ad_node x, uint32_t i)
{
    ad_shape xs;
    if (!operand(t, x, "take", 1, &xs))
        return ad_nil();
    const mark m = mark_of(t);
    const ad_node in[2] = {x, index_node(t, "take", xs, 1, &i, true)};
    if (ad_node_is_nil(in[1]))
        return ad_nil();
    return or_undo(t, m, ad__record(t, AD_OP_TAKE, &ad__op_take.def, in, 2, 0.0));
}

ad_node ad_index_add(ad_tape *t, ad_node x, size_t n, const uint32_t *idx, ad_node v)
{
    ad_shape xs, vs;
    if (!operand(t, x, "index_add", 1, &xs) || !operand(t, v, "index_add", 2, &vs))
        return ad_nil();
    /* one index and v shaped as ad_at(x, i) is: a scalar index */
    const bool one = n == 1 && xs.ndim != 0
                     && same_shape(vs, xs.ndim == 1 ? ad_shape_scalar() : ad_shape_vec(xs.cols));
    const mark m = mark_of(t);
    const ad_node i = index_node(t, "index_add", xs, n, idx, one);
    if (ad_node_is_nil(i))
        return ad_nil();
    return or_undo(t, m, rec_index_add(t, x, i, v));
}

/* ================================================================= */
/* concat                                                             */
/* ================================================================= */

/* axis 0: a then b (vectors and scalars give a vector; matrices of one
 * column count give a matrix; a vector beside a matrix is one row);
 * axis 1: matrices of one row count side by side. */
static int concat_out(ad_shape a, ad_shape b, double axis, ad_shape *out, char *msg, size_t cap)
{
    char sa[48], sb[48];
    if (axis == 0.0) {
        if (a.ndim < 2 && b.ndim < 2) {
            const size_t n = ad_shape_size(a) + ad_shape_size(b);
            if (n > UINT32_MAX)
                goto big;
            *out = ad_shape_vec((uint32_t)n);
            return AD_OK;
        }
        const size_t C = a.ndim == 2 ? a.cols : b.cols;
        const bool fit_a = (a.ndim == 2 && a.cols == C) || (a.ndim == 1 && a.rows == C);
        const bool fit_b = (b.ndim == 2 && b.cols == C) || (b.ndim == 1 && b.rows == C);
        if (!fit_a || !fit_b)
            return ad__shape_fail(msg, cap,
                                  "a is %s but b is %s (axis 0 stacks rows: the column counts "
                                  "must agree, a vector being one row)",
                                  S(a, sa), S(b, sb));
        const size_t R = (a.ndim == 2 ? a.rows : 1) + (size_t)(b.ndim == 2 ? b.rows : 1);
        if (R > UINT32_MAX)
            goto big;
        *out = ad_shape_mat((uint32_t)R, (uint32_t)C);
        return AD_OK;
    }
    if (axis == 1.0) {
        if (a.ndim != 2 || b.ndim != 2 || a.rows != b.rows)
            return ad__shape_fail(msg, cap,
                                  "a is %s but b is %s (axis 1 puts matrices side by side: both "
                                  "matrices, with one row count)",
                                  S(a, sa), S(b, sb));
        const size_t C = (size_t)a.cols + b.cols;
        if (C > UINT32_MAX)
            goto big;
        *out = ad_shape_mat(a.rows, (uint32_t)C);
        return AD_OK;
    }
    return ad__shape_fail(msg, cap, "axis %g; 0 joins one after the other, 1 side by side", axis);
big:
    return ad__shape_fail(msg, cap, "a is %s and b is %s: the result is too large", S(a, sa),
                          S(b, sb));
}
static int concat_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                        size_t cap)
{
    (void)nin;
    return concat_out(in[0], in[1], c, out, msg, cap);
}
static void concat_fwd(const ad_call *k)
{
    const size_t na = ad_shape_size(k->in[0].shape), nb = ad_shape_size(k->in[1].shape);
    double *y = k->out.val;
    if (k->c == 0.0) { /* row-major: a's elements, then b's */
        memcpy(y, k->in[0].val, na * sizeof *y);
        memcpy(y + na, k->in[1].val, nb * sizeof *y);
        return;
    }
    const size_t R = k->out.shape.rows, ca = k->in[0].shape.cols, cb = k->in[1].shape.cols;
    for (size_t r = 0; r < R; r++) {
        memcpy(y + r * (ca + cb), k->in[0].val + r * ca, ca * sizeof *y);
        memcpy(y + r * (ca + cb) + ca, k->in[1].val + r * cb, cb * sizeof *y);
    }
}
static void concat_vjp_to(const ad_call *k, unsigned fresh)
{
    const size_t na = ad_shape_size(k->in[0].shape), nb = ad_shape_size(k->in[1].shape);
    const double *g = k->out.grad;
    double *ga = k->in[0].grad, *gb = k->in[1].grad;
    const int fa = AD__FRESH(fresh, 0), fb = AD__FRESH(fresh, 1);
    if (k->c == 0.0) {
        if (ga)
            put(ga, g, na, fa);
        if (gb)
            put(gb, g + na, nb, fb);
        return;
    }
    const size_t R = k->out.shape.rows, ca = k->in[0].shape.cols, cb = k->in[1].shape.cols;
    for (size_t r = 0; r < R; r++) {
        if (ga)
            put(ga + r * ca, g + r * (ca + cb), ca, fa);
        if (gb)
            put(gb + r * cb, g + r * (ca + cb) + ca, cb, fb);
    }
}
AD__VJP_ADDING(concat)
/* each operand's part of g, in its shape */
static void concat_rvjp(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx)
{
    const ad_shape os = ad_node_shape(t, out);
    for (int k = 0; k < 2; k++) {
        const ad_shape s = ad_node_shape(t, in[k]);
        const ad_shape o = ad_node_shape(t, in[0]);
        ad_node d;
        if (c == 1.0) {
            d = ad_slice_block(t, g, 0, s.rows, k ? o.cols : 0, s.cols);
        } else {
            const uint32_t first = k ? (os.ndim == 2 ? (o.ndim == 2 ? o.rows : 1)
                                                     : (uint32_t)ad_shape_size(o))
                                     : 0;
            const uint32_t len = os.ndim == 2 ? (s.ndim == 2 ? s.rows : 1)
                                              : (uint32_t)ad_shape_size(s);
            d = ad_slice(t, g, first, len);
        }
        dx[k] = same_shape(ad_node_shape(t, d), s) ? d : ad_reshape(t, d, s);
    }
}
const ad__op ad__op_concat = {{"concat", 2, concat_shape, concat_fwd, concat_vjp, NULL,
                               AD__NO_MODE_RULES},
                              false, false, concat_vjp_to, NULL, AD__LINEAR, NULL, concat_rvjp};

/* parts[0..n) joined as a balanced tree of binary concats (depth log2 n,
 * each element copied log2 n times at most); rows: a vector part is
 * first made a 1 x m row. */
static ad_node join(ad_tape *t, double axis, const ad_node *p, int n, bool rows)
{
    if (n == 1) {
        const ad_shape s = ad_node_shape(t, p[0]);
        return rows && s.ndim == 1 ? ad_reshape(t, p[0], ad_shape_mat(1, s.rows)) : p[0];
    }
    const int h = n / 2;
    const ad_node in[2] = {join(t, axis, p, h, rows), join(t, axis, p + h, n - h, rows)};
    return ad__record(t, AD_OP_CONCAT, &ad__op_concat.def, in, 2, axis);
}

/* Checks parts[] for concat (stack: every part one shape, scalars or
 * vectors), naming the first part that does not fit; *mat: some part is a
 * matrix. */
static bool parts_ok(ad_tape *t, const char *who, int axis, int n, const ad_node *parts,
                     bool stack, bool *mat)
{
    char a[48], b[48];
    if (!t || t->status != AD_OK)
        return false;
    if (n < 1 || !parts) {
        ad__fail(t, AD_EMISUSE, "%s: %s", who, !parts ? "parts is NULL" : "no parts (n < 1)");
        return false;
    }
    if (!stack && axis != 0 && axis != 1) {
        ad__fail(t, AD_EMISUSE, "%s: axis %d; 0 joins one after the other, 1 side by side", who,
                 axis);
        return false;
    }
    *mat = false;
    for (int i = 0; i < n; i++) {
        if (!ad__check(t, parts[i], who, i + 1))
            return false;
        *mat |= ad_node_shape(t, parts[i]).ndim == 2;
    }
    const ad_shape s0 = ad_node_shape(t, parts[0]);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const ad_shape s = ad_node_shape(t, parts[i]);
        const char *why = NULL;
        if (stack) {
            if (s.ndim == 2) {
                ad__fail(t, AD_ESHAPE,
                         "%s: part %d is %s; stack takes scalars or vectors (ad_concat joins "
                         "matrices)",
                         who, i + 1, S(s, a));
                return false;
            }
            if (!same_shape(s, s0))
                why = "stacked parts must have one shape";
        } else if (axis == 1) {
            if (s.ndim != 2 || s.rows != s0.rows)
                why = "axis 1 puts matrices side by side: all matrices, with one row count";
        } else if (*mat) {
            size_t C = 0;
            for (int j = 0; j < n && !C; j++)
                if (ad_node_shape(t, parts[j]).ndim == 2)
                    C = ad_node_shape(t, parts[j]).cols;
            if ((s.ndim == 2 && s.cols != C) || (s.ndim == 1 && s.rows != C) || s.ndim == 0)
                why = "axis 0 stacks rows: the column counts must agree, a vector being one row";
        }
        if (why) {
            const ad_shape o = i == 0 ? ad_node_shape(t, parts[n > 1 ? 1 : 0]) : s0;
            ad__fail(t, AD_ESHAPE, "%s: part %d is %s but part %d is %s (%s)", who, i + 1, S(s, a),
                     i == 0 ? (n > 1 ? 2 : 1) : 1, S(o, b), why);
            return false;
        }
        total += stack ? 1
                 : axis == 0 ? (s.ndim == 2 ? s.rows : (*mat ? 1 : ad_shape_size(s)))
                             : s.cols;
        if (total > UINT32_MAX) {
            ad__fail(t, AD_ESHAPE, "%s: the result of %d parts is too large", who, n);
            return false;
        }
    }
    return true;
}

ad_node ad_concat(ad_tape *t, int axis, int n, const ad_node *parts)
{
    bool mat;
    if (!parts_ok(t, "concat", axis, n, parts, false, &mat))
        return ad_nil();
    const mark m = mark_of(t);
    return or_undo(t, m, join(t, (double)axis, parts, n, axis == 0 && mat));
}

ad_node ad_stack(ad_tape *t, int n, const ad_node *parts)
{
    bool mat;
    if (!parts_ok(t, "stack", 0, n, parts, true, &mat))
        return ad_nil();
    const ad_shape s = ad_node_shape(t, parts[0]);
    if (n == 1)
        return ad_reshape(t, parts[0], s.ndim == 0 ? ad_shape_vec(1) : ad_shape_mat(1, s.rows));
    const mark m = mark_of(t);
    return or_undo(t, m, join(t, 0.0, parts, n, s.ndim == 1));
}
