/* test_kernels.c -- the linear-algebra kernels, forward and vjp, against
 * naive loops to 1e-12 relative, on shapes big enough to take every code
 * path (unrolled dot remainders, the BLAS backend when built with
 * -DAD_BLAS=ON). The vjp is read through ad_backward_seed with a random
 * seed, so gradients are the exact products dA = dC B^T etc. */
#define _POSIX_C_SOURCE 200809L /* setenv */
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

/* A large written dW (AD_SWEEP_ASSIGN, 2^21 elements and more: where a
 * build with AD__STREAM_MIN defined sends it out through non-temporal
 * stores; the default build does not, see ops_linalg.c). Each form --
 * aligned and even, dW one double off 16-byte alignment, an odd row
 * length -- must give the products of the adding sweep bit for bit, and
 * dW = dy x^T exactly. */
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

/* ---- kernel variants (AD_KERNELS_*, ad_tape_set_kernels, AD_KERNELS) ----
 * Each variant computes the dense products (matvec, matmul_nt and their
 * backward passes, which affine shares) with other instructions and
 * partial sums, so they agree with the portable kernels up to rounding:
 * the tolerance is |got - portable| <= 1e-13 * sum |terms| per element,
 * sum |terms| being the same product of the absolute values (computed by
 * the portable kernels; exact to rounding, all terms being >= 0). */

#ifndef AD_TEST_PORTABLE_KERNELS
#define AD_TEST_PORTABLE_KERNELS 0
#endif

static const int variants[] = {AD_KERNELS_PORTABLE, AD_KERNELS_SSE2, AD_KERNELS_AVX2};
static const char *const variant_names[] = {"auto", "portable", "sse2", "avx2"};

/* What this build on this CPU must offer. */
static int must_support(int v)
{
    if (v == AD_KERNELS_PORTABLE)
        return 1;
#if AD_TEST_PORTABLE_KERNELS || !defined(__x86_64__)
    return 0;
#else
    if (v == AD_KERNELS_SSE2)
        return 1;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}

static ad_tape *tape_with(int v)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    cr_assert_eq(ad_tape_set_kernels(t, v), AD_OK, "%s: %s", variant_names[v], ad_tape_errmsg(t));
    cr_assert_eq(ad_tape_kernels(t), v);
    return t;
}

/* absolute values of a, or a itself */
static double *maybe_abs(const double *a, size_t n, int absval)
{
    double *r = malloc((n ? n : 1) * sizeof *r);
    cr_assert_not_null(r);
    for (size_t i = 0; i < n; i++)
        r[i] = absval ? fabs(a[i]) : a[i];
    return r;
}

/* Every product of matmul_nt (A m x p, B n x p, seed S m x n) and matvec
 * (W = B: n x p, x = A's first row, seed S's first column... any n-vector),
 * written (variables) and added into buffers holding 1 (ad_param), on a
 * tape using variant v; appended to out. Returns the count. */
