/* test_codegen.c -- ad_codegen: generated C compiled with the system
 * compiler during the run (found at configure time: AD_TEST_CC) and
 * compared with the tape, every mode, every built-in op.
 *
 * Each graph is generated into one file (many ops per file, so the run
 * compiles a handful of files), compiled with -Werror into a shared
 * object and loaded with dlopen; its functions are then compared with the
 * tape's own forward, reverse sweep and drivers: 1e-13 relative in
 * double (test_err: relative above 1, absolute below), 1e-5 in float. */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */
#include "support.h"

#include <autodiff/autodiff.h>
#include <autodiff/codegen.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef AD_TEST_TMP
#define AD_TEST_TMP "codegen_tmp"
#endif

#define TOL 1e-13

typedef int (*fwd_fn)(const double *const *, double *, double *);
typedef int (*vjp_fn)(const double *const *, const double *, double *, double *const *, double *);
typedef int (*grad_fn)(const double *const *, double *, double *const *, double *);
typedef int (*jvp_fn)(const double *const *, const double *const *, double *, double *, double *);
typedef int (*hvp_fn)(const double *const *, const double *const *, double *, double *const *,
                      double *const *, double *);
typedef int (*jac_fn)(const double *const *, double *, double *, double *);
typedef unsigned long (*ws_fn)(void);

static void need_cc(void)
{
#ifndef AD_TEST_CC
    cr_skip_test("no C compiler found at configure time (cc, gcc, clang): generated code is "
                 "not compiled, so this test does not run");
#endif
}

/* Generates prefix.c and prefix.h in AD_TEST_TMP. */
static int generate(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix,
                    unsigned what, int use_float, size_t max_stmts)
{
    mkdir(AD_TEST_TMP, 0777);
    char cpath[512], hpath[512], hname[64];
    snprintf(cpath, sizeof cpath, "%s/%s.c", AD_TEST_TMP, prefix);
    snprintf(hpath, sizeof hpath, "%s/%s.h", AD_TEST_TMP, prefix);
    snprintf(hname, sizeof hname, "%s.h", prefix);
    FILE *c = fopen(cpath, "w"), *h = fopen(hpath, "w");
    cr_assert(c && h, "cannot write in %s", AD_TEST_TMP);
    ad_codegen_opts o;
    memset(&o, 0, sizeof o);
    o.prefix = prefix;
    o.what = what;
    o.use_float = use_float;
    o.max_stmts = max_stmts;
    o.header_name = hname;
    const int st = ad_codegen(t, out, n, in, &o, c, h);
    fclose(c);
    fclose(h);
    return st;
}

/* An extra source compiled with the generated one (custom ops' functions),
 * or NULL. */
static const char *extra_src;

/* Generates, compiles (-Werror) and loads. */
static void *build(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix,
                   unsigned what, int use_float, size_t max_stmts)
{
    need_cc();
#ifdef AD_TEST_CC
    const int st = generate(t, out, n, in, prefix, what, use_float, max_stmts);
    cr_assert_eq(st, AD_OK, "ad_codegen: %s", ad_tape_errmsg(t));
    char cmd[2048], so[512];
    snprintf(so, sizeof so, "%s/%s.so", AD_TEST_TMP, prefix);
    snprintf(cmd, sizeof cmd,
             "%s -std=c99 -O0 -Wall -Wextra -pedantic -Werror -shared -fPIC -o %s %s/%s.c %s -lm",
             AD_TEST_CC, so, AD_TEST_TMP, prefix, extra_src ? extra_src : "");
    cr_assert_eq(system(cmd), 0, "compiling the generated code failed: %s", cmd);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    cr_assert(h, "dlopen: %s", dlerror());
    return h;
#else
    (void)t, (void)out, (void)n, (void)in, (void)prefix, (void)what, (void)use_float,
        (void)max_stmts;
    return NULL;
#endif
}

/* A generated function (POSIX: dlsym's object pointer holds a function). */
typedef void (*any_fn)(void);
static any_fn sym(void *so, const char *prefix, const char *name)
{
    char s[128];
    snprintf(s, sizeof s, "%s_%s", prefix, name);
    void *p = dlsym(so, s);
    cr_assert(p, "no symbol %s", s);
    any_fn f;
    memcpy(&f, &p, sizeof f);
    return f;
}

static void close_to(const double *got, const double *want, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i]) && isnan(got[i]))
            continue;
        cr_assert(test_err(got[i], want[i]) <= tol, "%s[%zu]: generated %.17g, tape %.17g", what,
                  i, got[i], want[i]);
    }
}

/* Every generated function of so (made from (t, out, in)) against the
 * tape at the leaves' current values: forward, vjp (random seed), jvp
 * (random direction), jacobian, and for a scalar output gradient and hvp
 * -- as far as what asks. Each generated function must return flag, each
 * tape call status (or AD_OK where it does not evaluate). */
static void check_so(void *so, ad_tape *t, ad_node out, int n, const ad_node *in,
                     const char *prefix, unsigned what, int flag, int status)
{
    const size_t M = ad_shape_size(ad_node_shape(t, out));
    size_t N = 0, sz[16];
    const double *x[16];
    cr_assert(n <= 16);
    for (int k = 0; k < n; k++) {
        sz[k] = ad_shape_size(ad_node_shape(t, in[k]));
        x[k] = ad_value(t, in[k]);
        N += sz[k];
    }
    const unsigned long W = ((ws_fn)sym(so, prefix, "work_size"))();
    double *w = malloc(W * sizeof *w), *y = malloc(M * sizeof *y), *want = malloc(M * sizeof *want);
    double *flat = malloc(N * sizeof *flat), *flat2 = malloc(N * sizeof *flat2);
    double *grad[16], *tg[16];
    test_rng r = {0x5eed + M + N};
    cr_assert_eq(ad_replay(t), status, "%s", ad_tape_errmsg(t));
    memcpy(want, ad_value(t, out), M * sizeof *want);

    cr_assert_eq(((fwd_fn)sym(so, prefix, "forward"))(x, y, w), flag);
    close_to(y, want, M, TOL, "forward");

    /* vjp with a random seed */
    double *seed = malloc(M * sizeof *seed);
    for (size_t i = 0; i < M; i++)
        seed[i] = test_signed(&r, 0.5, 1.5);
    size_t o = 0;
    for (int k = 0; k < n; k++, o += sz[k - 1])
        grad[k] = flat + o;
    memset(y, 0, M * sizeof *y);
    if (what & AD_CODEGEN_VJP) {
        cr_assert_eq(((vjp_fn)sym(so, prefix, "vjp"))(x, seed, y, grad, w), flag);
        close_to(y, want, M, TOL, "vjp's value");
        cr_assert_eq(ad_backward_seed(t, out, seed), AD_OK, "%s", ad_tape_errmsg(t));
        for (int k = 0; k < n; k++) {
            const double *gt = ad_grad(t, in[k]);
            cr_assert(gt);
            close_to(grad[k], gt, sz[k], TOL, "vjp");
        }
    }

    /* jvp along a random direction */
    double *v[16], *vflat = malloc(N * sizeof *vflat), *jv = malloc(M * sizeof *jv);
    double *jw = malloc(M * sizeof *jw);
    o = 0;
    for (int k = 0; k < n; k++, o += sz[k - 1])
        v[k] = vflat + o;
    for (size_t i = 0; i < N; i++)
        vflat[i] = test_signed(&r, 0.5, 1.5);
    if (what & AD_CODEGEN_JVP) {
        cr_assert_eq(((jvp_fn)sym(so, prefix, "jvp"))(x, (const double *const *)v, y, jv, w),
                     flag);
        cr_assert_eq(ad_jvp(t, out, n, in, (const double *const *)v, jw), status, "%s",
                     ad_tape_errmsg(t));
        close_to(jv, jw, M, TOL, "jvp");
    }
    if (what & AD_CODEGEN_JACOBIAN) {
        double *J = malloc(M * N * sizeof *J), *Jt = malloc(M * N * sizeof *Jt);
        cr_assert_eq(((jac_fn)sym(so, prefix, "jacobian"))(x, y, J, w), flag);
        close_to(y, want, M, TOL, "jacobian's value");
        cr_assert_eq(ad_jacobian(t, out, n, in, Jt, AD_JAC_REVERSE), status, "%s",
                     ad_tape_errmsg(t));
        close_to(J, Jt, M * N, TOL, "jacobian");
        free(J);
        free(Jt);
    }
    if (M == 1 && (what & AD_CODEGEN_VJP)) {
        cr_assert_eq(((grad_fn)sym(so, prefix, "gradient"))(x, y, grad, w), flag);
        cr_assert_eq(ad_backward(t, out), AD_OK);
        for (int k = 0; k < n; k++)
            close_to(grad[k], ad_grad(t, in[k]), sz[k], TOL, "gradient");
    }
    if (M == 1 && (what & AD_CODEGEN_HVP)) {
        double *hv[16], *hw[16], *gw[16];
        double *hflat = malloc(N * sizeof *hflat), *hwflat = malloc(N * sizeof *hwflat);
        o = 0;
        for (int k = 0; k < n; k++, o += sz[k - 1]) {
            hv[k] = hflat + o, hw[k] = hwflat + o, tg[k] = flat2 + o, gw[k] = flat + o;
        }
        cr_assert_eq(((hvp_fn)sym(so, prefix, "hvp"))(x, (const double *const *)v, y, tg, hv, w),
                     flag);
        cr_assert_eq(ad_hvp(t, out, n, in, (const double *const *)v, hw, gw), status, "%s",
                     ad_tape_errmsg(t));
        for (int k = 0; k < n; k++) {
            close_to(hv[k], hw[k], sz[k], TOL, "hvp");
            close_to(tg[k], gw[k], sz[k], TOL, "hvp's gradient");
        }
        free(hflat);
        free(hwflat);
    }
    free(seed), free(vflat), free(jv), free(jw);
    free(w), free(y), free(want), free(flat), free(flat2);
}

