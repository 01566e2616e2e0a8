/* W4 -- one dense layer as it grows (scaling), see WORKLOADS.md.
 *   y = relu(W x + b),  J = 1/2 ||y||^2,  W is n x n
 * For each n: forward+backward (gradients dW, db, dx) on the tape by replay,
 * beside hand-written C in the same run; forward alone; peak memory.
 * The engine records the layer as a dense network would (nn does the same):
 * ad_affine(W, x, b), ad_relu, ad_dot, ad_scale. The hand-written version
 * assigns the gradients, and so does the engine with ad_sweep(...,
 * AD_SWEEP_ASSIGN): that is the figure compared. Also timed: the same layer
 * as two ops (ad_add(ad_matvec(W, x), b)), and the engine's default
 * (ad_backward adds into the caller's buffers) with the caller zeroing the
 * buffers before each step, and two memory yardsticks: one plain pass
 * reading W and one writing dW. */
#include "bench_util.h"

#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    size_t n;
    double *W, *b, *x;    /* inputs */
    double *dW, *db, *dx; /* gradients */
    double *z, *y;        /* hand-written scratch */
} layer;

static double hand_forward(layer *L)
{
    const size_t n = L->n;
    double J = 0;
    for (size_t i = 0; i < n; i++) { /* W: (n, n), x: (n) */
        const double *w = L->W + i * n;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four partial sums: vectorizes */
        size_t j = 0;
        for (; j + 4 <= n; j += 4) {
            s0 += w[j] * L->x[j];
            s1 += w[j + 1] * L->x[j + 1];
            s2 += w[j + 2] * L->x[j + 2];
            s3 += w[j + 3] * L->x[j + 3];
        }
        for (; j < n; j++)
            s0 += w[j] * L->x[j];
        double s = L->b[i] + ((s0 + s1) + (s2 + s3));
        L->z[i] = s;
        L->y[i] = s > 0 ? s : 0;
        J += 0.5 * L->y[i] * L->y[i];
    }
    return J;
}

/* dy = y; dz = dy * [z > 0]; dW = dz x^T; db = dz; dx = W^T dz (one pass over W). */
static void hand_backward(layer *L)
{
    const size_t n = L->n;
    memset(L->dx, 0, n * sizeof *L->dx);
    for (size_t i = 0; i < n; i++) {
        const double dz = L->z[i] > 0 ? L->y[i] : 0;
        const double *w = L->W + i * n;
        double *dw = L->dW + i * n;
        L->db[i] = dz;
        for (size_t j = 0; j < n; j++) {
            dw[j] = dz * L->x[j];
            L->dx[j] += dz * w[j];
        }
    }
}

/* A training step as the fastest straightforward C writes it: forward,
 * then one pass over W that back-propagates into dx with the old row and
 * applies the SGD update to it (no dW array). */
static void hand_step(layer *L, double lr)
{
    const size_t n = L->n;
    hand_forward(L);
    memset(L->dx, 0, n * sizeof *L->dx);
    for (size_t i = 0; i < n; i++) {
        const double dz = L->z[i] > 0 ? L->y[i] : 0, s = lr * dz;
        double *w = L->W + i * n;
        L->b[i] -= s;
        for (size_t j = 0; j < n; j++) {
            L->dx[j] += dz * w[j];
            w[j] -= s * L->x[j];
        }
    }
}

#define STEP_LR 1e-3

static void sgd_hook(void *ud, size_t off, double *w, const double *g, size_t n)
{
    (void)ud, (void)off;
    for (size_t i = 0; i < n; i++)
        w[i] -= STEP_LR * g[i];
}

static void sgd_hook_scaled(void *ud, size_t off, double *w, double a, const double *x, size_t n)
{
    (void)ud, (void)off;
    for (size_t i = 0; i < n; i++)
        w[i] -= STEP_LR * (a * x[i]);
}

/* The memory yardsticks: one pass reading W, and one writing dW (= dz x^T,
 * plain stores, W untouched). A forward must at least read W; a backward
 * reads W for dx and writes dW. */
