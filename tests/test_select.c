/* test_select.c -- comparisons, select, and the replay guards (issue 14,
 * part 2).
 *
 * The finite-difference table (test_ops_fd.c) checks every shape form of
 * lt le gt ge eq ne and select against central differences and every
 * derivative mode. Here: what the table cannot show -- the values at NaN,
 * signed zeros and ties; that no gradient flows through a comparison or a
 * select's cond; that the untaken branch of a select gets exactly 0 where
 * its value or its derivative is infinite or NaN (log(x) at 0, 1/x at 0,
 * sqrt(x) at x < 0), on the inline path, the tensor path, ad_param
 * buffers, every sweep flavour and the derivative modes; and the guards: a
 * piecewise function recorded on one side of its breakpoint and replayed
 * on the other (status, message, values still those of the recorded
 * branch), the modes and workspaces reporting it the same way, and every
 * error message. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static ad_tape *new_tape(void)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    return t;
}

static void expect_msg(const char *got, const char *want)
{
    cr_expect_str_eq(got, want, "message\n  got:  %s\n  want: %s", got, want);
}

/* ---- comparisons ---- */

Test(compare, values_follow_c_including_nan_zero_signs_and_ties)
{
    ad_tape *t = new_tape();
    const double xs[6] = {1.0, 2.0, NAN, 0.0, -0.0, INFINITY};
    const double ys[6] = {2.0, 2.0, 1.0, -0.0, 0.0, INFINITY};
    /* lt le gt ge eq ne for each pair, as C gives them */
    ad_node (*const f[6])(ad_tape *, ad_node, ad_node) = {ad_lt, ad_le, ad_gt,
                                                          ad_ge, ad_eq, ad_ne};
    const char *const names[6] = {"lt", "le", "gt", "ge", "eq", "ne"};
    for (int i = 0; i < 6; i++) {
        const double x = xs[i], y = ys[i];
        const int want[6] = {x < y, x <= y, x > y, x >= y, x == y, x != y};
        ad_node a = ad_scalar_var(t, x), b = ad_scalar(t, y);
        ad_node va = ad_variable(t, ad_shape_vec(1), &x), vb = ad_constant(t, ad_shape_vec(1), &y);
        for (int k = 0; k < 6; k++) {
            ad_node s = f[k](t, a, b), v = f[k](t, va, vb);
            cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
            cr_expect_eq(ad_scalar_value(t, s), (double)want[k], "%s(%g, %g) inline: %g",
                         names[k], x, y, ad_scalar_value(t, s));
            cr_expect_eq(ad_value(t, v)[0], (double)want[k], "%s(%g, %g) tensor", names[k], x,
                         y);
            cr_expect_str_eq(ad_node_op(t, s)->name, names[k]);
        }
    }
    /* NaN: every comparison false but ne */
    ad_node n = ad_scalar(t, NAN);
    cr_expect_eq(ad_scalar_value(t, ad_eq(t, n, n)), 0.0);
    cr_expect_eq(ad_scalar_value(t, ad_ne(t, n, n)), 1.0);
    cr_expect_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    ad_tape_free(t);
}

Test(compare, broadcasts_a_scalar_on_either_side)
{
    ad_tape *t = new_tape();
    const double v[4] = {-1, 0, 0.5, 3};
    ad_node x = ad_constant(t, ad_shape_mat(2, 2), v), h = ad_scalar(t, 0.5);
    const double *a = ad_value(t, ad_ge(t, x, h)), *b = ad_value(t, ad_lt(t, h, x));
    const double wa[4] = {0, 0, 1, 1}, wb[4] = {0, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(a[i], wa[i], "x >= 0.5 [%d]", i);
        cr_expect_eq(b[i], wb[i], "0.5 < x [%d]", i);
    }
    ad_shape s = ad_node_shape(t, ad_ge(t, x, h));
    cr_expect(s.ndim == 2 && s.rows == 2 && s.cols == 2);
    ad_tape_free(t);
}

/* No adjoint flows through a comparison: it needs no gradient even when
 * its operands do, and a product with it passes the mask, not 0 * inf. */
Test(compare, needs_no_gradient_and_passes_none)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 2.0), zero = ad_scalar(t, 0.0);
    ad_node c = ad_gt(t, x, zero);
    cr_expect_eq(ad_node_requires_grad(t, c), 0);
    ad_node y = ad_mul(t, c, ad_square(t, x)); /* x^2 where x > 0 */
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_expect_null(ad_grad(t, c));
    cr_expect_eq(ad_grad(t, x)[0], 4.0);

    const double v[3] = {-1, 2, 3};
    ad_node xv = ad_variable(t, ad_shape_vec(3), v);
    ad_node cv = ad_lt(t, xv, ad_scalar(t, 2.5));
    cr_expect_eq(ad_node_requires_grad(t, cv), 0);
    cr_expect_null(ad_grad(t, cv));
    ad_node L = ad_sum(t, cv); /* a constant function of x: gradient 0 */
    cr_assert_eq(ad_backward(t, L), AD_OK);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ad_grad(t, xv)[i], 0.0);
    ad_tape_free(t);
}

