/* mlp_workload.c -- see mlp_workload.h and WORKLOADS.md (W2, W3).
 *
 * One epoch over the first 10 000 training images, plain SGD (lr 0.01),
 * J = 1/2 ||yhat - y||^2 averaged over the batch, no shuffling; a batch
 * size that does not divide 10 000 drops the last partial batch. Both
 * versions start every repetition from the same weights (nn's seeded
 * uniform +-sqrt(6/fan_in), biases 0), so their mean losses must agree. */
#include "mlp_workload.h"

#include "bench_util.h"
#include "fmnist.h"
#include "hand_mlp.h"

#include <nn/nn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_TRAIN 10000
#define N_IN 784
#define N_HID 128
#define N_OUT 10
#define LR 0.01

static double accuracy_hand(const hand_mlp *h, const fmnist *d)
{
    size_t right = 0;
    double out[N_OUT];
    for (size_t i = 0; i < d->n; i++) {
        hand_mlp_predict(h, d->x + i * N_IN, out);
        size_t best = 0;
        for (size_t j = 1; j < N_OUT; j++)
            best = out[j] > out[best] ? j : best;
        right += best == d->y[i];
    }
    return (double)right / (double)d->n;
}

static double accuracy_nn(nn_model *m, const fmnist *d, double *scores)
{
    if (nn_model_predict(m, d->x, (uint32_t)d->n, scores) != NN_OK)
        return -1;
    size_t right = 0;
    for (size_t i = 0; i < d->n; i++) {
        const double *o = scores + i * N_OUT;
        size_t best = 0;
        for (size_t j = 1; j < N_OUT; j++)
            best = o[j] > o[best] ? j : best;
        right += best == d->y[i];
    }
    return (double)right / (double)d->n;
}

/* Copies nn's parameters into the hand-written network. */
static void copy_weights(nn_model *m, hand_mlp *h)
{
    nn_params *p = nn_model_params(m);
    const char *names[4] = {"dense1.W", "dense1.b", "dense2.W", "dense2.b"};
    double *dst[4] = {h->W1, h->b1, h->W2, h->b2};
    for (int k = 0; k < 4; k++) {
        size_t i;
        bench_check(nn_params_find(p, names[k], &i) == NN_OK, "parameter names");
        ad_shape s = nn_params_shape(p, i);
        memcpy(dst[k], nn_params_value(p, i), ad_shape_size(s) * sizeof(double));
    }
}

