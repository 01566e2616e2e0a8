/* hand_mlp.h -- the W2/W3 network written out by hand: forward, backward
 * and SGD for 784 -> 128 (ReLU) -> 10 (linear), J = 1/2 ||yhat - y||^2.
 * The reference the engine is compared with; not part of the library. */
#ifndef AD_BENCH_HAND_MLP_H
#define AD_BENCH_HAND_MLP_H

#include <stddef.h>

typedef struct hand_mlp {
    size_t n_in, n_hid, n_out, batch;
    double *W1, *b1, *W2, *b2;      /* W1 (hid x in), W2 (out x hid) */
    double *dW1, *db1, *dW2, *db2;
    double *H, *A, *O, *dO, *dA;    /* batch x hid / batch x out scratch */
} hand_mlp;

int hand_mlp_init(hand_mlp *m, size_t n_in, size_t n_hid, size_t n_out, size_t batch);
void hand_mlp_free(hand_mlp *m);
/* One SGD step on a batch X (B x in) with one-hot targets Y (B x out); the
 * loss is averaged over the batch (B = 1: one sample). Returns the loss. */
double hand_mlp_step(hand_mlp *m, const double *X, const double *Y, size_t B, double lr);
/* The same step as the fastest straightforward C computes it: the SGD
 * update inside the backward loops (for one sample, w[j] -= lr*g*x[j] in
 * the loop that also back-propagates through w; for a batch, each row of
 * dW summed over the batch into a row buffer and applied at once), no dW
 * arrays, no dx for the network's input. The yardstick of W2 and W3. */
double hand_mlp_step_fused(hand_mlp *m, const double *X, const double *Y, size_t B, double lr);
/* Class scores for one input. */
void hand_mlp_predict(const hand_mlp *m, const double *x, double *out);

#endif
