/* test_check_modes.c -- the checks of the derivative modes: ad_jvpcheck
 * (J v against central differences), ad_hvpcheck (H v against differences
 * of the gradient, and symmetry), ad_handcheck_hessian and
 * ad_handcheck_hvp (your Hessian or H v against the tape's), and the
 * tangent-sweep trace ad_trace_tangent. Passing cases with the report's
 * numbers, names and text; custom ops with a deliberately wrong jvp, a
 * wrong hvp and an asymmetric hvp caught; a wrong hand-derived Hessian
 * element caught and named; every error path with its message; option
 * validation; allocation failures without leaks; and the report's fields
 * of the first release left alone by the older checks. */
#include "support.h"

#include <autodiff/check.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- functions under check ---- */

/* The seed neuron: J = 1/2 (relu(W.x + b) - y)^2; inputs W, x, b, y. */
static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(t, ad_dot(t, in[0], in[1]), in[2]);
    return ad_scale(t, ad_square(t, ad_sub(t, ad_relu(t, z), in[3])), 0.5);
}

/* At W = (4, 2, -5), x = (1, 1, 2), b = 7: z = 3 > 0, so the Hessian with
 * respect to (W, b) is [x; 1][x; 1]^T: d2J/dW db = x = (1, 1, 2). */
static const double W0[3] = {4, 2, -5}, X0[3] = {1, 1, 2}, B0 = 7, Y0 = 5;

/* W and b compared, x and y data. */
static void neuron_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"W", ad_shape_vec(3), W0, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"x", ad_shape_vec(3), X0, NULL, AD_INPUT_CONSTANT};
    in[2] = (ad_check_input){"b", ad_shape_scalar(), &B0, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT};
}

/* A vector output, named y: y = tanh(A v) + v[0:2] * s (A 2x3, v 3, s). */
static ad_node vec_out(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node y = ad_tanh(t, ad_matvec(t, in[0], in[1]));
    y = ad_add(t, y, ad_mul(t, ad_matvec(t, in[3], in[1]), in[2]));
    ad_set_name(t, y, "y");
    return y;
}
static const double A0[6] = {0.3, -0.2, 0.5, 0.1, 0.4, -0.6}, V0[3] = {0.2, 0.7, -0.3};
static const double S0 = 0.8, P0[6] = {1, 0, 0, 0, 1, 0};

static void vec_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"A", ad_shape_mat(2, 3), A0, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"v", ad_shape_vec(3), V0, NULL, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"s", ad_shape_scalar(), &S0, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"P", ad_shape_mat(2, 3), P0, NULL, AD_INPUT_CONSTANT};
}

/* Many built-in ops in one scalar, for a broad second-order pass. */
static ad_node many_ops(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node A = in[0], B = in[1], v = in[2], s = in[3], tgt = in[4];
    ad_node C = ad_matmul(t, A, B);
    ad_node D = ad_matmul_nt(t, A, ad_transpose(t, B));
    ad_node u = ad_matvec(t, ad_add(t, C, D), ad_tanh(t, v));
    ad_node w = ad_matvec_t(t, A, ad_sigmoid(t, u));
    ad_node o = ad_outer(t, ad_exp(t, ad_scale(t, v, 0.3)), v);
    ad_node q = ad_add(t, ad_mean(t, o), ad_dot(t, w, w));
    ad_node r = ad_div(t, ad_log(t, ad_add_const(t, ad_square(t, s), 1.0)),
                       ad_sqrt(t, ad_add_const(t, ad_pow_const(t, s, 4.0), 2.0)));
    ad_node x = ad_softmax_xent(t, ad_mul(t, u, s), tgt);
    return ad_add(t, ad_add(t, ad_mul(t, q, r), x), ad_neg(t, ad_sub(t, ad_sum(t, w), ad_sum(t, v))));
}

/* ---- custom ops: cube y = x^3 with right and wrong rules ---- */

static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += 3 * k->in[0].val[i] * k->in[0].val[i] * k->out.grad[i];
}
static void cube_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        tout[i] = 3 * k->in[0].val[i] * k->in[0].val[i] * tin[0][i];
}
/* 2x^2 instead of 3x^2 */
static void cube_jvp_wrong(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        tout[i] = 2 * k->in[0].val[i] * k->in[0].val[i] * tin[0][i];
}
/* d/dt (3 x^2 g) along tx: 6 x g tx */
static void cube_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (tg[0])
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            tg[0][i] += 6 * k->in[0].val[i] * k->out.grad[i] * tin[0][i];
}
/* 3 x g tx: half the second derivative */
static void cube_hvp_wrong(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (tg[0])
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            tg[0][i] += 3 * k->in[0].val[i] * k->out.grad[i] * tin[0][i];
}
static const ad_opdef cube_full = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                   .vjp = cube_vjp, .size = sizeof(ad_opdef), .jvp = cube_jvp,
                                   .hvp = cube_hvp};
static const ad_opdef cube_bad_jvp = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                      .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                      .jvp = cube_jvp_wrong, .hvp = cube_hvp};
static const ad_opdef cube_bad_hvp = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                      .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                      .jvp = cube_jvp, .hvp = cube_hvp_wrong};
static const ad_opdef cube_old = {.name = "cube_old", .arity = 1, .forward = cube_fwd,
                                  .vjp = cube_vjp};
static const ad_opdef cube_jvp_only = {.name = "cube_jvp_only", .arity = 1, .forward = cube_fwd,
                                       .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                       .jvp = cube_jvp};

/* y = cube(x), the op in ud: a vector output for ad_jvpcheck. */
static ad_node cube_of(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n;
    return ad_apply(t, ud, &in[0], 1, 0.0);
}
/* J = sum(cube(x)). */
static ad_node sum_cube(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n;
    return ad_sum(t, ad_apply(t, ud, &in[0], 1, 0.0));
}

/* ---- a custom op whose second-order rule breaks symmetry ----
 * q(a, b) = a^2 b elementwise: d/da = 2ab, d/db = a^2. The second-order
 * term along (ta, tb) with seed g: into a, g (2b ta + 2a tb); into b,
 * g 2a ta. The asymmetric rule forgets 2a tb in a's term, so d2/da db
 * (from a direction along b) is 0 while d2/db da is 2a. */
static void q_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[1].val[i];
}
static void q_vjp(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) {
        const double a = k->in[0].val[i], b = k->in[1].val[i], g = k->out.grad[i];
        if (k->in[0].grad)
            k->in[0].grad[i] += g * 2 * a * b;
        if (k->in[1].grad)
            k->in[1].grad[i] += g * a * a;
    }
}
static void q_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) {
        const double a = k->in[0].val[i], b = k->in[1].val[i];
        tout[i] = 2 * a * b * tin[0][i] + a * a * tin[1][i];
    }
}
static void q_hvp_common(const ad_call *k, const double *const *tin, double *const *tg, int cross)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) {
        const double a = k->in[0].val[i], b = k->in[1].val[i], g = k->out.grad[i];
        if (tg[0])
            tg[0][i] += g * (2 * b * tin[0][i] + (cross ? 2 * a * tin[1][i] : 0.0));
        if (tg[1])
            tg[1][i] += g * 2 * a * tin[0][i];
    }
}
static void q_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    q_hvp_common(k, tin, tg, 1);
}
static void q_hvp_asym(const ad_call *k, const double *const *tin, double *const *tg)
{
    q_hvp_common(k, tin, tg, 0);
}
static const ad_opdef q_right = {.name = "q", .arity = 2, .forward = q_fwd, .vjp = q_vjp,
                                 .size = sizeof(ad_opdef), .jvp = q_jvp, .hvp = q_hvp};
static const ad_opdef q_asym = {.name = "q", .arity = 2, .forward = q_fwd, .vjp = q_vjp,
                                .size = sizeof(ad_opdef), .jvp = q_jvp, .hvp = q_hvp_asym};

/* J = sum(q(a, b)), the op in ud. */
static ad_node sum_q(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n;
    return ad_sum(t, ad_apply(t, ud, in, 2, 0.0));
}

static ad_node sum_relu(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    return ad_sum(t, ad_relu(t, in[0]));
}

/* ---- hand-derived Hessians of the neuron, with respect to W and b ----
 * z = W.x + b; J = 1/2 (relu(z) - y)^2; H = relu'(z) [x; 1][x; 1]^T. */

typedef struct hand_opts {
    int forget_relu; /* drop relu'(z): right where z > 0 only */
    int wrong_elem;  /* d2J/dW db [1][0] off by one            */
    int refuse_at;   /* return -1 on this call (1-based); 0: never */
    int calls;
} hand_opts;

