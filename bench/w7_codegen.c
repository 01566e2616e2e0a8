/* W7 -- generated code (ad_codegen) beside the tape and hand-written C
 * (docs/performance.md, "W7"; docs/codegen.md).
 *
 * Each workload is recorded once, written out as C by ad_codegen,
 * compiled here with the system compiler ($CC, else cc) at -O2 into a
 * shared object and loaded; then, in one run, each as ns per evaluation
 * (the median of BENCH_REPS repetitions after a warm-up):
 *   hand-written     the gradient in plain C (the reference), called
 *                    through a function pointer as the generated code is
 *   generated        P_gradient: value and gradient, no tape
 *   replay + sweep   the tape: ad_set_value, ad_replay, ad_backward, the
 *                    gradient read out
 * Workloads:
 *   W0   the seed neuron J = (relu(W.x + b) - 5)^2 / 2, inputs W, x, b,
 *        over NPOSE random points
 *   arm  W5's planar arm, f(q) = |p(q) - t|^2, recorded two ways (the
 *        scalar recording and examples/robot_arm.c's slices)
 *   W1   extended Rosenbrock, n scalar inputs (argv[1], default 12500:
 *        10^5 nodes; 100000 gives W1's 900k nodes, rerolled into loops
 *        like the rest: under a second to compile): generation time,
 *        source size, compile time and speed; again with a different
 *        constant in each term (no two blocks alike)
 *   chain an irregular tape (argv[2] steps, default 50000: about 10^5
 *        nodes) with no repetition: generation, compile time, speed
 *        beside replay + sweep
 * Every generated gradient is checked against the hand-written one at
 * every point (1e-12 normwise relative), outside the timing; the run
 * exits non-zero on a mismatch. Targets (issue 16): generated >= 5x
 * faster than replay + sweep, <= 1.5x hand-written, on W0 and the arm;
 * a 10^5-node tape compiles with gcc -O2 in < 60 s. */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <autodiff/autodiff.h>
#include <autodiff/codegen.h>

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPOSE 1024
#define EVALS 200000

typedef int (*grad_fn)(const double *const *, double *, double *const *, double *);
typedef unsigned long (*ws_fn)(void);

typedef struct built {
    void *so;
    grad_fn grad;
    double *work;
    double gen_s, cc_s;
    long bytes;
} built;

static char dir[64];

/* ad_codegen (what: forward and gradient), cc -O2, dlopen. */
static built build(ad_tape *t, ad_node out, int n, const ad_node *in, const char *prefix)
{
    built b;
    memset(&b, 0, sizeof b);
    char path[256], so[256];
    snprintf(path, sizeof path, "%s/%s.c", dir, prefix);
    snprintf(so, sizeof so, "%s/%s.so", dir, prefix);
    FILE *f = fopen(path, "w");
    bench_check(f != NULL, path);
    ad_codegen_opts o;
    memset(&o, 0, sizeof o);
    o.prefix = prefix;
    o.what = AD_CODEGEN_FORWARD | AD_CODEGEN_VJP;
    double t0 = bench_now();
    const int st = ad_codegen(t, out, n, in, &o, f, NULL);
    b.gen_s = bench_now() - t0;
    fclose(f);
    bench_check(st == AD_OK, ad_tape_errmsg(t));
    b.so = bench_cc_load(path, so, &b.bytes, &b.cc_s);
    void *g = bench_sym(b.so, prefix, "gradient");
    memcpy(&b.grad, &g, sizeof g);
    void *w = bench_sym(b.so, prefix, "work_size");
    ws_fn wsz;
    memcpy(&wsz, &w, sizeof w);
    b.work = malloc(wsz() * sizeof *b.work);
    bench_check(b.work != NULL, "work");
    return b;
}

static double gdiff(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 0 ? den : 1.0);
}

