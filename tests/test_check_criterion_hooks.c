/* test_check_criterion_hooks.c -- the failing side of the assertion
 * macros: with AD_CR_REPORT and AD_CR_ABORT captured, a failing
 * ad_assert_* reports the check's table (or its error), frees the report
 * (nothing leaks) and then asks to stop; ad_expect_* does not stop. */
#include "support.h"

#include <stdio.h>
#include <string.h>

static char captured[8192];
static int reports, aborts;

#define AD_CR_REPORT(msg) (reports++, snprintf(captured, sizeof captured, "%s", (msg)))
#define AD_CR_ABORT() (aborts++)
#include <autodiff/criterion.h>
#include <criterion/criterion.h>

static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(t, ad_dot(t, in[0], in[1]), in[2]);
    return ad_scale(t, ad_square(t, ad_sub(t, ad_relu(t, z), in[3])), 0.5);
}

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2}, B0 = 7, Y0 = 5;

static void reset(void)
{
    captured[0] = '\0';
    reports = aborts = 0;
}

Test(criterion_hooks, grad_eq_failure_shows_the_table)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node in[4] = {W, x, ad_scalar_var(t, B0), ad_scalar(t, Y0)};
    ad_set_name(t, W, "W");
    cr_assert_eq(ad_backward(t, neuron(t, in, 4, NULL)), AD_OK);
    const double wrong[3] = {-4, 0, -7};
    reset();
    ad_assert_grad_eq(t, W, wrong, 0.5);
    cr_assert_eq(reports, 1);
    cr_assert_eq(aborts, 1);
    cr_assert_str_eq(captured, "gradient of W: FAILED -- 1 of 3 elements differ (atol 0.5, rtol 0)\n"
                               "dW[2]: expected -7, tape -8\ntape:     (-4, 0, -8)\n"
                               "expected: (-4, 0, -7)\n");
    reset();
    ad_expect_grad_eq(t, W, wrong, 2);    /* within 2: passes */
    cr_assert_eq(reports, 0);
    ad_expect_grad_eq(t, W, wrong, 0);    /* exact: fails, does not stop */
    cr_assert_eq(reports, 1);
    cr_assert_eq(aborts, 0);
    /* a check that cannot run reports its error */
    reset();
    ad_assert_grad_eq(t, ad_nil(), wrong, 0);
    cr_assert_eq(aborts, 1);
    cr_assert_str_eq(captured, "ad_assert_grad_eq could not run: check_grad: the node is nil, "
                               "stale or of another tape (misuse of the API)");
    ad_tape_free(t);
}

static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp_wrong(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i] * 2 * k->in[0].val[i] * k->in[0].val[i];
}
static const ad_opdef cube_wrong = {.name = "cube", .arity = 1, .forward = cube_fwd, .vjp = cube_vjp_wrong};

static ad_node sum_cube(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_apply(t, &cube_wrong, &in[0], 1, 0.0));
}

Test(criterion_hooks, gradcheck_and_handcheck_failures_free_the_report)
{
    const double x[2] = {1, 2};
    ad_check_input in = {"x", ad_shape_vec(2), x, NULL, 0};
    test_alloc a = {0};
    ad_check_opts o = {0};
    o.alloc = test_alloc_fn;
    o.alloc_ud = &a;
    reset();
    ad_assert_gradcheck(sum_cube, NULL, &in, 1, &o);
    cr_assert_eq(aborts, 1);
    cr_assert(!strncmp(captured, "gradient check: FAILED -- 2 of 2 elements differ", 48), "%s",
              captured);
    cr_assert_not_null(strstr(captured, "\ndx[1] "), "%s", captured);
    cr_assert_gt(a.allocs, 0);
    cr_assert_eq(a.bytes, 0, "the report was freed before stopping");

    /* your gradient 3x^2 against the wrong vjp's 2x^2 */
    const double mine[2] = {3, 12};
    in.grad = mine;
    reset();
    ad_expect_handcheck(sum_cube, NULL, &in, 1, NULL, NULL, &o);
    cr_assert_eq(aborts, 0);
    cr_assert_not_null(strstr(captured, "  dx[1]: yours 12, tape 8\n"), "%s", captured);
    cr_assert_eq(a.bytes, 0);
    reset();
    ad_assert_handcheck(sum_cube, NULL, &in, 1, NULL, NULL, &o);
    cr_assert_eq(aborts, 1);

    /* errors are reported with the macro's name */
    reset();
    ad_assert_gradcheck(NULL, NULL, &in, 1, NULL);
    cr_assert_str_eq(captured, "ad_assert_gradcheck could not run: gradcheck: fn is NULL (misuse "
                               "of the API)");
    reset();
    ad_expect_gradcheck(sum_cube, NULL, NULL, 1, NULL);
    cr_assert_str_eq(captured, "ad_expect_gradcheck could not run: gradcheck: no inputs (in is "
                               "NULL or n is 1) (misuse of the API)");
    cr_assert_eq(aborts, 0);
}