static int neuron_hessian(const double *const *p, double *const *H, int n, void *ud)
{
    hand_opts *h = ud;
    cr_assert_eq(n, 4);
    if (h && h->refuse_at && ++h->calls == h->refuse_at)
        return -1;
    const double *W = p[0], *x = p[1], b = p[2][0];
    const double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + b;
    const double s = (h && h->forget_relu) || z > 0 ? 1.0 : 0.0;
    /* the blocks asked for: (W, W), (W, b), (b, b); nothing with x or y */
    cr_assert_not_null(H[0 * 4 + 0]);
    cr_assert_not_null(H[0 * 4 + 2]);
    cr_assert_not_null(H[2 * 4 + 2]);
    cr_assert_null(H[2 * 4 + 0]); /* the transpose of (W, b) */
    cr_assert_null(H[0 * 4 + 1]);
    cr_assert_null(H[1 * 4 + 1]);
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++) {
            cr_assert_eq(H[0][r * 3 + c], 0.0, "zeroed before the call");
            H[0][r * 3 + c] = s * x[r] * x[c];
        }
        H[2][r] = s * x[r];
    }
    if (h && h->wrong_elem)
        H[2][1] += 1;
    H[10][0] = s;
    return 0;
}

static int neuron_hvp(const double *const *p, const double *const *v, double *const *hv, int n,
                      void *ud)
{
    hand_opts *h = ud;
    cr_assert_eq(n, 4);
    if (h && h->refuse_at && ++h->calls == h->refuse_at)
        return -2;
    const double *W = p[0], *x = p[1], b = p[2][0];
    const double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + b;
    const double s = (h && h->forget_relu) || z > 0 ? 1.0 : 0.0;
    cr_assert_null(hv[1]);
    cr_assert_null(hv[3]);
    cr_assert_eq(v[1][0], 0.0, "no direction on constants");
    /* H v = s [x; 1] ([x; 1] . v) */
    double xv = v[0][0] * x[0] + v[0][1] * x[1] + v[0][2] * x[2] + v[2][0];
    if (h && h->wrong_elem)
        xv *= 2;
    for (int i = 0; i < 3; i++)
        hv[0][i] = s * x[i] * xv;
    hv[2][0] = s * xv;
    return 0;
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

static int starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

#define EXPECT_ERR(call, st, msg)                                                             \
    do {                                                                                      \
        ad_check_report rep_;                                                                 \
        ad_check_report *rep = &rep_;                                                         \
        int st_ = (call);                                                                     \
        cr_assert_eq(st_, (st), "status %d: %s", st_, rep_.errmsg);                           \
        cr_assert_eq(rep_.status, (st));                                                      \
        cr_assert_not(rep_.passed);                                                           \
        cr_assert_str_eq(rep_.errmsg, (msg));                                                 \
        cr_assert_str_eq(rep_.text, "");                                                      \
        ad_check_report_free(rep);                                                            \
    } while (0)

static ad_check_opts opts_points(int points)
{
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.points = points;
    return o;
}

/* ================================================================== */
/* ad_jvpcheck                                                         */
/* ================================================================== */

Test(jvpcheck, neuron_unit_directions_are_the_jacobian)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_jvpcheck(neuron, NULL, in, 4, NULL, 0, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    /* a scalar output: one entry per compared element (W: 3, b: 1) */
    cr_assert_eq(rep.checked, 4);
    cr_assert_eq(rep.nentries, 4);
    cr_assert_not_null(rep.index);
    /* dJ/dW = (relu(z) - y) x = -2 (1, 1, 2), dJ/db = -2 */
    const double want[4] = {-2, -2, -4, -2};
    const int inp[4] = {0, 0, 0, 2};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(rep.index[i].kind, AD_CMP_JVP);
        cr_assert_eq(rep.index[i].out_elem, 0);
        cr_assert_eq(rep.index[i].direction, -1, "a unit direction");
        cr_assert_eq(rep.entries[i].input, inp[i]);
        cr_assert_eq(rep.entries[i].elem, i < 3 ? (size_t)i : 0);
        cr_assert_eq(rep.entries[i].point, 0);
        cr_assert_float_eq(rep.entries[i].tape, want[i], 1e-12);
        cr_assert_float_eq(rep.entries[i].other, want[i], 1e-7);
    }
    const char *head = "jvp check: passed -- 4 elements agree (the given point, unit directions, "
                       "h = cbrt(eps)*max(1,|x|), atol 1e-06, rtol 1e-05)\n";
    cr_assert(starts_with(rep.text, head), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "at the given point (W = (4, 2, -5), x = (1, 1, 2), "
                                               "b = 7, y = 5):\n"),
                       "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "  dJ/dW [0][2] "), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "  dJ/db [0][0] "), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "worst: dJ/d"), "%s", rep.text);
    cr_assert_eq(strlen(rep.text), rep.text_len);
    cr_assert(rep.has_worst);
    cr_assert_eq(rep.worst_index.kind, AD_CMP_JVP);
    ad_check_report_free(&rep);
    cr_assert_eq(rep.nentries, 0);
    cr_assert_str_eq(rep.text, "");
    ad_check_report_free(&rep);
}

