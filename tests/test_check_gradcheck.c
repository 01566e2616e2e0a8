/* test_check_gradcheck.c -- ad_gradcheck: passes on correct gradients,
 * fails on a deliberately wrong vjp, reports kinks as kinks, random
 * directions, the report text, every error path with its message, and
 * allocation failures (AD_ENOMEM, nothing leaked). */
#include "support.h"

#include <autodiff/check.h>
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

/* ---- functions under check ---- */

/* The seed neuron: J = 1/2 (relu(W.x + b) - y)^2; inputs W, x, b, y. */
static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(t, ad_dot(t, in[0], in[1]), in[2]);
    return ad_scale(t, ad_square(t, ad_sub(t, ad_relu(t, z), in[3])), 0.5);
}

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2}, B0 = 7, Y0 = 5;

static void neuron_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"W", ad_shape_vec(3), W0, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"x", ad_shape_vec(3), X0, NULL, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"b", ad_shape_scalar(), &B0, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT};
}

/* cube: y = x^3, with a right vjp (3x^2) and a wrong one (2x^2). */
static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i] * 3 * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp_wrong(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i] * 2 * k->in[0].val[i] * k->in[0].val[i];
}
static const ad_opdef cube_right = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
static const ad_opdef cube_wrong = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp_wrong, .ud = NULL};

/* J = sum(cube(x)); ud: the descriptor. */
static ad_node sum_cube(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n;
    return ad_sum(t, ad_apply(t, ud, &in[0], 1, 0.0));
}

/* Many built-in ops in one scalar, for a broad pass. */
static ad_node many_ops(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node A = in[0], B = in[1], v = in[2], s = in[3], tgt = in[4];
    ad_node C = ad_matmul(t, A, B);                       /* (2x3)(3x2) -> 2x2 */
    ad_node D = ad_matmul_nt(t, A, ad_transpose(t, B));   /* A B -> 2x2 */
    ad_node u = ad_matvec(t, ad_add(t, C, D), ad_tanh(t, v));
    ad_node w = ad_matvec_t(t, A, ad_sigmoid(t, u));      /* (3) */
    ad_node o = ad_outer(t, ad_exp(t, ad_scale(t, v, 0.3)), v);
    ad_node q = ad_add(t, ad_mean(t, o), ad_dot(t, w, w));
    ad_node r = ad_div(t, ad_log(t, ad_add_const(t, ad_square(t, s), 1.0)),
                       ad_sqrt(t, ad_add_const(t, ad_pow_const(t, ad_abs(t, s), 2.5), 2.0)));
    ad_node x = ad_softmax_xent(t, ad_mul(t, u, s), tgt);
    return ad_add(t, ad_add(t, ad_mul(t, q, r), x), ad_neg(t, ad_sub(t, ad_sum(t, w), ad_sum(t, v))));
}

/* ---- helpers ---- */

/* The line of text that starts with prefix, or NULL. */
static const char *line_starting(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, prefix, n))
            return p;
    return NULL;
}

/* 1 if the line at p ends (before '\n') with suffix. */
static int line_ends_with(const char *p, const char *suffix)
{
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p), n = strlen(suffix);
    return len >= n && !strncmp(p + len - n, suffix, n);
}

/* ---- passing ---- */

