/* test_nn_dense.c -- a dense layer's gradients from the reverse sweep
 * against the hand formulas (which live only here, not in nn/):
 *   one sample: dz = dy * g'(z);  dW = dz x^T,  db = dz,  dx = W^T dz
 *   a batch:    dZ = dY * g'(Z);  dW = dZ^T X,  db = column sums of dZ,  dX = dZ W
 * and shape errors that name the layer. */
#include <criterion/criterion.h>
#include <nn/nn.h>

#include <math.h>
#include <string.h>

#define N 5 /* inputs  */
#define K 3 /* outputs */
#define B 4 /* batch   */

static int close_to(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(1.0, fabs(b));
}

/* g'(z) for each activation, by hand. */
static double dact(nn_act act, double z)
{
    switch (act) {
    case NN_ACT_RELU: return z > 0 ? 1.0 : 0.0;
    case NN_ACT_TANH: return 1.0 - tanh(z) * tanh(z);
    case NN_ACT_SIGMOID: {
        double s = 1.0 / (1.0 + exp(-z));
        return s * (1.0 - s);
    }
    default: return 1.0;
    }
}

/* A model with one dense layer, b set to nonzero values. */
static nn_model *one_layer(nn_act act, uint64_t seed)
{
    nn_model_opts o = {NULL, NULL, seed};
    nn_model *m = nn_model_new(&o);
    cr_assert_not_null(m);
    cr_assert_eq(nn_model_add_dense(m, N, K, act), NN_OK, "%s", nn_model_errmsg(m));
    double *b = nn_params_value(nn_model_params(m), 1);
    for (int i = 0; i < K; i++)
        b[i] = 0.3 * i - 0.25;
    return m;
}

Test(nn_dense, names_and_shapes)
{
    nn_model *m = one_layer(NN_ACT_RELU, 1);
    nn_params *p = nn_model_params(m);
    cr_assert_str_eq(nn_model_layer_name(m, 0), "dense1");
    cr_assert_eq(nn_params_count(p), 2);
    cr_assert_str_eq(nn_params_name(p, 0), "dense1.W");
    cr_assert_str_eq(nn_params_name(p, 1), "dense1.b");
    ad_shape w = nn_params_shape(p, 0), b = nn_params_shape(p, 1);
    cr_assert(w.ndim == 2 && w.rows == K && w.cols == N, "W is k x n");
    cr_assert(b.ndim == 1 && b.rows == K, "b has length k");
    cr_assert_eq(nn_params_size(p), K * N + K);
    cr_assert_eq(nn_model_input_size(m), N);
    cr_assert_eq(nn_model_output_size(m), K);
    /* W uniform in +-sqrt(6/n), not all equal */
    const double *W = nn_params_value(p, 0), a = sqrt(6.0 / N);
    for (int i = 0; i < K * N; i++)
        cr_assert(fabs(W[i]) <= a);
    cr_assert_neq(W[0], W[1]);
    nn_model_free(m);
}

Test(nn_dense, one_sample_gradients_equal_hand_formulas)
{
    const double x0[N] = {0.5, -1.2, 0.3, 2.0, -0.7};
    const double dy[K] = {0.9, -1.4, 0.6};
    for (int a = 0; a < NN_ACT_COUNT; a++) {
        nn_model *m = one_layer((nn_act)a, 7);
        nn_params *p = nn_model_params(m);
        ad_tape *t = ad_tape_new(NULL);
        ad_node x = ad_variable(t, ad_shape_vec(N), x0);
        ad_node y = nn_model_forward(m, t, x, 1);
        cr_assert(!ad_node_is_nil(y), "%s", nn_model_errmsg(m));
        cr_assert_eq(ad_backward_seed(t, y, dy), AD_OK, "%s", ad_tape_errmsg(t));

        const double *W = nn_params_value(p, 0), *b = nn_params_value(p, 1);
        double z[K], dz[K], dx[N] = {0};
        for (int i = 0; i < K; i++) {
            z[i] = b[i];
            for (int j = 0; j < N; j++)
                z[i] += W[i * N + j] * x0[j]; /* z = W x + b */
            dz[i] = dy[i] * dact((nn_act)a, z[i]);
        }
        for (int i = 0; i < K; i++)
            for (int j = 0; j < N; j++)
                dx[j] += W[i * N + j] * dz[i]; /* dx = W^T dz */

        const double *gW = nn_params_grad(p, 0), *gb = nn_params_grad(p, 1), *gx = ad_grad(t, x);
        const double *yv = ad_value(t, y);
        for (int i = 0; i < K; i++) {
            double g = a == NN_ACT_RELU ? fmax(z[i], 0) : a == NN_ACT_TANH ? tanh(z[i])
                     : a == NN_ACT_SIGMOID ? 1 / (1 + exp(-z[i])) : z[i];
            cr_assert(close_to(yv[i], g, 1e-12), "%s: y[%d]", nn_act_name((nn_act)a), i);
            cr_assert(close_to(gb[i], dz[i], 1e-12), "%s: db[%d] %g vs %g", nn_act_name((nn_act)a),
                      i, gb[i], dz[i]);
            for (int j = 0; j < N; j++)
                cr_assert(close_to(gW[i * N + j], dz[i] * x0[j], 1e-12), "%s: dW[%d][%d]",
                          nn_act_name((nn_act)a), i, j); /* dW = dz x^T */
        }
        for (int j = 0; j < N; j++)
            cr_assert(close_to(gx[j], dx[j], 1e-12), "%s: dx[%d]", nn_act_name((nn_act)a), j);
        ad_tape_free(t);
        nn_model_free(m);
    }
}