/* check_so on a file made for (t, out, in): every function agrees with
 * the tape, no flag */
static void check_all(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix,
                      unsigned what, size_t max_stmts)
{
    void *so = build(t, out, n, in, prefix, what, 0, max_stmts);
    check_so(so, t, out, n, in, prefix, what, 0, AD_OK);
    dlclose(so);
}

/* ---- every elementwise op: tensor and scalar forms, broadcasting ---- */

static const struct {
    const char *name;
    double c;
} unary_ops[] = {
    {"neg", 0},       {"scale", 0.7},     {"addc", 0.7},      {"square", 0},   {"sqrt", 0},
    {"exp", 0},       {"log", 0},         {"tanh", 0},        {"sigmoid", 0},  {"relu", 0},
    {"abs", 0},       {"powc", 2.5},      {"step", 0},        {"sign", 0},     {"sin", 0},
    {"cos", 0},       {"tan", 0},         {"asin", 0},        {"acos", 0},     {"atan", 0},
    {"sinh", 0},      {"cosh", 0},        {"asinh", 0},       {"acosh", 0},    {"atanh", 0},
    {"log1p", 0},     {"expm1", 0},       {"log2", 0},        {"log10", 0},    {"erf", 0},
    {"erfc", 0},      {"softplus", 0},    {"gelu", 0},        {"elu", 0.8},    {"leaky_relu", 0.1},
    {"floor", 0},     {"ceil", 0},        {"round", 0},       {"clamp_min", 0.4},
    {"clamp_max", 0.66},
};
static const char *const binary_ops[] = {"add", "sub", "mul", "div", "pow",
                                         "atan2", "hypot", "min", "max"};
static const char *const compare_ops[] = {"lt", "le", "gt", "ge", "eq", "ne"};
/* tensor ops, each used below */
static const char *const tensor_ops[] = {
    "sum",       "mean",     "dot",     "matvec",    "matvec_t",   "matmul",    "matmul_nt",
    "outer",     "transpose", "softmax_xent", "affine", "logsumexp", "select", "reshape",
    "slice",     "slice_add", "take",   "index_add", "concat",     "sum_axis",  "mean_axis",
    "max_axis",  "min_axis", "max_mask", "softmax",  "log_softmax", "norm",     "trace",
    "solve",     "solve_spd", "logdet"};

static bool listed(const char *name)
{
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++)
        if (!strcmp(name, unary_ops[i].name))
            return true;
    const char *const *lists[] = {binary_ops, compare_ops, tensor_ops};
    const size_t lens[] = {9, 6, sizeof tensor_ops / sizeof tensor_ops[0]};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < lens[l]; i++)
            if (!strcmp(name, lists[l][i]))
                return true;
    return !strcmp(name, "leaf");
}

Test(codegen, every_builtin_op_is_covered)
{
    for (size_t i = 0; i < ad_builtin_count(); i++)
        cr_expect(listed(ad_builtin_op(i)->name), "built-in op '%s' is not tested by test_codegen",
                  ad_builtin_op(i)->name);
}

static ad_node flat(ad_tape *t, ad_node n)
{
    return ad_reshape(t, n, ad_shape_vec((uint32_t)ad_shape_size(ad_node_shape(t, n))));
}

/* The elementwise graph: its parts joined into one vector. */
static ad_node ew_graph(ad_tape *t, ad_node *in)
{
    const double xv[4] = {0.3, 0.45, 0.6, 0.75}, yv[4] = {0.5, 0.7, 0.25, 0.4};
    const double Mv[8] = {0.35, 0.55, 0.65, 0.25, 0.45, 0.7, 0.3, 0.6}, cv[2] = {0.42, 0.58};
    ad_node x = ad_variable(t, ad_shape_vec(4), xv), y = ad_variable(t, ad_shape_vec(4), yv);
    ad_node s = ad_scalar_var(t, 0.35), s2 = ad_scalar_var(t, 0.62);
    ad_node M = ad_variable(t, ad_shape_mat(2, 4), Mv), col = ad_variable(t, ad_shape_mat(2, 1), cv);
    in[0] = x, in[1] = y, in[2] = s, in[3] = s2, in[4] = M, in[5] = col;
    ad_node parts[512];
    int np = 0;
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++) {
        const ad_opdef *d = ad_registry_find(NULL, unary_ops[i].name);
        cr_assert(d, "%s", unary_ops[i].name);
        const bool shift = !strcmp(unary_ops[i].name, "acosh");
        ad_node ax = shift ? ad_add_const(t, x, 1.2) : x, as = shift ? ad_add_const(t, s, 1.2) : s;
        parts[np++] = ad_apply(t, d, &ax, 1, unary_ops[i].c);
        parts[np++] = ad_apply(t, d, &as, 1, unary_ops[i].c);
    }
    for (size_t i = 0; i < 9; i++) {
        const ad_opdef *d = ad_registry_find(NULL, binary_ops[i]);
        const ad_node pairs[6][2] = {{x, y}, {s, x}, {y, s2}, {M, x}, {col, M}, {s, s2}};
        for (int p = 0; p < 6; p++)
            parts[np++] = flat(t, ad_apply(t, d, pairs[p], 2, 0.0));
    }
    for (size_t i = 0; i < 6; i++) {
        const ad_opdef *d = ad_registry_find(NULL, compare_ops[i]);
        const ad_node xy[2] = {x, y}, ss[2] = {s, s2};
        ad_node cx = ad_apply(t, d, xy, 2, 0.0), cs = ad_apply(t, d, ss, 2, 0.0);
        parts[np++] = cx;
        parts[np++] = ad_select(t, cx, ad_log(t, x), ad_sqrt(t, y));
        parts[np++] = ad_select(t, cs, ad_mul(t, s, s2), ad_exp(t, s));
    }
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    return ad_concat(t, 0, np, parts);
}

Test(codegen, elementwise_ops_all_modes)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[6];
    ad_node V = ew_graph(t, in);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    check_all(t, V, 6, in, "ewv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0);
    /* a scalar of all of them: gradient and HVP */
    const size_t m = ad_shape_size(ad_node_shape(t, V));
    double *wv = malloc(m * sizeof *wv);
    for (size_t i = 0; i < m; i++)
        wv[i] = 0.5 + 0.01 * (double)(i % 17);
    ad_node F = ad_dot(t, V, ad_constant(t, ad_node_shape(t, V), wv));
    check_all(t, F, 6, in, "ews", AD_CODEGEN_ALL, 0);
    free(wv);
    ad_tape_free(t);
}

/* ---- tensor ops ---- */