Test(jvpcheck, vector_output_random_points_and_directions)
{
    ad_check_input in[4];
    vec_inputs(in);
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.directions = 2;
    o.seed = 11;
    ad_check_report rep;
    cr_assert_eq(ad_jvpcheck(vec_out, NULL, in, 4, NULL, 0, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    /* 4 points x 2 directions x 2 output elements */
    cr_assert_eq(rep.checked, 16);
    for (size_t i = 0; i < rep.nentries; i++) {
        const ad_check_entry *e = &rep.entries[i];
        const ad_check_index *ix = &rep.index[i];
        cr_assert_eq(e->point, (int)(i / 4));
        cr_assert_eq(e->input, -1);
        cr_assert_eq(ix->direction, (int)(i / 2 % 2));
        cr_assert_eq(e->elem, (size_t)ix->direction);
        cr_assert_eq(ix->out_elem, i % 2);
        cr_assert_eq(ix->input2, -1);
    }
    const char *head = "jvp check: passed -- 16 elements agree (the given point and 3 random "
                       "points, 2 random directions, seed 11, "
                       "h = cbrt(eps)*max(1,max|x|)/max|v|, atol 1e-06, rtol 1e-05)\n";
    cr_assert(starts_with(rep.text, head), "%s", rep.text);
    /* the output's own name */
    cr_assert_not_null(line_starting(rep.text, "  dy/dv2 [1] "), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "at random point 3 ("), "%s", rep.text);
    double first = rep.entries[0].tape;
    ad_check_report_free(&rep);
    /* the same seed, the same directions and points; another seed, others */
    cr_assert_eq(ad_jvpcheck(vec_out, NULL, in, 4, NULL, 0, &o, &rep), AD_OK);
    cr_assert_eq(rep.entries[0].tape, first);
    ad_check_report_free(&rep);
    o.seed = 12;
    cr_assert_eq(ad_jvpcheck(vec_out, NULL, in, 4, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_neq(rep.entries[0].tape, first);
    ad_check_report_free(&rep);
}

Test(jvpcheck, given_directions_and_skip_inputs)
{
    /* J v of cube at x along v: 3 x^2 v exactly */
    const double x[3] = {0.5, -1.5, 2};
    const double dirs[2 * 4] = {1, 2, -1, 99, /* the 4th element belongs to s: ignored */
                                0, 0.5, 0, 99};
    ad_check_input in[2] = {{"x", ad_shape_vec(3), x, NULL, AD_INPUT_COMPARE},
                            {"s", ad_shape_scalar(), &S0, NULL, AD_INPUT_SKIP}};
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_full, in, 2, dirs, 2, &o, &rep), AD_OK, "%s",
                 rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 6);
    for (size_t i = 0; i < 6; i++) {
        const size_t d = i / 3, k = i % 3;
        cr_assert_eq(rep.index[i].direction, (int)d);
        cr_assert_eq(rep.index[i].out_elem, k);
        cr_assert_float_eq(rep.entries[i].tape, 3 * x[k] * x[k] * dirs[d * 4 + k], 1e-12);
    }
    cr_assert_not_null(strstr(rep.text, "(the given point, 2 given directions, h = "), "%s",
                       rep.text);
    ad_check_report_free(&rep);
}

Test(jvpcheck, wrong_custom_jvp_is_caught_and_named)
{
    const double x[4] = {0.5, -1.5, 2, 3};
    ad_check_input in = {"x", ad_shape_vec(4), x, NULL, AD_INPUT_COMPARE};
    ad_check_report rep;
    /* the vjp is right, so the gradient check cannot see the wrong jvp */
    ad_check_opts o = opts_points(-1);
    cr_assert_eq(ad_gradcheck(sum_cube, (void *)&cube_bad_jvp, &in, 1, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
    /* the right jvp passes */
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_full, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 16);
    ad_check_report_free(&rep);

    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_bad_jvp, &in, 1, NULL, 0, &o, &rep), AD_OK,
                 "%s", rep.errmsg);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.checked, 16);
    cr_assert_eq(rep.failed, 4, "%s", rep.text); /* the diagonal; J is diagonal */
    for (size_t i = 0; i < rep.nentries; i++) {
        const ad_check_entry *e = &rep.entries[i];
        const size_t k = rep.index[i].out_elem;
        if (k == e->elem) {
            cr_assert_eq(e->verdict, AD_ELEM_FAIL);
            cr_assert_float_eq(e->tape, 2 * x[k] * x[k], 1e-12);
            cr_assert_float_eq(e->other, 3 * x[k] * x[k], 1e-6);
        } else {
            cr_assert_eq(e->verdict, AD_ELEM_OK);
            cr_assert_eq(e->tape, 0.0);
        }
    }
    cr_assert(starts_with(rep.text, "jvp check: FAILED -- 4 of 16 elements differ ("), "%s",
              rep.text);
    const char *l = line_starting(rep.text, "  dJ/dx [3][3] ");
    cr_assert_not_null(l, "%s", rep.text);
    cr_assert(line_ends_with(l, "  FAILED"), "%s", l);
    /* x = 3: tape 18, numeric 27 */
    cr_assert_eq(rep.worst.elem, 3);
    cr_assert_eq(rep.worst_index.out_elem, 3);
    cr_assert_not_null(strstr(rep.text, "worst: dJ/dx [3][3]: tape 18, numeric 27, "), "%s",
                       rep.text);
    ad_check_report_free(&rep);

    /* random directions catch it too */
    o.directions = 3;
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_bad_jvp, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_gt(rep.failed, 0);
    cr_assert_not_null(line_starting(rep.text, "worst: dJ/dv"), "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(jvpcheck, kinks_are_kinks)
{
    const double x[3] = {0, 1, -1};
    ad_check_input in = {"x", ad_shape_vec(3), x, NULL, 0};
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_jvpcheck(sum_relu, NULL, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.kinks, 1);
    cr_assert_eq(rep.entries[0].verdict, AD_ELEM_KINK);
    cr_assert_eq(rep.entries[0].tape, 0.0);
    cr_assert_float_eq(rep.entries[0].other, 0.5, 1e-9);
    cr_assert(line_ends_with(line_starting(rep.text, "  dJ/dx [0][0] "), "  at a kink"), "%s",
              rep.text);
    cr_assert(starts_with(rep.text, "jvp check: passed -- 2 of 3 elements agree, 1 at a kink ("),
              "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(jvpcheck, tolerances_step_and_listing)
{
    /* more rows than the small table: only failures listed unless asked */
    double x[30];
    for (int i = 0; i < 30; i++)
        x[i] = 0.1 * (i + 1);
    ad_check_input in = {"x", ad_shape_vec(30), x, NULL, 0};
    ad_check_opts o = opts_points(-1);
    o.directions = 30;
    ad_check_report rep;
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_bad_jvp, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert_eq(rep.checked, 900);
    cr_assert_gt(rep.failed, 40);
    cr_assert_not_null(strstr(rep.text, "more rows not shown)\n"), "%s", rep.text);
    ad_check_report_free(&rep);
    o.flags = AD_CHECK_ALL_ROWS;
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_bad_jvp, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert_null(strstr(rep.text, "not shown"), "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "  dJ/dv30 [29] "), "%s", rep.text);
    ad_check_report_free(&rep);

    /* a loose absolute tolerance lets the wrong jvp through; a step is
     * reported as given */
    const double x1 = 0.01;
    ad_check_input in1 = {"x", ad_shape_scalar(), &x1, NULL, 0};
    ad_check_opts o1 = opts_points(-1);
    o1.atol = 1e-3;
    o1.step = 1e-4;
    cr_assert_eq(ad_jvpcheck(cube_of, (void *)&cube_bad_jvp, &in1, 1, NULL, 0, &o1, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "h = 0.0001*max(1,|x|), atol 0.001, rtol 0)"), "%s",
                       rep.text);
    ad_check_report_free(&rep);
}

/* ================================================================== */
/* ad_hvpcheck                                                         */
/* ================================================================== */

Test(hvpcheck, neuron_unit_directions_are_the_hessian)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_hvpcheck(neuron, NULL, in, 4, NULL, 0, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    /* 4 columns x 4 rows of [x; 1][x; 1]^T, then 6 symmetric pairs */
    cr_assert_eq(rep.checked, 22);
    const double xb[4] = {1, 1, 2, 1};
    for (size_t i = 0; i < 16; i++) {
        const ad_check_entry *e = &rep.entries[i];
        const ad_check_index *ix = &rep.index[i];
        const size_t row = i % 4, col = i / 4;
        cr_assert_eq(ix->kind, AD_CMP_HVP);
        cr_assert_eq(e->input, row < 3 ? 0 : 2);
        cr_assert_eq(ix->input2, col < 3 ? 0 : 2);
        cr_assert_eq(ix->elem2, col < 3 ? col : 0);
        cr_assert_eq(ix->direction, -1);
        cr_assert_float_eq(e->tape, xb[row] * xb[col], 1e-12);
        cr_assert_float_eq(e->other, xb[row] * xb[col], 1e-6);
    }
    for (size_t i = 16; i < 22; i++) {
        cr_assert_eq(rep.index[i].kind, AD_CMP_SYMMETRY);
        cr_assert_eq(rep.entries[i].tape, rep.entries[i].other);
    }
    /* H[W0][b] against H[b][W0] */
    cr_assert_eq(rep.entries[18].input, 0);
    cr_assert_eq(rep.entries[18].elem, 0);
    cr_assert_eq(rep.index[18].input2, 2);
    cr_assert(starts_with(rep.text, "hvp check: passed -- 22 elements agree (the given point, "
                                    "unit directions, h = cbrt(eps)*max(1,|x|), atol 1e-06, "
                                    "rtol 1e-05)\n"),
              "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "  d2J/dW db [2][0] "), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  symmetry d2J/dW db [0][0] = 1 against d2J/db dW "
                                        "[0][0] = 1, abs err 0, rel err 0\n"),
                       "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(hvpcheck, many_builtin_ops_pass_with_random_directions)
{
    const double A[6] = {0.3, -0.2, 0.5, 0.1, 0.4, -0.6};
    const double B[6] = {0.2, 0.7, -0.3, 0.5, 0.9, -0.1};
    const double v[2] = {0.4, -0.8}, s = 0.9, tgt[2] = {0.25, 0.75};
    ad_check_input in[5] = {
        {"A", ad_shape_mat(2, 3), A, NULL, 0}, {"B", ad_shape_mat(3, 2), B, NULL, 0},
        {"v", ad_shape_vec(2), v, NULL, 0},    {"s", ad_shape_scalar(), &s, NULL, 0},
        {"t", ad_shape_vec(2), tgt, NULL, AD_INPUT_CONSTANT},
    };
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.directions = 3;
    o.spread = 0.3;
    ad_check_report rep;
    cr_assert_eq(ad_hvpcheck(many_ops, NULL, in, 5, NULL, 0, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    /* per point: 3 directions x 15 elements + 3 pairs */
    cr_assert_eq(rep.checked, 4 * (3 * 15 + 3));
    size_t sym = 0;
    for (size_t i = 0; i < rep.nentries; i++)
        if (rep.index[i].kind == AD_CMP_SYMMETRY) {
            cr_assert_eq(rep.entries[i].input, -1);
            cr_assert_lt(rep.index[i].direction, rep.index[i].direction2);
            sym++;
        }
    cr_assert_eq(sym, 12);
    ad_check_report_free(&rep);
    /* every unit direction as well, at the given point */
    o.directions = 0;
    o.points = -1;
    cr_assert_eq(ad_hvpcheck(many_ops, NULL, in, 5, NULL, 0, &o, &rep), AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 15 * 15 + 15 * 14 / 2);
    ad_check_report_free(&rep);
}

Test(hvpcheck, wrong_custom_hvp_is_caught)
{
    const double x[3] = {0.5, -1.5, 2};
    ad_check_input in = {"x", ad_shape_vec(3), x, NULL, 0};
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_hvpcheck(sum_cube, (void *)&cube_full, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
    /* jvp and vjp are right: only the second-order rule is wrong */
    cr_assert_eq(ad_jvpcheck(sum_cube, (void *)&cube_bad_hvp, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);

    cr_assert_eq(ad_hvpcheck(sum_cube, (void *)&cube_bad_hvp, &in, 1, NULL, 0, &o, &rep), AD_OK,
                 "%s", rep.errmsg);
    cr_assert_not(rep.passed);
    /* H = diag(6x); the wrong rule gives diag(3x): 3 diagonal elements */
    cr_assert_eq(rep.failed, 3, "%s", rep.text);
    for (size_t i = 0; i < rep.nentries; i++) {
        const ad_check_entry *e = &rep.entries[i];
        if (rep.index[i].kind != AD_CMP_HVP || e->elem != rep.index[i].elem2)
            continue;
        cr_assert_eq(e->verdict, AD_ELEM_FAIL);
        cr_assert_float_eq(e->tape, 3 * x[e->elem], 1e-12);
        cr_assert_float_eq(e->other, 6 * x[e->elem], 1e-5);
    }
    cr_assert(line_ends_with(line_starting(rep.text, "  d2J/dx dx [2][2] "), "  FAILED"), "%s",
              rep.text);
    cr_assert_not_null(strstr(rep.text, "worst: d2J/dx dx [2][2]: tape 6, numeric 12"), "%s",
                       rep.text);
    ad_check_report_free(&rep);
    /* along random directions */
    o.directions = 2;
    cr_assert_eq(ad_hvpcheck(sum_cube, (void *)&cube_bad_hvp, &in, 1, NULL, 0, &o, &rep), AD_OK);
    cr_assert_eq(rep.failed, 6, "%s", rep.text);
    cr_assert_not_null(line_starting(rep.text, "worst: d2J/dx dv"), "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(hvpcheck, asymmetric_second_order_rule_fails_symmetry)
{
    const double a[2] = {1.5, -0.5}, b[2] = {2, 3};
    ad_check_input in[2] = {{"a", ad_shape_vec(2), a, NULL, 0}, {"b", ad_shape_vec(2), b, NULL, 0}};
    ad_check_opts o = opts_points(-1);
    ad_check_report rep;
    cr_assert_eq(ad_hvpcheck(sum_q, (void *)&q_right, in, 2, NULL, 0, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);

    cr_assert_eq(ad_hvpcheck(sum_q, (void *)&q_asym, in, 2, NULL, 0, &o, &rep), AD_OK);
    cr_assert_not(rep.passed);
    /* H[a_i][b_i] = 2 a_i is 0 on the tape: one H v row per i, and the
     * symmetric pair (a_i, b_i) */
    size_t sym_failed = 0, hvp_failed = 0;
    for (size_t i = 0; i < rep.nentries; i++) {
        const ad_check_entry *e = &rep.entries[i];
        const ad_check_index *ix = &rep.index[i];
        if (e->verdict != AD_ELEM_FAIL)
            continue;
        if (ix->kind == AD_CMP_SYMMETRY) {
            sym_failed++;
            cr_assert_eq(e->input, 0);
            cr_assert_eq(ix->input2, 1);
            cr_assert_eq(e->elem, ix->elem2);
            cr_assert_eq(e->tape, 0.0);
            cr_assert_float_eq(e->other, 2 * a[e->elem], 1e-12);
        } else {
            hvp_failed++;
        }
    }
    cr_assert_eq(sym_failed, 2, "%s", rep.text);
    cr_assert_eq(hvp_failed, 2, "%s", rep.text);
    const char *l = line_starting(rep.text, "  symmetry d2J/da db [1][1] = 0 against d2J/db da "
                                            "[1][1] = -1, ");
    cr_assert_not_null(l, "%s", rep.text);
    cr_assert(line_ends_with(l, "  FAILED"), "%s", l);
    ad_check_report_free(&rep);

    /* with directions: <H u, w> against <u, H w> */
    o.directions = 3;
    cr_assert_eq(ad_hvpcheck(sum_q, (void *)&q_asym, in, 2, NULL, 0, &o, &rep), AD_OK);
    sym_failed = 0;
    for (size_t i = 0; i < rep.nentries; i++)
        sym_failed += rep.index[i].kind == AD_CMP_SYMMETRY && rep.entries[i].verdict == AD_ELEM_FAIL;
    cr_assert_eq(sym_failed, 3, "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  symmetry <H v1, v2> = "), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, " against <v1, H v2> = "), "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ================================================================== */
/* ad_handcheck_hessian and ad_handcheck_hvp                           */
/* ================================================================== */

/* Your blocks at the given point: (W, W) = x x^T, (W, b) = x, (b, b) = 1. */
typedef struct hess_blocks {
    double WW[9], Wb[3], bW[3], bb;
    const double *p[16];
} hess_blocks;

static void hess_blocks_fill(hess_blocks *h)
{
    memset(h, 0, sizeof *h);
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++)
            h->WW[r * 3 + c] = X0[r] * X0[c];
        h->Wb[r] = h->bW[r] = X0[r];
    }
    h->bb = 1;
    h->p[0 * 4 + 0] = h->WW;
    h->p[0 * 4 + 2] = h->Wb;
    h->p[2 * 4 + 2] = &h->bb;
}

Test(handcheck_hessian, blocks_at_the_given_point)
{
    ad_check_input in[4];
    neuron_inputs(in);
    hess_blocks h;
    hess_blocks_fill(&h);
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, NULL, &rep), AD_OK,
                 "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 9 + 3 + 1);
    for (size_t i = 0; i < rep.nentries; i++) {
        cr_assert_eq(rep.index[i].kind, AD_CMP_HESSIAN);
        cr_assert_eq(rep.entries[i].tape, rep.entries[i].other);
    }
    cr_assert_str_eq(rep.text, "hand-derived Hessian check: passed -- 13 compared elements agree "
                               "(the given point, atol 1e-09, rtol 1e-09)\n"
                               "worst: d2J/dW dW [0][0]: yours 1, tape 1, abs err 0, rel err 0, "
                               "at the given point\n");
    ad_check_report_free(&rep);
    /* the (b, W) block too, in either order; a block with a constant
     * input (x) is not compared */
    h.p[2 * 4 + 0] = h.bW;
    h.p[1 * 4 + 1] = h.WW;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, NULL, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 16);
    ad_check_report_free(&rep);
}

Test(handcheck_hessian, a_wrong_element_is_caught_and_named)
{
    ad_check_input in[4];
    neuron_inputs(in);
    hess_blocks h;
    hess_blocks_fill(&h);
    h.Wb[1] = 2; /* d2J/dW[1] db is x[1] = 1 */
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, NULL, &rep), AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.failed, 1);
    cr_assert_eq(rep.worst.input, 0);
    cr_assert_eq(rep.worst.elem, 1);
    cr_assert_eq(rep.worst_index.input2, 2);
    cr_assert_eq(rep.worst_index.elem2, 0);
    cr_assert_eq(rep.worst.tape, 1.0);
    cr_assert_eq(rep.worst.other, 2.0);
    cr_assert_str_eq(rep.text,
                     "hand-derived Hessian check: FAILED -- 1 of 13 compared elements differ (the "
                     "given point, atol 1e-09, rtol 1e-09)\n"
                     "at the given point (W = (4, 2, -5), x = (1, 1, 2), b = 7, y = 5):\n"
                     "  d2J/dW db [1][0]: yours 2, tape 1\n"
                     "worst: d2J/dW db [1][0]: yours 2, tape 1, abs err 1, rel err 0.5, at the "
                     "given point\n");
    ad_check_report_free(&rep);
}

Test(handcheck_hessian, callback_at_random_points)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.points = 6;
    o.seed = 3;
    o.flags = AD_CHECK_ALL_ROWS;
    hand_opts h = {0};
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, &h, &o, &rep),
                 AD_OK, "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 7 * 13);
    cr_assert(starts_with(rep.text, "hand-derived Hessian check: passed -- 91 compared elements "
                                    "agree (the given point and 6 random points, seed 3, "),
              "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  d2J/db db [0][0]: yours 1, tape 1  ok\n"), "%s",
                       rep.text);
    /* some random point has z < 0, where the Hessian is 0 */
    int zero_point = 0;
    for (size_t i = 0; i < rep.nentries; i++)
        zero_point |= rep.entries[i].point > 0 && rep.index[i].input2 == 2 &&
                      rep.entries[i].input == 2 && rep.entries[i].tape == 0.0;
    cr_assert(zero_point, "%s", rep.text);
    ad_check_report_free(&rep);

    /* forgetting relu'' agrees at the given point (z > 0) only */
    h.forget_relu = 1;
    o.flags = 0;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, &h, &o, &rep),
                 AD_OK);
    cr_assert_not(rep.passed);
    for (size_t i = 0; i < rep.nentries; i++)
        if (rep.entries[i].point == 0)
            cr_assert_eq(rep.entries[i].verdict, AD_ELEM_OK);
    cr_assert_gt(rep.worst.point, 0);
    cr_assert_null(strstr(rep.text, "at the given point ("), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "d2J/db db [0][0]: yours 1, tape 0\n"), "%s", rep.text);
    ad_check_report_free(&rep);

    /* a wrong element, by callback */
    h = (hand_opts){0};
    h.wrong_elem = 1;
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, &h, &o, &rep),
                 AD_OK);
    cr_assert_not(rep.passed);
    cr_assert_not_null(strstr(rep.text, "\n  d2J/dW db [1][0]: yours 2, tape 1\n"), "%s",
                       rep.text);
    ad_check_report_free(&rep);
}