static void report(const char *w, const char *variant, double *t, double per, double hand)
{
    bench_stats s = bench_summarise(t, BENCH_REPS);
    s.median *= 1e9 / per, s.min *= 1e9 / per, s.max *= 1e9 / per;
    printf("  %-26s %10.1f ns", variant, s.median);
    if (hand > 0)
        printf("   %5.2fx hand-written", s.median / hand);
    printf("\n");
    bench_json(w, variant, s, "ns", hand > 0 ? s.median / hand : -1);
}

static double med_ns(double *t, double per)
{
    double c[BENCH_REPS];
    memcpy(c, t, sizeof c);
    return bench_summarise(c, BENCH_REPS).median * 1e9 / per;
}

/* ================= W0: the seed neuron ================= */

static double neuron_hand(const double *W, const double *x, double b, double *dW, double *dx,
                          double *db)
{
    const double z = W[0] * x[0] + W[1] * x[1] + W[2] * x[2] + b;
    const double yh = z > 0 ? z : 0, e = yh - 5;
    const double dz = z > 0 ? e : 0;
    for (int i = 0; i < 3; i++)
        dW[i] = dz * x[i], dx[i] = dz * W[i];
    *db = dz;
    return 0.5 * e * e;
}

/* The hand-written gradients are called through these, as the generated
 * ones are called through a pointer: neither is inlined into the loop. */
static double (*volatile neuron_ref)(const double *, const double *, double, double *, double *,
                                     double *) = neuron_hand;

static void w0(void)
{
    static double P[NPOSE][7];
    uint64_t s = 12345;
    for (int p = 0; p < NPOSE; p++)
        for (int i = 0; i < 7; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            P[p][i] = 4.0 * ((double)(s >> 11) / 9007199254740992.0) - 1.5;
        }
    ad_tape *t = ad_tape_new(NULL);
    ad_node W = ad_variable(t, ad_shape_vec(3), P[0]), x = ad_variable(t, ad_shape_vec(3), P[0] + 3);
    ad_node b = ad_scalar_var(t, P[0][6]);
    ad_node z = ad_add(t, ad_dot(t, W, x), b);
    ad_node J = ad_scale(t, ad_square(t, ad_add_const(t, ad_relu(t, z), -5.0)), 0.5);
    const ad_node in[3] = {W, x, b};
    built g = build(t, J, 3, in, "w7_neuron");
    double dW[3], dx[3], db, hW[3], hx[3], hdb, y, all[7], ref[7];
    double *grads[3] = {dW, dx, &db};
    for (int p = 0; p < NPOSE; p++) { /* check */
        const double *ins[3] = {P[p], P[p] + 3, P[p] + 6};
        g.grad(ins, &y, grads, g.work);
        neuron_hand(P[p], P[p] + 3, P[p][6], hW, hx, &hdb);
        memcpy(all, dW, sizeof dW), memcpy(all + 3, dx, sizeof dx), all[6] = db;
        memcpy(ref, hW, sizeof hW), memcpy(ref + 3, hx, sizeof hx), ref[6] = hdb;
        bench_check(gdiff(all, ref, 7) <= 1e-12, "W0: generated gradient differs from hand");
    }
    double th[BENCH_REPS], tg[BENCH_REPS], tt[BENCH_REPS];
    volatile double sink = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        for (int e = 0; e < EVALS; e++) {
            const double *q = P[e % NPOSE];
            sink += neuron_ref(q, q + 3, q[6], hW, hx, &hdb) + hW[0];
        }
        double t1 = bench_now();
        for (int e = 0; e < EVALS; e++) {
            const double *q = P[e % NPOSE];
            const double *ins[3] = {q, q + 3, q + 6};
            g.grad(ins, &y, grads, g.work);
            sink += y + dW[0];
        }
        double t2 = bench_now();
        for (int e = 0; e < EVALS; e++) {
            const double *q = P[e % NPOSE];
            ad_set_value(t, W, q);
            ad_set_value(t, x, q + 3);
            ad_set_value(t, b, q + 6);
            ad_replay(t);
            ad_backward(t, J);
            memcpy(dW, ad_grad(t, W), sizeof dW);
            memcpy(dx, ad_grad(t, x), sizeof dx);
            db = ad_grad(t, b)[0];
            sink += ad_scalar_value(t, J) + dW[0];
        }
        double t3 = bench_now();
        if (r >= 0)
            th[r] = t1 - t0, tg[r] = t2 - t1, tt[r] = t3 - t2;
    }
    (void)sink;
    const double hand = med_ns(th, EVALS);
    printf("W7 W0 neuron (value and gradient in W, x, b; %d points)\n", NPOSE);
    report("W7", "neuron_hand", th, EVALS, -1);
    report("W7", "neuron_generated", tg, EVALS, hand);
    report("W7", "neuron_replay_sweep", tt, EVALS, hand);
    printf("  replay + sweep / generated: %.1fx (target >= 5x); generated / hand: %.2fx "
           "(target <= 1.5x)\n",
           med_ns(tt, EVALS) / med_ns(tg, EVALS), med_ns(tg, EVALS) / hand);
    dlclose(g.so);
    free(g.work);
    ad_tape_free(t);
}