int mlp_workload(const char *name, unsigned B)
{
    char why[256];
    fmnist train, test;
    if (fmnist_load(&train, "train", N_TRAIN, why, sizeof why) || fmnist_load(&test, "t10k", 0, why, sizeof why)) {
        fprintf(stderr, "%s: %s\n", name, why);
        return 2;
    }
    const size_t steps = N_TRAIN / B, samples = steps * B;
    double *Y = calloc(N_TRAIN * N_OUT, sizeof *Y), *scores = malloc(test.n * N_OUT * sizeof(double));
    bench_check(Y && scores, "oom");
    for (size_t i = 0; i < N_TRAIN; i++)
        Y[i * N_OUT + train.y[i]] = 1.0;

    bench_alloc counter = {0, 0, 0};
    nn_model_opts mo = {bench_alloc_fn, &counter, 42};
    nn_model *m = nn_model_new(&mo);
    const uint32_t sizes[3] = {N_IN, N_HID, N_OUT};
    bench_check(m && nn_model_add_mlp(m, sizes, 3, NN_ACT_RELU, NN_ACT_IDENTITY) == NN_OK, "model");
    nn_trainer_opts to;
    memset(&to, 0, sizeof to);
    to.loss = NN_LOSS_HALF_SSE;
    to.optim = nn_optim_defaults(NN_OPTIM_SGD);
    to.optim.lr = LR;
    nn_trainer *tr = nn_trainer_new(m, &to);
    bench_check(tr != NULL, nn_model_errmsg(m));
    if (getenv("BENCH_NN_UNFUSED")) /* the optimizer after the sweep, for comparison */
        nn_trainer_set_fused(tr, 0);
    nn_params *P = nn_model_params(m);
    const size_t np = nn_params_size(P);
    double *init = malloc(np * sizeof *init);
    bench_check(init != NULL, "oom");
    memcpy(init, nn_params_values(P), np * sizeof *init);

    hand_mlp h, hf;
    bench_check(hand_mlp_init(&h, N_IN, N_HID, N_OUT, B) == 0, "oom");
    bench_check(hand_mlp_init(&hf, N_IN, N_HID, N_OUT, B) == 0, "oom");

    double te[BENCH_REPS], th[BENCH_REPS], tf[BENCH_REPS], loss_e = 0, loss_h = 0, loss_f = 0;
    double worst = 0;
    long step_allocs = -1;
    for (int r = -1; r < BENCH_REPS; r++) {
        memcpy(nn_params_values(P), init, np * sizeof *init);
        nn_params_zero_grad(P);
        copy_weights(m, &h);
        copy_weights(m, &hf);
        long a0 = counter.allocs;
        double t0 = bench_now();
        loss_e = 0;
        for (size_t s = 0; s < steps; s++) {
            double l;
            int st = nn_trainer_step(tr, train.x + s * B * N_IN, Y + s * B * N_OUT, B, &l);
            bench_check(st == NN_OK, nn_trainer_errmsg(tr));
            loss_e += l;
        }
        double t1 = bench_now();
        if (r >= 0)
            step_allocs = counter.allocs - a0;
        loss_h = 0;
        for (size_t s = 0; s < steps; s++)
            loss_h += hand_mlp_step(&h, train.x + s * B * N_IN, Y + s * B * N_OUT, B, LR);
        double t2 = bench_now();
        loss_f = 0;
        for (size_t s = 0; s < steps; s++)
            loss_f += hand_mlp_step_fused(&hf, train.x + s * B * N_IN, Y + s * B * N_OUT, B, LR);
        double t3 = bench_now();
        loss_e /= (double)steps;
        loss_h /= (double)steps;
        loss_f /= (double)steps;
        double rel = fmax(fabs(loss_e - loss_h), fabs(loss_e - loss_f)) / fabs(loss_h);
        worst = fmax(worst, rel);
        bench_check(rel <= 1e-6, "mean loss of nn and hand-written differ by more than 1e-6");
        if (r >= 0) {
            te[r] = t1 - t0;
            th[r] = t2 - t1;
            tf[r] = t3 - t2;
        }
    }
    double acc_e = accuracy_nn(m, &test, scores), acc_h = accuracy_hand(&h, &test);
    bench_check(acc_e >= 0, nn_model_errmsg(m));

    bench_stats se = bench_summarise(te, BENCH_REPS), sh = bench_summarise(th, BENCH_REPS);
    bench_stats sf = bench_summarise(tf, BENCH_REPS);
    const char *unit = B == 1 ? "steps/s" : "samples/s";
    const double per = B == 1 ? (double)steps : (double)samples;
    printf("%s 784-128-10 ReLU MLP, batch %u, SGD lr %g, one epoch of %zu samples (%zu steps)\n",
           name, B, LR, samples, steps);
    printf("  %-14s %12.0f %s   (%.3f s/epoch)\n", "nn (tape)", per / se.median, unit, se.median);
    printf("  %-14s %12.0f %s   (%.3f s/epoch)  update fused into the backward loop\n",
           "hand-written C", per / sf.median, unit, sf.median);
    printf("  %-14s %12.0f %s   (%.3f s/epoch)  dW arrays, then an update pass\n", "hand, 2-pass",
           per / sh.median, unit, sh.median);
    printf("  ratio nn / hand-written throughput: %.3f (fused yardstick), %.3f (two-pass)\n",
           sf.median / se.median, sh.median / se.median);
    printf("  nn runs the optimizer %s the sweep\n", nn_trainer_fused(tr) ? "inside" : "after");
    printf("  mean loss: nn %.10f, hand %.10f, hand 2-pass %.10f (worst relative difference over "
           "runs %.1e)\n",
           loss_e, loss_f, loss_h, worst);
    printf("  test accuracy after one epoch: nn %.2f%%, hand %.2f%%\n", 100 * acc_e, 100 * acc_h);
    printf("  allocations per step in steady state: %.3f (%ld in a timed epoch); tape recordings: %llu\n",
           (double)step_allocs / (double)steps, step_allocs,
           (unsigned long long)nn_trainer_recordings(tr));

    /* Throughput figures: the stats of per/time (min time -> max rate). */
    bench_stats re = {per / se.median, per / se.max, per / se.min};
    bench_stats rh = {per / sh.median, per / sh.max, per / sh.min};
    bench_stats rf = {per / sf.median, per / sf.max, per / sf.min};
    bench_json(name, "nn", re, unit, sf.median / se.median);
    bench_json(name, "hand_fused", rf, unit, -1);
    bench_json(name, "hand", rh, unit, -1);
    printf("{\"workload\":\"%s\",\"variant\":\"nn\",\"mean_loss\":%.12g,\"test_accuracy\":%.4f,"
           "\"allocs_per_step\":%.3f}\n",
           name, loss_e, acc_e, (double)step_allocs / (double)steps);

    hand_mlp_free(&h);
    hand_mlp_free(&hf);
    nn_trainer_free(tr);
    nn_model_free(m);
    free(init), free(Y), free(scores);
    fmnist_free(&train), fmnist_free(&test);
    return 0;
}
