/* test_codegen_sparse.c -- ad_codegen_sparse: the generated sparse
 * Jacobian and Hessian values against ad_sparse_eval, in its order.
 *
 * Generated code is compiled with the system compiler during the run
 * (AD_TEST_CC, found at configure time; without one the tests skip) with
 * -Werror into a shared object and loaded with dlopen, as test_codegen
 * does. Several generated files go into one source (every symbol carries
 * its prefix), so the run compiles a handful of files. Values: 1e-13
 * (test_err: relative above 1, absolute below) in double; in float, 1e-4
 * (a chain of ~16 float ops with derivatives of order 1-10). The pattern
 * (P_sparse_pattern) must be ad_sparse_pattern's, exactly. */
#define _POSIX_C_SOURCE 200809L
#include "support.h"

#include <autodiff/autodiff.h>
#include <autodiff/codegen.h>
#include <autodiff/sparse.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../examples/luksan_vlcek.h"

#ifndef AD_TEST_TMP
#define AD_TEST_TMP "codegen_tmp"
#endif

/* a directory of its own: test_codegen runs beside it, and every test
 * here writes files of distinct prefixes */
#define SP_TMP AD_TEST_TMP "/sparse"

#define TOL 1e-13
#define TOL_FLOAT 1e-4

typedef int (*sparse_fn)(const double *, const double *, double *, double *);
typedef int (*sparse_f_fn)(const float *, const float *, float *, float *);
typedef int (*fwd_fn)(const double *, double *, double *);
typedef void (*pat_fn)(int *, int *);
typedef unsigned long (*ws_fn)(void);
typedef void (*any_fn)(void);

static void need_cc(void)
{
#ifndef AD_TEST_CC
    cr_skip_test("no C compiler found at configure time (cc, gcc, clang): generated code is "
                 "not compiled, so this test does not run");
#endif
}

/* Generated files compiled together into one shared object (each its own
 * translation unit: the helpers are static). */
typedef struct unit {
    char name[64], files[8192];
} unit;

static void unit_open(unit *u, const char *name)
{
    need_cc();
    mkdir(AD_TEST_TMP, 0777);
    mkdir(SP_TMP, 0777);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->files[0] = '\0';
}

static void gen(unit *u, const ad_sparse *sp, ad_tape *t, const char *prefix, int use_float,
                size_t max_stmts)
{
    ad_codegen_opts o;
    memset(&o, 0, sizeof o);
    o.prefix = prefix;
    o.use_float = use_float;
    o.max_stmts = max_stmts;
    char hpath[512], cpath[512], hname[64];
    snprintf(hpath, sizeof hpath, "%s/%s.h", SP_TMP, prefix);
    snprintf(cpath, sizeof cpath, "%s/%s.c", SP_TMP, prefix);
    snprintf(hname, sizeof hname, "%s.h", prefix);
    o.header_name = hname; /* the source checks itself against its header */
    FILE *h = fopen(hpath, "w"), *c = fopen(cpath, "w");
    cr_assert(h && c);
    const int st = ad_codegen_sparse(sp, &o, c, h);
    fclose(h);
    fclose(c);
    cr_assert_lt(strlen(u->files) + strlen(cpath) + 2, sizeof u->files);
    strcat(u->files, " ");
    strcat(u->files, cpath);
    cr_assert_eq(st, AD_OK, "ad_codegen_sparse: %s", ad_tape_errmsg(t));
}

/* Compiles (-Werror; the headers too, each on its own) and loads. */
static void *unit_load(unit *u, const char *const *headers, int nh)
{
#ifdef AD_TEST_CC
    char cmd[12288], so[512];
    for (int k = 0; k < nh; k++) { /* each header compiles alone */
        snprintf(cmd, sizeof cmd,
                 "%s -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only -x c %s/%s.h",
                 AD_TEST_CC, SP_TMP, headers[k]);
        cr_assert_eq(system(cmd), 0, "the header does not compile: %s", cmd);
    }
    snprintf(so, sizeof so, "%s/%s.so", SP_TMP, u->name);
    snprintf(cmd, sizeof cmd,
             "%s -std=c99 -O0 -Wall -Wextra -pedantic -Werror -shared -fPIC -o %s %s -lm",
             AD_TEST_CC, so, u->files);
    cr_assert_eq(system(cmd), 0, "compiling the generated code failed: %s", cmd);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    cr_assert(h, "dlopen: %s", dlerror());
    return h;
#else
    (void)headers, (void)nh;
    return NULL;
#endif
}

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

/* The generated values of (sp, prefix) at x (weights w, NULL: none)
 * against ad_sparse_eval's there; the pattern against ad_sparse_pattern;
 * P_forward (when fwd) against the outputs' values. */