Test(handcheck_hessian, custom_op_rules_are_what_is_checked)
{
    /* J = sum(x^3): H = diag(6x) */
    const double x[2] = {0.5, -2};
    const double H[4] = {3, 0, 0, -12};
    const double *hess[1] = {H};
    ad_check_input in = {"x", ad_shape_vec(2), x, NULL, 0};
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_hessian(sum_cube, (void *)&cube_full, &in, 1, hess, NULL, NULL,
                                      NULL, &rep),
                 AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);
    cr_assert_eq(ad_handcheck_hessian(sum_cube, (void *)&cube_bad_hvp, &in, 1, hess, NULL, NULL,
                                      NULL, &rep),
                 AD_OK);
    cr_assert_eq(rep.failed, 2, "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  d2J/dx dx [1][1]: yours -12, tape -6\n"), "%s",
                       rep.text);
    ad_check_report_free(&rep);
}

Test(handcheck_hvp, right_and_wrong_products)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_opts o;
    memset(&o, 0, sizeof o);
    o.seed = 5;
    hand_opts h = {0};
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, &h, &o, &rep), AD_OK,
                 "%s", rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    /* 4 points x 3 random directions x 4 compared elements */
    cr_assert_eq(rep.checked, 48);
    cr_assert_eq(rep.index[47].direction, 2);
    cr_assert_eq(rep.index[47].kind, AD_CMP_HVP);
    cr_assert(starts_with(rep.text, "hand-derived HVP check: passed -- 48 compared elements agree "
                                    "(the given point and 3 random points, 3 random directions, "
                                    "seed 5, atol 1e-09, rtol 1e-09)\n"),
              "%s", rep.text);
    ad_check_report_free(&rep);

    /* given directions: along b only, H v = [x; 1] */
    const double dirs[8] = {0, 0, 0, /* x: */ 0, 0, 0, /* b: */ 1, /* y: */ 0};
    o.points = -1;
    cr_assert_eq(ad_handcheck_hvp(neuron, NULL, in, 4, dirs, 1, neuron_hvp, &h, &o, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 4);
    const double want[4] = {1, 1, 2, 1};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(rep.entries[i].tape, want[i]);
    ad_check_report_free(&rep);

    h.wrong_elem = 1;
    cr_assert_eq(ad_handcheck_hvp(neuron, NULL, in, 4, dirs, 1, neuron_hvp, &h, &o, &rep), AD_OK);
    cr_assert_eq(rep.failed, 4);
    cr_assert_not_null(strstr(rep.text, "  d2J/dW dv1 [2]: yours 4, tape 2\n"), "%s", rep.text);
    cr_assert_not_null(strstr(rep.text, "  d2J/db dv1 [0]: yours 2, tape 1\n"), "%s", rep.text);
    ad_check_report_free(&rep);
}

