/* test_hooks.c -- gradient-ready hooks and updates fused into the sweep.
 *
 * A ready hook must fire once per sweep, as soon as its parameter's
 * gradient is complete (before the sweep reaches earlier layers) and with
 * the complete gradient; an update hook must leave every parameter exactly
 * where a plain sweep followed by the same update loop leaves it, whether
 * the op applies it row by row (fused) or the sweep calls it once, and
 * must see every element exactly once. Misuse gets a message. */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "support.h"

#define NI 7
#define NH 6
#define NO 3
#define NB 4 /* batch rows */

typedef struct mlp {
    double W1[NH * NI], b1[NH], W2[NO * NH], b2[NO];
    double gW1[NH * NI], gb1[NH], gW2[NO * NH], gb2[NO];
    double x[NB * NI], y[NB * NO];
} mlp;

static void mlp_init(mlp *m, uint64_t seed)
{
    test_rng r = {seed};
    for (int i = 0; i < NH * NI; i++)
        m->W1[i] = test_uniform(&r, -0.6, 0.6);
    for (int i = 0; i < NH; i++)
        m->b1[i] = test_uniform(&r, -0.2, 0.2);
    for (int i = 0; i < NO * NH; i++)
        m->W2[i] = test_uniform(&r, -0.6, 0.6);
    for (int i = 0; i < NO; i++)
        m->b2[i] = test_uniform(&r, -0.2, 0.2);
    for (int i = 0; i < NB * NI; i++)
        m->x[i] = test_uniform(&r, -1, 1);
    for (int i = 0; i < NB * NO; i++)
        m->y[i] = test_uniform(&r, -1, 1);
}

typedef struct rec {
    ad_node W1, b1, W2, b2, J;
} rec;

/* J = 1/2 ||W2 tanh(W1 x + b1) + b2 - y||^2; batch: x is NB x NI. */
static rec mlp_record(ad_tape *t, mlp *m, int batch)
{
    rec r;
    const ad_shape xs = batch ? ad_shape_mat(NB, NI) : ad_shape_vec(NI);
    const ad_shape ys = batch ? ad_shape_mat(NB, NO) : ad_shape_vec(NO);
    ad_node x = ad_param(t, xs, m->x, NULL), y = ad_param(t, ys, m->y, NULL);
    r.W1 = ad_param(t, ad_shape_mat(NH, NI), m->W1, m->gW1);
    r.b1 = ad_param(t, ad_shape_vec(NH), m->b1, m->gb1);
    r.W2 = ad_param(t, ad_shape_mat(NO, NH), m->W2, m->gW2);
    r.b2 = ad_param(t, ad_shape_vec(NO), m->b2, m->gb2);
    ad_node h = ad_tanh(t, ad_affine(t, r.W1, x, r.b1));
    ad_node d = ad_sub(t, ad_affine(t, r.W2, h, r.b2), y);
    r.J = ad_scale(t, ad_sum(t, ad_square(t, d)), 0.5);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    return r;
}

/* a == b for every element: bit for bit with the engine's kernels; with
 * the BLAS backend (AD_TEST_BLAS) the unfused sweep's products come from
 * BLAS and the fused ones from the engine's kernels, so 1e-12 relative. */
static void same_arr(const double *a, const double *b, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
#ifdef AD_TEST_BLAS
        const int ok = fabs(a[i] - b[i]) <= 1e-12 * fmax(1.0, fabs(b[i]));
#else
        const int ok = a[i] == b[i];
#endif
        if (!ok)
            cr_assert_fail("%s: element %zu is %.17g, want %.17g", what, i, a[i], b[i]);
    }
}

/* ---- ready hooks ---- */

typedef struct log {
    int order[16], n;
    double *watch;      /* a buffer whose first element is read at each call */
    double seen[16];
    double *copy[16];   /* where to copy the gradient at the call */
    size_t len[16];
} log_t;

typedef struct tag {
    log_t *log;
    int id;
} tag_t;

