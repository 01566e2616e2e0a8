/* test_check_diagnose.c -- ad_handcheck_ex: the diagnosis of a wrong
 * hand-derived gradient. Each mistake class is planted in a small network
 * (the seed neuron, the stacked neurons, a 2-layer tanh + softmax network,
 * a network with a skip connection) and the diagnosis must name the right
 * factor, node or input; right gradients plus noise must get "no simple
 * explanation found". Also: the block summary lines, the row limit, long
 * points written to a stream, AD_LET / AD_NAME, bad input (wrong sizes,
 * NaN, a diagnosis without a failing block), allocation failures. */
#include "support.h"

#include <autodiff/check.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum mistake {
    RIGHT,
    HALF,      /* the 1/2 of 1/2 (yhat - y)^2 left out: x2           */
    SIGN,      /* dyhat = y - yhat: x(-1)                            */
    RELU,      /* relu' forgotten                                    */
    WRONG_VAR, /* dW computed with the formula of dx                 */
    TRANSPOSE, /* dW = x dz^T instead of dz x^T                      */
    W_NOT_WT,  /* dx = W dz instead of W^T dz                        */
    TANH,      /* tanh' forgotten                                    */
    TANH2,     /* tanh' applied twice                                */
    ODD,       /* x2 at the given point, x3 at the random ones       */
    SKIP,      /* the skip connection's path left out                */
    NOISE      /* right, plus noise                                  */
};

static double noise(int i, int p)
{
    /* deterministic, about 1e-4 relative, never 0 */
    return 1e-4 * (1 + ((i * 7 + p * 13) % 5));
}

/* ---- the seed neuron: J = 1/2 (relu(W.x + b) - y)^2 ---- */

static ad_node neuron(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(t, Wx, ad_dot(t, in[0], in[1]));
    AD_LET(t, z, ad_add(t, Wx, in[2]));
    AD_LET(t, yhat, ad_relu(t, z));
    AD_LET(t, e, ad_sub(t, yhat, in[3]));
    AD_LET(t, sq, ad_square(t, e));
    AD_LET(t, J, ad_scale(t, sq, 0.5));
    return J;
}

static int neuron_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    const int m = *(const int *)ud;
    const double *W = p[0], *x = p[1];
    const double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + p[2][0];
    const double yhat = z > 0 ? z : 0;
    double dyhat = yhat - p[3][0];
    if (m == HALF)
        dyhat *= 2;
    if (m == SIGN)
        dyhat = -dyhat;
    const double dz = dyhat * (m == RELU || z > 0 ? 1.0 : 0.0);
    for (int i = 0; i < 3; i++) {
        g[0][i] = dz * (m == WRONG_VAR ? W[i] : x[i]);
        g[1][i] = dz * W[i];
    }
    g[2][0] = dz;
    return 0;
}

static const double W0[3] = {4, 2, -5}, X0[3] = {1, 0, 2}, B0 = 7, Y0 = 5;

static void neuron_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"W", ad_shape_vec(3), W0, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"x", ad_shape_vec(3), X0, NULL, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"b", ad_shape_scalar(), &B0, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"y", ad_shape_scalar(), &Y0, NULL, AD_INPUT_CONSTANT};
}

static ad_handcheck_opts hopts_all(void)
{
    ad_handcheck_opts h;
    memset(&h, 0, sizeof h);
    h.size = sizeof h;
    h.diagnose = "*";
    return h;
}

/* Runs the check with a diagnosis of every failing block. */
static void run(ad_check_fn fn, const ad_check_input *in, int n, ad_hand_fn g, int mistake,
                const ad_check_opts *o, ad_check_report *rep)
{
    ad_handcheck_opts h = hopts_all();
    int st = ad_handcheck_ex(fn, NULL, in, n, g, &mistake, o, &h, rep);
    cr_assert_eq(st, AD_OK, "%s", rep->errmsg);
}

static const ad_diagnosis *block(const ad_check_report *rep, int input)
{
    for (size_t i = 0; i < rep->ndiagnoses; i++)
        if (rep->diagnoses[i].input == input)
            return &rep->diagnoses[i];
    cr_assert_fail("no diagnosis of input %d", input);
    return NULL;
}

/* 1 if the block has a fit of that kind (and node name, when given). */
static int has_fit(const ad_diagnosis *d, int kind, const char *name)
{
    for (int i = 0; i < d->nfits && i < AD_DIAG_MAX_FITS; i++)
        if (d->fit[i].kind == kind && (!name || !strcmp(d->fit[i].name, name)))
            return 1;
    return 0;
}