static ad_node tensor_graph(ad_tape *t, ad_node *in, bool nonlinear)
{
    double Av[12], Bv[12], Xv[8], uv[4], vv[3], bv[3], zv[4];
    test_rng r = {42};
    for (int i = 0; i < 12; i++)
        Av[i] = test_signed(&r, 0.2, 1.0), Bv[i] = test_signed(&r, 0.2, 1.0);
    for (int i = 0; i < 8; i++)
        Xv[i] = test_signed(&r, 0.2, 1.0);
    for (int i = 0; i < 4; i++)
        uv[i] = test_signed(&r, 0.2, 1.0), zv[i] = test_signed(&r, 0.2, 1.0);
    for (int i = 0; i < 3; i++)
        vv[i] = test_signed(&r, 0.2, 1.0), bv[i] = test_signed(&r, 0.2, 1.0);
    ad_node A = ad_variable(t, ad_shape_mat(3, 4), Av), B = ad_variable(t, ad_shape_mat(4, 3), Bv);
    ad_node X = ad_variable(t, ad_shape_mat(2, 4), Xv), u = ad_variable(t, ad_shape_vec(4), uv);
    ad_node v = ad_variable(t, ad_shape_vec(3), vv), b = ad_variable(t, ad_shape_vec(3), bv);
    ad_node z = ad_variable(t, ad_shape_vec(4), zv);
    in[0] = A, in[1] = B, in[2] = X, in[3] = u, in[4] = v, in[5] = b, in[6] = z;
    ad_node p[64];
    int n = 0;
    if (nonlinear) {
        const double tg[12] = {0.1, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25, 0, 1, 0, 0};
        p[n++] = ad_logsumexp(t, u);
        p[n++] = ad_logsumexp(t, A);
        p[n++] = ad_softmax(t, u);
        p[n++] = flat(t, ad_softmax(t, A));
        p[n++] = flat(t, ad_log_softmax(t, A));
        p[n++] = ad_log_softmax(t, z);
        p[n++] = ad_softmax_xent(t, A, ad_constant(t, ad_shape_mat(3, 4), tg));
        p[n++] = ad_softmax_xent(t, u, z); /* target active too */
        p[n++] = ad_norm(t, A);
        p[n++] = ad_mul(t, ad_norm(t, u), ad_sum(t, v));
        /* an operand that carries no derivative (a mask): no tangent, no term */
        p[n++] = flat(t, ad_mul(t, ad_softmax(t, ad_max_mask(t, A, 1)), A));
        return ad_concat(t, 0, n, p);
    }
    const uint32_t idx[5] = {2, 0, 1, 1, 3};
    p[n++] = ad_sum(t, A);
    p[n++] = ad_mean(t, A);
    p[n++] = ad_dot(t, u, u);
    p[n++] = ad_dot(t, u, z);
    p[n++] = ad_matvec(t, A, u);
    p[n++] = ad_matvec_t(t, A, v);
    p[n++] = flat(t, ad_matmul(t, A, B));
    p[n++] = flat(t, ad_matmul_nt(t, A, X));
    p[n++] = flat(t, ad_outer(t, u, v));
    p[n++] = flat(t, ad_transpose(t, A));
    p[n++] = ad_affine(t, A, u, b);
    p[n++] = flat(t, ad_affine(t, A, X, b));
    p[n++] = ad_matrix_trace(t, ad_matmul(t, A, B));
    p[n++] = ad_sum_axis(t, A, 0);
    p[n++] = ad_sum_axis(t, A, 1);
    p[n++] = ad_sum_axis(t, u, 0);
    p[n++] = ad_mean_axis(t, A, 0);
    p[n++] = ad_mean_axis(t, A, 1);
    p[n++] = ad_max_axis(t, A, 0);
    p[n++] = ad_max_axis(t, A, 1);
    p[n++] = ad_min_axis(t, A, 0);
    p[n++] = ad_min_axis(t, u, 0);
    p[n++] = flat(t, ad_mul(t, ad_max_mask(t, A, 1), A));
    p[n++] = ad_select(t, ad_gt(t, u, z), ad_square(t, u), z);
    p[n++] = ad_select(t, ad_lt(t, u, ad_scalar(t, 0.0)), ad_sum(t, v), u);
    p[n++] = flat(t, ad_reshape(t, A, ad_shape_mat(4, 3)));
    p[n++] = ad_slice(t, u, 1, 2);
    p[n++] = flat(t, ad_slice_block(t, A, 1, 2, 1, 3));
    p[n++] = ad_take(t, u, 5, idx);
    p[n++] = flat(t, ad_take(t, A, 3, idx));
    p[n++] = ad_at(t, v, 2);
    p[n++] = ad_index_add(t, z, 3, idx, v);
    p[n++] = flat(t, ad_index_add(t, A, 2, idx, ad_slice(t, A, 0, 2)));
    p[n++] = flat(t, ad_slice_add(t, A, 1, 1, ad_reshape(t, v, ad_shape_mat(1, 3))));
    p[n++] = ad_slice_add(t, u, 1, 0, ad_slice(t, z, 0, 3));
    {
        const ad_node side[2] = {A, ad_transpose(t, B)};
        p[n++] = flat(t, ad_concat(t, 1, 2, side));
        const ad_node rows[3] = {X, u, A};
        p[n++] = flat(t, ad_concat(t, 0, 3, rows));
        const ad_node st[2] = {u, z};
        p[n++] = flat(t, ad_stack(t, 2, st));
    }
    p[n++] = flat(t, ad_mul(t, A, ad_reshape(t, ad_sum_axis(t, A, 1), ad_shape_mat(3, 1))));
    p[n++] = flat(t, ad_add(t, X, u)); /* row broadcast, tensor-tensor */
    return ad_concat(t, 0, n, p);
}

Test(codegen, tensor_ops_all_modes)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[7];
    ad_node V = tensor_graph(t, in, false);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    check_all(t, V, 7, in, "tnv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0);
    ad_node F = ad_sum(t, ad_mul(t, V, ad_sin(t, V))); /* nonlinear on top: HVP terms */
    check_all(t, F, 7, in, "tns", AD_CODEGEN_ALL, 0);
    ad_tape_free(t);
}

/* logsumexp softmax log_softmax softmax_xent norm: vectors and rows of
 * matrices, a target that is an input and one that is baked */
Test(codegen, nonlinear_tensor_ops_all_modes)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[7];
    ad_node V = tensor_graph(t, in, true);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    check_all(t, V, 7, in, "nlv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0);
    /* a nonlinear scalar of them: HVP (second-order terms of every op, the
     * vjp of their adjoint tangents); chunked too */
    ad_node F = ad_sum(t, ad_mul(t, V, ad_sin(t, V)));
    check_all(t, F, 7, in, "nls", AD_CODEGEN_ALL, 0);
    check_all(t, F, 7, in, "nls3", AD_CODEGEN_ALL, 3);
    /* each op alone as the output: its own rule with nothing after it */
    const ad_node u = in[3], A = in[0], z = in[6];
    const ad_node outs[5] = {ad_logsumexp(t, u), ad_softmax_xent(t, A, ad_softmax(t, A)),
                             ad_norm(t, A), ad_sum(t, ad_log_softmax(t, u)), ad_dot(t, z, ad_softmax(t, u))};
    for (int i = 0; i < 5; i++) {
        char pre[16];
        snprintf(pre, sizeof pre, "nl1_%d", i);
        check_all(t, outs[i], 7, in, pre, AD_CODEGEN_ALL, 0);
    }
    ad_tape_free(t);
}

/* ---- solve, solve_spd, logdet ---- */

/* A needs row exchanges (a tiny leading entry), S's symmetric part is
 * positive definite but S is not symmetric; right-hand sides a vector and
 * a matrix, each of them an input or baked, a solve of a solve. */
static ad_node solver_graph(ad_tape *t, ad_node *in)
{
    const double Av[9] = {1e-3, 2.0, -1.0, 0.5, -0.3, 4.0, 3.0, 1.0, 0.7};
    const double Sv[9] = {4.0, 1.2, 0.5, 0.6, 3.0, -0.2, 0.3, -0.6, 2.5};
    const double bv[3] = {0.3, -1.1, 0.7}, Bv[6] = {0.5, -0.2, 1.3, 0.9, -0.7, 0.4};
    const double Cv[9] = {2.0, 0.1, 0.3, -0.4, 1.5, 0.2, 0.6, 0.7, -1.8};
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), Av), S = ad_variable(t, ad_shape_mat(3, 3), Sv);
    ad_node b = ad_variable(t, ad_shape_vec(3), bv), B = ad_variable(t, ad_shape_mat(3, 2), Bv);
    in[0] = A, in[1] = S, in[2] = b, in[3] = B;
    ad_node C = ad_constant(t, ad_shape_mat(3, 3), Cv), c = ad_constant(t, ad_shape_vec(3), bv);
    ad_node p[16];
    int n = 0;
    p[n++] = ad_solve(t, A, b);
    p[n++] = flat(t, ad_solve(t, A, B));
    p[n++] = ad_solve_spd(t, S, b);
    p[n++] = flat(t, ad_solve_spd(t, S, B));
    p[n++] = ad_logdet(t, A);
    p[n++] = ad_logdet(t, S);
    p[n++] = ad_solve(t, C, ad_sin(t, b));        /* a baked matrix */
    p[n++] = ad_solve(t, ad_mul(t, A, C), c);     /* a baked right-hand side */
    p[n++] = flat(t, ad_solve_spd(t, ad_scale(t, S, 2.0), ad_solve(t, A, B)));
    p[n++] = ad_logdet(t, ad_matmul(t, A, S));
    return ad_concat(t, 0, n, p);
}

Test(codegen, solvers_all_modes)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[4];
    ad_node V = solver_graph(t, in);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    check_all(t, V, 4, in, "slv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0);
    ad_node F = ad_sum(t, ad_mul(t, V, ad_sin(t, V)));
    check_all(t, F, 4, in, "sls", AD_CODEGEN_ALL, 0);
    check_all(t, F, 4, in, "sls3", AD_CODEGEN_ALL, 3);
    /* each alone as the output (a matrix of right-hand sides, a scalar) */
    const ad_node outs[4] = {ad_solve(t, in[0], in[3]), ad_solve_spd(t, in[1], in[3]),
                             ad_logdet(t, in[0]), ad_sum(t, ad_solve(t, in[1], in[2]))};
    for (int i = 0; i < 4; i++) {
        char pre[16];
        snprintf(pre, sizeof pre, "sl1_%d", i);
        const bool scalar = ad_shape_size(ad_node_shape(t, outs[i])) == 1;
        check_all(t, outs[i], 4, in, pre, scalar ? AD_CODEGEN_ALL : AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0);
    }
    /* forward only: no scratch, the factors still in the work array */
    void *so = build(t, V, 4, in, "slf", AD_CODEGEN_FORWARD, 0, 0);
    check_so(so, t, V, 4, in, "slf", AD_CODEGEN_FORWARD, 0, AD_OK);
    dlclose(so);
    ad_tape_free(t);
}

/* A singular matrix: the tape reports AD_ESINGULAR with NaN from the
 * solve on; the generated code returns 2 with the same NaN (and the same
 * finite numbers elsewhere); 3 with a replay guard that fired too. A
 * matrix with an infinity is NaN without an error, in both. */
