/* test_modes.c -- forward mode, second order and the drivers beyond the
 * per-op checks of test_ops_fd.c: vector mode against one direction at a
 * time, the seed neuron's Hessian, custom ops with and without rules,
 * misuse with its messages, and allocation (none after set-up; every
 * failure reported). */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "support.h"

/* f(a, b, s) = sum(tanh(A b) * a) * s + s^3, A = outer(a, a) (3 x 3):
 * tensors, inline scalars and a product of a node with itself. */
typedef struct g3 {
    ad_node a, b, s, f;
} g3;

static g3 rec3(ad_tape *t, const double *a0, const double *b0, double s0)
{
    g3 g;
    g.a = ad_variable(t, ad_shape_vec(3), a0);
    g.b = ad_variable(t, ad_shape_vec(3), b0);
    g.s = ad_scalar_var(t, s0);
    ad_node A = ad_outer(t, g.a, g.a);
    ad_node h = ad_tanh(t, ad_matvec(t, A, g.b));
    ad_node s3 = ad_mul(t, ad_square(t, g.s), g.s);
    g.f = ad_add(t, ad_mul(t, ad_dot(t, h, g.a), g.s), s3);
    return g;
}

static const double a0[3] = {0.3, -0.5, 0.8}, b0[3] = {1.1, 0.4, -0.7};

Test(modes, vector_mode_equals_one_direction_at_a_time)
{
    ad_tape *t = ad_tape_new(NULL);
    g3 g = rec3(t, a0, b0, 0.9);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    enum { K = 5 };
    double ta[K * 3], tb[K * 3], ts[K];
    test_rng r = {42};
    for (int i = 0; i < K * 3; i++)
        ta[i] = test_uniform(&r, -1, 1), tb[i] = test_uniform(&r, -1, 1);
    for (int i = 0; i < K; i++)
        ts[i] = test_uniform(&r, -1, 1);
    cr_assert_eq(ad_tangents(t, K), AD_OK);
    cr_assert_eq(ad_set_tangent(t, g.a, ta), AD_OK);
    cr_assert_eq(ad_set_tangent(t, g.b, tb), AD_OK);
    cr_assert_eq(ad_set_tangent(t, g.s, ts), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_backward_tangent(t, g.f, NULL), AD_OK, "%s", ad_tape_errmsg(t));
    double jv[K], hva[K * 3], hvs[K];
    for (int d = 0; d < K; d++)
        jv[d] = ad_tangent(t, g.f)[d];
    memcpy(hva, ad_grad_tangent(t, g.a), sizeof hva);
    memcpy(hvs, ad_grad_tangent(t, g.s), sizeof hvs);

    for (int d = 0; d < K; d++) {
        const ad_node in[3] = {g.a, g.b, g.s};
        const double *v[3] = {ta + 3 * d, tb + 3 * d, ts + d};
        double j1, ha[3], hb[3], hs;
        double *hv[3] = {ha, hb, &hs};
        cr_assert_eq(ad_jvp(t, g.f, 3, in, v, &j1), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert(test_err(j1, jv[d]) <= 1e-14, "direction %d: J v %.17g vs %.17g", d, j1, jv[d]);
        cr_assert_eq(ad_hvp(t, g.f, 3, in, v, hv, NULL), AD_OK, "%s", ad_tape_errmsg(t));
        for (int i = 0; i < 3; i++)
            cr_assert(test_err(ha[i], hva[3 * d + i]) <= 1e-14, "direction %d: (H v)_a[%d]", d, i);
        cr_assert(test_err(hs, hvs[d]) <= 1e-14);
    }
    ad_tape_free(t);
}

/* Third check on the same function: the dense Hessian is symmetric, and
 * each column equals an HVP with a unit vector; the Jacobian of the
 * gradient-free output in both modes agrees. */
Test(modes, dense_drivers)
{
    ad_tape *t = ad_tape_new(NULL);
    g3 g = rec3(t, a0, b0, 0.9);
    const ad_node in[3] = {g.a, g.b, g.s};
    double H[49];
    cr_assert_eq(ad_hessian(t, g.f, 3, in, H), AD_OK, "%s", ad_tape_errmsg(t));
    for (int c = 0; c < 7; c++) {
        double e[7] = {0}, h[7];
        e[c] = 1;
        const double *v[3] = {e, e + 3, e + 6};
        double *hv[3] = {h, h + 3, h + 6};
        cr_assert_eq(ad_hvp(t, g.f, 3, in, v, hv, NULL), AD_OK);
        for (int rr = 0; rr < 7; rr++) {
            cr_assert(H[rr * 7 + c] == H[c * 7 + rr], "not symmetric at %d,%d", rr, c);
            cr_assert(test_err(H[rr * 7 + c], h[rr]) <= 1e-13, "H[%d][%d] = %.17g, hvp %.17g", rr,
                      c, H[rr * 7 + c], h[rr]);
        }
    }
    /* a 3 x 4 Jacobian, wider than tall and taller than wide */
    ad_node y = ad_matvec(t, ad_outer(t, g.a, g.b), g.b); /* 3 <- (a, b) : 3 x 6 */
    double J1[18], J2[18], J3[18];
    const ad_node in2[2] = {g.a, g.b};
    cr_assert_eq(ad_jacobian(t, y, 2, in2, J1, AD_JAC_FORWARD), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_jacobian(t, y, 2, in2, J2, AD_JAC_REVERSE), AD_OK);
    cr_assert_eq(ad_jacobian(t, y, 2, in2, J3, AD_JAC_AUTO), AD_OK);
    /* y = a (b . b): dy_i/da_j = delta_ij |b|^2, dy_i/db_j = 2 a_i b_j */
    const double bb = b0[0] * b0[0] + b0[1] * b0[1] + b0[2] * b0[2];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++) {
            const double want = j < 3 ? (i == j ? bb : 0.0) : 2 * a0[i] * b0[j - 3];
            cr_assert(test_err(J1[i * 6 + j], want) <= 1e-14, "J[%d][%d] = %.17g, want %.17g", i,
                      j, J1[i * 6 + j], want);
            cr_assert(test_err(J2[i * 6 + j], want) <= 1e-14);
            cr_assert(J3[i * 6 + j] == J2[i * 6 + j], "AUTO with N > M is reverse mode");
        }
    ad_tape_free(t);
}