Test(diagnose, right_gradient_passes_with_block_lines)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    run(neuron, in, 4, neuron_grad, RIGHT, NULL, &rep);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert_eq(rep.ndiagnoses, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rep.diagnoses[i].input, i);
        cr_assert_eq(rep.diagnoses[i].failed, 0);
        cr_assert_eq(rep.diagnoses[i].nfits, 0);
    }
    cr_assert_eq(rep.diagnoses[0].checked, 12, "3 elements at 4 points");
    cr_assert(strstr(rep.text, "\n  dW: 12 elements agree\n  dx: 12 elements agree\n  db: 4 "
                               "elements agree\n"),
              "%s", rep.text);
    for (int i = 0; i < 3; i++)
        cr_assert_null(strstr(rep.diagnoses[i].text, "--"), "no diagnosis on a pass: %s",
                       rep.text);
    ad_check_report_free(&rep);
}

Test(diagnose, missing_half_is_a_factor_2_and_the_scale_node)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    run(neuron, in, 4, neuron_grad, HALF, NULL, &rep);
    cr_assert_not(rep.passed);
    for (int b = 0; b < 3; b++) {
        const ad_diagnosis *d = block(&rep, b);
        cr_assert_gt(d->failed, 0);
        cr_assert_eq(d->fit[0].kind, AD_DIAG_FACTOR, "%s", d->text);
        cr_assert_float_eq(d->fit[0].factor, 2.0, 1e-12);
        cr_assert(has_fit(d, AD_DIAG_MISSING_FACTOR, "J"), "%s", d->text);
        cr_assert_eq(d->nfits, 2, "nothing else fits: %s", d->text);
    }
    cr_assert(strstr(rep.text, "dW = 2 x the tape's (a constant factor: a 1/2 left out, or a term "
                               "counted twice); or it looks like the tape's gradient without the "
                               "factor 0.5 of node 'J' = 0.5 · sq"),
              "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(diagnose, sign_error_is_factor_minus_1)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    run(neuron, in, 4, neuron_grad, SIGN, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 0);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_FACTOR, "%s", d->text);
    cr_assert_float_eq(d->fit[0].factor, -1.0, 1e-12);
    cr_assert(strstr(d->text, "a sign error"), "%s", d->text);
    ad_check_report_free(&rep);
}

Test(diagnose, forgotten_relu_prime_names_the_relu_node)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_opts o = {0};
    o.points = 6;
    o.spread = 3; /* so that z < 0 at some points */
    ad_check_report rep;
    run(neuron, in, 4, neuron_grad, RELU, &o, &rep);
    cr_assert_not(rep.passed, "%s", rep.text);
    for (int b = 0; b < 3; b++) {
        const ad_diagnosis *d = block(&rep, b);
        cr_assert_gt(d->failed, 0, "%s", rep.text);
        cr_assert(has_fit(d, AD_DIAG_MISSING_FACTOR, "yhat"), "%s", d->text);
        cr_assert_eq(d->fit[0].node, 7, "yhat is the 7th node recorded (4 leaves, Wx, z)");
        cr_assert_eq(d->fit[0].slot, 0);
        cr_assert_eq(d->nfits, 1, "%s", d->text);
    }
    cr_assert(strstr(block(&rep, 0)->text,
                     "dW looks like the tape's gradient without the factor relu'(z) of node "
                     "'yhat' = relu(z)"),
              "%s", block(&rep, 0)->text);
    ad_check_report_free(&rep);
}

Test(diagnose, wrong_variable_names_the_other_input)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    run(neuron, in, 4, neuron_grad, WRONG_VAR, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 0);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_WRONG_INPUT);
    cr_assert_eq(d->fit[0].other_input, 1);
    cr_assert(strstr(d->text, "dW is the tape's gradient of x, another input"), "%s", d->text);
    cr_assert_eq(block(&rep, 1)->failed, 0, "dx is right");
    cr_assert_eq(block(&rep, 1)->nfits, 0);
    ad_check_report_free(&rep);
}

/* ---- stacked neurons: z = W x + b (W 3x3), J = 1/2 ||relu(z) - y||^2 ---- */

static ad_node stacked(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(t, Wx, ad_matvec(t, in[0], in[1]));
    AD_LET(t, z, ad_add(t, Wx, in[2]));
    AD_LET(t, yhat, ad_relu(t, z));
    return ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, yhat, in[3]))), 0.5);
}