static void check(void *so, const char *prefix, ad_sparse *sp, ad_tape *t, const double *x,
                  const double *w, size_t nw, int use_float, const ad_node *outs, int nout)
{
    const size_t nnz = ad_sparse_nnz(sp), n = ad_sparse_cols(sp);
    double *want = malloc((nnz + 1) * sizeof *want), *got = malloc((nnz + 1) * sizeof *got);
    cr_assert_eq(ad_sparse_eval(sp, x, n, w, w ? nw : 0, want), AD_OK, "%s", ad_tape_errmsg(t));
    const size_t ws = ((ws_fn)sym(so, prefix, "work_size"))();
    int *r0 = malloc((nnz + 1) * sizeof *r0), *c0 = malloc((nnz + 1) * sizeof *c0);
    int *r1 = malloc((nnz + 1) * sizeof *r1), *c1 = malloc((nnz + 1) * sizeof *c1);
    ad_sparse_pattern(sp, r0, c0);
    ((pat_fn)sym(so, prefix, "sparse_pattern"))(r1, c1);
    for (size_t q = 0; q < nnz; q++)
        cr_assert(r0[q] == r1[q] && c0[q] == c1[q], "%s: nonzero %zu at (%d,%d), want (%d,%d)",
                  prefix, q, r1[q], c1[q], r0[q], c0[q]);
    ((pat_fn)sym(so, prefix, "sparse_pattern"))(NULL, c1); /* either may be NULL */
    if (!use_float) {
        double *work = malloc(ws * sizeof *work);
        for (size_t i = 0; i < ws; i++)
            work[i] = NAN; /* nothing read before written */
        const int br = ((sparse_fn)sym(so, prefix, "sparse"))(x, w, got, work);
        cr_assert_eq(br, 0, "%s: a guard fired", prefix);
        for (size_t q = 0; q < nnz; q++)
            cr_assert(test_err(got[q], want[q]) <= TOL, "%s: nonzero %zu (%d,%d): generated "
                      "%.17g, ad_sparse_eval %.17g", prefix, q, r0[q], c0[q], got[q], want[q]);
        if (outs) { /* P_forward: the outputs' elements, in order */
            size_t m = 0;
            for (int k = 0; k < nout; k++)
                m += ad_shape_size(ad_node_shape(t, outs[k]));
            double *o = malloc(m * sizeof *o);
            cr_assert_eq(((fwd_fn)sym(so, prefix, "forward"))(x, o, work), 0);
            m = 0;
            for (int k = 0; k < nout; k++) {
                const double *v = ad_value(t, outs[k]);
                for (size_t e = 0; e < ad_shape_size(ad_node_shape(t, outs[k])); e++, m++)
                    cr_assert(test_err(o[m], v[e]) <= TOL, "%s: out[%zu] %.17g, tape %.17g",
                              prefix, m, o[m], v[e]);
            }
            free(o);
        }
        free(work);
    } else {
        float *work = malloc(ws * sizeof *work), *xf = malloc(n * sizeof *xf),
              *wf = malloc((nw + 1) * sizeof *wf), *gf = malloc((nnz + 1) * sizeof *gf);
        for (size_t i = 0; i < n; i++)
            xf[i] = (float)x[i];
        for (size_t i = 0; w && i < nw; i++)
            wf[i] = (float)w[i];
        cr_assert_eq(((sparse_f_fn)sym(so, prefix, "sparse"))(xf, w ? wf : NULL, gf, work), 0);
        for (size_t q = 0; q < nnz; q++)
            cr_assert(test_err(gf[q], want[q]) <= TOL_FLOAT,
                      "%s (float): nonzero %zu: generated %.9g, ad_sparse_eval %.17g", prefix, q,
                      (double)gf[q], want[q]);
        free(work), free(xf), free(wf), free(gf);
    }
    free(want), free(got), free(r0), free(c0), free(r1), free(c1);
}

/* ---- random small functions (as test_sparse's) ---- */

#define MAXN 8
#define MAXM 6

typedef struct rfun {
    int n, m;
    ad_node x[MAXN], out[MAXM];
} rfun;

static ad_node pick(test_rng *r, const ad_node *pool, int np)
{
    const int k = (int)(test_rng_next(r) % (uint64_t)np);
    const int j = (int)(test_rng_next(r) % (uint64_t)np);
    return pool[k > j ? k : j];
}

/* n scalar inputs, m scalar outputs; some outputs constants (empty rows),
 * with unused set the last input is never read (an empty column) */
