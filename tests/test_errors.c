/* test_errors.c -- every error path of the tape, with its exact message:
 * shape mismatches of each op, NULL tapes, nil/foreign/stale operands,
 * unknown ops, wrong arity, unseeded non-scalar sweeps, bad leaves, and
 * the sticky status. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double Z[64]; /* zeros, for leaves of any size here */

static ad_tape *tape(void)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    return t;
}

static ad_node var(ad_tape *t, ad_shape s) { return ad_variable(t, s, Z); }

/* The op failed: nil, nothing recorded, the status and the exact message. */
#define EXPECT_FAIL(t, call, status, msg)                                                     \
    do {                                                                                      \
        size_t len_ = ad_tape_len(t);                                                         \
        ad_node r_ = (call);                                                                  \
        cr_assert(ad_node_is_nil(r_), "%s: returned a node", #call);                          \
        cr_assert_eq(ad_tape_len(t), len_, "%s: recorded a node", #call);                     \
        cr_assert_eq(ad_tape_status(t), (status), "%s: status %d (%s)", #call,                \
                     ad_tape_status(t), ad_tape_errmsg(t));                                   \
        cr_assert_str_eq(ad_tape_errmsg(t), (msg));                                           \
    } while (0)

/* ---- shape errors: one fresh tape per case ---- */

typedef ad_node (*bin_fn)(ad_tape *, ad_node, ad_node);

static void bin_err(bin_fn f, ad_shape sa, ad_shape sb, const char *msg)
{
    ad_tape *t = tape();
    ad_node a = var(t, sa), b = var(t, sb);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    EXPECT_FAIL(t, f(t, a, b), AD_ESHAPE, msg);
    ad_tape_free(t);
}

Test(errors, matvec_shapes)
{
    bin_err(ad_matvec, ad_shape_mat(3, 4), ad_shape_vec(5), "matvec: W is 3x4 but x has length 5");
    bin_err(ad_matvec, ad_shape_vec(3), ad_shape_vec(3),
            "matvec: W is a vector of length 3, not a matrix");
    bin_err(ad_matvec, ad_shape_scalar(), ad_shape_vec(1), "matvec: W is a scalar, not a matrix");
    bin_err(ad_matvec, ad_shape_mat(3, 4), ad_shape_mat(4, 1), "matvec: x is 4x1, not a vector");
    bin_err(ad_matvec, ad_shape_mat(1, 1), ad_shape_scalar(), "matvec: x is a scalar, not a vector");
}

Test(errors, matvec_t_shapes)
{
    bin_err(ad_matvec_t, ad_shape_mat(3, 4), ad_shape_vec(4),
            "matvec_t: W is 3x4 (W^T is 4x3) but x has length 4");
    bin_err(ad_matvec_t, ad_shape_vec(3), ad_shape_vec(3),
            "matvec_t: W is a vector of length 3, not a matrix");
    bin_err(ad_matvec_t, ad_shape_mat(3, 4), ad_shape_mat(3, 1),
            "matvec_t: x is 3x1, not a vector");
}

Test(errors, elementwise_shapes)
{
    bin_err(ad_add, ad_shape_vec(3), ad_shape_vec(4),
            "add: a is a vector of length 3 but b is a vector of length 4");
    bin_err(ad_add, ad_shape_mat(3, 4), ad_shape_mat(4, 3), "add: a is 3x4 but b is 4x3");
    bin_err(ad_add, ad_shape_mat(3, 4), ad_shape_vec(3),
            "add: a is 3x4 but b is a vector of length 3 (a vector broadcasts as a row: its "
            "length must equal the matrix's columns)");
    /* One rule for every binary op: a row (n), a column (m x 1) or a
     * scalar against an m x n matrix, on either side (test_shape_ops.c
     * has the shapes that fit); these do not. */
    bin_err(ad_sub, ad_shape_vec(4), ad_shape_mat(3, 5),
            "sub: a is a vector of length 4 but b is 3x5 (a vector broadcasts as a row: its "
            "length must equal the matrix's columns)");
    bin_err(ad_mul, ad_shape_vec(2), ad_shape_vec(3),
            "mul: a is a vector of length 2 but b is a vector of length 3");
    bin_err(ad_mul, ad_shape_mat(3, 5), ad_shape_mat(4, 1), "mul: a is 3x5 but b is 4x1");
    bin_err(ad_div, ad_shape_mat(2, 2), ad_shape_mat(2, 3), "div: a is 2x2 but b is 2x3");
    bin_err(ad_div, ad_shape_mat(1, 3), ad_shape_mat(2, 4), "div: a is 1x3 but b is 2x4");
    bin_err(ad_div, ad_shape_mat(3, 1), ad_shape_mat(2, 4), "div: a is 3x1 but b is 2x4");
    bin_err(ad_add, ad_shape_mat(3, 1), ad_shape_mat(4, 1), "add: a is 3x1 but b is 4x1");
}

Test(errors, matmul_shapes)
{
    bin_err(ad_matmul, ad_shape_mat(3, 4), ad_shape_mat(5, 2),
            "matmul: A is 3x4 but B is 5x2 (A's columns must equal B's rows)");
    bin_err(ad_matmul, ad_shape_vec(3), ad_shape_mat(3, 2),
            "matmul: A is a vector of length 3 and B is 3x2; both must be matrices");
    bin_err(ad_matmul, ad_shape_mat(2, 3), ad_shape_vec(3),
            "matmul: A is 2x3 and B is a vector of length 3; both must be matrices");
    bin_err(ad_matmul_nt, ad_shape_mat(3, 4), ad_shape_mat(5, 3),
            "matmul_nt: A is 3x4 but B is 5x3 (A B^T needs equal column counts)");
    bin_err(ad_matmul_nt, ad_shape_mat(3, 4), ad_shape_scalar(),
            "matmul_nt: A is 3x4 and B is a scalar; both must be matrices");
}

static void affine_err(ad_shape sW, ad_shape sx, ad_shape sb, const char *msg)
{
    ad_tape *t = tape();
    ad_node W = var(t, sW), x = var(t, sx), b = var(t, sb);
    EXPECT_FAIL(t, ad_affine(t, W, x, b), AD_ESHAPE, msg);
    ad_tape_free(t);
}

Test(errors, affine_shapes)
{
    affine_err(ad_shape_mat(3, 4), ad_shape_vec(5), ad_shape_vec(3),
               "affine: W is 3x4 but x has length 5");
    affine_err(ad_shape_mat(3, 4), ad_shape_mat(2, 5), ad_shape_vec(3),
               "affine: W is 3x4 but X is 2x5 (X W^T needs X to have 4 columns)");
    affine_err(ad_shape_vec(4), ad_shape_vec(4), ad_shape_vec(4),
               "affine: W is a vector of length 4, not a matrix");
    affine_err(ad_shape_mat(3, 4), ad_shape_scalar(), ad_shape_vec(3),
               "affine: x is a scalar, not a vector or a matrix of samples");
    affine_err(ad_shape_mat(3, 4), ad_shape_vec(4), ad_shape_vec(4),
               "affine: W is 3x4 but b is a vector of length 4, not a vector of length 3");
    affine_err(ad_shape_mat(3, 4), ad_shape_mat(2, 4), ad_shape_mat(2, 3),
               "affine: W is 3x4 but b is 2x3, not a vector of length 3");
    affine_err(ad_shape_mat(3, 4), ad_shape_vec(4), ad_shape_scalar(),
               "affine: W is 3x4 but b is a scalar, not a vector of length 3");
}

Test(errors, outer_transpose_dot_shapes)
{
    bin_err(ad_outer, ad_shape_mat(3, 1), ad_shape_vec(2),
            "outer: u is 3x1 and v is a vector of length 2; both must be vectors");
    bin_err(ad_outer, ad_shape_vec(2), ad_shape_scalar(),
            "outer: u is a vector of length 2 and v is a scalar; both must be vectors");
    bin_err(ad_dot, ad_shape_vec(3), ad_shape_vec(4),
            "dot: u is a vector of length 3 but v is a vector of length 4");
    bin_err(ad_dot, ad_shape_vec(3), ad_shape_mat(3, 1), "dot: u is a vector of length 3 but v is 3x1");
    bin_err(ad_dot, ad_shape_scalar(), ad_shape_vec(1),
            "dot: u is a scalar but v is a vector of length 1");

    ad_tape *t = tape();
    ad_node v = var(t, ad_shape_vec(3));
    EXPECT_FAIL(t, ad_transpose(t, v), AD_ESHAPE, "transpose: A is a vector of length 3, not a matrix");
    ad_tape_reset(t);
    ad_node s = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_transpose(t, s), AD_ESHAPE, "transpose: A is a scalar, not a matrix");
    ad_tape_free(t);
}

Test(errors, softmax_xent_shapes)
{
    bin_err(ad_softmax_xent, ad_shape_mat(2, 3), ad_shape_mat(3, 2),
            "softmax_xent: logits are 2x3 but target is 3x2");
    bin_err(ad_softmax_xent, ad_shape_vec(3), ad_shape_mat(1, 3),
            "softmax_xent: logits are a vector of length 3 but target is 1x3");
    bin_err(ad_softmax_xent, ad_shape_scalar(), ad_shape_scalar(),
            "softmax_xent: logits are a scalar; need a vector or a matrix");
}

/* ---- NULL tape ---- */

Test(errors, null_tape_is_harmless)
{
    ad_node n = ad_nil();
    ad_node in[AD_MAX_ARITY] = {n, n, n, n};
    double d = 1.0, g = 0.0;
    const bin_fn bins[] = {ad_add, ad_sub, ad_mul, ad_div, ad_dot, ad_matvec, ad_matvec_t,
                           ad_matmul, ad_matmul_nt, ad_outer, ad_softmax_xent};
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++)
        cr_assert(ad_node_is_nil(bins[i](NULL, n, n)), "binary op %zu", i);
    cr_assert(ad_node_is_nil(ad_affine(NULL, n, n, n)));
    ad_node (*const uns[])(ad_tape *, ad_node) = {ad_neg, ad_square, ad_sqrt, ad_exp, ad_log,
                                                  ad_tanh, ad_sigmoid, ad_relu, ad_abs, ad_sum,
                                                  ad_mean, ad_transpose};
    for (size_t i = 0; i < sizeof uns / sizeof uns[0]; i++)
        cr_assert(ad_node_is_nil(uns[i](NULL, n)), "unary op %zu", i);
    cr_assert(ad_node_is_nil(ad_scale(NULL, n, 2)));
    cr_assert(ad_node_is_nil(ad_add_const(NULL, n, 2)));
    cr_assert(ad_node_is_nil(ad_pow_const(NULL, n, 2)));
    for (size_t i = 0; i < ad_builtin_count(); i++) {
        const ad_opdef *def = ad_builtin_op(i);
        cr_assert(ad_node_is_nil(ad_apply(NULL, def, in, def->arity, 0)), "%s", def->name);
        cr_assert(ad_node_is_nil(ad_apply_named(NULL, def->name, in, def->arity, 0)));
    }
    cr_assert(ad_node_is_nil(ad_constant(NULL, ad_shape_vec(2), Z)));
    cr_assert(ad_node_is_nil(ad_variable(NULL, ad_shape_vec(2), Z)));
    cr_assert(ad_node_is_nil(ad_scalar(NULL, 1)));
    cr_assert(ad_node_is_nil(ad_scalar_var(NULL, 1)));
    cr_assert(ad_node_is_nil(ad_param(NULL, ad_shape_scalar(), &d, &g)));

    cr_assert_eq(ad_tape_status(NULL), AD_EMISUSE);
    cr_assert_eq(ad_backward(NULL, n), AD_EMISUSE);
    cr_assert_eq(ad_backward_seed(NULL, n, &d), AD_EMISUSE);
    cr_assert_eq(ad_backward_seed(NULL, n, NULL), AD_EMISUSE);
    cr_assert_eq(ad_replay(NULL), AD_EMISUSE);
    cr_assert_eq(ad_set_value(NULL, n, &d), AD_EMISUSE);
    cr_assert_eq(ad_set_name(NULL, n, "x"), AD_EMISUSE);
    cr_assert_not_null(ad_tape_errmsg(NULL));
    cr_assert_str_eq(ad_tape_errmsg(NULL), "tape is NULL");
    ad_tape_reset(NULL);
    ad_tape_free(NULL);
}

