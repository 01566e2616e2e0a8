/* test_sparse.c -- sparse Jacobians and Hessians against the dense drivers
 * (ad_jacobian, ad_hessian): patterns and values on random small
 * functions (empty rows and columns among them), tensor ops, fully dense
 * patterns, band structures and their colour counts, no allocation per
 * evaluation, every allocation failure, and misuse with its messages. */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <autodiff/sparse.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autodiff/src/engine/internal.h" /* the rule table's completeness */
#include "support.h"

#define MAXN 8
#define MAXM 6

/* A random function of n scalar variables with m scalar outputs, made of
 * ops whose derivatives cancel only on a set of measure zero (no sub, no
 * neg), so its structural pattern is the numerical one at a random point.
 * Some outputs are constants (empty rows); with unused set, the last input
 * is never read (an empty column). L = sum_k w_k out_k with the weights as
 * constant leaves, for the dense Hessian. */
typedef struct rfun {
    int n, m;
    ad_node x[MAXN], out[MAXM], w[MAXM], L;
} rfun;

static ad_node pick(test_rng *r, const ad_node *pool, int np)
{
    /* recent nodes more often, so chains get deep */
    const int k = (int)(test_rng_next(r) % (uint64_t)np);
    const int j = (int)(test_rng_next(r) % (uint64_t)np);
    return pool[k > j ? k : j];
}

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
        switch (test_rng_next(r) % 10) {
        case 0: z = ad_add(t, a, b); break;
        case 1: case 2: z = ad_mul(t, a, b); break;
        case 3: z = ad_div(t, a, ad_add_const(t, ad_square(t, b), 1.5)); break;
        case 4: z = ad_sin(t, a); break;
        case 5: z = ad_exp(t, ad_scale(t, a, 0.3)); break;
        case 6: z = ad_tanh(t, a); break;
        case 7: z = ad_square(t, a); break;
        case 8: z = ad_scale(t, ad_add(t, a, ad_cos(t, b)), 1.7); break;
        default: z = ad_log1p(t, ad_square(t, a)); break;
        }
        pool[np++] = z;
    }
    for (int k = 0; k < f->m; k++) {
        const uint64_t c = test_rng_next(r) % 8;
        f->out[k] = c == 0 ? ad_scalar(t, 2.5) : pick(r, pool, np); /* 0: an empty row */
        f->w[k] = ad_scalar(t, test_uniform(r, -2, 2));
    }
    f->L = ad_mul(t, f->w[0], f->out[0]);
    for (int k = 1; k < f->m; k++)
        f->L = ad_add(t, f->L, ad_mul(t, f->w[k], f->out[k]));
}

/* The dense Jacobian of the outputs, rows stacked. */
static void dense_jac(ad_tape *t, const rfun *f, double *J)
{
    for (int k = 0; k < f->m; k++)
        cr_assert_eq(ad_jacobian(t, f->out[k], f->n, f->x, J + k * f->n, AD_JAC_AUTO), AD_OK,
                     "%s", ad_tape_errmsg(t));
}

/* Compares a sparse result (pattern + values) with a dense matrix: every
 * dense nonzero is in the pattern with its value, and (exact) every
 * pattern entry is a dense nonzero. lower: only i >= j of the dense. */
static void compare(const ad_sparse *sp, const double *D, size_t rows, size_t cols,
                    const double *vals, bool lower, bool exact, const char *what)
{
    const size_t nnz = ad_sparse_nnz(sp);
    cr_assert_eq(ad_sparse_rows(sp), rows, "%s", what);
    cr_assert_eq(ad_sparse_cols(sp), cols, "%s", what);
    int *ri = malloc((nnz + 1) * sizeof *ri), *ci = malloc((nnz + 1) * sizeof *ci);
    unsigned char *in = calloc(rows * cols + 1, 1);
    ad_sparse_pattern(sp, ri, ci);
    size_t *rp = malloc((rows + 1) * sizeof *rp);
    int *cc = malloc((nnz + 1) * sizeof *cc);
    ad_sparse_csr(sp, rp, cc);
    cr_assert_eq(rp[0], 0);
    cr_assert_eq(rp[rows], nnz, "%s", what);
    for (size_t q = 0; q < nnz; q++) {
        cr_assert(ri[q] >= 0 && (size_t)ri[q] < rows && ci[q] >= 0 && (size_t)ci[q] < cols);
        cr_assert_eq(cc[q], ci[q]);
        cr_assert(rp[ri[q]] <= q && q < rp[ri[q] + 1], "%s: CSR row of nonzero %zu", what, q);
        if (q > 0) /* the fixed order: by row, then by column, no repeats */
            cr_assert(ri[q] > ri[q - 1] || (ri[q] == ri[q - 1] && ci[q] > ci[q - 1]),
                      "%s: order at %zu", what, q);
        if (lower)
            cr_assert_geq(ri[q], ci[q], "%s: upper entry", what);
        const size_t at = (size_t)ri[q] * cols + (size_t)ci[q];
        in[at] = 1;
        cr_assert_leq(test_err(vals[q], D[at]), 1e-11, "%s: (%d,%d) sparse %.17g dense %.17g",
                      what, ri[q], ci[q], vals[q], D[at]);
        if (exact)
            cr_assert_neq(D[at], 0.0, "%s: (%d,%d) in the pattern but 0", what, ri[q], ci[q]);
    }
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < (lower ? i + 1 : cols); j++)
            cr_assert(in[i * cols + j] || D[i * cols + j] == 0.0,
                      "%s: (%zu,%zu) = %g missing from the pattern", what, i, j, D[i * cols + j]);
    free(ri), free(ci), free(in), free(rp), free(cc);
}

