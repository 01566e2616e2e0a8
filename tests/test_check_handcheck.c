/* test_check_handcheck.c -- ad_handcheck (your gradient against the tape's,
 * as values or as a callback at seeded random points) and ad_check_grad
 * (one node against an expected array): pass on right formulas, fail on
 * wrong ones with each element named, report texts, error paths with
 * messages, allocation failures. */
#include "support.h"

#include <autodiff/check.h>
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

/* The seed neuron: J = 1/2 (relu(W.x + b) - y)^2; inputs W, x, b, y. */
static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(t, ad_dot(t, in[0], in[1]), in[2]);
    return ad_scale(t, ad_square(t, ad_sub(t, ad_relu(t, z), in[3])), 0.5);
}

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2}, B0 = 7, Y0 = 5;
/* The lecture notes' hand derivation at that point. */
static const double dW0[3] = {-4, 0, -8}, dX0[3] = {-16, -8, 20}, dB0 = -4;

static void neuron_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"W", ad_shape_vec(3), W0, dW0, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"x", ad_shape_vec(3), X0, dX0, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"b", ad_shape_scalar(), &B0, &dB0, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT};
}

/* dz = (yhat - y) relu'(z); dW = dz x; dx = dz W; db = dz. ud: int* 1 to
 * forget relu'. */
static int neuron_grad(const double *const *p, double *const *g, int n, void *ud)
{
    cr_assert_eq(n, 4);
    cr_assert_null(g[3], "a constant input gets no buffer");
    int forget = ud ? *(int *)ud : 0;
    const double *W = p[0], *x = p[1];
    double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + p[2][0];
    double yhat = z > 0 ? z : 0;
    double dz = (yhat - p[3][0]) * (forget || z > 0 ? 1.0 : 0.0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(g[0][i], 0.0, "buffers are zeroed");
        g[0][i] = dz * x[i];
        g[1][i] = dz * W[i];
    }
    g[2][0] = dz;
    return 0;
}

static int refuses(const double *const *p, double *const *g, int n, void *ud)
{
    (void)p, (void)g, (void)n;
    return *(int *)ud;
}

/* ---- values at the given point ---- */

Test(handcheck, right_values_pass)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL, &rep), AD_OK, "%s",
                 rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 7);
    cr_assert_eq(rep.failed, 0);
    cr_assert_str_eq(rep.text,
                     "hand-derived gradient check: passed -- 7 compared elements agree (the given "
                     "point, atol 1e-09, rtol 1e-09)\n"
                     "worst: dW[0]: yours -4, tape -4, abs err 0, rel err 0, at the given point\n");
    ad_check_report_free(&rep);
}

Test(handcheck, wrong_value_is_named_with_the_point)
{
    ad_check_input in[4];
    neuron_inputs(in);
    const double wrong[3] = {-4, 0, -7};
    in[0].grad = wrong;
    in[1].grad = NULL; /* x not compared */
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.checked, 4);
    cr_assert_eq(rep.failed, 1);
    cr_assert_eq(rep.entries[2].verdict, AD_ELEM_FAIL);
    cr_assert_eq(rep.entries[2].other, -7);
    cr_assert_eq(rep.entries[2].tape, -8);
    cr_assert_str_eq(rep.text,
                     "hand-derived gradient check: FAILED -- 1 of 4 compared elements differ (the "
                     "given point, atol 1e-09, rtol 1e-09)\n"
                     "at the given point (W = (4, 2, -5), x = (1, 0, 2), b = 7, y = 5):\n"
                     "  dW[2]: yours -7, tape -8\n"
                     "worst: dW[2]: yours -7, tape -8, abs err 1, rel err 0.12, at the given point\n");
    ad_check_report_free(&rep);

    ad_check_opts o = {0};
    o.flags = AD_CHECK_ALL_ROWS;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, &o, &rep), AD_OK);
    cr_assert_not_null(strstr(rep.text, "  dW[0]: yours -4, tape -4  ok\n"), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  db: yours -4, tape -4  ok\n"), "%s", rep.text);
    ad_check_report_free(&rep);
}

