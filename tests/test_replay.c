/* test_replay.c -- record once, move the leaves, ad_replay + ad_backward:
 * the values and gradients must be those of a fresh recording at the new
 * point, and neither replay nor a steady-state reset/re-record allocates. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

/* Replay runs the same kernels on the same numbers as a fresh recording;
 * the contract allows a difference of 1e-12 (combined abs/rel). */
static void same(double got, double want, const char *what, int i)
{
    cr_assert(test_err(got, want) <= 1e-12, "%s[%d]: replay %.17g, fresh %.17g", what, i, got,
              want);
}

/* ---- a scalar chain ---- */

typedef struct chain {
    ad_node a, b, p, f, mid;
} chain;

/* f = log(a) b + tanh(a - b) b^2 + sigmoid(a) / b + a^1.5 + 3 p exp(p b)
 * a, b copied leaves (inline scalars); p a scalar ad_param (EXT node). */
static chain record_chain(ad_tape *t, double a, double b, const double *p, double *pg)
{
    chain c;
    c.a = ad_scalar_var(t, a);
    c.b = ad_scalar_var(t, b);
    c.p = ad_param(t, ad_shape_scalar(), p, pg);
    ad_node t1 = ad_mul(t, ad_log(t, c.a), c.b);
    ad_node t2 = ad_mul(t, ad_tanh(t, ad_sub(t, c.a, c.b)), ad_square(t, c.b));
    ad_node t3 = ad_div(t, ad_sigmoid(t, c.a), c.b);
    ad_node t4 = ad_pow_const(t, c.a, 1.5);
    ad_node t5 = ad_scale(t, ad_mul(t, c.p, ad_exp(t, ad_mul(t, c.p, c.b))), 3.0);
    c.mid = ad_add(t, t1, t2);
    c.f = ad_add(t, ad_add(t, ad_add(t, c.mid, t3), t4), t5);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    return c;
}