/* The seed neuron: J = 1/2 (relu(W.x + b) - y)^2 at W = (4, 2, -5),
 * x = (1, 0, 2), b = 7, y = 5 (z = 1 > 0). Hessian in (W, b) is
 * [x; 1][x; 1]^T, gradient (yhat - y) [x; 1] = (-4, 0, -8, -4). */
Test(modes, neuron_hessian_is_the_outer_product)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_constant(t, ad_shape_vec(3), x0);
    ad_node b = ad_scalar_var(t, 7);
    ad_node z = ad_add(t, ad_dot(t, W, x), b);
    ad_node J = ad_scale(t, ad_square(t, ad_add_const(t, ad_relu(t, z), -5)), 0.5);
    const ad_node in[2] = {W, b};
    double H[16];
    cr_assert_eq(ad_hessian(t, J, 2, in, H), AD_OK, "%s", ad_tape_errmsg(t));
    const double xb[4] = {1, 0, 2, 1};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            cr_assert(H[i * 4 + j] == xb[i] * xb[j], "H[%d][%d] = %g, want %g", i, j,
                      H[i * 4 + j], xb[i] * xb[j]);
    double gW[3], gb, hW[3], hb;
    const double v1[3] = {1, 1, 1}, v2 = 1;
    const double *v[2] = {v1, &v2};
    double *hv[2] = {hW, &hb}, *gr[2] = {gW, &gb};
    cr_assert_eq(ad_hvp(t, J, 2, in, v, hv, gr), AD_OK);
    const double gwant[4] = {-4, 0, -8, -4};
    for (int i = 0; i < 3; i++) {
        cr_assert(gW[i] == gwant[i]);
        cr_assert(hW[i] == xb[i] * 4, "(H v)[%d] = %g", i, hW[i]); /* [x;1] . v = 4 */
    }
    cr_assert(gb == -4 && hb == 4);
    ad_tape_free(t);
}

/* ---- custom ops ---- */

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
/* d/dt (3 x^2 g) along tx: 6 x g tx */
static void cube_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (tg[0])
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            tg[0][i] += 6 * k->in[0].val[i] * k->out.grad[i] * tin[0][i];
}
/* a product: y = a * b elementwise, flagged bilinear */
static void prod_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[1].val[i];
}
static void prod_vjp(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) {
        if (k->in[0].grad)
            k->in[0].grad[i] += k->out.grad[i] * k->in[1].val[i];
        if (k->in[1].grad)
            k->in[1].grad[i] += k->out.grad[i] * k->in[0].val[i];
    }
}
static void prod_jvp(const ad_call *k, const double *const *tin, double *tout)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        tout[i] = tin[0][i] * k->in[1].val[i] + k->in[0].val[i] * tin[1][i];
}

static const ad_opdef cube_full = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                   .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                   .jvp = cube_jvp, .hvp = cube_hvp};
static const ad_opdef cube_jvp_only = {.name = "cube_jvp_only", .arity = 1, .forward = cube_fwd,
                                       .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                       .jvp = cube_jvp};
static const ad_opdef cube_old = {.name = "cube_old", .arity = 1, .forward = cube_fwd,
                                  .vjp = cube_vjp};
/* a caller compiled against the old header: size 0, whatever follows */
static const ad_opdef cube_size0 = {.name = "cube_size0", .arity = 1, .forward = cube_fwd,
                                    .vjp = cube_vjp, .size = 0, .jvp = cube_jvp,
                                    .hvp = cube_hvp};
static const ad_opdef prod_bilinear = {.name = "prod", .arity = 2, .forward = prod_fwd,
                                       .vjp = prod_vjp, .size = sizeof(ad_opdef),
                                       .jvp = prod_jvp, .flags = AD_OPDEF_BILINEAR};

/* f = sum(cube(v) * prod(v, w)) with v, w variables of 4 */
static ad_node rec_custom(ad_tape *t, const ad_opdef *cube, ad_node *v, ad_node *w)
{
    const double v0[4] = {0.5, -1.2, 0.8, 1.5}, w0[4] = {1.0, 0.3, -0.6, 0.2};
    *v = ad_variable(t, ad_shape_vec(4), v0);
    *w = ad_variable(t, ad_shape_vec(4), w0);
    ad_node c = ad_apply(t, cube, v, 1, 0);
    ad_node in[2] = {*v, *w};
    ad_node p = ad_apply(t, &prod_bilinear, in, 2, 0);
    return ad_sum(t, ad_mul(t, c, p));
}