static void rec_random(ad_tape *t, test_rng *r, rfun *f, bool unused)
{
    f->n = 1 + (int)(test_rng_next(r) % MAXN);
    f->m = 1 + (int)(test_rng_next(r) % MAXM);
    ad_node pool[MAXN + 64];
    int np = 0;
    for (int i = 0; i < f->n; i++) {
        f->x[i] = ad_scalar_var(t, test_uniform(r, -1, 1));
        if (!(unused && i == f->n - 1 && f->n > 1))
            pool[np++] = f->x[i];
    }
    const int nops = 2 + (int)(test_rng_next(r) % 14);
    for (int k = 0; k < nops; k++) {
        ad_node a = pick(r, pool, np), b = pick(r, pool, np), z;
        switch (test_rng_next(r) % 11) {
        case 0: z = ad_add(t, a, b); break;
        case 1: case 2: z = ad_mul(t, a, b); break;
        case 3: z = ad_div(t, a, ad_add_const(t, ad_square(t, b), 1.5)); break;
        case 4: z = ad_sin(t, a); break;
        case 5: z = ad_exp(t, ad_scale(t, a, 0.3)); break;
        case 6: z = ad_tanh(t, a); break;
        case 7: z = ad_square(t, a); break;
        case 8: z = ad_scale(t, ad_add(t, a, ad_cos(t, b)), 1.7); break;
        case 9: z = ad_sub(t, ad_mul(t, a, a), b); break;
        default: z = ad_log1p(t, ad_square(t, a)); break;
        }
        pool[np++] = z;
    }
    for (int k = 0; k < f->m; k++) {
        const uint64_t c = test_rng_next(r) % 8;
        f->out[k] = c == 0 ? ad_scalar(t, 2.5) : pick(r, pool, np); /* 0: an empty row */
    }
}

enum { NTRIAL = 24 };

static void random_functions(int use_float)
{
    test_rng r = {use_float ? 11u : 5u};
    unit u;
    unit_open(&u, use_float ? "csp_random_f" : "csp_random");
    ad_tape *t[NTRIAL];
    rfun f[NTRIAL];
    ad_sparse *sj[NTRIAL], *sh[NTRIAL];
    char pj[NTRIAL][16], ph[NTRIAL][16];
    int empty_rows = 0, empty_cols = 0;
    for (int k = 0; k < NTRIAL; k++) {
        t[k] = ad_tape_new(NULL);
        rec_random(t[k], &r, &f[k], k % 3 == 0);
        cr_assert_eq(ad_tape_status(t[k]), AD_OK, "%s", ad_tape_errmsg(t[k]));
        cr_assert_eq(ad_sparse_jacobian_new(t[k], f[k].m, f[k].out, f[k].n, f[k].x, 0, &sj[k]),
                     AD_OK, "%s", ad_tape_errmsg(t[k]));
        cr_assert_eq(ad_sparse_hessian_new(t[k], f[k].m, f[k].out, f[k].n, f[k].x, 0, &sh[k]),
                     AD_OK, "%s", ad_tape_errmsg(t[k]));
        size_t rp[MAXM + 1];
        ad_sparse_csr(sj[k], rp, NULL);
        for (int i = 0; i < f[k].m; i++)
            empty_rows += rp[i + 1] == rp[i];
        empty_cols += k % 3 == 0 && f[k].n > 1;
        snprintf(pj[k], sizeof pj[k], "%sj%d", use_float ? "f" : "r", k);
        snprintf(ph[k], sizeof ph[k], "%sh%d", use_float ? "f" : "r", k);
        gen(&u, sj[k], t[k], pj[k], use_float, k % 2 ? 3 : 0); /* small functions: chunks */
        gen(&u, sh[k], t[k], ph[k], use_float, k % 2 ? 3 : 0);
    }
    cr_assert(empty_rows > 0 && empty_cols > 0, "the trials have empty rows and columns");
    const char *hs[2] = {pj[0], ph[0]};
    void *so = unit_load(&u, hs, 2);
    for (int k = 0; k < NTRIAL; k++) {
        double x[MAXN], w[MAXM];
        for (int i = 0; i < f[k].n; i++) /* a new point: the generated code reads x */
            x[i] = test_uniform(&r, -1, 1);
        for (int i = 0; i < f[k].m; i++)
            w[i] = test_uniform(&r, -2, 2);
        check(so, pj[k], sj[k], t[k], x, NULL, 0, use_float, f[k].out, f[k].m);
        check(so, ph[k], sh[k], t[k], x, w, (size_t)f[k].m, use_float, f[k].out, f[k].m);
        check(so, ph[k], sh[k], t[k], x, NULL, 0, use_float, NULL, 0); /* weights 1 */
        ad_sparse_free(sj[k]);
        ad_sparse_free(sh[k]);
        ad_tape_free(t[k]);
    }
    dlclose(so);
}

Test(codegen_sparse, random_functions_equal_sparse_eval)
{
    random_functions(0);
}

Test(codegen_sparse, random_functions_in_float)
{
    random_functions(1);
}

/* every column coupled with every other: a dense Jacobian (N colours) and
 * a dense lower triangle */
