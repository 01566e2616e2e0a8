/* test_overlap.c -- ops whose operands are ad_param views of one block.
 *
 * The header allows gradient buffers that are shared or overlap (tied
 * weights, slices of one parameter block). Every op with two or more
 * tensor operands is recorded here with its operands laid out in one
 * value block and one gradient block at every relative offset (the same
 * start, overlapping, adjacent), and its gradient is compared with the
 * same graph on separate buffers, whose gradients are then summed into
 * the block by hand. In three ways: an adding sweep, an assigning sweep,
 * and an assigning sweep after a replay. */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <math.h>
#include <string.h>

#include "support.h"

#define MAXN 4
#define BLOCK 256

typedef struct ocase {
    const char *name;
    int n;                                          /* operands */
    void (*shapes)(int a, int b, int c, ad_shape *s); /* operand shapes */
    ad_node (*rec)(ad_tape *t, const ad_node *in);
} ocase;

#define REC2(NAME, CALL)                                                                      \
    static ad_node NAME(ad_tape *t, const ad_node *in) { return CALL(t, in[0], in[1]); }
REC2(r_add, ad_add)
REC2(r_sub, ad_sub)
REC2(r_mul, ad_mul)
REC2(r_div, ad_div)
REC2(r_dot, ad_dot)
REC2(r_matvec, ad_matvec)
REC2(r_matvec_t, ad_matvec_t)
REC2(r_matmul, ad_matmul)
REC2(r_matmul_nt, ad_matmul_nt)
REC2(r_outer, ad_outer)
REC2(r_xent, ad_softmax_xent)
static ad_node r_affine(ad_tape *t, const ad_node *in) { return ad_affine(t, in[0], in[1], in[2]); }

static void s_vv(int a, int b, int c, ad_shape *s) { (void)b, (void)c, s[0] = s[1] = ad_shape_vec(a); }
static void s_mm(int a, int b, int c, ad_shape *s) { (void)c, s[0] = s[1] = ad_shape_mat(a, b); }
static void s_mrow(int a, int b, int c, ad_shape *s) { (void)c, s[0] = ad_shape_mat(a, b), s[1] = ad_shape_vec(b); }
static void s_vs(int a, int b, int c, ad_shape *s) { (void)b, (void)c, s[0] = ad_shape_vec(a), s[1] = ad_shape_scalar(); }
static void s_matvec(int a, int b, int c, ad_shape *s) { (void)c, s[0] = ad_shape_mat(a, b), s[1] = ad_shape_vec(b); }
static void s_matvec_t(int a, int b, int c, ad_shape *s) { (void)c, s[0] = ad_shape_mat(a, b), s[1] = ad_shape_vec(a); }
static void s_matmul(int a, int b, int c, ad_shape *s) { s[0] = ad_shape_mat(a, b), s[1] = ad_shape_mat(b, c); }
static void s_matmul_nt(int a, int b, int c, ad_shape *s) { s[0] = ad_shape_mat(a, b), s[1] = ad_shape_mat(c, b); }
static void s_outer(int a, int b, int c, ad_shape *s) { (void)c, s[0] = ad_shape_vec(a), s[1] = ad_shape_vec(b); }
static void s_affine_v(int a, int b, int c, ad_shape *s)
{
    (void)c, s[0] = ad_shape_mat(a, b), s[1] = ad_shape_vec(b), s[2] = ad_shape_vec(a);
}
static void s_affine_b(int a, int b, int c, ad_shape *s)
{
    s[0] = ad_shape_mat(a, b), s[1] = ad_shape_mat(c, b), s[2] = ad_shape_vec(a);
}

static const ocase cases[] = {
    {"add", 2, s_vv, r_add},           {"add matrix", 2, s_mm, r_add},
    {"add row", 2, s_mrow, r_add},     {"sub", 2, s_vv, r_sub},
    {"mul", 2, s_mm, r_mul},           {"mul scalar", 2, s_vs, r_mul},
    {"div", 2, s_vv, r_div},           {"div scalar", 2, s_vs, r_div},
    {"dot", 2, s_vv, r_dot},           {"matvec", 2, s_matvec, r_matvec},
    {"matvec_t", 2, s_matvec_t, r_matvec_t},
    {"matmul", 2, s_matmul, r_matmul}, {"matmul_nt", 2, s_matmul_nt, r_matmul_nt},
    {"outer", 2, s_outer, r_outer},    {"softmax_xent", 2, s_vv, r_xent},
    {"softmax_xent batch", 2, s_mm, r_xent},
    {"affine", 3, s_affine_v, r_affine},
    {"affine batch", 3, s_affine_b, r_affine},
};

/* J = sum(op(...) * R), R fixed: every output element gets its own seed. */
static ad_node loss(ad_tape *t, ad_node y, const double *R)
{
    return ad_sum(t, ad_mul(t, y, ad_constant(t, ad_node_shape(t, y), R)));
}

/* The reference: operands on separate buffers, gradients summed into the
 * block by hand. */
static void reference(const ocase *c, const ad_shape *s, const size_t *off, const double *v,
                      const double *R, double *gref, size_t len)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node in[MAXN];
    for (int k = 0; k < c->n; k++)
        in[k] = ad_variable(t, s[k], v + off[k]);
    ad_node J = loss(t, c->rec(t, in), R);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s: %s", c->name, ad_tape_errmsg(t));
    memset(gref, 0, len * sizeof *gref);
    for (int k = 0; k < c->n; k++) {
        const double *g = ad_grad(t, in[k]);
        for (size_t i = 0; i < ad_shape_size(s[k]); i++)
            gref[off[k] + i] += g[i];
    }
    ad_tape_free(t);
}