static double read_pass(const double *W, size_t nn)
{
    /* eight independent sums, so the adds' latency does not bound it */
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= nn; j += 8)
        for (int k = 0; k < 8; k++)
            s[k] += W[j + k];
    for (; j < nn; j++)
        s[0] += W[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static void write_pass(layer *L)
{
    const size_t n = L->n;
    for (size_t i = 0; i < n; i++) {
        const double dz = L->y[i];
        double *dw = L->dW + i * n;
        for (size_t j = 0; j < n; j++)
            dw[j] = dz * L->x[j];
    }
}

static double rel_diff(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num;
}

static int equal(const double *a, const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i]))
            return 0;
    return 1;
}

static uint64_t rng = 0x853c49e6748fea9bULL;
static double uniform(double lo, double hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (double)(rng >> 11) / 9007199254740992.0;
}

static void run(size_t n)
{
    layer L = {n, 0, 0, 0, 0, 0, 0, 0, 0};
    L.W = malloc(n * n * sizeof(double));
    L.dW = malloc(n * n * sizeof(double));
    L.b = malloc(n * sizeof(double));
    L.x = malloc(n * sizeof(double));
    L.db = malloc(n * sizeof(double));
    L.dx = malloc(n * sizeof(double));
    L.z = malloc(n * sizeof(double));
    L.y = malloc(n * sizeof(double));
    double *eW = malloc(n * n * sizeof(double)), *eb = malloc(n * sizeof(double));
    double *ex = malloc(n * sizeof(double));
    bench_check(L.W && L.dW && L.b && L.x && L.db && L.dx && L.z && L.y && eW && eb && ex, "oom");
    double r = sqrt(6.0 / (double)n);
    for (size_t i = 0; i < n * n; i++)
        L.W[i] = uniform(-r, r);
    for (size_t i = 0; i < n; i++) {
        L.b[i] = uniform(-0.1, 0.1);
        L.x[i] = uniform(-1, 1);
    }

    /* Repetitions: enough work per timing at small n. */
    int inner = n <= 16 ? 20000 : n <= 64 ? 2000 : n <= 256 ? 200 : n <= 1024 ? 10 : 1;
    double th[BENCH_REPS], thf[BENCH_REPS], te[BENCH_REPS], tef[BENCH_REPS], tez[BENCH_REPS];
    double trd[BENCH_REPS], twr[BENCH_REPS];
    volatile double sink = 0;
    for (int rep = -1; rep < BENCH_REPS; rep++) {
        double t0 = bench_now();
        for (int k = 0; k < inner; k++)
            sink += hand_forward(&L);
        double t1 = bench_now();
        for (int k = 0; k < inner; k++) {
            sink += hand_forward(&L);
            hand_backward(&L);
        }
        double t2 = bench_now();
        for (int k = 0; k < inner; k++)
            sink += read_pass(L.W, n * n);
        double t3 = bench_now();
        for (int k = 0; k < inner; k++)
            write_pass(&L);
        double t4 = bench_now();
        if (rep >= 0) {
            thf[rep] = (t1 - t0) / inner;
            th[rep] = (t2 - t1) / inner;
            trd[rep] = (t3 - t2) / inner;
            twr[rep] = (t4 - t3) / inner;
        }
    }

    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_tape *t = ad_tape_new(&opts), *u = ad_tape_new(NULL);
    bench_check(t != NULL && u != NULL, "tape");
    ad_node W = ad_param(t, ad_shape_mat((uint32_t)n, (uint32_t)n), L.W, eW);
    ad_node b = ad_param(t, ad_shape_vec((uint32_t)n), L.b, eb);
    ad_node x = ad_param(t, ad_shape_vec((uint32_t)n), L.x, ex);
    ad_node y = ad_relu(t, ad_affine(t, W, x, b));
    ad_node J = ad_scale(t, ad_dot(t, y, y), 0.5);
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    /* the two-op form, on its own tape and buffers */
    double *fW = malloc(n * n * sizeof(double)), *fb = malloc(n * sizeof(double));
    double *fx = malloc(n * sizeof(double));
    bench_check(fW && fb && fx, "oom");
    ad_node W2 = ad_param(u, ad_shape_mat((uint32_t)n, (uint32_t)n), L.W, fW);
    ad_node b2 = ad_param(u, ad_shape_vec((uint32_t)n), L.b, fb);
    ad_node x2 = ad_param(u, ad_shape_vec((uint32_t)n), L.x, fx);
    ad_node y2 = ad_relu(u, ad_add(u, ad_matvec(u, W2, x2), b2));
    ad_node J2 = ad_scale(u, ad_dot(u, y2, y2), 0.5);
    bench_check(ad_tape_status(u) == AD_OK, ad_tape_errmsg(u));
    double t2op[BENCH_REPS];
    long allocs0 = counter.allocs;
    for (int rep = -1; rep < BENCH_REPS; rep++) {
        double t0 = bench_now();
        for (int k = 0; k < inner; k++)
            ad_replay(t);
        double t1 = bench_now();
        for (int k = 0; k < inner; k++) {
            ad_replay(t);
            ad_sweep(t, J, NULL, AD_SWEEP_ASSIGN);
        }
        double t2 = bench_now();
        for (int k = 0; k < inner; k++) {
            memset(eW, 0, n * n * sizeof *eW);
            memset(eb, 0, n * sizeof *eb);
            memset(ex, 0, n * sizeof *ex);
            ad_replay(t);
            ad_backward(t, J);
        }
        double t3 = bench_now();
        for (int k = 0; k < inner; k++) {
            ad_replay(u);
            ad_sweep(u, J2, NULL, AD_SWEEP_ASSIGN);
        }
        double t4 = bench_now();
        if (rep >= 0) {
            tef[rep] = (t1 - t0) / inner;
            te[rep] = (t2 - t1) / inner;
            tez[rep] = (t3 - t2) / inner;
            t2op[rep] = (t4 - t3) / inner;
        }
    }
    (void)sink;
    long step_allocs = counter.allocs - allocs0;

    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    bench_check(ad_tape_status(u) == AD_OK, ad_tape_errmsg(u));
    double Jh = hand_forward(&L);
    hand_backward(&L);
    double dJ = fabs(ad_scalar_value(t, J) - Jh) / fmax(1e-300, fabs(Jh));
    double d = fmax(fmax(rel_diff(eW, L.dW, n * n), rel_diff(eb, L.db, n)), rel_diff(ex, L.dx, n));
    bench_check(dJ <= 1e-12 && d <= 1e-12, "W4: tape and hand-written results differ");
    /* the two forms are the same computation: equal to the last bit (==,
     * so that -0 equals 0) */
    bench_check(ad_scalar_value(u, J2) == ad_scalar_value(t, J) && equal(fW, eW, n * n)
                    && equal(fb, eb, n) && equal(fx, ex, n),
                "W4: affine and matvec + add differ");

    /* Training steps: replay + sweep + SGD on W and b. The engine's on
     * tape s with the update inside the sweep (ad_set_grad_hook), and on
     * tape v with the sweep, then an update loop; the hand-written step on
     * its own copy. All three start from the same W, b and take the same
     * number of steps, so they must end equal. */
    double *sW = malloc(n * n * sizeof(double)), *sb = malloc(n * sizeof(double));
    double *vW = malloc(n * n * sizeof(double)), *vb = malloc(n * sizeof(double));
    double *hW = L.W, *hb = L.b;
    bench_check(sW && sb && vW && vb, "oom");
    memcpy(sW, L.W, n * n * sizeof *sW), memcpy(sb, L.b, n * sizeof *sb);
    memcpy(vW, L.W, n * n * sizeof *vW), memcpy(vb, L.b, n * sizeof *vb);
    ad_tape *s = ad_tape_new(&opts), *v = ad_tape_new(&opts);
    bench_check(s && v, "tape");
    ad_node Ws = ad_param(s, ad_shape_mat((uint32_t)n, (uint32_t)n), sW, eW);
    ad_node bs = ad_param(s, ad_shape_vec((uint32_t)n), sb, eb);
    ad_node xs = ad_param(s, ad_shape_vec((uint32_t)n), L.x, ex);
    ad_node ys = ad_relu(s, ad_affine(s, Ws, xs, bs));
    ad_node Js = ad_scale(s, ad_dot(s, ys, ys), 0.5);
    ad_grad_hook hk = {.size = sizeof hk, .update = sgd_hook, .update_scaled = sgd_hook_scaled};
    bench_check(ad_set_grad_hook(s, Ws, &hk) == AD_OK && ad_set_grad_hook(s, bs, &hk) == AD_OK,
                ad_tape_errmsg(s));
    ad_node Wv = ad_param(v, ad_shape_mat((uint32_t)n, (uint32_t)n), vW, fW);
    ad_node bv = ad_param(v, ad_shape_vec((uint32_t)n), vb, fb);
    ad_node xv = ad_param(v, ad_shape_vec((uint32_t)n), L.x, fx);
    ad_node yv = ad_relu(v, ad_affine(v, Wv, xv, bv));
    ad_node Jv = ad_scale(v, ad_dot(v, yv, yv), 0.5);
    bench_check(ad_tape_status(s) == AD_OK && ad_tape_status(v) == AD_OK, "step tapes");
    double tsh[BENCH_REPS], tss[BENCH_REPS], tsv[BENCH_REPS];
    /* one step each first: the first hooked sweep plans the hooks (it
     * allocates); every later step allocates nothing */
    hand_step(&L, STEP_LR);
    ad_replay(s);
    ad_sweep(s, Js, NULL, AD_SWEEP_ASSIGN);
    ad_replay(v);
    ad_sweep(v, Jv, NULL, AD_SWEEP_ASSIGN);
    for (size_t i = 0; i < n * n; i++)
        vW[i] -= STEP_LR * fW[i];
    for (size_t i = 0; i < n; i++)
        vb[i] -= STEP_LR * fb[i];
    long allocs1 = counter.allocs;
    for (int rep = -1; rep < BENCH_REPS; rep++) {
        double t0 = bench_now();
        for (int k = 0; k < inner; k++)
            hand_step(&L, STEP_LR);
        double t1 = bench_now();
        for (int k = 0; k < inner; k++) {
            ad_replay(s);
            ad_sweep(s, Js, NULL, AD_SWEEP_ASSIGN);
        }
        double t2 = bench_now();
        for (int k = 0; k < inner; k++) {
            ad_replay(v);
            ad_sweep(v, Jv, NULL, AD_SWEEP_ASSIGN);
            for (size_t i = 0; i < n * n; i++)
                vW[i] -= STEP_LR * fW[i];
            for (size_t i = 0; i < n; i++)
                vb[i] -= STEP_LR * fb[i];
        }
        double t3 = bench_now();
        if (rep >= 0) {
            tsh[rep] = (t1 - t0) / inner;
            tss[rep] = (t2 - t1) / inner;
            tsv[rep] = (t3 - t2) / inner;
        }
    }
    step_allocs += counter.allocs - allocs1;
    bench_check(ad_tape_status(s) == AD_OK && ad_tape_status(v) == AD_OK, "step tapes");
    double ds = fmax(rel_diff(sW, hW, n * n), rel_diff(sb, hb, n));
    double dv = fmax(rel_diff(vW, sW, n * n), rel_diff(vb, sb, n));
    bench_check(ds <= 1e-12 && dv == 0, "W4 step: engine and hand-written weights differ");
    bench_stats ssh = bench_summarise(tsh, BENCH_REPS), sss = bench_summarise(tss, BENCH_REPS);
    bench_stats ssv = bench_summarise(tsv, BENCH_REPS);
    ad_tape_free(s), ad_tape_free(v);
    free(sW), free(sb), free(vW), free(vb);

    bench_stats sh = bench_summarise(th, BENCH_REPS), shf = bench_summarise(thf, BENCH_REPS);
    bench_stats se = bench_summarise(te, BENCH_REPS), sef = bench_summarise(tef, BENCH_REPS);
    bench_stats sez = bench_summarise(tez, BENCH_REPS), s2 = bench_summarise(t2op, BENCH_REPS);
    bench_stats srd = bench_summarise(trd, BENCH_REPS), swr = bench_summarise(twr, BENCH_REPS);
    size_t param_bytes = (2 * n * n + 4 * n) * sizeof(double);
    printf("  %5zu %12.2f %12.2f %6.2f %6.2f %12.2f %6.2f %8.2f %8.2f %10.2f %10.2f %9.2f %9.2f "
           "%6ld | %10.2f %10.2f %6.2f %6.2f\n",
           n, se.median * 1e6, sh.median * 1e6, se.median / sh.median, s2.median / sh.median,
           sez.median * 1e6, sez.median / sh.median, se.median / sef.median,
           sh.median / shf.median, srd.median * 1e6, swr.median * 1e6,
           (double)counter.peak / 1048576.0, (double)param_bytes / 1048576.0, step_allocs,
           sss.median * 1e6, ssh.median * 1e6, sss.median / ssh.median, ssv.median / ssh.median);
    char variant[64];
    snprintf(variant, sizeof variant, "n%zu_fwd_bwd", n);
    bench_json("W4", variant, se, "s", se.median / sh.median);
    snprintf(variant, sizeof variant, "n%zu_fwd_bwd_zeroing", n);
    bench_json("W4", variant, sez, "s", sez.median / sh.median);
    snprintf(variant, sizeof variant, "n%zu_fwd_bwd_two_ops", n);
    bench_json("W4", variant, s2, "s", s2.median / sh.median);
    snprintf(variant, sizeof variant, "n%zu_fwd", n);
    bench_json("W4", variant, sef, "s", sef.median / shf.median);
    snprintf(variant, sizeof variant, "n%zu_step", n);
    bench_json("W4", variant, sss, "s", sss.median / ssh.median);
    snprintf(variant, sizeof variant, "n%zu_step_unfused", n);
    bench_json("W4", variant, ssv, "s", ssv.median / ssh.median);
    snprintf(variant, sizeof variant, "n%zu_hand_step", n);
    bench_json("W4", variant, ssh, "s", -1);
    snprintf(variant, sizeof variant, "n%zu_hand_fwd_bwd", n);
    bench_json("W4", variant, sh, "s", -1);
    snprintf(variant, sizeof variant, "n%zu_read_W", n);
    bench_json("W4", variant, srd, "s", -1);
    snprintf(variant, sizeof variant, "n%zu_write_dW", n);
    bench_json("W4", variant, swr, "s", -1);
    printf("{\"workload\":\"W4\",\"variant\":\"n%zu_peak_tape_bytes\",\"value\":%zu}\n", n,
           counter.peak);
    ad_tape_free(t);
    ad_tape_free(u);
    free(fW), free(fb), free(fx);
    free(L.W), free(L.dW), free(L.b), free(L.x), free(L.db), free(L.dx), free(L.z), free(L.y);
    free(eW), free(eb), free(ex);
}

int main(int argc, char **argv)
{
    size_t sizes[] = {16, 64, 256, 1024, 4096};
    printf("W4 dense layer y = relu(Wx + b), J = 1/2||y||^2 (replay + sweep vs hand-written C;\n"
           "   right of |: a training step, replay + sweep + SGD on W and b with the update inside\n"
           "   the sweep, vs the hand-written step that updates inside its backward loop; unfus.:\n"
           "   the engine's step with the update after the sweep, over the same hand step)\n");
    printf("  %5s %12s %12s %6s %6s %12s %6s %8s %8s %10s %10s %9s %9s %6s | %10s %10s %6s %6s\n",
           "n", "fwd+bwd us", "hand us", "ratio", "2-op", "+zero us", "ratio", "fb/f", "hand fb/f",
           "read W us", "write dW us", "tape MiB", "param MiB", "allocs", "step us", "hand us",
           "ratio", "unfus.");
    if (argc > 1) {
        run((size_t)strtoul(argv[1], NULL, 10));
        return 0;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        run(sizes[i]);
    return 0;
}