Test(codegen, solvers_singular_matrix)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    const double Av[9] = {1e-3, 2.0, -1.0, 0.5, -0.3, 4.0, 3.0, 1.0, 0.7};
    const double Sv[9] = {4.0, 1.2, 0.5, 0.6, 3.0, -0.2, 0.3, -0.6, 2.5};
    const double bv[3] = {0.3, -1.1, 0.7};
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), Av), S = ad_variable(t, ad_shape_mat(3, 3), Sv);
    ad_node b = ad_variable(t, ad_shape_vec(3), bv);
    const ad_node in[3] = {A, S, b};
    (void)ad_gt(t, ad_sum(t, b), ad_scalar(t, 0.0)); /* a guard: sum b < 0 at home */
    ad_node p[4] = {ad_solve(t, A, b), ad_logdet(t, A), ad_solve_spd(t, S, b),
                    ad_sin(t, ad_dot(t, b, b))};
    ad_node V = ad_concat(t, 0, 4, p);
    ad_node F = ad_sum(t, ad_mul(t, V, V));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    void *sv = build(t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0, 0);
    void *ss = build(t, F, 3, in, "sgs", AD_CODEGEN_ALL, 0, 4);
    check_so(sv, t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0, AD_OK);
    /* row 2 = row 0 + row 1: a zero pivot */
    const double As[9] = {1.0, 2.0, -1.0, 0.5, -0.5, 4.0, 1.5, 1.5, 3.0};
    cr_assert_eq(ad_set_value(t, A, As), AD_OK);
    check_so(sv, t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 2, AD_ESINGULAR);
    check_so(ss, t, F, 3, in, "sgs", AD_CODEGEN_ALL, 2, AD_ESINGULAR);
    /* S not positive definite: solve_spd's turn */
    const double Sn[9] = {1.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 1.0};
    cr_assert_eq(ad_set_value(t, A, Av), AD_OK);
    cr_assert_eq(ad_set_value(t, S, Sn), AD_OK);
    check_so(sv, t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 2, AD_ESINGULAR);
    /* singular and the guard: 3 (the tape: AD_EBRANCH, which wins) */
    const double bn[3] = {1.3, -1.1, 0.7}; /* sum b > 0 */
    cr_assert_eq(ad_set_value(t, b, bn), AD_OK);
    check_so(sv, t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 3, AD_EBRANCH);
    /* an infinity in A: NaN, no flag, no error */
    double Ai[9];
    memcpy(Ai, Av, sizeof Ai);
    Ai[4] = INFINITY;
    cr_assert_eq(ad_set_value(t, A, Ai), AD_OK);
    cr_assert_eq(ad_set_value(t, S, Sv), AD_OK);
    cr_assert_eq(ad_set_value(t, b, bv), AD_OK);
    check_so(sv, t, V, 3, in, "sgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 0, AD_OK);
    check_so(ss, t, F, 3, in, "sgs", AD_CODEGEN_ALL, 0, AD_OK);
    /* back home: nothing left over in the work array changes a result */
    cr_assert_eq(ad_set_value(t, A, Av), AD_OK);
    check_so(ss, t, F, 3, in, "sgs", AD_CODEGEN_ALL, 0, AD_OK);
    dlclose(sv);
    dlclose(ss);
    ad_tape_free(t);
}

/* ---- random graphs, cut into many small functions ---- */

static ad_node random_graph(ad_tape *t, test_rng *r, const ad_node *leaves, int nl, int steps)
{
    ad_node pool[256];
    int np = 0;
    for (int i = 0; i < nl; i++)
        pool[np++] = leaves[i];
    for (int s = 0; s < steps; s++) {
        ad_node a = pool[test_rng_next(r) % (uint64_t)np];
        ad_node b = pool[test_rng_next(r) % (uint64_t)np];
        /* keep values moderate: squash through tanh now and then */
        ad_node y;
        switch (test_rng_next(r) % 12) {
        case 0: y = ad_add(t, a, b); break;
        case 1: y = ad_sub(t, a, b); break;
        case 2: y = ad_mul(t, a, b); break;
        case 3: y = ad_div(t, a, ad_add_const(t, ad_square(t, b), 1.0)); break;
        case 4: y = ad_sin(t, a); break;
        case 5: y = ad_tanh(t, ad_add(t, a, b)); break;
        case 6: y = ad_exp(t, ad_scale(t, ad_tanh(t, a), 0.5)); break;
        case 7: y = ad_sigmoid(t, a); break;
        case 8: y = ad_hypot(t, a, ad_add_const(t, b, 0.5)); break;
        case 9: y = ad_select(t, ad_gt(t, a, b), ad_cos(t, a), ad_square(t, b)); break;
        case 10: y = ad_log1p(t, ad_square(t, a)); break;
        default: y = ad_max(t, a, ad_scale(t, b, 0.9)); break;
        }
        if (ad_shape_size(ad_node_shape(t, y)) > 1 && test_rng_next(r) % 4 == 0)
            y = ad_sum(t, y);
        pool[np++] = y;
    }
    return pool[np - 1];
}

Test(codegen, random_graphs_split_into_small_functions)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    test_rng r = {20261129};
    const double vv[3] = {0.3, -0.7, 1.1};
    ad_node in[4] = {ad_scalar_var(t, 0.4), ad_scalar_var(t, -0.8), ad_scalar_var(t, 1.3),
                     ad_variable(t, ad_shape_vec(3), vv)};
    ad_node outs[24];
    for (int g = 0; g < 24; g++)
        outs[g] = flat(t, random_graph(t, &r, in, 4, 30));
    ad_node V = ad_concat(t, 0, 24, outs);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t)); /* no guard fires at home */
    /* at most 5 statements per function: the split is exercised everywhere */
    check_all(t, V, 4, in, "rgv", AD_CODEGEN_ALL & ~AD_CODEGEN_HVP, 5);
    ad_node F = ad_dot(t, V, ad_sin(t, V));
    check_all(t, F, 4, in, "rgs", AD_CODEGEN_ALL, 5);
    /* the split changes nothing but the cut: one file of 5, one of 100000 */
    generate(t, F, 4, in, "rgs5", 0, 0, 5);
    generate(t, F, 4, in, "rgsbig", 0, 0, 100000);
    char path[512];
    snprintf(path, sizeof path, "%s/rgs5.c", AD_TEST_TMP);
    FILE *f = fopen(path, "r");
    int chunks = 0;
    char line[4096];
    while (fgets(line, sizeof line, f))
        chunks += strncmp(line, "rgs5_CHUNK int rgs5_f", 21) == 0;
    fclose(f);
    cr_expect_gt(chunks, 20, "only %d forward functions with 5 statements each", chunks);
    ad_tape_free(t);
}

/* ---- repeated blocks: rerolled into loops ---- */

/* loops over blocks in the generated file prefix.c */
static int count_loops(const char *prefix)
{
    char path[512], line[4096];
    snprintf(path, sizeof path, "%s/%s.c", AD_TEST_TMP, prefix);
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    int loops = 0;
    while (fgets(line, sizeof line, f))
        loops += strstr(line, "for (unsigned long it") != NULL;
    fclose(f);
    return loops;
}

Test(codegen, repeated_blocks_become_loops)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[16], rev[16];
    for (int i = 0; i < 16; i++)
        x[i] = ad_scalar_var(t, 0.3 + 0.11 * i - 0.02 * i * i);
    for (int i = 0; i < 16; i++)
        rev[i] = x[15 - i]; /* inputs listed backward: indices step by -1 */
    /* one block per term, 11 ops: unary, binary, with constants, baked
     * operands (one, 2.5), the running sum carried from block to block */
    ad_node one = ad_scalar(t, 1.0), f = ad_scalar(t, 0.0);
    for (int i = 0; i + 1 < 16; i++) {
        ad_node a = ad_mul(t, ad_sin(t, x[i]), x[i + 1]);
        ad_node b = ad_exp(t, ad_scale(t, x[i], 0.1));
        ad_node c = ad_add(t, one, ad_square(t, x[i + 1]));
        ad_node d = ad_pow_const(t, c, 2.5);
        f = ad_add(t, f, ad_add(t, a, ad_div(t, b, d)));
    }
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    /* 40 statements per function: not the one-function form, so every
     * pass (forward, reverse, tangent, forward over reverse) is chunked
     * and rerolled; each is compared with the tape */
    check_all(t, f, 16, x, "rep", AD_CODEGEN_ALL, 40);
    cr_expect_geq(count_loops("rep"), 4, "forward, reverse, tangent, hvp: each a loop");
    check_all(t, f, 16, rev, "repr", AD_CODEGEN_ALL, 40);
    cr_expect_geq(count_loops("repr"), 4, "inputs backward: still loops");
    /* no repetition (random graphs) or a small tape: no loop */
    ad_node g = ad_add(t, ad_sin(t, x[0]), ad_mul(t, x[1], x[2]));
    generate(t, g, 3, x, "norep", 0, 0, 2);
    cr_expect_eq(count_loops("norep"), 0);
    ad_tape_free(t);
}

/* ---- big tapes without repetition: level order, groups, tables ---- */

/* lines of the generated prefix.c that contain pat */
static int count_lines(const char *prefix, const char *pat)
{
    char path[512], line[8192];
    snprintf(path, sizeof path, "%s/%s.c", AD_TEST_TMP, prefix);
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    int k = 0;
    while (fgets(line, sizeof line, f))
        k += strstr(line, pat) != NULL;
    fclose(f);
    return k;
}

/* A chain of steps each reading two of the last 12 nodes (so the levels
 * are deep and narrow: few twins per level) with constants that differ,
 * comparisons and selects (replay guards written out of node order), a
 * vector input broadcast now and then. */
