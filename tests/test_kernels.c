/* test_kernels.c -- the linear-algebra kernels, forward and vjp, against
 * naive loops to 1e-12 relative, on shapes big enough to take every code
 * path (unrolled dot remainders, the BLAS backend when built with
 * -DAD_BLAS=ON). The vjp is read through ad_backward_seed with a random
 * seed, so gradients are the exact products dA = dC B^T etc. */
#include <autodiff/autodiff.h>
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The BLAS backend (-DAD_BLAS=ON) makes no promise about how it sums, so
 * the tests of the built-in kernels' summation order are skipped there. */
#ifndef AD_TEST_BLAS
#define AD_TEST_BLAS 0
#endif

static uint64_t rng_state = 12345;
static double rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
static double *rnd_array(size_t n)
{
    double *a = malloc(n * sizeof *a);
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = rnd();
    return a;
}

/* max |got - want| / max(1, max |want|) */
static double rel_err(const double *got, const double *want, size_t n)
{
    double num = 0, den = 1;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(got[i] - want[i]));
        den = fmax(den, fabs(want[i]));
    }
    return num / den;
}

#define EXPECT_CLOSE(got, want, n, what)                                                      \
    cr_assert_leq(rel_err((got), (want), (n)), 1e-12, "%s differs from the naive loop by %g",   \
                  (what), rel_err((got), (want), (n)))

/* C = A B (m x p)(p x n), seed S (m x n): dA = S B^T, dB = A^T S. */
static void naive_matmul(const double *A, const double *B, const double *S, size_t m, size_t p,
                         size_t n, double *C, double *dA, double *dB)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t q = 0; q < p; q++)
                s += A[i * p + q] * B[q * n + j];
            C[i * n + j] = s;
        }
    for (size_t i = 0; i < m; i++)
        for (size_t q = 0; q < p; q++) {
            double s = 0;
            for (size_t j = 0; j < n; j++)
                s += S[i * n + j] * B[q * n + j];
            dA[i * p + q] = s;
        }
    for (size_t q = 0; q < p; q++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t i = 0; i < m; i++)
                s += A[i * p + q] * S[i * n + j];
            dB[q * n + j] = s;
        }
}

static void transpose(const double *A, size_t r, size_t c, double *T)
{
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < c; j++)
            T[j * r + i] = A[i * c + j];
}

