/* test_custom_op.c -- ops defined by the caller: their own descriptor
 * (shape rule, forward, vjp, user data), registered in an ad_registry,
 * recorded by ad_apply_named and ad_apply, swept like a built-in. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- cube: y = k x^3 + c, elementwise; k comes from the user data, c is
 * the node constant. dx += 3 k x^2 dy. ---- */

typedef struct cube_ud {
    double k;
    int forwards, vjps; /* calls, to see that ud reaches the kernels */
} cube_ud;

static void cube_fwd(const ad_call *call)
{
    cube_ud *u = call->ud;
    u->forwards++;
    const double *x = call->in[0].val;
    for (size_t i = 0; i < ad_shape_size(call->out.shape); i++)
        call->out.val[i] = u->k * x[i] * x[i] * x[i] + call->c; /* y = k x^3 + c */
}
static void cube_vjp(const ad_call *call)
{
    cube_ud *u = call->ud;
    u->vjps++;
    const double *x = call->in[0].val;
    if (call->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(call->out.shape); i++)
            call->in[0].grad[i] += 3.0 * u->k * x[i] * x[i] * call->out.grad[i];
}

static cube_ud cube_data = {2.0, 0, 0};
static const ad_opdef cube = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = &cube_data};

/* ---- rowscale: B = A * s (row i scaled by s_i); A (m x n), s (m).
 * dA[i,j] += dB[i,j] s_i;  ds_i += sum_j dB[i,j] A[i,j] ---- */

static int rowscale_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                          size_t cap)
{
    (void)nin, (void)c;
    if (in[0].ndim != 2) {
        snprintf(msg, cap, "A must be a matrix");
        return AD_ESHAPE;
    }
    if (in[1].ndim != 1 || in[1].rows != in[0].rows) {
        snprintf(msg, cap, "A is %ux%u but s has length %u", (unsigned)in[0].rows,
                 (unsigned)in[0].cols, (unsigned)in[1].rows);
        return AD_ESHAPE;
    }
    *out = in[0];
    return AD_OK;
}
static void rowscale_fwd(const ad_call *k)
{
    const double *A = k->in[0].val, *s = k->in[1].val;
    const size_t m = k->in[0].shape.rows, n = k->in[0].shape.cols;
    for (size_t i = 0; i < m; i++) /* A: (m, n), s: (m) */
        for (size_t j = 0; j < n; j++)
            k->out.val[i * n + j] = A[i * n + j] * s[i];
}
static void rowscale_vjp(const ad_call *k)
{
    const double *A = k->in[0].val, *s = k->in[1].val, *gB = k->out.grad;
    double *gA = k->in[0].grad, *gs = k->in[1].grad;
    const size_t m = k->in[0].shape.rows, n = k->in[0].shape.cols;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            if (gA)
                gA[i * n + j] += gB[i * n + j] * s[i];
            if (gs)
                gs[i] += gB[i * n + j] * A[i * n + j];
        }
}
static const ad_opdef rowscale = {.name = "rowscale", .arity = 2, .shape = rowscale_shape, .forward = rowscale_fwd, .vjp = rowscale_vjp, .ud = NULL};

/* ---- fma3: d = a b + c, three operands of one shape (arity 3) ---- */

static int fma3_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)c;
    for (int i = 1; i < nin; i++)
        if (in[i].ndim != in[0].ndim || in[i].rows != in[0].rows || in[i].cols != in[0].cols) {
            snprintf(msg, cap, "operand %d differs in shape from operand 1", i + 1);
            return AD_ESHAPE;
        }
    *out = in[0];
    return AD_OK;
}
static void fma3_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[1].val[i] + k->in[2].val[i];
}
static void fma3_vjp(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++) {
        const double g = k->out.grad[i];
        if (k->in[0].grad)
            k->in[0].grad[i] += g * k->in[1].val[i];
        if (k->in[1].grad)
            k->in[1].grad[i] += g * k->in[0].val[i];
        if (k->in[2].grad)
            k->in[2].grad[i] += g;
    }
}
static const ad_opdef fma3 = {.name = "fma3", .arity = 3, .shape = fma3_shape, .forward = fma3_fwd, .vjp = fma3_vjp, .ud = NULL};

/* ---- helpers ---- */