/* ================================================================== */
/* Errors and options                                                  */
/* ================================================================== */

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

Test(errors, jvpcheck_and_hvpcheck)
{
    ad_check_input in[4];
    neuron_inputs(in);
    const double d1[8] = {0};
    static const char *const who[2] = {"jvpcheck", "hvpcheck"};
    for (int k = 0; k < 2; k++) {
        int (*check)(ad_check_fn, void *, const ad_check_input *, int, const double *, int,
                     const ad_check_opts *, ad_check_report *) = k ? ad_hvpcheck : ad_jvpcheck;
        char m[256];
        cr_assert_eq(check(neuron, NULL, in, 4, NULL, 0, NULL, NULL), AD_EMISUSE);
#define ERR(call, st, fmt)                                                                    \
    do {                                                                                      \
        snprintf(m, sizeof m, fmt, who[k]);                                                   \
        EXPECT_ERR(call, st, m);                                                              \
    } while (0)
        ERR(check(NULL, NULL, in, 4, NULL, 0, NULL, rep), AD_EMISUSE, "%s: fn is NULL");
        ERR(check(neuron, NULL, NULL, 4, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: no inputs (in is NULL or n is 4)");
        ERR(check(neuron, NULL, in, 0, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: no inputs (in is NULL or n is 0)");
        ERR(check(neuron, NULL, in, 4, NULL, -1, NULL, rep), AD_EMISUSE,
            "%s: ndirs is -1; it must be >= 0");
        ERR(check(neuron, NULL, in, 4, NULL, 2, NULL, rep), AD_EMISUSE,
            "%s: dirs is NULL but ndirs is 2");
        ERR(check(neuron, NULL, in, 4, d1, 0, NULL, rep), AD_EMISUSE,
            "%s: dirs is given but ndirs is 0 (pass NULL for random or unit directions)");
        ad_check_opts o;
        memset(&o, 0, sizeof o);
        o.directions = 3;
        ERR(check(neuron, NULL, in, 4, d1, 1, &o, rep), AD_EMISUSE,
            "%s: both dirs (1 given directions) and opts.directions (3 random ones); pass one");
        double bad[8] = {0};
        bad[6] = NAN; /* b */
        ERR(check(neuron, NULL, in, 4, bad, 1, NULL, rep), AD_EMISUSE,
            "%s: direction v1 has b = nan; directions must be finite");
        bad[6] = 0;
        bad[1] = INFINITY; /* W[1] */
        double two[16] = {0};
        memcpy(two + 8, bad, sizeof bad);
        ERR(check(neuron, NULL, in, 4, two, 2, NULL, rep), AD_EMISUSE,
            "%s: direction v2 has W[1] = inf; directions must be finite");
        /* entries of inputs that are not compared are ignored */
        two[9] = 0;
        two[3] = NAN;  /* x: a constant */
        two[15] = NAN; /* y */
        ad_check_report ok;
        ad_check_opts lo = opts_points(-1);
        cr_assert_eq(check(neuron, NULL, in, 4, two, 2, &lo, &ok), AD_OK, "%s", ok.errmsg);
        cr_assert(ok.passed, "%s", ok.text);
        ad_check_report_free(&ok);
        ad_check_input none[4];
        memcpy(none, in, sizeof none);
        none[0].role = none[2].role = AD_INPUT_SKIP;
        ERR(check(neuron, NULL, none, 4, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: no input to compare (every role is skip or constant)");
        ad_check_input badin[4];
        memcpy(badin, in, sizeof badin);
        badin[2].value = NULL;
        ERR(check(neuron, NULL, badin, 4, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: input 2 (b) has no value");
        ERR(check(returns_nil, NULL, in, 4, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: the function returned the nil node");
        ERR(check(shape_error, NULL, in, 4, NULL, 0, NULL, rep), AD_ESHAPE,
            "%s: recording the function failed: matvec: W is a vector of length 3, not a "
            "matrix");
        ad_tape *other = ad_tape_new(NULL);
        cr_assert_not_null(other);
        ERR(check(foreign, other, in, 4, NULL, 0, NULL, rep), AD_EMISUSE,
            "%s: the function returned a node that is not on the check's tape");
        ad_tape_free(other);
#undef ERR
    }
    /* only ad_hvpcheck needs a scalar */
    EXPECT_ERR(ad_hvpcheck(not_scalar, NULL, in, 4, NULL, 0, NULL, rep), AD_EMISUSE,
               "hvpcheck: the function's output is vector(3), not a scalar");
    ad_check_report rep;
    ad_check_opts o = opts_points(-1);
    cr_assert_eq(ad_jvpcheck(not_scalar, NULL, in, 4, NULL, 0, &o, &rep), AD_OK, "%s",
                 rep.errmsg);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.checked, 3 * 4); /* -W: 3 outputs x 4 columns */
    ad_check_report_free(&rep);
}

Test(errors, custom_ops_without_the_rule)
{
    const double x[2] = {0.5, 2};
    ad_check_input in = {"x", ad_shape_vec(2), x, NULL, 0};
    EXPECT_ERR(ad_jvpcheck(sum_cube, (void *)&cube_old, &in, 1, NULL, 0, NULL, rep), AD_EMISUSE,
               "jvpcheck: jvp: custom op 'cube_old' has no jvp rule (set its descriptor's jvp "
               "and size = sizeof(ad_opdef))");
    EXPECT_ERR(ad_hvpcheck(sum_cube, (void *)&cube_jvp_only, &in, 1, NULL, 0, NULL, rep),
               AD_EMISUSE,
               "hvpcheck: hvp: custom op 'cube_jvp_only' has no second-order rule (set its "
               "descriptor's hvp, or flags AD_OPDEF_LINEAR or AD_OPDEF_BILINEAR)");
    const double H[4] = {3, 0, 0, 12};
    const double *hess[1] = {H};
    EXPECT_ERR(ad_handcheck_hessian(sum_cube, (void *)&cube_jvp_only, &in, 1, hess, NULL, NULL,
                                    NULL, rep),
               AD_EMISUSE,
               "handcheck_hessian: hessian: custom op 'cube_jvp_only' has no second-order rule "
               "(set its descriptor's hvp, or flags AD_OPDEF_LINEAR or AD_OPDEF_BILINEAR)");
    EXPECT_ERR(ad_handcheck_hvp(sum_cube, (void *)&cube_old, &in, 1, NULL, 0, neuron_hvp, NULL,
                                NULL, rep),
               AD_EMISUSE,
               "handcheck_hvp: hvp: custom op 'cube_old' has no jvp rule (set its descriptor's "
               "jvp and size = sizeof(ad_opdef))");
}

Test(errors, hand_checks)
{
    ad_check_input in[4];
    neuron_inputs(in);
    hess_blocks h;
    hess_blocks_fill(&h);
    cr_assert_eq(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, NULL, NULL),
                 AD_EMISUSE);
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, neuron_hessian, NULL, NULL, rep),
               AD_EMISUSE,
               "handcheck_hessian: give your Hessian either as blocks at the given point (hess) "
               "or as a callback (yours), not both");
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck_hessian: nothing to compare: pass your Hessian as blocks (hess) or as "
               "a callback (yours)");
    ad_check_opts o = opts_points(2);
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, &o, rep), AD_EMISUSE,
               "handcheck_hessian: 2 random points need a Hessian callback (yours): hess holds "
               "only at the given point");
    const double *only_x[16] = {0};
    only_x[1 * 4 + 1] = h.WW; /* x is a constant */
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, only_x, NULL, NULL, NULL, rep),
               AD_EMISUSE,
               "handcheck_hessian: nothing to compare (set hess[a * n + b] for a pair of inputs "
               "with role compare)");
    ad_check_input none[4];
    memcpy(none, in, sizeof none);
    none[0].role = none[2].role = AD_INPUT_SKIP;
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, none, 4, NULL, neuron_hessian, NULL, NULL, rep),
               AD_EMISUSE, "handcheck_hessian: nothing to compare (no input has role compare)");
    EXPECT_ERR(ad_handcheck_hessian(NULL, NULL, in, 4, h.p, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck_hessian: fn is NULL");
    hand_opts ho = {0};
    ho.refuse_at = 1;
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, &ho, NULL, rep),
               AD_EMISUSE, "handcheck_hessian: your Hessian callback returned -1 at the given point");
    ho = (hand_opts){0};
    ho.refuse_at = 3;
    EXPECT_ERR(ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, &ho, NULL, rep),
               AD_EMISUSE, "handcheck_hessian: your Hessian callback returned -1 at random point 2");
    EXPECT_ERR(ad_handcheck_hessian(not_scalar, NULL, in, 4, h.p, NULL, NULL, NULL, rep),
               AD_EMISUSE, "handcheck_hessian: the function's output is vector(3), not a scalar");

    cr_assert_eq(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, NULL, NULL, NULL),
                 AD_EMISUSE);
    EXPECT_ERR(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, NULL, NULL, NULL, rep), AD_EMISUSE,
               "handcheck_hvp: yours is NULL (your Hessian-vector product callback)");
    EXPECT_ERR(ad_handcheck_hvp(neuron, NULL, none, 4, NULL, 0, neuron_hvp, NULL, NULL, rep),
               AD_EMISUSE, "handcheck_hvp: nothing to compare (no input has role compare)");
    EXPECT_ERR(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 1, neuron_hvp, NULL, NULL, rep),
               AD_EMISUSE, "handcheck_hvp: dirs is NULL but ndirs is 1");
    ho = (hand_opts){0};
    ho.refuse_at = 1;
    EXPECT_ERR(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, &ho, NULL, rep),
               AD_EMISUSE,
               "handcheck_hvp: your HVP callback returned -2 at the given point, direction v1");
    ho = (hand_opts){0};
    ho.refuse_at = 5;
    EXPECT_ERR(ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, &ho, NULL, rep),
               AD_EMISUSE,
               "handcheck_hvp: your HVP callback returned -2 at random point 1, direction v2");
}