/* ================= the arm (W5) ================= */

#define NJ 3
static const double len[NJ] = {1.0, 0.8, 0.5};
static const double target[2] = {1.2, 0.9};

static double arm_hand(const double *q, double *g)
{
    double th = 0, px = 0, py = 0, c[NJ], s[NJ];
    for (int i = 0; i < NJ; i++) {
        th += q[i];
        c[i] = cos(th);
        s[i] = sin(th);
        px += len[i] * c[i];
        py += len[i] * s[i];
    }
    const double rx = px - target[0], ry = py - target[1];
    double acc = 0;
    for (int i = NJ - 1; i >= 0; i--) {
        acc += 2.0 * len[i] * (ry * c[i] - rx * s[i]);
        g[i] = acc;
    }
    return rx * rx + ry * ry;
}

static double (*volatile arm_ref)(const double *, double *) = arm_hand;

static ad_node arm_slices(ad_tape *t, const double *q, ad_node *qn)
{
    qn[0] = ad_variable(t, ad_shape_vec(NJ), q);
    ad_node th[NJ];
    th[0] = ad_at(t, qn[0], 0);
    for (int i = 1; i < NJ; i++)
        th[i] = ad_add(t, th[i - 1], ad_at(t, qn[0], (uint32_t)i));
    ad_node theta = ad_stack(t, NJ, th);
    ad_node l = ad_constant(t, ad_shape_vec(NJ), len);
    ad_node xy[2] = {ad_dot(t, l, ad_cos(t, theta)), ad_dot(t, l, ad_sin(t, theta))};
    ad_node r = ad_sub(t, ad_stack(t, 2, xy), ad_constant(t, ad_shape_vec(2), target));
    return ad_dot(t, r, r);
}

static ad_node arm_scalar(ad_tape *t, const double *q, ad_node *qs)
{
    ad_node th = ad_nil(), px = ad_nil(), py = ad_nil();
    for (int i = 0; i < NJ; i++) {
        qs[i] = ad_scalar_var(t, q[i]);
        th = i == 0 ? qs[0] : ad_add(t, th, qs[i]);
        ad_node cx = ad_scale(t, ad_cos(t, th), len[i]), cy = ad_scale(t, ad_sin(t, th), len[i]);
        px = i == 0 ? cx : ad_add(t, px, cx);
        py = i == 0 ? cy : ad_add(t, py, cy);
    }
    ad_node rx = ad_add_const(t, px, -target[0]), ry = ad_add_const(t, py, -target[1]);
    return ad_add(t, ad_square(t, rx), ad_square(t, ry));
}

