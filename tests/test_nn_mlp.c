/* test_nn_mlp.c -- MLP gradients against central finite differences for
 * every loss, one sample and batch; training to 100% on a separable
 * problem; replayed steps equal re-recorded steps bit for bit; steady-state
 * steps allocate nothing; trainer errors. */
#include <criterion/criterion.h>
#include <nn/nn.h>

#include "support.h"

#include <math.h>
#include <string.h>

static nn_model *mlp(const uint32_t *sizes, size_t n, nn_act hidden, nn_act out, uint64_t seed,
                     test_alloc *a)
{
    nn_model_opts o = {a ? test_alloc_fn : NULL, a, seed};
    nn_model *m = nn_model_new(&o);
    cr_assert_not_null(m);
    cr_assert_eq(nn_model_add_mlp(m, sizes, n, hidden, out), NN_OK, "%s", nn_model_errmsg(m));
    return m;
}

/* Central differences of the recorded loss J, by replaying the tape with
 * each parameter moved by +-h, against the sweep's gradient. */
static void check_fd(nn_model *m, ad_tape *t, ad_node J, double tol)
{
    nn_params *p = nn_model_params(m);
    nn_params_zero_grad(p);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
    double *v = nn_params_values(p);
    const double *g = nn_params_grads(p);
    const double h = 1e-6;
    double worst = 0;
    for (size_t k = 0; k < nn_params_size(p); k++) {
        const double v0 = v[k];
        v[k] = v0 + h;
        cr_assert_eq(ad_replay(t), AD_OK);
        const double jp = ad_scalar_value(t, J);
        v[k] = v0 - h;
        ad_replay(t);
        const double jm = ad_scalar_value(t, J);
        v[k] = v0;
        const double fd = (jp - jm) / (2 * h);
        const double err = fabs(fd - g[k]) / fmax(1.0, fabs(fd));
        worst = fmax(worst, err);
        cr_assert(err <= tol, "param %zu: fd %.12g sweep %.12g", k, fd, g[k]);
    }
    ad_replay(t);
    cr_assert(worst > 0, "the differences were actually computed");
}

static void fill(double *x, size_t n, double phase)
{
    for (size_t i = 0; i < n; i++)
        x[i] = sin(phase + 0.7 * (double)i);
}

Test(nn_mlp, gradients_agree_with_finite_differences)
{
    const uint32_t sizes[] = {4, 6, 5, 3};
    const nn_act acts[] = {NN_ACT_TANH, NN_ACT_SIGMOID, NN_ACT_RELU};
    for (int l = 0; l < NN_LOSS_COUNT; l++)
        for (int a = 0; a < 3; a++)
            for (int batch = 0; batch <= 1; batch++) {
                nn_model *m = mlp(sizes, 4, acts[a], NN_ACT_IDENTITY, 5 + (uint64_t)a, NULL);
                /* nonzero biases so relu units are away from their kink */
                nn_params *p = nn_model_params(m);
                for (size_t i = 1; i < nn_params_count(p); i += 2)
                    fill(nn_params_value(p, i), ad_shape_size(nn_params_shape(p, i)), 0.3 * (double)i);
                const uint32_t R = batch ? 5 : 1;
                double X[5 * 4], Y[5 * 3] = {0};
                fill(X, R * 4, 1.0);
                for (uint32_t r = 0; r < R; r++)
                    Y[r * 3 + r % 3] = 1.0; /* one-hot: fits every loss */
                ad_tape *t = ad_tape_new(NULL);
                ad_node x = ad_constant(t, batch ? ad_shape_mat(R, 4) : ad_shape_vec(4), X);
                ad_node y = ad_constant(t, batch ? ad_shape_mat(R, 3) : ad_shape_vec(3), Y);
                ad_node J = nn_model_loss(m, t, (nn_loss)l, nn_model_forward(m, t, x, 1), y);
                cr_assert(!ad_node_is_nil(J), "%s", nn_model_errmsg(m));
                check_fd(m, t, J, 1e-6);
                ad_tape_free(t);
                nn_model_free(m);
            }
}

