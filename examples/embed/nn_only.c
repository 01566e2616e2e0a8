/* nn_only.c -- a program that calls nn_ functions and nothing else: one
 * dense unit learns y = 2x - 1 from four points with plain SGD, then
 * predicts. Exits 0 only if the predictions are within 1e-3.
 *
 * It references no ad_ symbol on purpose. Linked with --as-needed, the
 * program then records no NEEDED entry for libautodiff.so.1 and the
 * loader must find it through libnn (whose installed RUNPATH is $ORIGIN):
 * the executable's own RUNPATH is not searched for libnn's dependencies.
 * scripts/check-embed.sh builds it every documented way. */
#include <nn/nn.h>

#include <stdio.h>

int main(void)
{
    const double X[4] = {-1, 0, 1, 2};
    const double Y[4] = {-3, -1, 1, 3}; /* y = 2x - 1 */

    nn_model_opts mo = {NULL, NULL, 7}; /* default allocator, seed 7 */
    nn_model *m = nn_model_new(&mo);
    if (!m) {
        fputs("out of memory\n", stderr);
        return 1;
    }
    if (nn_model_add_dense(m, 1, 1, NN_ACT_IDENTITY) != NN_OK) {
        fprintf(stderr, "nn: %s\n", nn_model_errmsg(m));
        nn_model_free(m);
        return 1;
    }
    nn_trainer_opts to = {NN_LOSS_MSE, nn_optim_defaults(NN_OPTIM_SGD), 0};
    to.optim.lr = 0.1;
    nn_trainer *tr = nn_trainer_new(m, &to); /* must be freed before m */
    if (!tr) {
        fprintf(stderr, "nn: %s\n", nn_model_errmsg(m));
        nn_model_free(m);
        return 1;
    }
    double loss = 0;
    int st = NN_OK;
    for (int step = 0; step < 300 && st == NN_OK; step++)
        st = nn_trainer_step(tr, X, Y, 4, &loss);
    if (st != NN_OK)
        fprintf(stderr, "nn: %s (%s)\n", nn_trainer_errmsg(tr), nn_strstatus(st));

    double out[4];
    int bad = st != NN_OK || nn_model_predict(m, X, 4, out) != NN_OK;
    for (int i = 0; i < 4 && !bad; i++)
        bad = out[i] - Y[i] > 1e-3 || Y[i] - out[i] > 1e-3;
    printf("nn only: %s loss %.3g after %llu %s steps\n", nn_loss_name(NN_LOSS_MSE), loss,
           (unsigned long long)nn_optim_steps(nn_trainer_optim(tr)),
           nn_optim_name(NN_OPTIM_SGD));
    nn_trainer_free(tr);
    nn_model_free(m);
    puts(bad ? "FAILED" : "ok");
    return bad;
}