/* ---- bad operands ---- */

Test(errors, nil_operand)
{
    ad_tape *t = tape();
    ad_node x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_add(t, ad_nil(), x), AD_EMISUSE,
                "add: operand 1 is the nil node (the result of a failed call)");
    ad_tape_reset(t);
    ad_node v = var(t, ad_shape_vec(2));
    EXPECT_FAIL(t, ad_matvec(t, v, ad_nil()), AD_EMISUSE,
                "matvec: operand 2 is the nil node (the result of a failed call)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_exp(t, ad_nil()), AD_EMISUSE,
                "exp: operand 1 is the nil node (the result of a failed call)");
    ad_tape_reset(t);
    cr_assert_eq(ad_backward(t, ad_nil()), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: operand 1 is the nil node (the result of a failed call)");
    ad_tape_free(t);
}

#define FOREIGN "is not a node of this tape (it belongs to another tape, or was recorded before ad_tape_reset)"

Test(errors, node_from_another_tape)
{
    ad_tape *t = tape(), *u = tape();
    ad_node x = ad_scalar_var(t, 1.0);
    ad_node y = ad_scalar_var(u, 2.0);
    ad_node v = var(u, ad_shape_vec(2));
    EXPECT_FAIL(t, ad_mul(t, x, y), AD_EMISUSE, "mul: operand 2 " FOREIGN);
    cr_assert_eq(ad_tape_status(u), AD_OK, "the other tape is untouched");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_sum(t, v), AD_EMISUSE, "sum: operand 1 " FOREIGN);
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    cr_assert_eq(ad_backward(t, y), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: operand 1 " FOREIGN);
    /* Reading a foreign node gives nothing (same index on both tapes). */
    cr_assert_eq(y.id_, x.id_);
    cr_assert_null(ad_value(t, y));
    cr_assert_null(ad_grad(t, y));
    cr_assert_eq(ad_set_value(t, y, Z), AD_EMISUSE);
    cr_assert_eq(ad_scalar_value(u, y), 2.0);
    ad_tape_free(t);
    ad_tape_free(u);
}