/* The losses' values against their definitions. */
Test(nn_mlp, loss_values)
{
    nn_model *m = nn_model_new(NULL);
    ad_tape *t = ad_tape_new(NULL);
    const double P[2 * 3] = {1, 2, 3, -1, 0, 4}, T[2 * 3] = {0, 0, 1, 0, 1, 0};
    ad_node yh = ad_constant(t, ad_shape_mat(2, 3), P), y = ad_constant(t, ad_shape_mat(2, 3), T);
    double sse = 0;
    for (int i = 0; i < 6; i++)
        sse += (P[i] - T[i]) * (P[i] - T[i]);
    double xent = 0;
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int j = 0; j < 3; j++)
            s += exp(P[r * 3 + j]);
        for (int j = 0; j < 3; j++)
            xent -= T[r * 3 + j] * (P[r * 3 + j] - log(s));
    }
    double L = ad_scalar_value(t, nn_model_loss(m, t, NN_LOSS_HALF_SSE, yh, y));
    cr_assert(fabs(L - 0.5 * sse / 2) < 1e-14, "half_sse averaged over the batch: %g", L);
    L = ad_scalar_value(t, nn_model_loss(m, t, NN_LOSS_MSE, yh, y));
    cr_assert(fabs(L - sse / 6) < 1e-14, "mse: %g", L);
    L = ad_scalar_value(t, nn_model_loss(m, t, NN_LOSS_XENT, yh, y));
    cr_assert(fabs(L - xent / 2) < 1e-14, "xent: %g vs %g", L, xent / 2);
    /* stable for huge logits */
    const double big[3] = {1000, -1000, 0}, oh[3] = {1, 0, 0};
    L = ad_scalar_value(t, nn_model_loss(m, t, NN_LOSS_XENT, ad_constant(t, ad_shape_vec(3), big),
                                         ad_constant(t, ad_shape_vec(3), oh)));
    cr_assert(isfinite(L) && fabs(L) < 1e-300, "xent of a confident right answer is 0: %g", L);
    ad_tape_free(t);
    nn_model_free(m);
}

/* Two Gaussian-free blobs on either side of a line, with a margin. */
static int make_separable(double *X, double *Y, int n, nn_rng *r)
{
    int k = 0;
    while (k < n) {
        double a = 2 * nn_rng_uniform(r) - 1, b = 2 * nn_rng_uniform(r) - 1;
        double s = a + 2 * b - 0.3;
        if (fabs(s) < 0.15)
            continue;
        X[2 * k] = a;
        X[2 * k + 1] = b;
        Y[2 * k] = s > 0;
        Y[2 * k + 1] = s <= 0;
        k++;
    }
    return k;
}

Test(nn_mlp, trains_a_separable_problem_to_100_percent)
{
    enum { n = 200 };
    double X[n * 2], Y[n * 2], out[n * 2];
    nn_rng r;
    nn_rng_seed(&r, 99);
    make_separable(X, Y, n, &r);
    const uint32_t sizes[] = {2, 8, 2};
    nn_model *m = mlp(sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY, 3, NULL);
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 0};
    to.optim.lr = 0.02;
    nn_trainer *tr = nn_trainer_new(m, &to);
    cr_assert_not_null(tr, "%s", nn_model_errmsg(m));
    double first = 0, loss = 0;
    for (int epoch = 0; epoch < 60; epoch++)
        for (int i = 0; i < n; i += 16) { /* 12 batches of 16, then one of 8 */
            uint32_t b = (uint32_t)(n - i < 16 ? n - i : 16);
            cr_assert_eq(nn_trainer_step(tr, X + 2 * i, Y + 2 * i, b, &loss), NN_OK, "%s",
                         nn_trainer_errmsg(tr));
            if (epoch == 0 && i == 0)
                first = loss;
        }
    cr_assert_eq(nn_trainer_recordings(tr), 2, "one recording per batch size");
    cr_assert(loss < first / 10, "loss fell from %g to %g", first, loss);
    cr_assert_eq(nn_model_predict(m, X, n, out), NN_OK, "%s", nn_model_errmsg(m));
    int correct = 0;
    for (int i = 0; i < n; i++)
        correct += (out[2 * i] > out[2 * i + 1]) == (Y[2 * i] > 0.5);
    cr_assert_eq(correct, n, "accuracy %d/%d", correct, n);
    nn_trainer_free(tr);
    nn_model_free(m);
}

/* One sigmoid neuron, one sample per step (the matvec form), half SSE. */
Test(nn_mlp, a_neuron_learns_per_sample)
{
    enum { n = 100 };
    double X[n * 2], Y2[n * 2], Y[n], out[n];
    nn_rng r;
    nn_rng_seed(&r, 5);
    make_separable(X, Y2, n, &r);
    for (int i = 0; i < n; i++)
        Y[i] = Y2[2 * i];
    nn_model *m = nn_model_new(NULL);
    cr_assert_eq(nn_model_add_neuron(m, 2, NN_ACT_SIGMOID), NN_OK);
    nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(NN_OPTIM_SGD), 0};
    to.optim.lr = 0.5;
    nn_trainer *tr = nn_trainer_new(m, &to);
    for (int epoch = 0; epoch < 200; epoch++)
        for (int i = 0; i < n; i++)
            cr_assert_eq(nn_trainer_step(tr, X + 2 * i, Y + i, 1, NULL), NN_OK, "%s",
                         nn_trainer_errmsg(tr));
    cr_assert_eq(nn_trainer_recordings(tr), 1);
    int correct = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(nn_model_predict(m, X + 2 * i, 1, out + i), NN_OK);
        correct += (out[i] > 0.5) == (Y[i] > 0.5);
    }
    cr_assert_eq(correct, n, "accuracy %d/%d", correct, n);
    nn_trainer_free(tr);
    nn_model_free(m);
}