static ad_node sum_Wx(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_matvec(t, in[0], in[1]));
}

Test(handcheck, matrix_rows_name_both_indices)
{
    const double W[6] = {1, 2, 3, 4, 5, 6}, x[3] = {1, -7, 2};
    const double mine[6] = {1, -7, 2, 1, -8, 2};
    ad_check_input in[2] = {{"W", ad_shape_mat(2, 3), W, mine, 0},
                            {"x", ad_shape_vec(3), x, NULL, AD_INPUT_CONSTANT}};
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(sum_Wx, NULL, in, 2, NULL, NULL, NULL, &rep), AD_OK);
    cr_assert_eq(rep.failed, 1);
    cr_assert_not_null(strstr(rep.text, "\n  dW[1][1]: yours -8, tape -7\n"), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "at the given point (W = [[1, 2, 3], [4, 5, 6]], x = (1, "
                                        "-7, 2)):\n"),
                       "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- a callback at random points ---- */

Test(handcheck, right_callback_passes_at_random_points)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, NULL, &rep), AD_OK, "%s",
                 rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 7 * 4, "given point + 3 random points by default");
    cr_assert_eq(rep.entries[7].point, 1);
    cr_assert_eq(rep.entries[27].point, 3);
    const char *head = "hand-derived gradient check: passed -- 28 compared elements agree (the "
                       "given point and 3 random points, seed 1592614637, atol 1e-09, rtol 1e-09)\n";
    cr_assert(!strncmp(rep.text, head, strlen(head)), "%s", rep.text);
    ad_check_report_free(&rep);

    ad_check_opts o = {0};
    o.points = -1;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, &o, &rep), AD_OK);
    cr_assert_eq(rep.checked, 7);
    ad_check_report_free(&rep);
    o.points = 10;
    o.seed = 99;
    o.spread = 0.5;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, &o, &rep), AD_OK);
    cr_assert_eq(rep.checked, 77);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(handcheck, forgotten_relu_is_caught_at_random_points)
{
    /* at the given point z = 1 > 0, so forgetting relu' agrees there; the
     * random points reach z < 0 and catch it */
    ad_check_input in[4];
    neuron_inputs(in);
    int forget = 1;
    ad_check_opts o = {0};
    o.points = 12;
    o.seed = 3;
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, neuron_grad, &forget, &o, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_gt(rep.failed, 0);
    for (size_t i = 0; i < 7; i++)
        cr_assert_eq(rep.entries[i].verdict, AD_ELEM_OK, "the given point agrees");
    cr_assert_null(strstr(rep.text, "at the given point"), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "\nat random point "), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  db: yours "), "%s", rep.text);
    cr_assert(rep.worst.point > 0);
    ad_check_report_free(&rep);
}