/* Forward mode: a comparison's tangent is exactly 0, even where an
 * operand's tangent is infinite (log at 0), inline and tensor; a product
 * with it stays finite. */
Test(compare, tangent_is_exactly_zero)
{
    ad_tape *t = new_tape();
    const double z = 0.0;
    ad_node xs = ad_scalar_var(t, 0.0), xv = ad_variable(t, ad_shape_vec(1), &z);
    ad_node m1 = ad_scalar(t, -1.0);
    ad_node cs = ad_gt(t, ad_log(t, xs), m1), cv = ad_gt(t, ad_log(t, xv), m1);
    ad_node y = ad_add(t, ad_mul(t, cs, xs), ad_sum(t, ad_mul(t, cv, xv)));
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    const double one = 1.0;
    cr_assert_eq(ad_set_tangent(t, xs, &one), AD_OK);
    cr_assert_eq(ad_set_tangent(t, xv, &one), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_tangent(t, cs)[0], 0.0, "inline: %g", ad_tangent(t, cs)[0]);
    cr_expect_eq(ad_tangent(t, cv)[0], 0.0, "tensor: %g", ad_tangent(t, cv)[0]);
    cr_expect_eq(ad_tangent(t, y)[0], 0.0, "cond is false at x = 0: %g", ad_tangent(t, y)[0]);
    ad_tape_free(t);
}

/* ---- select ---- */

Test(select, values_and_gradients_with_broadcasts)
{
    ad_tape *t = new_tape();
    const double c[4] = {1, 0, 0, 2}, a[4] = {10, 11, 12, 13}, b[4] = {20, 21, 22, 23};
    ad_node cn = ad_constant(t, ad_shape_vec(4), c);
    ad_node an = ad_variable(t, ad_shape_vec(4), a), bn = ad_variable(t, ad_shape_vec(4), b);
    ad_node s = ad_select(t, cn, an, bn);
    const double w[4] = {1, 2, 3, 4};
    cr_assert_eq(ad_backward_seed(t, s, w), AD_OK, "%s", ad_tape_errmsg(t));
    const double want[4] = {10, 21, 22, 13}, ga[4] = {1, 0, 0, 4}, gb[4] = {0, 2, 3, 0};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(ad_value(t, s)[i], want[i]);
        cr_expect_eq(ad_grad(t, an)[i], ga[i]);
        cr_expect_eq(ad_grad(t, bn)[i], gb[i]);
    }
    cr_expect_null(ad_grad(t, cn));

    /* a scalar a and a scalar cond: broadcast; a's gradient sums where taken */
    ad_node as = ad_scalar_var(t, 5.0);
    ad_node s2 = ad_select(t, cn, as, bn);
    cr_assert_eq(ad_backward_seed(t, s2, w), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_grad(t, as)[0], 1.0 + 4.0);
    const double want2[4] = {5, 21, 22, 5};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ad_value(t, s2)[i], want2[i]);
    ad_node s3 = ad_select(t, ad_scalar(t, 0.0), as, bn); /* b everywhere */
    cr_assert_eq(ad_backward_seed(t, s3, w), AD_OK);
    cr_expect_eq(ad_grad(t, as)[0], 0.0, "taken nowhere: exactly 0");
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ad_grad(t, bn)[i], w[i]);
    /* three scalars: a scalar node; NaN in cond counts as true */
    ad_node s4 = ad_select(t, ad_scalar(t, NAN), ad_scalar(t, 1.0), ad_scalar(t, 2.0));
    cr_expect_eq(ad_node_shape(t, s4).ndim, 0);
    cr_expect_eq(ad_scalar_value(t, s4), 1.0);
    ad_tape_free(t);
}

/* A variable used as the mask gets gradient 0, written into its buffer. */
Test(select, a_variable_cond_gets_zero)
{
    ad_tape *t = new_tape();
    const double c[3] = {1, 0, 1}, a[3] = {1, 2, 3};
    ad_node cn = ad_variable(t, ad_shape_vec(3), c);
    ad_node an = ad_variable(t, ad_shape_vec(3), a);
    ad_node s = ad_sum(t, ad_select(t, cn, an, ad_scalar(t, 7.0)));
    for (int rep = 0; rep < 2; rep++) { /* the second sweep finds stale numbers */
        cr_assert_eq(ad_backward(t, s), AD_OK);
        for (int i = 0; i < 3; i++) {
            cr_expect_eq(ad_grad(t, cn)[i], 0.0);
            cr_expect_eq(ad_grad(t, an)[i], c[i]);
        }
    }
    /* cond and a the same node: a still gets its part */
    ad_node s2 = ad_sum(t, ad_select(t, cn, cn, ad_scalar(t, 7.0)));
    cr_assert_eq(ad_backward(t, s2), AD_OK);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ad_grad(t, cn)[i], c[i]);
    ad_tape_free(t);
}