Test(gradcheck, neuron_passes_with_documented_text)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(neuron, NULL, in, 4, NULL, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 7);
    cr_assert_eq(rep.nentries, 7);
    cr_assert_eq(rep.failed, 0);
    cr_assert_eq(rep.kinks, 0);
    /* tape values of the lecture notes: dW = (-4, 0, -8), dx = (-16, -8, 20), db = -4 */
    const double want[7] = {-4, 0, -8, -16, -8, 20, -4};
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(rep.entries[i].tape, want[i]);
        cr_assert_float_eq(rep.entries[i].other, want[i], 1e-8);
        cr_assert_eq(rep.entries[i].verdict, AD_ELEM_OK);
    }
    cr_assert_eq(rep.entries[3].input, 1);
    cr_assert_eq(rep.entries[3].elem, 0);
    cr_assert_str_eq(rep.errmsg, "");
    const char *head = "gradient check: passed -- 7 elements agree "
                       "(h = cbrt(eps)*max(1,|x|), atol 1e-06, rtol 1e-05)\n"
                       "element          analytic          numeric     abs err     rel err\n";
    cr_assert(!strncmp(rep.text, head, strlen(head)), "%s", rep.text);
    const char *l = line_starting(rep.text, "dW[2] ");
    cr_assert_not_null(l, "%s", rep.text);
    cr_assert(!strncmp(l, "dW[2]                  -8               -8", 42), "%s", l);
    cr_assert_not_null(line_starting(rep.text, "db "), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "worst: "), "%s", rep.text);
    cr_assert_eq(strlen(rep.text), rep.text_len);
    cr_assert(rep.has_worst);
    ad_check_report_free(&rep);
    cr_assert_str_eq(rep.text, "");
    ad_check_report_free(&rep); /* twice is harmless */
    ad_check_report_free(NULL);
}

Test(gradcheck, many_builtin_ops_pass)
{
    const double A[6] = {0.3, -0.2, 0.5, 0.1, 0.4, -0.6};
    const double B[6] = {0.2, 0.7, -0.3, 0.5, 0.9, -0.1};
    const double v[2] = {0.4, -0.8}, s = 0.9, tgt[2] = {0.25, 0.75};
    ad_check_input in[5] = {
        {"A", ad_shape_mat(2, 3), A, NULL, 0}, {"B", ad_shape_mat(3, 2), B, NULL, 0},
        {"v", ad_shape_vec(2), v, NULL, 0},    {"s", ad_shape_scalar(), &s, NULL, 0},
        {"t", ad_shape_vec(2), tgt, NULL, AD_INPUT_CONSTANT},
    };
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(many_ops, NULL, in, 5, NULL, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 15);
    ad_check_report_free(&rep);
}