static void arm(int scalar)
{
    static double Q[NPOSE][NJ];
    uint64_t s = 777;
    for (int p = 0; p < NPOSE; p++)
        for (int i = 0; i < NJ; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            Q[p][i] = (2.0 * ((double)(s >> 11) / 9007199254740992.0) - 1.0) * 3.14159265358979;
        }
    ad_tape *t = ad_tape_new(NULL);
    ad_node qn[NJ];
    ad_node f = scalar ? arm_scalar(t, Q[0], qn) : arm_slices(t, Q[0], qn);
    const int nin = scalar ? NJ : 1;
    built g = build(t, f, nin, qn, scalar ? "w7_arm_scalar" : "w7_arm_slices");
    double gq[NJ], hq[NJ], y;
    double *grads[NJ] = {gq, gq + 1, gq + 2};
    for (int p = 0; p < NPOSE; p++) {
        const double *ins[NJ] = {Q[p], Q[p] + 1, Q[p] + 2};
        g.grad(ins, &y, grads, g.work);
        arm_hand(Q[p], hq);
        bench_check(gdiff(gq, hq, NJ) <= 1e-12, "arm: generated gradient differs from hand");
    }
    double th[BENCH_REPS], tg[BENCH_REPS], tt[BENCH_REPS];
    volatile double sink = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        for (int e = 0; e < EVALS; e++)
            sink += arm_ref(Q[e % NPOSE], hq) + hq[0];
        double t1 = bench_now();
        for (int e = 0; e < EVALS; e++) {
            const double *q = Q[e % NPOSE];
            const double *ins[NJ] = {q, q + 1, q + 2};
            g.grad(ins, &y, grads, g.work);
            sink += y + gq[0];
        }
        double t2 = bench_now();
        for (int e = 0; e < EVALS; e++) {
            const double *q = Q[e % NPOSE];
            if (scalar)
                for (int i = 0; i < NJ; i++)
                    ad_set_value(t, qn[i], q + i);
            else
                ad_set_value(t, qn[0], q);
            ad_replay(t);
            ad_backward(t, f);
            for (int i = 0; i < NJ; i++)
                gq[i] = scalar ? ad_grad(t, qn[i])[0] : ad_grad(t, qn[0])[i];
            sink += ad_scalar_value(t, f) + gq[0];
        }
        double t3 = bench_now();
        if (r >= 0)
            th[r] = t1 - t0, tg[r] = t2 - t1, tt[r] = t3 - t2;
    }
    (void)sink;
    const double hand = med_ns(th, EVALS);
    const char *name = scalar ? "scalar" : "slices";
    char v[64];
    printf("W7 arm, %s recording (value and gradient, %d poses)\n", name, NPOSE);
    snprintf(v, sizeof v, "arm_%s_hand", name);
    report("W7", v, th, EVALS, -1);
    snprintf(v, sizeof v, "arm_%s_generated", name);
    report("W7", v, tg, EVALS, hand);
    snprintf(v, sizeof v, "arm_%s_replay_sweep", name);
    report("W7", v, tt, EVALS, hand);
    printf("  replay + sweep / generated: %.1fx (target >= 5x); generated / hand: %.2fx "
           "(target <= 1.5x)\n",
           med_ns(tt, EVALS) / med_ns(tg, EVALS), med_ns(tg, EVALS) / hand);
    dlclose(g.so);
    free(g.work);
    ad_tape_free(t);
}

/* ================= W1: extended Rosenbrock ================= */

/* vary: the constant of term i is 100 + 0.001 i (no two terms alike) */
static int vary;

static void rosen_hand(const double *x, double *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const double a = x[i + 1] - x[i] * x[i], k = vary ? 100.0 + 0.001 * (double)i : 100.0;
        g[i] += -4 * k * x[i] * a - 2 * (1 - x[i]);
        g[i + 1] += 2 * k * a;
    }
}

static void (*volatile rosen_ref)(const double *, double *, size_t) = rosen_hand;