/* A handle of a freed tape used on a new tape is "a node of another tape"
 * (autodiff.h: handles become stale at ad_tape_free). The allocator often
 * gives the new tape the freed one's address, which is the case to catch. */
Test(errors, node_from_a_freed_tape)
{
    ad_tape *t = tape();
    ad_node old = ad_scalar_var(t, 5.0);
    const uintptr_t addr = (uintptr_t)(void *)t;
    ad_tape_free(t);
    ad_tape *u = tape();
    ad_node y = ad_scalar_var(u, 7.0);
    const int same_addr = (uintptr_t)(void *)u == addr;
    const double *v = ad_value(u, old);
    ad_node r = ad_add(u, old, y);
    int st = ad_tape_status(u);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", ad_tape_errmsg(u));
    ad_tape_free(u); /* before asserting: a failure here must not leak */
    cr_assert_eq(y.id_, old.id_);
    cr_assert_null(v, "a handle of a freed tape reads a node of a new tape%s",
                   same_addr ? " (same address)" : "");
    cr_assert(ad_node_is_nil(r));
    cr_assert_eq(st, AD_EMISUSE);
    cr_assert_str_eq(msg, "add: operand 1 " FOREIGN);
}

Test(errors, stale_node_after_reset)
{
    ad_tape *t = tape();
    ad_node old = var(t, ad_shape_vec(3));
    ad_node olds = ad_scalar_var(t, 1.0);
    ad_tape_reset(t);
    ad_node x = var(t, ad_shape_vec(3)); /* same index as old */
    cr_assert_eq(x.id_, old.id_);
    EXPECT_FAIL(t, ad_add(t, x, old), AD_EMISUSE, "add: operand 2 " FOREIGN);
    ad_tape_reset(t);
    x = var(t, ad_shape_vec(3));
    ad_node s = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_mul(t, olds, s), AD_EMISUSE, "mul: operand 1 " FOREIGN);
    ad_tape_reset(t);
    /* An index past the end of the new recording. */
    EXPECT_FAIL(t, ad_neg(t, olds), AD_EMISUSE, "neg: operand 1 " FOREIGN);
    ad_tape_reset(t);
    cr_assert_eq(ad_backward(t, old), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: operand 1 " FOREIGN);
    ad_tape_free(t);
}