Test(nn_dense, batch_gradients_equal_hand_formulas)
{
    double X0[B * N], dY[B * K];
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < N; j++)
            X0[r * N + j] = sin(1.0 + r * N + j);
        for (int i = 0; i < K; i++)
            dY[r * K + i] = cos(2.0 + r * K + i);
    }
    for (int a = 0; a < NN_ACT_COUNT; a++) {
        nn_model *m = one_layer((nn_act)a, 11);
        nn_params *p = nn_model_params(m);
        ad_tape *t = ad_tape_new(NULL);
        ad_node X = ad_variable(t, ad_shape_mat(B, N), X0);
        ad_node Y = nn_model_forward(m, t, X, 1);
        cr_assert(!ad_node_is_nil(Y), "%s", nn_model_errmsg(m));
        ad_shape ys = ad_node_shape(t, Y);
        cr_assert(ys.ndim == 2 && ys.rows == B && ys.cols == K);
        cr_assert_eq(ad_backward_seed(t, Y, dY), AD_OK, "%s", ad_tape_errmsg(t));

        const double *W = nn_params_value(p, 0), *b = nn_params_value(p, 1);
        double dZ[B * K], dW[K * N] = {0}, db[K] = {0}, dX[B * N] = {0};
        for (int r = 0; r < B; r++)
            for (int i = 0; i < K; i++) {
                double z = b[i];
                for (int j = 0; j < N; j++)
                    z += X0[r * N + j] * W[i * N + j]; /* Z = X W^T + b */
                dZ[r * K + i] = dY[r * K + i] * dact((nn_act)a, z);
            }
        for (int r = 0; r < B; r++)
            for (int i = 0; i < K; i++) {
                db[i] += dZ[r * K + i]; /* db = column sums of dZ */
                for (int j = 0; j < N; j++) {
                    dW[i * N + j] += dZ[r * K + i] * X0[r * N + j]; /* dW = dZ^T X */
                    dX[r * N + j] += dZ[r * K + i] * W[i * N + j];  /* dX = dZ W   */
                }
            }
        const double *gW = nn_params_grad(p, 0), *gb = nn_params_grad(p, 1), *gX = ad_grad(t, X);
        for (int i = 0; i < K; i++) {
            cr_assert(close_to(gb[i], db[i], 1e-12), "%s: db[%d]", nn_act_name((nn_act)a), i);
            for (int j = 0; j < N; j++)
                cr_assert(close_to(gW[i * N + j], dW[i * N + j], 1e-12), "%s: dW[%d][%d]",
                          nn_act_name((nn_act)a), i, j);
        }
        for (int r = 0; r < B * N; r++)
            cr_assert(close_to(gX[r], dX[r], 1e-12), "%s: dX[%d]", nn_act_name((nn_act)a), r);
        ad_tape_free(t);
        nn_model_free(m);
    }
}

/* The layer's gradients also agree with central differences of
 * J = sum(dy * y) (so dJ/dy = dy). */
