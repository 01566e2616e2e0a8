/* neuron_hessian.c -- second derivatives of the single neuron of the lecture
 * notes:  z = W.x + b,  yhat = ReLU(z),  J = 1/2 (yhat - y)^2
 * with W = (4, 2, -5), x = (1, 0, 2), b = 7, y = 5 (z = 1 > 0).
 *
 * Over the parameters p = (W, b) (4 numbers), z = p.[x; 1], so where z > 0
 *   gradient  dJ/dp   = (yhat - y) [x; 1]
 *   Hessian   d2J/dp2 = [x; 1] [x; 1]^T      (ReLU'' = 0, ReLU' = 1)
 *   H v               = [x; 1] ([x; 1] . v)
 * The tape's ad_hessian and ad_hvp are printed beside these closed forms
 * and checked against them. See docs/math.md, "The Hessian of the neuron". */
#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>

#define N 4 /* W (3) and b (1) */

/* H[1][1] = x[1] * x[1] = 0 and dJ/dW[1] = -4 * 0 may be -0 in IEEE
 * arithmetic; printed as 0. */
static double unsigned_zero(double v) { return v == 0.0 ? 0.0 : v; }

static const char *const names[N] = {"W0", "W1", "W2", "b"};

/* 1 if tape and exact differ by at most 1e-12 (NaN never does), else 0
 * after saying which entry differs. */
static int check(const char *what, int i, int j, double tape, double exact)
{
    if (fabs(tape - exact) <= 1e-12)
        return 1;
    if (j < 0)
        fprintf(stderr, "neuron_hessian: %s[%s] = %.17g, closed form %.17g\n", what, names[i],
                tape, exact);
    else
        fprintf(stderr, "neuron_hessian: %s[%s][%s] = %.17g, closed form %.17g\n", what,
                names[i], names[j], tape, exact);
    return 0;
}

int main(void)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2}, b0 = 7, y0 = 5;
    ad_tape *t = ad_tape_new(NULL);
    if (!t) {
        fprintf(stderr, "neuron_hessian: out of memory\n");
        return 1;
    }

    /* The inputs of the Hessian are variables; x and y are data. */
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node b = ad_scalar_var(t, b0);
    ad_node x = ad_constant(t, ad_shape_vec(3), x0);
    ad_node y = ad_scalar(t, y0);

    ad_node z = ad_add(t, ad_dot(t, W, x), b);                      /* z = W.x + b    */
    ad_node yhat = ad_relu(t, z);                                   /* yhat = ReLU(z) */
    ad_node J = ad_scale(t, ad_square(t, ad_sub(t, yhat, y)), 0.5); /* 1/2 (yhat-y)^2 */
    if (ad_tape_status(t) != AD_OK) {
        fprintf(stderr, "neuron_hessian: %s\n", ad_tape_errmsg(t));
        ad_tape_free(t);
        return 1;
    }

    /* The input vector p = (W0, W1, W2, b): W's 3 elements, then b. */
    const ad_node in[2] = {W, b};
    double H[N * N];
    double v[N] = {1, 1, 1, 1}, hv[N], grad[N];
    const double *const vp[2] = {v, v + 3};
    double *const hvp[2] = {hv, hv + 3};
    double *const gradp[2] = {grad, grad + 3};

    if (ad_hessian(t, J, 2, in, H) != AD_OK ||
        ad_hvp(t, J, 2, in, vp, hvp, gradp) != AD_OK) {
        fprintf(stderr, "neuron_hessian: %s\n", ad_tape_errmsg(t));
        ad_tape_free(t);
        return 1;
    }

    /* The closed forms, from a = [x; 1]. */
    const double a[N] = {x0[0], x0[1], x0[2], 1};
    const double zval = W0[0] * x0[0] + W0[1] * x0[1] + W0[2] * x0[2] + b0;
    const double r = (zval > 0 ? zval : 0) - y0; /* yhat - y */
    double av = 0;
    for (int i = 0; i < N; i++)
        av += a[i] * v[i];

    int ok = 1;
    printf("z = %g, yhat = %g, J = %g\n\n", ad_scalar_value(t, z), ad_scalar_value(t, yhat),
           ad_scalar_value(t, J));

    printf("Hessian of J over (W0, W1, W2, b)\n");
    printf("%-4s %24s %30s\n", "", "tape (ad_hessian)", "closed form [x; 1][x; 1]^T");
    for (int i = 0; i < N; i++) {
        printf("%-4s ", names[i]);
        for (int j = 0; j < N; j++)
            printf("%6g", unsigned_zero(H[i * N + j]));
        printf("      ");
        for (int j = 0; j < N; j++) {
            printf("%6g", unsigned_zero(a[i] * a[j]));
            ok &= check("H", i, j, H[i * N + j], a[i] * a[j]);
        }
        printf("\n");
    }

    printf("\n%-4s %16s %22s\n", "", "gradient (ad_hvp)", "(yhat - y) [x; 1]");
    for (int i = 0; i < N; i++) {
        printf("%-4s %16g %22g\n", names[i], unsigned_zero(grad[i]), unsigned_zero(r * a[i]));
        ok &= check("gradient", i, -1, grad[i], r * a[i]);
    }

    printf("\nHessian-vector product for v = (%g, %g, %g, %g)\n", v[0], v[1], v[2], v[3]);
    printf("%-4s %16s %22s\n", "", "H v (ad_hvp)", "[x; 1]([x; 1].v)");
    for (int i = 0; i < N; i++) {
        printf("%-4s %16g %22g\n", names[i], unsigned_zero(hv[i]), unsigned_zero(a[i] * av));
        ok &= check("Hv", i, -1, hv[i], a[i] * av);
    }

    ad_tape_free(t);
    if (!ok) {
        fprintf(stderr, "neuron_hessian: the tape differs from the closed form\n");
        return 1;
    }
    printf("\nall values match the closed form\n");
    return 0;
}