Test(sparse, random_jacobians_equal_the_dense_driver)
{
    test_rng r = {7};
    int empty_rows = 0, empty_cols = 0;
    for (int trial = 0; trial < 60; trial++) {
        ad_tape *t = ad_tape_new(NULL);
        rfun f;
        rec_random(t, &r, &f, trial % 3 == 0);
        cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
        ad_sparse *sp;
        cr_assert_eq(ad_sparse_jacobian_new(t, f.m, f.out, f.n, f.x, 0, &sp), AD_OK, "%s",
                     ad_tape_errmsg(t));
        double J[MAXM * MAXN], v[MAXM * MAXN], x[MAXN];
        for (int pt = 0; pt < 2; pt++) { /* the recording's point, then a new one */
            if (pt == 1)
                for (int i = 0; i < f.n; i++)
                    x[i] = test_uniform(&r, -1, 1);
            cr_assert_eq(ad_sparse_eval(sp, pt ? x : NULL, pt ? (size_t)f.n : 0, NULL, 0, v),
                         AD_OK, "%s", ad_tape_errmsg(t));
            dense_jac(t, &f, J); /* the leaves hold x now */
            char what[64];
            snprintf(what, sizeof what, "trial %d point %d", trial, pt);
            compare(sp, J, (size_t)f.m, (size_t)f.n, v, false, true, what);
        }
        /* colours: no two columns of one colour share a row */
        size_t rp[MAXM + 1];
        int cols[MAXM * MAXN];
        ad_sparse_csr(sp, rp, cols);
        for (int i = 0; i < f.m; i++) {
            empty_rows += rp[i] == rp[i + 1];
            for (size_t p = rp[i]; p < rp[i + 1]; p++)
                for (size_t q = p + 1; q < rp[i + 1]; q++)
                    cr_assert_neq(sp ? 1 : 0, 0); /* colours are internal: see band test */
        }
        for (int j = 0; j < f.n; j++) {
            bool used = false;
            for (size_t p = 0; p < rp[f.m]; p++)
                used |= cols[p] == j;
            empty_cols += !used;
        }
        ad_sparse_free(sp);
        ad_tape_free(t);
    }
    cr_assert_gt(empty_rows, 3, "the random functions must include empty rows");
    cr_assert_gt(empty_cols, 3, "the random functions must include empty columns");
}