Test(modes, custom_ops_with_rules_match_the_builtins)
{
    ad_tape *t = ad_tape_new(NULL), *ref = ad_tape_new(NULL);
    ad_node v, w, rv, rw;
    ad_node f = rec_custom(t, &cube_full, &v, &w);
    const double v0[4] = {0.5, -1.2, 0.8, 1.5}, w0[4] = {1.0, 0.3, -0.6, 0.2};
    rv = ad_variable(ref, ad_shape_vec(4), v0);
    rw = ad_variable(ref, ad_shape_vec(4), w0);
    ad_node rf = ad_sum(ref, ad_mul(ref, ad_pow_const(ref, rv, 3), ad_mul(ref, rv, rw)));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    const ad_node in[2] = {v, w}, rin[2] = {rv, rw};
    double H[64], RH[64];
    cr_assert_eq(ad_hessian(t, f, 2, in, H), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_hessian(ref, rf, 2, rin, RH), AD_OK, "%s", ad_tape_errmsg(ref));
    for (int i = 0; i < 64; i++)
        cr_assert(test_err(H[i], RH[i]) <= 1e-13, "H[%d] = %.17g, built-ins give %.17g", i, H[i],
                  RH[i]);
    ad_tape_free(t);
    ad_tape_free(ref);
}

Test(modes, custom_ops_without_rules_are_refused_by_name)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node v, w;
    ad_node f = rec_custom(t, &cube_old, &v, &w);
    const ad_node in[2] = {v, w};
    double J[8], H[64], x[4] = {1, 1, 1, 1};
    const double *vv[2] = {x, x};
    double hv0[4], hv1[4];
    double *hv[2] = {hv0, hv1};
    const char *nojvp = "custom op 'cube_old' has no jvp rule (set its descriptor's jvp and "
                        "size = sizeof(ad_opdef))";
    char want[256];
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    cr_assert_eq(ad_forward(t), AD_EMISUSE);
    snprintf(want, sizeof want, "forward: %s", nojvp);
    cr_assert_str_eq(ad_tape_errmsg(t), want);
    cr_assert_eq(ad_jvp(t, f, 2, in, vv, J), AD_EMISUSE);
    snprintf(want, sizeof want, "jvp: %s", nojvp);
    cr_assert_str_eq(ad_tape_errmsg(t), want);
    cr_assert_eq(ad_jacobian(t, f, 2, in, J, AD_JAC_FORWARD), AD_EMISUSE);
    snprintf(want, sizeof want, "jacobian (forward mode): %s", nojvp);
    cr_assert_str_eq(ad_tape_errmsg(t), want);
    /* reverse mode needs only the vjp */
    cr_assert_eq(ad_jacobian(t, f, 2, in, J, AD_JAC_REVERSE), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_tape_status(t), AD_OK, "the recording is still good");
    cr_assert_eq(ad_backward(t, f), AD_OK);
    ad_tape_free(t);

    /* size 0: the fields after ud are not read, whatever they hold */
    t = ad_tape_new(NULL);
    f = rec_custom(t, &cube_size0, &v, &w);
    const ad_node in2[2] = {v, w};
    cr_assert_eq(ad_hvp(t, f, 2, in2, vv, hv, NULL), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "hvp: custom op 'cube_size0' has no jvp rule (set its "
                                        "descriptor's jvp and size = sizeof(ad_opdef))");
    ad_tape_free(t);

    /* a jvp but no second-order rule: forward mode works, second order not */
    t = ad_tape_new(NULL);
    f = rec_custom(t, &cube_jvp_only, &v, &w);
    const ad_node in3[2] = {v, w};
    cr_assert_eq(ad_jvp(t, f, 2, in3, vv, J), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_hessian(t, f, 2, in3, H), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "hessian: custom op 'cube_jvp_only' has no second-order rule (set its "
                     "descriptor's hvp, or flags AD_OPDEF_LINEAR or AD_OPDEF_BILINEAR)");
    cr_assert_eq(ad_tape_status(t), AD_OK);
    ad_tape_free(t);
}

/* ---- misuse ---- */

