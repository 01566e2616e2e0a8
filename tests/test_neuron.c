/* test_neuron.c -- the seed neuron (workload W0) and its stacked k = 3 form:
 *   z = W.x + b,  yhat = ReLU(z),  J = 1/2 (yhat - y)^2
 * with W = (4, 2, -5), x = (1, 0, 2), b = 7, y = 5. Every value is an
 * integer, so the tape must reproduce it exactly. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2};
static const double B0 = 7, Y0 = 5;

/* The expected numbers of W0. */
static const double Z = 1, YHAT = 1, J = 8, DYHAT = -4, DZ = -4, DB = -4;
static const double DW[3] = {-4, 0, -8}, DX[3] = {-16, -8, 20};

static void expect_vec(const double *got, const double *want, int n, const char *what)
{
    cr_assert_not_null(got, "%s: no gradient", what);
    for (int i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s[%d] = %.17g, want %g", what, i, got[i], want[i]);
}

/* J from yhat, shared by the variants: J = 1/2 (yhat - y)^2. */
static ad_node loss(ad_tape *t, ad_node yhat, ad_node y)
{
    return ad_scale(t, ad_square(t, ad_sub(t, yhat, y)), 0.5);
}

Test(neuron, w0_with_dot)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node b = ad_scalar_var(t, B0);
    ad_node y = ad_scalar(t, Y0);
    ad_node z = ad_add(t, ad_dot(t, W, x), b); /* z = W.x + b */
    ad_node yhat = ad_relu(t, z);
    ad_node Jn = loss(t, yhat, y);
    cr_assert_eq(ad_backward(t, Jn), AD_OK, "%s", ad_tape_errmsg(t));

    cr_assert_eq(ad_scalar_value(t, z), Z);
    cr_assert_eq(ad_scalar_value(t, yhat), YHAT);
    cr_assert_eq(ad_scalar_value(t, Jn), J);
    cr_assert_eq(ad_grad(t, yhat)[0], DYHAT);
    cr_assert_eq(ad_grad(t, z)[0], DZ);
    cr_assert_eq(ad_grad(t, b)[0], DB);
    expect_vec(ad_grad(t, W), DW, 3, "dJ/dW");
    expect_vec(ad_grad(t, x), DX, 3, "dJ/dx");
    cr_assert_null(ad_grad(t, y), "y is a constant");
    cr_assert_eq(ad_grad(t, Jn)[0], 1.0, "the output is seeded with 1");
    ad_tape_free(t);
}

/* W as a 1x3 matrix: z = W x + b is a vector of 1, reduced by sum. */
Test(neuron, w0_with_matvec)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_variable(t, ad_shape_mat(1, 3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node b = ad_variable(t, ad_shape_vec(1), &B0);
    ad_node y = ad_constant(t, ad_shape_vec(1), &Y0);
    ad_node z = ad_add(t, ad_matvec(t, W, x), b);
    ad_node yhat = ad_relu(t, z);
    ad_node Jn = ad_sum(t, loss(t, yhat, y));
    cr_assert_eq(ad_backward(t, Jn), AD_OK, "%s", ad_tape_errmsg(t));

    cr_assert_eq(ad_node_shape(t, z).ndim, 1);
    cr_assert_eq(ad_value(t, z)[0], Z);
    cr_assert_eq(ad_value(t, yhat)[0], YHAT);
    cr_assert_eq(ad_scalar_value(t, Jn), J);
    cr_assert_eq(ad_grad(t, yhat)[0], DYHAT);
    cr_assert_eq(ad_grad(t, z)[0], DZ);
    cr_assert_eq(ad_grad(t, b)[0], DB);
    expect_vec(ad_grad(t, W), DW, 3, "dJ/dW");
    expect_vec(ad_grad(t, x), DX, 3, "dJ/dx");
    ad_tape_free(t);
}

/* Every number an inline scalar node: z = w1 x1 + w2 x2 + w3 x3 + b. */
Test(neuron, w0_with_inline_scalars)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node w[3], x[3];
    for (int i = 0; i < 3; i++) {
        w[i] = ad_scalar_var(t, W0[i]);
        x[i] = ad_scalar_var(t, X0[i]);
    }
    ad_node b = ad_scalar_var(t, B0);
    ad_node y = ad_scalar(t, Y0);
    ad_node z = b;
    for (int i = 0; i < 3; i++)
        z = ad_add(t, z, ad_mul(t, w[i], x[i]));
    ad_node yhat = ad_relu(t, z);
    ad_node Jn = loss(t, yhat, y);
    cr_assert_eq(ad_backward(t, Jn), AD_OK, "%s", ad_tape_errmsg(t));

    /* Scalars all the way: every node has the scalar shape. */
    for (size_t i = 1; i < ad_tape_len(t); i++)
        cr_assert_eq(ad_node_shape(t, ad_tape_node(t, i)).ndim, 0, "node %zu is not a scalar", i);
    cr_assert_eq(ad_scalar_value(t, z), Z);
    cr_assert_eq(ad_scalar_value(t, yhat), YHAT);
    cr_assert_eq(ad_scalar_value(t, Jn), J);
    cr_assert_eq(ad_grad(t, yhat)[0], DYHAT);
    cr_assert_eq(ad_grad(t, z)[0], DZ);
    cr_assert_eq(ad_grad(t, b)[0], DB);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ad_grad(t, w[i])[0], DW[i], "dJ/dW[%d] = %g", i, ad_grad(t, w[i])[0]);
        cr_assert_eq(ad_grad(t, x[i])[0], DX[i], "dJ/dx[%d] = %g", i, ad_grad(t, x[i])[0]);
    }
    ad_tape_free(t);
}