Test(kernels, matmul_and_matmul_nt)
{
    const size_t m = 37, p = 53, n = 29;
    double *A = rnd_array(m * p), *B = rnd_array(p * n), *S = rnd_array(m * n);
    double *C = malloc(m * n * sizeof *C), *dA = malloc(m * p * sizeof *dA);
    double *dB = malloc(p * n * sizeof *dB), *Bt = malloc(p * n * sizeof *Bt);
    double *dBt = malloc(p * n * sizeof *dBt);
    naive_matmul(A, B, S, m, p, n, C, dA, dB);
    transpose(B, p, n, Bt);
    transpose(dB, p, n, dBt);

    ad_tape *t = ad_tape_new(NULL);
    ad_node a = ad_variable(t, ad_shape_mat(m, p), A);
    ad_node b = ad_variable(t, ad_shape_mat(p, n), B);
    ad_node c = ad_matmul(t, a, b);
    cr_assert_eq(ad_backward_seed(t, c, S), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_CLOSE(ad_value(t, c), C, m * n, "matmul forward");
    EXPECT_CLOSE(ad_grad(t, a), dA, m * p, "matmul dA");
    EXPECT_CLOSE(ad_grad(t, b), dB, p * n, "matmul dB");

    /* A B^T with B given transposed (n x p): the same products. */
    ad_tape_reset(t);
    a = ad_variable(t, ad_shape_mat(m, p), A);
    b = ad_variable(t, ad_shape_mat(n, p), Bt);
    c = ad_matmul_nt(t, a, b);
    cr_assert_eq(ad_backward_seed(t, c, S), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_CLOSE(ad_value(t, c), C, m * n, "matmul_nt forward");
    EXPECT_CLOSE(ad_grad(t, a), dA, m * p, "matmul_nt dA");
    EXPECT_CLOSE(ad_grad(t, b), dBt, p * n, "matmul_nt dB");
    ad_tape_free(t);
    free(A), free(B), free(S), free(C), free(dA), free(dB), free(Bt), free(dBt);
}

Test(kernels, matvec_matvec_t_outer)
{
    const size_t k = 41, n = 67;
    double *W = rnd_array(k * n), *x = rnd_array(n), *xk = rnd_array(k);
    double *sk = rnd_array(k), *sn = rnd_array(n), *S = rnd_array(k * n);
    double y[67], dx[67], dxk[41], dW[41 * 67], yt[67], du[41], dv[67];

    /* matvec: y = W x (a matmul with n = 1). */
    naive_matmul(W, x, sk, k, n, 1, y, dW, dx);
    ad_tape *t = ad_tape_new(NULL);
    ad_node w = ad_variable(t, ad_shape_mat(k, n), W);
    ad_node v = ad_variable(t, ad_shape_vec(n), x);
    ad_node out = ad_matvec(t, w, v);
    cr_assert_eq(ad_backward_seed(t, out, sk), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_CLOSE(ad_value(t, out), y, k, "matvec forward");
    EXPECT_CLOSE(ad_grad(t, w), dW, k * n, "matvec dW");
    EXPECT_CLOSE(ad_grad(t, v), dx, n, "matvec dx");

    /* matvec_t: y = W^T x, i.e. y^T = x^T W (1 x k)(k x n). */
    naive_matmul(xk, W, sn, 1, k, n, yt, dxk, dW);
    ad_tape_reset(t);
    w = ad_variable(t, ad_shape_mat(k, n), W);
    v = ad_variable(t, ad_shape_vec(k), xk);
    out = ad_matvec_t(t, w, v);
    cr_assert_eq(ad_backward_seed(t, out, sn), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_CLOSE(ad_value(t, out), yt, n, "matvec_t forward");
    EXPECT_CLOSE(ad_grad(t, w), dW, k * n, "matvec_t dW");
    EXPECT_CLOSE(ad_grad(t, v), dxk, k, "matvec_t dx");

    /* outer: C = u v^T (k x 1)(1 x n); du = S v, dv = S^T u. */
    double C[41 * 67];
    naive_matmul(xk, x, S, k, 1, n, C, du, dv);
    ad_tape_reset(t);
    ad_node u = ad_variable(t, ad_shape_vec(k), xk);
    v = ad_variable(t, ad_shape_vec(n), x);
    out = ad_outer(t, u, v);
    cr_assert_eq(ad_backward_seed(t, out, S), AD_OK, "%s", ad_tape_errmsg(t));
    EXPECT_CLOSE(ad_value(t, out), C, k * n, "outer forward");
    EXPECT_CLOSE(ad_grad(t, u), du, k, "outer du");
    EXPECT_CLOSE(ad_grad(t, v), dv, n, "outer dv");
    ad_tape_free(t);
    free(W), free(x), free(xk), free(sk), free(sn), free(S);
}

/* The same products added into caller buffers that already hold 1 (the
 * vjps' adding form; the tests above take the writing form, since a
 * variable's adjoint is fresh when the first product reaches it). */
static void expect_plus_one(const double *got, const double *want, size_t n, const char *what)
{
    double *w1 = malloc(n * sizeof *w1);
    cr_assert_not_null(w1);
    for (size_t i = 0; i < n; i++)
        w1[i] = want[i] + 1.0;
    EXPECT_CLOSE(got, w1, n, what);
    free(w1);
}
static double *ones(size_t n)
{
    double *a = malloc(n * sizeof *a);
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = 1.0;
    return a;
}

Test(kernels, products_add_into_param_buffers)
{
    const size_t m = 37, p = 53, n = 29, k = 41, c = 67;
    double *A = rnd_array(m * p), *B = rnd_array(p * n), *S = rnd_array(m * n);
    double *C = malloc(m * n * sizeof *C), *dA = malloc(m * p * sizeof *dA);
    double *dB = malloc(p * n * sizeof *dB);
    double *gA = ones(m * p), *gB = ones(p * n);
    naive_matmul(A, B, S, m, p, n, C, dA, dB);
    ad_tape *t = ad_tape_new(NULL);
    ad_node a = ad_param(t, ad_shape_mat(m, p), A, gA);
    ad_node b = ad_param(t, ad_shape_mat(p, n), B, gB);
    cr_assert_eq(ad_backward_seed(t, ad_matmul(t, a, b), S), AD_OK, "%s", ad_tape_errmsg(t));
    expect_plus_one(gA, dA, m * p, "matmul dA added");
    expect_plus_one(gB, dB, p * n, "matmul dB added");

    /* matmul_nt with A B^T = A (B^T): reuse the products with B transposed */
    double *Bt = malloc(p * n * sizeof *Bt), *dBt = malloc(p * n * sizeof *dBt);
    double *gBt = ones(p * n);
    transpose(B, p, n, Bt);
    transpose(dB, p, n, dBt);
    for (size_t i = 0; i < m * p; i++)
        gA[i] = 1.0;
    ad_tape_reset(t);
    a = ad_param(t, ad_shape_mat(m, p), A, gA);
    b = ad_param(t, ad_shape_mat(n, p), Bt, gBt);
    cr_assert_eq(ad_backward_seed(t, ad_matmul_nt(t, a, b), S), AD_OK, "%s", ad_tape_errmsg(t));
    expect_plus_one(gA, dA, m * p, "matmul_nt dA added");
    expect_plus_one(gBt, dBt, p * n, "matmul_nt dB added");

    /* matvec, 41 rows: ten blocks of four and one row left */
    double *W = rnd_array(k * c), *x = rnd_array(c), *sk = rnd_array(k);
    double *y = malloc(k * sizeof *y), *dW = malloc(k * c * sizeof *dW), *dx = malloc(c * sizeof *dx);
    double *gW = ones(k * c), *gx = ones(c);
    naive_matmul(W, x, sk, k, c, 1, y, dW, dx);
    ad_tape_reset(t);
    ad_node w = ad_param(t, ad_shape_mat(k, c), W, gW);
    ad_node v = ad_param(t, ad_shape_vec(c), x, gx);
    cr_assert_eq(ad_backward_seed(t, ad_matvec(t, w, v), sk), AD_OK, "%s", ad_tape_errmsg(t));
    expect_plus_one(gW, dW, k * c, "matvec dW added");
    expect_plus_one(gx, dx, c, "matvec dx added");

    /* affine, both forms, on the same products: db is dy, or the column
     * sums of dY */
    double *bias = rnd_array(k), *gbias = ones(k), *want = malloc(m * n * sizeof *want);
    for (size_t i = 0; i < k * c; i++)
        gW[i] = 1.0;
    for (size_t i = 0; i < c; i++)
        gx[i] = 1.0;
    ad_tape_reset(t);
    w = ad_param(t, ad_shape_mat(k, c), W, gW);
    v = ad_param(t, ad_shape_vec(c), x, gx);
    ad_node bn = ad_param(t, ad_shape_vec(k), bias, gbias);
    ad_node z = ad_affine(t, w, v, bn);
    for (size_t i = 0; i < k; i++)
        want[i] = y[i] + bias[i];
    EXPECT_CLOSE(ad_value(t, z), want, k, "affine forward");
    cr_assert_eq(ad_backward_seed(t, z, sk), AD_OK, "%s", ad_tape_errmsg(t));
    expect_plus_one(gW, dW, k * c, "affine dW added");
    expect_plus_one(gx, dx, c, "affine dx added");
    expect_plus_one(gbias, sk, k, "affine db added");

    double *cb = rnd_array(n), *gcb = ones(n), *dcb = calloc(n, sizeof *dcb);
    for (size_t i = 0; i < m * p; i++)
        gA[i] = 1.0;
    for (size_t i = 0; i < p * n; i++)
        gBt[i] = 1.0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            want[i * n + j] = C[i * n + j] + cb[j];
            dcb[j] += S[i * n + j];
        }
    ad_tape_reset(t);
    a = ad_param(t, ad_shape_mat(m, p), A, gA);
    b = ad_param(t, ad_shape_mat(n, p), Bt, gBt);
    bn = ad_param(t, ad_shape_vec(n), cb, gcb);
    z = ad_affine(t, b, a, bn); /* A (B^T)^T + b = A B + b */
    EXPECT_CLOSE(ad_value(t, z), want, m * n, "affine batch forward");
    cr_assert_eq(ad_backward_seed(t, z, S), AD_OK, "%s", ad_tape_errmsg(t));
    expect_plus_one(gA, dA, m * p, "affine batch dX added");
    expect_plus_one(gBt, dBt, p * n, "affine batch dW added");
    expect_plus_one(gcb, dcb, n, "affine batch db added");
    free(bias), free(gbias), free(want), free(cb), free(gcb), free(dcb);
    ad_tape_free(t);
    free(A), free(B), free(S), free(C), free(dA), free(dB), free(gA), free(gB);
    free(Bt), free(dBt), free(gBt), free(W), free(x), free(sk), free(y), free(dW), free(dx);
    free(gW), free(gx);
}

/* A large written dW (AD_SWEEP_ASSIGN, at the engine's streaming
 * threshold of 2^21 elements) goes out through non-temporal stores on
 * x86-64; so does nothing else. Each form -- aligned and even (streamed),
 * dW one double off 16-byte alignment, an odd row length -- must give the
 * products of the adding sweep bit for bit, and dW = dy x^T exactly. */
static void big_matvec_assign(size_t k, size_t c, size_t offset, const char *what)
{
    double *W = rnd_array(k * c), *x = rnd_array(c), *s = rnd_array(k);
    double *buf = malloc((k * c + 2) * sizeof *buf), *ref = calloc(k * c, sizeof *ref);
    double *gx = malloc(c * sizeof *gx), *gx0 = calloc(c, sizeof *gx0);
    cr_assert(buf && ref && gx && gx0);
    double *gW = buf + offset;
    ad_tape *t = ad_tape_new(NULL);
    ad_node w = ad_param(t, ad_shape_mat((uint32_t)k, (uint32_t)c), W, gW);
    ad_node v = ad_param(t, ad_shape_vec((uint32_t)c), x, gx);
    ad_node J = ad_dot(t, ad_matvec(t, w, v), ad_constant(t, ad_shape_vec((uint32_t)k), s));
    /* the adding form, into zeroed buffers */
    memset(gW, 0, k * c * sizeof *gW);
    memset(gx, 0, c * sizeof *gx);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
    memcpy(ref, gW, k * c * sizeof *ref);
    memcpy(gx0, gx, c * sizeof *gx0);
    /* the writing form, into NaN */
    for (size_t i = 0; i < k * c; i++)
        gW[i] = NAN;
    for (size_t j = 0; j < c; j++)
        gx[j] = NAN;
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < c; j++) {
            double g = gW[i * c + j];
            if (!(g == s[i] * x[j] && g == ref[i * c + j]))
                cr_assert_fail("%s: dW[%zu][%zu] = %.17g, dy x^T = %.17g, adding sweep %.17g",
                               what, i, j, g, s[i] * x[j], ref[i * c + j]);
        }
    for (size_t j = 0; j < c; j++)
        cr_assert(gx[j] == gx0[j], "%s: dx[%zu] = %.17g written, %.17g added", what, j, gx[j],
                  gx0[j]);
    ad_tape_free(t);
    free(W), free(x), free(s), free(buf), free(ref), free(gx), free(gx0);
}

Test(kernels, large_written_dw_equals_the_adding_sweep)
{
    big_matvec_assign(2048, 1024, 0, "2048x1024, aligned (streamed)");
    big_matvec_assign(2050, 1024, 1, "2050x1024, dW not 16-byte aligned");
    big_matvec_assign(2048, 1025, 0, "2048x1025, odd rows");
    big_matvec_assign(2044, 1024, 0, "2044x1024, under the threshold");
}

/* A row's value does not depend on the rows around it: matvec works on
 * blocks of four rows and single rows, and both give the same bits (the
 * same partial sums in the same order). */
Test(kernels, matvec_rows_do_not_depend_on_blocking, .disabled = AD_TEST_BLAS)
{
    const size_t lens[] = {1, 2, 3, 4, 5, 7, 8, 16, 17};
    const size_t rows = 9;
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const size_t n = lens[li];
        double *W = rnd_array(rows * n), *x = rnd_array(n);
        ad_tape_reset(t);
        ad_node xn = ad_constant(t, ad_shape_vec((uint32_t)n), x);
        ad_node y = ad_matvec(t, ad_constant(t, ad_shape_mat((uint32_t)rows, (uint32_t)n), W), xn);
        for (size_t i = 0; i < rows; i++) {
            ad_node yi = ad_matvec(t, ad_constant(t, ad_shape_mat(1, (uint32_t)n), W + i * n), xn);
            cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
            cr_assert(ad_value(t, y)[i] == ad_value(t, yi)[0],
                      "n = %zu, row %zu: %.17g in a block, %.17g alone", n, i, ad_value(t, y)[i],
                      ad_value(t, yi)[0]);
        }
        free(W), free(x);
    }
    ad_tape_free(t);
}

/* The same for matmul_nt's blocks of two rows of A by four or two rows of
 * B: a product's bits do not depend on the block that computed it. */
Test(kernels, matmul_nt_products_do_not_depend_on_blocking, .disabled = AD_TEST_BLAS)
{
    const size_t lens[] = {1, 2, 3, 5, 16, 17};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const size_t p = lens[li];
        double *A = rnd_array(2 * p), *B = rnd_array(6 * p);
        ad_tape_reset(t);
        ad_node a = ad_constant(t, ad_shape_mat(2, (uint32_t)p), A);
        ad_node all = ad_matmul_nt(t, a, ad_constant(t, ad_shape_mat(6, (uint32_t)p), B));
        for (size_t j = 0; j < 6; j += 2) { /* two rows of B at a time: 2x2 blocks */
            ad_node pair = ad_matmul_nt(t, a, ad_constant(t, ad_shape_mat(2, (uint32_t)p), B + j * p));
            cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
            for (size_t i = 0; i < 2; i++)
                for (size_t c = 0; c < 2; c++)
                    cr_assert(ad_value(t, all)[i * 6 + j + c] == ad_value(t, pair)[i * 2 + c],
                              "p = %zu, C[%zu][%zu]: %.17g in a 2x4 block, %.17g in a 2x2 block",
                              p, i, j + c, ad_value(t, all)[i * 6 + j + c],
                              ad_value(t, pair)[i * 2 + c]);
        }
        free(A), free(B);
    }
    ad_tape_free(t);
}