#define EXPECT_CALL(t, call, st, msg)                                                         \
    do {                                                                                      \
        cr_assert_eq((call), (st), "%s: %s", #call, ad_tape_errmsg(t));                       \
        cr_assert_str_eq(ad_tape_errmsg(t), (msg));                                           \
        cr_assert_eq(ad_tape_status(t), AD_OK, "%s left the recording failed", #call);        \
    } while (0)

Test(modes, misuse_is_reported_and_leaves_the_tape_usable)
{
    ad_tape *t = ad_tape_new(NULL);
    const double v3[3] = {1, 2, 3};
    ad_node a = ad_variable(t, ad_shape_vec(3), v3);
    ad_node c = ad_constant(t, ad_shape_vec(3), v3);
    ad_node y = ad_mul(t, a, a);
    ad_node f = ad_sum(t, y);
    double out[9];
    const double *vv[1] = {v3};
    double *hv[1] = {out};
    const ad_node in_a[1] = {a}, in_y[1] = {y}, in_c[1] = {c};

    EXPECT_CALL(t, ad_set_tangent(t, a, v3), AD_EMISUSE,
                "set_tangent: no tangent storage for this recording; call ad_tangents(t, k) "
                "after recording");
    EXPECT_CALL(t, ad_forward(t), AD_EMISUSE,
                "forward: no tangent storage for this recording; call ad_tangents(t, k) after "
                "recording");
    EXPECT_CALL(t, ad_tangents(t, 0), AD_EMISUSE, "tangents: 0 directions; 1 to 4096 are allowed");
    EXPECT_CALL(t, ad_tangents(t, 5000), AD_EMISUSE,
                "tangents: 5000 directions; 1 to 4096 are allowed");
    cr_assert_eq(ad_tangents(t, 2), AD_OK);
    EXPECT_CALL(t, ad_set_tangent(t, y, v3), AD_EMISUSE,
                "set_tangent: node 3 is the result of mul, not a leaf; tangents are seeded on "
                "leaves");
    EXPECT_CALL(t, ad_set_tangent(t, a, NULL), AD_EMISUSE, "set_tangent: tangent is NULL");
    EXPECT_CALL(t, ad_backward_tangent(t, f, NULL), AD_EMISUSE,
                "backward_tangent: no forward sweep of this recording to go back over; call "
                "ad_forward first");
    cr_assert_null(ad_tangent(t, f), "no tangents before a forward sweep");
    cr_assert_eq(ad_forward(t), AD_OK);
    EXPECT_CALL(t, ad_backward_tangent(t, y, NULL), AD_EMISUSE,
                "backward_tangent: the output is a vector of length 3, not a scalar; pass a "
                "seed of its size");
    EXPECT_CALL(t, ad_hvp(t, y, 1, in_a, vv, hv, NULL), AD_EMISUSE,
                "hvp: the output is a vector of length 3, not a scalar");
    EXPECT_CALL(t, ad_hessian(t, y, 1, in_a, out), AD_EMISUSE,
                "hessian: the output is a vector of length 3, not a scalar (take the Hessian of "
                "one element, or of a weighted sum)");
    EXPECT_CALL(t, ad_hvp(t, f, 1, in_y, vv, hv, NULL), AD_EMISUSE,
                "hvp: input 1 (node 3) is the result of mul, not a leaf");
    EXPECT_CALL(t, ad_hvp(t, f, 1, in_c, vv, hv, NULL), AD_EMISUSE,
                "hvp: input 1 (node 2) needs no gradient (a constant, or an ad_param without a "
                "gradient buffer); derivatives are taken with respect to variables");
    EXPECT_CALL(t, ad_jacobian(t, y, 1, in_a, out, 7u), AD_EMISUSE,
                "jacobian: unknown mode 7 (AD_JAC_AUTO, AD_JAC_FORWARD or AD_JAC_REVERSE)");
    EXPECT_CALL(t, ad_jacobian(t, y, 0, in_a, out, 0), AD_EMISUSE,
                "jacobian: no inputs (n < 1)");
    EXPECT_CALL(t, ad_jacobian(t, y, 1, NULL, out, 0), AD_EMISUSE,
                "jacobian: the input array is NULL");
    EXPECT_CALL(t, ad_jvp(t, f, 1, in_a, NULL, out), AD_EMISUSE, "jvp: v is NULL");
    EXPECT_CALL(t, ad_hvp(t, f, 1, in_a, vv, NULL, NULL), AD_EMISUSE, "hvp: hv is NULL");
    EXPECT_CALL(t, ad_hessian(t, f, 1, in_a, NULL), AD_EMISUSE, "hessian: H is NULL");
    EXPECT_CALL(t, ad_jvp(t, ad_nil(), 1, in_a, vv, out), AD_EMISUSE,
                "jvp: operand 0 is the nil node (the result of a failed call)");

    /* recording more nodes: the storage is for the old recording */
    ad_node g = ad_sum(t, a);
    EXPECT_CALL(t, ad_set_tangent(t, a, v3), AD_EMISUSE,
                "set_tangent: no tangent storage for this recording; call ad_tangents(t, k) "
                "after recording");
    cr_assert_null(ad_tangent(t, g));
    /* and everything still works */
    double jv;
    cr_assert_eq(ad_jvp(t, g, 1, in_a, vv, &jv), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert(jv == 6);
    cr_assert_eq(ad_backward(t, f), AD_OK);

    /* NULL tape */
    cr_assert_eq(ad_tangents(NULL, 1), AD_EMISUSE);
    cr_assert_eq(ad_forward(NULL), AD_EMISUSE);
    cr_assert_eq(ad_set_tangent(NULL, a, v3), AD_EMISUSE);
    cr_assert_eq(ad_backward_tangent(NULL, f, NULL), AD_EMISUSE);
    cr_assert_null(ad_tangent(NULL, f));
    cr_assert_null(ad_grad_tangent(NULL, f));
    cr_assert_eq(ad_jvp(NULL, f, 1, in_a, vv, out), AD_EMISUSE);
    cr_assert_eq(ad_hvp(NULL, f, 1, in_a, vv, hv, NULL), AD_EMISUSE);
    cr_assert_eq(ad_jacobian(NULL, f, 1, in_a, out, 0), AD_EMISUSE);
    cr_assert_eq(ad_hessian(NULL, f, 1, in_a, out), AD_EMISUSE);

    /* a failed recording: every call returns its status */
    cr_assert(ad_node_is_nil(ad_add(t, a, ad_variable(t, ad_shape_vec(2), v3))));
    cr_assert_eq(ad_tangents(t, 1), AD_ESHAPE);
    cr_assert_eq(ad_hvp(t, f, 1, in_a, vv, hv, NULL), AD_ESHAPE);
    ad_tape_free(t);
}

/* ---- memory ---- */

Test(modes, no_allocation_after_set_up_and_every_failure_reported)
{
    test_alloc al = {0};
    ad_tape_opts o = test_alloc_opts(&al);
    ad_tape *t = ad_tape_new(&o);
    g3 g = rec3(t, a0, b0, 0.9);
    const ad_node in[3] = {g.a, g.b, g.s};
    double H[49], h[7], e[7] = {1, 0, 0, 0, 1, 0, 1}, J[21];
    const double *v[3] = {e, e + 3, e + 6};
    double *hv[3] = {h, h + 3, h + 6};
    cr_assert_eq(ad_hessian(t, g.f, 3, in, H), AD_OK);
    cr_assert_eq(ad_hvp(t, g.f, 3, in, v, hv, NULL), AD_OK);
    cr_assert_eq(ad_jacobian(t, g.f, 3, in, J, AD_JAC_FORWARD), AD_OK);
    const long before = al.count;
    for (int rep = 0; rep < 3; rep++) {
        cr_assert_eq(ad_hessian(t, g.f, 3, in, H), AD_OK);
        cr_assert_eq(ad_hvp(t, g.f, 3, in, v, hv, NULL), AD_OK);
        cr_assert_eq(ad_jacobian(t, g.f, 3, in, J, AD_JAC_FORWARD), AD_OK);
        cr_assert_eq(ad_jacobian(t, g.f, 3, in, J, AD_JAC_REVERSE), AD_OK);
    }
    cr_assert_eq(al.count, before, "%ld allocations after set-up", al.count - before);
    /* after a reset, the same recording reuses the storage */
    ad_tape_reset(t);
    g = rec3(t, a0, b0, 0.9);
    const ad_node in2[3] = {g.a, g.b, g.s};
    const long before2 = al.count;
    cr_assert_eq(ad_hessian(t, g.f, 3, in2, H), AD_OK);
    cr_assert_eq(al.count, before2, "a reset recording of the same size allocated");
    ad_tape_free(t);
    cr_assert_eq(al.bytes, 0);

    /* every allocation of the set-up failing in turn */
    for (long k = 1;; k++) {
        test_alloc fa = {0};
        ad_tape_opts fo = test_alloc_opts(&fa);
        ad_tape *ft = ad_tape_new(&fo);
        cr_assert_not_null(ft);
        g3 fg = rec3(ft, a0, b0, 0.9);
        cr_assert_eq(ad_tape_status(ft), AD_OK);
        const ad_node fin[3] = {fg.a, fg.b, fg.s};
        fa.fail_at = fa.count + k;
        int st = ad_hessian(ft, fg.f, 3, fin, H);
        if (st == AD_OK) {
            cr_assert(k > 3, "only %ld allocations", k);
            ad_tape_free(ft);
            cr_assert_eq(fa.bytes, 0);
            break;
        }
        cr_assert_eq(st, AD_ENOMEM);
        cr_assert(strstr(ad_tape_errmsg(ft), "hessian: out of memory") != NULL, "%s",
                  ad_tape_errmsg(ft));
        cr_assert_eq(ad_tape_status(ft), AD_OK);
        fa.fail_at = 0;
        cr_assert_eq(ad_hessian(ft, fg.f, 3, fin, H), AD_OK, "a later call succeeds");
        ad_tape_free(ft);
        cr_assert_eq(fa.bytes, 0, "leak after failing allocation %ld", k);
        cr_assert_eq(fa.bad_osize, 0);
    }
}

/* Forward mode through every node kind at once, after a replay at a new
 * point: ad_forward's values are ad_replay's. */
Test(modes, forward_recomputes_values_like_replay)
{
    ad_tape *t = ad_tape_new(NULL);
    g3 g = rec3(t, a0, b0, 0.9);
    const double a1[3] = {0.1, 0.2, -0.3}, s1 = -1.1;
    cr_assert_eq(ad_set_value(t, g.a, a1), AD_OK);
    cr_assert_eq(ad_set_value(t, g.s, &s1), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    const double fr = ad_scalar_value(t, g.f);
    cr_assert_eq(ad_backward(t, g.f), AD_OK);
    double ga[3];
    memcpy(ga, ad_grad(t, g.a), sizeof ga);
    const double s2 = 2.0;
    cr_assert_eq(ad_set_value(t, g.s, &s2), AD_OK);
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK);
    cr_assert(ad_scalar_value(t, g.f) != fr);
    cr_assert_eq(ad_set_value(t, g.s, &s1), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK);
    cr_assert(ad_scalar_value(t, g.f) == fr, "forward: %.17g, replay %.17g",
              ad_scalar_value(t, g.f), fr);
    /* and a normal sweep after it works as after a replay */
    cr_assert_eq(ad_backward(t, g.f), AD_OK);
    cr_assert(memcmp(ga, ad_grad(t, g.a), sizeof ga) == 0);
    ad_tape_free(t);
}

/* The drivers take a leaf named twice in in[] as one variable: its
 * Jacobian and Hessian columns repeat, and the directions given for it in
 * ad_jvp and ad_hvp add up. Forward mode used to clear a leaf's seed at
 * each occurrence, so its first column came out 0 (found by
 * tests/fuzz/fuzz_api.c). f = s * sum(x^2), x = (1.5, -2), s = 0.5. */
Test(modes, an_input_named_twice_is_one_variable)
{
    ad_tape *t = ad_tape_new(NULL);
    const double x0[2] = {1.5, -2.0}, s0 = 0.5;
    ad_node x = ad_variable(t, ad_shape_vec(2), x0), s = ad_scalar_var(t, s0);
    ad_node y = ad_scale(t, ad_mul(t, x, s), 3.0); /* y = 3 s x: dy/dx = 3s I, dy/ds = 3x */
    ad_node f = ad_mul(t, ad_sum(t, ad_square(t, x)), s);
    const ad_node in[3] = {x, s, x};
    double Jf[2 * 5], Jr[2 * 5], Ja[2 * 5];
    cr_assert_eq(ad_jacobian(t, y, 3, in, Jf, AD_JAC_FORWARD), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_jacobian(t, y, 3, in, Jr, AD_JAC_REVERSE), AD_OK);
    cr_assert_eq(ad_jacobian(t, y, 3, in, Ja, AD_JAC_AUTO), AD_OK);
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 5; c++) {
            const int xc = c < 2 ? c : c - 3; /* the element of x of columns 0,1 and 3,4 */
            const double want = c == 2 ? 3 * x0[r] : (r == xc ? 3 * s0 : 0.0);
            cr_assert(Jf[r * 5 + c] == want, "forward J[%d][%d] = %g, want %g", r, c,
                      Jf[r * 5 + c], want);
            cr_assert(Jr[r * 5 + c] == want, "reverse J[%d][%d] = %g, want %g", r, c,
                      Jr[r * 5 + c], want);
            cr_assert(Ja[r * 5 + c] == want);
        }

    /* J v: x moves along v0 + v2 */
    const double v0[2] = {1, 2}, vs = -1, v2[2] = {0.5, -4};
    const double *v[3] = {v0, &vs, v2};
    double jv[2];
    cr_assert_eq(ad_jvp(t, y, 3, in, v, jv), AD_OK, "%s", ad_tape_errmsg(t));
    for (int r = 0; r < 2; r++)
        cr_assert(test_err(jv[r], 3 * s0 * (v0[r] + v2[r]) + 3 * x0[r] * vs) <= 1e-15,
                  "jv[%d] = %g", r, jv[r]);

    /* H v with H_xx = 2s I, H_xs = 2x: both x occurrences get the same */
    double h0[2], hs, h2[2], g0[2], gs, g2[2];
    double *hv[3] = {h0, &hs, h2}, *gr[3] = {g0, &gs, g2};
    cr_assert_eq(ad_hvp(t, f, 3, in, v, hv, gr), AD_OK, "%s", ad_tape_errmsg(t));
    for (int i = 0; i < 2; i++) {
        const double want = 2 * s0 * (v0[i] + v2[i]) + 2 * x0[i] * vs;
        cr_assert(test_err(h0[i], want) <= 1e-15, "hv[0][%d] = %g, want %g", i, h0[i], want);
        cr_assert(h2[i] == h0[i]);
        cr_assert(g0[i] == 2 * s0 * x0[i] && g2[i] == g0[i]);
    }
    cr_assert(test_err(hs, 2 * (x0[0] * (v0[0] + v2[0]) + x0[1] * (v0[1] + v2[1]))) <= 1e-15);
    cr_assert(gs == x0[0] * x0[0] + x0[1] * x0[1]);

    /* the Hessian in (x, x): every block 2s I */
    const ad_node xx[2] = {x, x};
    double H[16];
    cr_assert_eq(ad_hessian(t, f, 2, xx, H), AD_OK, "%s", ad_tape_errmsg(t));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            cr_assert(H[i * 4 + j] == (i % 2 == j % 2 ? 2 * s0 : 0.0), "H[%d][%d] = %g", i, j,
                      H[i * 4 + j]);
    ad_tape_free(t);
}

/* ---- the gradient as a tape ---- */

/* f = x^3 e^x: f' = (3x^2 + x^3) e^x, f'' = (6x + 6x^2 + x^3) e^x,
 * f''' = (6 + 18x + 9x^2 + x^3) e^x -- by nesting ad_gradient_nodes, at
 * the recording point and after a replay at another. */
Test(modes, third_derivative_by_nesting)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_scalar_var(t, 0.7);
    ad_node f = ad_mul(t, ad_pow_const(t, x, 3), ad_exp(t, x));
    ad_node d1, d2, d3;
    cr_assert_eq(ad_gradient_nodes(t, f, ad_nil(), 1, &x, &d1), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_gradient_nodes(t, d1, ad_nil(), 1, &x, &d2), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_gradient_nodes(t, d2, ad_nil(), 1, &x, &d3), AD_OK, "%s", ad_tape_errmsg(t));
    for (int pass = 0; pass < 2; pass++) {
        const double v = pass == 0 ? 0.7 : -1.3, e = exp(v);
        if (pass == 1) {
            cr_assert_eq(ad_set_value(t, x, &v), AD_OK);
            cr_assert_eq(ad_replay(t), AD_OK);
        }
        const double w1 = (3 * v * v + v * v * v) * e, w2 = (6 * v + 6 * v * v + v * v * v) * e;
        const double w3 = (6 + 18 * v + 9 * v * v + v * v * v) * e;
        cr_assert(test_err(ad_scalar_value(t, d1), w1) <= 1e-14, "f'(%g) = %.17g, want %.17g", v,
                  ad_scalar_value(t, d1), w1);
        cr_assert(test_err(ad_scalar_value(t, d2), w2) <= 1e-14, "f''(%g) = %.17g, want %.17g", v,
                  ad_scalar_value(t, d2), w2);
        cr_assert(test_err(ad_scalar_value(t, d3), w3) <= 1e-14, "f'''(%g) = %.17g, want %.17g",
                  v, ad_scalar_value(t, d3), w3);
        /* and the sweep over the recorded third derivative: f'''' */
        cr_assert_eq(ad_backward(t, d3), AD_OK);
        const double w4 = (24 + 36 * v + 12 * v * v + v * v * v) * e;
        cr_assert(test_err(ad_grad(t, x)[0], w4) <= 1e-13, "f''''(%g) = %.17g, want %.17g", v,
                  ad_grad(t, x)[0], w4);
    }
    ad_tape_free(t);
}

/* d/dt of sum(W tanh(A x)) over a vector and a matrix, with a seed node
 * for a vector output, and an input the output does not depend on. */
Test(modes, gradient_nodes_seeds_and_unused_inputs)
{
    ad_tape *t = ad_tape_new(NULL);
    const double A0[6] = {1, 2, -1, 0.5, 0.3, -0.2}, x0[3] = {0.1, -0.4, 0.9};
    ad_node A = ad_variable(t, ad_shape_mat(2, 3), A0);
    ad_node x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node unused = ad_scalar_var(t, 5);
    ad_node y = ad_tanh(t, ad_matvec(t, A, x)); /* (2) */
    const double s0[2] = {0.7, -1.5};
    ad_node seed = ad_constant(t, ad_shape_vec(2), s0);
    const ad_node in[3] = {A, x, unused};
    ad_node G[3];
    cr_assert_eq(ad_gradient_nodes(t, y, seed, 3, in, G), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_backward_seed(t, y, s0), AD_OK);
    for (int i = 0; i < 2; i++) {
        const ad_shape s = ad_node_shape(t, in[i]);
        const ad_shape gs = ad_node_shape(t, G[i]);
        cr_assert(gs.ndim == s.ndim && gs.rows == s.rows && gs.cols == s.cols);
        for (size_t j = 0; j < ad_shape_size(s); j++)
            cr_assert(test_err(ad_value(t, G[i])[j], ad_grad(t, in[i])[j]) <= 1e-15);
    }
    cr_assert(ad_scalar_value(t, G[2]) == 0, "an input y does not depend on: 0");
    ad_tape_free(t);
}

static void sq_vjp_ops(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                       ad_node *dx)
{
    (void)out, (void)c; /* cube: dx = 3 x^2 g */
    dx[0] = ad_mul(t, g, ad_scale(t, ad_square(t, in[0]), 3.0));
}
static const ad_opdef cube_ops = {.name = "cube_ops", .arity = 1, .forward = cube_fwd,
                                  .vjp = cube_vjp, .size = sizeof(ad_opdef), .jvp = cube_jvp,
                                  .hvp = cube_hvp, .vjp_ops = sq_vjp_ops};

Test(modes, gradient_nodes_misuse_and_custom_ops)
{
    ad_tape *t = ad_tape_new(NULL);
    const double v3[3] = {1, 2, 3};
    ad_node a = ad_variable(t, ad_shape_vec(3), v3);
    ad_node y = ad_square(t, a);
    ad_node G[1];
    /* a custom op with vjp_ops: d/da sum(cube(a)) = 3 a^2, and again: 6 a */
    ad_node c = ad_apply(t, &cube_ops, &a, 1, 0);
    ad_node sc = ad_sum(t, c);
    cr_assert_eq(ad_gradient_nodes(t, sc, ad_nil(), 1, &a, G), AD_OK, "%s", ad_tape_errmsg(t));
    for (int i = 0; i < 3; i++)
        cr_assert(ad_value(t, G[0])[i] == 3 * v3[i] * v3[i]);
    ad_node G2[1];
    cr_assert_eq(ad_gradient_nodes(t, ad_sum(t, G[0]), ad_nil(), 1, &a, G2), AD_OK);
    for (int i = 0; i < 3; i++)
        cr_assert(ad_value(t, G2[0])[i] == 6 * v3[i]);

    /* errors are recording errors: sticky */
    cr_assert_eq(ad_gradient_nodes(t, y, ad_nil(), 1, &a, G), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "gradient_nodes: the output is a vector of length 3, "
                                        "not a scalar; pass a seed node of its shape");
    cr_assert(ad_node_is_nil(G[0]));
    cr_assert_eq(ad_tape_status(t), AD_EMISUSE);
    ad_tape_reset(t);

    a = ad_variable(t, ad_shape_vec(3), v3);
    y = ad_square(t, a);
    cr_assert_eq(ad_gradient_nodes(t, y, ad_scalar(t, 1), 1, &a, G), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), "gradient_nodes: the seed is a scalar but the output is "
                                        "a vector of length 3");
    ad_tape_reset(t);

    a = ad_variable(t, ad_shape_vec(3), v3);
    ad_node old = ad_apply(t, &cube_full, &a, 1, 0);
    cr_assert_eq(ad_gradient_nodes(t, ad_sum(t, old), ad_nil(), 1, &a, G), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "gradient_nodes: custom op 'cube' has no vjp in recorded "
                                        "ops (set its descriptor's vjp_ops and size = "
                                        "sizeof(ad_opdef))");
    ad_tape_reset(t);

    a = ad_variable(t, ad_shape_vec(3), v3);
    cr_assert_eq(ad_gradient_nodes(t, a, ad_nil(), 0, &a, G), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "gradient_nodes: no inputs (n < 1)");
    ad_tape_reset(t);
    a = ad_scalar_var(t, 2);
    cr_assert_eq(ad_gradient_nodes(t, a, ad_nil(), 1, &a, NULL), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "gradient_nodes: grads is NULL");
    ad_tape_reset(t);
    a = ad_scalar_var(t, 2);
    cr_assert_eq(ad_gradient_nodes(t, ad_nil(), ad_nil(), 1, &a, G), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "gradient_nodes: operand 1 is the nil node (the result of a failed call)");
    cr_assert_eq(ad_gradient_nodes(NULL, a, ad_nil(), 1, &a, G), AD_EMISUSE);
    ad_tape_free(t);
}