static void on_ready(void *ud, ad_node p, const ad_tensor *v)
{
    (void)p;
    tag_t *tg = ud;
    log_t *l = tg->log;
    cr_assert_lt(l->n, 16);
    l->order[l->n] = tg->id;
    l->seen[l->n] = l->watch ? l->watch[0] : 0;
    if (l->copy[tg->id])
        memcpy(l->copy[tg->id], v->grad, l->len[tg->id] * sizeof(double));
    l->n++;
}

Test(hooks, ready_fires_once_per_sweep_last_layer_first_with_the_complete_gradient)
{
    for (int batch = 0; batch <= 1; batch++) {
        static mlp m, ref;
        mlp_init(&m, 11), mlp_init(&ref, 11);
        ad_tape *t = ad_tape_new(NULL), *u = ad_tape_new(NULL);
        rec r = mlp_record(t, &m, batch), q = mlp_record(u, &ref, batch);
        log_t l;
        memset(&l, 0, sizeof l);
        double cW1[NH * NI], cb1[NH], cW2[NO * NH], cb2[NO];
        l.copy[0] = cW1, l.len[0] = NH * NI;
        l.copy[1] = cb1, l.len[1] = NH;
        l.copy[2] = cW2, l.len[2] = NO * NH;
        l.copy[3] = cb2, l.len[3] = NO;
        l.watch = m.gW1;
        tag_t tags[4] = {{&l, 0}, {&l, 1}, {&l, 2}, {&l, 3}};
        ad_node ps[4] = {r.W1, r.b1, r.W2, r.b2};
        for (int k = 0; k < 4; k++) {
            ad_grad_hook h = {.size = sizeof h, .ready = on_ready, .ud = &tags[k]};
            cr_assert_eq(ad_set_grad_hook(t, ps[k], &h), AD_OK, "%s", ad_tape_errmsg(t));
        }
        for (int sweep = 0; sweep < 3; sweep++) {
            /* NaN in dW1: a hook of layer 2 that fires before the sweep
             * reaches layer 1 still sees it there */
            for (int i = 0; i < NH * NI; i++)
                m.gW1[i] = NAN;
            l.n = 0;
            cr_assert_eq(ad_sweep(t, r.J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
            cr_assert_eq(l.n, 4, "4 hooks, %d calls", l.n);
            int pos[4] = {-1, -1, -1, -1};
            for (int i = 0; i < 4; i++)
                pos[l.order[i]] = i;
            for (int k = 0; k < 4; k++)
                cr_assert_neq(pos[k], -1, "hook %d did not fire", k);
            cr_assert_lt(pos[2], pos[0], "W2 is ready before W1");
            cr_assert_lt(pos[3], pos[1], "b2 is ready before b1");
            cr_assert(isnan(l.seen[pos[2]]) && isnan(l.seen[pos[3]]),
                      "layer 2's hooks fire before the sweep writes dW1");
            cr_assert(!isnan(l.seen[pos[0]]), "W1's hook sees its gradient");
            cr_assert_eq(ad_sweep(u, q.J, NULL, AD_SWEEP_ASSIGN), AD_OK);
            /* what each hook saw is the final gradient, bit for bit */
            cr_assert_arr_eq(cW1, ref.gW1, sizeof cW1);
            cr_assert_arr_eq(cb1, ref.gb1, sizeof cb1);
            cr_assert_arr_eq(cW2, ref.gW2, sizeof cW2);
            cr_assert_arr_eq(cb2, ref.gb2, sizeof cb2);
            cr_assert_arr_eq(m.gW1, ref.gW1, sizeof cW1);
        }
        /* adding sweeps: the hook sees the sum in the buffer */
        memset(m.gb2, 0, sizeof m.gb2);
        l.n = 0;
        cr_assert_eq(ad_backward(t, r.J), AD_OK);
        cr_assert_eq(ad_backward(t, r.J), AD_OK);
        cr_assert_eq(l.n, 8);
        for (int i = 0; i < NO; i++)
            cr_assert_float_eq(cb2[i], 2 * ref.gb2[i], 1e-15 * (1 + fabs(ref.gb2[i])));
        ad_tape_free(t), ad_tape_free(u);
    }
}

/* ---- update hooks ---- */

typedef struct sgd {
    double lr;
    size_t size, calls, covered, max_n, scaled_calls;
    unsigned char seen[NH * NI];
} sgd_t;

static void sgd_update(void *ud, size_t off, double *w, const double *g, size_t n)
{
    sgd_t *s = ud;
    cr_assert_leq(off + n, s->size, "segment [%zu, %zu) beyond %zu", off, off + n, s->size);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(s->seen[off + i], 0, "element %zu updated twice", off + i);
        s->seen[off + i] = 1;
        w[i] -= s->lr * g[i];
    }
    s->calls++;
    s->covered += n;
    s->max_n = n > s->max_n ? n : s->max_n;
}

static void sgd_scaled(void *ud, size_t off, double *w, double a, const double *x, size_t n)
{
    sgd_t *s = ud;
    cr_assert_leq(off + n, s->size);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(s->seen[off + i], 0, "element %zu updated twice", off + i);
        s->seen[off + i] = 1;
        w[i] -= s->lr * (a * x[i]);
    }
    s->calls++;
    s->covered += n;
    s->max_n = n > s->max_n ? n : s->max_n;
    s->scaled_calls++;
}