static ad_registry *new_registry(void)
{
    ad_registry *reg = ad_registry_new(NULL, NULL);
    cr_assert_not_null(reg);
    cr_assert_eq(ad_registry_add(reg, &cube), AD_OK, "%s", ad_registry_errmsg(reg));
    cr_assert_eq(ad_registry_add(reg, &rowscale), AD_OK, "%s", ad_registry_errmsg(reg));
    cr_assert_eq(ad_registry_add(reg, &fma3), AD_OK, "%s", ad_registry_errmsg(reg));
    cr_assert_str_eq(ad_registry_errmsg(reg), "", "no message after a success");
    return reg;
}

static void fill(test_rng *g, double *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = test_uniform(g, lo, hi);
}

#define GRAD_TOL 1e-6

/* ---- finite differences ---- */

static ad_node g_cube_named(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    return ad_apply_named(t, "cube", in, 1, 0.5);
}
static ad_node g_cube_apply(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    return ad_apply(t, &cube, in, 1, -1.0);
}
static ad_node g_rowscale(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    return ad_apply_named(t, "rowscale", in, 2, 0);
}
static ad_node g_fma3(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    return ad_apply(t, &fma3, in, 3, 0);
}
static ad_node g_fma3_alias(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    ad_node x[3] = {in[0], in[0], in[0]}; /* x x + x */
    return ad_apply_named(t, "fma3", x, 3, 0);
}