static void w1(size_t n)
{
    double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref), *gr = malloc(n * sizeof *gr);
    ad_node *xs = malloc(n * sizeof *xs);
    const double **ins = malloc(n * sizeof *ins);
    double **grads = malloc(n * sizeof *grads);
    bench_check(x && ref && gr && xs && ins && grads, "out of memory");
    for (size_t i = 0; i < n; i++)
        x[i] = cos(0.001 * (double)i), ins[i] = x + i, grads[i] = gr + i;
    rosen_hand(x, ref, n);
    ad_tape *t = ad_tape_new(NULL);
    for (size_t i = 0; i < n; i++)
        xs[i] = ad_scalar_var(t, x[i]);
    ad_node one = ad_scalar(t, 1.0), f = ad_scalar(t, 0.0);
    for (size_t i = 0; i + 1 < n; i++) {
        ad_node a = ad_sub(t, xs[i + 1], ad_square(t, xs[i]));
        ad_node b = ad_sub(t, one, xs[i]);
        const double k = vary ? 100.0 + 0.001 * (double)i : 100.0;
        f = ad_add(t, f, ad_add(t, ad_scale(t, ad_square(t, a), k), ad_square(t, b)));
    }
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    built g = build(t, f, (int)n, xs, vary ? "w7_w1v" : "w7_w1");
    double y;
    g.grad(ins, &y, grads, g.work);
    bench_check(gdiff(gr, ref, n) <= 1e-12, "W1: generated gradient differs from hand");
    double th[BENCH_REPS], tg[BENCH_REPS], tt[BENCH_REPS];
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        rosen_ref(x, ref, n);
        double t1 = bench_now();
        g.grad(ins, &y, grads, g.work);
        double t2 = bench_now();
        ad_replay(t);
        ad_backward(t, f);
        for (size_t i = 0; i < n; i++)
            gr[i] = ad_grad(t, xs[i])[0];
        double t3 = bench_now();
        if (r >= 0)
            th[r] = t1 - t0, tg[r] = t2 - t1, tt[r] = t3 - t2;
    }
    const size_t nodes = ad_tape_len(t);
    const double hand = med_ns(th, (double)nodes);
    printf("W7 W1 extended Rosenbrock%s, n = %zu (%zu nodes), ns per node\n",
           vary ? " with a different constant per term" : "", n, nodes);
    printf("  generation %.3f s, source %.1f MB, compile (cc -O2) %.1f s\n", g.gen_s,
           (double)g.bytes / 1e6, g.cc_s);
    report("W7", vary ? "w1v_hand" : "w1_hand", th, (double)nodes, -1);
    report("W7", vary ? "w1v_generated" : "w1_generated", tg, (double)nodes, hand);
    report("W7", vary ? "w1v_replay_sweep" : "w1_replay_sweep", tt, (double)nodes, hand);
    printf("{\"workload\":\"W7\",\"variant\":\"%s\",\"nodes\":%zu,\"generate_s\":%.4f,"
           "\"source_bytes\":%ld,\"compile_s\":%.2f}\n",
           vary ? "w1v_build" : "w1_build", nodes, g.gen_s, g.bytes, g.cc_s);
    dlclose(g.so);
    free(g.work);
    ad_tape_free(t);
    free(x), free(ref), free(gr), free(xs), free(ins), free(grads);
}

/* ================= an irregular chain ================= */

/* A tape with no repetition at all: each step reads two of the last 12
 * nodes, with one of 8 ops and its own constant (pseudo-random), 100
 * scalar inputs; the output sums every 50th step. Deep and narrow: no run,
 * few twins per level -- the table form of docs/codegen.md. No
 * hand-written code: the generated gradient is checked against the
 * tape's. */