static void sgd_plain(double *w, const double *g, size_t n, double lr)
{
    for (size_t i = 0; i < n; i++)
        w[i] -= lr * g[i];
}

/* Three steps of replay + sweep + SGD with hooks on tape t against a plain
 * sweep and an SGD loop on tape u: the same weights bit for bit. */
static void train_compare(int batch, int extra_use, int scaled)
{
    static mlp m, ref;
    mlp_init(&m, 5), mlp_init(&ref, 5);
    ad_tape *t = ad_tape_new(NULL), *u = ad_tape_new(NULL);
    rec r = mlp_record(t, &m, batch), q = mlp_record(u, &ref, batch);
    ad_node J = r.J, JR = q.J;
    if (extra_use) { /* W1 used twice: no fused form, one call at the end of its uses */
        J = ad_add(t, J, ad_scale(t, ad_sum(t, ad_square(t, r.W1)), 0.01));
        JR = ad_add(u, JR, ad_scale(u, ad_sum(u, ad_square(u, q.W1)), 0.01));
    }
    static sgd_t s[4];
    const size_t sizes[4] = {NH * NI, NH, NO * NH, NO};
    ad_node ps[4] = {r.W1, r.b1, r.W2, r.b2};
    for (int k = 0; k < 4; k++) {
        memset(&s[k], 0, sizeof s[k]);
        s[k].lr = 0.1, s[k].size = sizes[k];
        ad_grad_hook h = {.size = sizeof h, .update = sgd_update, .ud = &s[k],
                          .update_scaled = scaled ? sgd_scaled : NULL};
        cr_assert_eq(ad_set_grad_hook(t, ps[k], &h), AD_OK, "%s", ad_tape_errmsg(t));
    }
    for (int step = 0; step < 3; step++) {
        if (step) {
            cr_assert_eq(ad_replay(t), AD_OK);
            cr_assert_eq(ad_replay(u), AD_OK);
        }
        for (int k = 0; k < 4; k++)
            memset(s[k].seen, 0, sizeof s[k].seen), s[k].calls = 0, s[k].covered = 0,
                                                    s[k].max_n = 0, s[k].scaled_calls = 0;
        cr_assert_eq(ad_sweep(t, J, NULL, 0), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_eq(ad_sweep(u, JR, NULL, AD_SWEEP_ASSIGN), AD_OK);
        for (int k = 0; k < 4; k++)
            cr_assert_eq(s[k].covered, sizes[k], "param %d: %zu of %zu elements updated", k,
                         s[k].covered, sizes[k]);
        if (!extra_use && scaled && !batch)
            cr_assert_eq(s[0].scaled_calls, NH, "one sample: every row of W1 as a x");
        if (batch || !scaled)
            cr_assert_eq(s[0].scaled_calls, 0, "a batch's rows are sums: stored, not scaled");
        if (!extra_use)
            cr_assert_eq(s[0].max_n, batch ? (size_t)NH * NI : (size_t)NI,
                         "W1's update runs inside affine's vjp, by rows (one sample: x has no "
                         "gradient) or blocks of up to 32 rows (a batch)");
        else
            cr_assert_eq(s[0].calls, 1, "W1 used twice: one update over the whole gradient");
        sgd_plain(ref.W1, ref.gW1, NH * NI, 0.1);
        sgd_plain(ref.b1, ref.gb1, NH, 0.1);
        sgd_plain(ref.W2, ref.gW2, NO * NH, 0.1);
        sgd_plain(ref.b2, ref.gb2, NO, 0.1);
        same_arr(m.W1, ref.W1, NH * NI, "W1");
        same_arr(m.b1, ref.b1, NH, "b1");
        same_arr(m.W2, ref.W2, NO * NH, "W2");
        same_arr(m.b2, ref.b2, NO, "b2");
        cr_assert_eq(ad_scalar_value(t, J), ad_scalar_value(u, JR));
    }
    ad_tape_free(t), ad_tape_free(u);
}

Test(hooks, fused_sgd_equals_sweep_then_update_vector) { train_compare(0, 0, 0); }
Test(hooks, fused_scaled_sgd_equals_sweep_then_update_vector) { train_compare(0, 0, 1); }
Test(hooks, fused_sgd_equals_sweep_then_update_batch) { train_compare(1, 0, 0); }
Test(hooks, fused_scaled_hook_in_a_batch_gets_stored_rows) { train_compare(1, 0, 1); }
Test(hooks, update_of_a_parameter_used_twice_runs_once_over_its_gradient) { train_compare(0, 1, 1); }

typedef struct count {
    double lr;
    size_t size, covered, calls;
    unsigned char *seen;
} count_t;

static void count_update(void *ud, size_t off, double *w, const double *g, size_t n)
{
    count_t *c = ud;
    cr_assert_leq(off + n, c->size);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(c->seen[off + i], 0, "element %zu updated twice", off + i);
        c->seen[off + i] = 1;
        w[i] -= c->lr * g[i];
    }
    c->covered += n, c->calls++;
}

