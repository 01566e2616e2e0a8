/* neuron.c -- the single neuron of the lecture notes, differentiated by the
 * tape:  z = W.x + b,  yhat = ReLU(z),  J = 1/2 (yhat - y)^2
 * with W = (4, 2, -5), x = (1, 0, 2), b = 7, y = 5. */
#include <autodiff/autodiff.h>

#include <stdio.h>

/* dJ/dW[1] = dz * x[1] = -4 * 0 is -0 in IEEE arithmetic; printed as 0. */
static double unsigned_zero(double v) { return v == 0.0 ? 0.0 : v; }

static void print_vec(const char *name, const double *v, int n)
{
    printf("%-7s = (", name);
    for (int i = 0; i < n; i++)
        printf("%s%g", i ? ", " : "", unsigned_zero(v[i]));
    printf(")\n");
}

int main(void)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    ad_tape *t = ad_tape_new(NULL);
    if (!t) {
        fprintf(stderr, "neuron: out of memory\n");
        return 1;
    }

    /* Variables: everything we want a derivative for. */
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node b = ad_scalar_var(t, 7);
    ad_node y = ad_scalar(t, 5);

    ad_node z = ad_add(t, ad_dot(t, W, x), b);     /* z = W.x + b     */
    ad_node yhat = ad_relu(t, z);                  /* yhat = ReLU(z)  */
    ad_node J = ad_scale(t, ad_square(t, ad_sub(t, yhat, y)), 0.5); /* J = 1/2 (yhat - y)^2 */

    /* One check for the whole chain: the first error is kept. */
    if (ad_backward(t, J) != AD_OK) {
        fprintf(stderr, "neuron: %s\n", ad_tape_errmsg(t));
        ad_tape_free(t);
        return 1;
    }

    printf("forward\n");
    printf("z       = %g\n", ad_scalar_value(t, z));
    printf("yhat    = %g\n", ad_scalar_value(t, yhat));
    printf("J       = %g\n", ad_scalar_value(t, J));
    printf("backward (every value from the reverse sweep)\n");
    printf("dJ/dyhat = %g\n", ad_grad(t, yhat)[0]);
    printf("dJ/dz    = %g\n", ad_grad(t, z)[0]);
    printf("dJ/db    = %g\n", ad_grad(t, b)[0]);
    print_vec("dJ/dW ", ad_grad(t, W), 3);
    print_vec("dJ/dx ", ad_grad(t, x), 3);
    ad_tape_free(t);
    return 0;
}
