#include "hand_mlp.h"

#include <stdlib.h>
#include <string.h>

int hand_mlp_init(hand_mlp *m, size_t n_in, size_t n_hid, size_t n_out, size_t batch)
{
    memset(m, 0, sizeof *m);
    m->n_in = n_in, m->n_hid = n_hid, m->n_out = n_out, m->batch = batch;
    m->W1 = calloc(n_hid * n_in, sizeof(double));
    m->dW1 = calloc(n_hid * n_in, sizeof(double));
    m->b1 = calloc(n_hid, sizeof(double));
    m->db1 = calloc(n_hid, sizeof(double));
    m->W2 = calloc(n_out * n_hid, sizeof(double));
    m->dW2 = calloc(n_out * n_hid, sizeof(double));
    m->b2 = calloc(n_out, sizeof(double));
    m->db2 = calloc(n_out, sizeof(double));
    m->H = calloc(batch * n_hid, sizeof(double));
    m->A = calloc(batch * n_hid, sizeof(double));
    m->dA = calloc(batch * n_hid, sizeof(double));
    m->O = calloc(batch * n_out, sizeof(double));
    m->dO = calloc(batch * n_out, sizeof(double));
    return m->W1 && m->dW1 && m->b1 && m->db1 && m->W2 && m->dW2 && m->b2 && m->db2 && m->H
                   && m->A && m->dA && m->O && m->dO
               ? 0
               : -1;
}

