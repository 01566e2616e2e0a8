/* nn_demo.c -- a program that embeds nn: a 2-8-2 network learns XOR with
 * the trainer (record once, replay every step), then predicts. Exits 0
 * only if all four points are classified right. */
#include <nn/nn.h>

#include <stdio.h>

int main(void)
{
    const double X[4 * 2] = {0, 0, 0, 1, 1, 0, 1, 1};
    const double Y[4 * 2] = {1, 0, 0, 1, 0, 1, 1, 0}; /* one-hot: class = x0 xor x1 */
    const uint32_t sizes[] = {2, 8, 2};

    nn_model_opts mo = {NULL, NULL, 1}; /* default allocator, seed 1 */
    nn_model *m = nn_model_new(&mo);
    if (!m) {
        fputs("out of memory\n", stderr);
        return 1;
    }
    if (nn_model_add_mlp(m, sizes, 3, NN_ACT_TANH, NN_ACT_IDENTITY) != NN_OK) {
        fprintf(stderr, "nn: %s\n", nn_model_errmsg(m));
        nn_model_free(m);
        return 1;
    }
    nn_trainer_opts to = {NN_LOSS_XENT, nn_optim_defaults(NN_OPTIM_ADAM), 0};
    to.optim.lr = 0.05;
    nn_trainer *tr = nn_trainer_new(m, &to); /* must be freed before m */
    if (!tr) {
        fprintf(stderr, "nn: %s\n", nn_model_errmsg(m));
        nn_model_free(m);
        return 1;
    }
    double loss = 0;
    int st = NN_OK;
    for (int step = 0; step < 500 && st == NN_OK; step++)
        st = nn_trainer_step(tr, X, Y, 4, &loss);
    if (st != NN_OK)
        fprintf(stderr, "nn: %s\n", nn_trainer_errmsg(tr));

    double out[4 * 2];
    int right = 0;
    if (st == NN_OK && nn_model_predict(m, X, 4, out) == NN_OK)
        for (int i = 0; i < 4; i++)
            right += (out[2 * i + 1] > out[2 * i]) == (Y[2 * i + 1] > 0.5);
    printf("nn (autodiff %s): xor loss %.4f after 500 steps, %d/4 right, %llu recording(s)\n",
           ad_version(), loss, right, (unsigned long long)nn_trainer_recordings(tr));
    nn_trainer_free(tr);
    nn_model_free(m);
    puts(right == 4 ? "ok" : "FAILED");
    return right == 4 ? 0 : 1;
}