static ad_node chain_graph(ad_tape *t, test_rng *r, const ad_node *leaves, int nl, int steps)
{
    ad_node ring[12];
    for (int i = 0; i < 12; i++)
        ring[i] = leaves[i % (nl - 1)];
    ad_node acc = ad_scalar(t, 0.0);
    for (int s = 0; s < steps; s++) {
        ad_node a = ring[test_rng_next(r) % 12], b = ring[test_rng_next(r) % 12];
        const double c = 0.5 + 0.001 * (double)(test_rng_next(r) % 500);
        ad_node y;
        switch (test_rng_next(r) % 10) {
        case 0: y = s % 5 ? ad_add(t, a, b) : ad_scale(t, ad_sum(t, ad_mul(t, leaves[nl - 1], a)), 0.3); break;
        case 1: y = ad_mul(t, ad_tanh(t, a), b); break;
        case 2: y = ad_sin(t, ad_scale(t, a, c)); break;
        case 3: y = ad_add_const(t, ad_scale(t, b, c), -0.25); break;
        case 4: y = ad_sub(t, a, ad_scale(t, b, c)); break;
        case 5: y = ad_select(t, ad_gt(t, a, b), ad_cos(t, a), ad_mul(t, b, b)); break;
        case 6: y = ad_div(t, a, ad_add_const(t, ad_square(t, b), 1.0)); break;
        case 7: y = ad_tanh(t, ad_add(t, a, b)); break;
        case 8: y = ad_hypot(t, a, ad_add_const(t, b, 0.5)); break;
        default: y = ad_exp(t, ad_scale(t, ad_tanh(t, a), c)); break;
        }
        ring[test_rng_next(r) % 12] = y;
        if (s % 50 == 49)
            acc = ad_add(t, acc, y);
    }
    return acc;
}

Test(codegen, big_irregular_tapes_become_loops_and_tables)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    test_rng r = {0xb16};
    const double vv[3] = {0.3, -0.7, 1.1};
    ad_node in[6];
    for (int i = 0; i < 5; i++)
        in[i] = ad_scalar_var(t, 0.2 * i - 0.45);
    in[5] = ad_variable(t, ad_shape_vec(3), vv);
    ad_node F = chain_graph(t, &r, in, 6, 3000);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_gt(ad_tape_len(t), 6000);
    /* every pass in level order, each compared with the tape (adjoints
     * may sum in another order: within the test's 1e-13) */
    check_all(t, F, 6, in, "chain", AD_CODEGEN_ALL & ~AD_CODEGEN_JACOBIAN, 0);
    cr_expect_geq(count_lines("chain", "switch (sf[it])"), 4,
                  "forward, reverse, tangent, hvp: the irregular stretches as tables");
    /* the compiler sees each form once, not each node: few statements
     * left one by one */
    cr_expect_lt(count_lines("chain", "    w["), (int)ad_tape_len(t) / 10);
    /* in float too (the tables' constants stay double): it compiles
     * (-Werror) and agrees with the double tape to float's precision over
     * a 3000-step chain, normwise */
    {
        void *so = build(t, F, 6, in, "chainf", AD_CODEGEN_FORWARD | AD_CODEGEN_VJP, 1, 0);
        cr_assert_eq(ad_backward(t, F), AD_OK);
        float xs[6][3], gs[6][3], y;
        const float *x[6];
        float *gp[6];
        double num = 0, den = 0;
        for (int k = 0; k < 6; k++) {
            for (size_t i = 0; i < ad_shape_size(ad_node_shape(t, in[k])); i++)
                xs[k][i] = (float)ad_value(t, in[k])[i];
            x[k] = xs[k], gp[k] = gs[k];
        }
        float *w = malloc(((ws_fn)sym(so, "chainf", "work_size"))() * sizeof *w);
        typedef int (*fg_fn)(const float *const *, float *, float *const *, float *);
        cr_assert_eq(((fg_fn)sym(so, "chainf", "gradient"))(x, &y, gp, w), 0);
        for (int k = 0; k < 6; k++)
            for (size_t i = 0; i < ad_shape_size(ad_node_shape(t, in[k])); i++) {
                num = fmax(num, fabs(gs[k][i] - ad_grad(t, in[k])[i]));
                den = fmax(den, fabs(ad_grad(t, in[k])[i]));
            }
        cr_expect_leq(num, 1e-3 * fmax(den, 1.0), "float gradient off by %g (of %g)", num, den);
        cr_expect_leq(fabs(y - ad_scalar_value(t, F)), 1e-3 * fmax(fabs(ad_scalar_value(t, F)), 1.0));
        free(w);
        dlclose(so);
    }

    /* W1 with a different constant in each term: one run, c from a table */
    ad_tape *u = ad_tape_new(NULL);
    ad_node x[16];
    for (int i = 0; i < 16; i++)
        x[i] = ad_scalar_var(u, 0.3 + 0.11 * i - 0.02 * i * i);
    ad_node one = ad_scalar(u, 1.0), f = ad_scalar(u, 0.0);
    for (int i = 0; i + 1 < 16; i++) {
        ad_node a = ad_sub(u, x[i + 1], ad_square(u, x[i]));
        ad_node b = ad_sub(u, one, x[i]);
        f = ad_add(u, f, ad_add(u, ad_scale(u, ad_square(u, a), 100.0 + 0.5 * i), ad_square(u, b)));
    }
    check_all(u, f, 16, x, "w1c", AD_CODEGEN_ALL, 40);
    cr_expect_geq(count_loops("w1c"), 4, "constants that differ: still loops");
    cr_expect_geq(count_lines("w1c", "static const double lc"), 4, "their table");
    ad_tape_free(u);

    /* a wide level: many twins side by side with irregular operands
     * (inputs read in a scrambled order), grouped into loops */
    ad_tape *v = ad_tape_new(NULL);
    ad_node y[16];
    for (int i = 0; i < 16; i++)
        y[i] = ad_scalar_var(v, 0.1 * i - 0.7);
    ad_node s = ad_scalar(v, 0.0);
    for (int i = 0; i < 2400; i++) {
        const int a = (int)((unsigned)(i * 7 + 3) % 16u), b = (int)((unsigned)(i * 11 + 5) % 16u);
        ad_node p = ad_mul(v, ad_sin(v, y[a]), ad_scale(v, y[b], 1.0 + 0.001 * i));
        s = ad_add(v, s, p);
    }
    check_all(v, s, 16, y, "wide", AD_CODEGEN_ALL & ~AD_CODEGEN_JACOBIAN, 0);
    cr_expect_geq(count_lines("wide", "static const unsigned long lt"), 2, "groups with tables");
    ad_tape_free(v);
    ad_tape_free(t);
}

/* ---- float ---- */

typedef int (*fgrad_fn)(const float *const *, float *, float *const *, float *);

Test(codegen, float_within_bound)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[6];
    ad_node V = ew_graph(t, in);
    ad_node F = ad_scale(t, ad_sum(t, V), 0.01);
    void *so = build(t, F, 6, in, "flt", AD_CODEGEN_FORWARD | AD_CODEGEN_VJP, 1, 0);
    cr_assert_eq(ad_backward(t, F), AD_OK);
    float xs[6][8], gs[6][8], y, *w;
    const float *x[6];
    float *g[6];
    for (int k = 0; k < 6; k++) {
        const size_t n = ad_shape_size(ad_node_shape(t, in[k]));
        for (size_t i = 0; i < n; i++)
            xs[k][i] = (float)ad_value(t, in[k])[i];
        x[k] = xs[k];
        g[k] = gs[k];
    }
    w = malloc(((ws_fn)sym(so, "flt", "work_size"))() * sizeof *w);
    cr_assert_eq(((fgrad_fn)sym(so, "flt", "gradient"))(x, &y, g, w), 0);
    /* the stated bound (docs/codegen.md): 1e-5 relative (absolute below 1),
     * inputs rounded to float included */
    cr_expect(test_err(y, ad_scalar_value(t, F)) <= 1e-5, "%.9g vs %.9g", y,
              ad_scalar_value(t, F));
    for (int k = 0; k < 6; k++) {
        const size_t n = ad_shape_size(ad_node_shape(t, in[k]));
        for (size_t i = 0; i < n; i++)
            cr_expect(test_err(gs[k][i], ad_grad(t, in[k])[i]) <= 1e-5, "grad %d[%zu]: %.9g vs %.17g",
                      k, i, gs[k][i], ad_grad(t, in[k])[i]);
    }
    free(w);
    dlclose(so);
    ad_tape_free(t);
}

typedef int (*ffwd_fn)(const float *const *, float *, float *);
typedef int (*fvjp_fn)(const float *const *, const float *, float *, float *const *, float *);
typedef int (*fjvp_fn)(const float *const *, const float *const *, float *, float *, float *);
typedef int (*fhvp_fn)(const float *const *, const float *const *, float *, float *const *,
                       float *const *, float *);
typedef int (*fjac_fn)(const float *const *, float *, float *, float *);

/* float against the 1e-5 bound, every mode: the generated functions of
 * (t, out, in) in float, inputs, seed and direction rounded to float,
 * against the double tape (the gradient and the HVP when out is a
 * scalar) */