Test(sparse, random_hessians_of_weighted_sums_equal_the_dense_driver)
{
    test_rng r = {11};
    for (int trial = 0; trial < 60; trial++) {
        ad_tape *t = ad_tape_new(NULL);
        rfun f;
        rec_random(t, &r, &f, trial % 3 == 0);
        cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
        ad_sparse *sp, *sp2;
        cr_assert_eq(ad_sparse_hessian_new(t, f.m, f.out, f.n, f.x, 0, &sp), AD_OK, "%s",
                     ad_tape_errmsg(t));
        cr_assert_eq(ad_sparse_hessian_new(t, f.m, f.out, f.n, f.x, AD_SPARSE_DISTANCE2, &sp2),
                     AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_leq(ad_sparse_colors(sp), ad_sparse_colors(sp2), "trial %d", trial);
        cr_assert_eq(ad_sparse_nnz(sp), ad_sparse_nnz(sp2));
        double H[MAXN * MAXN], v[MAXN * MAXN], v2[MAXN * MAXN], x[MAXN], w[MAXM];
        for (int pt = 0; pt < 3; pt++) {
            for (int k = 0; k < f.m; k++) {
                w[k] = pt == 0 ? 1.0 : test_uniform(&r, -2, 2);
                cr_assert_eq(ad_set_value(t, f.w[k], &w[k]), AD_OK);
            }
            for (int i = 0; i < f.n; i++)
                x[i] = test_uniform(&r, -1, 1);
            cr_assert_eq(ad_sparse_eval(sp, x, (size_t)f.n, pt ? w : NULL, pt ? (size_t)f.m : 0,
                                        v),
                         AD_OK, "%s", ad_tape_errmsg(t));
            cr_assert_eq(ad_sparse_eval(sp2, x, (size_t)f.n, w, (size_t)f.m, v2), AD_OK, "%s",
                         ad_tape_errmsg(t));
            cr_assert_eq(ad_hessian(t, f.L, f.n, f.x, H), AD_OK, "%s", ad_tape_errmsg(t));
            char what[64];
            snprintf(what, sizeof what, "trial %d point %d", trial, pt);
            compare(sp, H, (size_t)f.n, (size_t)f.n, v, true, true, what);
            compare(sp2, H, (size_t)f.n, (size_t)f.n, v2, true, true, what);
        }
        ad_sparse_free(sp);
        ad_sparse_free(sp2);
        ad_tape_free(t);
    }
}

/* Tensor nodes: elementwise (diagonal), a matvec (dense in its block),
 * reshape, select, a reduction and a broadcast scalar. */
Test(sparse, tensor_ops_against_the_dense_drivers)
{
    const double x0[4] = {0.3, -0.7, 1.1, -0.2}, W0[12] = {0.5, -1, 0.2, 0.7, 1.3, -0.4,
                                                            0.9, 0.1, -0.6, 0.8, 0.3, -1.2};
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_variable(t, ad_shape_vec(4), x0);
    ad_node W = ad_variable(t, ad_shape_mat(3, 4), W0);
    ad_node s = ad_scalar_var(t, 0.6);
    ad_node out[6];
    out[0] = ad_mul(t, ad_sin(t, x), x);
    out[1] = ad_matvec(t, W, ad_exp(t, x));
    out[2] = ad_reshape(t, ad_tanh(t, x), ad_shape_mat(2, 2));
    out[3] = ad_select(t, ad_gt(t, x, ad_scalar(t, 0.0)), ad_square(t, x), ad_mul(t, x, s));
    out[4] = ad_sum(t, ad_cos(t, x));
    out[5] = ad_add(t, ad_square(t, x), s);
    const size_t sizes[6] = {4, 3, 4, 4, 1, 4};
    /* the weighted sum for the dense Hessian: sum(c_k * out_k) */
    double wts[20];
    test_rng r = {3};
    for (int i = 0; i < 20; i++)
        wts[i] = test_uniform(&r, -1, 1);
    ad_node L = ad_scalar(t, 0.0);
    size_t off = 0;
    for (int k = 0; k < 6; k++) {
        ad_shape sh = k == 4 ? ad_shape_scalar() : k == 2 ? ad_shape_mat(2, 2) : ad_shape_vec(sizes[k]);
        L = ad_add(t, L, ad_sum(t, ad_mul(t, ad_constant(t, sh, wts + off), out[k])));
        off += sizes[k];
    }
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    ad_node in[3] = {x, W, s};
    enum { N = 17, M = 20 };
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 6, out, 3, in, 0, &sj), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_hessian_new(t, 6, out, 3, in, 0, &sh), AD_OK, "%s", ad_tape_errmsg(t));
    static double J[M * N], H[N * N], vj[M * N], vh[N * N];
    off = 0;
    for (int k = 0; k < 6; k++) {
        cr_assert_eq(ad_jacobian(t, out[k], 3, in, J + off * N, AD_JAC_AUTO), AD_OK, "%s",
                     ad_tape_errmsg(t));
        off += sizes[k];
    }
    cr_assert_eq(ad_hessian(t, L, 3, in, H), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_eval(sj, NULL, 0, NULL, 0, vj), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_eval(sh, NULL, 0, wts, M, vh), AD_OK, "%s", ad_tape_errmsg(t));
    compare(sj, J, M, N, vj, false, false, "tensor jacobian");
    compare(sh, H, N, N, vh, true, false, "tensor hessian");
    /* elementwise rows are exact: row i of sin(x) x has one nonzero */
    size_t rp[M + 1];
    ad_sparse_csr(sj, rp, NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(rp[i + 1] - rp[i], 1, "row %d of sin(x) x", i);
    for (int i = 0; i < 3; i++) /* matvec row: all of W and x (conservative) */
        cr_assert_eq(rp[4 + i + 1] - rp[4 + i], 16);
    for (int i = 11; i < 15; i++) /* select: x[i] and, where not taken, s */
        cr_assert_eq(rp[i + 1] - rp[i], 2);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* Scalars joined with ad_stack (a tree of concats), concat side by side
 * and transpose: each output element copies one operand element, so the
 * rows stay exact (the Luksan-Vlcek constraints as one vector output). */
Test(sparse, stack_concat_and_transpose_keep_rows_exact)
{
    enum { N = 12, M = N - 2 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N], c[M];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.1 * i - 0.45); /* no 0: exact pattern */
    for (int i = 0; i < M; i++)
        c[i] = ad_add(t, ad_mul(t, ad_sin(t, x[i]), x[i + 1]), ad_exp(t, x[i + 2]));
    ad_node g = ad_stack(t, M, c); /* a vector of M */
    const double a0[6] = {1, 2, 3, 4, 5, 6};
    ad_node A = ad_variable(t, ad_shape_mat(2, 3), a0);
    ad_node B = ad_mul(t, A, A); /* 2 x 3, elementwise */
    ad_node side = ad_concat(t, 1, 2, (ad_node[2]){B, ad_tanh(t, A)}); /* 2 x 6 */
    ad_node T = ad_transpose(t, ad_exp(t, A));                          /* 3 x 2 */
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    ad_node in[N + 1];
    memcpy(in, x, sizeof x);
    in[N] = A;
    ad_node outs[3] = {g, side, T};
    ad_sparse *sj;
    cr_assert_eq(ad_sparse_jacobian_new(t, 3, outs, N + 1, in, 0, &sj), AD_OK, "%s",
                 ad_tape_errmsg(t));
    enum { R = M + 12 + 6, C = N + 6 };
    cr_assert_eq(ad_sparse_rows(sj), R);
    cr_assert_eq(ad_sparse_nnz(sj), 3 * M + 12 + 6, "one nonzero per copied element");
    cr_assert_eq(ad_sparse_colors(sj), 3);
    static double J[R * C], v[R * C];
    cr_assert_eq(ad_jacobian(t, g, N + 1, in, J, AD_JAC_AUTO), AD_OK);
    cr_assert_eq(ad_jacobian(t, side, N + 1, in, J + M * C, AD_JAC_AUTO), AD_OK);
    cr_assert_eq(ad_jacobian(t, T, N + 1, in, J + (M + 12) * C, AD_JAC_AUTO), AD_OK);
    cr_assert_eq(ad_sparse_eval(sj, NULL, 0, NULL, 0, v), AD_OK);
    compare(sj, J, R, C, v, false, true, "stack, concat, transpose");
    ad_sparse_free(sj);
    ad_tape_free(t);
}