Test(handcheck, large_points_are_labelled_not_listed)
{
    double W[30], x[30];
    for (int i = 0; i < 30; i++)
        W[i] = 0.1 * i, x[i] = 1;
    double mine[30];
    for (int i = 0; i < 30; i++)
        mine[i] = 1;
    mine[4] = 2;
    ad_check_input in[2] = {{"W", ad_shape_mat(1, 30), W, mine, 0},
                            {"x", ad_shape_vec(30), x, NULL, AD_INPUT_CONSTANT}};
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(sum_Wx, NULL, in, 2, NULL, NULL, NULL, &rep), AD_OK);
    cr_assert_not_null(strstr(rep.text, "\nat the given point:\n  dW[0][4]: yours 2, tape 1\n"),
                       "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- errors ---- */

#define EXPECT_ERR(call, st, msg)                                                             \
    do {                                                                                      \
        ad_check_report rep_;                                                                 \
        ad_check_report *rep = &rep_;                                                         \
        cr_assert_eq((call), (st), "%s", rep_.errmsg);                                        \
        cr_assert_eq(rep_.status, (st));                                                      \
        cr_assert_not(rep_.passed);                                                           \
        cr_assert_str_eq(rep_.errmsg, (msg));                                                 \
        ad_check_report_free(rep);                                                            \
    } while (0)

Test(handcheck, error_paths_have_messages)
{
    ad_check_input in[4];
    neuron_inputs(in);
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL, NULL), AD_EMISUSE);
    EXPECT_ERR(ad_handcheck(NULL, NULL, in, 4, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck: fn is NULL");
    EXPECT_ERR(ad_handcheck(neuron, NULL, NULL, 0, neuron_grad, NULL, NULL, rep), AD_EMISUSE,
               "handcheck: no inputs (in is NULL or n is 0)");
    ad_check_opts o = {0};
    o.points = 2;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, &o, rep), AD_EMISUSE,
               "handcheck: 2 random points need a gradient callback (yours): in[i].grad holds "
               "only at the given point");
    o.points = 2000000000;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, &o, rep), AD_EMISUSE,
               "handcheck: opts.points is 2000000000; it must be at most 100000");
    o.points = 0;
    o.rtol = -1;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, &o, rep), AD_EMISUSE,
               "handcheck: opts.rtol is -1; it must be finite and >= 0");
    ad_check_input none[4];
    memcpy(none, in, sizeof none);
    none[0].grad = none[1].grad = none[2].grad = NULL;
    EXPECT_ERR(ad_handcheck(neuron, NULL, none, 4, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck: nothing to compare (set in[i].grad on an input with role compare, or "
               "pass a callback)");
    int rc = 3;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, refuses, &rc, NULL, rep), AD_EMISUSE,
               "handcheck: your gradient callback returned 3 at the given point");
    in[0].value = NULL;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck: input 0 (W) has no value");
}

/* Every numeric option must be finite and not negative (0: the default).
 * A NaN used to slip through: spread NaN became the default spread, rtol
 * NaN an exact comparison. */
Test(handcheck, non_finite_or_negative_options_are_misuse)
{
    ad_check_input in[4];
    neuron_inputs(in);
    static const struct {
        double atol, rtol, spread;
        const char *msg;
    } bad[] = {
        {0, 0, NAN, "handcheck: opts.spread is nan; it must be finite and > 0, or 0 for the default"},
        {0, 0, INFINITY, "handcheck: opts.spread is inf; it must be finite and > 0, or 0 for the default"},
        {0, 0, -0.5, "handcheck: opts.spread is -0.5; it must be finite and > 0, or 0 for the default"},
        {0, NAN, 0, "handcheck: opts.rtol is nan; it must be finite and >= 0"},
        {1e-9, NAN, 0, "handcheck: opts.rtol is nan; it must be finite and >= 0"},
        {NAN, 0, 0, "handcheck: opts.atol is nan; it must be finite and >= 0"},
        {INFINITY, 0, 0, "handcheck: opts.atol is inf; it must be finite and >= 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int cb = 0; cb < 2; cb++) { /* with and without a callback */
            ad_check_opts o = {0};
            o.atol = bad[i].atol;
            o.rtol = bad[i].rtol;
            o.spread = bad[i].spread;
            ad_check_report rep;
            int st = ad_handcheck(neuron, NULL, in, 4, cb ? neuron_grad : NULL, NULL, &o, &rep);
            cr_expect_eq(st, AD_EMISUSE, "case %zu/%d: status %d, passed %d, errmsg '%s', text: %s",
                         i, cb, st, rep.passed, rep.errmsg, rep.text);
            cr_expect_eq(rep.status, st);
            cr_expect_str_eq(rep.errmsg, bad[i].msg, "case %zu/%d", i, cb);
            ad_check_report_free(&rep);
        }
    /* 0 still means the defaults; negative points still means none */
    ad_check_opts o = {0};
    o.points = -1;
    ad_check_report rep;
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, &o, &rep), AD_OK, "%s",
                 rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "(the given point, atol 1e-09, rtol 1e-09)"), "%s",
                       rep.text);
    ad_check_report_free(&rep);
}