Test(codegen_sparse, fully_dense)
{
    enum { N = 6 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N], out[3];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.1 * (i + 1));
    ad_node s = x[0];
    for (int i = 1; i < N; i++)
        s = ad_add(t, s, ad_mul(t, x[i], ad_scale(t, x[i - 1], 0.5 + i)));
    out[0] = ad_exp(t, s);
    out[1] = ad_square(t, s);
    out[2] = ad_sin(t, s);
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 3, out, N, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 3, out, N, x, 0, &sh), AD_OK);
    cr_assert_eq(ad_sparse_colors(sj), N);
    cr_assert_eq(ad_sparse_nnz(sh), N * (N + 1) / 2);
    unit u;
    unit_open(&u, "csp_dense");
    gen(&u, sj, t, "dj", 0, 0);
    gen(&u, sh, t, "dh", 0, 0);
    void *so = unit_load(&u, (const char *[]){"dj", "dh"}, 2);
    const double x1[N] = {0.3, -0.2, 0.5, 0.1, -0.4, 0.25}, w[3] = {0.5, -1.5, 2.0};
    check(so, "dj", sj, t, x1, NULL, 0, 0, out, 3);
    check(so, "dh", sh, t, x1, w, 3, 0, out, 3);
    dlclose(so);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* the solvers and the softmax family in generated sparse values: their
 * factors and scratch in the work array (ad_codegen's regions for them) */
Test(codegen_sparse, solvers_and_softmax)
{
    ad_tape *t = ad_tape_new(NULL);
    const double A0[9] = {0.2, 2.0, 0.1, 1.5, 0.3, -0.4, 0.1, 0.5, 1.8}; /* pivoting needed */
    const double b0[3] = {0.7, -0.3, 1.1};
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), A0), b = ad_variable(t, ad_shape_vec(3), b0);
    ad_node y = ad_solve(t, A, b);
    ad_node out[2] = {y, ad_add(t, ad_logdet(t, A), ad_dot(t, ad_softmax(t, b), b))};
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    const ad_node in[2] = {A, b};
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, out, 2, in, 0, &sj), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_hessian_new(t, 1, out + 1, 2, in, 0, &sh), AD_OK, "%s",
                 ad_tape_errmsg(t));
    unit u;
    unit_open(&u, "csp_solvers");
    gen(&u, sj, t, "sj", 0, 0);
    gen(&u, sh, t, "sh", 0, 0);
    void *so = unit_load(&u, (const char *[]){"sj", "sh"}, 2);
    const double x1[12] = {0.3, 2.1, 0.2, 1.4, 0.1, -0.5, 0.2, 0.6, 1.7, 0.5, -0.2, 0.9};
    const double w[1] = {1.5};
    check(so, "sj", sj, t, x1, NULL, 0, 0, NULL, 0);
    check(so, "sh", sh, t, x1, w, 1, 0, NULL, 0);
    dlclose(so);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* tensor inputs and outputs (vectors, a matrix), tensor ops -- statements
 * written once per direction -- and a replay guard */
Test(codegen_sparse, tensor_ops)
{
    const double x0[4] = {0.3, -0.7, 1.1, -0.2}, W0[12] = {0.5, -1, 0.2, 0.7, 1.3, -0.4,
                                                            0.9, 0.1, -0.6, 0.8, 0.3, -1.2};
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_variable(t, ad_shape_vec(4), x0);
    ad_node W = ad_variable(t, ad_shape_mat(3, 4), W0);
    ad_node s = ad_scalar_var(t, 0.6);
    ad_node out[7];
    out[0] = ad_mul(t, ad_sin(t, x), x);
    out[1] = ad_matvec(t, W, ad_exp(t, x));
    out[2] = ad_reshape(t, ad_tanh(t, x), ad_shape_mat(2, 2));
    out[3] = ad_select(t, ad_gt(t, x, ad_scalar(t, 0.0)), ad_square(t, x), ad_mul(t, x, s));
    out[4] = ad_sum(t, ad_cos(t, x));
    out[5] = ad_add(t, ad_square(t, x), s);
    out[6] = ad_constant(t, ad_shape_vec(2), x0); /* empty rows, a constant P_forward writes */
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    ad_node in[3] = {x, W, s};
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 7, out, 3, in, 0, &sj), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_hessian_new(t, 7, out, 3, in, 0, &sh), AD_OK, "%s", ad_tape_errmsg(t));
    unit u;
    unit_open(&u, "csp_tensor");
    gen(&u, sj, t, "tj", 0, 0);
    gen(&u, sh, t, "th", 0, 0);
    gen(&u, sh, t, "thc", 0, 2); /* small functions */
    void *so = unit_load(&u, (const char *[]){"tj", "th"}, 2);
    enum { N = 17, M = 22 };
    double xv[N], w[M];
    test_rng r = {3};
    for (int k = 0; k < 2; k++) {
        memcpy(xv, x0, sizeof x0);
        memcpy(xv + 4, W0, sizeof W0);
        xv[16] = 0.6;
        if (k) /* the same signs: the recorded branch of the select */
            for (int i = 0; i < N; i++)
                xv[i] *= test_uniform(&r, 0.5, 1.5);
        for (int i = 0; i < M; i++)
            w[i] = test_uniform(&r, -1, 1);
        check(so, "tj", sj, t, xv, NULL, 0, 0, out, 7);
        check(so, "th", sh, t, xv, w, M, 0, out, 7);
        check(so, "thc", sh, t, xv, w, M, 0, NULL, 0);
    }
    /* another sign of x[0]: the guard says so (values of the recorded branch) */
    xv[0] = -xv[0];
    double vals[N * N], *work = malloc(((ws_fn)sym(so, "tj", "work_size"))() * sizeof *work);
    cr_assert_eq(((sparse_fn)sym(so, "tj", "sparse"))(xv, NULL, vals, work), 1);
    free(work);
    dlclose(so);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* HS071 (IPOPT's example): f = x0 x3 (x0 + x1 + x2) + x2, g0 = x0 x1 x2 x3,
 * g1 = sum x_i^2 */
Test(codegen_sparse, hs071)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[4], out[3];
    const double x0[4] = {1, 5, 5, 1};
    for (int i = 0; i < 4; i++)
        x[i] = ad_scalar_var(t, x0[i]);
    ad_node s = ad_add(t, ad_add(t, x[0], x[1]), x[2]);
    out[0] = ad_add(t, ad_mul(t, ad_mul(t, x[0], x[3]), s), x[2]);
    out[1] = ad_mul(t, ad_mul(t, ad_mul(t, x[0], x[1]), x[2]), x[3]);
    out[2] = ad_square(t, x[0]);
    for (int i = 1; i < 4; i++)
        out[2] = ad_add(t, out[2], ad_square(t, x[i]));
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 2, out + 1, 4, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 3, out, 4, x, 0, &sh), AD_OK);
    cr_assert_eq(ad_sparse_nnz(sj), 8);
    cr_assert_eq(ad_sparse_nnz(sh), 10);
    unit u;
    unit_open(&u, "csp_hs071");
    gen(&u, sj, t, "hsj", 0, 0);
    gen(&u, sh, t, "hsh", 0, 0);
    void *so = unit_load(&u, (const char *[]){"hsj", "hsh"}, 2);
    const double xs[4] = {1.00000000, 4.74299963, 3.82114998, 1.37940829};
    const double w[3] = {0.7, -0.3, 1.9};
    check(so, "hsj", sj, t, xs, NULL, 0, 0, out + 1, 2);
    check(so, "hsh", sh, t, xs, w, 3, 0, out, 3);
    dlclose(so);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* Luksan-Vlcek at small n: the constraints' Jacobian, the Lagrangian's
 * Hessian, the repeated blocks written as loops; and the hand-written
 * derivatives agree */