static void count_scaled(void *ud, size_t off, double *w, double a, const double *x, size_t n)
{
    count_t *c = ud;
    cr_assert_leq(off + n, c->size);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(c->seen[off + i], 0, "element %zu updated twice", off + i);
        c->seen[off + i] = 1;
        w[i] -= c->lr * (a * x[i]);
    }
    c->covered += n, c->calls++;
}

Test(hooks, matvec_fused_rows_strips_and_remainder)
{
    /* 6 x 5: one block of four rows and two single rows; 5 x 1100: strips
     * of columns across a block; dx always from the old W */
    const size_t shapes[2][2] = {{6, 5}, {5, 1100}};
    for (int c = 0; c < 2; c++) {
        const size_t R = shapes[c][0], C = shapes[c][1];
        static double W[5500], W0[5500], gW[5500], gW0[5500], x[1100], gx[1100], gx0[1100];
        static unsigned char seen[5500];
        test_rng r = {3 + (uint64_t)c};
        for (size_t i = 0; i < R * C; i++)
            W[i] = W0[i] = test_uniform(&r, -1, 1);
        for (size_t i = 0; i < C; i++)
            x[i] = test_uniform(&r, -1, 1);
        ad_tape *t = ad_tape_new(NULL);
        ad_node Wn = ad_param(t, ad_shape_mat((uint32_t)R, (uint32_t)C), W, gW);
        ad_node xn = ad_param(t, ad_shape_vec((uint32_t)C), x, gx);
        ad_node J = ad_sum(t, ad_sin(t, ad_matvec(t, Wn, xn)));
        cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK); /* the plain gradients */
        memcpy(gW0, gW, R * C * sizeof *gW), memcpy(gx0, gx, C * sizeof *gx);
        memset(seen, 0, sizeof seen);
        count_t k = {0.5, R * C, 0, 0, seen};
        ad_grad_hook h = {.size = sizeof h, .update = count_update, .ud = &k,
                          .update_scaled = c == 1 ? count_scaled : NULL};
        cr_assert_eq(ad_set_grad_hook(t, Wn, &h), AD_OK);
        cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_eq(k.covered, R * C);
        cr_assert_gt(k.calls, 1, "the update runs inside matvec's vjp, in pieces");
        same_arr(gx, gx0, C, "dx is W^T dy with the old W");
        for (size_t i = 0; i < R * C; i++)
            W0[i] -= 0.5 * gW0[i];
        same_arr(W, W0, R * C, "W");
        ad_tape_free(t);
    }
}