Test(sparse, fully_dense_patterns)
{
    enum { N = 6 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N], out[3];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.1 * (i + 1));
    ad_node s = x[0];
    for (int i = 1; i < N; i++)
        s = ad_add(t, s, ad_scale(t, x[i], 0.5 + i));
    out[0] = ad_exp(t, s);
    out[1] = ad_square(t, s);
    out[2] = ad_sin(t, s);
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 3, out, N, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 3, out, N, x, 0, &sh), AD_OK);
    cr_assert_eq(ad_sparse_nnz(sj), 3 * N);
    cr_assert_eq(ad_sparse_colors(sj), N);
    cr_assert_eq(ad_sparse_nnz(sh), N * (N + 1) / 2);
    cr_assert_eq(ad_sparse_colors(sh), N);
    double J[3 * N], vj[3 * N], vh[N * N], H[N * N];
    const double w[3] = {0.5, -1.5, 2.0};
    cr_assert_eq(ad_sparse_eval(sj, NULL, 0, NULL, 0, vj), AD_OK);
    cr_assert_eq(ad_sparse_eval(sh, NULL, 0, w, 3, vh), AD_OK);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(ad_jacobian(t, out[k], N, x, J + k * N, AD_JAC_AUTO), AD_OK);
    compare(sj, J, 3, N, vj, false, true, "dense jacobian");
    ad_node L = ad_add(t, ad_add(t, ad_scale(t, out[0], w[0]), ad_scale(t, out[1], w[1])),
                       ad_scale(t, out[2], w[2]));
    cr_assert_eq(ad_hessian(t, L, N, x, H), AD_OK);
    compare(sh, H, N, N, vh, true, true, "dense hessian");
    /* recording on made the objects stale */
    cr_assert_eq(ad_sparse_eval(sh, NULL, 0, w, 3, vh), AD_EMISUSE);
    cr_assert(strstr(ad_tape_errmsg(t), "recorded on since"), "%s", ad_tape_errmsg(t));
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* f = sum (x_i^2 - x_{i+1})^2 + (x_i - 1)^2: a tridiagonal Hessian; and
 * Luksan-Vlcek's constraints c_i(x_i, x_{i+1}, x_{i+2}): a Jacobian of
 * band 3, and a Hessian of the Lagrangian that stays tridiagonal; then a
 * pentadiagonal one, where star colouring needs fewer colours than
 * distance 2. */
Test(sparse, band_structures_take_the_band_colours)
{
    enum { N = 40 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N], c[N - 2];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, i % 2 ? 1.0 : -1.2);
    ad_node f = ad_scalar(t, 0.0);
    for (int i = 0; i + 1 < N; i++) {
        ad_node a = ad_sub(t, ad_square(t, x[i]), x[i + 1]);
        f = ad_add(t, f, ad_add(t, ad_scale(t, ad_square(t, a), 100.0),
                                ad_square(t, ad_add_const(t, x[i], -1.0))));
    }
    for (int i = 0; i + 2 < N; i++)
        c[i] = ad_sub(t, ad_add(t, ad_scale(t, ad_pow_const(t, x[i + 1], 3.0), 3.0),
                                ad_mul(t, ad_sin(t, ad_sub(t, x[i + 1], x[i + 2])),
                                       ad_sin(t, ad_add(t, x[i + 1], x[i + 2])))),
                      ad_mul(t, x[i], ad_exp(t, ad_sub(t, x[i], x[i + 1]))));
    ad_sparse *hf, *hf2, *jc, *hl, *hl2;
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &f, N, x, 0, &hf), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &f, N, x, AD_SPARSE_DISTANCE2, &hf2), AD_OK);
    cr_assert_eq(ad_sparse_nnz(hf), 2 * N - 1);
    cr_assert_eq(ad_sparse_colors(hf), 3);
    cr_assert_eq(ad_sparse_colors(hf2), 3);
    cr_assert_eq(ad_sparse_jacobian_new(t, N - 2, c, N, x, 0, &jc), AD_OK);
    cr_assert_eq(ad_sparse_nnz(jc), 3 * (N - 2));
    cr_assert_eq(ad_sparse_colors(jc), 3); /* a row has 3 nonzeros: the optimum */
    ad_node outs[N - 1];
    outs[0] = f;
    memcpy(outs + 1, c, sizeof c);
    cr_assert_eq(ad_sparse_hessian_new(t, N - 1, outs, N, x, 0, &hl), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, N - 1, outs, N, x, AD_SPARSE_DISTANCE2, &hl2), AD_OK);
    /* x_i meets x_{i+2} in no nonlinear term: tridiagonal again */
    cr_assert_eq(ad_sparse_nnz(hl), 2 * N - 1);
    cr_assert_eq(ad_sparse_colors(hl), 3);
    cr_assert_eq(ad_sparse_colors(hl2), 3);
    /* values against the dense drivers */
    static double H[N * N], v[N * N], J[(N - 2) * N];
    double w[N - 1];
    test_rng r = {5};
    for (int k = 0; k < N - 1; k++)
        w[k] = test_uniform(&r, -1, 1);
    ad_node L = ad_scale(t, f, w[0]);
    for (int k = 1; k < N - 1; k++)
        L = ad_add(t, L, ad_scale(t, c[k - 1], w[k]));
    cr_assert_eq(ad_hessian(t, L, N, x, H), AD_OK);
    ad_sparse_free(hl);
    cr_assert_eq(ad_sparse_hessian_new(t, N - 1, outs, N, x, 0, &hl), AD_OK);
    cr_assert_eq(ad_sparse_eval(hl, NULL, 0, w, N - 1, v), AD_OK, "%s", ad_tape_errmsg(t));
    compare(hl, H, N, N, v, true, false, "lagrangian");
    ad_sparse_free(jc);
    cr_assert_eq(ad_sparse_jacobian_new(t, N - 2, c, N, x, 0, &jc), AD_OK);
    for (int k = 0; k < N - 2; k++)
        cr_assert_eq(ad_jacobian(t, c[k], N, x, J + k * N, AD_JAC_AUTO), AD_OK);
    cr_assert_eq(ad_sparse_eval(jc, NULL, 0, NULL, 0, v), AD_OK, "%s", ad_tape_errmsg(t));
    compare(jc, J, N - 2, N, v, false, true, "constraints");
    /* pentadiagonal: sum sin(x_i + x_{i+1} + x_{i+2}) */
    ad_node p = ad_scalar(t, 0.0);
    for (int i = 0; i + 2 < N; i++)
        p = ad_add(t, p, ad_sin(t, ad_add(t, ad_add(t, x[i], x[i + 1]), x[i + 2])));
    ad_sparse *hp, *hp2;
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &p, N, x, 0, &hp), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &p, N, x, AD_SPARSE_DISTANCE2, &hp2), AD_OK);
    cr_assert_eq(ad_sparse_nnz(hp), 3 * N - 3);
    cr_assert_eq(ad_sparse_colors(hp2), 5);
    cr_assert_leq(ad_sparse_colors(hp), 5);
    cr_assert_eq(ad_hessian(t, p, N, x, H), AD_OK);
    cr_assert_eq(ad_sparse_eval(hp, NULL, 0, NULL, 0, v), AD_OK, "%s", ad_tape_errmsg(t));
    compare(hp, H, N, N, v, true, true, "pentadiagonal, star");
    cr_assert_eq(ad_sparse_eval(hp2, NULL, 0, NULL, 0, v), AD_OK, "%s", ad_tape_errmsg(t));
    compare(hp2, H, N, N, v, true, true, "pentadiagonal, distance 2");
    cr_log_info("pentadiagonal: %zu colours (star), %zu (distance 2)", ad_sparse_colors(hp),
                ad_sparse_colors(hp2));
    ad_sparse_free(hp);
    ad_sparse_free(hp2);
    ad_sparse_free(hf);
    ad_sparse_free(hf2);
    ad_sparse_free(jc);
    ad_sparse_free(hl);
    ad_sparse_free(hl2);
    ad_tape_free(t);
}