static size_t all_products(int v, int absval, size_t m, size_t p, size_t n, const double *A0,
                           const double *B0, const double *S0, double *out)
{
    double *A = maybe_abs(A0, m * p, absval), *B = maybe_abs(B0, n * p, absval);
    double *S = maybe_abs(S0, m * n, absval);
    ad_tape *t = tape_with(v);
    size_t len = 0;
#define TAKE(ptr, cnt) (memcpy(out + len, (ptr), (cnt) * sizeof *out), len += (cnt))
    /* matmul_nt, written */
    ad_node a = ad_variable(t, ad_shape_mat((uint32_t)m, (uint32_t)p), A);
    ad_node b = ad_variable(t, ad_shape_mat((uint32_t)n, (uint32_t)p), B);
    ad_node c = ad_matmul_nt(t, a, b);
    cr_assert_eq(ad_backward_seed(t, c, S), AD_OK, "%s", ad_tape_errmsg(t));
    TAKE(ad_value(t, c), m * n);
    TAKE(ad_grad(t, a), m * p);
    TAKE(ad_grad(t, b), n * p);
    /* matmul_nt, added */
    double *gA = ones(m * p), *gB = ones(n * p);
    ad_tape_reset(t);
    a = ad_param(t, ad_shape_mat((uint32_t)m, (uint32_t)p), A, gA);
    b = ad_param(t, ad_shape_mat((uint32_t)n, (uint32_t)p), B, gB);
    cr_assert_eq(ad_backward_seed(t, ad_matmul_nt(t, a, b), S), AD_OK, "%s", ad_tape_errmsg(t));
    TAKE(gA, m * p);
    TAKE(gB, n * p);
    /* matvec y = B x (x: A's first row), written, then added */
    ad_tape_reset(t);
    ad_node w = ad_variable(t, ad_shape_mat((uint32_t)n, (uint32_t)p), B);
    ad_node x = ad_variable(t, ad_shape_vec((uint32_t)p), A);
    ad_node y = ad_matvec(t, w, x);
    cr_assert_eq(ad_backward_seed(t, y, S), AD_OK, "%s", ad_tape_errmsg(t));
    TAKE(ad_value(t, y), n);
    TAKE(ad_grad(t, w), n * p);
    TAKE(ad_grad(t, x), p);
    for (size_t i = 0; i < n * p; i++)
        gB[i] = 1.0;
    for (size_t i = 0; i < p; i++)
        gA[i] = 1.0;
    ad_tape_reset(t);
    w = ad_param(t, ad_shape_mat((uint32_t)n, (uint32_t)p), B, gB);
    x = ad_param(t, ad_shape_vec((uint32_t)p), A, gA);
    cr_assert_eq(ad_backward_seed(t, ad_matvec(t, w, x), S), AD_OK, "%s", ad_tape_errmsg(t));
    TAKE(gB, n * p);
    TAKE(gA, p);
#undef TAKE
    ad_tape_free(t);
    free(A), free(B), free(S), free(gA), free(gB);
    return len;
}

static void variants_agree_at(size_t m, size_t p, size_t n)
{
    double *A = rnd_array(m * p), *B = rnd_array(n * p), *S = rnd_array(m * n);
    const size_t cap = 3 * m * n + 3 * m * p + 5 * n * p + 2 * p + n;
    double *ref = malloc(cap * sizeof *ref), *mag = malloc(cap * sizeof *mag);
    double *got = malloc(cap * sizeof *got);
    cr_assert(ref && mag && got);
    const size_t len = all_products(AD_KERNELS_PORTABLE, 0, m, p, n, A, B, S, ref);
    cr_assert_leq(len, cap);
    all_products(AD_KERNELS_PORTABLE, 1, m, p, n, A, B, S, mag);
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
        const int v = variants[vi];
        if (!must_support(v))
            continue;
        all_products(v, 0, m, p, n, A, B, S, got);
        for (size_t i = 0; i < len; i++)
            if (!(fabs(got[i] - ref[i]) <= 1e-13 * mag[i]))
                cr_assert_fail("%s kernels, m %zu p %zu n %zu: product element %zu is %.17g, "
                               "portable %.17g (sum |terms| %g)",
                               variant_names[v], m, p, n, i, got[i], ref[i], mag[i]);
    }
    free(A), free(B), free(S), free(ref), free(mag), free(got);
}

/* m: rows of A (blocks of 3 and 2, remainders 0-2); n: rows of B and of
 * W (blocks of 4, remainders 0-3); p: the summed length (4-wide vectors,
 * tails of 1-3; column panels of 12, 8 and 4, remainders 0-11). */
Test(kernels, each_variant_agrees_with_the_portable_kernels)
{
    const size_t ms[] = {1, 2, 3, 4, 5, 7};
    const size_t ns[] = {1, 2, 3, 4, 5, 6, 9};
    const size_t ps[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 19, 21, 23, 24, 25};
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
            for (size_t c = 0; c < sizeof ps / sizeof ps[0]; c++)
                variants_agree_at(ms[a], ps[c], ns[b]);
    /* larger: A in chunks of rows (a chunk of A is at most 512 KiB) */
    variants_agree_at(70, 1001, 6);
    variants_agree_at(9, 257, 130);
}