static int stacked_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    const int m = *(const int *)ud;
    const double *W = p[0], *x = p[1], *b = p[2], *y = p[3];
    double dz[3];
    for (int i = 0; i < 3; i++) {
        double z = b[i];
        for (int j = 0; j < 3; j++)
            z += W[i * 3 + j] * x[j];
        dz[i] = ((z > 0 ? z : 0) - y[i]) * (z > 0);
    }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            g[0][i * 3 + j] = m == TRANSPOSE ? dz[j] * x[i] : dz[i] * x[j];
            g[1][j] += (m == W_NOT_WT ? W[j * 3 + i] : W[i * 3 + j]) * dz[i];
        }
        g[2][i] = dz[i];
    }
    return 0;
}

static const double SW[9] = {4, 2, -5, 1, -3, 2, 0.5, 1, 1}, SX[3] = {1, 0.5, 2},
                    SB[3] = {7, 1, 2}, SY[3] = {5, 0, 1};

static void stacked_inputs(ad_check_input in[4])
{
    memset(in, 0, 4 * sizeof *in);
    in[0] = (ad_check_input){"W", ad_shape_mat(3, 3), SW, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"x", ad_shape_vec(3), SX, NULL, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"b", ad_shape_vec(3), SB, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"y", ad_shape_vec(3), SY, NULL, AD_INPUT_CONSTANT};
}

Test(diagnose, transposed_dW)
{
    ad_check_input in[4];
    stacked_inputs(in);
    ad_check_report rep;
    run(stacked, in, 4, stacked_grad, TRANSPOSE, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 0);
    cr_assert_gt(d->failed, 0);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_TRANSPOSE);
    cr_assert(strstr(d->text, "dW is the tape's transposed"), "%s", d->text);
    cr_assert_eq(block(&rep, 1)->failed, 0);
    cr_assert_eq(block(&rep, 2)->failed, 0);
    ad_check_report_free(&rep);
}

Test(diagnose, w_where_wt_belongs_names_the_matvec)
{
    ad_check_input in[4];
    stacked_inputs(in);
    ad_check_report rep;
    run(stacked, in, 4, stacked_grad, W_NOT_WT, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 1);
    cr_assert_gt(d->failed, 0);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_W_NOT_WT);
    cr_assert_str_eq(d->fit[0].name, "Wx");
    cr_assert(strstr(d->text, "dx looks like the tape's gradient with W where W^T belongs at "
                              "node 'Wx' = W · x"),
              "%s", d->text);
    cr_assert_eq(block(&rep, 0)->failed, 0);
    ad_check_report_free(&rep);
}

/* A non-square dW written transposed: the 3x4 layer of the example. */
static ad_node dense(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(t, z, ad_add(t, ad_matvec(t, in[0], in[1]), in[2]));
    return ad_scale(t, ad_sum(t, ad_square(t, z)), 0.5);
}

static int dense_grad_t(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n, (void)ud;
    const double *W = p[0], *x = p[1], *b = p[2];
    for (int i = 0; i < 3; i++) {
        double z = b[i];
        for (int j = 0; j < 4; j++)
            z += W[i * 4 + j] * x[j];
        for (int j = 0; j < 4; j++) {
            g[0][j * 3 + i] = z * x[j]; /* x dz^T: a 4x3 matrix */
            g[1][j] += W[i * 4 + j] * z;
        }
        g[2][i] = z;
    }
    return 0;
}

Test(diagnose, transposed_nonsquare_dW)
{
    const double W[12] = {1, 2, 3, 4, -1, 0.5, 2, 1, 0, 1, -2, 3}, x[4] = {1, -1, 2, 0.5},
                 b[3] = {0.5, -1, 2};
    ad_check_input in[3] = {
        {"W", ad_shape_mat(3, 4), W, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(4), x, NULL, AD_INPUT_COMPARE},
        {"b", ad_shape_vec(3), b, NULL, AD_INPUT_COMPARE},
    };
    ad_check_report rep;
    run(dense, in, 3, dense_grad_t, 0, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 0);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_TRANSPOSE);
    cr_assert(strstr(d->text, "a 4x3 matrix written where a 3x4 one belongs"), "%s", d->text);
    ad_check_report_free(&rep);
}

/* ---- 2 layers: a = W1 x + b1, h = tanh(a), o = W2 h + b2, J = xent ---- */

static ad_node two_layer(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(t, a, ad_add(t, ad_matvec(t, in[0], in[4]), in[1]));
    AD_LET(t, h, ad_tanh(t, a));
    AD_LET(t, W2h, ad_matvec(t, in[2], h));
    AD_LET(t, o, ad_add(t, W2h, in[3]));
    ad_node J = ad_softmax_xent(t, o, in[5]);
    return AD_NAME(t, J, J);
}