static int refuses_later(const double *const *p, double *const *g, int n, void *ud)
{
    int *calls = ud;
    if (++*calls == 3)
        return -1;
    return neuron_grad(p, g, n, NULL);
}

Test(handcheck, callback_refusing_at_a_random_point)
{
    ad_check_input in[4];
    neuron_inputs(in);
    int calls = 0;
    EXPECT_ERR(ad_handcheck(neuron, NULL, in, 4, refuses_later, &calls, NULL, rep), AD_EMISUSE,
               "handcheck: your gradient callback returned -1 at random point 2");
}

Test(handcheck, every_allocation_failure_is_enomem_without_leaks)
{
    ad_check_input in[4];
    neuron_inputs(in);
    int succeeded = 0;
    for (long fail = 1; fail < 500 && !succeeded; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_check_opts o = {0};
        o.alloc = test_alloc_fn;
        o.alloc_ud = &a;
        o.flags = AD_CHECK_ALL_ROWS;
        ad_check_report rep;
        int st = ad_handcheck(neuron, NULL, in, 4, neuron_grad, NULL, &o, &rep);
        if (st == AD_OK) {
            cr_assert(rep.passed, "%s", rep.text);
            succeeded = 1;
        } else {
            cr_assert_eq(st, AD_ENOMEM, "fail %ld: %d %s", fail, st, rep.errmsg);
            cr_assert_not_null(strstr(rep.errmsg, "out of memory"), "%s", rep.errmsg);
            cr_assert(!strncmp(rep.errmsg, "handcheck: ", 11), "%s", rep.errmsg);
            cr_assert_str_eq(rep.text, "");
        }
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0, "fail %ld: %zu bytes leaked", fail, a.bytes);
    }
    cr_assert(succeeded);
}

/* ---- ad_check_grad ---- */