/* Every numeric option: NaN, infinite or negative is AD_EMISUSE naming
 * the check, the field and the value; nothing runs. */
Test(errors, non_finite_or_negative_options_are_misuse)
{
    ad_check_input in[4];
    neuron_inputs(in);
    static const struct {
        double atol, rtol, step, spread;
        int directions, points;
        const char *field; /* the message after "<who>: " */
        unsigned reads;    /* 1 jvp/hvp, 2 hessian, 4 hand hvp */
    } bad[] = {
        {0, 0, NAN, 0, 0, 0, "opts.step is nan; it must be finite and > 0, or 0 for the default", 1},
        {0, 0, -INFINITY, 0, 0, 0, "opts.step is -inf; it must be finite and > 0, or 0 for the default", 1},
        {0, 0, -1e-3, 0, 0, 0, "opts.step is -0.001; it must be finite and > 0, or 0 for the default", 1},
        {NAN, 0, 0, 0, 0, 0, "opts.atol is nan; it must be finite and >= 0", 7},
        {-1, 0, 0, 0, 0, 0, "opts.atol is -1; it must be finite and >= 0", 7},
        {0, INFINITY, 0, 0, 0, 0, "opts.rtol is inf; it must be finite and >= 0", 7},
        {1e-6, -NAN, 0, 0, 0, 0, "opts.rtol is nan; it must be finite and >= 0", 7},
        {0, 0, 0, NAN, 0, 0, "opts.spread is nan; it must be finite and > 0, or 0 for the default", 7},
        {0, 0, 0, -2, 0, 0, "opts.spread is -2; it must be finite and > 0, or 0 for the default", 7},
        {0, 0, 0, INFINITY, 0, 0, "opts.spread is inf; it must be finite and > 0, or 0 for the default", 7},
        {0, 0, 0, 0, -1, 0, "opts.directions is -1; it must be >= 0 (0: every element)", 5},
        {0, 0, 0, 0, 0, 2000000000, "opts.points is 2000000000; it must be at most 100000", 7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ad_check_opts o;
        memset(&o, 0, sizeof o);
        o.atol = bad[i].atol;
        o.rtol = bad[i].rtol;
        o.step = bad[i].step;
        o.spread = bad[i].spread;
        o.directions = bad[i].directions;
        o.points = bad[i].points;
        for (int k = 0; k < 4; k++) {
            static const char *const who[4] = {"jvpcheck", "hvpcheck", "handcheck_hessian",
                                               "handcheck_hvp"};
            static const unsigned bit[4] = {1, 1, 2, 4};
            ad_check_report rep;
            int st;
            if (k == 0)
                st = ad_jvpcheck(neuron, NULL, in, 4, NULL, 0, &o, &rep);
            else if (k == 1)
                st = ad_hvpcheck(neuron, NULL, in, 4, NULL, 0, &o, &rep);
            else if (k == 2)
                st = ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, NULL, &o,
                                          &rep);
            else
                st = ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, NULL, &o, &rep);
            if (bad[i].reads & bit[k]) {
                char want[200];
                snprintf(want, sizeof want, "%s: %s", who[k], bad[i].field);
                cr_expect_eq(st, AD_EMISUSE, "case %zu, %s: status %d, %s", i, who[k], st,
                             rep.errmsg);
                cr_expect_eq(rep.status, AD_EMISUSE);
                cr_expect_str_eq(rep.errmsg, want, "case %zu", i);
                cr_expect_not(rep.passed);
                cr_expect_str_eq(rep.text, "");
            } else { /* a field the check does not read */
                cr_expect_eq(st, AD_OK, "case %zu, %s: %s", i, who[k], rep.errmsg);
            }
            ad_check_report_free(&rep);
        }
    }
}

/* ================================================================== */
/* Allocation failures                                                 */
/* ================================================================== */

/* Runs one check with allocation number fail failing. Returns its status;
 * *reached says whether the failure point was reached at all. */
typedef int (*run_fn)(ad_check_opts *o, ad_check_report *rep);

static int run_jvp(ad_check_opts *o, ad_check_report *rep)
{
    ad_check_input in[4];
    vec_inputs(in);
    o->points = 1;
    return ad_jvpcheck(vec_out, NULL, in, 4, NULL, 0, o, rep);
}
static int run_jvp_dirs(ad_check_opts *o, ad_check_report *rep)
{
    const double x[3] = {0, 1, -1};
    ad_check_input in = {"x", ad_shape_vec(3), x, NULL, 0};
    o->directions = 2;
    return ad_jvpcheck(sum_relu, NULL, &in, 1, NULL, 0, o, rep);
}
static int run_hvp(ad_check_opts *o, ad_check_report *rep)
{
    ad_check_input in[4];
    neuron_inputs(in);
    o->points = 1;
    return ad_hvpcheck(neuron, NULL, in, 4, NULL, 0, o, rep);
}
static int run_hvp_dirs(ad_check_opts *o, ad_check_report *rep)
{
    const double a[2] = {1.5, -0.5}, b[2] = {2, 3};
    ad_check_input in[2] = {{"a", ad_shape_vec(2), a, NULL, 0}, {"b", ad_shape_vec(2), b, NULL, 0}};
    o->directions = 3;
    o->points = -1;
    return ad_hvpcheck(sum_q, (void *)&q_right, in, 2, NULL, 0, o, rep);
}
static int run_hess(ad_check_opts *o, ad_check_report *rep)
{
    ad_check_input in[4];
    neuron_inputs(in);
    o->points = 2;
    return ad_handcheck_hessian(neuron, NULL, in, 4, NULL, neuron_hessian, NULL, o, rep);
}
static int run_hess_blocks(ad_check_opts *o, ad_check_report *rep)
{
    ad_check_input in[4];
    neuron_inputs(in);
    hess_blocks h;
    hess_blocks_fill(&h);
    return ad_handcheck_hessian(neuron, NULL, in, 4, h.p, NULL, NULL, o, rep);
}
static int run_hand_hvp(ad_check_opts *o, ad_check_report *rep)
{
    ad_check_input in[4];
    neuron_inputs(in);
    o->points = 1;
    return ad_handcheck_hvp(neuron, NULL, in, 4, NULL, 0, neuron_hvp, NULL, o, rep);
}