Test(codegen_sparse, luksan_vlcek)
{
    enum { N = 60, M = N - 2 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N], f, c[M], outs[M + 1];
    lv_record(t, N, x, &f, c);
    outs[0] = f;
    memcpy(outs + 1, c, sizeof c);
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, M, c, N, x, 0, &sj), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_hessian_new(t, M + 1, outs, N, x, 0, &sh), AD_OK, "%s",
                 ad_tape_errmsg(t));
    unit u;
    unit_open(&u, "csp_lv");
    gen(&u, sj, t, "lvj", 0, 0);
    gen(&u, sh, t, "lvh", 0, 0);
    gen(&u, sj, t, "lvjf", 1, 0); /* float: the blocks' locals too */
    gen(&u, sh, t, "lvhf", 1, 0);
    void *so = unit_load(&u, (const char *[]){"lvj", "lvh"}, 2);
    /* the blocks are loops */
    FILE *src = fopen(SP_TMP "/lvh.c", "r");
    cr_assert(src);
    char line[512];
    int loops = 0;
    while (fgets(line, sizeof line, src))
        loops += strstr(line, "for (unsigned long it = ") != NULL;
    fclose(src);
    /* f forward and reverse; c's blocks only in the reverse pass, which
     * recomputes their values and tangents (sp_fuse) */
    cr_assert_geq(loops, 3, "the repeated blocks are rerolled (%d loops: f, c; forward, reverse)", loops);
    double xv[N], w[M + 1];
    test_rng r = {9};
    for (int i = 0; i < N; i++)
        xv[i] = lv_x0((size_t)i) + test_uniform(&r, -0.1, 0.1);
    for (int i = 0; i <= M; i++)
        w[i] = test_uniform(&r, -1, 1);
    check(so, "lvj", sj, t, xv, NULL, 0, 0, c, M);
    check(so, "lvh", sh, t, xv, w, M + 1, 0, outs, M + 1);
    check(so, "lvjf", sj, t, xv, NULL, 0, 1, NULL, 0);
    check(so, "lvhf", sh, t, xv, w, M + 1, 1, NULL, 0);
    /* a Jacobian's blocks keep what only they read in locals */
    src = fopen(SP_TMP "/lvj.c", "r");
    cr_assert(src);
    int locals = 0;
    while (fgets(line, sizeof line, src))
        locals += strstr(line, "lvj_real l") != NULL;
    fclose(src);
    cr_assert_geq(locals, 10, "locals in the constraints' block: %d", locals);
    /* and a Hessian's reverse blocks their adjoints */
    src = fopen(SP_TMP "/lvh.c", "r");
    cr_assert(src);
    locals = 0;
    while (fgets(line, sizeof line, src))
        locals += strstr(line, "lvh_real ua") != NULL;
    fclose(src);
    cr_assert_geq(locals, 10, "adjoint locals in the reverse blocks: %d", locals);
    /* and the hand-written ones */
    double vj[3 * M], hj[3 * M], vh[2 * N - 1], hh[2 * N - 1], d[N], o[N];
    double *work = malloc(((ws_fn)sym(so, "lvh", "work_size"))() * sizeof *work);
    ((sparse_fn)sym(so, "lvj", "sparse"))(xv, NULL, vj, work);
    ((sparse_fn)sym(so, "lvh", "sparse"))(xv, w, vh, work);
    lv_jac(N, xv, hj);
    lv_hess(N, xv, w[0], w + 1, hh, d, o);
    cr_assert_eq(ad_sparse_nnz(sj), 3 * M);
    cr_assert_eq(ad_sparse_nnz(sh), 2 * N - 1);
    for (int q = 0; q < 3 * M; q++)
        cr_assert(test_err(vj[q], hj[q]) <= 1e-12, "J %d: %.17g hand %.17g", q, vj[q], hj[q]);
    for (int q = 0; q < 2 * N - 1; q++)
        cr_assert(test_err(vh[q], hh[q]) <= 1e-12, "H %d: %.17g hand %.17g", q, vh[q], hh[q]);
    free(work);
    dlclose(so);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* custom op y = x^3 (sparse.h needs its jvp and hvp; generated code has no
 * rule for it) */
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
static const ad_opdef cube = {.name = "cube", .arity = 1, .forward = cube_fwd, .vjp = cube_vjp,
                              .size = sizeof(ad_opdef), .jvp = cube_jvp};