static void chain(size_t steps)
{
    enum { NIN = 100 };
    ad_tape *t = ad_tape_new(NULL);
    ad_node xs[NIN], ring[12];
    double x[NIN], gr[NIN];
    const double *ins[NIN];
    double *grads[NIN];
    for (int i = 0; i < NIN; i++) {
        x[i] = 0.5 * cos(0.37 * i), ins[i] = x + i, grads[i] = gr + i;
        xs[i] = ad_scalar_var(t, x[i]);
    }
    for (int i = 0; i < 12; i++)
        ring[i] = xs[i];
    uint64_t s = 99;
    ad_node f = ad_scalar(t, 0.0);
    for (size_t i = 0; i < steps; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const unsigned r = (unsigned)(s >> 33);
        ad_node a = ring[r % 12], b = ring[(r >> 4) % 12];
        const double c = 0.5 + 0.001 * (double)((r >> 8) % 500);
        ad_node y;
        switch ((r >> 20) % 8) {
        case 0: y = ad_add(t, a, ad_scale(t, b, c)); break;
        case 1: y = ad_mul(t, ad_tanh(t, a), b); break;
        case 2: y = ad_sin(t, ad_scale(t, a, c)); break;
        case 3: y = ad_add_const(t, ad_scale(t, b, c), -0.25); break;
        case 4: y = ad_sub(t, a, xs[(r >> 12) % NIN]); break;
        case 5: y = ad_div(t, a, ad_add_const(t, ad_square(t, b), 1.0)); break;
        case 6: y = ad_tanh(t, ad_add(t, a, b)); break;
        default: y = ad_exp(t, ad_scale(t, ad_tanh(t, a), c)); break;
        }
        ring[(r >> 24) % 12] = y;
        if (i % 50 == 49)
            f = ad_add(t, f, y);
    }
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    built g = build(t, f, NIN, xs, "w7_chain");
    double y;
    ad_replay(t);
    ad_backward(t, f);
    g.grad(ins, &y, grads, g.work);
    double ref[NIN];
    for (int i = 0; i < NIN; i++)
        ref[i] = ad_grad(t, xs[i])[0];
    bench_check(gdiff(gr, ref, NIN) <= 1e-12, "chain: generated gradient differs from the tape's");
    double tg[BENCH_REPS], tt[BENCH_REPS];
    for (int r = -1; r < BENCH_REPS; r++) {
        double t1 = bench_now();
        g.grad(ins, &y, grads, g.work);
        double t2 = bench_now();
        for (int i = 0; i < NIN; i++)
            ad_set_value(t, xs[i], x + i);
        ad_replay(t);
        ad_backward(t, f);
        for (int i = 0; i < NIN; i++)
            gr[i] = ad_grad(t, xs[i])[0];
        double t3 = bench_now();
        if (r >= 0)
            tg[r] = t2 - t1, tt[r] = t3 - t2;
    }
    const size_t nodes = ad_tape_len(t);
    printf("W7 irregular chain, %zu steps (%zu nodes), ns per node\n", steps, nodes);
    printf("  generation %.3f s, source %.1f MB, compile (cc -O2) %.1f s\n", g.gen_s,
           (double)g.bytes / 1e6, g.cc_s);
    report("W7", "chain_generated", tg, (double)nodes, -1);
    report("W7", "chain_replay_sweep", tt, (double)nodes, -1);
    printf("  replay + sweep / generated: %.2fx\n", med_ns(tt, 1) / med_ns(tg, 1));
    printf("{\"workload\":\"W7\",\"variant\":\"chain_build\",\"nodes\":%zu,\"generate_s\":%.4f,"
           "\"source_bytes\":%ld,\"compile_s\":%.2f}\n",
           nodes, g.gen_s, g.bytes, g.cc_s);
    dlclose(g.so);
    free(g.work);
    ad_tape_free(t);
}

int main(int argc, char **argv)
{
    const size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 12500;
    snprintf(dir, sizeof dir, "/tmp/w7_XXXXXX");
    bench_check(mkdtemp(dir) != NULL, "mkdtemp");
    w0();
    arm(1);
    arm(0);
    w1(n);
    vary = 1;
    w1(n);
    chain(argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 50000);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