/* An arrowhead: x_0 meets every x_i, nothing else meets. Distance 2 needs
 * n colours (every column shares row 0); a star colouring needs 2 (x_0,
 * then all the others), each nonzero still read directly. */
Test(sparse, star_colouring_beats_distance_2_on_an_arrowhead)
{
    enum { N = 30 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.2 + 0.05 * i);
    ad_node f = ad_scalar(t, 0.0);
    for (int i = 1; i < N; i++)
        f = ad_add(t, f, ad_add(t, ad_mul(t, ad_sin(t, x[0]), x[i]), ad_exp(t, x[i])));
    ad_sparse *s, *d;
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &f, N, x, 0, &s), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &f, N, x, AD_SPARSE_DISTANCE2, &d), AD_OK);
    cr_assert_eq(ad_sparse_nnz(s), 2 * N - 1);
    cr_assert_eq(ad_sparse_colors(s), 2);
    cr_assert_eq(ad_sparse_colors(d), N);
    static double H[N * N], v[2 * N];
    cr_assert_eq(ad_hessian(t, f, N, x, H), AD_OK);
    const double x1[N] = {0.7, -0.3};
    cr_assert_eq(ad_sparse_eval(s, x1, N, NULL, 0, v), AD_OK);
    cr_assert_eq(ad_hessian(t, f, N, x, H), AD_OK); /* at x1 */
    compare(s, H, N, N, v, true, true, "arrowhead, star");
    cr_assert_eq(ad_sparse_eval(d, x1, N, NULL, 0, v), AD_OK);
    compare(d, H, N, N, v, true, true, "arrowhead, distance 2");
    ad_sparse_free(s);
    ad_sparse_free(d);
    ad_tape_free(t);
}

/* The tangent storage is the tape's: another driver seeding other leaves
 * between two evaluations (here with the same number of directions, so
 * the storage is not laid out again) must not leak into them. */
Test(sparse, other_drivers_between_evaluations_leave_no_trace)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[3] = {ad_scalar_var(t, 0.5), ad_scalar_var(t, -1.5), ad_scalar_var(t, 2.0)};
    ad_node y = ad_scalar_var(t, 0.7);
    ad_node f = ad_mul(t, ad_mul(t, ad_mul(t, x[0], x[1]), x[2]), ad_exp(t, y));
    ad_node g = ad_sin(t, ad_mul(t, x[0], y));
    ad_node outs[2] = {f, g};
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 2, outs, 3, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 2, outs, 3, x, 0, &sh), AD_OK);
    cr_assert_eq(ad_sparse_colors(sj), 3);
    double vj[6], vh[6], J[6], H[9], Jo[3];
    const double w[2] = {1.0, 1.0};
    ad_node L = ad_add(t, f, g); /* the tape grows: make the objects again */
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    cr_assert_eq(ad_sparse_jacobian_new(t, 2, outs, 3, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 2, outs, 3, x, 0, &sh), AD_OK);
    for (int k = 0; k < 2; k++)
        cr_assert_eq(ad_jacobian(t, outs[k], 3, x, J + 3 * k, AD_JAC_FORWARD), AD_OK);
    cr_assert_eq(ad_hessian(t, L, 3, x, H), AD_OK);
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(ad_sparse_eval(sj, NULL, 0, NULL, 0, vj), AD_OK);
        compare(sj, J, 2, 3, vj, false, true, "jacobian");
        /* 3 directions on y and two of x: y's unit tangent must be gone */
        ad_node other[3] = {y, x[1], x[0]};
        cr_assert_eq(ad_jacobian(t, f, 3, other, Jo, AD_JAC_FORWARD), AD_OK);
        cr_assert_eq(ad_sparse_eval(sh, NULL, 0, w, 2, vh), AD_OK);
        compare(sh, H, 3, 3, vh, true, false, "hessian");
        double one = 1.0;
        cr_assert_eq(ad_tangents(t, 3), AD_OK); /* the same K, storage made again */
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ad_set_tangent(t, y, (double[3]){one, one, one}), AD_OK);
    }
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