/* One layout, three sweeps; returns the number of layouts checked (1). */
static int check_layout(const ocase *c, const ad_shape *s, const size_t *off)
{
    size_t len = 0;
    for (int k = 0; k < c->n; k++)
        if (off[k] + ad_shape_size(s[k]) > len)
            len = off[k] + ad_shape_size(s[k]);
    cr_assert(len <= BLOCK);
    double v[BLOCK], g[BLOCK + 1], gref[BLOCK], R[BLOCK];
    for (size_t i = 0; i < len; i++)
        v[i] = 0.5 + 0.125 * (double)((i * 7) % 11); /* positive: div is defined */
    for (size_t i = 0; i < BLOCK; i++)
        R[i] = 0.25 + 0.5 * (double)((i * 5) % 7) - 1.0;
    reference(c, s, off, v, R, gref, len);

    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node in[MAXN];
    for (int k = 0; k < c->n; k++)
        in[k] = ad_param(t, s[k], v + off[k], g + off[k]);
    ad_node J = loss(t, c->rec(t, in), R);
    cr_assert(ad_tape_status(t) == AD_OK, "%s: %s", c->name, ad_tape_errmsg(t));
    static const char *const mode[3] = {"adding", "assigning", "assigning after replay"};
    for (int m = 0; m < 3; m++) {
        for (size_t i = 0; i <= len; i++)
            g[i] = m == 0 ? 0.0 : NAN;
        g[len] = -7; /* past the block: never written */
        if (m == 2)
            cr_assert_eq(ad_replay(t), AD_OK);
        cr_assert_eq(ad_sweep(t, J, NULL, m == 0 ? 0 : AD_SWEEP_ASSIGN), AD_OK, "%s: %s",
                     c->name, ad_tape_errmsg(t));
        for (size_t i = 0; i < len; i++)
            cr_assert(test_err(g[i], gref[i]) <= 1e-12,
                      "%s (%s sweep), offsets %zu %zu %zu: g[%zu] = %.17g, want %.17g",
                      c->name, mode[m], off[0], off[1], c->n > 2 ? off[2] : 0, i, g[i],
                      gref[i]);
        cr_assert(g[len] == -7, "%s: written past the block", c->name);
    }
    ad_tape_free(t);
    return 1;
}

Test(overlap, every_op_at_every_offset)
{
    static const int dims[] = {1, 2, 3, 5};
    int layouts = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const ocase *c = &cases[ci];
        for (int ia = 0; ia < 4; ia++)
            for (int ib = 0; ib < 4; ib++)
                for (int ic = 0; ic < 4; ic++) {
                    ad_shape s[MAXN];
                    c->shapes(dims[ia], dims[ib], dims[ic], s);
                    const size_t n0 = ad_shape_size(s[0]), n1 = ad_shape_size(s[1]);
                    /* operand 1 (and 2) starting anywhere in operand 0 or just past
                     * it, and operand 0 starting anywhere in operand 1 */
                    for (size_t o = 0; o <= n0; o++) {
                        size_t off[MAXN] = {0, o, 0};
                        layouts += check_layout(c, s, off);
                        if (c->n == 3) {
                            off[2] = o, layouts += check_layout(c, s, off);
                            off[2] = n0, layouts += check_layout(c, s, off);
                        }
                    }
                    for (size_t o = 1; o <= n1; o++) {
                        size_t off[MAXN] = {o, 0, o};
                        layouts += check_layout(c, s, off);
                    }
                }
    }
    cr_assert(layouts > 1000, "only %d layouts checked", layouts);
}

/* The case an outside differential test found: W (1 x 5) and x (5) viewing
 * the same five numbers. d/dv sum(W x) = 2v. */
Test(overlap, matvec_views_of_one_block)
{
    double v[5] = {0.5, 0.75, 1, 1.25, 1.5}, g[5] = {0};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_param(t, ad_shape_mat(1, 5), v, g), x = ad_param(t, ad_shape_vec(5), v, g);
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_matvec(t, W, x))), AD_OK);
    for (int i = 0; i < 5; i++)
        cr_assert(g[i] == 2 * v[i], "g[%d] = %g, want %g", i, g[i], 2 * v[i]);
    ad_tape_free(t);
}

/* An 11 x 2 W with x viewing its rows 9-10. */
Test(overlap, matvec_x_inside_the_last_rows)
{
    double v[22], g[22] = {0}, gref[22] = {0};
    for (int i = 0; i < 22; i++)
        v[i] = 0.1 * (i + 1);
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_param(t, ad_shape_mat(11, 2), v, g);
    ad_node x = ad_param(t, ad_shape_vec(2), v + 19, g + 19);
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_matvec(t, W, x))), AD_OK);
    /* dW[i][j] = x[j]; dx[j] = sum_i W[i][j] */
    for (int i = 0; i < 11; i++)
        for (int j = 0; j < 2; j++) {
            gref[2 * i + j] += v[19 + j];
            gref[19 + j] += v[2 * i + j];
        }
    for (int i = 0; i < 22; i++)
        cr_assert(test_err(g[i], gref[i]) <= 1e-14, "g[%d] = %g, want %g", i, g[i], gref[i]);
    ad_tape_free(t);
}