Test(gradcheck, custom_right_vjp_passes)
{
    const double x[4] = {0.5, -1.5, 2, 3};
    ad_check_input in = {"x", ad_shape_vec(4), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_right, &in, 1, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- failing ---- */

Test(gradcheck, wrong_vjp_fails_and_names_elements)
{
    const double x[4] = {0.5, -1.5, 2, 3};
    ad_check_input in = {"x", ad_shape_vec(4), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_wrong, &in, 1, NULL, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.failed, 4);
    cr_assert_eq(rep.kinks, 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(rep.entries[i].verdict, AD_ELEM_FAIL);
        cr_assert_float_eq(rep.entries[i].tape, 2 * x[i] * x[i], 1e-12);
        cr_assert_float_eq(rep.entries[i].other, 3 * x[i] * x[i], 1e-6);
        cr_assert_float_eq(rep.entries[i].rel_err, 1.0 / 3.0, 1e-6);
    }
    const char *head = "gradient check: FAILED -- 4 of 4 elements differ (";
    cr_assert(!strncmp(rep.text, head, strlen(head)), "%s", rep.text);
    const char *l = line_starting(rep.text, "dx[3] ");
    cr_assert_not_null(l, "%s", rep.text);
    cr_assert(line_ends_with(l, "  FAILED"), "%s", l);
    /* the worst is x = 3: analytic 18, numeric 27 */
    cr_assert_eq(rep.worst.elem, 3);
    cr_assert_not_null(strstr(rep.text, "worst: dx[3]: analytic 18, numeric 27"), "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(gradcheck, large_input_lists_only_failures)
{
    /* 30 elements: more than the small table; cube_wrong fails where x != 0 */
    double x[30] = {0};
    x[7] = 2;
    x[19] = -1;
    ad_check_input in = {NULL, ad_shape_vec(30), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_wrong, &in, 1, NULL, &rep), AD_OK);
    cr_assert_eq(rep.failed, 2, "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "din0[7] "), "%s", rep.text); /* unnamed: in0 */
    cr_assert_not_null(line_starting(rep.text, "din0[19] "), "%s", rep.text);
    cr_assert_null(line_starting(rep.text, "din0[0] "), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "(28 more rows not shown; AD_CHECK_ALL_ROWS lists them)\n"),
                       "%s", rep.text);
    ad_check_report_free(&rep);

    ad_check_opts o = {0};
    o.flags = AD_CHECK_ALL_ROWS;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_wrong, &in, 1, &o, &rep), AD_OK);
    cr_assert_not_null(line_starting(rep.text, "din0[0] "), "%s", rep.text);
    cr_assert_null(strstr(rep.text, "not shown"), "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- kinks ---- */

static ad_node sum_relu(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_relu(t, in[0]));
}
static ad_node sum_abs(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_abs(t, in[0]));
}

Test(gradcheck, relu_at_zero_is_a_kink_not_a_failure)
{
    const double x[3] = {0, 1, -1};
    ad_check_input in = {"x", ad_shape_vec(3), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_relu, NULL, &in, 1, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.kinks, 1);
    cr_assert_eq(rep.failed, 0);
    cr_assert_eq(rep.entries[0].verdict, AD_ELEM_KINK);
    cr_assert_eq(rep.entries[0].tape, 0.0);       /* relu'(0) taken as 0 */
    cr_assert_float_eq(rep.entries[0].other, 0.5, 1e-9);
    cr_assert_eq(rep.entries[1].verdict, AD_ELEM_OK);
    cr_assert_eq(rep.entries[2].verdict, AD_ELEM_OK);
    const char *l = line_starting(rep.text, "dx[0] ");
    cr_assert_not_null(l, "%s", rep.text);
    cr_assert(line_ends_with(l, "  at a kink"), "%s", l);
    const char *head = "gradient check: passed -- 2 of 3 elements agree, 1 at a kink (";
    cr_assert(!strncmp(rep.text, head, strlen(head)), "%s", rep.text);
    /* the worst case excludes kinks */
    cr_assert_neq(rep.worst.elem, 0);
    ad_check_report_free(&rep);
}

Test(gradcheck, near_kinks_within_the_step)
{
    /* relu and abs inputs 1e-7 from 0: the step (6e-6) crosses the kink */
    const double x[2] = {1e-7, -1e-7};
    ad_check_input in = {"x", ad_shape_vec(2), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_abs, NULL, &in, 1, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.kinks, 2, "%s", rep.text);
    ad_check_report_free(&rep);
    cr_assert_eq(ad_gradcheck(sum_relu, NULL, &in, 1, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.kinks, 2, "%s", rep.text);
    ad_check_report_free(&rep);
    /* far from 0 nothing is a kink */
    const double far[2] = {0.5, -0.5};
    in.value = far;
    cr_assert_eq(ad_gradcheck(sum_abs, NULL, &in, 1, NULL, &rep), AD_OK);
    cr_assert_eq(rep.kinks, 0, "%s", rep.text);
    ad_check_report_free(&rep);
}

/* y = |x| as a custom op with a wrong vjp everywhere: kink only when listed */
static void kabs_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = fabs(k->in[0].val[i]);
}
static void kabs_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i] * (k->in[0].val[i] > 0 ? 1.0 : -1.0);
}
static const ad_opdef kabs = {.name = "kabs", .arity = 1, .shape = NULL, .forward = kabs_fwd, .vjp = kabs_vjp, .ud = NULL};