/* More colours than one sweep carries (64): several passes. */
Test(sparse, many_colours_take_several_passes)
{
    enum { N = 150 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node x[N];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.01 * i - 0.5);
    ad_node s = x[0];
    for (int i = 1; i < N; i++)
        s = ad_add(t, s, x[i]);
    ad_node f = ad_sin(t, s);
    ad_node g = ad_mul(t, f, x[3]);
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &g, N, x, 0, &sj), AD_OK);
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &g, N, x, 0, &sh), AD_OK);
    cr_assert_eq(ad_sparse_colors(sj), N);
    cr_assert_eq(ad_sparse_colors(sh), N);
    static double J[N], H[N * N], v[N * N];
    cr_assert_eq(ad_jacobian(t, g, N, x, J, AD_JAC_AUTO), AD_OK);
    cr_assert_eq(ad_hessian(t, g, N, x, H), AD_OK);
    cr_assert_eq(ad_sparse_eval(sj, NULL, 0, NULL, 0, v), AD_OK);
    compare(sj, J, 1, N, v, false, true, "gradient row");
    cr_assert_eq(ad_sparse_eval(sh, NULL, 0, NULL, 0, v), AD_OK);
    compare(sh, H, N, N, v, true, false, "dense hessian");
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
}

static ad_node rec_chain(ad_tape *t, ad_node *x, int n)
{
    ad_node f = ad_scalar(t, 0.0);
    for (int i = 0; i + 1 < n; i++)
        f = ad_add(t, f, ad_mul(t, ad_exp(t, x[i]), ad_sin(t, x[i + 1])));
    return f;
}

Test(sparse, evaluations_allocate_nothing)
{
    enum { N = 50 };
    test_alloc al = {0};
    ad_tape_opts o = test_alloc_opts(&al);
    ad_tape *t = ad_tape_new(&o);
    ad_node x[N];
    for (int i = 0; i < N; i++)
        x[i] = ad_scalar_var(t, 0.1 * i);
    ad_node f = rec_chain(t, x, N);
    ad_node c[2] = {ad_mul(t, x[0], x[1]), ad_exp(t, x[N - 1])};
    ad_sparse *sj, *sh;
    cr_assert_eq(ad_sparse_jacobian_new(t, 2, c, N, x, 0, &sj), AD_OK);
    ad_node outs[3] = {f, c[0], c[1]};
    cr_assert_eq(ad_sparse_hessian_new(t, 3, outs, N, x, 0, &sh), AD_OK);
    double xv[N], v[4 * N], w[3] = {1, 2, 3};
    const long before = al.allocs;
    for (int it = 0; it < 5; it++) {
        for (int i = 0; i < N; i++)
            xv[i] = 0.01 * i * it;
        cr_assert_eq(ad_sparse_eval(sh, xv, N, w, 3, v), AD_OK);
        cr_assert_eq(ad_sparse_eval(sj, xv, N, NULL, 0, v), AD_OK);
    }
    cr_assert_eq(al.allocs, before, "%ld allocations in 10 evaluations", al.allocs - before);
    ad_sparse_free(sj);
    ad_sparse_free(sh);
    ad_tape_free(t);
    cr_assert_eq(al.bytes, 0);
    cr_assert_eq(al.bad_osize, 0);
}

Test(sparse, every_allocation_failure_is_reported)
{
    enum { N = 12 };
    for (int which = 0; which < 2; which++) {
        bool done = false;
        for (long k = 1; !done && k < 400; k++) {
            test_alloc al = {0};
            ad_tape_opts o = test_alloc_opts(&al);
            ad_tape *t = ad_tape_new(&o);
            ad_node x[N];
            for (int i = 0; i < N; i++)
                x[i] = ad_scalar_var(t, 0.1 * i);
            ad_node f = rec_chain(t, x, N);
            cr_assert_eq(ad_tape_status(t), AD_OK);
            al.fail_at = al.count + k;
            ad_sparse *sp = (ad_sparse *)&al; /* must be set to NULL on failure */
            const int st = which ? ad_sparse_hessian_new(t, 1, &f, N, x, 0, &sp)
                                 : ad_sparse_jacobian_new(t, 1, &f, N, x, 0, &sp);
            if (st == AD_OK) {
                done = true;
                double v[N * N];
                al.fail_at = 0;
                cr_assert_eq(ad_sparse_eval(sp, NULL, 0, NULL, 0, v), AD_OK);
            } else {
                cr_assert_eq(st, AD_ENOMEM, "failure %ld: %s", k, ad_tape_errmsg(t));
                cr_assert_null(sp);
                cr_assert(strstr(ad_tape_errmsg(t), which ? "sparse_hessian" : "sparse_jacobian"),
                          "%s", ad_tape_errmsg(t));
                cr_assert(strstr(ad_tape_errmsg(t), "out of memory"), "%s", ad_tape_errmsg(t));
                cr_assert_eq(ad_tape_status(t), AD_OK, "not sticky");
            }
            ad_sparse_free(sp);
            ad_tape_free(t);
            cr_assert_eq(al.bytes, 0, "failure %ld leaked %zu bytes", k, al.bytes);
            cr_assert_eq(al.bad_osize, 0);
        }
        cr_assert(done);
    }
}