/* ---- the untaken branch: exactly 0, never 0 * inf ----
 * Three functions, each finite everywhere, whose untaken branch is
 * infinite or NaN at the point, with its derivative:
 *   f1(x) = x > 0 ? log(x) : x        at x = 0: log(0) = -inf, log' = inf
 *   f2(x) = x != 0 ? 1/x : 0 (div)    at x = 0: 1/0 = inf, d = -inf
 *   f3(x) = x != 0 ? x^-1 : 0 (powc)  at x = 0
 *   f4(x) = x >= 0 ? sqrt(x) : -x     at x = -4: sqrt = NaN, sqrt' = NaN
 * and their exact derivatives there: 1, 0, 0, -1. */

typedef struct branchy {
    double x, df;
} branchy;

static ad_node fbranch(ad_tape *t, int which, ad_node x)
{
    const ad_shape s = ad_node_shape(t, x);
    ad_node zero = ad_scalar(t, 0.0);
    (void)s;
    switch (which) {
    case 0:
        return ad_select(t, ad_gt(t, x, zero), ad_log(t, x), x);
    case 1:
        return ad_select(t, ad_ne(t, x, zero), ad_div(t, ad_scalar(t, 1.0), x), zero);
    case 2:
        return ad_select(t, ad_ne(t, x, zero), ad_pow_const(t, x, -1.0), zero);
    default:
        return ad_select(t, ad_ge(t, x, zero), ad_sqrt(t, x), ad_neg(t, x));
    }
}

/* f' at x, by hand, where the branch is taken; and the point each test uses. */
static const branchy points[4] = {{0.0, 1.0}, {0.0, 0.0}, {0.0, 0.0}, {-4.0, -1.0}};

static double fprime(int which, double x)
{
    switch (which) {
    case 0:
        return x > 0 ? 1 / x : 1.0;
    case 1:
    case 2:
        return x != 0 ? -1 / (x * x) : 0.0;
    default:
        return x >= 0 ? 0.5 / sqrt(x) : -1.0;
    }
}

static double fvalue(int which, double x)
{
    switch (which) {
    case 0:
        return x > 0 ? log(x) : x;
    case 1:
    case 2:
        return x != 0 ? 1 / x : 0.0;
    default:
        return x >= 0 ? sqrt(x) : -x;
    }
}

Test(select, untaken_branch_gets_exactly_zero_inline_scalars)
{
    for (int f = 0; f < 4; f++) {
        ad_tape *t = new_tape();
        ad_node x = ad_scalar_var(t, points[f].x);
        ad_node y = fbranch(t, f, x);
        cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
        cr_expect_eq(ad_scalar_value(t, y), fvalue(f, points[f].x));
        for (int rep = 0; rep < 3; rep++) { /* sweep, sweep again, replay and sweep */
            if (rep == 2)
                cr_assert_eq(ad_replay(t), AD_OK);
            cr_assert_eq(ad_backward(t, y), AD_OK);
            cr_expect_eq(ad_grad(t, x)[0], points[f].df, "f%d'(%g) = %.17g, want %g", f + 1,
                         points[f].x, ad_grad(t, x)[0], points[f].df);
        }
        ad_tape_free(t);
    }
}

/* The same on vectors (the tensor kernels), as variables and as ad_param
 * buffers, with AD_SWEEP_ASSIGN into NaN-filled buffers; elements on both
 * sides of each breakpoint. */
Test(select, untaken_branch_gets_exactly_zero_tensors_and_params)
{
    const double xs[4][4] = {{0.0, 2.0, -1.0, 0.0}, {0.0, 2.0, -0.5, 0.0},
                             {0.0, 4.0, -2.0, 0.0}, {-4.0, 4.0, 0.25, -0.0}};
    for (int f = 0; f < 4; f++) {
        for (int form = 0; form < 2; form++) {
            ad_tape *t = new_tape();
            double g[4];
            ad_node x = form == 0 ? ad_variable(t, ad_shape_vec(4), xs[f])
                                  : ad_param(t, ad_shape_vec(4), xs[f], g);
            ad_node y = ad_sum(t, fbranch(t, f, x));
            cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
            for (int rep = 0; rep < 3; rep++) {
                for (int i = 0; i < 4; i++)
                    g[i] = NAN;
                if (rep == 1)
                    cr_assert_eq(ad_replay(t), AD_OK);
                cr_assert_eq(ad_sweep(t, y, NULL, AD_SWEEP_ASSIGN), AD_OK);
                const double *gx = ad_grad(t, x);
                for (int i = 0; i < 4; i++)
                    cr_expect_eq(gx[i], fprime(f, xs[f][i]), "f%d' at x[%d] = %g: %.17g, want %g",
                                 f + 1, i, xs[f][i], gx[i], fprime(f, xs[f][i]));
            }
            ad_tape_free(t);
        }
    }
}

