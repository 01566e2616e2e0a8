/* test_check_criterion.c -- the assertion macros of autodiff/criterion.h,
 * as a user's suite uses them (default hooks): passing cases. The failing
 * side is in test_check_criterion_hooks.c, which captures the messages. */
#include "support.h"

#include <autodiff/criterion.h>
#include <criterion/criterion.h>

static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    ad_node z = ad_add(t, ad_dot(t, in[0], in[1]), in[2]);
    return ad_scale(t, ad_square(t, ad_sub(t, ad_relu(t, z), in[3])), 0.5);
}

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2}, B0 = 7, Y0 = 5;
static const double dW0[3] = {-4, 0, -8}, dX0[3] = {-16, -8, 20}, dB0 = -4;

Test(criterion_macros, grad_eq_passes_on_the_lecture_values)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), W0);
    ad_node x = ad_variable(t, ad_shape_vec(3), X0);
    ad_node b = ad_scalar_var(t, B0);
    ad_node in[4] = {W, x, b, ad_scalar(t, Y0)};
    ad_node J = neuron(t, in, 4, NULL);
    cr_assert_eq(ad_backward(t, J), AD_OK);
    ad_assert_grad_eq(t, W, dW0, 0);        /* exact */
    ad_assert_grad_eq(t, x, dX0, 1e-12);
    ad_expect_grad_eq(t, b, &dB0, 1e-12);
    ad_tape_free(t);
}

Test(criterion_macros, gradcheck_and_handcheck_pass)
{
    ad_check_input in[4] = {
        {"W", ad_shape_vec(3), W0, dW0, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(3), X0, dX0, AD_INPUT_COMPARE},
        {"b", ad_shape_scalar(), &B0, &dB0, AD_INPUT_COMPARE},
        {"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT},
    };
    ad_assert_gradcheck(neuron, NULL, in, 4, NULL);
    ad_expect_gradcheck(neuron, NULL, in, 4, NULL);
    ad_assert_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL);
    ad_expect_handcheck(neuron, NULL, in, 4, NULL, NULL, NULL);
}

/* dW with the sign flipped, on purpose: the suite keeps it as a lesson */
static int sign_flipped(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    const double z = p[0][0] * p[1][0] + p[0][1] * p[1][1] + p[0][2] * p[1][2] + p[2][0];
    const double dz = ((z > 0 ? z : 0) - p[3][0]) * (z > 0);
    for (int i = 0; i < 3; i++) {
        g[0][i] = -dz * p[1][i];
        g[1][i] = dz * p[0][i];
    }
    g[2][0] = dz;
    return 0;
}

Test(criterion_macros, handcheck_expected_to_fail)
{
    const double bad[3] = {4, 0, 8};
    ad_check_input in[4] = {
        {"W", ad_shape_vec(3), W0, bad, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(3), X0, dX0, AD_INPUT_COMPARE},
        {"b", ad_shape_scalar(), &B0, &dB0, AD_INPUT_COMPARE},
        {"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT},
    };
    ad_assert_handcheck_fails(neuron, NULL, in, 4, NULL, NULL, NULL, AD_DIAG_NONE);
    for (int i = 0; i < 3; i++)
        in[i].grad = NULL;
    ad_assert_handcheck_fails(neuron, NULL, in, 4, sign_flipped, NULL, NULL, AD_DIAG_FACTOR);
    ad_expect_handcheck_fails(neuron, NULL, in, 4, sign_flipped, NULL, NULL, AD_DIAG_FACTOR);
}
