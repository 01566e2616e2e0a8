/* test_nn_optim.c -- SGD, momentum and Adam against values computed by
 * hand for one and two steps; options, size checks and reset. */
#include <criterion/criterion.h>
#include <nn/nn.h>

#include <math.h>

static nn_params *two(double w0, double w1)
{
    nn_params *p = nn_params_new(NULL, NULL);
    nn_params_add(p, "w", ad_shape_vec(2), NULL);
    nn_params_values(p)[0] = w0;
    nn_params_values(p)[1] = w1;
    return p;
}

static void set_grad(nn_params *p, double g0, double g1)
{
    nn_params_grads(p)[0] = g0;
    nn_params_grads(p)[1] = g1;
}

static void expect(nn_params *p, double w0, double w1)
{
    const double *w = nn_params_values(p);
    cr_assert(fabs(w[0] - w0) <= 1e-14 * fabs(w0) && fabs(w[1] - w1) <= 1e-14 * fabs(w1),
              "got (%.17g, %.17g), want (%.17g, %.17g)", w[0], w[1], w0, w1);
}

Test(nn_optim, sgd_one_step)
{
    nn_params *p = two(1, -2);
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
    o.lr = 0.1;
    nn_optim *opt = nn_optim_new(&o, 2, NULL, NULL);
    set_grad(p, 0.5, -1);
    cr_assert_eq(nn_optim_step(opt, p), NN_OK);
    expect(p, 0.95, -1.9); /* w - 0.1 g */
    cr_assert_eq(nn_optim_steps(opt), 1);
    nn_optim_free(opt);
    nn_params_free(p);
}

Test(nn_optim, momentum_two_steps)
{
    nn_params *p = two(1, -2);
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_MOMENTUM);
    o.lr = 0.1;
    o.momentum = 0.9;
    nn_optim *opt = nn_optim_new(&o, 2, NULL, NULL);
    set_grad(p, 0.5, -1);
    nn_optim_step(opt, p);
    expect(p, 0.95, -1.9); /* v = g = (0.5, -1) */
    nn_optim_step(opt, p);
    expect(p, 0.855, -1.71); /* v = 0.9 v + g = (0.95, -1.9); w -= 0.1 v */
    nn_optim_reset(opt);
    nn_optim_step(opt, p);
    expect(p, 0.805, -1.61); /* after reset v = g again */
    nn_optim_free(opt);
    nn_params_free(p);
}

Test(nn_optim, adam_two_steps)
{
    nn_params *p = two(1, -2);
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_ADAM);
    cr_assert(o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.lr == 0.001);
    o.lr = 0.1;
    nn_optim *opt = nn_optim_new(&o, 2, NULL, NULL);
    set_grad(p, 0.5, -1);
    nn_optim_step(opt, p);
    /* step 1: mhat = g, vhat = g^2, so each weight moves by lr g / (|g| + eps) */
    const double a0 = 1 - 0.1 * 0.5 / (0.5 + 1e-8), a1 = -2 + 0.1 * 1 / (1 + 1e-8);
    expect(p, a0, a1);
    set_grad(p, -0.25, 2);
    nn_optim_step(opt, p);
    /* step 2, w[0]: m = 0.9*0.05 + 0.1*(-0.25) = 0.02, v = 0.999*0.00025 + 0.001*0.0625
     * = 0.00031225; mhat = 0.02/0.19, vhat = 0.00031225/0.001999.
     * w[1]: m = 0.9*(-0.1) + 0.1*2 = 0.11, v = 0.999*0.001 + 0.001*4 = 0.004999;
     * mhat = 0.11/0.19, vhat = 0.004999/0.001999. */
    const double b0 = a0 - 0.1 * (0.02 / 0.19) / (sqrt(0.00031225 / 0.001999) + 1e-8);
    const double b1 = a1 - 0.1 * (0.11 / 0.19) / (sqrt(0.004999 / 0.001999) + 1e-8);
    const double *w = nn_params_values(p);
    cr_assert(fabs(w[0] - b0) < 1e-12 && fabs(w[1] - b1) < 1e-12, "(%.17g, %.17g) vs (%.17g, %.17g)",
              w[0], w[1], b0, b1);
    cr_assert_eq(nn_optim_steps(opt), 2);
    nn_optim_free(opt);
    nn_params_free(p);
}