Test(kernels, variant_choice_and_errors)
{
    unsetenv("AD_KERNELS"); /* the suite may run with a variant forced */
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const int best = ad_tape_kernels(NULL);
    cr_assert(best == AD_KERNELS_PORTABLE || best == AD_KERNELS_SSE2 || best == AD_KERNELS_AVX2);
    cr_assert(must_support(best));
    cr_assert_eq(ad_tape_kernels(t), best, "a new tape takes the best variant");
    for (int v = AD_KERNELS_PORTABLE; v <= AD_KERNELS_AVX2; v++) {
        if (v > best)
            cr_assert_eq(must_support(v), 0, "%s is supported but auto chose %s",
                         variant_names[v], variant_names[best]);
        const int st = ad_tape_set_kernels(t, v);
        if (must_support(v)) {
            cr_assert_eq(st, AD_OK, "%s: %s", variant_names[v], ad_tape_errmsg(t));
            cr_assert_eq(ad_tape_kernels(t), v);
            cr_assert_str_empty(ad_tape_errmsg(t));
        } else {
            const int before = ad_tape_kernels(t);
            cr_assert_eq(st, AD_EUNSUPPORTED, "%s: status %d", variant_names[v], st);
            cr_assert(strstr(ad_tape_errmsg(t), variant_names[v]) != NULL, "message: %s",
                      ad_tape_errmsg(t));
            cr_assert_eq(ad_tape_kernels(t), before, "a refused variant changes nothing");
            cr_assert_eq(ad_tape_status(t), AD_OK, "the recording's status is untouched");
        }
    }
    cr_assert_eq(ad_tape_set_kernels(t, AD_KERNELS_AUTO), AD_OK);
    cr_assert_eq(ad_tape_kernels(t), best);
    cr_assert_eq(ad_tape_set_kernels(t, 7), AD_EMISUSE);
    cr_assert(strstr(ad_tape_errmsg(t), "unknown variant") != NULL, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_tape_set_kernels(t, -1), AD_EMISUSE);
    cr_assert_eq(ad_tape_set_kernels(NULL, AD_KERNELS_AUTO), AD_EMISUSE);
    cr_assert_str_eq(ad_strstatus(AD_EUNSUPPORTED), "not supported by this CPU or this build");
    ad_tape_free(t);
}

/* AD_KERNELS, read by ad_tape_new (Criterion runs each test in its own
 * process, so the environment is this test's). */
Test(kernels, environment_variable_forces_a_variant)
{
    const int best = ad_tape_kernels(NULL);
    for (int v = AD_KERNELS_AUTO; v <= AD_KERNELS_AVX2; v++) {
        cr_assert_eq(setenv("AD_KERNELS", variant_names[v], 1), 0);
        ad_tape *t = ad_tape_new(NULL);
        cr_assert_not_null(t);
        const int want = v == AD_KERNELS_AUTO ? best : must_support(v) ? v : best;
        cr_assert_eq(ad_tape_kernels(t), want, "AD_KERNELS=%s: got %d, want %d",
                     variant_names[v], ad_tape_kernels(t), want);
        ad_tape_free(t);
    }
    cr_assert_eq(setenv("AD_KERNELS", "avx512", 1), 0);
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_eq(ad_tape_kernels(t), best, "an unknown name is ignored");
    ad_tape_free(t);
    unsetenv("AD_KERNELS");
}

/* W2/W3-like graphs: a 37-19-7 ReLU MLP with softmax cross-entropy, one
 * sample (matvec) and a batch of 13 (matmul_nt), on a tape per variant:
 * loss and every parameter gradient agree with the portable tape's to
 * 1e-12 (normwise relative). A workspace made from a tape computes with
 * that tape's kernels: equal to it bit for bit. */
enum { MI = 37, MH = 19, MO = 7, MB = 13 };
typedef struct mlp_out {
    double loss;
    double g[MH * MI + MH + MO * MH + MO];
} mlp_out;