Test(gradcheck, custom_kink_ops_and_a_real_bug_beside_a_kink)
{
    const double x[2] = {0, 2};
    ad_check_input in = {"x", ad_shape_vec(2), x, NULL, 0};
    ad_check_report rep;
    /* kabs'(0) = -1 by this vjp, numeric 0: a failure unless kabs is a kink op */
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&kabs, &in, 1, NULL, &rep), AD_OK);
    cr_assert_not(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.failed, 1);
    ad_check_report_free(&rep);
    const char *const extra[] = {"kabs", NULL};
    ad_check_opts o = {0};
    o.kink_ops = extra;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&kabs, &in, 1, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.kinks, 1);
    ad_check_report_free(&rep);
    /* a wrong vjp away from any kink still fails when a kink is elsewhere */
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_wrong, &in, 1, &o, &rep), AD_OK);
    cr_assert_eq(rep.failed, 1, "%s", rep.text);
    cr_assert_eq(rep.entries[1].verdict, AD_ELEM_FAIL);
    ad_check_report_free(&rep);
}

/* ---- random directions ---- */

Test(gradcheck, random_directions_pass_and_fail)
{
    double x[200];
    for (int i = 0; i < 200; i++)
        x[i] = sin(0.37 * i) + 0.5;
    ad_check_input in = {"x", ad_shape_vec(200), x, NULL, 0};
    ad_check_opts o = {0};
    o.directions = 6;
    o.seed = 7;
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_right, &in, 1, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 6);
    cr_assert_eq(rep.entries[0].input, -1);
    const char *head = "gradient check: passed -- 6 directions agree (h = cbrt(eps)*max(1,|x|), "
                       "6 random directions, seed 7, atol 1e-06, rtol 1e-05)\n"
                       "direction ";
    cr_assert(!strncmp(rep.text, head, strlen(head)), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "direction 6 "), "%s", rep.text);
    double first = rep.entries[0].tape;
    ad_check_report_free(&rep);
    /* the same seed gives the same directions */
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_right, &in, 1, &o, &rep), AD_OK);
    cr_assert_eq(rep.entries[0].tape, first);
    ad_check_report_free(&rep);

    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_wrong, &in, 1, &o, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.failed, 6, "%s", rep.text);
    cr_assert(line_ends_with(line_starting(rep.text, "direction 1 "), "  FAILED"), "%s",
              rep.text);
    ad_check_report_free(&rep);
}

/* ---- options and roles ---- */

Test(gradcheck, step_tolerances_and_roles)
{
    ad_check_input in[4];
    neuron_inputs(in);
    in[1].role = AD_INPUT_SKIP; /* x: differentiated, not compared */
    ad_check_opts o = {0};
    o.step = 1e-4;
    o.atol = 1e-3;
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(neuron, NULL, in, 4, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 4);
    cr_assert_not_null(strstr(rep.text, "(h = 0.0001*max(1,|x|), atol 0.001, rtol 0)\n"), "%s",
                       rep.text);
    cr_assert_null(line_starting(rep.text, "dx[0] "), "%s", rep.text);
    ad_check_report_free(&rep);

    /* a tolerance so tight that rounding in the difference fails it */
    o.step = 0;
    o.atol = 1e-300;
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_right,
                              &(ad_check_input){"x", ad_shape_scalar(), &(double){1.3}, NULL, 0},
                              1, &o, &rep),
                 AD_OK);
    cr_assert_not(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- errors ---- */

static ad_node returns_nil(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)t, (void)in, (void)n, (void)ud;
    return ad_nil();
}
static ad_node shape_error(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_matvec(t, in[0], in[1]));
}
static ad_node not_scalar(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_neg(t, in[0]);
}
static ad_node foreign(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)t, (void)in, (void)n;
    return ad_scalar_var(ud, 1.0);
}

#define EXPECT_ERR(call, st, msg)                                                             \
    do {                                                                                      \
        ad_check_report rep_;                                                                 \
        ad_check_report *rep = &rep_;                                                         \
        cr_assert_eq((call), (st), "%s", rep_.errmsg);                                        \
        cr_assert_eq(rep_.status, (st));                                                      \
        cr_assert_not(rep_.passed);                                                           \
        cr_assert_str_eq(rep_.errmsg, (msg));                                                 \
        cr_assert_str_eq(rep_.text, "");                                                      \
        ad_check_report_free(rep);                                                            \
    } while (0)