Test(replay, scalar_chain_matches_fresh_recording)
{
    const double pts[][3] = {{1.3, 0.7, 0.2}, {0.4, -1.1, -0.3}, {2.5, 1.9, 0.05}, {1.3, 0.7, 0.2}};
    double p = pts[0][2], pg = 0;
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    chain c = record_chain(t, pts[0][0], pts[0][1], &p, &pg);
    size_t len = ad_tape_len(t);

    for (size_t k = 1; k < sizeof pts / sizeof pts[0]; k++) {
        /* Move the leaves: copied ones by ad_set_value, the param by its buffer. */
        cr_assert_eq(ad_set_value(t, c.a, &pts[k][0]), AD_OK);
        cr_assert_eq(ad_set_value(t, c.b, &pts[k][1]), AD_OK);
        p = pts[k][2];
        pg = 0;
        cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_eq(ad_backward(t, c.f), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_eq(ad_tape_len(t), len, "replay must not record");

        double p2 = pts[k][2], pg2 = 0;
        ad_tape *u = ad_tape_new(NULL);
        cr_assert_not_null(u);
        chain d = record_chain(u, pts[k][0], pts[k][1], &p2, &pg2);
        cr_assert_eq(ad_backward(u, d.f), AD_OK);

        same(ad_scalar_value(t, c.f), ad_scalar_value(u, d.f), "f", (int)k);
        same(ad_scalar_value(t, c.mid), ad_scalar_value(u, d.mid), "mid", (int)k);
        same(ad_grad(t, c.a)[0], ad_grad(u, d.a)[0], "df/da", (int)k);
        same(ad_grad(t, c.b)[0], ad_grad(u, d.b)[0], "df/db", (int)k);
        same(ad_grad(t, c.mid)[0], ad_grad(u, d.mid)[0], "df/dmid", (int)k);
        same(pg, pg2, "df/dp", (int)k);
        ad_tape_free(u);
    }
    ad_tape_free(t);
}

/* ---- a small MLP: 3 -> 4 (tanh) -> 2, softmax cross-entropy, plus an L2
 * term; all parameters in one caller block; the sample is an ad_param
 * without gradient (refilled before each replay), the target a constant
 * moved with ad_set_value. ---- */

enum { NI = 3, NH = 4, NO = 2, NB = 5 };
enum { OW1 = 0, OB1 = OW1 + NH * NI, OW2 = OB1 + NH, OB2 = OW2 + NO * NH, NP = OB2 + NO };

typedef struct mlp {
    ad_node x, y, h, logits, loss;
} mlp;

static mlp record_mlp(ad_tape *t, const double *P, double *G, const double *x, const double *y)
{
    mlp m;
    ad_node W1 = ad_param(t, ad_shape_mat(NH, NI), P + OW1, G + OW1);
    ad_node b1 = ad_param(t, ad_shape_vec(NH), P + OB1, G + OB1);
    ad_node W2 = ad_param(t, ad_shape_mat(NO, NH), P + OW2, G + OW2);
    ad_node b2 = ad_param(t, ad_shape_vec(NO), P + OB2, G + OB2);
    m.x = ad_param(t, ad_shape_vec(NI), x, NULL);
    m.y = ad_constant(t, ad_shape_vec(NO), y);
    m.h = ad_tanh(t, ad_add(t, ad_matvec(t, W1, m.x), b1)); /* h = tanh(W1 x + b1) */
    m.logits = ad_add(t, ad_matvec(t, W2, m.h), b2);        /* W2 h + b2 */
    ad_node l2 = ad_scale(t, ad_sum(t, ad_square(t, W1)), 0.01);
    m.loss = ad_add(t, ad_softmax_xent(t, m.logits, m.y), l2);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    return m;
}

static void init_params(double *P, unsigned seed)
{
    test_rng g = {seed};
    for (int i = 0; i < NP; i++)
        P[i] = test_uniform(&g, -1, 1);
}

Test(replay, mlp_sgd_steps_match_fresh_recordings)
{
    double P[NP], G[NP], x[NI], y[NO];
    double P2[NP], G2[NP];
    init_params(P, 7);
    memcpy(P2, P, sizeof P);
    test_rng g = {99};
    for (int i = 0; i < NI; i++)
        x[i] = test_uniform(&g, -1, 1);
    y[0] = 1, y[1] = 0;

    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    memset(G, 0, sizeof G);
    mlp m = record_mlp(t, P, G, x, y);

    for (int step = 0; step < 6; step++) {
        if (step > 0) {
            /* A new sample: refill the param buffer, move the constant. */
            for (int i = 0; i < NI; i++)
                x[i] = test_uniform(&g, -1, 1);
            y[0] = step % 2, y[1] = 1 - y[0];
            cr_assert_eq(ad_set_value(t, m.y, y), AD_OK);
            cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
        }
        memset(G, 0, sizeof G);
        cr_assert_eq(ad_backward(t, m.loss), AD_OK, "%s", ad_tape_errmsg(t));

        /* The same step recorded fresh, with its own parameter copy. */
        ad_tape *u = ad_tape_new(NULL);
        cr_assert_not_null(u);
        memset(G2, 0, sizeof G2);
        mlp n = record_mlp(u, P2, G2, x, y);
        cr_assert_eq(ad_backward(u, n.loss), AD_OK);
        same(ad_scalar_value(t, m.loss), ad_scalar_value(u, n.loss), "loss", step);
        for (int i = 0; i < NH; i++) {
            same(ad_value(t, m.h)[i], ad_value(u, n.h)[i], "h", i);
            same(ad_grad(t, m.h)[i], ad_grad(u, n.h)[i], "dh", i);
        }
        for (int i = 0; i < NP; i++)
            same(G[i], G2[i], "dP", i);
        cr_assert_null(ad_grad(t, m.x), "a param without grad buffer gets no gradient");
        ad_tape_free(u);

        for (int i = 0; i < NP; i++) { /* SGD on both copies */
            P[i] -= 0.1 * G[i];
            P2[i] -= 0.1 * G2[i];
        }
    }
    ad_tape_free(t);
}

/* The batched form: X (NB x NI) rows are samples, matmul_nt and a row
 * bias, mean over the batch. */
typedef struct batch {
    ad_node X, Y, loss;
} batch;

static batch record_batch(ad_tape *t, const double *P, double *G, const double *X,
                          const double *Y)
{
    batch b;
    ad_node W1 = ad_param(t, ad_shape_mat(NH, NI), P + OW1, G + OW1);
    ad_node b1 = ad_param(t, ad_shape_vec(NH), P + OB1, G + OB1);
    ad_node W2 = ad_param(t, ad_shape_mat(NO, NH), P + OW2, G + OW2);
    ad_node b2 = ad_param(t, ad_shape_vec(NO), P + OB2, G + OB2);
    b.X = ad_param(t, ad_shape_mat(NB, NI), X, NULL);
    b.Y = ad_constant(t, ad_shape_mat(NB, NO), Y);
    ad_node H = ad_relu(t, ad_add(t, ad_matmul_nt(t, b.X, W1), b1)); /* (NB, NH) */
    ad_node Z = ad_add(t, ad_matmul(t, H, ad_transpose(t, W2)), b2); /* (NB, NO) */
    b.loss = ad_scale(t, ad_softmax_xent(t, Z, b.Y), 1.0 / NB);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    return b;
}

Test(replay, batched_mlp_matches_fresh_recording)
{
    double P[NP], G[NP], G2[NP], X[NB * NI], Y[NB * NO];
    init_params(P, 11);
    test_rng g = {5};
    for (int i = 0; i < NB * NI; i++)
        X[i] = test_uniform(&g, -1, 1);
    for (int r = 0; r < NB; r++)
        Y[r * NO] = r % 2, Y[r * NO + 1] = 1 - r % 2;

    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    memset(G, 0, sizeof G);
    batch b = record_batch(t, P, G, X, Y);
    for (int step = 0; step < 4; step++) {
        for (int i = 0; i < NB * NI; i++)
            X[i] = test_uniform(&g, -1, 1);
        for (int i = 0; i < NP; i++)
            P[i] += 0.05 * test_uniform(&g, -1, 1);
        for (int r = 0; r < NB; r++)
            Y[r * NO] = (r + step) % 2, Y[r * NO + 1] = 1 - (r + step) % 2;
        cr_assert_eq(ad_set_value(t, b.Y, Y), AD_OK);
        cr_assert_eq(ad_replay(t), AD_OK);
        memset(G, 0, sizeof G);
        cr_assert_eq(ad_backward(t, b.loss), AD_OK);

        ad_tape *u = ad_tape_new(NULL);
        cr_assert_not_null(u);
        memset(G2, 0, sizeof G2);
        batch c = record_batch(u, P, G2, X, Y);
        cr_assert_eq(ad_backward(u, c.loss), AD_OK);
        same(ad_scalar_value(t, b.loss), ad_scalar_value(u, c.loss), "loss", step);
        for (int i = 0; i < NP; i++)
            same(G[i], G2[i], "dP", i);
        ad_tape_free(u);
    }
    ad_tape_free(t);
}

/* Without a new backward, a replay alone moves every value. */
Test(replay, replay_updates_values_of_all_nodes)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double v0[3] = {1, 2, 3}, v1[3] = {-1, 0.5, 4};
    ad_node v = ad_variable(t, ad_shape_vec(3), v0);
    ad_node s = ad_scalar(t, 2.0);
    ad_node w = ad_mul(t, v, s);       /* 2 v */
    ad_node q = ad_sum(t, ad_square(t, w)); /* sum 4 v^2 */
    cr_assert_eq(ad_scalar_value(t, q), 4.0 * 14);
    cr_assert_eq(ad_set_value(t, v, v1), AD_OK);
    double s1 = 0.5;
    cr_assert_eq(ad_set_value(t, s, &s1), AD_OK);
    cr_assert_eq(ad_scalar_value(t, q), 4.0 * 14, "nothing moves before ad_replay");
    cr_assert_eq(ad_replay(t), AD_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_value(t, w)[i], 0.5 * v1[i]);
    cr_assert_eq(ad_scalar_value(t, q), 0.25 * (1 + 0.25 + 16));
    ad_tape_free(t);
}