Test(nn_dense, gradients_agree_with_finite_differences)
{
    const double x0[N] = {0.4, -0.9, 1.1, 0.2, -0.3};
    const double dy[K] = {0.7, -0.2, 1.3};
    nn_model *m = one_layer(NN_ACT_TANH, 3);
    nn_params *p = nn_model_params(m);
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_constant(t, ad_shape_vec(N), x0);
    ad_node w = ad_constant(t, ad_shape_vec(K), dy);
    ad_node J = ad_dot(t, nn_model_forward(m, t, x, 1), w);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
    double *v = nn_params_values(p);
    const double *g = nn_params_grads(p);
    const double h = 1e-6;
    for (size_t k = 0; k < nn_params_size(p); k++) {
        const double v0 = v[k];
        v[k] = v0 + h;
        ad_replay(t);
        const double jp = ad_scalar_value(t, J);
        v[k] = v0 - h;
        ad_replay(t);
        const double jm = ad_scalar_value(t, J);
        v[k] = v0;
        const double fd = (jp - jm) / (2 * h); /* central difference */
        cr_assert(fabs(fd - g[k]) <= 1e-7 * fmax(1.0, fabs(fd)), "param %zu: fd %.12g sweep %.12g",
                  k, fd, g[k]);
    }
    ad_tape_free(t);
    nn_model_free(m);
}

Test(nn_dense, neuron_is_one_unit)
{
    nn_model *m = nn_model_new(NULL);
    cr_assert_eq(nn_model_add_neuron(m, 3, NN_ACT_RELU), NN_OK);
    cr_assert_str_eq(nn_model_layer_name(m, 0), "neuron1");
    nn_params *p = nn_model_params(m);
    /* the seed neuron: W = (4, 2, -5), x = (1, 0, 2), b = 7, y = 5 -> J = 8 */
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2}, y0[1] = {5};
    memcpy(nn_params_value(p, 0), W0, sizeof W0);
    nn_params_value(p, 1)[0] = 7;
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_variable(t, ad_shape_vec(3), x0);
    ad_node y = ad_constant(t, ad_shape_vec(1), y0);
    ad_node J = nn_model_loss(m, t, NN_LOSS_HALF_SSE, nn_model_forward(m, t, x, 1), y);
    cr_assert_eq(ad_backward(t, J), AD_OK);
    cr_assert_eq(ad_scalar_value(t, J), 8.0);
    const double *gW = nn_params_grad(p, 0), *gx = ad_grad(t, x);
    cr_assert(gW[0] == -4 && gW[1] == 0 && gW[2] == -8, "dW = (-4, 0, -8)");
    cr_assert_eq(nn_params_grad(p, 1)[0], -4.0);
    cr_assert(gx[0] == -16 && gx[1] == -8 && gx[2] == 20, "dx = (-16, -8, 20)");
    ad_tape_free(t);
    nn_model_free(m);
}