Test(nn_optim, set_lr_and_errors)
{
    nn_params *p = two(1, 1);
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
    nn_optim *opt = nn_optim_new(&o, 2, NULL, NULL);
    cr_assert_eq(nn_optim_set_lr(opt, 0.5), NN_OK);
    set_grad(p, 1, -1);
    nn_optim_step(opt, p);
    expect(p, 0.5, 1.5);
    cr_assert_eq(nn_optim_set_lr(opt, 0), NN_EMISUSE);
    cr_assert_str_eq(nn_optim_errmsg(opt), "optimizer: learning rate 0 is out of range");
    nn_params_add(p, "more", ad_shape_scalar(), NULL);
    cr_assert_eq(nn_optim_step(opt, p), NN_ESHAPE);
    cr_assert_str_eq(nn_optim_errmsg(opt), "optimizer: made for 2 values but the store holds 3");
    cr_assert_eq(nn_optim_step(opt, NULL), NN_EMISUSE);
    cr_assert_str_eq(nn_optim_errmsg(opt), "optimizer: the parameter store is NULL");
    cr_assert_eq(nn_optim_step(NULL, p), NN_EMISUSE);
    nn_optim_free(opt);
    nn_optim_free(NULL);

    char msg[128];
    o = nn_optim_defaults(NN_OPTIM_MOMENTUM);
    o.momentum = 1;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_EMISUSE);
    cr_assert_str_eq(msg, "optimizer: momentum 1 is out of range");
    cr_assert_null(nn_optim_new(&o, 2, NULL, NULL));
    o = nn_optim_defaults(NN_OPTIM_ADAM);
    o.beta2 = -0.5;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_EMISUSE);
    cr_assert_str_eq(msg, "optimizer: beta2 -0.5 is out of range");
    o.beta2 = 0.999;
    o.eps = 0;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_EMISUSE);
    cr_assert_str_eq(msg, "optimizer: eps 0 is out of range");
    o.eps = 1e-8;
    o.lr = NAN;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_EMISUSE);
    o.lr = 0.01;
    o.kind = (nn_optim_kind)5;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_EMISUSE);
    cr_assert_str_eq(msg, "optimizer: unknown kind 5");
    cr_assert_eq(nn_optim_check(NULL, msg, sizeof msg), NN_EMISUSE);
    cr_assert_str_eq(msg, "optimizer: options are NULL");
    o.kind = NN_OPTIM_ADAM;
    cr_assert_eq(nn_optim_check(&o, msg, sizeof msg), NN_OK);
    cr_assert_str_eq(msg, "");
    cr_assert_null(nn_optim_new(&o, 0, NULL, NULL), "size 0");
    cr_assert_str_eq(nn_optim_name(NN_OPTIM_MOMENTUM), "momentum");
    cr_assert_str_eq(nn_optim_errmsg(NULL), "no optimizer");
    nn_params_free(p);
}

/* The trainer clips before the update: with clip_norm c and SGD, one step
 * moves the weights by lr * c in norm when the gradient is larger. */
Test(nn_optim, trainer_clips_by_global_norm)
{
    nn_model *m = nn_model_new(NULL);
    nn_model_add_dense(m, 2, 2, NN_ACT_IDENTITY);
    nn_params *p = nn_model_params(m);
    double before[6];
    for (int k = 0; k < 6; k++)
        before[k] = nn_params_values(p)[k];
    nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(NN_OPTIM_SGD), 0.01};
    to.optim.lr = 1;
    nn_trainer *tr = nn_trainer_new(m, &to);
    const double X[2] = {3, -4}, Y[2] = {100, -100};
    double loss;
    cr_assert_eq(nn_trainer_step(tr, X, Y, 1, &loss), NN_OK);
    cr_assert(loss > 1000);
    double moved = 0;
    for (int k = 0; k < 6; k++)
        moved += (nn_params_values(p)[k] - before[k]) * (nn_params_values(p)[k] - before[k]);
    cr_assert(fabs(sqrt(moved) - 0.01) < 1e-15, "the step has norm lr * clip: %g", sqrt(moved));
    nn_trainer_free(tr);
    nn_model_free(m);
}

/* The trainer's sweep writes the gradients (AD_SWEEP_ASSIGN): whatever the
 * gradient block held before a step, it holds this step's gradient after
 * it -- the same numbers a zeroed store and ad_backward give. A tensor
 * added to the store outside the layers keeps a zero gradient. */