/* ---- allocation ---- */

Test(replay, replay_and_backward_allocate_nothing)
{
    test_alloc a;
    memset(&a, 0, sizeof a);
    ad_tape_opts o = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);
    double P[NP], G[NP] = {0}, x[NI] = {0.1, -0.2, 0.3}, y[NO] = {0, 1};
    init_params(P, 3);
    mlp m = record_mlp(t, P, G, x, y);
    double pv = 0.3, pg = 0;
    chain c = record_chain(t, 1.1, 0.9, &pv, &pg);
    cr_assert_eq(ad_backward(t, m.loss), AD_OK);
    cr_assert_eq(ad_backward(t, c.f), AD_OK);

    const long count = a.count, frees = a.frees;
    const size_t bytes = a.bytes, mem = ad_tape_memory(t);
    for (int k = 0; k < 5; k++) {
        x[0] += 0.1;
        double av = 1.0 + 0.1 * k;
        cr_assert_eq(ad_set_value(t, c.a, &av), AD_OK);
        cr_assert_eq(ad_replay(t), AD_OK);
        cr_assert_eq(ad_backward(t, m.loss), AD_OK);
        cr_assert_eq(ad_backward(t, c.f), AD_OK);
    }
    cr_assert_eq(a.count, count, "replay/backward allocated %ld times", a.count - count);
    cr_assert_eq(a.frees, frees, "replay/backward freed %ld times", a.frees - frees);
    cr_assert_eq(a.bytes, bytes);
    cr_assert_eq(ad_tape_memory(t), mem);
    ad_tape_free(t);
    cr_assert_eq(a.bytes, 0, "%zu bytes leaked", a.bytes);
    cr_assert_eq(a.allocs, a.frees);
    cr_assert_eq(a.bad_osize, 0);
}