/* ---- ad_apply / ad_apply_named ---- */

Test(errors, unknown_op_name)
{
    ad_tape *t = tape();
    ad_node x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply_named(t, "frobnicate", &x, 1, 0), AD_ENOTFOUND,
                "apply: unknown op 'frobnicate'");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply_named(t, NULL, &x, 1, 0), AD_EMISUSE, "apply: op name is NULL");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply_named(t, "leaf", &x, 1, 0), AD_ENOTFOUND, "apply: unknown op 'leaf'");
    ad_tape_free(t);
}

Test(errors, wrong_arity)
{
    ad_tape *t = tape();
    ad_node x = ad_scalar_var(t, 1.0);
    ad_node two[2] = {x, x};
    const ad_opdef *add = ad_registry_find(NULL, "add"), *ex = ad_registry_find(NULL, "exp");
    EXPECT_FAIL(t, ad_apply(t, add, &x, 1, 0), AD_EMISUSE, "add: takes 2 operands, got 1");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    two[0] = two[1] = x;
    EXPECT_FAIL(t, ad_apply(t, ex, two, 2, 0), AD_EMISUSE, "exp: takes 1 operand, got 2");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply_named(t, "matmul", &x, 0, 0), AD_EMISUSE,
                "matmul: takes 2 operands, got 0");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply_named(t, "sum", &x, -1, 0), AD_EMISUSE, "sum: takes 1 operand, got -1");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    EXPECT_FAIL(t, ad_apply(t, add, NULL, 2, 0), AD_EMISUSE, "add: operand array is NULL");
    ad_tape_free(t);
}