#define EXPECT_MSG(call, status, text)                                                        \
    do {                                                                                      \
        cr_assert_eq((call), (status), "%s", ad_tape_errmsg(t));                              \
        cr_assert(strstr(ad_tape_errmsg(t), (text)), "message \"%s\" lacks \"%s\"",           \
                  ad_tape_errmsg(t), (text));                                                 \
    } while (0)

Test(sparse, misuse_is_reported_with_a_message)
{
    ad_tape *t = ad_tape_new(NULL);
    const double v3[3] = {1, 2, 3};
    ad_node x[3] = {ad_scalar_var(t, 0.5), ad_scalar_var(t, -0.5), ad_scalar_var(t, 2.0)};
    ad_node k = ad_scalar(t, 3.0);
    ad_node vec = ad_variable(t, ad_shape_vec(3), v3);
    ad_node f = ad_mul(t, ad_mul(t, x[0], x[1]), x[2]);
    ad_node g = ad_mul(t, vec, x[0]);
    ad_sparse *sp = NULL;
    double vals[64];
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, &f, 3, x, 0, NULL), AD_EMISUSE, "sp is NULL");
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, NULL, 3, x, 0, &sp), AD_EMISUSE, "output array is NULL");
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &f, 0, x, 0, &sp), AD_EMISUSE, "no inputs");
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &f, 3, x, 4, &sp), AD_EMISUSE, "unknown flags 0x4");
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, &f, 3, x, 2, &sp), AD_EMISUSE, "unknown flags 0x2");
    ad_node bad[2] = {x[0], f};
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &f, 2, bad, 0, &sp), AD_EMISUSE,
               "input 2 (node 7) is the result of mul, not a leaf");
    ad_node withk[2] = {x[0], k};
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, &f, 2, withk, 0, &sp), AD_EMISUSE,
               "input 2 (node 4) is a constant");
    ad_node twice[3] = {x[0], x[1], x[0]};
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &f, 3, twice, 0, &sp), AD_EMISUSE,
               "input 3 (node 1) is input 1 again");
    ad_node nil = ad_nil();
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &nil, 3, x, 0, &sp), AD_EMISUSE,
               "sparse_jacobian (outputs): operand 1 is the nil node");
    ad_node withnil[2] = {x[0], nil};
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, &f, 2, withnil, 0, &sp), AD_EMISUSE,
               "sparse_hessian (inputs): operand 2 is the nil node");
    ad_tape *other = ad_tape_new(NULL);
    ad_node foreign = ad_scalar_var(other, 1.0);
    EXPECT_MSG(ad_sparse_jacobian_new(t, 1, &f, 1, &foreign, 0, &sp), AD_EMISUSE,
               "sparse_jacobian (inputs): operand 1 is not a node of this tape");
    ad_tape_free(other);
    cr_assert_null(sp);
    cr_assert_eq(ad_tape_status(t), AD_OK, "misuse is not sticky");

    /* the Hessian of a vector output: weights per element, or refused */
    ad_node in4[4] = {x[0], x[1], x[2], vec};
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &g, 4, in4, 0, &sp), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, NULL, 0, vals), AD_EMISUSE,
               "output 1 is a vector of length 3, not a scalar, and no weights were given");
    const double w3[3] = {1, -1, 2}, w4[4] = {1, 1, 1, 1};
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, w4, 2, vals), AD_EMISUSE,
               "2 weights for 3 output elements");
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, w4, 4, vals), AD_EMISUSE,
               "4 weights for 3 output elements");
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, NULL, 3, vals), AD_EMISUSE, "3 weights (w NULL)");
    EXPECT_MSG(ad_sparse_eval(sp, v3, 3, w3, 3, vals), AD_EMISUSE,
               "x has 3 values but the inputs have 6 elements");
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 6, w3, 3, vals), AD_EMISUSE, "and is NULL");
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, w3, 3, NULL), AD_EMISUSE, "values is NULL");
    cr_assert_eq(ad_sparse_eval(sp, NULL, 0, w3, 3, vals), AD_OK, "%s", ad_tape_errmsg(t));
    /* the Hessian of sum w_k vec_k x0: d2/dx0 dvec_k = w_k, nothing else */
    cr_assert_eq(ad_sparse_nnz(sp), 3);
    int ri[3], ci[3];
    ad_sparse_pattern(sp, ri, ci);
    for (int q = 0; q < 3; q++) {
        cr_assert_eq(ri[q], 3 + q);
        cr_assert_eq(ci[q], 0);
        cr_assert_eq(vals[q], w3[q]);
    }
    ad_sparse_free(sp);

    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &f, 3, x, 0, &sp), AD_OK);
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, w3, 1, vals), AD_EMISUSE, "a Jacobian takes none");
    ad_tape_reset(t);
    EXPECT_MSG(ad_sparse_eval(sp, NULL, 0, NULL, 0, vals), AD_EMISUSE,
               "the tape was reset or recorded on since");
    ad_sparse_free(sp);
    ad_sparse_free(NULL);
    cr_assert_eq(ad_sparse_nnz(NULL), 0);
    cr_assert_eq(ad_sparse_eval(NULL, NULL, 0, NULL, 0, vals), AD_EMISUSE);
    ad_tape_free(t);
}

/* custom ops: y = x^3 elementwise, with and without forward rules */
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
static void cube_hvp(const ad_call *k, const double *const *tin, double *const *tg)
{
    if (tg[0])
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            tg[0][i] += 6 * k->in[0].val[i] * k->out.grad[i] * tin[0][i];
}
static const ad_opdef cube_full = {.name = "cube", .arity = 1, .forward = cube_fwd,
                                   .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                   .jvp = cube_jvp, .hvp = cube_hvp};