/* A recording big enough to need several node chunks, constant-table
 * growth and several arena blocks: after the first reset, recording the
 * same computation again allocates nothing. */
static double record_big(ad_tape *t, const double *big)
{
    ad_node s = ad_scalar_var(t, 0.5);
    for (int i = 0; i < 20000; i++) /* 20000 inline nodes, 10000 constants */
        s = (i % 2) ? ad_scale(t, s, 0.9999) : ad_tanh(t, s);
    ad_node v = ad_variable(t, ad_shape_vec(4096), big); /* 32 KiB per value */
    ad_node acc = ad_mul(t, v, s);
    for (int i = 0; i < 12; i++) /* value + adjoint of each: ~800 KiB of arena */
        acc = ad_tanh(t, ad_add(t, acc, v));
    ad_node out = ad_sum(t, acc);
    cr_assert_eq(ad_backward(t, out), AD_OK, "%s", ad_tape_errmsg(t));
    return ad_scalar_value(t, out) + ad_grad(t, v)[7];
}

Test(replay, reset_and_rerecord_reaches_steady_state)
{
    static double big[4096];
    for (int i = 0; i < 4096; i++)
        big[i] = sin(0.01 * i);
    test_alloc a;
    memset(&a, 0, sizeof a);
    ad_tape_opts o = test_alloc_opts(&a);
    ad_tape *t = ad_tape_new(&o);
    cr_assert_not_null(t);

    const double first = record_big(t, big);
    ad_tape_reset(t);
    const long count = a.count;
    const size_t bytes = a.bytes;
    for (int k = 0; k < 4; k++) {
        double again = record_big(t, big);
        cr_assert_eq(again, first, "re-recording gives another result");
        ad_tape_reset(t);
    }
    cr_assert_eq(a.count, count, "%ld allocations after the first reset", a.count - count);
    cr_assert_eq(a.bytes, bytes);
    cr_assert_eq(ad_tape_len(t), 1, "reset leaves only the reserved node");
    ad_tape_free(t);
    cr_assert_eq(a.bytes, 0, "%zu bytes leaked", a.bytes);
    cr_assert_eq(a.allocs, a.frees);
    cr_assert_eq(a.bad_osize, 0);
}
