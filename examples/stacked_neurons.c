/* stacked_neurons.c -- k = 3 neurons on one input (W is 3x3):
 *   z = W x + b,  yhat = ReLU(z),  J = 1/2 ||yhat - y||^2
 * The tape's dW, db and dx beside the hand formulas
 *   dW = dz x^T,  db = dz,  dx = W^T dz,  with dz = (yhat - y) * relu'(z). */
#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>

#define K 3
#define N 3

int main(void)
{
    const double W0[K * N] = {4, 2, -5, 1, -3, 2, 0.5, 1, 1};
    const double x0[N] = {1, 0, 2}, b0[K] = {7, 1, -2}, y0[K] = {5, 0, 1};

    ad_tape *t = ad_tape_new(NULL);
    if (!t)
        return 1;
    ad_node W = ad_variable(t, ad_shape_mat(K, N), W0);
    ad_node x = ad_variable(t, ad_shape_vec(N), x0);
    ad_node b = ad_variable(t, ad_shape_vec(K), b0);
    ad_node y = ad_constant(t, ad_shape_vec(K), y0);
    ad_node z = ad_add(t, ad_matvec(t, W, x), b);
    ad_node yhat = ad_relu(t, z);
    ad_node J = ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, yhat, y))), 0.5);
    if (ad_backward(t, J) != AD_OK) {
        fprintf(stderr, "stacked_neurons: %s\n", ad_tape_errmsg(t));
        ad_tape_free(t);
        return 1;
    }

    /* By hand, from the formulas of the lecture notes. */
    const double *zv = ad_value(t, z), *yh = ad_value(t, yhat);
    double dz[K], dW[K * N], dx[N] = {0};
    for (int i = 0; i < K; i++)
        dz[i] = (yh[i] - y0[i]) * (zv[i] > 0 ? 1.0 : 0.0);
    for (int i = 0; i < K; i++)
        for (int j = 0; j < N; j++) {
            dW[i * N + j] = dz[i] * x0[j]; /* dW = dz x^T */
            dx[j] += W0[i * N + j] * dz[i]; /* dx = W^T dz */
        }

    const double *tW = ad_grad(t, W), *tb = ad_grad(t, b), *tx = ad_grad(t, x);
    double worst = 0;
    printf("z = (%g, %g, %g), J = %g\n\n", zv[0], zv[1], zv[2], ad_scalar_value(t, J));
    printf("%-8s %12s %12s\n", "", "tape", "by hand");
    for (int i = 0; i < K; i++)
        for (int j = 0; j < N; j++) {
            printf("dW[%d][%d] %12g %12g\n", i, j, tW[i * N + j] + 0.0, dW[i * N + j] + 0.0); /* -0 as 0 */
            worst = fmax(worst, fabs(tW[i * N + j] - dW[i * N + j]));
        }
    for (int i = 0; i < K; i++) {
        printf("db[%d]    %12g %12g\n", i, tb[i], dz[i]);
        worst = fmax(worst, fabs(tb[i] - dz[i]));
    }
    for (int j = 0; j < N; j++) {
        printf("dx[%d]    %12g %12g\n", j, tx[j], dx[j]);
        worst = fmax(worst, fabs(tx[j] - dx[j]));
    }
    printf("\nlargest difference: %g -> %s\n", worst, worst <= 1e-12 ? "they agree" : "MISMATCH");
    ad_tape_free(t);
    return worst <= 1e-12 ? 0 : 1;
}