Test(check_grad, pass_fail_and_text)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node J = ad_scale(t, ad_square(t, ad_add_const(t, ad_dot(t, W, x), 2)), 0.5);
    cr_assert_eq(ad_backward(t, J), AD_OK);
    /* J = 1/2 (W.x + 2)^2 = 8;  dW = (W.x + 2) x = -4 x */
    ad_check_report rep;
    cr_assert_eq(ad_check_grad(t, W, dW0, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_str_eq(rep.text, "gradient of n1: passed -- 3 elements agree (atol 1e-09, rtol "
                               "1e-09)\ntape:     (-4, 0, -8)\nexpected: (-4, 0, -8)\n");
    ad_check_report_free(&rep);

    ad_set_name(t, W, "W");
    const double wrong[3] = {-4, 0, -7};
    cr_assert_eq(ad_check_grad(t, W, wrong, NULL, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_str_eq(rep.text, "gradient of W: FAILED -- 1 of 3 elements differ (atol 1e-09, rtol "
                               "1e-09)\ndW[2]: expected -7, tape -8\ntape:     (-4, 0, -8)\n"
                               "expected: (-4, 0, -7)\n");
    ad_check_report_free(&rep);
    /* a loose absolute tolerance accepts it */
    ad_check_opts o = {0};
    o.atol = 1.5;
    cr_assert_eq(ad_check_grad(t, W, wrong, &o, &rep), AD_OK);
    cr_assert(rep.passed);
    ad_check_report_free(&rep);

    /* errors */
    EXPECT_ERR(ad_check_grad(NULL, W, wrong, NULL, rep), AD_EMISUSE, "check_grad: tape is NULL");
    EXPECT_ERR(ad_check_grad(t, W, NULL, NULL, rep), AD_EMISUSE, "check_grad: expected is NULL");
    EXPECT_ERR(ad_check_grad(t, ad_nil(), wrong, NULL, rep), AD_EMISUSE,
               "check_grad: the node is nil, stale or of another tape");
    ad_node c = ad_scalar(t, 1);
    EXPECT_ERR(ad_check_grad(t, c, wrong, NULL, rep), AD_EMISUSE,
               "check_grad: n7 has no gradient (it depends on no variable)");
    o.atol = -1;
    EXPECT_ERR(ad_check_grad(t, W, wrong, &o, rep), AD_EMISUSE,
               "check_grad: opts.atol is -1; it must be finite and >= 0");
    cr_assert_eq(ad_check_grad(t, W, wrong, NULL, NULL), AD_EMISUSE);
    ad_dot(t, W, c);
    EXPECT_ERR(ad_check_grad(t, W, wrong, NULL, rep), AD_EMISUSE,
               "check_grad: the tape holds an error: dot: u is a vector of length 3 but v is a "
               "scalar");

    /* allocation failures */
    ad_tape_reset(t);
    W = ad_variable(t, ad_shape_vec(3), W0);
    J = ad_sum(t, W);
    cr_assert_eq(ad_backward(t, J), AD_OK);
    for (long fail = 1; fail < 20; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_check_opts ao = {0};
        ao.alloc = test_alloc_fn;
        ao.alloc_ud = &a;
        const double ones[3] = {1, 1, 1};
        int st = ad_check_grad(t, W, ones, &ao, &rep);
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0);
        if (st == AD_OK)
            break;
        cr_assert_eq(st, AD_ENOMEM);
        cr_assert_eq(rep.status, AD_ENOMEM);
        cr_assert(!strncmp(rep.errmsg, "check_grad: out of memory", 25), "%s", rep.errmsg);
    }
    ad_tape_free(t);
}

/* NaN or infinite tolerances are misuse (a NaN atol used to make the
 * comparison exact). The tape is the caller's: a refused check leaves its
 * status and message alone, and the same tape checks fine afterwards. */
Test(check_grad, non_finite_or_negative_tolerances_are_misuse)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node J = ad_scale(t, ad_square(t, ad_add_const(t, ad_dot(t, W, x), 2)), 0.5);
    cr_assert_eq(ad_backward(t, J), AD_OK);
    static const struct {
        double atol, rtol;
        const char *msg;
    } bad[] = {
        {NAN, 0, "check_grad: opts.atol is nan; it must be finite and >= 0"},
        {NAN, 1e-9, "check_grad: opts.atol is nan; it must be finite and >= 0"},
        {1e-9, NAN, "check_grad: opts.rtol is nan; it must be finite and >= 0"},
        {0, INFINITY, "check_grad: opts.rtol is inf; it must be finite and >= 0"},
        {0, -1e-3, "check_grad: opts.rtol is -0.001; it must be finite and >= 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ad_check_opts o = {0};
        o.atol = bad[i].atol;
        o.rtol = bad[i].rtol;
        ad_check_report rep;
        int st = ad_check_grad(t, W, dW0, &o, &rep);
        cr_expect_eq(st, AD_EMISUSE, "case %zu: status %d, passed %d, errmsg '%s', text: %s", i,
                     st, rep.passed, rep.errmsg, rep.text);
        cr_expect_str_eq(rep.errmsg, bad[i].msg, "case %zu", i);
        ad_check_report_free(&rep);
        cr_assert_eq(ad_tape_status(t), AD_OK, "case %zu: the tape was poisoned", i);
        cr_assert_str_eq(ad_tape_errmsg(t), "", "case %zu", i);
    }
    ad_check_report rep;
    cr_assert_eq(ad_check_grad(t, W, dW0, NULL, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
    cr_assert_eq(ad_backward(t, J), AD_OK, "the recording is still usable");
    ad_tape_free(t);
}