/* The same neuron with W and b as caller-owned parameters (ad_param). */
Test(neuron, w0_with_params)
{
    double Wv[3] = {4, 2, -5}, gW[3] = {0}, bv = B0, gb = 0;
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_param(t, ad_shape_vec(3), Wv, gW);
    ad_node b = ad_param(t, ad_shape_scalar(), &bv, &gb);
    ad_node x = ad_constant(t, ad_shape_vec(3), X0);
    ad_node Jn = loss(t, ad_relu(t, ad_add(t, ad_dot(t, W, x), b)), ad_scalar(t, Y0));
    cr_assert_eq(ad_backward(t, Jn), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_scalar_value(t, Jn), J);
    expect_vec(gW, DW, 3, "dJ/dW");
    cr_assert_eq(gb, DB);
    cr_assert_null(ad_grad(t, x));
    ad_tape_free(t);
}

/* Stacked k = 3 neurons on one input: W is 3x3, z = W x + b (k),
 * yhat = ReLU(z), J = 1/2 ||yhat - y||^2. The tape's gradients against
 *   dz = (yhat - y) * relu'(z),  dW = dz x^T,  db = dz,  dx = W^T dz. */
static void stacked(const double *Wv, const double *xv, const double *bv, const double *yv)
{
    enum { K = 3, N = 3 };
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node W = ad_variable(t, ad_shape_mat(K, N), Wv);
    ad_node x = ad_variable(t, ad_shape_vec(N), xv);
    ad_node b = ad_variable(t, ad_shape_vec(K), bv);
    ad_node y = ad_constant(t, ad_shape_vec(K), yv);
    ad_node z = ad_add(t, ad_matvec(t, W, x), b);
    ad_node yhat = ad_relu(t, z);
    ad_node Jn = ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, yhat, y))), 0.5);
    cr_assert_eq(ad_backward(t, Jn), AD_OK, "%s", ad_tape_errmsg(t));

    double zh[K], dz[K], dW[K * N], dx[N] = {0}, Jh = 0;
    for (int i = 0; i < K; i++) {
        zh[i] = bv[i];
        for (int j = 0; j < N; j++)
            zh[i] += Wv[i * N + j] * xv[j];
        double yh = zh[i] > 0 ? zh[i] : 0;
        Jh += 0.5 * (yh - yv[i]) * (yh - yv[i]);
        dz[i] = (yh - yv[i]) * (zh[i] > 0 ? 1.0 : 0.0);
    }
    for (int i = 0; i < K; i++)
        for (int j = 0; j < N; j++) {
            dW[i * N + j] = dz[i] * xv[j];  /* dW = dz x^T */
            dx[j] += Wv[i * N + j] * dz[i]; /* dx = W^T dz */
        }
    cr_assert_leq(fabs(ad_scalar_value(t, Jn) - Jh), 1e-12, "J = %.17g, by hand %.17g",
                  ad_scalar_value(t, Jn), Jh);
    const double *zt = ad_value(t, z), *tW = ad_grad(t, W), *tb = ad_grad(t, b),
                 *tx = ad_grad(t, x);
    for (int i = 0; i < K; i++) {
        cr_assert_leq(fabs(zt[i] - zh[i]), 1e-12, "z[%d]", i);
        cr_assert_leq(fabs(tb[i] - dz[i]), 1e-12, "db[%d] = %.17g, by hand %.17g", i, tb[i],
                      dz[i]);
        for (int j = 0; j < N; j++)
            cr_assert_leq(fabs(tW[i * N + j] - dW[i * N + j]), 1e-12,
                          "dW[%d][%d] = %.17g, by hand %.17g", i, j, tW[i * N + j],
                          dW[i * N + j]);
    }
    for (int j = 0; j < N; j++)
        cr_assert_leq(fabs(tx[j] - dx[j]), 1e-12, "dx[%d] = %.17g, by hand %.17g", j, tx[j],
                      dx[j]);
    ad_tape_free(t);
}

Test(neuron, stacked_k3_by_hand)
{
    /* Row 0 is the W0 neuron; row 2 has z < 0, so ReLU blocks it. */
    const double W[9] = {4, 2, -5, 1, -3, 2, 0.5, 1, -4};
    const double x[3] = {1, 0, 2}, b[3] = {7, 1, -2}, y[3] = {5, 0, 1};
    stacked(W, x, b, y);
}

Test(neuron, stacked_k3_random)
{
    test_rng g = {42};
    for (int rep = 0; rep < 20; rep++) {
        double W[9], x[3], b[3], y[3];
        for (int i = 0; i < 9; i++)
            W[i] = test_uniform(&g, -2, 2);
        for (int i = 0; i < 3; i++) {
            x[i] = test_uniform(&g, -2, 2);
            b[i] = test_uniform(&g, -1, 1);
            y[i] = test_uniform(&g, -1, 1);
        }
        stacked(W, x, b, y);
    }
}