Test(nn_dense, layer_size_mismatch_names_the_layer)
{
    nn_model *m = nn_model_new(NULL);
    cr_assert_eq(nn_model_add_dense(m, 10, 64, NN_ACT_RELU), NN_OK);
    cr_assert_eq(nn_model_add_dense(m, 128, 10, NN_ACT_RELU), NN_ESHAPE);
    cr_assert_str_eq(nn_model_errmsg(m),
                     "dense2: input has 64 features but the layer expects 128 (dense1 has 64 outputs)");
    cr_assert_eq(nn_model_layers(m), 1, "the failed layer is not added");
    cr_assert_eq(nn_params_count(nn_model_params(m)), 2);
    cr_assert_eq(nn_model_add_dense(m, 64, 0, NN_ACT_RELU), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "dense2: sizes must be positive (64 inputs, 0 outputs)");
    cr_assert_eq(nn_model_add_dense(m, 64, 3, (nn_act)42), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "dense2: unknown activation 42");
    cr_assert_eq(nn_model_add_neuron(m, 32, NN_ACT_SIGMOID), NN_ESHAPE);
    cr_assert_str_eq(nn_model_errmsg(m),
                     "neuron2: input has 64 features but the layer expects 32 (dense1 has 64 outputs)");
    const uint32_t sizes[] = {64, 32, 16};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    cr_assert_str_eq(nn_model_layer_name(m, 2), "dense3");
    const uint32_t more[] = {16, 8, 9, 4};
    cr_assert_eq(nn_model_add_mlp(m, more, 4, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    const uint32_t worse[] = {4, 8, 0};
    const uint64_t v = nn_params_version(nn_model_params(m));
    cr_assert_eq(nn_model_add_mlp(m, worse, 3, NN_ACT_RELU, NN_ACT_IDENTITY), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "dense8: sizes must be positive (8 inputs, 0 outputs)");
    cr_assert_eq(nn_model_layers(m), 6, "a failed mlp removes the layers it added");
    cr_assert_eq(nn_params_count(nn_model_params(m)), 12);
    cr_assert_neq(nn_params_version(nn_model_params(m)), v);
    cr_assert_eq(nn_model_add_mlp(m, sizes, 1, NN_ACT_RELU, NN_ACT_RELU), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "mlp: need at least 2 sizes (inputs and outputs), got 1");
    nn_model_free(m);
}

Test(nn_dense, forward_input_mismatch_names_the_layer)
{
    nn_model *m = nn_model_new(NULL);
    ad_tape *t = ad_tape_new(NULL);
    ad_node x = ad_constant(t, ad_shape_vec(7), NULL);
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, x, 1)));
    cr_assert_str_eq(nn_model_errmsg(m), "forward: the model has no layers");
    const uint32_t sizes[] = {128, 64, 10};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, x, 1)));
    cr_assert_str_eq(nn_model_errmsg(m), "dense1: input has 7 features but the layer expects 128");
    ad_node X = ad_constant(t, ad_shape_mat(4, 64), NULL);
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, X, 1)));
    cr_assert_str_eq(nn_model_errmsg(m), "dense1: input has 64 features but the layer expects 128");
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, ad_scalar(t, 1), 1)));
    cr_assert_str_eq(nn_model_errmsg(m),
                     "dense1: input is a scalar; need a vector (one sample) or a matrix (one per row)");
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, ad_nil(), 1)));
    cr_assert_str_eq(nn_model_errmsg(m), "dense1: the input is not a valid node of this tape");
    cr_assert(ad_node_is_nil(nn_model_forward(m, NULL, x, 1)));
    cr_assert_str_eq(nn_model_errmsg(m), "forward: the tape is NULL");
    cr_assert_eq(ad_tape_status(t), AD_OK, "nn checks shapes before recording");

    /* loss shapes */
    ad_node yh = ad_constant(t, ad_shape_mat(64, 10), NULL), y = ad_constant(t, ad_shape_mat(64, 5), NULL);
    cr_assert(ad_node_is_nil(nn_model_loss(m, t, NN_LOSS_XENT, yh, y)));
    cr_assert_str_eq(nn_model_errmsg(m), "loss xent: prediction is 64x10 but target is 64x5");
    cr_assert(ad_node_is_nil(nn_model_loss(m, t, (nn_loss)9, yh, y)));
    cr_assert_str_eq(nn_model_errmsg(m), "loss: unknown loss 9");

    /* a tape that already failed */
    ad_add(t, ad_constant(t, ad_shape_vec(2), NULL), ad_constant(t, ad_shape_vec(3), NULL));
    cr_assert_neq(ad_tape_status(t), AD_OK);
    cr_assert(ad_node_is_nil(nn_model_forward(m, t, x, 1)));
    cr_assert(strncmp(nn_model_errmsg(m), "forward: the tape already failed: add:", 38) == 0, "%s",
              nn_model_errmsg(m));
    ad_tape_free(t);
    nn_model_free(m);
}

Test(nn_dense, no_nulls_crash)
{
    cr_assert_eq(nn_model_add_dense(NULL, 1, 1, NN_ACT_RELU), NN_EMISUSE);
    cr_assert_eq(nn_model_layers(NULL), 0);
    cr_assert_null(nn_model_layer_name(NULL, 0));
    cr_assert_null(nn_model_params(NULL));
    cr_assert(ad_node_is_nil(nn_model_forward(NULL, NULL, ad_nil(), 0)));
    cr_assert_str_eq(nn_model_errmsg(NULL), "no model");
    cr_assert_str_eq(nn_act_name(NN_ACT_SIGMOID), "sigmoid");
    cr_assert_str_eq(nn_act_name((nn_act)99), "unknown");
    cr_assert_str_eq(nn_loss_name(NN_LOSS_MSE), "mse");
    cr_assert_str_eq(nn_strstatus(NN_EFORMAT), "bad file format");
    cr_assert_str_eq(nn_strstatus(-1), "unknown status");
    nn_model_free(NULL);
}