static void check_float(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix)
{
    const size_t M = ad_shape_size(ad_node_shape(t, out));
    const unsigned what = M == 1 ? AD_CODEGEN_ALL : AD_CODEGEN_ALL & ~AD_CODEGEN_HVP;
    void *so = build(t, out, n, in, prefix, what, 1, 0);
    size_t N = 0, off[8];
    cr_assert(n <= 8);
    for (int k = 0; k < n; k++)
        off[k] = N, N += ad_shape_size(ad_node_shape(t, in[k]));
    float *xf = malloc(N * sizeof *xf), *vf = malloc(N * sizeof *vf), *gf = malloc(N * sizeof *gf);
    float *hf = malloc(N * sizeof *hf), *yf = malloc(M * sizeof *yf), *sf = malloc(M * sizeof *sf);
    float *jf = malloc(M * N * sizeof *jf), *jvf = malloc(M * sizeof *jvf);
    float *w = malloc(((ws_fn)sym(so, prefix, "work_size"))() * sizeof *w);
    double *vd = malloc(N * sizeof *vd), *got = malloc(M * N * sizeof *got);
    double *want = malloc((M + 2) * N * sizeof *want), *sd = malloc(M * sizeof *sd);
    const float *x[8], *v[8];
    float *g[8], *h[8];
    double *vk[8], *hk[8], *gk[8];
    test_rng r = {777};
    for (int k = 0; k < n; k++) {
        const size_t sz = ad_shape_size(ad_node_shape(t, in[k]));
        for (size_t i = 0; i < sz; i++) {
            xf[off[k] + i] = (float)ad_value(t, in[k])[i];
            vf[off[k] + i] = (float)test_signed(&r, 0.5, 1.5);
            vd[off[k] + i] = vf[off[k] + i];
        }
        x[k] = xf + off[k], v[k] = vf + off[k], g[k] = gf + off[k], h[k] = hf + off[k];
        vk[k] = vd + off[k], hk[k] = want + off[k], gk[k] = want + N + off[k];
    }
    for (size_t i = 0; i < M; i++)
        sf[i] = (float)test_signed(&r, 0.5, 1.5), sd[i] = sf[i];
#define CMP_F(F, D, LEN, WHAT)                                                                     \
    for (size_t i_ = 0; i_ < (LEN); i_++)                                                          \
        cr_expect(test_err((F)[i_], (D)[i_]) <= 1e-5, "%s: %s[%zu]: %.9g, tape %.17g", prefix,   \
                  WHAT, i_, (double)(F)[i_], (D)[i_])
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(((ffwd_fn)sym(so, prefix, "forward"))(x, yf, w), 0);
    CMP_F(yf, ad_value(t, out), M, "forward");
    cr_assert_eq(((fvjp_fn)sym(so, prefix, "vjp"))(x, sf, yf, g, w), 0);
    cr_assert_eq(ad_backward_seed(t, out, sd), AD_OK);
    for (int k = 0; k < n; k++)
        CMP_F(g[k], ad_grad(t, in[k]), ad_shape_size(ad_node_shape(t, in[k])), "vjp");
    cr_assert_eq(((fjvp_fn)sym(so, prefix, "jvp"))(x, v, yf, jvf, w), 0);
    cr_assert_eq(ad_jvp(t, out, n, in, (const double *const *)vk, got), AD_OK);
    CMP_F(jvf, got, M, "jvp");
    cr_assert_eq(((fjac_fn)sym(so, prefix, "jacobian"))(x, yf, jf, w), 0);
    cr_assert_eq(ad_jacobian(t, out, n, in, want, AD_JAC_REVERSE), AD_OK);
    CMP_F(jf, want, M * N, "jacobian");
    if (M == 1) {
        cr_assert_eq(((fhvp_fn)sym(so, prefix, "hvp"))(x, v, yf, g, h, w), 0);
        cr_assert_eq(ad_hvp(t, out, n, in, (const double *const *)vk, hk, gk), AD_OK);
        CMP_F(hf, want, N, "hvp");
        CMP_F(gf, want + N, N, "hvp's gradient");
    }
#undef CMP_F
    free(xf), free(vf), free(gf), free(hf), free(yf), free(sf), free(jf), free(jvf), free(w);
    free(vd), free(got), free(want), free(sd);
    dlclose(so);
}

/* the nonlinear tensor ops and the solvers in float (LU and Cholesky in
 * float, the pivot threshold n FLT_EPSILON max|A_ij|) */
Test(codegen, float_nonlinear_ops_and_solvers)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[7];
    ad_node V = tensor_graph(t, in, true);
    check_float(t, V, 7, in, "fnlv");
    check_float(t, ad_sum(t, ad_mul(t, V, ad_sin(t, V))), 7, in, "fnls");
    ad_tape_free(t);
    t = ad_tape_new(NULL);
    ad_node sin_[4];
    ad_node S = solver_graph(t, sin_);
    check_float(t, S, 4, sin_, "fslv");
    check_float(t, ad_sum(t, ad_mul(t, S, ad_sin(t, S))), 4, sin_, "fsls");
    ad_tape_free(t);
}

/* ---- conditionals: replay guards and the untaken branch ---- */

Test(codegen, replay_guards_and_exact_zero_adjoints)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_scalar_var(t, 2.0), zero = ad_scalar(t, 0.0);
    ad_node pos = ad_gt(t, x, zero);               /* a guard only: the program branched on it */
    ad_node big = ad_gt(t, ad_square(t, x), ad_scalar(t, 9.0)); /* select's condition */
    ad_node y = ad_add(t, ad_select(t, big, ad_log(t, ad_add_const(t, x, -3.0)), ad_neg(t, x)),
                       ad_scale(t, x, 0.5));
    (void)pos;
    void *so = build(t, y, 1, &x, "grd", 0, 0, 0);
    fwd_fn fwd = (fwd_fn)sym(so, "grd", "forward");
    grad_fn grad = (grad_fn)sym(so, "grd", "gradient");
    double w[64], out, g;
    cr_assert_lt(((ws_fn)sym(so, "grd", "work_size"))(), 64);
    const double pts[] = {2.0, 2.5, -1.0, 3.0, 4.0, 0.0, -4.0};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        const double xv = pts[i];
        const double *in[1] = {&xv};
        double *gp[1] = {&g};
        cr_assert_eq(ad_set_value(t, x, &xv), AD_OK);
        const int rs = ad_replay(t);
        const int flag = grad(in, &out, gp, w);
        cr_expect_eq(flag, rs == AD_EBRANCH, "x = %g: flag %d, replay %d", xv, flag, rs);
        cr_expect_eq(fwd(in, &out, w), flag);
        close_to(&out, ad_value(t, y), 1, TOL, "guarded value");
        cr_assert_eq(ad_backward(t, y), AD_OK);
        /* at x = 3 the untaken log branch sees log'(0) = inf: 0, never NaN */
        cr_expect(!isnan(g), "x = %g: NaN gradient", xv);
        close_to(&g, ad_grad(t, x), 1, TOL, "guarded gradient");
    }
    dlclose(so);
    ad_tape_free(t);
}

/* ---- no allocation: the generated code linked with an allocator that fails ---- */

Test(codegen, generated_code_never_allocates)
{
    need_cc();
#ifdef AD_TEST_CC
    ad_tape *t = ad_tape_new(NULL);
    ad_node in[6];
    ad_node V = ew_graph(t, in);
    /* and the solvers (their factors and scratch in the work array too):
     * M's left block + I, its Gram matrix + I, right-hand sides from x */
    const double I2[4] = {1, 0, 0, 1};
    ad_node I = ad_constant(t, ad_shape_mat(2, 2), I2);
    ad_node Ms = ad_add(t, ad_slice_block(t, in[4], 0, 2, 0, 2), I);
    ad_node Ss = ad_add(t, ad_matmul_nt(t, Ms, Ms), I);
    ad_node lin[3] = {ad_sum(t, ad_solve(t, Ms, ad_slice(t, in[0], 0, 2))), ad_logdet(t, Ms),
                      ad_sum(t, ad_solve_spd(t, Ss, ad_slice(t, in[1], 1, 2)))};
    ad_node F = ad_add(t, ad_sum(t, V), ad_sum(t, ad_concat(t, 0, 3, lin)));
    cr_assert_eq(generate(t, F, 6, in, "noalloc", 0, 0, 0), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_backward(t, F), AD_OK);
    char drv[512], exe[512], cmd[2048];
    snprintf(drv, sizeof drv, "%s/noalloc_main.c", AD_TEST_TMP);
    snprintf(exe, sizeof exe, "%s/noalloc_main", AD_TEST_TMP);
    FILE *f = fopen(drv, "w");
    /* every malloc, calloc, realloc and free the generated code makes goes
     * through these (ld --wrap): each fails and is counted */
    fprintf(f, "#include <stdio.h>\n#include <stddef.h>\n#include \"noalloc.h\"\n"
               "static int calls;\n"
               "void *__wrap_malloc(size_t n) { (void)n; calls++; return NULL; }\n"
               "void *__wrap_calloc(size_t a, size_t b) { (void)a, (void)b; calls++; return NULL; }\n"
               "void *__wrap_realloc(void *p, size_t n) { (void)p, (void)n; calls++; return NULL; }\n"
               "void __wrap_free(void *p) { (void)p; calls++; }\n"
               "int main(void)\n{\n"
               "    static double w[noalloc_WORK_SIZE], x[noalloc_IN_SIZE], g[noalloc_IN_SIZE], "
               "v[noalloc_IN_SIZE], hv[noalloc_IN_SIZE], J[noalloc_IN_SIZE], y;\n"
               "    const double *in[6];\n    double *gr[6], *vv[6], *hh[6];\n"
               "    unsigned long o = 0;\n");
    size_t off = 0;
    for (int k = 0; k < 6; k++) {
        const size_t n = ad_shape_size(ad_node_shape(t, in[k]));
        for (size_t i = 0; i < n; i++)
            fprintf(f, "    x[%zu] = %.17g;\n    v[%zu] = 1;\n", off + i, ad_value(t, in[k])[i],
                    off + i);
        fprintf(f, "    in[%d] = x + %zu, gr[%d] = g + %zu, vv[%d] = v + %zu, hh[%d] = hv + %zu;\n",
                k, off, k, off, k, off, k, off);
        off += n;
    }
    fprintf(f, "    (void)o;\n    noalloc_forward(in, &y, w);\n    noalloc_gradient(in, &y, gr, w);\n"
               "    noalloc_hvp(in, (const double *const *)vv, &y, gr, hh, w);\n"
               "    noalloc_jvp(in, (const double *const *)vv, &y, J, w);\n"
               "    noalloc_jacobian(in, &y, J, w);\n    noalloc_gradient(in, &y, gr, w);\n"
               "    printf(\"allocations %%d\\n\", calls);\n"
               "    for (unsigned long i = 0; i < noalloc_IN_SIZE; i++)\n"
               "        printf(\"%%.17g\\n\", g[i]);\n    return 0;\n}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s -std=c99 -O0 -Wall -Wextra -Werror -o %s %s %s/noalloc.c -lm "
             "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free",
             AD_TEST_CC, exe, drv, AD_TEST_TMP);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    FILE *p = popen(exe, "r");
    int calls = -1;
    cr_assert_eq(fscanf(p, "allocations %d", &calls), 1);
    cr_expect_eq(calls, 0, "the generated code called the allocator %d times", calls);
    for (int k = 0; k < 6; k++) {
        const size_t n = ad_shape_size(ad_node_shape(t, in[k]));
        for (size_t i = 0; i < n; i++) {
            double gv;
            cr_assert_eq(fscanf(p, "%lf", &gv), 1);
            close_to(&gv, ad_grad(t, in[k]) + i, 1, TOL, "gradient (no allocator)");
        }
    }
    cr_expect_eq(pclose(p), 0);
    ad_tape_free(t);
#endif
}