/* Out of memory at every allocation while recording a gradient: the
 * error is reported, nothing leaks. */
Test(modes, gradient_nodes_allocation_failure)
{
    for (long k = 1;; k++) {
        test_alloc al = {0};
        ad_tape_opts o = test_alloc_opts(&al);
        ad_tape *t = ad_tape_new(&o);
        cr_assert_not_null(t);
        g3 g = rec3(t, a0, b0, 0.9);
        const ad_node in[3] = {g.a, g.b, g.s};
        ad_node G[3];
        al.fail_at = al.count + k;
        int st = ad_gradient_nodes(t, g.f, ad_nil(), 3, in, G);
        al.fail_at = 0;
        if (st == AD_OK) {
            ad_tape_free(t);
            cr_assert_eq(al.bytes, 0);
            cr_assert(k > 2);
            break;
        }
        cr_assert_eq(st, AD_ENOMEM, "allocation %ld: %s", k, ad_tape_errmsg(t));
        cr_assert(ad_node_is_nil(G[0]));
        ad_tape_free(t);
        cr_assert_eq(al.bytes, 0, "allocation %ld: leak", k);
    }
}

/* A node the output does not depend on takes no part in the modes'
 * reverse sweep, as in the tape's: w = sum(2x) is recorded after log(x)
 * with x = (0, 1), and log's local derivative at 0 is infinite. Its vjp
 * used to run with adjoint 0 and put 0 * inf = NaN into x's adjoint,
 * so reverse-mode Jacobians, ad_hvp and ad_hessian came out NaN (found
 * by tests/fuzz/fuzz_api.c). */
