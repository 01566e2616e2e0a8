/* W1-threads -- one recorded tape evaluated by several threads.
 *
 * The W1 function (extended Rosenbrock, n = 100 000 scalar ops recorded
 * once) and a small one (a 8-6-3 tanh network with softmax cross-entropy,
 * 10 nodes), each evaluated -- set the inputs, replay, sweep -- at many
 * points:
 *   - on the tape itself (ad_set_value, ad_replay, ad_backward);
 *   - in one workspace (ad_workspace_*), one thread: the cost of the
 *     workspace's indirection, tape / workspace in the same run;
 *   - in 1 and 2 threads, one workspace each, all made from the one tape:
 *     evaluations per second and the speed-up.
 * Checks: every W1 gradient against the analytic one (1e-12), and every
 * small-function gradient equal, bit for bit, between the tape and the
 * workspaces. */
#include "bench_util.h"
#include <autodiff/autodiff.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the functions ---- */

static ad_node record_w1(ad_tape *t, const double *x, ad_node *xs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xs[i] = ad_scalar_var(t, x[i]);
    ad_node one = ad_scalar(t, 1.0), f = ad_scalar(t, 0.0);
    for (size_t i = 0; i + 1 < n; i++) {
        ad_node a = ad_sub(t, xs[i + 1], ad_square(t, xs[i]));
        ad_node b = ad_sub(t, one, xs[i]);
        f = ad_add(t, f, ad_add(t, ad_scale(t, ad_square(t, a), 100.0), ad_square(t, b)));
    }
    return f;
}

static double w1_err(const double *x, const double *g, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r = 0;
        if (i + 1 < n)
            r += -400 * x[i] * (x[i + 1] - x[i] * x[i]) - 2 * (1 - x[i]);
        if (i > 0)
            r += 200 * (x[i] - x[i - 1] * x[i - 1]);
        num = fmax(num, fabs(g[i] - r));
        den = fmax(den, fabs(r));
    }
    return num / den;
}

enum { NIN = 8, NHID = 6, NOUT = 3 };
static double W1v[NHID * NIN], b1v[NHID], W2v[NOUT * NHID];

/* L = xent(W2 tanh(W1 x + b1), y); the params are nodes 1..5. */
static ad_node record_small(ad_tape *t, double *x, double *y)
{
    ad_node W1 = ad_param(t, ad_shape_mat(NHID, NIN), W1v, NULL);
    ad_node b1 = ad_param(t, ad_shape_vec(NHID), b1v, NULL);
    ad_node W2 = ad_param(t, ad_shape_mat(NOUT, NHID), W2v, NULL);
    ad_node xn = ad_variable(t, ad_shape_vec(NIN), x);
    ad_node yn = ad_constant(t, ad_shape_vec(NOUT), y);
    (void)W1, (void)b1, (void)W2;
    ad_node h = ad_tanh(t, ad_affine(t, W1, xn, b1));
    return ad_softmax_xent(t, ad_matvec(t, W2, h), yn);
}

static void small_point(long s, double *x)
{
    for (int i = 0; i < NIN; i++)
        x[i] = sin(0.37 * (i + 1) + 0.011 * (double)s);
}

/* ---- one thread's share of evaluations ---- */

typedef struct worker {
    _Alignas(128) const ad_tape *t; /* one worker per pair of cache lines */
    int w1;             /* 1: W1, 0: the small function */
    const ad_node *xs;  /* W1 leaves, or the small function's x node */
    ad_node out;
    size_t n;
    long evals, first;  /* evaluate points first .. first+evals-1 */
    double check;       /* W1: worst gradient error; small: sum of dx */
    ad_workspace *ws;
} worker;

static void *work(void *arg)
{
    worker *k = arg;
    if (!k->ws) { /* made by the thread that uses it, as a program would */
        int st = AD_OK;
        k->ws = ad_workspace_new(k->t, NULL, &st);
        bench_check(k->ws != NULL, "ad_workspace_new");
    }
    ad_workspace *ws = k->ws;
    double *x = malloc((k->w1 ? k->n : NIN) * sizeof *x), *g = NULL;
    bench_check(x != NULL, "out of memory");
    if (k->w1) {
        g = malloc(k->n * sizeof *g);
        bench_check(g != NULL, "out of memory");
    }
    for (long e = k->first; e < k->first + k->evals; e++) {
        if (k->w1) {
            for (size_t i = 0; i < k->n; i++) {
                x[i] = cos(0.001 * (double)i) + 0.01 * (double)(e % 7);
                ad_workspace_set_value(ws, k->xs[i], &x[i]);
            }
        } else {
            small_point(e, x);
            ad_workspace_set_value(ws, k->xs[0], x);
        }
        ad_workspace_replay(ws);
        bench_check(ad_workspace_sweep(ws, k->out, NULL, 0) == AD_OK, ad_workspace_errmsg(ws));
        if (k->w1 && e == k->first) { /* one full check per thread and run */
            for (size_t i = 0; i < k->n; i++)
                g[i] = ad_workspace_grad(ws, k->xs[i])[0];
            k->check = fmax(k->check, w1_err(x, g, k->n));
        } else if (!k->w1) {
            const double *gx = ad_workspace_grad(ws, k->xs[0]);
            for (int i = 0; i < NIN; i++)
                k->check += gx[i];
        }
    }
    free(x), free(g);
    return NULL;
}

/* Runs nthreads workers of evals each; returns the wall time. */
static double run(worker *k, int nthreads)
{
    pthread_t th[2];
    double t0 = bench_now();
    for (int i = 1; i < nthreads; i++)
        bench_check(pthread_create(&th[i], NULL, work, &k[i]) == 0, "pthread_create");
    work(&k[0]);
    for (int i = 1; i < nthreads; i++)
        pthread_join(th[i], NULL);
    return bench_now() - t0;
}