Test(hooks, a_parameter_the_output_does_not_reach_gets_a_zero_update)
{
    double a[3] = {1, 2, 3}, ga[3], b[2] = {4, 5}, gb[2] = {NAN, NAN};
    ad_tape *t = ad_tape_new(NULL);
    ad_node an = ad_param(t, ad_shape_vec(3), a, ga), bn = ad_param(t, ad_shape_vec(2), b, gb);
    ad_node J = ad_sum(t, ad_square(t, an));
    ad_node K = ad_sum(t, bn); /* recorded after J: above the output */
    (void)K;
    static sgd_t s;
    memset(&s, 0, sizeof s);
    s.lr = 1, s.size = 2;
    ad_grad_hook h = {.size = sizeof h, .update = sgd_update, .ud = &s};
    cr_assert_eq(ad_set_grad_hook(t, bn, &h), AD_OK);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(s.covered, 2);
    cr_assert(b[0] == 4 && b[1] == 5, "a zero gradient, not the NaN in the buffer: %g %g", b[0],
              b[1]);
    ad_tape_free(t);
}

Test(hooks, shared_value_memory_waits_for_the_end_of_the_sweep)
{
    /* two params over one block: updating the first at its last use would
     * change what the second's vjp reads */
    double w[4] = {0.5, -1, 2, 0.25}, g1[4], g2[4], x[4] = {1, 2, 3, 4};
    ad_tape *t = ad_tape_new(NULL);
    ad_node p1 = ad_param(t, ad_shape_mat(1, 4), w, g1);
    ad_node p2 = ad_param(t, ad_shape_vec(4), w, g2);
    ad_node xn = ad_param(t, ad_shape_vec(4), x, NULL);
    ad_node J = ad_add(t, ad_sum(t, ad_matvec(t, p1, xn)), ad_dot(t, ad_square(t, p2), xn));
    static sgd_t s;
    memset(&s, 0, sizeof s);
    s.lr = 0.1, s.size = 4;
    ad_grad_hook h = {.size = sizeof h, .update = sgd_update, .ud = &s};
    cr_assert_eq(ad_set_grad_hook(t, p1, &h), AD_OK);
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(s.calls, 1);
    for (int i = 0; i < 4; i++) { /* d/dw of x.(w^2) used the old w */
        const double w0[4] = {0.5, -1, 2, 0.25};
        cr_assert_eq(g2[i], 2 * w0[i] * x[i]);
        cr_assert_eq(w[i], w0[i] - 0.1 * x[i]);
    }
    ad_tape_free(t);
}