static const double TW1[12] = {0.5, -0.2, 0.1, 0.3, -0.4, 0.2, 0.6, -0.1, 0.3, 0.3, -0.5, 0.2},
                    TB1[3] = {0.1, -0.2, 0.05}, TW2[9] = {0.7, -0.3, 0.2, -0.5, 0.4, 0.1, 0.2, 0.6, -0.4},
                    TB2[3] = {0, 0.1, -0.1}, TX[4] = {1, -0.5, 2, 0.3}, TT[3] = {0, 1, 0};

static int two_layer_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    const int m = *(const int *)ud;
    const double *W1 = p[0], *b1 = p[1], *W2 = p[2], *b2 = p[3], *x = p[4], *tg = p[5];
    double h[3], o[3], d_o[3], dh[3] = {0}, da[3], mx = -INFINITY, se = 0;
    for (int i = 0; i < 3; i++) {
        double a = b1[i];
        for (int j = 0; j < 4; j++)
            a += W1[i * 4 + j] * x[j];
        h[i] = tanh(a);
    }
    for (int i = 0; i < 3; i++) {
        o[i] = b2[i];
        for (int j = 0; j < 3; j++)
            o[i] += W2[i * 3 + j] * h[j];
        mx = fmax(mx, o[i]);
    }
    for (int i = 0; i < 3; i++)
        se += exp(o[i] - mx);
    for (int i = 0; i < 3; i++)
        d_o[i] = exp(o[i] - mx) / se - tg[i]; /* softmax - target */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            g[2][i * 3 + j] = m == TRANSPOSE ? d_o[j] * h[i] : d_o[i] * h[j]; /* dW2 */
            dh[j] += (m == W_NOT_WT ? W2[j * 3 + i] : W2[i * 3 + j]) * d_o[i];
        }
    for (int i = 0; i < 3; i++) {
        g[3][i] = d_o[i];
        const double tp = 1 - h[i] * h[i];
        da[i] = dh[i] * (m == TANH ? 1.0 : m == TANH2 ? tp * tp : tp);
        g[1][i] = da[i];
        for (int j = 0; j < 4; j++) {
            g[0][i * 4 + j] = da[i] * x[j];
            g[4][j] += W1[i * 4 + j] * da[i];
        }
    }
    if (m == ODD)
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < (k == 0 ? 12 : k == 2 ? 9 : k == 4 ? 4 : 3); j++)
                g[k][j] *= W1[0] == TW1[0] ? 2 : 3; /* the given point, or not */
    if (m == NOISE)
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < (k == 0 ? 12 : k == 2 ? 9 : k == 4 ? 4 : 3); j++)
                g[k][j] += noise(j, k) * (1 + fabs(g[k][j]));
    return 0;
}

static void two_layer_inputs(ad_check_input in[6])
{
    memset(in, 0, 6 * sizeof *in);
    in[0] = (ad_check_input){"W1", ad_shape_mat(3, 4), TW1, NULL, AD_INPUT_COMPARE};
    in[1] = (ad_check_input){"b1", ad_shape_vec(3), TB1, NULL, AD_INPUT_COMPARE};
    in[2] = (ad_check_input){"W2", ad_shape_mat(3, 3), TW2, NULL, AD_INPUT_COMPARE};
    in[3] = (ad_check_input){"b2", ad_shape_vec(3), TB2, NULL, AD_INPUT_COMPARE};
    in[4] = (ad_check_input){"x", ad_shape_vec(4), TX, NULL, AD_INPUT_COMPARE};
    in[5] = (ad_check_input){"t", ad_shape_vec(3), TT, NULL, AD_INPUT_CONSTANT};
}

Test(diagnose, two_layer_forgotten_tanh_prime)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_check_report rep;
    run(two_layer, in, 6, two_layer_grad, TANH, NULL, &rep);
    cr_assert_eq(rep.ndiagnoses, 5);
    const int wrong[3] = {0, 1, 4}, right[2] = {2, 3};
    for (int i = 0; i < 3; i++) {
        const ad_diagnosis *d = block(&rep, wrong[i]);
        cr_assert_gt(d->failed, 0);
        cr_assert_eq(d->nfits, 1, "%s", d->text);
        cr_assert_eq(d->fit[0].kind, AD_DIAG_MISSING_FACTOR);
        cr_assert_str_eq(d->fit[0].name, "h");
        cr_assert(strstr(d->text, "the tape's gradient without the factor (1 - tanh(a)^2) of "
                                  "node 'h' = tanh(a)"),
                  "%s", d->text);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(block(&rep, right[i])->failed, 0);
    ad_check_report_free(&rep);
}