/* the same with a code generation rule: forward and vjp only */
static const ad_codegen_rule cube_rule = {"cube_c", "cube_vjp_c"};
static const ad_opdef cube_cg = {.name = "cube_cg", .arity = 1, .forward = cube_fwd,
                                 .vjp = cube_vjp, .size = sizeof(ad_opdef), .jvp = cube_jvp,
                                 .codegen = &cube_rule};

#define EXPECT_MSG(call, status, text)                                                           \
    do {                                                                                         \
        cr_assert_eq((call), (status), "%s", ad_tape_errmsg(t));                                 \
        cr_assert(strstr(ad_tape_errmsg(t), (text)), "message '%s' lacks '%s'",                  \
                  ad_tape_errmsg(t), (text));                                                    \
    } while (0)

/* Random repeated blocks (rerolled runs): each block's statements read
 * inputs near it, earlier statements of the block and statements of the
 * block before (a carried value, a running sum); some are outputs, some
 * read by later statements of their block; a select on a comparison in
 * some (the comparison is in the forward pass's statements, not the
 * reverse's: different runs). The Hessian's reverse runs recompute what
 * only their block reads (sp_fuse): the values must not change. */
Test(codegen_sparse, repeated_blocks)
{
    enum { NB = 40, NX = NB + 3, NTR = 12, MAXO = NB * 3 + 1 };
    test_rng r = {21};
    unit u;
    unit_open(&u, "csp_blocks");
    ad_tape *t[NTR];
    ad_sparse *sh[NTR], *sj[NTR];
    ad_node x[NTR][NX], outs[NTR][MAXO];
    int nout[NTR];
    char ph[NTR][16], pj[NTR][16];
    for (int k = 0; k < NTR; k++) {
        t[k] = ad_tape_new(NULL);
        for (int i = 0; i < NX; i++)
            x[k][i] = ad_scalar_var(t[k], test_uniform(&r, 0.2, 1.0));
        /* the template: op, operand kinds (0: x[i + o], 1: an earlier
         * statement of the block, 2: the previous block's statement), an
         * output or not */
        int L = 3 + (int)(test_rng_next(&r) % 6);
        int op[8], ka[8], kb[8], oa[8], ob[8], isout[8];
        for (int j = 0; j < L; j++) {
            op[j] = (int)(test_rng_next(&r) % 9);
            ka[j] = j ? (int)(test_rng_next(&r) % 3) : (int)(test_rng_next(&r) % 2) * 2;
            kb[j] = j ? (int)(test_rng_next(&r) % 3) : (int)(test_rng_next(&r) % 2) * 2;
            oa[j] = (int)(test_rng_next(&r) % 3);
            ob[j] = (int)(test_rng_next(&r) % 3);
            isout[j] = test_rng_next(&r) % 4 == 0;
        }
        isout[L - 1] = 1;
        if (k < 2) { /* the previous block's value read nonlinearly: x_b sin x_{b+1},
                        sin(that - x_{b+2}), that sin(the previous block's) */
            L = 3;
            op[0] = 1, ka[0] = 0, oa[0] = 0, kb[0] = 0, ob[0] = 1, isout[0] = k;
            op[1] = 2, ka[1] = 1, oa[1] = 0, kb[1] = 0, ob[1] = 2, isout[1] = 0;
            op[2] = 1, ka[2] = 1, oa[2] = 1, kb[2] = 2, ob[2] = 1, isout[2] = 1;
        }
        const bool sum = test_rng_next(&r) % 2 == 0;
        ad_node prev[8], cur[8], s = ad_scalar(t[k], 0.0);
        for (int j = 0; j < L; j++)
            prev[j] = x[k][j % NX];
        nout[k] = 0;
        for (int b = 0; b < NB; b++) {
            for (int j = 0; j < L; j++) {
                ad_node a = ka[j] == 0 ? x[k][b + oa[j]] : ka[j] == 1 ? cur[oa[j] % j] : prev[oa[j] % L];
                ad_node c = kb[j] == 0 ? x[k][b + ob[j]] : kb[j] == 1 ? cur[ob[j] % j] : prev[ob[j] % L];
                ad_node z;
                switch (op[j]) {
                /* each bounded by 3 when its operands are: no overflow */
                case 0: z = ad_scale(t[k], ad_add(t[k], a, c), 0.5); break;
                case 1: z = ad_mul(t[k], a, ad_sin(t[k], c)); break;
                case 2: z = ad_sin(t[k], ad_sub(t[k], a, c)); break;
                case 3: z = ad_scale(t[k], ad_pow_const(t[k], a, 3.0), 0.1); break;
                case 4: z = ad_exp(t[k], ad_scale(t[k], ad_sin(t[k], ad_mul(t[k], a, c)), 0.3)); break;
                case 5: /* the comparison always true */
                    z = ad_select(t[k], ad_gt(t[k], ad_add_const(t[k], ad_square(t[k], a), 1.0), ad_scalar(t[k], 0.0)),
                                  ad_scale(t[k], ad_square(t[k], c), 0.3), a);
                    break;
                case 6: z = ad_div(t[k], a, ad_add_const(t[k], ad_square(t[k], c), 1.0)); break;
                case 7: z = ad_add_const(t[k], ad_scale(t[k], a, 0.5), -1.0); break;
                default: z = ad_tanh(t[k], ad_add(t[k], a, c)); break;
                }
                cur[j] = z;
                if (isout[j] && nout[k] < MAXO - 1)
                    outs[k][nout[k]++] = z;
            }
            if (sum)
                s = ad_add(t[k], s, cur[L - 1]);
            memcpy(prev, cur, sizeof prev);
        }
        outs[k][nout[k]++] = sum ? s : prev[0];
        cr_assert_eq(ad_tape_status(t[k]), AD_OK, "%s", ad_tape_errmsg(t[k]));
        cr_assert_eq(ad_sparse_hessian_new(t[k], nout[k], outs[k], NX, x[k], 0, &sh[k]), AD_OK,
                     "%s", ad_tape_errmsg(t[k]));
        cr_assert_eq(ad_sparse_jacobian_new(t[k], nout[k], outs[k], NX, x[k], 0, &sj[k]), AD_OK,
                     "%s", ad_tape_errmsg(t[k]));
        snprintf(ph[k], sizeof ph[k], "bh%d", k);
        snprintf(pj[k], sizeof pj[k], "bj%d", k);
        gen(&u, sh[k], t[k], ph[k], 0, k % 3 == 2 ? 40 : 0);
        gen(&u, sj[k], t[k], pj[k], 0, 0);
    }
    void *so = unit_load(&u, (const char *[]){ph[0], pj[0]}, 2);
    for (int k = 0; k < NTR; k++) {
        double xv[NX], w[MAXO];
        for (int i = 0; i < NX; i++) /* the same signs: the recorded branches */
            xv[i] = test_uniform(&r, 0.2, 1.0);
        for (int i = 0; i < nout[k]; i++)
            w[i] = test_uniform(&r, -1, 1);
        check(so, ph[k], sh[k], t[k], xv, w, (size_t)nout[k], 0, outs[k], nout[k]);
        check(so, ph[k], sh[k], t[k], xv, NULL, 0, 0, NULL, 0);
        check(so, pj[k], sj[k], t[k], xv, NULL, 0, 0, outs[k], nout[k]);
        ad_sparse_free(sh[k]);
        ad_sparse_free(sj[k]);
        ad_tape_free(t[k]);
    }
    dlclose(so);
}