Test(hooks, workspaces_and_reset_do_not_call_hooks)
{
    static mlp m;
    mlp_init(&m, 9);
    ad_tape *t = ad_tape_new(NULL);
    rec r = mlp_record(t, &m, 0);
    log_t l;
    memset(&l, 0, sizeof l);
    tag_t tg = {&l, 0};
    ad_grad_hook h = {.size = sizeof h, .ready = on_ready, .ud = &tg};
    cr_assert_eq(ad_set_grad_hook(t, r.W2, &h), AD_OK);
    ad_workspace *w = ad_workspace_new(t, NULL, NULL);
    cr_assert_not_null(w);
    cr_assert_eq(ad_workspace_sweep(w, r.J, NULL, 0), AD_OK);
    cr_assert_eq(l.n, 0, "a workspace sweep calls no hook");
    cr_assert_eq(ad_backward(t, r.J), AD_OK);
    cr_assert_eq(l.n, 1);
    ad_workspace_free(w);
    ad_tape_reset(t);
    r = mlp_record(t, &m, 0);
    cr_assert_eq(ad_backward(t, r.J), AD_OK);
    cr_assert_eq(l.n, 1, "reset drops the hooks");
    /* removing */
    cr_assert_eq(ad_set_grad_hook(t, r.W2, &h), AD_OK);
    cr_assert_eq(ad_set_grad_hook(t, r.W2, NULL), AD_OK);
    cr_assert_eq(ad_backward(t, r.J), AD_OK);
    cr_assert_eq(l.n, 1);
    ad_tape_free(t);
}

static void expect_fail(ad_tape *t, int st, int want, const char *part)
{
    cr_assert_eq(st, want, "status %d, want %d (%s)", st, want, ad_tape_errmsg(t));
    cr_assert(strstr(ad_tape_errmsg(t), part), "message \"%s\" lacks \"%s\"", ad_tape_errmsg(t),
              part);
    cr_assert_eq(ad_tape_status(t), AD_OK, "not sticky");
}

Test(hooks, misuse_is_refused_with_a_message)
{
    double v[3] = {1, 2, 3}, g[3];
    ad_tape *t = ad_tape_new(NULL);
    ad_node p = ad_param(t, ad_shape_vec(3), v, g), q = ad_param(t, ad_shape_vec(3), v, NULL);
    ad_node y = ad_sum(t, ad_square(t, p));
    ad_node s = ad_scalar_var(t, 2);
    static sgd_t st;
    ad_grad_hook ok = {.size = sizeof ok, .update = sgd_update, .ud = &st};
    ad_grad_hook both = {.size = sizeof both, .ready = on_ready, .update = sgd_update};
    ad_grad_hook neither = {.size = sizeof neither};
    ad_grad_hook small = {.size = sizeof(size_t), .update = sgd_update};
    ad_grad_hook lone = {.size = sizeof lone, .update_scaled = sgd_scaled};
    ad_grad_hook lone2 = {.size = sizeof lone2, .ready = on_ready, .update_scaled = sgd_scaled};
    cr_assert_eq(ad_set_grad_hook(NULL, p, &ok), AD_EMISUSE);
    expect_fail(t, ad_set_grad_hook(t, y, &ok), AD_EMISUSE, "not an ad_param with a gradient");
    expect_fail(t, ad_set_grad_hook(t, s, &ok), AD_EMISUSE, "not an ad_param with a gradient");
    expect_fail(t, ad_set_grad_hook(t, q, &ok), AD_EMISUSE, "not an ad_param with a gradient");
    expect_fail(t, ad_set_grad_hook(t, p, &both), AD_EMISUSE, "exactly one of ready and update (both");
    expect_fail(t, ad_set_grad_hook(t, p, &neither), AD_EMISUSE, "(neither given)");
    expect_fail(t, ad_set_grad_hook(t, p, &small), AD_EMISUSE, "hook size 8 is less than");
    expect_fail(t, ad_set_grad_hook(t, p, &lone), AD_EMISUSE, "(neither given)");
    expect_fail(t, ad_set_grad_hook(t, p, &lone2), AD_EMISUSE, "update_scaled without update");
    expect_fail(t, ad_set_grad_hook(t, ad_nil(), &ok), AD_EMISUSE, "set_grad_hook");
    ad_tape *u = ad_tape_new(NULL);
    ad_node foreign = ad_param(u, ad_shape_vec(3), v, g);
    expect_fail(t, ad_set_grad_hook(t, foreign, &ok), AD_EMISUSE, "set_grad_hook");
    ad_tape_free(u);
    /* overlapping gradient buffers: refused at the sweep */
    ad_node p2 = ad_param(t, ad_shape_vec(2), v, g + 1);
    ad_node y2 = ad_add(t, y, ad_sum(t, p2));
    cr_assert_eq(ad_set_grad_hook(t, p, &ok), AD_OK);
    expect_fail(t, ad_sweep(t, y2, NULL, 0), AD_EMISUSE, "gradient buffers that overlap");
    ad_tape_free(t);
}