Test(diagnose, two_layer_transposed_dW2_and_W2_not_W2t)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_check_report rep;
    run(two_layer, in, 6, two_layer_grad, TRANSPOSE, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 2);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_TRANSPOSE);
    cr_assert_eq(rep.failed, d->failed, "only dW2 is wrong");
    ad_check_report_free(&rep);

    run(two_layer, in, 6, two_layer_grad, W_NOT_WT, NULL, &rep);
    const int wrong[3] = {0, 1, 4};
    for (int i = 0; i < 3; i++) {
        d = block(&rep, wrong[i]);
        cr_assert_eq(d->nfits, 1, "%s", d->text);
        cr_assert_eq(d->fit[0].kind, AD_DIAG_W_NOT_WT);
        cr_assert_str_eq(d->fit[0].name, "W2h");
    }
    ad_check_report_free(&rep);
}

Test(diagnose, noise_gets_no_simple_explanation)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_check_report rep;
    run(two_layer, in, 6, two_layer_grad, NOISE, NULL, &rep);
    cr_assert_eq(rep.ndiagnoses, 5);
    for (size_t i = 0; i < rep.ndiagnoses; i++) {
        const ad_diagnosis *d = &rep.diagnoses[i];
        cr_assert_eq(d->failed, d->checked, "noise changes every element");
        cr_assert_eq(d->nfits, 0, "%s", d->text);
        cr_assert(strstr(d->text, " -- no simple explanation found"), "%s", d->text);
    }
    ad_check_report_free(&rep);

    /* the right gradient passes, a purely relative tolerance too */
    ad_check_opts o = {0};
    o.rtol = 1e-9;
    run(two_layer, in, 6, two_layer_grad, RIGHT, &o, &rep);
    cr_assert(rep.passed, "the right gradient passes: %s", rep.text);
    ad_check_report_free(&rep);
}

Test(diagnose, a_factor_that_holds_at_one_point_only_is_not_reported)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_check_report rep;
    run(two_layer, in, 6, two_layer_grad, ODD, NULL, &rep);
    for (size_t i = 0; i < rep.ndiagnoses; i++) {
        cr_assert_gt(rep.diagnoses[i].failed, 0);
        cr_assert_eq(rep.diagnoses[i].nfits, 0, "%s", rep.diagnoses[i].text);
    }
    ad_check_report_free(&rep);
    /* with the random points alone (x3 everywhere) the factor is found */
    ad_check_opts o = {0};
    o.points = 2;
    double w1[12];
    memcpy(w1, TW1, sizeof w1);
    w1[0] = 0.25; /* not the given point of two_layer_grad: x3 there too */
    in[0].value = w1;
    run(two_layer, in, 6, two_layer_grad, ODD, &o, &rep);
    const ad_diagnosis *d = block(&rep, 0);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_FACTOR, "%s", d->text);
    cr_assert_float_eq(d->fit[0].factor, 3.0, 1e-12);
    ad_check_report_free(&rep);
}

Test(diagnose, tanh_prime_applied_twice_is_an_extra_factor)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_check_report rep;
    run(two_layer, in, 6, two_layer_grad, TANH2, NULL, &rep);
    const ad_diagnosis *d = block(&rep, 1);
    cr_assert_eq(d->nfits, 1, "%s", d->text);
    cr_assert_eq(d->fit[0].kind, AD_DIAG_EXTRA_FACTOR);
    cr_assert_str_eq(d->fit[0].name, "h");
    cr_assert(strstr(d->text, "db1 looks like the tape's gradient with the factor (1 - "
                              "tanh(a)^2) of node 'h' = tanh(a) applied twice"),
              "%s", d->text);
    ad_check_report_free(&rep);
}

/* ---- a skip connection: h = tanh(W1 x + b1), o = W2 h + h ---- */

static ad_node skip_net(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n, (void)ud;
    AD_LET(t, a, ad_add(t, ad_matvec(t, in[0], in[3]), in[1]));
    AD_LET(t, h, ad_tanh(t, a));
    AD_LET(t, W2h, ad_matvec(t, in[2], h));
    AD_LET(t, o, ad_add(t, W2h, h)); /* the skip connection */
    return ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, o, in[4]))), 0.5);
}