Test(codegen_sparse, misuse_is_reported_with_a_message)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[3];
    for (int i = 0; i < 3; i++)
        x[i] = ad_scalar_var(t, 0.5 + i);
    ad_node y = ad_mul(t, x[0], ad_sin(t, x[1]));
    ad_sparse *sp;
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &y, 3, x, 0, &sp), AD_OK);
    ad_codegen_opts o;
    memset(&o, 0, sizeof o);
    o.prefix = "ok";
    FILE *f = tmpfile();
    cr_assert(f);
    cr_assert_eq(ad_codegen_sparse(NULL, &o, f, NULL), AD_EMISUSE);
    EXPECT_MSG(ad_codegen_sparse(sp, NULL, f, NULL), AD_EMISUSE, "codegen_sparse: opts is NULL");
    EXPECT_MSG(ad_codegen_sparse(sp, &o, NULL, NULL), AD_EMISUSE,
               "codegen_sparse: the source stream is NULL");
    o.prefix = "9lives";
    EXPECT_MSG(ad_codegen_sparse(sp, &o, f, NULL), AD_EMISUSE,
               "codegen_sparse: the prefix '9lives' is not a C identifier");
    o.prefix = NULL;
    EXPECT_MSG(ad_codegen_sparse(sp, &o, f, NULL), AD_EMISUSE, "the prefix '(null)'");
    o.prefix = "ok";
    o.what = AD_CODEGEN_VJP;
    EXPECT_MSG(ad_codegen_sparse(sp, &o, f, NULL), AD_EMISUSE,
               "codegen_sparse: what may hold AD_CODEGEN_FORWARD only (0x2 asked)");
    o.what = AD_CODEGEN_FORWARD;
    cr_assert_eq(ad_codegen_sparse(sp, &o, f, NULL), AD_OK, "%s", ad_tape_errmsg(t));
    /* a write error */
    FILE *ro = fopen("/dev/null", "r");
    cr_assert(ro);
    EXPECT_MSG(ad_codegen_sparse(sp, &o, ro, NULL), AD_EIO,
               "codegen_sparse: write error on the source stream");
    EXPECT_MSG(ad_codegen_sparse(sp, &o, f, ro), AD_EIO,
               "codegen_sparse: write error on the header stream");
    fclose(ro);
    /* an op with no rule for generated code */
    ad_node z = ad_apply(t, &cube, &x[2], 1, 0);
    ad_node yz = ad_add(t, y, z);
    ad_sparse *sc;
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &yz, 3, x, 0, &sc), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_MSG(ad_codegen_sparse(sc, &o, f, NULL), AD_EMISUSE, "custom op 'cube'");
    ad_sparse_free(sc);
    /* a rule without the tangents the sparse values need */
    ad_node zc = ad_apply(t, &cube_cg, &x[1], 1, 0);
    ad_sparse *sg;
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &zc, 3, x, 0, &sg), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_MSG(ad_codegen_sparse(sg, &o, f, NULL), AD_EMISUSE,
               "custom op 'cube_cg' (node ");
    EXPECT_MSG(ad_codegen_sparse(sg, &o, f, NULL), AD_EMISUSE,
               "sparse values need it: evaluate this one with ad_sparse_eval");
    ad_sparse_free(sg);
    /* sp was made before the recording went on */
    EXPECT_MSG(ad_codegen_sparse(sp, &o, f, NULL), AD_EMISUSE,
               "codegen_sparse: the tape was reset or recorded on since this pattern was made");
    ad_sparse_free(sp);
    fclose(f);
    ad_tape_free(t);
}