/* Forward mode and forward over reverse see the same: the tangent of the
 * select is the taken branch's, and H v is finite (every f here is
 * linear or has its curvature on the taken side). */
Test(select, untaken_branch_in_the_derivative_modes)
{
    for (int f = 0; f < 4; f++) {
        for (int form = 0; form < 2; form++) {
            ad_tape *t = new_tape();
            const double x0 = points[f].x;
            ad_node x = form == 0 ? ad_scalar_var(t, x0) : ad_variable(t, ad_shape_vec(1), &x0);
            ad_node y = ad_sum(t, fbranch(t, f, x));
            const double v = 1.0, *vp = &v;
            double jv = NAN, hv = NAN, gr = NAN, *hvp = &hv, *grp = &gr;
            cr_assert_eq(ad_jvp(t, y, 1, &x, &vp, &jv), AD_OK, "%s", ad_tape_errmsg(t));
            cr_expect_eq(jv, points[f].df, "f%d: J v = %.17g", f + 1, jv);
            cr_assert_eq(ad_hvp(t, y, 1, &x, &vp, &hvp, &grp), AD_OK, "%s", ad_tape_errmsg(t));
            cr_expect_eq(gr, points[f].df, "f%d: hvp's gradient %.17g", f + 1, gr);
            cr_expect_eq(hv, 0.0, "f%d: H v = %.17g", f + 1, hv);
            double J[2] = {NAN, NAN};
            cr_assert_eq(ad_jacobian(t, y, 1, &x, J, AD_JAC_FORWARD), AD_OK);
            cr_assert_eq(ad_jacobian(t, y, 1, &x, J + 1, AD_JAC_REVERSE), AD_OK);
            cr_expect(J[0] == points[f].df && J[1] == points[f].df, "f%d: J %g %g", f + 1, J[0],
                      J[1]);
            ad_tape_free(t);
        }
    }
}

/* The strong zero holds for elementwise ops in general: a zero adjoint
 * contributes 0 through log at 0 on the tensor path, as it always did on
 * the inline path (whose sweep skips a zero adjoint). */
Test(select, a_zero_adjoint_contributes_zero_on_both_paths)
{
    ad_tape *t = new_tape();
    const double z = 0.0;
    ad_node xs = ad_scalar_var(t, 0.0), xv = ad_variable(t, ad_shape_vec(1), &z);
    ad_node zero = ad_scalar(t, 0.0);
    ad_node y = ad_add(t, ad_mul(t, zero, ad_log(t, xs)), ad_sum(t, ad_mul(t, zero, ad_log(t, xv))));
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_expect_eq(ad_grad(t, xs)[0], 0.0);
    cr_expect_eq(ad_grad(t, xv)[0], 0.0);
    ad_tape_free(t);
}

/* The gradient as a tape records plain IEEE products: there the untaken
 * log at 0 gives 0 / 0. The "double where" keeps that side finite, and
 * then the gradient node is exact too (docs/math.md). */
Test(select, double_where_for_the_gradient_tape)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 0.0), zero = ad_scalar(t, 0.0), one = ad_scalar(t, 1.0);
    ad_node c = ad_gt(t, x, zero);
    ad_node y = ad_select(t, c, ad_log(t, ad_select(t, c, x, one)), x);
    ad_node g, h;
    cr_assert_eq(ad_gradient_nodes(t, y, ad_nil(), 1, &x, &g), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_scalar_value(t, g), 1.0);
    cr_assert_eq(ad_gradient_nodes(t, g, ad_nil(), 1, &x, &h), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_scalar_value(t, h), 0.0);
    const double p = 2.0; /* replayed on the log side: 1/x and -1/x^2 */
    cr_assert_eq(ad_set_value(t, x, &p), AD_OK);
    cr_expect_eq(ad_replay(t), AD_EBRANCH);
    cr_expect_eq(ad_scalar_value(t, g), 0.5);
    cr_expect_eq(ad_scalar_value(t, h), -0.25);
    ad_tape_free(t);
}

/* ---- replay guards ---- */

/* f(x) = x > 0 ? x^2 : -x, the branch taken in C on a comparison node. */
static ad_node piecewise(ad_tape *t, ad_node x, ad_node *cmp)
{
    *cmp = ad_gt(t, x, ad_scalar(t, 0.0));
    return ad_scalar_value(t, *cmp) != 0.0 ? ad_square(t, x) : ad_neg(t, x);
}