static int skip_grad(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    const int m = *(const int *)ud;
    const double *W1 = p[0], *b1 = p[1], *W2 = p[2], *x = p[3], *y = p[4];
    double h[3], e[3], dh[3], da[3];
    for (int i = 0; i < 3; i++) {
        double a = b1[i];
        for (int j = 0; j < 3; j++)
            a += W1[i * 3 + j] * x[j];
        h[i] = tanh(a);
    }
    for (int i = 0; i < 3; i++) {
        e[i] = h[i] - y[i];
        for (int j = 0; j < 3; j++)
            e[i] += W2[i * 3 + j] * h[j];
    }
    for (int j = 0; j < 3; j++) {
        dh[j] = m == SKIP ? 0 : e[j]; /* the skip path: do/dh = I */
        for (int i = 0; i < 3; i++) {
            dh[j] += W2[i * 3 + j] * e[i];
            g[2][i * 3 + j] = e[i] * h[j];
        }
    }
    for (int i = 0; i < 3; i++) {
        da[i] = dh[i] * (1 - h[i] * h[i]);
        g[1][i] = da[i];
        for (int j = 0; j < 3; j++) {
            g[0][i * 3 + j] = da[i] * x[j];
            g[3][j] += W1[i * 3 + j] * da[i];
        }
    }
    return 0;
}

Test(diagnose, skip_connection_missing_path)
{
    const double W1[9] = {0.5, -0.2, 0.1, 0.3, -0.4, 0.2, 0.6, -0.1, 0.3},
                 W2[9] = {0.7, -0.3, 0.2, -0.5, 0.4, 0.1, 0.2, 0.6, -0.4}, b1[3] = {0.1, -0.2, 0},
                 x[3] = {1, -0.5, 2}, y[3] = {0.5, -1, 0.25};
    ad_check_input in[5] = {
        {"W1", ad_shape_mat(3, 3), W1, NULL, AD_INPUT_COMPARE},
        {"b1", ad_shape_vec(3), b1, NULL, AD_INPUT_COMPARE},
        {"W2", ad_shape_mat(3, 3), W2, NULL, AD_INPUT_COMPARE},
        {"x", ad_shape_vec(3), x, NULL, AD_INPUT_COMPARE},
        {"y", ad_shape_vec(3), y, NULL, AD_INPUT_CONSTANT},
    };
    ad_check_report rep;
    run(skip_net, in, 5, skip_grad, RIGHT, NULL, &rep);
    cr_assert(rep.passed, "%s", rep.text);
    ad_check_report_free(&rep);

    run(skip_net, in, 5, skip_grad, SKIP, NULL, &rep);
    const int wrong[3] = {0, 1, 3};
    for (int i = 0; i < 3; i++) {
        const ad_diagnosis *d = block(&rep, wrong[i]);
        cr_assert_gt(d->failed, 0);
        cr_assert_eq(d->nfits, 1, "%s", d->text);
        cr_assert_eq(d->fit[0].kind, AD_DIAG_MISSING_PATH);
        cr_assert_str_eq(d->fit[0].name, "o");
        cr_assert_eq(d->fit[0].slot, 1, "the skip operand, h");
        cr_assert(strstr(d->text, "without the path through node 'o' = W2h + h: h feeds several "
                                  "nodes"),
                  "%s", d->text);
    }
    cr_assert_eq(block(&rep, 2)->failed, 0, "dW2 is right");
    ad_check_report_free(&rep);
}

/* ---- reports ---- */

Test(diagnose, one_block_on_request_and_row_limit)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_handcheck_opts h = hopts_all();
    h.diagnose = "b1";
    h.max_rows = 2;
    int m = TANH;
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_ex(two_layer, NULL, in, 6, two_layer_grad, &m, NULL, &h, &rep),
                 AD_OK, "%s", rep.errmsg);
    cr_assert_eq(block(&rep, 1)->nfits, 1);
    cr_assert_eq(block(&rep, 0)->nfits, 0, "W1 was not asked for");
    cr_assert_null(strstr(block(&rep, 0)->text, "--"));
    /* two element rows, then the count of the others */
    char more[64];
    snprintf(more, sizeof more, "(%zu more rows not shown)", rep.failed - 2);
    cr_assert(strstr(rep.text, more), "%s", rep.text);
    cr_assert(strstr(rep.text, "  dW2: 36 elements agree\n"), "%s", rep.text);
    ad_check_report_free(&rep);
}

Test(diagnose, long_points_go_to_the_stream)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_handcheck_opts h = hopts_all();
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    h.points = f;
    int m = TANH;
    ad_check_report rep;
    cr_assert_eq(ad_handcheck_ex(two_layer, NULL, in, 6, two_layer_grad, &m, NULL, &h, &rep),
                 AD_OK, "%s", rep.errmsg);
    cr_assert(strstr(rep.text, "at the given point:\n"), "28 values: none in the text: %s",
              rep.text);
    rewind(f);
    char line[2048];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert(!strncmp(line, "the given point: W1 = [[0.5, -0.2, 0.1, 0.3], ", 46), "%s", line);
    cr_assert(strstr(line, ", x = (1, -0.5, 2, 0.3), t = (0, 1, 0)\n"), "%s", line);
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert(!strncmp(line, "random point 1: W1 = [[", 23), "%s", line);
    fclose(f);
    ad_check_report_free(&rep);
}