/* Steps through the trainer (record once, replay) leave exactly the same
 * bits as steps recorded afresh every time. */
Test(nn_mlp, replayed_steps_equal_rerecorded_steps)
{
    const uint32_t sizes[] = {6, 9, 4};
    const nn_optim_kind kinds[] = {NN_OPTIM_SGD, NN_OPTIM_MOMENTUM, NN_OPTIM_ADAM};
    for (int kk = 0; kk < 3; kk++)
        for (int l = 0; l < NN_LOSS_COUNT; l++) {
            nn_model *a = mlp(sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY, 21, NULL);
            nn_model *b = mlp(sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY, 21, NULL);
            nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
            cr_assert(memcmp(nn_params_values(pa), nn_params_values(pb),
                             nn_params_size(pa) * sizeof(double)) == 0, "same seed, same start");
            nn_trainer_opts to = {(nn_loss)l, nn_optim_defaults(kinds[kk]), 0.5};
            nn_trainer *tr = nn_trainer_new(a, &to);
            nn_optim *opt = nn_optim_new(&to.optim, nn_params_size(pb), NULL, NULL);
            cr_assert(tr && opt);
            ad_tape *t = ad_tape_new(NULL);
            for (int step = 0; step < 25; step++) {
                const uint32_t B = step % 5 == 4 ? 3 : 7; /* two batch sizes */
                double X[7 * 6], Y[7 * 4] = {0};
                fill(X, B * 6, step);
                for (uint32_t r = 0; r < B; r++)
                    Y[r * 4 + (r + (uint32_t)step) % 4] = 1;
                double la, lb;
                cr_assert_eq(nn_trainer_step(tr, X, Y, B, &la), NN_OK, "%s", nn_trainer_errmsg(tr));

                ad_tape_reset(t); /* b: recorded afresh */
                ad_node x = ad_constant(t, ad_shape_mat(B, 6), X);
                ad_node y = ad_constant(t, ad_shape_mat(B, 4), Y);
                ad_node J = nn_model_loss(b, t, (nn_loss)l, nn_model_forward(b, t, x, 1), y);
                nn_params_zero_grad(pb);
                cr_assert_eq(ad_backward(t, J), AD_OK);
                lb = ad_scalar_value(t, J);
                nn_params_clip_grad_norm(pb, 0.5, NULL);
                cr_assert_eq(nn_optim_step(opt, pb), NN_OK);
                cr_assert_eq(la, lb, "step %d: loss %.17g vs %.17g", step, la, lb);
            }
            cr_assert(memcmp(nn_params_values(pa), nn_params_values(pb),
                             nn_params_size(pa) * sizeof(double)) == 0,
                      "%s/%s: parameters differ", nn_optim_name(kinds[kk]), nn_loss_name((nn_loss)l));
            cr_assert_eq(nn_trainer_recordings(tr), 2);
            ad_tape_free(t);
            nn_optim_free(opt);
            nn_trainer_free(tr);
            nn_model_free(a);
            nn_model_free(b);
        }
}

Test(nn_mlp, steady_state_steps_allocate_nothing)
{
    test_alloc al = {0};
    const uint32_t sizes[] = {8, 16, 3};
    nn_model *m = mlp(sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY, 2, &al);
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 1.0};
    nn_trainer *tr = nn_trainer_new(m, &to);
    cr_assert_not_null(tr);
    double X[10 * 8], Y[10 * 3] = {0}, out[10 * 3];
    fill(X, 80, 0.5);
    for (int r = 0; r < 10; r++)
        Y[r * 3 + r % 3] = 1;
    /* warm up: both batch sizes recorded, prediction recorded */
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(nn_trainer_step(tr, X, Y, 10, NULL), NN_OK);
        cr_assert_eq(nn_trainer_step(tr, X, Y, 4, NULL), NN_OK);
    }
    cr_assert_eq(nn_model_predict(m, X, 10, out), NN_OK);
    const long before = al.count;
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(nn_trainer_step(tr, X, Y, i % 3 ? 10 : 4, NULL), NN_OK);
        cr_assert_eq(nn_model_predict(m, X, 10, out), NN_OK);
    }
    cr_assert_eq(al.count, before, "%ld allocations in 100 steady-state steps", al.count - before);
    cr_assert_eq(nn_trainer_recordings(tr), 2);
    /* a third size re-records the second slot */
    cr_assert_eq(nn_trainer_step(tr, X, Y, 7, NULL), NN_OK);
    cr_assert_eq(nn_trainer_recordings(tr), 3);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 10, NULL), NN_OK);
    cr_assert_eq(nn_trainer_recordings(tr), 3, "the first size stays recorded");
    nn_trainer_free(tr);
    nn_model_free(m);
    cr_assert_eq(al.bytes, 0, "everything freed");
    cr_assert_eq(al.allocs, al.frees);
    cr_assert_eq(al.bad_osize, 0, "every osize matches the block's size");
}