Test(guards, piecewise_replayed_across_its_breakpoint)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 1.5), c;
    ad_node y = piecewise(t, x, &c);
    cr_assert_eq(ad_set_name(t, c, "x > 0"), AD_OK);
    cr_assert_eq(ad_scalar_value(t, y), 2.25);
    char want[256];

    /* across the breakpoint: reported, and the recorded branch computed */
    const double m = -0.5;
    cr_assert_eq(ad_set_value(t, x, &m), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    snprintf(want, sizeof want,
             "replay: comparison gt (node %zu, 'x > 0') was true when recorded, false now "
             "(operands -0.5 and 0)",
             ad_node_index(t, c));
    expect_msg(ad_tape_errmsg(t), want);
    cr_expect_eq(ad_tape_status(t), AD_OK, "not sticky");
    cr_expect_eq(ad_scalar_value(t, y), 0.25, "x^2 still: the recorded branch");
    cr_expect_eq(ad_scalar_value(t, c), 0.0, "the comparison's value is the new outcome");
    cr_assert_eq(ad_backward(t, y), AD_OK, "the recording is still usable");
    cr_expect_eq(ad_grad(t, x)[0], -1.0, "d(x^2)/dx at -0.5");
    cr_expect_str_eq(ad_tape_errmsg(t), "", "the next call clears the message");

    /* the outcome is kept, not updated: reported again at the same point */
    cr_expect_eq(ad_replay(t), AD_EBRANCH);
    expect_msg(ad_tape_errmsg(t), want);
    /* on the recorded side again: silent */
    const double p = 3.0;
    cr_assert_eq(ad_set_value(t, x, &p), AD_OK);
    cr_expect_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_str_eq(ad_tape_errmsg(t), "");
    cr_expect_eq(ad_scalar_value(t, y), 9.0);
    /* the breakpoint itself: x > 0 is false at 0 */
    const double zero = 0.0;
    cr_assert_eq(ad_set_value(t, x, &zero), AD_OK);
    cr_expect_eq(ad_replay(t), AD_EBRANCH);
    cr_expect_str_eq(ad_strstatus(AD_EBRANCH),
                     "a recorded comparison changed: the tape follows another branch");

    /* recording again on the new side follows the new branch */
    ad_tape_reset(t);
    x = ad_scalar_var(t, -0.5);
    y = piecewise(t, x, &c);
    cr_expect_eq(ad_scalar_value(t, y), 0.5);
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_expect_eq(ad_grad(t, x)[0], -1.0);
    const double q = -2.0;
    cr_assert_eq(ad_set_value(t, x, &q), AD_OK);
    cr_expect_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_scalar_value(t, y), 2.0);
    ad_tape_free(t);
}

/* The same function with select: both branches on the tape, so replay
 * re-decides and is right on both sides; its comparison still reports,
 * since the program might have branched on it too. */
Test(guards, select_replays_correctly_and_still_reports)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 1.5);
    ad_node c = ad_gt(t, x, ad_scalar(t, 0.0));
    ad_node y = ad_select(t, c, ad_square(t, x), ad_neg(t, x));
    const double m = -0.5;
    cr_assert_eq(ad_set_value(t, x, &m), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "replay: comparison gt (node %zu) was true when recorded, false now (operands "
             "-0.5 and 0)",
             ad_node_index(t, c));
    expect_msg(ad_tape_errmsg(t), want);
    cr_expect_eq(ad_scalar_value(t, y), 0.5, "-x: select re-decided");
    cr_assert_eq(ad_backward(t, y), AD_OK);
    cr_expect_eq(ad_grad(t, x)[0], -1.0);
    ad_tape_free(t);
}

/* Tensor comparisons name the element; several changed: the first in tape
 * order is named, and how many changed. Operands are read where they are
 * broadcast. */