/* ---- names ---- */

Test(diagnose, ad_let_and_ad_name_name_nodes)
{
    ad_tape *t = ad_tape_new(NULL);
    AD_LET(t, x, ad_scalar_var(t, 2));
    AD_LET(t, y, ad_square(t, x));
    cr_assert_str_eq(ad_node_name(t, x), "x");
    cr_assert_str_eq(ad_node_name(t, y), "y");
    ad_node z = ad_nil();
    ad_node r = AD_NAME(t, z, ad_add(t, x, y));
    cr_assert_eq(ad_node_index(t, r), ad_node_index(t, z));
    cr_assert_gt(ad_node_index(t, z), 0);
    cr_assert_str_eq(ad_node_name(t, z), "z");
    /* a nil node passes through; the tape is not made to fail */
    cr_assert(ad_node_is_nil(ad_named(t, ad_nil(), "w")));
    cr_assert(ad_node_is_nil(ad_named(NULL, ad_nil(), "w")));
    cr_assert_eq(ad_tape_status(t), AD_OK);
    ad_tape_free(t);
}

/* ---- bad input ---- */

static void expect_misuse(int st, const ad_check_report *rep, const char *msg)
{
    cr_assert_eq(st, AD_EMISUSE, "%s", rep->errmsg);
    cr_assert_eq(rep->status, AD_EMISUSE);
    cr_assert_not(rep->passed);
    cr_assert_str_eq(rep->errmsg, msg);
}

static int nan_grad(const double *const *p, double *const *g, int n, void *ud)
{
    int m = RIGHT;
    neuron_grad(p, g, n, &m);
    if (*(int *)ud == 1 || p[0][0] != W0[0]) /* at a random point */
        g[1][2] = *(int *)ud == 2 ? -INFINITY : NAN;
    return 0;
}

Test(diagnose, bad_input_statuses)
{
    ad_check_input in[4];
    neuron_inputs(in);
    ad_check_report rep;
    ad_handcheck_opts h = hopts_all();
    int m = RIGHT;

    /* a gradient of the wrong size */
    const size_t sizes[4] = {3, 2, 1, 0};
    h.grad_sizes = sizes;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), &rep,
                  "handcheck: your gradient of x has 2 values (hopts.grad_sizes[1]) but x is "
                  "vector(3): 3 values");
    ad_check_report_free(&rep);
    h.grad_sizes = NULL;

    /* NaN and infinities in your values */
    int which = 1;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, nan_grad, &which, NULL, &h, &rep), &rep,
                  "handcheck: your dx[2] is nan at the given point");
    ad_check_report_free(&rep);
    which = 0;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, nan_grad, &which, NULL, &h, &rep), &rep,
                  "handcheck: your dx[2] is nan at random point 1");
    ad_check_report_free(&rep);
    which = 2;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, nan_grad, &which, NULL, &h, &rep), &rep,
                  "handcheck: your dx[2] is -inf at random point 1");
    ad_check_report_free(&rep);

    /* a diagnosis of a block that passes */
    h.diagnose = "W";
    m = WRONG_VAR; /* only dW is wrong */
    cr_assert_eq(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), AD_OK);
    cr_assert_eq(rep.diagnoses[0].nfits, 1);
    ad_check_report_free(&rep);
    h.diagnose = "x";
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), &rep,
                  "handcheck: hopts.diagnose names 'x', but its gradient passed (12 elements "
                  "agree): there is nothing to diagnose");
    ad_check_report_free(&rep);
    /* "*" on a passing check is no error: nothing fails, nothing is diagnosed */
    h.diagnose = "*";
    m = RIGHT;
    cr_assert_eq(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), AD_OK);
    cr_assert(rep.passed);
    ad_check_report_free(&rep);

    h.diagnose = "q";
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), &rep,
                  "handcheck: hopts.diagnose names 'q', which is no input");
    ad_check_report_free(&rep);
    h.diagnose = "y";
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), &rep,
                  "handcheck: hopts.diagnose names 'y', whose gradient is not compared (role 2)");
    ad_check_report_free(&rep);

    /* a diagnosis needs two points or more */
    h.diagnose = "*";
    const double dW[3] = {-4, 0, -8}, dx[3] = {-16, -8, 20}, db = -4;
    in[0].grad = dW, in[1].grad = dx, in[2].grad = &db;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, NULL, NULL, NULL, &h, &rep), &rep,
                  "handcheck: a diagnosis needs your gradient at 2 points or more: pass a "
                  "callback (yours) and opts.points >= 0, not in[i].grad alone");
    ad_check_report_free(&rep);
    ad_check_opts o = {0};
    o.points = -1;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, &o, &h, &rep), &rep,
                  "handcheck: a diagnosis needs your gradient at 2 points or more: pass a "
                  "callback (yours) and opts.points >= 0, not opts.points < 0");
    ad_check_report_free(&rep);
    /* without a diagnosis the values form still works, with block lines */
    h.diagnose = NULL;
    cr_assert_eq(ad_handcheck_ex(neuron, NULL, in, 4, NULL, NULL, NULL, &h, &rep), AD_OK);
    cr_assert(rep.passed, "%s", rep.text);
    cr_assert(strstr(rep.text, "  db: 1 elements agree\n"), "%s", rep.text);
    ad_check_report_free(&rep);

    h.size = 8;
    expect_misuse(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, &rep), &rep,
                  "handcheck: hopts.size is 8; set it to sizeof(ad_handcheck_opts) (40)");
    ad_check_report_free(&rep);
    cr_assert_eq(ad_handcheck_ex(neuron, NULL, in, 4, neuron_grad, &m, NULL, &h, NULL),
                 AD_EMISUSE);
}

