/* xor.c -- a 2-4-1 network (tanh hidden layer, sigmoid output) learns XOR
 * with the half squared error, full batch of the four points, plain SGD.
 * The trainer records forward + loss once and replays it every step. */
#include <nn/nn.h>

#include <stdio.h>

int main(void)
{
    const double X[4 * 2] = {0, 0, 0, 1, 1, 0, 1, 1};
    const double Y[4] = {0, 1, 1, 0};
    const uint32_t sizes[] = {2, 4, 1};

    nn_model_opts mo = {NULL, NULL, 1};
    nn_model *m = nn_model_new(&mo);
    if (!m) {
        fprintf(stderr, "xor: out of memory\n");
        return 1;
    }
    int st = nn_model_add_mlp(m, sizes, 3, NN_ACT_TANH, NN_ACT_SIGMOID);
    nn_trainer_opts to = {NN_LOSS_HALF_SSE, nn_optim_defaults(NN_OPTIM_SGD), 0};
    to.optim.lr = 2.0;
    nn_trainer *tr = st == NN_OK ? nn_trainer_new(m, &to) : NULL;
    if (!tr) {
        fprintf(stderr, "xor: %s\n", nn_model_errmsg(m));
        nn_model_free(m);
        return 1;
    }
    double loss = 0;
    for (int step = 0; step <= 2000 && st == NN_OK; step++) {
        st = nn_trainer_step(tr, X, Y, 4, &loss);
        if (step % 500 == 0)
            printf("step %4d  loss %.6f\n", step, loss);
    }
    if (st != NN_OK) {
        fprintf(stderr, "xor: %s\n", nn_trainer_errmsg(tr));
        nn_trainer_free(tr);
        nn_model_free(m);
        return 1;
    }
    double out[4];
    st = nn_model_predict(m, X, 4, out);
    int correct = 0;
    printf("\n x1 x2  target  prediction\n");
    for (int i = 0; st == NN_OK && i < 4; i++) {
        printf("  %g  %g    %g     %.4f\n", X[2 * i], X[2 * i + 1], Y[i], out[i]);
        correct += (out[i] > 0.5) == (Y[i] > 0.5);
    }
    printf("\n%d of 4 correct (%u tape recordings for %llu steps)\n", correct,
           (unsigned)nn_trainer_recordings(tr),
           (unsigned long long)nn_optim_steps(nn_trainer_optim(tr)));
    nn_trainer_free(tr);
    nn_model_free(m);
    return st == NN_OK && correct == 4 ? 0 : 1;
}