void hand_mlp_free(hand_mlp *m)
{
    free(m->W1), free(m->dW1), free(m->b1), free(m->db1), free(m->W2), free(m->dW2);
    free(m->b2), free(m->db2), free(m->H), free(m->A), free(m->dA), free(m->O), free(m->dO);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* out (B x k) = In (B x n) W^T + b;  W: (k x n) */
static void dense(const double *In, const double *W, const double *b, double *Out, size_t B,
                  size_t n, size_t k)
{
    for (size_t r = 0; r < B; r++)
        for (size_t i = 0; i < k; i++)
            Out[r * k + i] = dot(In + r * n, W + i * n, n) + b[i];
}

/* dW (k x n) = dOut^T In;  db = column sums of dOut;  dIn (B x n) = dOut W (if dIn) */
static void dense_back(const double *In, const double *W, const double *dOut, double *dW,
                       double *db, double *dIn, size_t B, size_t n, size_t k)
{
    memset(dW, 0, k * n * sizeof *dW);
    memset(db, 0, k * sizeof *db);
    if (dIn)
        memset(dIn, 0, B * n * sizeof *dIn);
    for (size_t r = 0; r < B; r++)
        for (size_t i = 0; i < k; i++) {
            const double g = dOut[r * k + i];
            const double *x = In + r * n, *w = W + i * n;
            double *dw = dW + i * n;
            db[i] += g;
            for (size_t j = 0; j < n; j++)
                dw[j] += g * x[j];
            if (dIn) {
                double *dx = dIn + r * n;
                for (size_t j = 0; j < n; j++)
                    dx[j] += g * w[j];
            }
        }
}

static void sgd(double *w, const double *g, size_t n, double lr)
{
    for (size_t i = 0; i < n; i++)
        w[i] -= lr * g[i];
}

double hand_mlp_step(hand_mlp *m, const double *X, const double *Y, size_t B, double lr)
{
    const size_t ni = m->n_in, nh = m->n_hid, no = m->n_out;
    dense(X, m->W1, m->b1, m->H, B, ni, nh);
    for (size_t i = 0; i < B * nh; i++)
        m->A[i] = m->H[i] > 0 ? m->H[i] : 0;
    dense(m->A, m->W2, m->b2, m->O, B, nh, no);
    double loss = 0;
    for (size_t i = 0; i < B * no; i++) { /* J = (1/B) sum 1/2 (o - y)^2 */
        const double d = m->O[i] - Y[i];
        loss += 0.5 * d * d;
        m->dO[i] = d / (double)B;
    }
    dense_back(m->A, m->W2, m->dO, m->dW2, m->db2, m->dA, B, nh, no);
    for (size_t i = 0; i < B * nh; i++) /* through the ReLU; dA becomes dH */
        m->dA[i] = m->H[i] > 0 ? m->dA[i] : 0;
    dense_back(X, m->W1, m->dA, m->dW1, m->db1, NULL, B, ni, nh);
    sgd(m->W1, m->dW1, nh * ni, lr);
    sgd(m->b1, m->db1, nh, lr);
    sgd(m->W2, m->dW2, no * nh, lr);
    sgd(m->b2, m->db2, no, lr);
    return loss / (double)B;
}

/* Layer backward with the SGD update inside: for each output unit i,
 * dIn += dOut[:, i] W[i, :] with the old row (when dIn), then the row
 * takes its update. One sample: one loop over the row does both. */
static void dense_back_sgd(const double *In, double *W, double *b, const double *dOut, double *dIn,
                           double *row, size_t B, size_t n, size_t k, double lr)
{
    if (dIn)
        memset(dIn, 0, B * n * sizeof *dIn);
    for (size_t i = 0; i < k; i++) {
        double *w = W + i * n;
        if (B == 1) {
            const double g = dOut[i], s = lr * g;
            b[i] -= s;
            if (dIn)
                for (size_t j = 0; j < n; j++) {
                    dIn[j] += g * w[j];
                    w[j] -= s * In[j];
                }
            else
                for (size_t j = 0; j < n; j++)
                    w[j] -= s * In[j];
            continue;
        }
        double gb = 0;
        memset(row, 0, n * sizeof *row);
        for (size_t r = 0; r < B; r++) {
            const double g = dOut[r * k + i];
            const double *x = In + r * n;
            gb += g;
            for (size_t j = 0; j < n; j++)
                row[j] += g * x[j];
            if (dIn) {
                double *dx = dIn + r * n;
                for (size_t j = 0; j < n; j++)
                    dx[j] += g * w[j];
            }
        }
        b[i] -= lr * gb;
        for (size_t j = 0; j < n; j++)
            w[j] -= lr * row[j];
    }
}

double hand_mlp_step_fused(hand_mlp *m, const double *X, const double *Y, size_t B, double lr)
{
    const size_t ni = m->n_in, nh = m->n_hid, no = m->n_out;
    dense(X, m->W1, m->b1, m->H, B, ni, nh);
    for (size_t i = 0; i < B * nh; i++)
        m->A[i] = m->H[i] > 0 ? m->H[i] : 0;
    dense(m->A, m->W2, m->b2, m->O, B, nh, no);
    double loss = 0;
    for (size_t i = 0; i < B * no; i++) {
        const double d = m->O[i] - Y[i];
        loss += 0.5 * d * d;
        m->dO[i] = d / (double)B;
    }
    /* dW1 is not needed as an array: its rows go straight into W1; the
     * row buffer is dW1's first row, free here */
    dense_back_sgd(m->A, m->W2, m->b2, m->dO, m->dA, m->dW1, B, nh, no, lr);
    for (size_t i = 0; i < B * nh; i++)
        m->dA[i] = m->H[i] > 0 ? m->dA[i] : 0;
    dense_back_sgd(X, m->W1, m->b1, m->dA, NULL, m->dW1, B, ni, nh, lr);
    return loss / (double)B;
}

void hand_mlp_predict(const hand_mlp *m, const double *x, double *out)
{
    double *h = m->A; /* scratch: predict is not called during a step */
    dense(x, m->W1, m->b1, h, 1, m->n_in, m->n_hid);
    for (size_t i = 0; i < m->n_hid; i++)
        h[i] = h[i] > 0 ? h[i] : 0;
    dense(h, m->W2, m->b2, out, 1, m->n_hid, m->n_out);
}