Test(diagnose, every_allocation_failure_is_enomem_without_leaks)
{
    ad_check_input in[6];
    two_layer_inputs(in);
    ad_handcheck_opts h = hopts_all();
    int m = TANH;
    long n_ok = 0;
    for (long k = 1;; k++) {
        test_alloc a = {0};
        a.fail_at = k;
        ad_check_opts o = {0};
        o.alloc = test_alloc_fn;
        o.alloc_ud = &a;
        ad_check_report rep;
        int st = ad_handcheck_ex(two_layer, NULL, in, 6, two_layer_grad, &m, &o, &h, &rep);
        if (st == AD_OK) {
            cr_assert_eq(block(&rep, 0)->nfits, 1, "k = %ld", k);
            n_ok = k;
        } else {
            cr_assert_eq(st, AD_ENOMEM, "k = %ld: %s", k, rep.errmsg);
            cr_assert(strstr(rep.errmsg, "out of memory"), "k = %ld: %s", k, rep.errmsg);
        }
        ad_check_report_free(&rep);
        cr_assert_eq(a.bytes, 0, "k = %ld leaks %zu bytes", k, a.bytes);
        cr_assert_eq(a.bad_osize, 0, "k = %ld", k);
        if (st == AD_OK)
            break;
    }
    cr_assert_gt(n_ok, 10);
}

/* ---- long tapes: the block hypotheses only ---- */

static ad_node chain(ad_tape *t, const ad_node *in, int n, void *ud)
{
    (void)n;
    ad_node h = in[0];
    for (int i = 0; i < *(const int *)ud; i++)
        h = ad_add_const(t, h, 0.001);
    AD_LET(t, J, ad_scale(t, ad_sum(t, ad_square(t, h)), 0.5));
    return J;
}

static int chain_grad_x2(const double *const *p, double *const *g, int n, void *ud)
{
    (void)n;
    for (int j = 0; j < 2; j++)
        g[0][j] = 2 * (p[0][j] + 0.001 * *(const int *)ud); /* 2 x the right one */
    return 0;
}

Test(diagnose, long_tapes_get_the_block_hypotheses_only)
{
    const double x[2] = {1, -2};
    ad_check_input in[1] = {{"x", ad_shape_vec(2), x, NULL, AD_INPUT_COMPARE}};
    ad_handcheck_opts h = hopts_all();
    ad_check_opts o = {0};
    o.atol = o.rtol = 1e-7; /* 5000 roundings of x + 0.001 */
    int len[2] = {10, 5000};
    for (int k = 0; k < 2; k++) {
        ad_check_report rep;
        cr_assert_eq(ad_handcheck_ex(chain, &len[k], in, 1, chain_grad_x2, &len[k], &o, &h, &rep),
                     AD_OK, "%s", rep.errmsg);
        const ad_diagnosis *d = block(&rep, 0);
        cr_assert_eq(d->fit[0].kind, AD_DIAG_FACTOR, "%s", d->text);
        /* a short tape: also the 0.5 of node J; a long one: no node hypotheses */
        cr_assert_eq(d->nfits, k == 0 ? 2 : 1, "%s", d->text);
        ad_check_report_free(&rep);
    }
}