Test(guards, tensor_comparisons_and_several_changes)
{
    ad_tape *t = new_tape();
    const double v[3] = {1, 2, 3};
    ad_node x = ad_variable(t, ad_shape_vec(3), v);
    ad_node k = ad_scalar_var(t, 2.5);
    ad_node c1 = ad_lt(t, x, k);                   /* 1 1 0 */
    ad_node c2 = ad_ge(t, ad_scalar(t, 0.0), k);   /* 0     */
    ad_node c3 = ad_eq(t, x, x);                   /* 1 1 1: never changes */
    ad_node y = ad_sum(t, ad_select(t, c1, x, ad_mul(t, x, k)));
    (void)c2, (void)c3;
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_set_name(t, c1, "x < k"), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);

    const double w[3] = {1, 2, 3.5}; /* element 2: 3.5 < 2.5 stays false; change k */
    cr_assert_eq(ad_set_value(t, x, w), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    const double kk = 1.5; /* element 1: 2 < 1.5 false now; and 0 >= 1.5 unchanged */
    cr_assert_eq(ad_set_value(t, k, &kk), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "replay: comparison lt (node %zu, 'x < k') at element 1 of a vector of length 3 "
             "was true when recorded, false now (operands 2 and 1.5)",
             ad_node_index(t, c1));
    expect_msg(ad_tape_errmsg(t), want);
    cr_expect_eq(ad_scalar_value(t, y), 1 + 2 * 1.5 + 3.5 * 1.5, "select re-decided");

    const double kn = -1.0; /* now c1 changes at elements 0, 1, and c2 changes too */
    cr_assert_eq(ad_set_value(t, k, &kn), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    snprintf(want, sizeof want,
             "replay: comparison lt (node %zu, 'x < k') at element 0 of a vector of length 3 "
             "was true when recorded, false now (operands 1 and -1); 2 recorded comparisons "
             "changed, this is the first",
             ad_node_index(t, c1));
    expect_msg(ad_tape_errmsg(t), want);
    ad_tape_free(t);
}

/* A row or a column broadcast against a matrix: the message names the
 * operand elements that element reads. */
Test(guards, broadcast_operands_in_the_message)
{
    ad_tape *t = new_tape();
    const double m[6] = {1, 2, 3, 4, 5, 6}, r[3] = {0, 10, 0}, c[2] = {0, 4.5};
    ad_node X = ad_variable(t, ad_shape_mat(2, 3), m);
    ad_node R = ad_variable(t, ad_shape_vec(3), r), C = ad_variable(t, ad_shape_mat(2, 1), c);
    ad_node lr = ad_lt(t, X, R); /* 0 1 0 / 0 1 0 */
    ad_node gc = ad_gt(t, X, C); /* 1 1 1 / 0 1 1 */
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    const double r2[3] = {0, 4.5, 0}; /* element 4: 5 < 4.5 false now */
    cr_assert_eq(ad_set_value(t, R, r2), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "replay: comparison lt (node %zu) at element 4 of 2x3 was true when recorded, "
             "false now (operands 5 and 4.5)",
             ad_node_index(t, lr));
    expect_msg(ad_tape_errmsg(t), want);
    cr_assert_eq(ad_set_value(t, R, r), AD_OK);
    const double c2[2] = {0, 3.5}; /* element 3: 4 > 3.5 true now */
    cr_assert_eq(ad_set_value(t, C, c2), AD_OK);
    cr_assert_eq(ad_replay(t), AD_EBRANCH);
    snprintf(want, sizeof want,
             "replay: comparison gt (node %zu) at element 3 of 2x3 was false when recorded, "
             "true now (operands 4 and 3.5)",
             ad_node_index(t, gc));
    expect_msg(ad_tape_errmsg(t), want);
    ad_tape_free(t);
}

/* The forward sweep of the modes reports the guard the same way, with the
 * call's name, after computing everything. */
Test(guards, modes_report_like_replay)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 1.5), c;
    ad_node y = piecewise(t, x, &c);
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    const double one = 1.0;
    cr_assert_eq(ad_set_tangent(t, x, &one), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_tangent(t, y)[0], 3.0);

    const double m = -0.5;
    cr_assert_eq(ad_set_value(t, x, &m), AD_OK);
    cr_assert_eq(ad_forward(t), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "forward: comparison gt (node %zu) was true when recorded, false now (operands "
             "-0.5 and 0)",
             ad_node_index(t, c));
    expect_msg(ad_tape_errmsg(t), want);
    cr_expect_eq(ad_tape_status(t), AD_OK);
    cr_expect_eq(ad_scalar_value(t, y), 0.25);
    cr_expect_eq(ad_tangent(t, y)[0], -1.0, "2x along 1, on the recorded branch");

    /* the drivers: results computed, AD_EBRANCH returned, their names */
    const double *vp = &one;
    double jv = NAN, hv = NAN, J = NAN, H = NAN, *hvp = &hv;
    cr_expect_eq(ad_jvp(t, y, 1, &x, &vp, &jv), AD_EBRANCH);
    cr_expect_eq(jv, -1.0);
    cr_expect(strncmp(ad_tape_errmsg(t), "jvp: comparison gt (node ", 25) == 0, "%s",
              ad_tape_errmsg(t));
    cr_expect_eq(ad_hvp(t, y, 1, &x, &vp, &hvp, NULL), AD_EBRANCH);
    cr_expect_eq(hv, 2.0);
    cr_expect(strncmp(ad_tape_errmsg(t), "hvp: comparison gt", 18) == 0, "%s",
              ad_tape_errmsg(t));
    cr_expect_eq(ad_jacobian(t, y, 1, &x, &J, AD_JAC_FORWARD), AD_EBRANCH);
    cr_expect_eq(J, -1.0);
    J = NAN;
    cr_expect_eq(ad_jacobian(t, y, 1, &x, &J, AD_JAC_REVERSE), AD_EBRANCH);
    cr_expect_eq(J, -1.0);
    cr_expect(strncmp(ad_tape_errmsg(t), "jacobian: comparison gt", 23) == 0, "%s",
              ad_tape_errmsg(t));
    cr_expect_eq(ad_hessian(t, y, 1, &x, &H), AD_EBRANCH);
    cr_expect_eq(H, 2.0);
    cr_expect(strncmp(ad_tape_errmsg(t), "hessian: comparison gt", 22) == 0, "%s",
              ad_tape_errmsg(t));

    const double p = 2.0; /* back on the recorded side */
    cr_assert_eq(ad_set_value(t, x, &p), AD_OK);
    cr_expect_eq(ad_jvp(t, y, 1, &x, &vp, &jv), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(jv, 4.0);
    ad_tape_free(t);
}