Test(custom_op, finite_differences_on_every_shape)
{
    ad_registry *reg = new_registry();
    ad_tape_opts o = {NULL, NULL, reg};
    test_rng g = {2024};
    double x[64];
    char msg[256];
    struct {
        const char *what;
        test_graph_fn f;
        int n;
        ad_shape s[3];
    } cases[] = {
        {"cube, inline scalar operand", g_cube_named, 1, {ad_shape_scalar()}},
        {"cube, vector of 7", g_cube_named, 1, {ad_shape_vec(7)}},
        {"cube, 3x5 via ad_apply", g_cube_apply, 1, {ad_shape_mat(3, 5)}},
        {"cube, 1x1", g_cube_apply, 1, {ad_shape_mat(1, 1)}},
        {"rowscale, 3x4 by 3", g_rowscale, 2, {ad_shape_mat(3, 4), ad_shape_vec(3)}},
        {"rowscale, 1x1 by 1", g_rowscale, 2, {ad_shape_mat(1, 1), ad_shape_vec(1)}},
        {"fma3, vectors of 6", g_fma3, 3, {ad_shape_vec(6), ad_shape_vec(6), ad_shape_vec(6)}},
        {"fma3, inline scalars", g_fma3, 3,
         {ad_shape_scalar(), ad_shape_scalar(), ad_shape_scalar()}},
        {"fma3, one operand three times", g_fma3_alias, 1, {ad_shape_mat(2, 3)}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = 0;
        for (int i = 0; i < cases[c].n; i++)
            n += ad_shape_size(cases[c].s[i]);
        fill(&g, x, n, -1.5, 1.5);
        double e = test_grad_check(cases[c].f, NULL, cases[c].s, cases[c].n, x, 1e-5, &o, msg,
                                   sizeof msg);
        cr_expect_leq(e, GRAD_TOL, "%s: %s (error %g)", cases[c].what, msg, e);
    }
    ad_registry_free(reg);
}

/* The checker itself fails a wrong vjp (dx += 3.03 k x^2 dy). */
static void badcube_vjp(const ad_call *call)
{
    const cube_ud *u = call->ud;
    const double *x = call->in[0].val;
    for (size_t i = 0; i < ad_shape_size(call->out.shape); i++)
        call->in[0].grad[i] += 3.03 * u->k * x[i] * x[i] * call->out.grad[i];
}
static const ad_opdef badcube = {.name = "badcube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = badcube_vjp, .ud = &cube_data};
static ad_node g_badcube(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    return ad_apply(t, &badcube, in, 1, 0);
}

Test(custom_op, gradient_check_catches_a_wrong_vjp)
{
    const ad_shape s = ad_shape_vec(4);
    const double x[4] = {0.5, -1, 1.5, 0.75};
    char msg[256];
    double e = test_grad_check(g_badcube, NULL, &s, 1, x, 1e-5, NULL, msg, sizeof msg);
    cr_assert_gt(e, 1e-3, "a 1%% error in a vjp went unnoticed (error %g)", e);
    cr_assert_neq(msg[0], '\0');
}

/* A graph mixing custom and built-in ops, inline scalars and tensors:
 *   B = rowscale(tanh(A W), cube(s)),  u = fma3(B, B, C)
 *   J = sum(u) * cube(a) + sigmoid(a b) */
static ad_node g_mixed(ad_tape *t, const ad_node *in, void *ud)
{
    (void)ud;
    ad_node A = in[0], W = in[1], s = in[2], C = in[3], a = in[4], b = in[5];
    ad_node cs = ad_apply_named(t, "cube", &s, 1, 0.0);
    ad_node rs[2] = {ad_tanh(t, ad_matmul(t, A, W)), cs};
    ad_node B = ad_apply_named(t, "rowscale", rs, 2, 0);
    ad_node f[3] = {B, B, C};
    ad_node u = ad_apply(t, &fma3, f, 3, 0);
    ad_node ca = ad_apply(t, &cube, &a, 1, 0.25); /* an EXT scalar from an inline one */
    return ad_add(t, ad_mul(t, ad_sum(t, u), ca), ad_sigmoid(t, ad_mul(t, a, b)));
}

Test(custom_op, mixed_with_builtins)
{
    ad_registry *reg = new_registry();
    ad_tape_opts o = {NULL, NULL, reg};
    const ad_shape s[6] = {ad_shape_mat(3, 4), ad_shape_mat(4, 2), ad_shape_vec(3),
                           ad_shape_mat(3, 2), ad_shape_scalar(), ad_shape_scalar()};
    double x[64];
    test_rng g = {77};
    fill(&g, x, 12 + 8 + 3 + 6 + 2, -1, 1);
    char msg[256];
    double e = test_grad_check(g_mixed, NULL, s, 6, x, 1e-5, &o, msg, sizeof msg);
    cr_assert_leq(e, GRAD_TOL, "mixed graph: %s (error %g)", msg, e);
    ad_registry_free(reg);
}

/* A custom op records and sweeps like a built-in: replay runs its forward,
 * the sweep its vjp once, and introspection reports it. */
Test(custom_op, records_and_sweeps_like_a_builtin)
{
    ad_registry *reg = new_registry();
    ad_tape_opts o = {NULL, NULL, reg};
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    cube_data.forwards = cube_data.vjps = 0;
    const double v0[3] = {1, -2, 0.5};
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node y = ad_apply_named(t, "cube", &v, 1, 1.0); /* 2 v^3 + 1 */
    ad_node J = ad_sum(t, y);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(cube_data.forwards, 1, "forward runs at recording");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_value(t, y)[i], 2 * v0[i] * v0[i] * v0[i] + 1);
    cr_assert_eq(ad_node_op(t, y), &cube, "the node references the caller's descriptor");
    cr_assert_eq(ad_node_const(t, y), 1.0);
    ad_node in[AD_MAX_ARITY];
    cr_assert_eq(ad_node_inputs(t, y, in), 1);
    cr_assert_eq(in[0].id_, v.id_);
    cr_assert_eq(ad_node_requires_grad(t, y), 1);

    cr_assert_eq(ad_backward(t, J), AD_OK);
    cr_assert_eq(cube_data.vjps, 1);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_grad(t, v)[i], 6 * v0[i] * v0[i]);

    const double v1[3] = {0.5, 1, -1};
    cr_assert_eq(ad_set_value(t, v, v1), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(cube_data.forwards, 2, "replay runs the custom forward");
    cr_assert_eq(ad_backward(t, J), AD_OK);
    cr_assert_eq(cube_data.vjps, 2);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ad_value(t, y)[i], 2 * v1[i] * v1[i] * v1[i] + 1);
        cr_assert_eq(ad_grad(t, v)[i], 6 * v1[i] * v1[i]);
    }

    /* On an inline scalar operand, through replay too: J2 = cube(a) a. */
    ad_node a = ad_scalar_var(t, 1.5);
    ad_node J2 = ad_mul(t, ad_apply(t, &cube, &a, 1, 0), a); /* 2 a^4 */
    const double a1 = -0.5;
    cr_assert_eq(ad_set_value(t, a, &a1), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_backward(t, J2), AD_OK);
    cr_assert_eq(ad_scalar_value(t, J2), 2 * a1 * a1 * a1 * a1);
    cr_assert_eq(ad_grad(t, a)[0], 8 * a1 * a1 * a1, "d(2 a^4)/da = 8 a^3");

    /* On constants only, the vjp is never called and there is no grad. */
    ad_node c = ad_constant(t, ad_shape_vec(3), v0);
    ad_node yc = ad_apply(t, &cube, &c, 1, 0);
    cr_assert_null(ad_grad(t, yc));
    const int vjps = cube_data.vjps;
    cr_assert_eq(ad_backward(t, ad_sum(t, yc)), AD_OK);
    cr_assert_eq(cube_data.vjps, vjps);

    /* A three-operand node reports its three inputs. */
    ad_node f[3] = {v, c, v};
    ad_node d = ad_apply_named(t, "fma3", f, 3, 0);
    cr_assert_eq(ad_node_inputs(t, d, in), 3);
    cr_assert(in[0].id_ == v.id_ && in[1].id_ == c.id_ && in[2].id_ == v.id_);
    ad_tape_free(t);
    ad_registry_free(reg);
}