/* ---- sweeps ---- */

Test(errors, backward_from_non_scalar)
{
    ad_tape *t = tape();
    ad_node v = ad_tanh(t, var(t, ad_shape_vec(3)));
    cr_assert_eq(ad_backward(t, v), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: the output is a vector of length 3, not a "
                                        "scalar; pass a seed of the same size with ad_backward_seed");
    ad_tape_reset(t);
    ad_node m = ad_neg(t, var(t, ad_shape_mat(2, 3)));
    cr_assert_eq(ad_backward(t, m), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: the output is 2x3, not a scalar; pass a seed "
                                        "of the same size with ad_backward_seed");
    /* A vector of one element is not a scalar either. */
    ad_tape_reset(t);
    ad_node v1 = ad_exp(t, var(t, ad_shape_vec(1)));
    cr_assert_eq(ad_backward(t, v1), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward: the output is a vector of length 1, not a "
                                        "scalar; pass a seed of the same size with ad_backward_seed");
    /* With a seed it is fine. */
    ad_tape_reset(t);
    v1 = ad_exp(t, var(t, ad_shape_vec(1)));
    const double one = 1.0;
    cr_assert_eq(ad_backward_seed(t, v1, &one), AD_OK);
    ad_tape_free(t);
}

Test(errors, backward_seed_null)
{
    ad_tape *t = tape();
    ad_node v = ad_tanh(t, var(t, ad_shape_vec(3)));
    cr_assert_eq(ad_backward_seed(t, v, NULL), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward_seed: seed is NULL");
    ad_tape_reset(t);
    ad_node s = ad_scalar_var(t, 1.0);
    cr_assert_eq(ad_backward_seed(t, s, NULL), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "backward_seed: seed is NULL");
    ad_tape_reset(t);
    cr_assert_eq(ad_backward_seed(t, ad_nil(), Z), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "backward_seed: operand 1 is the nil node (the result of a failed call)");
    ad_tape_free(t);
}

/* ---- leaves ---- */

/* One misuse of ad_set_value on a fresh tape: its status and message. */
typedef enum { SV_OP_RESULT, SV_INLINE_RESULT, SV_PARAM, SV_INPUT_PARAM, SV_NULL_DATA, SV_NIL } sv_case;

static void set_value_misuse(sv_case which, const char *want)
{
    ad_tape *t = tape();
    double p[2] = {1, 2}, pg[2] = {0};
    const double nv[2] = {5, 6};
    ad_node v = ad_variable(t, ad_shape_vec(2), p);
    ad_node s = ad_scalar(t, 3.0);
    ad_node y = ad_mul(t, v, s);
    ad_node ys = ad_neg(t, s);
    ad_node pa = ad_param(t, ad_shape_vec(2), p, pg);
    ad_node pn = ad_param(t, ad_shape_vec(2), p, NULL);
    ad_node target[] = {y, ys, pa, pn, v, ad_nil()};
    int st = ad_set_value(t, target[which], which == SV_NULL_DATA ? NULL : nv);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", ad_tape_errmsg(t));
    /* Nothing was written. */
    int untouched = ad_value(t, y)[0] == 3.0 && ad_scalar_value(t, ys) == -3.0 && p[0] == 1.0
                    && ad_value(t, v)[1] == 2.0;
    ad_tape_free(t);
    cr_assert_eq(st, AD_EMISUSE);
    cr_assert_str_eq(msg, want);
    cr_assert(untouched);
}

Test(errors, set_value_misuse)
{
    set_value_misuse(SV_OP_RESULT, "set_value: node 3 is the result of mul, not a constant or variable");
    set_value_misuse(SV_INLINE_RESULT, "set_value: node 4 is the result of neg, not a constant or variable");
    set_value_misuse(SV_PARAM, "set_value: node 5 is an ad_param; write to the caller's buffer instead");
    set_value_misuse(SV_INPUT_PARAM, "set_value: node 6 is an ad_param; write to the caller's buffer instead");
    set_value_misuse(SV_NULL_DATA, "set_value: data is NULL");
    set_value_misuse(SV_NIL, "set_value: operand 1 is the nil node (the result of a failed call)");
}

Test(errors, set_value_happy_path)
{
    ad_tape *t = tape();
    double p[2] = {1, 2};
    const double nv[2] = {5, 6};
    ad_node v = ad_variable(t, ad_shape_vec(2), p);
    ad_node s = ad_scalar(t, 3.0);
    cr_assert_eq(ad_set_value(t, v, nv), AD_OK);
    cr_assert_eq(ad_set_value(t, s, nv), AD_OK);
    cr_assert_eq(ad_value(t, v)[1], 6.0);
    cr_assert_eq(ad_scalar_value(t, s), 5.0);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    ad_tape_free(t);
}

Test(errors, param_null_value)
{
    ad_tape *t = tape();
    double g[3];
    EXPECT_FAIL(t, ad_param(t, ad_shape_vec(3), NULL, g), AD_EMISUSE, "param: value is NULL");
    ad_tape_free(t);
}

Test(errors, invalid_and_empty_shapes)
{
    ad_tape *t = tape();
    double buf[4] = {0}, g[4];
    ad_shape vec_wide = {2, 3, 1}, scalar_big = {2, 1, 0}, nd3 = {2, 2, 3}, ndneg = {1, 1, -1};
    EXPECT_FAIL(t, ad_variable(t, vec_wide, buf), AD_EMISUSE, "variable: invalid shape (ndim 1, 2x3)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_constant(t, scalar_big, buf), AD_EMISUSE,
                "constant: invalid shape (ndim 0, 2x1)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_param(t, nd3, buf, g), AD_EMISUSE, "param: invalid shape (ndim 3, 2x2)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_variable(t, ndneg, buf), AD_EMISUSE, "variable: invalid shape (ndim -1, 1x1)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_variable(t, ad_shape_vec(0), buf), AD_ESHAPE,
                "variable: the shape is empty (a vector of length 0)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_constant(t, ad_shape_mat(0, 3), buf), AD_ESHAPE, "constant: the shape is empty (0x3)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_param(t, ad_shape_mat(2, 0), buf, g), AD_ESHAPE, "param: the shape is empty (2x0)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_variable(t, ad_shape_mat(1u << 21, 1u << 21), buf), AD_ELIMIT,
                "variable: 2097152x2097152 is too large");
    ad_tape_free(t);
}

/* ---- the sticky status ---- */

Test(errors, sticky_status)
{
    test_alloc a;
    memset(&a, 0, sizeof a);
    ad_tape_opts o = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    const double v0[3] = {1, 2, 3};
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node y = ad_mul(t, ad_sum(t, v), x); /* 12 */
    ad_node W = var(t, ad_shape_mat(3, 4));
    cr_assert_eq(ad_tape_status(t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");

    size_t len = ad_tape_len(t), mem = ad_tape_memory(t);
    long count = a.count;
    const char *first = "matvec: W is 3x4 but x has length 3";
    EXPECT_FAIL(t, ad_matvec(t, W, v), AD_ESHAPE, first);
    cr_assert_eq(a.count, count, "an error path allocated");

    /* Every later call returns nil, records nothing, keeps the first
     * message -- including calls that would fail differently. */
    EXPECT_FAIL(t, ad_add(t, x, x), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_exp(t, v), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_scalar_var(t, 1.0), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_variable(t, ad_shape_vec(3), v0), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_param(t, ad_shape_vec(3), v0, NULL), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_param(t, ad_shape_vec(3), NULL, NULL), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_add(t, ad_nil(), x), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_apply_named(t, "nope", &x, 1, 0), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_apply(t, NULL, &x, 1, 0), AD_ESHAPE, first);
    EXPECT_FAIL(t, ad_dot(t, v, W), AD_ESHAPE, first);
    cr_assert_eq(ad_backward(t, y), AD_ESHAPE, "backward returns the sticky status");
    cr_assert_eq(ad_backward_seed(t, y, NULL), AD_ESHAPE);
    cr_assert_eq(ad_replay(t), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), first);
    cr_assert_eq(ad_tape_len(t), len);
    cr_assert_eq(ad_tape_memory(t), mem);
    cr_assert_eq(a.count, count, "calls after the error allocated");

    /* Earlier nodes keep their values. */
    cr_assert_eq(ad_scalar_value(t, y), 12.0);
    cr_assert_eq(ad_value(t, v)[2], 3.0);
    cr_assert_eq(ad_node_shape(t, W).cols, 4u);

    /* Reset clears the error; recording works again. */
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");
    x = ad_scalar_var(t, 3.0);
    y = ad_square(t, x);
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_assert_eq(ad_grad(t, x)[0], 6.0);
    ad_tape_free(t);
    cr_assert_eq(a.bytes, 0);
    cr_assert_eq(a.allocs, a.frees);
}

/* Calls that record nothing (sweeps, replay, set_value) report their error
 * and keep the message until the next such call, but leave the recording
 * usable: ad_tape_status stays AD_OK and later ops record as usual. */
Test(errors, non_recording_errors_are_not_sticky)
{
    ad_tape *t = tape();
    ad_node v = var(t, ad_shape_vec(2));
    const double two[2] = {1, 2};
    struct {
        int st;
        const char *msg;
    } want[] = {
        {ad_backward(t, v), "backward: the output is a vector of length 2, not a scalar; pass a "
                            "seed of the same size with ad_backward_seed"},
        {ad_backward(t, ad_nil()), "backward: operand 1 is the nil node (the result of a failed "
                                   "call)"},
        {ad_backward_seed(t, v, NULL), "backward_seed: seed is NULL"},
        {ad_sweep(t, v, two, 6u), "sweep: unknown flags 0x6 (known: AD_SWEEP_ASSIGN)"},
        {ad_set_value(t, ad_sum(t, v), two), "set_value: node 2 is the result of sum, not a "
                                             "constant or variable"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_eq(want[i].st, AD_EMISUSE, "call %zu", i);
    /* the message is the last failing call's */
    cr_assert_str_eq(ad_tape_errmsg(t), want[4].msg);
    cr_assert_eq(ad_tape_status(t), AD_OK, "the recording is still good");
    /* and it records and sweeps as if nothing had happened */
    ad_node J = ad_sum(t, ad_square(t, v));
    cr_assert(!ad_node_is_nil(J));
    cr_assert_eq(ad_backward(t, J), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "", "a call that succeeds clears the last call's message");
    const double *g = ad_grad(t, v);
    cr_assert(g[0] == 2 * ad_value(t, v)[0] && g[1] == 2 * ad_value(t, v)[1]);

    /* Each message, one at a time. */
    for (int i = 0; i < 4; i++) {
        int st = i == 0   ? ad_backward(t, v)
                 : i == 1 ? ad_backward(t, ad_nil())
                 : i == 2 ? ad_backward_seed(t, v, NULL)
                          : ad_sweep(t, v, two, 6u);
        cr_assert_eq(st, AD_EMISUSE);
        cr_assert_str_eq(ad_tape_errmsg(t), want[i].msg);
        cr_assert_eq(ad_tape_status(t), AD_OK);
    }
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");
    ad_tape_free(t);
}

/* Once the recording has failed, non-recording calls return its status
 * and keep its message: the first error stays the one reported. */
Test(errors, non_recording_calls_on_a_failed_recording)
{
    ad_tape *t = tape();
    ad_node v = var(t, ad_shape_vec(2));
    ad_node w = var(t, ad_shape_vec(3));
    cr_assert(ad_node_is_nil(ad_add(t, v, w)));
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    char keep[256];
    snprintf(keep, sizeof keep, "%s", ad_tape_errmsg(t));
    cr_assert(strncmp(keep, "add: ", 5) == 0, "%s", keep);
    const double two[2] = {1, 2};
    cr_assert_eq(ad_backward(t, v), AD_ESHAPE);
    cr_assert_eq(ad_backward_seed(t, v, NULL), AD_ESHAPE);
    cr_assert_eq(ad_sweep(t, v, two, 0), AD_ESHAPE);
    cr_assert_eq(ad_replay(t), AD_ESHAPE);
    cr_assert_eq(ad_set_value(t, v, two), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), keep);
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");
    ad_tape_free(t);
}

/* ---- status strings ---- */

Test(errors, strstatus)
{
    cr_assert_str_eq(ad_strstatus(AD_OK), "ok");
    cr_assert_str_eq(ad_strstatus(AD_ENOMEM), "out of memory");
    cr_assert_str_eq(ad_strstatus(AD_ESHAPE), "shape mismatch");
    cr_assert_str_eq(ad_strstatus(AD_EMISUSE), "misuse of the API");
    cr_assert_str_eq(ad_strstatus(AD_ENOTFOUND), "no such op");
    cr_assert_str_eq(ad_strstatus(AD_ELIMIT), "size limit exceeded");
    cr_assert_str_eq(ad_strstatus(AD_EEXIST), "name already registered");
    for (int s = 0; s < AD_STATUS_COUNT; s++) {
        cr_assert_not_null(ad_strstatus(s));
        cr_assert_str_neq(ad_strstatus(s), "unknown status", "code %d has no text", s);
        for (int r = 0; r < s; r++)
            cr_assert_str_neq(ad_strstatus(s), ad_strstatus(r), "codes %d and %d share a text", r, s);
    }
    cr_assert_str_eq(ad_strstatus(AD_STATUS_COUNT), "unknown status");
    cr_assert_str_eq(ad_strstatus(-1), "unknown status");
    cr_assert_str_eq(ad_strstatus(1000), "unknown status");
    cr_assert_str_eq(ad_version(), AD_VERSION_STRING);
}