/* A workspace checks its own evaluation against the outcomes recorded on
 * the tape, with the names the tape had when it was made. */
Test(guards, workspaces_report_like_replay)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 1.5), c;
    ad_node y = piecewise(t, x, &c);
    cr_assert_eq(ad_set_name(t, c, "x > 0"), AD_OK);
    int st;
    ad_workspace *w = ad_workspace_new(t, NULL, &st);
    cr_assert_not_null(w);
    cr_assert_eq(ad_workspace_replay(w), AD_OK, "%s", ad_workspace_errmsg(w));
    const double m = -0.5;
    cr_assert_eq(ad_workspace_set_value(w, x, &m), AD_OK);
    cr_assert_eq(ad_workspace_replay(w), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "workspace_replay: comparison gt (node %zu, 'x > 0') was true when recorded, "
             "false now (operands -0.5 and 0)",
             ad_node_index(t, c));
    expect_msg(ad_workspace_errmsg(w), want);
    cr_expect_eq(ad_workspace_value(w, y)[0], 0.25);
    cr_expect_eq(ad_workspace_sweep(w, y, NULL, 0), AD_OK);
    cr_expect_eq(ad_workspace_grad(w, x)[0], -1.0);
    cr_expect_str_eq(ad_workspace_errmsg(w), "");
    /* the tape itself is untouched and still at 1.5 */
    cr_expect_eq(ad_replay(t), AD_OK);
    /* the workspace outlives the tape */
    ad_tape_free(t);
    cr_expect_eq(ad_workspace_replay(w), AD_EBRANCH);
    expect_msg(ad_workspace_errmsg(w), want);
    ad_workspace_free(w);
}

/* A workspace of a tape with guards: every allocation failure of
 * ad_workspace_new is AD_ENOMEM and leaks nothing; the made one checks. */
Test(guards, workspace_new_out_of_memory)
{
    ad_tape *t = new_tape();
    const double v[3] = {1, 2, 3};
    ad_node x = ad_variable(t, ad_shape_vec(3), v);
    ad_node c = ad_lt(t, x, ad_scalar(t, 2.5));
    cr_assert_eq(ad_set_name(t, c, "x < 2.5"), AD_OK);
    ad_node y = ad_sum(t, ad_select(t, c, x, ad_neg(t, x)));
    (void)y;
    int made = 0;
    for (long fail = 1; fail < 30 && !made; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_tape_opts o = test_alloc_opts(&a);
        int st = -1;
        ad_workspace *w = ad_workspace_new(t, &o, &st);
        if (!w) {
            cr_expect_eq(st, AD_ENOMEM);
        } else {
            made = 1;
            const double m[3] = {1, 3, 3};
            cr_expect_eq(ad_workspace_set_value(w, x, m), AD_OK);
            cr_expect_eq(ad_workspace_replay(w), AD_EBRANCH);
            cr_expect(strstr(ad_workspace_errmsg(w), "'x < 2.5') at element 1") != NULL, "%s",
                      ad_workspace_errmsg(w));
            ad_workspace_free(w);
        }
        cr_expect_eq(a.bytes, 0, "fail at %ld: %zu bytes held", fail, a.bytes);
        cr_expect_eq(a.bad_osize, 0);
    }
    cr_expect(made, "no workspace within 30 allocations");
    ad_tape_free(t);
}

/* A changed comparison is reported before a matrix that became singular
 * in the same evaluation. */
Test(guards, reported_before_a_singular_matrix)
{
    ad_tape *t = new_tape();
    const double a = 2.0, b = 1.0;
    ad_node A = ad_variable(t, ad_shape_mat(1, 1), &a), B = ad_constant(t, ad_shape_vec(1), &b);
    ad_node X = ad_solve(t, A, B);
    ad_node c = ad_gt(t, ad_sum(t, A), ad_scalar(t, 0.0));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    const double z = 0.0;
    cr_assert_eq(ad_set_value(t, A, &z), AD_OK);
    cr_expect_eq(ad_replay(t), AD_EBRANCH);
    char want[256];
    snprintf(want, sizeof want,
             "replay: comparison gt (node %zu) was true when recorded, false now (operands 0 "
             "and 0)",
             ad_node_index(t, c));
    expect_msg(ad_tape_errmsg(t), want);
    cr_expect(isnan(ad_value(t, X)[0]));
    ad_tape_free(t);
}

/* A tape without comparisons has no guards; one whose comparisons were
 * dropped by ad_tape_reset has none either. */
Test(guards, reset_drops_them)
{
    ad_tape *t = new_tape();
    ad_node x = ad_scalar_var(t, 1.0), c;
    piecewise(t, x, &c);
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    ad_node y = ad_square(t, x);
    const double m = -3.0;
    cr_assert_eq(ad_set_value(t, x, &m), AD_OK);
    cr_expect_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(ad_scalar_value(t, y), 9.0);
    ad_tape_free(t);
}