Test(gradcheck, error_paths_have_messages)
{
    ad_check_input in[4];
    neuron_inputs(in);
    cr_assert_eq(ad_gradcheck(neuron, NULL, in, 4, NULL, NULL), AD_EMISUSE);
    EXPECT_ERR(ad_gradcheck(NULL, NULL, in, 4, NULL, rep), AD_EMISUSE, "gradcheck: fn is NULL");
    EXPECT_ERR(ad_gradcheck(neuron, NULL, NULL, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: no inputs (in is NULL or n is 4)");
    EXPECT_ERR(ad_gradcheck(neuron, NULL, in, 0, NULL, rep), AD_EMISUSE,
               "gradcheck: no inputs (in is NULL or n is 0)");

    ad_check_input bad[4];
    memcpy(bad, in, sizeof bad);
    bad[2].value = NULL;
    EXPECT_ERR(ad_gradcheck(neuron, NULL, bad, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: input 2 (b) has no value");
    memcpy(bad, in, sizeof bad);
    bad[1].shape.ndim = 3;
    EXPECT_ERR(ad_gradcheck(neuron, NULL, bad, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: input 1 (x) has an invalid shape (ndim 3, 3x1)");
    memcpy(bad, in, sizeof bad);
    bad[0].shape = ad_shape_vec(0);
    EXPECT_ERR(ad_gradcheck(neuron, NULL, bad, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: input 0 (W) has an invalid shape (ndim 1, 0x1)");
    memcpy(bad, in, sizeof bad);
    bad[3].role = 9;
    bad[3].name = NULL;
    EXPECT_ERR(ad_gradcheck(neuron, NULL, bad, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: input 3 (in3) has an unknown role 9");
    memcpy(bad, in, sizeof bad);
    bad[0].role = bad[1].role = AD_INPUT_SKIP;
    bad[2].role = AD_INPUT_CONSTANT;
    EXPECT_ERR(ad_gradcheck(neuron, NULL, bad, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: no input to compare (every role is skip or constant)");
    ad_check_opts o = {0};
    o.directions = -2;
    EXPECT_ERR(ad_gradcheck(neuron, NULL, in, 4, &o, rep), AD_EMISUSE,
               "gradcheck: opts.directions is -2; it must be >= 0 (0: every element)");

    EXPECT_ERR(ad_gradcheck(returns_nil, NULL, in, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: the function returned the nil node");
    EXPECT_ERR(ad_gradcheck(shape_error, NULL, in, 4, NULL, rep), AD_ESHAPE,
               "gradcheck: recording the function failed: matvec: W is a vector of length 3, not "
               "a matrix");
    EXPECT_ERR(ad_gradcheck(not_scalar, NULL, in, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: the function's output is vector(3), not a scalar");
    ad_tape *other = ad_tape_new(NULL);
    cr_assert_not_null(other);
    EXPECT_ERR(ad_gradcheck(foreign, other, in, 4, NULL, rep), AD_EMISUSE,
               "gradcheck: the function returned a node that is not on the check's tape");
    ad_tape_free(other);
}

/* Every numeric option must be finite and not negative; 0 keeps meaning
 * "the default". A NaN used to slip through: step NaN became the default
 * step, rtol NaN an exact comparison. */
Test(gradcheck, non_finite_or_negative_options_are_misuse)
{
    ad_check_input in[4];
    neuron_inputs(in);
    static const struct {
        double atol, rtol, step;
        int directions;
        const char *msg;
    } bad[] = {
        {0, 0, NAN, 0, "gradcheck: opts.step is nan; it must be finite and > 0, or 0 for the default"},
        {0, 0, -NAN, 0, "gradcheck: opts.step is nan; it must be finite and > 0, or 0 for the default"},
        {0, 0, INFINITY, 0, "gradcheck: opts.step is inf; it must be finite and > 0, or 0 for the default"},
        {0, 0, -1e-4, 0, "gradcheck: opts.step is -0.0001; it must be finite and > 0, or 0 for the default"},
        {0, NAN, 0, 0, "gradcheck: opts.rtol is nan; it must be finite and >= 0"},
        {1e-6, NAN, 0, 0, "gradcheck: opts.rtol is nan; it must be finite and >= 0"},
        {0, INFINITY, 0, 0, "gradcheck: opts.rtol is inf; it must be finite and >= 0"},
        {0, -1, 0, 0, "gradcheck: opts.rtol is -1; it must be finite and >= 0"},
        {NAN, 1e-5, 0, 0, "gradcheck: opts.atol is nan; it must be finite and >= 0"},
        {-INFINITY, 0, 0, 0, "gradcheck: opts.atol is -inf; it must be finite and >= 0"},
        {0, 0, 0, -2, "gradcheck: opts.directions is -2; it must be >= 0 (0: every element)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ad_check_opts o = {0};
        o.atol = bad[i].atol;
        o.rtol = bad[i].rtol;
        o.step = bad[i].step;
        o.directions = bad[i].directions;
        ad_check_report rep;
        int st = ad_gradcheck(neuron, NULL, in, 4, &o, &rep);
        cr_expect_eq(st, AD_EMISUSE, "case %zu: status %d, passed %d, errmsg '%s', text: %s", i,
                     st, rep.passed, rep.errmsg, rep.text);
        cr_expect_eq(rep.status, st);
        cr_expect_str_eq(rep.errmsg, bad[i].msg, "case %zu", i);
        cr_expect_not(rep.passed);
        ad_check_report_free(&rep);
    }
    /* 0 still means the defaults, and the check then runs */
    ad_check_opts o = {0};
    ad_check_report rep;
    cr_assert_eq(ad_gradcheck(neuron, NULL, in, 4, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "(h = cbrt(eps)*max(1,|x|), atol 1e-06, rtol 1e-05)"),
                       "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ---- allocation failures ---- */

Test(gradcheck, every_allocation_failure_is_enomem_without_leaks)
{
    const double x[30] = {1, 2, 3};
    ad_check_input in[2] = {{"x", ad_shape_vec(30), x, NULL, 0},
                            {"z", ad_shape_vec(3), x, NULL, 0}};
    long n_ok = 0;
    for (long fail = 1; fail < 500; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_check_opts o = {0};
        o.alloc = test_alloc_fn;
        o.alloc_ud = &a;
        o.flags = AD_CHECK_ALL_ROWS;
        ad_check_report rep;
        int st = ad_gradcheck(sum_relu, NULL, in, 1, &o, &rep);
        if (st == AD_OK) {
            cr_assert(rep.passed, "%s", rep.text);
            cr_assert_gt(a.count, 0);
            ad_check_report_free(&rep);
            cr_assert_eq(a.bytes, 0, "leak after success: %zu bytes", a.bytes);
            n_ok = fail;
            break;
        }
        cr_assert_eq(st, AD_ENOMEM, "fail_at %ld: status %d (%s)", fail, st, rep.errmsg);
        cr_assert_not_null(strstr(rep.errmsg, "out of memory"), "fail_at %ld: %s", fail,
                           rep.errmsg);
        cr_assert(!strncmp(rep.errmsg, "gradcheck: ", 11), "%s", rep.errmsg);
        cr_assert_not(rep.passed);
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0, "fail_at %ld: %zu bytes leaked", fail, a.bytes);
    }
    cr_assert_gt(n_ok, 3, "the check should allocate several times");

    /* the same in direction mode, and with a kink table */
    for (long fail = 1; fail < 500; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_check_opts o = {0};
        o.alloc = test_alloc_fn;
        o.alloc_ud = &a;
        o.directions = 3;
        ad_check_report rep;
        int st = ad_gradcheck(sum_abs, NULL, in, 2, &o, &rep);
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0, "fail_at %ld: %zu bytes leaked", fail, a.bytes);
        if (st == AD_OK)
            break;
        cr_assert_eq(st, AD_ENOMEM, "fail_at %ld: status %d", fail, st);
    }
}
