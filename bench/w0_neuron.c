/* W0 -- the single neuron (correctness, not speed), see WORKLOADS.md.
 * Exits non-zero unless every value equals the expected one exactly. */
#include "bench_util.h"

#include <autodiff/autodiff.h>

#include <stdio.h>

int main(void)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    ad_tape *t = ad_tape_new(NULL);
    bench_check(t != NULL, "tape");
    ad_node W = ad_variable(t, ad_shape_vec(3), W0), x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node b = ad_scalar_var(t, 7), y = ad_scalar(t, 5);
    ad_node z = ad_add(t, ad_dot(t, W, x), b), yh = ad_relu(t, z);
    ad_node J = ad_scale(t, ad_square(t, ad_sub(t, yh, y)), 0.5);
    bench_check(ad_backward(t, J) == AD_OK, ad_tape_errmsg(t));
    const double *dW = ad_grad(t, W), *dx = ad_grad(t, x);
    struct { const char *name; double got, want; } v[] = {
        {"z", ad_scalar_value(t, z), 1},        {"yhat", ad_scalar_value(t, yh), 1},
        {"J", ad_scalar_value(t, J), 8},        {"dJ/dyhat", ad_grad(t, yh)[0], -4},
        {"dJ/dz", ad_grad(t, z)[0], -4},        {"dJ/db", ad_grad(t, b)[0], -4},
        {"dJ/dW0", dW[0], -4},                  {"dJ/dW1", dW[1], 0},
        {"dJ/dW2", dW[2], -8},                  {"dJ/dx0", dx[0], -16},
        {"dJ/dx1", dx[1], -8},                  {"dJ/dx2", dx[2], 20},
    };
    int ok = 1;
    printf("W0 single neuron\n");
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int same = v[i].got == v[i].want;
        ok &= same;
        printf("  %-9s %4g  (expected %g)%s\n", v[i].name, v[i].got + 0.0 /* -0 as 0 */, v[i].want,
               same ? "" : "  WRONG");
    }
    printf("{\"workload\":\"W0\",\"variant\":\"tape\",\"exact\":%s}\n", ok ? "true" : "false");
    ad_tape_free(t);
    bench_check(ok, "W0 values differ from the lecture notes");
    return 0;
}