Test(nn_mlp, predict_matches_forward)
{
    const uint32_t sizes[] = {3, 5, 2};
    nn_model *m = mlp(sizes, 3, NN_ACT_SIGMOID, NN_ACT_TANH, 8, NULL);
    double X[4 * 3], out[4 * 2], one[2];
    fill(X, 12, 0.1);
    cr_assert_eq(nn_model_predict(m, X, 4, out), NN_OK);
    ad_tape *t = ad_tape_new(NULL);
    ad_node y = nn_model_forward(m, t, ad_constant(t, ad_shape_mat(4, 3), X), 0);
    cr_assert_eq(memcmp(ad_value(t, y), out, sizeof out), 0);
    for (int r = 0; r < 4; r++) { /* the one-sample form gives the same rows */
        cr_assert_eq(nn_model_predict(m, X + 3 * r, 1, one), NN_OK);
        cr_assert(fabs(one[0] - out[2 * r]) < 1e-15 && fabs(one[1] - out[2 * r + 1]) < 1e-15);
    }
    /* parameters changed in place: the replay sees them */
    nn_params_values(nn_model_params(m))[0] += 1.0;
    cr_assert_eq(nn_model_predict(m, X, 4, out), NN_OK);
    cr_assert_neq(memcmp(ad_value(t, y), out, sizeof out), 0);
    ad_replay(t);
    cr_assert_eq(memcmp(ad_value(t, y), out, sizeof out), 0);
    ad_tape_free(t);
    nn_model_free(m);
}

Test(nn_mlp, trainer_and_predict_errors)
{
    nn_model *m = nn_model_new(NULL);
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_SGD), 0};
    cr_assert_null(nn_trainer_new(m, &to));
    cr_assert_str_eq(nn_model_errmsg(m), "trainer: the model has no layers");
    double X[4] = {0}, out[2];
    cr_assert_eq(nn_model_predict(m, X, 1, out), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "predict: the model has no layers");
    const uint32_t sizes[] = {4, 2};
    cr_assert_eq(nn_model_add_mlp(m, sizes, 2, NN_ACT_RELU, NN_ACT_IDENTITY), NN_OK);
    cr_assert_eq(nn_model_predict(m, X, 0, out), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "predict: the batch is empty");
    cr_assert_eq(nn_model_predict(m, NULL, 1, out), NN_EMISUSE);
    cr_assert_str_eq(nn_model_errmsg(m), "predict: X or out is NULL");

    cr_assert_null(nn_trainer_new(m, NULL));
    cr_assert_str_eq(nn_model_errmsg(m), "trainer: options are NULL");
    to.optim.lr = -1;
    cr_assert_null(nn_trainer_new(m, &to));
    cr_assert_str_eq(nn_model_errmsg(m), "optimizer: learning rate -1 is out of range");
    to.optim.lr = 0.1;
    to.clip_norm = -2;
    cr_assert_null(nn_trainer_new(m, &to));
    cr_assert_str_eq(nn_model_errmsg(m), "trainer: clip_norm -2 is not a finite value >= 0");
    to.clip_norm = 0;
    to.loss = (nn_loss)7;
    cr_assert_null(nn_trainer_new(m, &to));
    cr_assert_str_eq(nn_model_errmsg(m), "trainer: unknown loss 7");
    to.loss = NN_LOSS_MSE;
    nn_trainer *tr = nn_trainer_new(m, &to);
    cr_assert_not_null(tr);
    double Y[2] = {0};
    cr_assert_eq(nn_trainer_step(tr, X, Y, 0, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: the batch is empty");
    cr_assert_eq(nn_trainer_step(tr, NULL, Y, 1, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr), "trainer: X or Y is NULL");
    cr_assert_eq(nn_trainer_step(tr, X, Y, 1, NULL), NN_OK);
    cr_assert_eq(nn_model_add_dense(m, 2, 3, NN_ACT_RELU), NN_OK);
    cr_assert_eq(nn_trainer_step(tr, X, Y, 1, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(tr),
                     "trainer: the model's parameters changed after the trainer was made");
    cr_assert_eq(nn_trainer_step(NULL, X, Y, 1, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_trainer_errmsg(NULL), "no trainer");
    nn_trainer_free(tr);
    nn_trainer_free(NULL);
    nn_model_free(m);
}