/* ---- a gradient wrong on purpose: ad_assert_handcheck_fails ---- */

/* dJ/dz of the neuron; ud: 0 right, 1 relu' forgotten, 2 the 1/2 left out */
static int neuron_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    const int m = *(const int *)ud;
    const double z = p[0][0] * p[1][0] + p[0][1] * p[1][1] + p[0][2] * p[1][2] + p[2][0];
    const double dz = (m == 2 ? 2 : 1) * ((z > 0 ? z : 0) - p[3][0]) * (m == 1 || z > 0);
    for (int i = 0; i < 3; i++) {
        g[0][i] = dz * p[1][i];
        g[1][i] = dz * p[0][i];
    }
    g[2][0] = dz;
    return 0;
}

Test(criterion_hooks, handcheck_expected_to_fail)
{
    ad_check_input in[4] = {
        {"W", ad_shape_vec(3), W0, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(3), X0, NULL, AD_INPUT_COMPARE},
        {"b", ad_shape_scalar(), &B0, NULL, AD_INPUT_COMPARE},
        {"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT},
    };
    int m = 2;
    /* wrong as taught: silent */
    reset();
    ad_assert_handcheck_fails(neuron, NULL, in, 4, neuron_grad, &m, NULL, AD_DIAG_FACTOR);
    ad_assert_handcheck_fails(neuron, NULL, in, 4, neuron_grad, &m, NULL, AD_DIAG_NONE);
    cr_assert_eq(reports, 0, "%s", captured);
    cr_assert_eq(aborts, 0);
    /* wrong, but not for the reason taught: the report says why */
    ad_assert_handcheck_fails(neuron, NULL, in, 4, neuron_grad, &m, NULL, AD_DIAG_TRANSPOSE);
    cr_assert_eq(reports, 1);
    cr_assert_eq(aborts, 1);
    cr_assert(!strncmp(captured, "ad_assert_handcheck_fails: expected the hand-derived gradient to "
                                 "FAIL with a diagnosis AD_DIAG_TRANSPOSE, but it failed otherwise:"
                                 "\nhand-derived gradient check: FAILED",
                       151),
              "%s", captured);
    cr_assert(strstr(captured, "dW = 2 x the tape's"), "%s", captured);
    /* unexpectedly right */
    m = 0;
    reset();
    ad_expect_handcheck_fails(neuron, NULL, in, 4, neuron_grad, &m, NULL, AD_DIAG_NONE);
    cr_assert_eq(reports, 1);
    cr_assert_eq(aborts, 0);
    cr_assert(!strncmp(captured, "ad_expect_handcheck_fails: expected the hand-derived gradient to "
                                 "FAIL, but it passed:\nhand-derived gradient check: passed",
                       121),
              "%s", captured);
    /* the forgotten relu' is a missing factor */
    m = 1;
    reset();
    ad_check_opts o = {0};
    o.points = 6;
    o.spread = 3;
    ad_assert_handcheck_fails(neuron, NULL, in, 4, neuron_grad, &m, &o, AD_DIAG_MISSING_FACTOR);
    cr_assert_eq(reports, 0, "%s", captured);
    /* errors are reported with the macro's name */
    reset();
    ad_assert_handcheck_fails(NULL, NULL, in, 4, neuron_grad, &m, NULL, AD_DIAG_NONE);
    cr_assert_str_eq(captured, "ad_assert_handcheck_fails could not run: handcheck: fn is NULL "
                               "(misuse of the API)");
    cr_assert_eq(aborts, 1);
}