/* Two tapes can share one registry. */
Test(custom_op, registry_shared_by_tapes)
{
    ad_registry *reg = new_registry();
    ad_tape_opts o = {NULL, NULL, reg};
    ad_tape *t1 = ad_tape_new(&o), *t2 = ad_tape_new(&o);
    cr_assert(t1 && t2);
    ad_node a = ad_scalar_var(t1, 3.0), b = ad_scalar_var(t2, -1.0);
    ad_node ya = ad_apply_named(t1, "cube", &a, 1, 0), yb = ad_apply_named(t2, "cube", &b, 1, 0);
    cr_assert_eq(ad_scalar_value(t1, ya), 54.0);
    cr_assert_eq(ad_scalar_value(t2, yb), -2.0);
    ad_tape_free(t1);
    ad_tape_free(t2);
    ad_registry_free(reg);
}

/* ---- the registry ---- */

Test(custom_op, registry_finds_builtins_and_custom_ops)
{
    ad_registry *reg = new_registry();
    for (size_t i = 0; i < ad_builtin_count(); i++) {
        const ad_opdef *d = ad_builtin_op(i);
        cr_assert_eq(ad_registry_find(reg, d->name), d, "registry: built-in %s", d->name);
        cr_assert_eq(ad_registry_find(NULL, d->name), d, "built-ins: %s", d->name);
        cr_assert(d->arity >= 1 && d->arity <= AD_MAX_ARITY, "%s: arity %d", d->name, d->arity);
        cr_assert(d->forward && d->vjp, "%s: a built-in without kernels", d->name);
    }
    cr_assert_eq(ad_registry_find(reg, "cube"), &cube);
    cr_assert_eq(ad_registry_find(reg, "rowscale"), &rowscale);
    cr_assert_null(ad_registry_find(NULL, "cube"), "no registry: built-ins only");
    cr_assert_null(ad_registry_find(reg, "nope"));
    cr_assert_null(ad_registry_find(reg, "leaf"), "the leaf is not an op one can apply");
    cr_assert_null(ad_registry_find(reg, NULL));
    cr_assert_null(ad_registry_find(reg, ""));
    cr_assert_null(ad_registry_find(reg, "Add"), "names are case-sensitive");

    /* A tape without a registry knows only built-ins. */
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node y = ad_apply_named(t, "square", &x, 1, 0);
    cr_assert_eq(ad_scalar_value(t, y), 4.0);
    cr_assert(ad_node_is_nil(ad_apply_named(t, "cube", &x, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_ENOTFOUND);
    cr_assert_str_eq(ad_tape_errmsg(t), "apply: unknown op 'cube'");
    ad_tape_free(t);
    ad_registry_free(reg);
}

/* Many custom ops: the registry's hash table grows. */
Test(custom_op, registry_holds_many_ops)
{
    static char names[300][16];
    static ad_opdef defs[300];
    ad_registry *reg = ad_registry_new(NULL, NULL);
    cr_assert_not_null(reg);
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof names[i], "op%d", i);
        defs[i] = cube;
        defs[i].name = names[i];
        cr_assert_eq(ad_registry_add(reg, &defs[i]), AD_OK, "%s", ad_registry_errmsg(reg));
    }
    for (int i = 0; i < 300; i++)
        cr_assert_eq(ad_registry_find(reg, names[i]), &defs[i]);
    cr_assert_eq(ad_registry_find(reg, "matmul"), ad_registry_find(NULL, "matmul"));
    ad_registry_free(reg);
}

static void expect_reg_error(ad_registry *reg, const ad_opdef *def, int status, const char *msg)
{
    cr_assert_eq(ad_registry_add(reg, def), status, "status for '%s'", msg);
    cr_assert_str_eq(ad_registry_errmsg(reg), msg);
}