static void every_failure(run_fn run, const char *who)
{
    long ok_at = 0;
    for (long fail = 1; fail < 3000 && !ok_at; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        ad_check_opts o;
        memset(&o, 0, sizeof o);
        o.alloc = test_alloc_fn;
        o.alloc_ud = &a;
        o.flags = AD_CHECK_ALL_ROWS;
        ad_check_report rep;
        int st = run(&o, &rep);
        if (st == AD_OK) {
            cr_assert(rep.passed, "%s, fail %ld: %s", who, fail, rep.text);
            cr_assert_gt(strlen(rep.text), 0);
            if (a.count < fail) /* the failure was never reached: done */
                ok_at = fail;
        } else {
            cr_assert_eq(st, AD_ENOMEM, "%s, fail %ld: status %d (%s)", who, fail, st, rep.errmsg);
            cr_assert_eq(rep.status, AD_ENOMEM);
            cr_assert(starts_with(rep.errmsg, who), "%s", rep.errmsg);
            cr_assert_not_null(strstr(rep.errmsg, "out of memory"), "%s, fail %ld: %s", who,
                               fail, rep.errmsg);
            cr_assert_not(rep.passed);
            cr_assert_str_eq(rep.text, "");
        }
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0, "%s, fail %ld: %zu bytes leaked", who, fail, a.bytes);
        cr_assert_eq(a.bad_osize, 0, "%s, fail %ld: a free with the wrong size", who, fail);
    }
    cr_assert_gt(ok_at, 5, "%s should allocate several times", who);
}

Test(alloc, jvpcheck) { every_failure(run_jvp, "jvpcheck: "); }
Test(alloc, jvpcheck_directions_and_kinks) { every_failure(run_jvp_dirs, "jvpcheck: "); }
Test(alloc, hvpcheck) { every_failure(run_hvp, "hvpcheck: "); }
Test(alloc, hvpcheck_directions) { every_failure(run_hvp_dirs, "hvpcheck: "); }
Test(alloc, handcheck_hessian) { every_failure(run_hess, "handcheck_hessian: "); }
Test(alloc, handcheck_hessian_blocks) { every_failure(run_hess_blocks, "handcheck_hessian: "); }
Test(alloc, handcheck_hvp) { every_failure(run_hand_hvp, "handcheck_hvp: "); }

/* ================================================================== */
/* The report's fields of the first release                            */
/* ================================================================== */

/* A program built against the first check.h has a report that ends
 * before index: the older checks must not write past it. */
Test(report, older_checks_leave_the_new_fields_alone)
{
    ad_check_input in[4];
    neuron_inputs(in);
    const size_t v1 = offsetof(ad_check_report, index);
    _Alignas(ad_check_report) unsigned char raw[sizeof(ad_check_report)];
    memset(raw, 0xA5, sizeof raw);
    ad_check_report *rep = (ad_check_report *)(void *)raw;
    ad_check_opts o = opts_points(-1);
    cr_assert_eq(ad_gradcheck(neuron, NULL, in, 4, NULL, rep), AD_OK);
    cr_assert(rep->passed, "%s", rep->text);
    ad_check_report_free(rep);
    in[0].grad = (const double[3]){-2, -2, -4};
    cr_assert_eq(ad_handcheck(neuron, NULL, in, 4, NULL, NULL, &o, rep), AD_OK);
    cr_assert(rep->passed, "%s", rep->text);
    ad_check_report_free(rep);
    ad_check_report_free(rep);
    for (size_t i = v1; i < sizeof raw; i++)
        cr_assert_eq(raw[i], 0xA5, "byte %zu of the report written", i);
    /* a mode check fills them */
    cr_assert_eq(ad_jvpcheck(neuron, NULL, in, 4, NULL, 0, &o, rep), AD_OK);
    cr_assert_not_null(rep->index);
    cr_assert_eq(rep->index[0].kind, AD_CMP_JVP);
    ad_check_report_free(rep);
}

/* ================================================================== */
/* ad_trace_tangent                                                    */
/* ================================================================== */

typedef struct sink {
    char *buf;
    size_t len, cap;
} sink;