Test(modes, a_branch_the_output_does_not_use_stays_out_of_reverse_sweeps)
{
    ad_tape *t = ad_tape_new(NULL);
    const double x0[2] = {0.0, 1.0};
    ad_node x = ad_variable(t, ad_shape_vec(2), x0);
    ad_node unused = ad_log(t, x);
    ad_node w = ad_sum(t, ad_scale(t, x, 2.0));
    cr_assert(!ad_node_is_nil(unused));
    double J[2], g[2], hv[2], H[4];
    const double v[2] = {1, -1};
    const double *vp[1] = {v};
    double *hvp[1] = {hv}, *gp[1] = {g};
    cr_assert_eq(ad_jacobian(t, w, 1, &x, J, AD_JAC_REVERSE), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert(J[0] == 2 && J[1] == 2, "J = (%g, %g)", J[0], J[1]);
    cr_assert_eq(ad_hvp(t, w, 1, &x, vp, hvp, gp), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert(g[0] == 2 && g[1] == 2, "grad = (%g, %g)", g[0], g[1]);
    cr_assert(hv[0] == 0 && hv[1] == 0, "H v = (%g, %g)", hv[0], hv[1]);
    cr_assert_eq(ad_hessian(t, w, 1, &x, H), AD_OK);
    for (int i = 0; i < 4; i++)
        cr_assert(H[i] == 0, "H[%d] = %g", i, H[i]);
    /* forward over reverse by hand: the adjoint tangents of x */
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    cr_assert_eq(ad_set_tangent(t, x, v), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK);
    cr_assert_eq(ad_backward_tangent(t, w, NULL), AD_OK);
    const double *gt = ad_grad_tangent(t, x);
    cr_assert(gt && gt[0] == 0 && gt[1] == 0);
    ad_tape_free(t);
}

/* Forward mode gives a node that no tangent reached zero tangents, inline
 * scalars as tensors: y = x^2 + sqrt(c) with c a constant 0, whose local
 * derivative there is infinite. The inline rule used to run anyway and
 * make 0 * inf = NaN of the zero tangent, so ad_jacobian (forward), ad_jvp
 * and ad_forward gave NaN for dy/dx = 2x (found by tests/fuzz/fuzz_api.c). */
Test(modes, a_node_no_tangent_reached_has_zero_tangents)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_scalar_var(t, 2.0), c = ad_scalar(t, 0.0);
    ad_node y = ad_add(t, ad_square(t, x), ad_sqrt(t, c));
    ad_node z = ad_mul(t, ad_log(t, c), ad_scalar(t, 0.5)); /* reached by no tangent */
    double J = 0, jv = 0;
    const double v = 1;
    const double *vp[1] = {&v};
    cr_assert_eq(ad_jacobian(t, y, 1, &x, &J, AD_JAC_FORWARD), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert(J == 4, "forward dy/dx = %g", J);
    cr_assert_eq(ad_jvp(t, y, 1, &x, vp, &jv), AD_OK);
    cr_assert(jv == 4, "jvp = %g", jv);
    cr_assert_eq(ad_tangents(t, 2), AD_OK);
    const double tx[2] = {1, -3};
    cr_assert_eq(ad_set_tangent(t, x, tx), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK);
    const double *ty = ad_tangent(t, y), *tz = ad_tangent(t, z);
    cr_assert(ty && ty[0] == 4 && ty[1] == -12, "tangents of y: %g %g", ty[0], ty[1]);
    cr_assert(tz && tz[0] == 0 && tz[1] == 0, "tangents of z: %g %g", tz[0], tz[1]);
    ad_tape_free(t);
}