Test(hooks, planning_allocation_failure_is_reported_and_recoverable)
{
    static mlp m;
    mlp_init(&m, 2);
    for (long fail = 1; fail < 40; fail++) {
        test_alloc a = {0};
        ad_tape_opts o = test_alloc_opts(&a);
        ad_tape *t = ad_tape_new(&o);
        cr_assert_not_null(t);
        rec r = mlp_record(t, &m, 1);
        static sgd_t s;
        memset(&s, 0, sizeof s);
        s.lr = 0, s.size = NH * NI;
        ad_grad_hook h = {.size = sizeof h, .update = sgd_update, .ud = &s};
        a.fail_at = a.count + fail;
        int st = ad_set_grad_hook(t, r.W1, &h);
        if (st == AD_OK)
            st = ad_backward(t, r.J);
        if (st != AD_OK) {
            cr_assert_eq(st, AD_ENOMEM, "%s", ad_tape_errmsg(t));
            cr_assert(strstr(ad_tape_errmsg(t), "out of memory"), "%s", ad_tape_errmsg(t));
            a.fail_at = 0;
            if (ad_set_grad_hook(t, r.W1, &h) == AD_OK) {
                memset(s.seen, 0, sizeof s.seen);
                cr_assert_eq(ad_backward(t, r.J), AD_OK, "%s", ad_tape_errmsg(t));
            }
        }
        ad_tape_free(t);
        cr_assert_eq(a.bytes, 0, "leak after failing allocation %ld", fail);
        if (st == AD_OK)
            break; /* past every allocation */
    }
}

Test(hooks, affine_batch_fused_in_blocks_of_rows)
{
    /* 70 rows: blocks of 32, 32 and 6; dX from the old W */
    enum { R = 70, C = 9, B = 5 };
    static double W[R * C], W0[R * C], gW[R * C], gW0[R * C], b[R], gb[R], X[B * C], gX[B * C],
        gX0[B * C];
    static unsigned char seen[R * C];
    test_rng r = {17};
    for (int i = 0; i < R * C; i++)
        W[i] = W0[i] = test_uniform(&r, -1, 1);
    for (int i = 0; i < R; i++)
        b[i] = test_uniform(&r, -1, 1);
    for (int i = 0; i < B * C; i++)
        X[i] = test_uniform(&r, -1, 1);
    ad_tape *t = ad_tape_new(NULL);
    ad_node Wn = ad_param(t, ad_shape_mat(R, C), W, gW), bn = ad_param(t, ad_shape_vec(R), b, gb);
    ad_node Xn = ad_param(t, ad_shape_mat(B, C), X, gX);
    ad_node J = ad_sum(t, ad_tanh(t, ad_affine(t, Wn, Xn, bn)));
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK);
    memcpy(gW0, gW, sizeof gW), memcpy(gX0, gX, sizeof gX);
    count_t k = {0.25, R * C, 0, 0, seen};
    ad_grad_hook h = {.size = sizeof h, .update = count_update, .ud = &k};
    cr_assert_eq(ad_set_grad_hook(t, Wn, &h), AD_OK);
    cr_assert_eq(ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(k.covered, (size_t)R * C);
    cr_assert_eq(k.calls, 3, "blocks of 32, 32 and 6 rows: %zu calls", k.calls);
    same_arr(gX, gX0, B * C, "dX is dY W with the old W");
    for (int i = 0; i < R * C; i++)
        W0[i] -= 0.25 * gW0[i];
    same_arr(W, W0, R * C, "W");
    ad_tape_free(t);
}