static void sink_write(void *ud, const char *text, size_t len)
{
    sink *s = ud;
    if (s->len + len + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 1024;
        while (ncap < s->len + len + 1)
            ncap *= 2;
        char *p = realloc(s->buf, ncap);
        cr_assert_not_null(p);
        s->buf = p;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = '\0';
}

static void sink_free(sink *s)
{
    free(s->buf);
    memset(s, 0, sizeof *s);
}

typedef struct tneuron {
    ad_tape *t;
    ad_node W, x, b, y, Wx, z, yhat, e, sq, J;
} tneuron;

/* The seed neuron of docs/verifying.md, every node named. */
static void tneuron_build(tneuron *n)
{
    const double W[3] = {4, 2, -5}, x[3] = {1, 0, 2};
    n->t = ad_tape_new(NULL);
    cr_assert_not_null(n->t);
    ad_tape *t = n->t;
    n->W = ad_variable(t, ad_shape_vec(3), W);
    n->x = ad_variable(t, ad_shape_vec(3), x);
    n->b = ad_scalar_var(t, 7);
    n->y = ad_scalar(t, 5);
    n->Wx = ad_dot(t, n->W, n->x);
    n->z = ad_add(t, n->Wx, n->b);
    n->yhat = ad_relu(t, n->z);
    n->e = ad_sub(t, n->yhat, n->y);
    n->sq = ad_square(t, n->e);
    n->J = ad_scale(t, n->sq, 0.5);
    const char *names[] = {"W", "x", "b", "y", "Wx", "z", "yhat", "e", "sq", "J"};
    ad_node nodes[] = {n->W, n->x, n->b, n->y, n->Wx, n->z, n->yhat, n->e, n->sq, n->J};
    for (int i = 0; i < 10; i++)
        cr_assert_eq(ad_set_name(t, nodes[i], names[i]), AD_OK);
    cr_assert_eq(ad_tape_status(t), AD_OK);
}

/* J v along W = (1, 0, 0), b = 0.5. */
static double tneuron_jvp(tneuron *n)
{
    const double vW[3] = {1, 0, 0}, vx[3] = {0, 0, 0}, vb = 0.5;
    const double *v[3] = {vW, vx, &vb};
    ad_node in[3] = {n->W, n->x, n->b};
    double jv = 0;
    cr_assert_eq(ad_jvp(n->t, n->J, 3, in, v, &jv), AD_OK, "%s", ad_tape_errmsg(n->t));
    return jv;
}

Test(trace_tangent, seed_neuron_step_by_step)
{
    tneuron n;
    tneuron_build(&n);
    cr_assert_eq(tneuron_jvp(&n), -6.0);
    sink s = {0};
    cr_assert_eq(ad_trace_tangent(n.t, n.J, sink_write, &s, NULL), AD_OK);
    const char *want = "forward sweep to J: 10 steps, tangents dN/dv along the first direction\n"
                       "\n"
                       "W: variable, vector(3) = (4, 2, -5)\n"
                       "  dW/dv = (1, 0, 0)   (seed)\n"
                       "\n"
                       "x: variable, vector(3) = (1, 0, 2)\n"
                       "  dx/dv = (0, 0, 0)\n"
                       "\n"
                       "b: variable, scalar = 7\n"
                       "  db/dv = 0.5   (seed)\n"
                       "\n"
                       "y: constant, scalar = 5\n"
                       "  dy/dv = 0\n"
                       "\n"
                       "Wx = W · x = -6\n"
                       "  dWx/dv = x · dW/dv + W · dx/dv = 1\n"
                       "    x · dW/dv = (1, 0, 2) · (1, 0, 0) = 1\n"
                       "    W · dx/dv = (4, 2, -5) · (0, 0, 0) = 0\n"
                       "\n"
                       "z = Wx + b = 1\n"
                       "  dz/dv = dWx/dv + db/dv = 1.5\n"
                       "    dWx/dv = 1\n"
                       "    db/dv = 0.5\n"
                       "\n"
                       "yhat = relu(z) = 1\n"
                       "  dyhat/dv = relu'(z) · dz/dv = 1 · 1.5 = 1.5\n"
                       "\n"
                       "e = yhat - y = -4\n"
                       "  de/dv = dyhat/dv - dy/dv = 1.5\n"
                       "    dyhat/dv = 1.5\n"
                       "    -dy/dv = 0\n"
                       "\n"
                       "sq = e^2 = 16\n"
                       "  dsq/dv = 2·e · de/dv = -8 · 1.5 = -12\n"
                       "\n"
                       "J = 0.5 · sq = 8\n"
                       "  dJ/dv = 0.5 · dsq/dv = 0.5 · (-12) = -6\n";
    cr_assert_str_eq(s.buf, want);
    /* the tape is only read */
    cr_assert_eq(ad_tape_status(n.t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(n.t), "");
    /* the same through a FILE */
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(ad_trace_tangent_fprint(f, n.t, n.J, NULL), AD_OK);
    cr_assert_eq((size_t)ftell(f), s.len);
    fclose(f);
    sink_free(&s);
    ad_tape_free(n.t);
}

/* The numbers are the tape's: a term's numbers come from the op's own
 * rules, the total from ad_tangent. */
Test(trace_tangent, matrices_broadcasts_and_custom_ops)
{
    ad_tape *t = ad_tape_new(NULL);
    const double W[12] = {4, 2, -5, 1, 1, -3, 2, 0.5, 0.5, 1, 1, -2};
    const double b[3] = {8, 1, -5}, x[4] = {1, 0, 2, -1};
    ad_node Wn = ad_variable(t, ad_shape_mat(3, 4), W), bn = ad_variable(t, ad_shape_vec(3), b);
    ad_node xn = ad_variable(t, ad_shape_vec(4), x), s = ad_scalar_var(t, 2);
    ad_node Wx = ad_matvec(t, Wn, xn), z = ad_add(t, Wx, bn), y = ad_relu(t, z);
    ad_node c = ad_apply(t, &cube_full, &y, 1, 0.0);
    ad_node m = ad_mul(t, c, s);
    ad_node J = ad_sum(t, m);
    const char *names[] = {"W", "b", "x", "s", "Wx", "z", "y", "c", "m", "J"};
    ad_node nodes[] = {Wn, bn, xn, s, Wx, z, y, c, m, J};
    for (int i = 0; i < 10; i++)
        ad_set_name(t, nodes[i], names[i]);
    double vW[12] = {0}, vx[4] = {0}, vs = 1;
    vW[0] = 1;
    const double vb[3] = {0, 1, 0};
    const double *v[4] = {vW, vb, vx, &vs};
    ad_node in[4] = {Wn, bn, xn, s};
    double jv;
    cr_assert_eq(ad_jvp(t, J, 4, in, v, &jv), AD_OK, "%s", ad_tape_errmsg(t));
    sink out = {0};
    cr_assert_eq(ad_trace_tangent(t, J, sink_write, &out, NULL), AD_OK);
    const char *want[] = {
        "W: variable, 3x4 = [[4, 2, -5, 1], [1, -3, 2, 0.5], [0.5, 1, 1, -2]]\n"
        "  dW/dv = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]   (seed)\n",
        "Wx = W · x = (-7, 4.5, 4.5)\n"
        "  dWx/dv = dW/dv · x + W · dx/dv = (1, 0, 0)\n"
        "    dW/dv · x   (3x4)·(4x1) = (1, 0, 0)\n"
        "    W · dx/dv   (3x4)·(4x1) = (0, 0, 0)\n",
        "y = relu(z) = (1, 5.5, 0)\n"
        "  dy/dv = relu'(z) ⊙ dz/dv = (1, 1, 0) ⊙ (1, 1, 0) = (1, 1, 0)\n",
        /* the custom op's term from its jvp: 3 y^2 dy */
        "c = cube(y) = (1, 166.375, 0)\n"
        "  dc/dv = ∂cube/∂y · dy/dv = (3, 90.75, 0)\n",
        /* a scalar operand broadcast */
        "m = c ⊙ s = (2, 332.75, 0)\n"
        "  dm/dv = s · dc/dv + c · ds/dv = (7, 347.875, 0)\n"
        "    s · dc/dv = (6, 181.5, 0)\n"
        "    c · ds/dv = (1, 166.375, 0)\n",
        "J = sum(m) = 334.75\n"
        "  dJ/dv = sum(dm/dv) = 354.875\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(out.buf, want[i]), "missing:\n%s\nin:\n%s", want[i], out.buf);
    cr_assert_eq(jv, 354.875);
    sink_free(&out);

    /* tensors larger than max_values: shapes instead of numbers */
    ad_print_opts po;
    memset(&po, 0, sizeof po);
    po.max_values = 3;
    cr_assert_eq(ad_trace_tangent(t, J, sink_write, &out, &po), AD_OK);
    cr_assert_not_null(strstr(out.buf, "  dW/dv: 3x4, not shown   (seed)\n"), "%s", out.buf);
    cr_assert_not_null(strstr(out.buf, "y = relu(z) = (1, 5.5, 0)\n"), "%s", out.buf);
    sink_free(&out);
    ad_tape_free(t);
}

Test(trace_tangent, errors_leave_the_tape_as_it_was)
{
    tneuron n;
    tneuron_build(&n);
    char err[256];
    ad_print_opts o;
    memset(&o, 0, sizeof o);
    o.errbuf = err;
    o.errcap = sizeof err;
    sink s = {0};
#define ERR(call, st, msg)                                                                    \
    do {                                                                                      \
        err[0] = '\0';                                                                        \
        cr_assert_eq((call), (st));                                                           \
        cr_assert_str_eq(err, (msg));                                                         \
    } while (0)
    ERR(ad_trace_tangent(NULL, n.J, sink_write, &s, &o), AD_EMISUSE,
        "trace_tangent: tape is NULL");
    ERR(ad_trace_tangent(n.t, n.J, NULL, &s, &o), AD_EMISUSE, "trace_tangent: write is NULL");
    ERR(ad_trace_tangent_fprint(NULL, n.t, n.J, &o), AD_EMISUSE,
        "trace_tangent: the stream is NULL");
    ERR(ad_trace_tangent(n.t, ad_nil(), sink_write, &s, &o), AD_EMISUSE,
        "trace_tangent: the output is nil, stale or of another tape");
    const char *nosweep = "trace_tangent: no forward sweep of this recording: call ad_forward "
                          "(after ad_tangents and ad_set_tangent) or ad_jvp before "
                          "ad_trace_tangent";
    ERR(ad_trace_tangent(n.t, n.J, sink_write, &s, &o), AD_EMISUSE, nosweep);
    /* a reverse sweep is not a forward one */
    cr_assert_eq(ad_backward(n.t, n.J), AD_OK);
    ERR(ad_trace_tangent(n.t, n.J, sink_write, &s, &o), AD_EMISUSE, nosweep);
    /* seeded but not swept */
    cr_assert_eq(ad_tangents(n.t, 1), AD_OK);
    ERR(ad_trace_tangent(n.t, n.J, sink_write, &s, &o), AD_EMISUSE, nosweep);
    cr_assert_eq(ad_forward(n.t), AD_OK);
    cr_assert_eq(ad_trace_tangent(n.t, n.J, sink_write, &s, &o), AD_OK);
    cr_assert_not_null(strstr(s.buf, "  dJ/dv = 0.5 · dsq/dv = 0.5 · 0 = 0\n"), "%s", s.buf);
    sink_free(&s);
    /* recording more makes the sweep stale */
    ad_node J2 = ad_add_const(n.t, n.J, 1);
    ERR(ad_trace_tangent(n.t, J2, sink_write, &s, &o), AD_EMISUSE, nosweep);
    cr_assert_eq(s.len, 0, "nothing written on errors");
    cr_assert_eq(ad_tape_status(n.t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(n.t), "");
    /* a tape holding an error */
    ad_node bad = ad_dot(n.t, n.b, n.W);
    cr_assert(ad_node_is_nil(bad));
    ERR(ad_trace_tangent(n.t, n.J, sink_write, &s, &o), AD_EMISUSE,
        "trace_tangent: the tape holds an error: dot: u is a scalar but v is a vector of length "
        "3");
#undef ERR
    ad_tape_free(n.t);
}

Test(trace_tangent, allocation_failures_are_enomem_without_leaks)
{
    tneuron n;
    tneuron_build(&n);
    tneuron_jvp(&n);
    int done = 0;
    for (long fail = 1; fail < 200 && !done; fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        char err[128] = "";
        ad_print_opts o = {test_alloc_fn, &a, 0, err, sizeof err};
        sink s = {0};
        int st = ad_trace_tangent(n.t, n.J, sink_write, &s, &o);
        cr_assert_eq(a.bytes, 0, "leaked %zu bytes at fail %ld", a.bytes, fail);
        cr_assert_eq(a.bad_osize, 0);
        if (st == AD_OK) {
            done = a.count < fail;
            cr_assert(done, "fail %ld: a failed allocation went unnoticed", fail);
        } else {
            cr_assert_eq(st, AD_ENOMEM, "fail %ld: %d", fail, st);
            cr_assert(starts_with(err, "trace_tangent: out of memory"), "%s", err);
        }
        sink_free(&s);
    }
    cr_assert(done);
    ad_tape_free(n.t);
}