Test(nn_optim, trainer_writes_gradients_and_zeroes_extra_tensors)
{
    const double X[3] = {0.5, -1, 2}, Y[2] = {1, -1};
    double ref[8], got[8];
    for (int extra = 0; extra < 2; extra++) {
        nn_model *m = nn_model_new(NULL);
        cr_assert_eq(nn_model_add_dense(m, 3, 2, NN_ACT_TANH), NN_OK);
        nn_params *p = nn_model_params(m);
        size_t xi = 0;
        if (extra)
            cr_assert_eq(nn_params_add(p, "extra", ad_shape_vec(2), &xi), NN_OK);
        nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(NN_OPTIM_SGD), 0};
        nn_trainer *tr = nn_trainer_new(m, &to);
        cr_assert_not_null(tr, "%s", nn_model_errmsg(m));
        cr_assert_eq(nn_trainer_fused(tr), !extra, "fused unless a tensor is outside the layers");
        nn_trainer_set_fused(tr, 0); /* the gradients are read after each step */
        cr_assert_eq(nn_trainer_fused(tr), 0);
        for (int step = 0; step < 3; step++) {
            /* the gradient at the current weights, the long way */
            ad_tape *t = ad_tape_new(NULL);
            ad_node x = ad_constant(t, ad_shape_vec(3), X);
            ad_node y = ad_constant(t, ad_shape_vec(2), Y);
            ad_node L = nn_model_loss(m, t, NN_LOSS_HALF_SSE, nn_model_forward(m, t, x, 1), y);
            nn_params_zero_grad(p);
            cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
            memcpy(ref, nn_params_grads(p), 8 * sizeof *ref);
            ad_tape_free(t);

            double *g = nn_params_grads(p);
            for (size_t k = 0; k < nn_params_size(p); k++)
                g[k] = step ? NAN : 5.0;
            cr_assert_eq(nn_trainer_step(tr, X, Y, 1, NULL), NN_OK, "%s",
                         nn_trainer_errmsg(tr));
            memcpy(got, nn_params_grads(p), 8 * sizeof *got);
            for (int k = 0; k < 8; k++)
                cr_assert_eq(got[k], ref[k], "extra %d, step %d: gradient [%d] = %.17g, want %.17g",
                             extra, step, k, got[k], ref[k]);
            if (extra)
                for (int k = 0; k < 2; k++)
                    cr_assert_eq(nn_params_grad(p, xi)[k], 0.0,
                                 "a tensor outside the layers must keep a zero gradient");
        }
        nn_trainer_free(tr);
        nn_model_free(m);
    }
}

/* The optimizer fused into the sweep gives the unfused step's parameters
 * bit for bit: every optimizer, one sample and batches, a two-layer net. */
Test(nn_optim, fused_steps_equal_unfused_steps_bit_for_bit)
{
    const nn_optim_kind kinds[3] = {NN_OPTIM_SGD, NN_OPTIM_MOMENTUM, NN_OPTIM_ADAM};
    const uint32_t batches[3] = {1, 5, 2};
    double X[5 * 6], Y[5 * 3];
    for (int i = 0; i < 30; i++)
        X[i] = sin(1.7 * i);
    for (int i = 0; i < 15; i++)
        Y[i] = cos(0.9 * i);
    for (int k = 0; k < 3; k++) {
        nn_model *a = nn_model_new(NULL), *b = nn_model_new(NULL);
        const uint32_t sizes[3] = {6, 9, 3};
        cr_assert_eq(nn_model_add_mlp(a, sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY), NN_OK);
        cr_assert_eq(nn_model_add_mlp(b, sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY), NN_OK);
        nn_params *pa = nn_model_params(a), *pb = nn_model_params(b);
        memcpy(nn_params_values(pb), nn_params_values(pa), nn_params_size(pa) * sizeof(double));
        nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(kinds[k]), 0};
        to.optim.lr = 0.05;
        nn_trainer *ta = nn_trainer_new(a, &to), *tb = nn_trainer_new(b, &to);
        cr_assert(ta && tb);
        cr_assert_eq(nn_trainer_fused(ta), 1);
        nn_trainer_set_fused(tb, 0);
        for (int step = 0; step < 9; step++) {
            const uint32_t B = batches[step % 3];
            double la, lb;
            cr_assert_eq(nn_trainer_step(ta, X, Y, B, &la), NN_OK, "%s", nn_trainer_errmsg(ta));
            cr_assert_eq(nn_trainer_step(tb, X, Y, B, &lb), NN_OK, "%s", nn_trainer_errmsg(tb));
#ifdef AD_TEST_BLAS /* unfused products from BLAS, fused from the engine's kernels */
#define SAME(a, b) (fabs((a) - (b)) <= 1e-12 * fmax(1.0, fabs(b)))
#else
#define SAME(a, b) ((a) == (b))
#endif
            cr_assert(SAME(la, lb), "%s step %d: loss %.17g vs %.17g", nn_optim_name(kinds[k]),
                      step, la, lb);
            const double *va = nn_params_values(pa), *vb = nn_params_values(pb);
            for (size_t i = 0; i < nn_params_size(pa); i++)
                cr_assert(SAME(va[i], vb[i]), "%s step %d batch %u: value %zu %.17g vs %.17g",
                             nn_optim_name(kinds[k]), step, (unsigned)B, i, va[i], vb[i]);
        }
        cr_assert_eq(nn_optim_steps(nn_trainer_optim(ta)), 9);
        /* clipping needs the whole gradient: never fused */
        nn_trainer_opts tc = to;
        tc.clip_norm = 1;
        nn_trainer *tcl = nn_trainer_new(a, &tc);
        cr_assert_eq(nn_trainer_fused(tcl), 0);
        nn_trainer_free(tcl);
        nn_trainer_free(ta), nn_trainer_free(tb);
        nn_model_free(a), nn_model_free(b);
    }
}