/* ---- errors ---- */

Test(select, error_messages)
{
    ad_tape *t = new_tape();
    ad_node v3 = ad_constant(t, ad_shape_vec(3), NULL), m22 = ad_constant(t, ad_shape_mat(2, 2), NULL);
    ad_node s = ad_scalar(t, 1.0);
    cr_expect(ad_node_is_nil(ad_select(t, v3, m22, s)));
    cr_expect_eq(ad_tape_status(t), AD_ESHAPE);
    expect_msg(ad_tape_errmsg(t), "select: cond is a vector of length 3, a is 2x2 and b is a "
                                  "scalar (each must be a scalar or the one shape of the others)");
    ad_tape_reset(t);
    v3 = ad_constant(t, ad_shape_vec(3), NULL), m22 = ad_constant(t, ad_shape_mat(2, 2), NULL);
    s = ad_scalar(t, 1.0);
    cr_expect(ad_node_is_nil(ad_select(t, s, v3, m22)));
    expect_msg(ad_tape_errmsg(t), "select: cond is a scalar, a is a vector of length 3 and b is "
                                  "2x2 (each must be a scalar or the one shape of the others)");
    ad_tape_reset(t);
    v3 = ad_constant(t, ad_shape_vec(3), NULL);
    s = ad_scalar(t, 1.0);
    cr_expect(ad_node_is_nil(ad_select(t, s, v3, ad_nil())));
    expect_msg(ad_tape_errmsg(t),
               "select: operand 3 is the nil node (the result of a failed call)");
    ad_tape_reset(t);
    v3 = ad_constant(t, ad_shape_vec(3), NULL), m22 = ad_constant(t, ad_shape_mat(2, 2), NULL);
    cr_expect(ad_node_is_nil(ad_gt(t, v3, m22)));
    /* the comparisons share the binary ops' broadcasting rule and its words */
    cr_expect(strncmp(ad_tape_errmsg(t), "gt: a is a vector of length 3 but b is 2x2", 42) == 0,
              "%s", ad_tape_errmsg(t));
    ad_tape_reset(t);
    s = ad_scalar(t, 1.0);
    const ad_node in[2] = {s, s};
    cr_expect(ad_node_is_nil(ad_apply_named(t, "select", in, 2, 0.0)));
    expect_msg(ad_tape_errmsg(t), "select: takes 3 operands, got 2");
    /* no tape: nil, nothing else */
    cr_expect(ad_node_is_nil(ad_select(NULL, s, s, s)));
    cr_expect(ad_node_is_nil(ad_lt(NULL, s, s)));
    ad_tape_free(t);
}

/* Out of memory for the guard: a recording error naming the op, the node
 * not recorded, the tape reset and used again. */
Test(guards, out_of_memory_is_a_recording_error)
{
    for (long fail = 1; fail < 40; fail++) {
        test_alloc a = {0};
        ad_tape_opts o = test_alloc_opts(&a);
        ad_tape *t = ad_tape_new(&o);
        if (!t)
            continue;
        ad_node x = ad_scalar_var(t, 1.0), z = ad_scalar(t, 0.0);
        const double v[2] = {1, -1};
        ad_node xv = ad_variable(t, ad_shape_vec(2), v);
        if (ad_tape_status(t) != AD_OK) {
            ad_tape_free(t);
            continue;
        }
        const size_t len = ad_tape_len(t);
        a.fail_at = a.count + fail;
        ad_node c = ad_gt(t, x, z);
        ad_node cv = ad_node_is_nil(c) ? c : ad_le(t, xv, z);
        if (ad_node_is_nil(cv)) {
            cr_expect_eq(ad_tape_status(t), AD_ENOMEM);
            const char *msg = ad_tape_errmsg(t);
            if (ad_node_is_nil(c)) /* the first comparison makes the guard table */
                expect_msg(msg, "gt: out of memory for its replay guard");
            else
                cr_expect(strstr(msg, "le: out of memory") == msg, "%s", msg);
            cr_expect(ad_node_is_nil(c) ? ad_tape_len(t) == len : ad_tape_len(t) == len + 1,
                      "the failed node is not recorded");
        } else {
            cr_expect_eq(ad_replay(t), AD_OK);
        }
        a.fail_at = 0;
        ad_tape_reset(t);
        x = ad_scalar_var(t, 1.0);
        c = ad_gt(t, x, ad_scalar(t, 0.0));
        cr_expect_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
        const double m = -1.0;
        cr_expect_eq(ad_set_value(t, x, &m), AD_OK);
        cr_expect_eq(ad_replay(t), AD_EBRANCH);
        ad_tape_free(t);
        cr_expect_eq(a.bytes, 0, "every byte given back");
        cr_expect_eq(a.bad_osize, 0);
    }
}