static void mlp_run(int v, size_t batch, const double *params, const double *X, const double *T,
                    mlp_out *o, mlp_out *ws_o)
{
    ad_tape *t = tape_with(v);
    double *g = o->g;
    const double *p = params;
    ad_node W1 = ad_param(t, ad_shape_mat(MH, MI), p, g);
    ad_node b1 = ad_param(t, ad_shape_vec(MH), p + MH * MI, g + MH * MI);
    ad_node W2 = ad_param(t, ad_shape_mat(MO, MH), p + MH * MI + MH, g + MH * MI + MH);
    ad_node b2 = ad_param(t, ad_shape_vec(MO), p + MH * MI + MH + MO * MH,
                          g + MH * MI + MH + MO * MH);
    const ad_shape xs = batch == 1 ? ad_shape_vec(MI) : ad_shape_mat((uint32_t)batch, MI);
    const ad_shape ts = batch == 1 ? ad_shape_vec(MO) : ad_shape_mat((uint32_t)batch, MO);
    ad_node x = ad_constant(t, xs, X), tg = ad_constant(t, ts, T);
    ad_node h = ad_relu(t, ad_affine(t, W1, x, b1));
    ad_node J = ad_softmax_xent(t, ad_affine(t, W2, h, b2), tg);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    o->loss = ad_value(t, J)[0];
    if (ws_o) {
        ad_workspace *ws = ad_workspace_new(t, NULL, NULL);
        cr_assert_not_null(ws);
        cr_assert_eq(ad_workspace_bind(ws, W1, NULL, ws_o->g), AD_OK);
        cr_assert_eq(ad_workspace_bind(ws, b1, NULL, ws_o->g + MH * MI), AD_OK);
        cr_assert_eq(ad_workspace_bind(ws, W2, NULL, ws_o->g + MH * MI + MH), AD_OK);
        cr_assert_eq(ad_workspace_bind(ws, b2, NULL, ws_o->g + MH * MI + MH + MO * MH), AD_OK);
        cr_assert_eq(ad_workspace_replay(ws), AD_OK);
        cr_assert_eq(ad_workspace_sweep(ws, J, NULL, AD_SWEEP_ASSIGN), AD_OK);
        ws_o->loss = ad_workspace_value(ws, J)[0];
        ad_workspace_free(ws);
    }
    ad_tape_free(t);
}

static double norm_rel(const double *a, const double *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++)
        d += (a[i] - b[i]) * (a[i] - b[i]), s += b[i] * b[i];
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

Test(kernels, whole_mlp_agrees_across_variants)
{
    const size_t np = MH * MI + MH + MO * MH + MO;
    double *params = rnd_array(np), *X = rnd_array(MB * MI), *T = calloc(MB * MO, sizeof *T);
    cr_assert_not_null(T);
    for (size_t r = 0; r < MB; r++)
        T[r * MO + r % MO] = 1.0; /* one-hot targets */
    static mlp_out ref, got, wso;
    const size_t batches[] = {1, MB};
    for (size_t bi = 0; bi < 2; bi++) {
        const size_t batch = batches[bi];
        mlp_run(AD_KERNELS_PORTABLE, batch, params, X, T, &ref, NULL);
        for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
            const int v = variants[vi];
            if (!must_support(v))
                continue;
            mlp_run(v, batch, params, X, T, &got, &wso);
            cr_assert_leq(fabs(got.loss - ref.loss), 1e-12 * fabs(ref.loss),
                          "%s, batch %zu: loss %.17g, portable %.17g", variant_names[v], batch,
                          got.loss, ref.loss);
            cr_assert_leq(norm_rel(got.g, ref.g, np), 1e-12, "%s, batch %zu: gradient %g",
                          variant_names[v], batch, norm_rel(got.g, ref.g, np));
            cr_assert(got.loss == wso.loss && memcmp(got.g, wso.g, sizeof got.g) == 0,
                      "%s, batch %zu: the workspace computed other bits than its tape",
                      variant_names[v], batch);
        }
    }
    free(params), free(X), free(T);
}