/* Tape-only evaluation of the same points, the reference. */
static double tape_evals(ad_tape *t, int w1, const ad_node *xs, ad_node out, size_t n, long evals,
                         double *check)
{
    double *x = malloc((w1 ? n : NIN) * sizeof *x);
    bench_check(x != NULL, "out of memory");
    double t0 = bench_now();
    for (long e = 0; e < evals; e++) {
        if (w1) {
            for (size_t i = 0; i < n; i++) {
                x[i] = cos(0.001 * (double)i) + 0.01 * (double)(e % 7);
                ad_set_value(t, xs[i], &x[i]);
            }
        } else {
            small_point(e, x);
            ad_set_value(t, xs[0], x);
        }
        ad_replay(t);
        bench_check(ad_backward(t, out) == AD_OK, ad_tape_errmsg(t));
        if (!w1) {
            const double *gx = ad_grad(t, xs[0]);
            for (int i = 0; i < NIN; i++)
                *check += gx[i];
        }
    }
    double dt = bench_now() - t0;
    free(x);
    return dt;
}

static void report(const char *name, int w1, ad_tape *t, const ad_node *xs, ad_node out, size_t n,
                   long evals)
{
    double tt[BENCH_REPS], tw[BENCH_REPS], t1[BENCH_REPS], t2[BENCH_REPS];
    worker k[2];
    for (int i = 0; i < 2; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].t = t, k[i].w1 = w1, k[i].xs = xs, k[i].out = out, k[i].n = n;
    }
    double ctape = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        /* interleaved, so drift of the machine hits every variant alike */
        double c = 0;
        double a = tape_evals(t, w1, xs, out, n, evals, &c);
        k[0].first = 0, k[0].evals = evals, k[0].check = 0;
        double b = run(k, 1);
        if (!w1) /* the same points: the same gradients, bit for bit */
            bench_check(c == k[0].check, "a workspace's gradient differs from the tape's");
        ctape = c;
        k[0].first = 0, k[0].evals = evals;
        double one = run(k, 1);
        k[0].first = 0, k[0].evals = evals, k[1].first = evals, k[1].evals = evals;
        double two = run(k, 2);
        if (w1)
            bench_check(k[0].check <= 1e-12 && k[1].check <= 1e-12,
                        "W1-threads: gradient differs from the analytic one");
        if (r >= 0)
            tt[r] = a / (double)evals, tw[r] = b / (double)evals, t1[r] = one,
            t2[r] = two;
    }
    (void)ctape;
    bench_stats st = bench_summarise(tt, BENCH_REPS), sw = bench_summarise(tw, BENCH_REPS);
    bench_stats s1 = bench_summarise(t1, BENCH_REPS), s2 = bench_summarise(t2, BENCH_REPS);
    double r1 = (double)evals / s1.median, r2 = 2.0 * (double)evals / s2.median;
    printf("%s\n", name);
    printf("  %-34s %10.3f us\n", "tape: set + replay + sweep", st.median * 1e6);
    printf("  %-34s %10.3f us  (workspace / tape %.3f)\n", "workspace, 1 thread", sw.median * 1e6,
           sw.median / st.median);
    printf("  %-34s %10.0f evaluations/s\n", "1 thread, 1 workspace", r1);
    printf("  %-34s %10.0f evaluations/s  (speed-up %.2f)\n", "2 threads, 1 workspace each", r2,
           r2 / r1);
    printf("  %-34s %10zu bytes (tape: %zu)\n", "workspace memory",
           ad_workspace_memory(k[0].ws), ad_tape_memory(t));
    bench_json(name, "tape_eval", st, "s", -1);
    bench_json(name, "workspace_eval", sw, "s", sw.median / st.median);
    bench_stats sp = {r2 / r1, 2.0 * (double)evals / s2.max / ((double)evals / s1.min),
                      2.0 * (double)evals / s2.min / ((double)evals / s1.max)};
    bench_json(name, "speedup_2_threads", sp, "x", -1);
    for (int i = 0; i < 2; i++)
        ad_workspace_free(k[i].ws);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 100000;
    /* W1 */
    double *x = malloc(n * sizeof *x);
    ad_node *xs = malloc(n * sizeof *xs);
    bench_check(x && xs, "out of memory");
    for (size_t i = 0; i < n; i++)
        x[i] = cos(0.001 * (double)i);
    ad_tape *t = ad_tape_new(NULL);
    bench_check(t != NULL, "tape");
    ad_node f = record_w1(t, x, xs, n);
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    char name[64];
    snprintf(name, sizeof name, "W1-threads (n = %zu)", n);
    report(name, 1, t, xs, f, n, 20);
    ad_tape_free(t);

    /* the small function */
    for (int i = 0; i < NHID * NIN; i++)
        W1v[i] = 0.3 * sin(0.7 * i + 0.1);
    for (int i = 0; i < NHID; i++)
        b1v[i] = 0.05 * (i - 2);
    for (int i = 0; i < NOUT * NHID; i++)
        W2v[i] = 0.4 * cos(1.3 * i);
    double x0[NIN], y0[NOUT] = {0, 1, 0};
    small_point(0, x0);
    t = ad_tape_new(NULL);
    bench_check(t != NULL, "tape");
    ad_node L = record_small(t, x0, y0);
    bench_check(!ad_node_is_nil(L), ad_tape_errmsg(t));
    ad_node xn = ad_tape_node(t, 4);
    report("small network (8-6-3, tanh, xent; 10 nodes)", 0, t, &xn, L, 0, 200000);
    ad_tape_free(t);
    free(x), free(xs);
    return 0;
}