/* ---- bad input: a status and a message each ---- */

static int gen_err(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix,
                   unsigned what)
{
    FILE *f = tmpfile();
    ad_codegen_opts o = {.prefix = prefix, .what = what};
    const int st = ad_codegen(t, out, n, in, &o, f, NULL);
    fclose(f);
    return st;
}

#define EXPECT_MSG(sub) cr_expect(strstr(ad_tape_errmsg(t), sub), "message: '%s'", ad_tape_errmsg(t))

static void cube_fwd(const ad_call *k) { k->out.val[0] = k->in[0].val[0] * k->in[0].val[0] * k->in[0].val[0]; }
static void cube_vjp(const ad_call *k)
{
    k->in[0].grad[0] += 3 * k->in[0].val[0] * k->in[0].val[0] * k->out.grad[0];
}
static const ad_opdef cube = {.name = "cube3", .arity = 1, .forward = cube_fwd, .vjp = cube_vjp};

Test(codegen, errors_name_the_problem)
{
    ad_tape *t = ad_tape_new(NULL);
    const double Av[4] = {2, 1, 1, 3}, bv[2] = {1, 2};
    ad_node x = ad_scalar_var(t, 0.5), c = ad_scalar(t, 2.0);
    ad_node A = ad_variable(t, ad_shape_mat(2, 2), Av), b = ad_variable(t, ad_shape_vec(2), bv);
    ad_node y = ad_sin(t, ad_mul(t, x, c));
    ad_node V = ad_scale(t, b, 2.0);

    /* prefixes */
    const char *bad[] = {"9lives", "a-b", "", "_x", "has space", NULL,
                         "a123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(gen_err(t, y, 1, &x, bad[i], 0), AD_EMISUSE, "prefix %s", bad[i]);
        EXPECT_MSG("is not a C identifier");
    }
    /* an op without a rule: a custom op without ad_opdef.codegen, on the
     * way to the output (every built-in op has its rules) */
    ad_node cu = ad_apply(t, &cube, &x, 1, 0.0);
    cr_expect_eq(gen_err(t, cu, 1, &x, "p", 0), AD_EMISUSE);
    EXPECT_MSG("custom op 'cube3'");
    EXPECT_MSG("has no code generation rule");
    ad_node s = ad_sum(t, ad_solve(t, A, ad_mul(t, b, ad_apply(t, &cube, &x, 1, 0.0))));
    cr_expect_eq(gen_err(t, s, 3, (ad_node[]){A, b, x}, "p", 0), AD_EMISUSE);
    EXPECT_MSG("custom op 'cube3' (node ");
    /* output not reachable from the inputs */
    ad_node k2 = ad_exp(t, c);
    cr_expect_eq(gen_err(t, k2, 1, &x, "p", 0), AD_EMISUSE);
    EXPECT_MSG("does not depend on any input");
    /* inputs */
    cr_expect_eq(gen_err(t, y, 1, &y, "p", 0), AD_EMISUSE);
    EXPECT_MSG("is not a leaf but op 'sin'");
    cr_expect_eq(gen_err(t, y, 2, (ad_node[]){x, x}, "p", 0), AD_EMISUSE);
    EXPECT_MSG("input 1 (node 1) is input 0 too");
    cr_expect_eq(gen_err(t, y, 1, (ad_node[]){ad_nil()}, "p", 0), AD_EMISUSE);
    EXPECT_MSG("codegen");
    cr_expect_eq(gen_err(t, y, 0, &x, "p", 0), AD_EMISUSE);
    EXPECT_MSG("no inputs");
    /* modes */
    cr_expect_eq(gen_err(t, V, 1, &b, "p", AD_CODEGEN_HVP), AD_EMISUSE);
    EXPECT_MSG("HVP asked of an output that is a vector of length 2");
    cr_expect_eq(gen_err(t, y, 1, &x, "p", 64), AD_EMISUSE);
    EXPECT_MSG("unknown bits 0x40");
    /* an index operand given as an input */
    ad_node tk = ad_take(t, b, 1, (const uint32_t[]){1});
    ad_node ops[AD_MAX_ARITY];
    cr_assert_eq(ad_node_inputs(t, tk, ops), 2);
    cr_expect_eq(gen_err(t, tk, 2, (ad_node[]){b, ops[1]}, "p", 0), AD_EMISUSE);
    EXPECT_MSG("its index operand");
    /* NULLs */
    FILE *f = tmpfile();
    ad_codegen_opts o = {.prefix = "p"};
    cr_expect_eq(ad_codegen(t, y, 1, &x, NULL, f, NULL), AD_EMISUSE);
    EXPECT_MSG("opts is NULL");
    cr_expect_eq(ad_codegen(t, y, 1, &x, &o, NULL, NULL), AD_EMISUSE);
    EXPECT_MSG("source stream is NULL");
    cr_expect_eq(ad_codegen(NULL, y, 1, &x, &o, f, NULL), AD_EMISUSE);
    /* write errors: a stream open for reading takes nothing */
    char ro_path[512];
    snprintf(ro_path, sizeof ro_path, "%s/readonly.txt", AD_TEST_TMP);
    mkdir(AD_TEST_TMP, 0777);
    FILE *mk = fopen(ro_path, "w");
    cr_assert(mk);
    fclose(mk);
    FILE *ro = fopen(ro_path, "r");
    cr_assert(ro);
    cr_expect_eq(ad_codegen(t, y, 1, &x, &o, ro, NULL), AD_EIO);
    EXPECT_MSG("codegen: write error on the source stream");
    cr_expect_eq(ad_codegen(t, y, 1, &x, &o, f, ro), AD_EIO);
    EXPECT_MSG("codegen: write error on the header stream");
    fclose(ro);
    cr_expect_str_eq(ad_strstatus(AD_EIO), "write error on an output stream");
    /* none of these is sticky: the tape records and generates on */
    cr_expect_eq(ad_tape_status(t), AD_OK);
    cr_expect_eq(ad_codegen(t, y, 1, &x, &o, f, NULL), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_str_eq(ad_tape_errmsg(t), "");
    fclose(f);
    ad_tape_free(t);
}

Test(codegen, out_of_memory_is_reported)
{
    test_alloc a = {0};
    ad_tape_opts opts = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&opts);
    const uint32_t idx[2] = {1, 0};
    ad_node x = ad_variable(t, ad_shape_vec(2), NULL);
    ad_node y = ad_sum(t, ad_take(t, ad_sin(t, x), 2, idx));
    cr_assert_eq(ad_tape_status(t), AD_OK);
    ad_codegen_opts o = {.prefix = "p"};
    int seen = 0;
    for (size_t k = 1; k < 10; k++) {
        FILE *f = tmpfile();
        a.fail_at = a.count + k;
        const int st = ad_codegen(t, y, 1, &x, &o, f, NULL);
        a.fail_at = 0;
        fclose(f);
        if (st == AD_OK)
            break;
        cr_expect_eq(st, AD_ENOMEM);
        EXPECT_MSG("codegen: out of memory");
        seen++;
    }
    cr_expect_eq(seen, 2, "the node table and the index table: %d failures", seen);
    /* a recording that failed: its status, nothing generated */
    ad_node bad = ad_add(t, x, ad_variable(t, ad_shape_vec(3), NULL));
    cr_assert(ad_node_is_nil(bad));
    FILE *f = tmpfile();
    cr_expect_eq(ad_codegen(t, y, 1, &x, &o, f, NULL), AD_ESHAPE);
    fclose(f);
    ad_tape_free(t);
    cr_expect_eq(a.bytes, 0, "leaked %zu bytes", (size_t)a.bytes);
}