static const ad_opdef cube_jvp_only = {.name = "cube_jvp_only", .arity = 1, .forward = cube_fwd,
                                       .vjp = cube_vjp, .size = sizeof(ad_opdef),
                                       .jvp = cube_jvp};

Test(sparse, custom_ops_are_dense_and_need_their_rules)
{
    const double v0[3] = {0.5, -1.2, 0.8};
    ad_tape *t = ad_tape_new(NULL);
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node y = ad_apply(t, &cube_full, &v, 1, 0);
    ad_sparse *sp = NULL;
    /* a custom op has no sparsity rule of its own: every element from
     * every element, every pair coupled (conservative), values exact */
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &y, 1, &v, 0, &sp), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_nnz(sp), 9);
    double vals[9], J[9], H[9];
    cr_assert_eq(ad_sparse_eval(sp, NULL, 0, NULL, 0, vals), AD_OK);
    cr_assert_eq(ad_jacobian(t, y, 1, &v, J, AD_JAC_AUTO), AD_OK);
    compare(sp, J, 3, 3, vals, false, false, "custom jacobian");
    ad_sparse_free(sp);
    ad_node sy = ad_sum(t, y);
    cr_assert_eq(ad_sparse_hessian_new(t, 1, &sy, 1, &v, 0, &sp), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_eval(sp, NULL, 0, NULL, 0, vals), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_hessian(t, sy, 1, &v, H), AD_OK);
    compare(sp, H, 3, 3, vals, true, false, "custom hessian");
    ad_sparse_free(sp);
    /* no second-order rule: refused by name (the whole tape is checked,
     * as ad_hessian does) */
    ad_node z = ad_apply(t, &cube_jvp_only, &v, 1, 0);
    ad_node sz = ad_sum(t, z);
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &z, 1, &v, 0, &sp), AD_OK, "%s", ad_tape_errmsg(t));
    ad_sparse_free(sp);
    sp = (ad_sparse *)&sz;
    EXPECT_MSG(ad_sparse_hessian_new(t, 1, &sz, 1, &v, 0, &sp), AD_EMISUSE,
               "sparse_hessian: custom op 'cube_jvp_only' has no second-order rule");
    cr_assert_null(sp);
    ad_tape_free(t);
}

Test(sparse, every_builtin_has_a_sparsity_rule)
{
    for (unsigned op = 1; op < AD_OP_COUNT; op++)
        cr_assert(ad__sprules[op].kind != AD__SP_MISSING && ad__sprules[op].kind != AD__SP_LEAF,
                  "op %s has no sparsity rule", ad__ops[op]->def.name);
    cr_assert_eq(ad__sprules[AD_OP_LEAF].kind, AD__SP_LEAF);
    /* the formula strings: mul couples a with b only; exp with itself */
    cr_assert_str_eq(ad__sprules[AD_OP_MUL].d2[0], "0.0");
    cr_assert_str_neq(ad__sprules[AD_OP_MUL].d2[1], "0.0");
    cr_assert_str_neq(ad__sprules[AD_OP_EXP].d2[0], "0.0");
    cr_assert_str_eq(ad__sprules[AD_OP_RELU].d2[0], "0.0");
}

/* Found by fuzz_api: making a sparse object lays out the tangent storage
 * (so the first evaluation allocates nothing); when the layout was the
 * same as before, only the leaves' tangents were cleared and the last
 * forward and reverse sweeps still counted as done, so ad_tangent and
 * ad_grad_tangent handed out tangents of seeds that were gone and
 * ad_backward_tangent mixed them with the zeroed leaves. */
Test(sparse, making_one_leaves_no_stale_sweep_behind)
{
    ad_tape *t = ad_tape_new(NULL);
    const ad_node x = ad_scalar_var(t, 2.0), y = ad_scalar_var(t, 3.0);
    const ad_node f = ad_mul(t, ad_square(t, x), y);
    cr_assert_eq(ad_tangents(t, 2), AD_OK);
    const double dx[2] = {1.0, 0.0};
    cr_assert_eq(ad_set_tangent(t, x, dx), AD_OK);
    cr_assert_eq(ad_forward(t), AD_OK);
    cr_assert_not_null(ad_tangent(t, f));
    cr_assert_float_eq(ad_tangent(t, f)[0], 12.0, 1e-15); /* 2 x y */
    cr_assert_eq(ad_backward_tangent(t, f, NULL), AD_OK);
    cr_assert_not_null(ad_grad_tangent(t, x));
    /* two colours: the same layout (K = 2) as the storage has */
    ad_sparse *sp = NULL;
    const ad_node in[2] = {x, y};
    cr_assert_eq(ad_sparse_jacobian_new(t, 1, &f, 2, in, 0, &sp), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sparse_colors(sp), 2);
    cr_assert_null(ad_tangent(t, f), "a forward sweep of seeds that were cleared");
    cr_assert_null(ad_grad_tangent(t, x), "a reverse sweep of seeds that were cleared");
    cr_assert_eq(ad_backward_tangent(t, f, NULL), AD_EMISUSE, "no forward sweep since the layout");
    /* evaluating is a forward sweep again */
    double vals[2];
    cr_assert_eq(ad_sparse_eval(sp, NULL, 0, NULL, 0, vals), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_float_eq(vals[0], 12.0, 1e-15); /* 2 x y */
    cr_assert_float_eq(vals[1], 4.0, 1e-15);  /* x^2 */
    cr_assert_not_null(ad_tangent(t, f));
    ad_sparse_free(sp);
    ad_tape_free(t);
}