/* every allocation of ad_codegen_sparse failing in turn: AD_ENOMEM with a
 * message, or AD_OK (the scratch of runs, locals and zero ranges only
 * simplify the output when it fails: still correct), nothing leaked */
Test(codegen_sparse, every_allocation_failure_is_reported)
{
    enum { N = 30, M = N - 2 };
    for (int which = 0; which < 2; which++) {
        test_alloc al;
        memset(&al, 0, sizeof al);
        ad_tape_opts opts = test_alloc_opts(&al);
        ad_tape *t = ad_tape_new(&opts);
        ad_node x[N], f, c[M], outs[M + 1];
        lv_record(t, N, x, &f, c);
        outs[0] = f;
        memcpy(outs + 1, c, sizeof c);
        ad_sparse *sp;
        cr_assert_eq(which ? ad_sparse_hessian_new(t, M + 1, outs, N, x, 0, &sp)
                           : ad_sparse_jacobian_new(t, M, c, N, x, 0, &sp),
                     AD_OK);
        ad_codegen_opts o;
        memset(&o, 0, sizeof o);
        o.prefix = "am";
        const size_t held = al.bytes;
        FILE *s0 = tmpfile();
        cr_assert(s0);
        const long before = al.count;
        cr_assert_eq(ad_codegen_sparse(sp, &o, s0, NULL), AD_OK, "%s", ad_tape_errmsg(t));
        const long nalloc = al.count - before; /* the allocations of one call */
        fclose(s0);
        cr_assert_gt(nalloc, 3);
        for (long k = 1; k <= nalloc; k++) {
            FILE *src = tmpfile(), *hdr = tmpfile();
            cr_assert(src && hdr);
            al.fail_at = al.count + k;
            const int st = ad_codegen_sparse(sp, &o, src, hdr);
            al.fail_at = 0;
            fclose(src);
            fclose(hdr);
            if (st != AD_OK) { /* the scratch's failures are tolerated: AD_OK */
                cr_assert_eq(st, AD_ENOMEM, "failure %ld: %s", k, ad_tape_errmsg(t));
                cr_assert(strstr(ad_tape_errmsg(t), "codegen"), "%s", ad_tape_errmsg(t));
                cr_assert(strstr(ad_tape_errmsg(t), "out of memory"), "%s", ad_tape_errmsg(t));
            }
            cr_assert_eq(al.bytes, held, "failure %ld leaked %zu bytes", k, al.bytes - held);
        }
        ad_sparse_free(sp);
        ad_tape_free(t);
        cr_assert_eq(al.bytes, 0);
    }
}