/* A big irregular tape (level order, groups, tables) with the allocator
 * failing at each of a spread of its calls: AD_ENOMEM with the message
 * when the node table cannot be had, otherwise AD_OK (a scratch that
 * cannot be had means statements written one by one); never a leak. */
Test(codegen, out_of_memory_in_level_order)
{
    test_alloc a = {0};
    ad_tape_opts opts = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&opts);
    test_rng r = {0xb17};
    const double vv[3] = {0.3, -0.7, 1.1};
    ad_node in[6];
    for (int i = 0; i < 5; i++)
        in[i] = ad_scalar_var(t, 0.2 * i - 0.45);
    in[5] = ad_variable(t, ad_shape_vec(3), vv);
    ad_node F = chain_graph(t, &r, in, 6, 1500);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    ad_codegen_opts o = {.prefix = "p"};
    FILE *f = tmpfile();
    const size_t before = a.count;
    cr_assert_eq(ad_codegen(t, F, 6, in, &o, f, NULL), AD_OK, "%s", ad_tape_errmsg(t));
    const long full = ftell(f);
    fclose(f);
    const size_t calls = a.count - before;
    cr_assert_gt(calls, 8, "level order allocates its scratch: %zu calls", calls);
    int ok = 0, nomem = 0;
    for (size_t k = 1; k <= calls; k += k < 16 ? 1 : calls / 40 + 1) {
        f = tmpfile();
        a.fail_at = a.count + k;
        const int st = ad_codegen(t, F, 6, in, &o, f, NULL);
        a.fail_at = 0;
        if (st == AD_OK) {
            ok++;
            cr_expect_gt(ftell(f), 0);
        } else {
            cr_expect_eq(st, AD_ENOMEM, "allocation %zu: %d", k, st);
            EXPECT_MSG("codegen: out of memory");
            nomem++;
        }
        fclose(f);
    }
    cr_expect_gt(ok, 0, "a failed scratch falls back");
    cr_expect_gt(nomem, 0, "the node table's failure is reported");
    cr_expect_gt(full, 0);
    ad_tape_free(t);
    cr_expect_eq(a.bytes, 0, "leaked %zu bytes", (size_t)a.bytes);
}

/* ---- the worked example of docs/codegen.md: the seed neuron ---- */

Test(codegen, seed_neuron_of_the_docs)
{
    need_cc();
    ad_tape *t = ad_tape_new(NULL);
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    ad_node W = ad_variable(t, ad_shape_vec(3), W0), x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node b = ad_scalar_var(t, 7);
    ad_node z = ad_add(t, ad_dot(t, W, x), b);
    ad_node J = ad_scale(t, ad_square(t, ad_add_const(t, ad_relu(t, z), -5)), 0.5);
    const ad_node in[3] = {W, x, b};
    void *so = build(t, J, 3, in, "neuron", AD_CODEGEN_FORWARD | AD_CODEGEN_VJP, 0, 0);
    double w[64], dW[3], dx[3], db, y;
    cr_assert_leq(((ws_fn)sym(so, "neuron", "work_size"))(), 64);
    const double bv = 7, *ins[3] = {W0, x0, &bv};
    double *grads[3] = {dW, dx, &db};
    cr_assert_eq(((grad_fn)sym(so, "neuron", "gradient"))(ins, &y, grads, w), 0);
    /* the lecture notes' numbers (README), exactly */
    const double want[8] = {8, -4, 0, -8, -16, -8, 20, -4};
    const double got[8] = {y, dW[0], dW[1], dW[2], dx[0], dx[1], dx[2], db};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(got[i], want[i], "entry %d: %g, want %g", i, got[i], want[i]);
    /* a small tape: forward and vjp are one function each, in locals */
    char path[512], line[512];
    snprintf(path, sizeof path, "%s/neuron.c", AD_TEST_TMP);
    FILE *f = fopen(path, "r");
    int locals = 0, chunks = 0;
    while (fgets(line, sizeof line, f)) {
        locals += strstr(line, "neuron_real v5, u5 = -0.0;") != NULL;
        chunks += strncmp(line, "static int neuron_f", 19) == 0;
    }
    fclose(f);
    cr_expect_eq(locals, 1);
    cr_expect_eq(chunks, 0);
    dlclose(so);
    ad_tape_free(t);
}

/* ---- custom ops: the caller's C functions ---- */

static void wsum_fwd(const ad_call *k) /* y = sum_i (i + 1) x_i^3 * c */
{
    double s = 0;
    for (size_t i = 0; i < ad_shape_size(k->in[0].shape); i++)
        s += (double)(i + 1) * k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
    k->out.val[0] = s * k->c;
}
static void wsum_vjp(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->in[0].shape); i++)
        k->in[0].grad[i] += k->out.grad[0] * k->c * 3.0 * (double)(i + 1) * k->in[0].val[i] * k->in[0].val[i];
}
static int wsum_shape(const ad_shape *in, int nin, double c, ad_shape *out, char *msg, size_t cap)
{
    (void)in, (void)nin, (void)c, (void)msg, (void)cap;
    *out = ad_shape_scalar();
    return AD_OK;
}
static const ad_codegen_rule wsum_rule = {"wsum_c", "wsum_vjp_c"};
static const ad_opdef wsum = {.name = "wsum", .arity = 1, .shape = wsum_shape, .forward = wsum_fwd,
                              .vjp = wsum_vjp, .size = sizeof(ad_opdef), .codegen = &wsum_rule};
static const ad_codegen_rule half_rule = {"wsum_c", NULL};
static const ad_opdef wsum_novjp = {.name = "wsum_fwd_only", .arity = 1, .shape = wsum_shape,
                                    .forward = wsum_fwd, .vjp = wsum_vjp,
                                    .size = sizeof(ad_opdef), .codegen = &half_rule};
static const ad_opdef wsum_norule = {.name = "wsum_old", .arity = 1, .shape = wsum_shape,
                                     .forward = wsum_fwd, .vjp = wsum_vjp, .codegen = &wsum_rule};

Test(codegen, custom_op_calls_the_callers_functions)
{
    need_cc();
    char path[512];
    snprintf(path, sizeof path, "%s/wsum_impl.c", AD_TEST_TMP);
    mkdir(AD_TEST_TMP, 0777);
    FILE *f = fopen(path, "w");
    /* the same op in the generated code's terms */
    fprintf(f, "void wsum_c(const double *const *in, double *out, const unsigned long *sz, double c);\n"
               "void wsum_vjp_c(const double *const *in, const double *out, const double *g,\n"
               "    double *const *gin, const unsigned long *sz, double c);\n"
               "void wsum_c(const double *const *in, double *out, const unsigned long *sz, double c)\n"
               "{\n    double s = 0;\n    for (unsigned long i = 0; i < sz[0]; i++)\n"
               "        s += (double)(i + 1) * in[0][i] * in[0][i] * in[0][i];\n"
               "    out[0] = s * c;\n}\n"
               "void wsum_vjp_c(const double *const *in, const double *out, const double *g,\n"
               "    double *const *gin, const unsigned long *sz, double c)\n{\n    (void)out;\n"
               "    if (gin[0])\n        for (unsigned long i = 0; i < sz[0]; i++)\n"
               "            gin[0][i] += g[0] * c * 3.0 * (double)(i + 1) * in[0][i] * in[0][i];\n}\n");
    fclose(f);
    ad_tape *t = ad_tape_new(NULL);
    const double xv[4] = {0.5, -1.2, 0.8, 1.5};
    ad_node x = ad_variable(t, ad_shape_vec(4), xv), s = ad_scalar_var(t, 0.3);
    ad_node sx = ad_mul(t, x, s);
    ad_node y = ad_sin(t, ad_apply(t, &wsum, &sx, 1, 0.7));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    const ad_node in[2] = {x, s};
    extra_src = path;
    check_all(t, y, 2, in, "cst", AD_CODEGEN_FORWARD | AD_CODEGEN_VJP | AD_CODEGEN_JACOBIAN, 0);
    extra_src = NULL;
    /* what the rule lacks is refused, naming the op */
    cr_expect_eq(gen_err(t, y, 2, in, "p", AD_CODEGEN_JVP), AD_EMISUSE);
    EXPECT_MSG("custom op 'wsum' (node ");
    EXPECT_MSG("has no JVP rule");
    ad_node y2 = ad_apply(t, &wsum_novjp, &sx, 1, 1.0);
    cr_expect_eq(gen_err(t, y2, 2, in, "p", 0), AD_EMISUSE);
    EXPECT_MSG("custom op 'wsum_fwd_only'");
    EXPECT_MSG("no vjp function");
    cr_expect_eq(gen_err(t, y2, 2, in, "p", AD_CODEGEN_FORWARD), AD_OK, "%s", ad_tape_errmsg(t));
    /* a descriptor whose size does not cover the field has no rule */
    ad_node y3 = ad_apply(t, &wsum_norule, &sx, 1, 1.0);
    cr_expect_eq(gen_err(t, y3, 2, in, "p", AD_CODEGEN_FORWARD), AD_EMISUSE);
    EXPECT_MSG("custom op 'wsum_old'");
    ad_tape_free(t);
}