Test(custom_op, duplicate_name_is_eexist)
{
    ad_registry *reg = new_registry();
    static const ad_opdef cube2 = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef add2 = {.name = "add", .arity = 2, .shape = NULL, .forward = fma3_fwd, .vjp = fma3_vjp, .ud = NULL};
    expect_reg_error(reg, &cube2, AD_EEXIST,
                     "registry_add: an op named 'cube' is already registered");
    expect_reg_error(reg, &cube, AD_EEXIST,
                     "registry_add: an op named 'cube' is already registered");
    expect_reg_error(reg, &add2, AD_EEXIST,
                     "registry_add: an op named 'add' is already registered");
    /* The original stays. */
    cr_assert_eq(ad_registry_find(reg, "cube"), &cube);
    cr_assert_eq(ad_registry_find(reg, "add"), ad_registry_find(NULL, "add"));
    /* A success clears the message. */
    static const ad_opdef other = {.name = "other", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    cr_assert_eq(ad_registry_add(reg, &other), AD_OK);
    cr_assert_str_eq(ad_registry_errmsg(reg), "");
    ad_registry_free(reg);
}

Test(custom_op, invalid_descriptor_is_emisuse)
{
    ad_registry *reg = new_registry();
    static const ad_opdef noname = {.name = NULL, .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef empty = {.name = "", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef ar0 = {.name = "ar0", .arity = 0, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef ar5 = {.name = "ar5", .arity = AD_MAX_ARITY + 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef arneg = {.name = "arneg", .arity = -1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef nofwd = {.name = "nofwd", .arity = 1, .shape = NULL, .forward = NULL, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef novjp = {.name = "novjp", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = NULL, .ud = NULL};
    expect_reg_error(reg, NULL, AD_EMISUSE, "registry_add: op descriptor is NULL");
    expect_reg_error(reg, &noname, AD_EMISUSE, "registry_add: op has no name");
    expect_reg_error(reg, &empty, AD_EMISUSE, "registry_add: op has no name");
    expect_reg_error(reg, &ar0, AD_EMISUSE, "registry_add: op 'ar0' has an arity outside 1..4");
    expect_reg_error(reg, &ar5, AD_EMISUSE, "registry_add: op 'ar5' has an arity outside 1..4");
    expect_reg_error(reg, &arneg, AD_EMISUSE,
                     "registry_add: op 'arneg' has an arity outside 1..4");
    expect_reg_error(reg, &nofwd, AD_EMISUSE,
                     "registry_add: op 'nofwd' needs both forward and vjp");
    expect_reg_error(reg, &novjp, AD_EMISUSE,
                     "registry_add: op 'novjp' needs both forward and vjp");
    cr_assert_null(ad_registry_find(reg, "nofwd"), "a rejected op is not added");
    cr_assert_null(ad_registry_find(reg, "ar5"));
    cr_assert_eq(ad_registry_add(NULL, &cube), AD_EMISUSE);
    cr_assert_str_eq(ad_registry_errmsg(NULL), "registry is NULL");
    ad_registry_free(NULL); /* harmless */

    /* ad_apply checks the descriptor too. */
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 1.0);
    cr_assert(ad_node_is_nil(ad_apply(t, &nofwd, &x, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "apply: invalid op descriptor (nofwd)");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    cr_assert(ad_node_is_nil(ad_apply(t, &ar5, &x, 1, 0)));
    cr_assert_str_eq(ad_tape_errmsg(t), "apply: invalid op descriptor (ar5)");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    cr_assert(ad_node_is_nil(ad_apply(t, &noname, &x, 1, 0)));
    cr_assert_str_eq(ad_tape_errmsg(t), "apply: invalid op descriptor (unnamed)");
    ad_tape_reset(t);
    x = ad_scalar_var(t, 1.0);
    cr_assert(ad_node_is_nil(ad_apply(t, NULL, &x, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "apply: invalid op descriptor (unnamed)");
    ad_tape_free(t);
    ad_registry_free(reg);
}

/* ---- shape rules ---- */

static int no_reason_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                           size_t cap)
{
    (void)in, (void)nin, (void)c, (void)out, (void)msg, (void)cap;
    return AD_ESHAPE; /* rejects without a reason */
}
static int bad_ndim_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                          size_t cap)
{
    (void)in, (void)nin, (void)c, (void)msg, (void)cap;
    out->rows = 2, out->cols = 2, out->ndim = 3;
    return AD_OK;
}
static int empty_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                       size_t cap)
{
    (void)in, (void)nin, (void)c, (void)msg, (void)cap;
    *out = ad_shape_vec(0);
    return AD_OK;
}
static int long_reason_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg,
                             size_t cap)
{
    (void)in, (void)nin, (void)c, (void)out;
    memset(msg, 'x', cap - 1); /* fills the whole buffer it was given */
    msg[cap - 1] = '\0';
    return AD_ESHAPE;
}

Test(custom_op, shape_rule_rejection_is_eshape_with_name)
{
    ad_registry *reg = new_registry();
    ad_tape_opts o = {NULL, NULL, reg};
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    const double A[12] = {0};
    ad_node An = ad_variable(t, ad_shape_mat(3, 4), A);
    ad_node s5 = ad_variable(t, ad_shape_vec(5), A);
    ad_node before = ad_sum(t, An);
    ad_node in[2] = {An, s5};
    cr_assert(ad_node_is_nil(ad_apply_named(t, "rowscale", in, 2, 0)));
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), "rowscale: A is 3x4 but s has length 5");
    cr_assert_eq(ad_scalar_value(t, before), 0.0, "earlier nodes stay intact");
    size_t len = ad_tape_len(t);
    cr_assert(ad_node_is_nil(ad_apply(t, &cube, &An, 1, 0)), "sticky");
    cr_assert_eq(ad_tape_len(t), len);

    ad_tape_reset(t);
    ad_node v = ad_variable(t, ad_shape_vec(3), A);
    ad_node f[3] = {v, v, ad_variable(t, ad_shape_vec(4), A)};
    cr_assert(ad_node_is_nil(ad_apply(t, &fma3, f, 3, 0)));
    cr_assert_str_eq(ad_tape_errmsg(t), "fma3: operand 3 differs in shape from operand 1");

    static const ad_opdef noreason = {.name = "noreason", .arity = 1, .shape = no_reason_shape, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    cr_assert(ad_node_is_nil(ad_apply(t, &noreason, &v, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), "noreason: operand shapes do not fit");

    static const ad_opdef badndim = {.name = "badndim", .arity = 1, .shape = bad_ndim_shape, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    cr_assert(ad_node_is_nil(ad_apply(t, &badndim, &v, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "badndim: invalid shape (ndim 3, 2x2)");

    static const ad_opdef empty = {.name = "emptyout", .arity = 1, .shape = empty_shape, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    cr_assert(ad_node_is_nil(ad_apply(t, &empty, &v, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), "emptyout: the shape is empty (a vector of length 0)");

    /* A reason as long as the buffer: truncated, never overflowing. */
    static const ad_opdef longr = {.name = "longreason", .arity = 1, .shape = long_reason_shape, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    cr_assert(ad_node_is_nil(ad_apply(t, &longr, &v, 1, 0)));
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    cr_assert_eq(strncmp(ad_tape_errmsg(t), "longreason: xxxx", 16), 0, "%s", ad_tape_errmsg(t));

    /* Wrong operand count through either entry point. */
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    ad_node two[2] = {v, v};
    cr_assert(ad_node_is_nil(ad_apply_named(t, "cube", two, 2, 0)));
    cr_assert_eq(ad_tape_status(t), AD_EMISUSE);
    cr_assert_str_eq(ad_tape_errmsg(t), "cube: takes 1 operand, got 2");
    ad_tape_reset(t);
    v = ad_variable(t, ad_shape_vec(3), A);
    cr_assert(ad_node_is_nil(ad_apply(t, &fma3, &v, 1, 0)));
    cr_assert_str_eq(ad_tape_errmsg(t), "fma3: takes 3 operands, got 1");
    ad_tape_free(t);
    ad_registry_free(reg);
}

/* ad_apply of a built-in elementwise op with a constant it does not take:
 * the node keeps none, on tensors as on inline scalars (found by
 * fuzz_api: the tensor form used to report the constant passed). */
Test(custom_op, builtin_without_constant_keeps_none)
{
    ad_tape *t = ad_tape_new(NULL);
    const double v[3] = {1, 2, 3};
    const ad_opdef *add = ad_registry_find(NULL, "add");
    cr_assert_not_null(add);
    ad_node in[2] = {ad_variable(t, ad_shape_vec(3), v), ad_variable(t, ad_shape_vec(3), v)};
    ad_node s[2] = {ad_scalar_var(t, 1), ad_scalar_var(t, 2)};
    ad_node y = ad_apply(t, add, in, 2, 5.0), z = ad_apply(t, add, s, 2, 5.0);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_node_const(t, y), 0.0);
    cr_assert_eq(ad_node_const(t, z), 0.0);
    cr_assert_eq(ad_value(t, y)[2], 6.0);
    ad_tape_free(t);
}
