/* W1 -- a long chain of scalar ops (tape overhead), see WORKLOADS.md.
 *
 * Extended Rosenbrock with scalar ops only, every op on the tape:
 *   x_i = cos(0.001 i),  f = sum_{i<n-1} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2
 * Reports t_f (plain double), record+sweep and replay+sweep, omega = t/t_f,
 * ns and bytes per recorded op. Checks the gradient against the analytic
 * one (normwise relative error <= 1e-12). Times the minimal interpreter of
 * min_tape.h the same two ways, as a yardstick: what a bare interpreter costs. */
#include "bench_util.h"
#include "min_tape.h"

#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static double f_plain(const double *x, size_t n)
{
    double f = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i], b = 1 - x[i];
        f += 100 * a * a + b * b;
    }
    return f;
}

/* Hand-written gradient, the reference. */
static void grad_hand(const double *x, double *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i];
        g[i] += -400 * x[i] * a - 2 * (1 - x[i]);
        g[i + 1] += 200 * a;
    }
}

/* Records f on t; leaves in xs[]. Returns the output node. */
static ad_node record(ad_tape *t, const double *x, ad_node *xs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xs[i] = ad_scalar_var(t, x[i]);
    ad_node one = ad_scalar(t, 1.0);
    ad_node f = ad_scalar(t, 0.0);
    for (size_t i = 0; i + 1 < n; i++) {
        ad_node a = ad_sub(t, xs[i + 1], ad_square(t, xs[i]));
        ad_node b = ad_sub(t, one, xs[i]);
        f = ad_add(t, f, ad_add(t, ad_scale(t, ad_square(t, a), 100.0), ad_square(t, b)));
    }
    return f;
}

/* The same recording on the minimal interpreter (min_tape.h); leaves are
 * nodes 1..n. Returns the output node. */
static uint32_t record_min(min_tape *t, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mt_leaf(t, x[i]);
    uint32_t one = mt_leaf(t, 1.0);
    uint32_t f = mt_leaf(t, 0.0);
    for (uint32_t i = 1; i < n; i++) {
        uint32_t a = mt_sub(t, i + 1, mt_square(t, i));
        uint32_t b = mt_sub(t, one, i);
        f = mt_add(t, f, mt_add(t, mt_scale(t, mt_square(t, a)), mt_square(t, b)));
    }
    return f;
}

static double max_rel_err(const double *g, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(g[i] - ref[i]));
        den = fmax(den, fabs(ref[i]));
    }
    return num / den;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 100000;
    double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref), *g = malloc(n * sizeof *g);
    ad_node *xs = malloc(n * sizeof *xs);
    bench_check(x && ref && g && xs, "out of memory");
    for (size_t i = 0; i < n; i++)
        x[i] = cos(0.001 * (double)i);
    grad_hand(x, ref, n);

    double tf[BENCH_REPS], th[BENCH_REPS], tr[BENCH_REPS], tp[BENCH_REPS];
    volatile double sink = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        sink += f_plain(x, n);
        double t1 = bench_now();
        grad_hand(x, g, n);
        double t2 = bench_now();
        if (r >= 0) {
            tf[r] = t1 - t0;
            th[r] = t2 - t1;
        }
    }
    (void)sink;

    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_tape *t = ad_tape_new(&opts);
    bench_check(t != NULL, "tape");
    ad_node out = {0, 0};
    size_t nops = 0, bytes = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        ad_tape_reset(t);
        double t0 = bench_now();
        out = record(t, x, xs, n);
        int st = ad_backward(t, out);
        double t1 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (r >= 0)
            tr[r] = t1 - t0;
        nops = ad_tape_len(t) - 1;
        bytes = ad_tape_memory(t);
    }
    for (size_t i = 0; i < n; i++)
        g[i] = ad_grad(t, xs[i])[0];
    double err_rec = max_rel_err(g, ref, n);
    bench_check(fabs(ad_scalar_value(t, out) - f_plain(x, n)) <= 1e-12 * fabs(f_plain(x, n)),
                "W1 record: f differs from the plain evaluation");
    bench_check(err_rec <= 1e-12, "W1 record: gradient differs from the analytic gradient");

    /* Replay at a new point x' = x + 0.01, then sweep. */
    double *x2 = malloc(n * sizeof *x2);
    bench_check(x2 != NULL, "out of memory");
    for (size_t i = 0; i < n; i++)
        x2[i] = x[i] + 0.01;
    long allocs_before = counter.allocs;
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        for (size_t i = 0; i < n; i++)
            ad_set_value(t, xs[i], &x2[i]);
        ad_replay(t);
        int st = ad_backward(t, out);
        double t1 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (r >= 0)
            tp[r] = t1 - t0;
    }
    long replay_allocs = counter.allocs - allocs_before;
    grad_hand(x2, ref, n);
    for (size_t i = 0; i < n; i++)
        g[i] = ad_grad(t, xs[i])[0];
    double err_rep = max_rel_err(g, ref, n);
    bench_check(err_rep <= 1e-12, "W1 replay: gradient differs from the analytic gradient");
    bench_check(fabs(ad_scalar_value(t, out) - f_plain(x2, n)) <= 1e-12 * fabs(f_plain(x2, n)),
                "W1 replay: f differs from the plain evaluation");

    /* The yardstick: the minimal interpreter, timed the same two ways. */
    double mr[BENCH_REPS], mp[BENCH_REPS];
    min_tape mt;
    bench_check(mt_init(&mt, nops + 1, 100.0), "out of memory");
    uint32_t mout = 0;
    for (int r = -1; r < BENCH_REPS; r++) {
        mt_reset(&mt);
        double t0 = bench_now();
        mout = record_min(&mt, x, n);
        mt_sweep(&mt, mout);
        double t1 = bench_now();
        if (r >= 0)
            mr[r] = t1 - t0;
    }
    bench_check(mt.len - 1 == nops, "W1 minimal interpreter: a different number of ops");
    for (size_t i = 0; i < n; i++)
        g[i] = mt.n[1 + i].g;
    grad_hand(x, ref, n);
    bench_check(max_rel_err(g, ref, n) <= 1e-12, "W1 minimal interpreter: gradient differs");
    for (int r = -1; r < BENCH_REPS; r++) {
        double t0 = bench_now();
        for (size_t i = 0; i < n; i++)
            mt.n[1 + i].v = x2[i];
        mt_replay(&mt);
        mt_sweep(&mt, mout);
        double t1 = bench_now();
        if (r >= 0)
            mp[r] = t1 - t0;
    }
    for (size_t i = 0; i < n; i++)
        g[i] = mt.n[1 + i].g;
    grad_hand(x2, ref, n);
    bench_check(max_rel_err(g, ref, n) <= 1e-12, "W1 minimal interpreter: replay gradient differs");
    mt_free(&mt);

    bench_stats sf = bench_summarise(tf, BENCH_REPS), sh = bench_summarise(th, BENCH_REPS);
    bench_stats sr = bench_summarise(tr, BENCH_REPS), sp = bench_summarise(tp, BENCH_REPS);
    bench_stats smr = bench_summarise(mr, BENCH_REPS), smp = bench_summarise(mp, BENCH_REPS);
    double per = 1e9 / (double)nops;
    printf("W1 extended Rosenbrock, n = %zu, %zu recorded ops (%.2f per term)\n", n, nops,
           (double)nops / (double)(n - 1));
    printf("  %-22s %10.3f ms\n", "t_f (plain double)", sf.median * 1e3);
    printf("  %-22s %10.3f ms  (%.2f x t_f)\n", "hand-written gradient", sh.median * 1e3,
           sh.median / sf.median);
    printf("  %-22s %10.3f ms  omega = %.1f  %.2f ns/op\n", "record + sweep", sr.median * 1e3,
           sr.median / sf.median, sr.median * per);
    printf("  %-22s %10.3f ms  omega = %.1f  %.2f ns/op  (%ld allocations)\n", "replay + sweep",
           sp.median * 1e3, sp.median / sf.median, sp.median * per, replay_allocs);
    printf("  %-22s %10.1f bytes/op  (%zu bytes held)\n", "tape memory", (double)bytes / (double)nops,
           bytes);
    printf("  minimal interpreter (min_tape.h: flat array, no checks, no API), a yardstick:\n");
    printf("  %-22s %10.3f ms  %.2f ns/op  (engine / minimal %.2f)\n", "  record + sweep",
           smr.median * 1e3, smr.median * per, sr.median / smr.median);
    printf("  %-22s %10.3f ms  %.2f ns/op  (engine / minimal %.2f)\n", "  replay + sweep",
           smp.median * 1e3, smp.median * per, sp.median / smp.median);
    printf("  gradient check: record %.2e, replay %.2e (normwise relative, limit 1e-12)\n", err_rec,
           err_rep);

    bench_stats ns_rec = {sr.median * per, sr.min * per, sr.max * per};
    bench_stats ns_rep = {sp.median * per, sp.min * per, sp.max * per};
    bench_stats bpo = {(double)bytes / (double)nops, (double)bytes / (double)nops,
                       (double)bytes / (double)nops};
    bench_json("W1", "plain_f", sf, "s", -1);
    bench_json("W1", "hand_gradient", sh, "s", -1);
    bench_json("W1", "record_sweep", sr, "s", sr.median / sh.median);
    bench_json("W1", "replay_sweep", sp, "s", sp.median / sh.median);
    bench_json("W1", "record_sweep_ns_per_op", ns_rec, "ns", -1);
    bench_json("W1", "replay_sweep_ns_per_op", ns_rep, "ns", -1);
    bench_json("W1", "bytes_per_op", bpo, "B", -1);
    bench_stats ns_mr = {smr.median * per, smr.min * per, smr.max * per};
    bench_stats ns_mp = {smp.median * per, smp.min * per, smp.max * per};
    bench_json("W1", "minimal_record_sweep_ns_per_op", ns_mr, "ns", -1);
    bench_json("W1", "minimal_replay_sweep_ns_per_op", ns_mp, "ns", -1);
    bench_stats om = {sr.median / sf.median, sr.min / sf.median, sr.max / sf.median};
    bench_stats omr = {sp.median / sf.median, sp.min / sf.median, sp.max / sf.median};
    bench_json("W1", "omega_record", om, "x", -1);
    bench_json("W1", "omega_replay", omr, "x", -1);
    ad_tape_free(t);
    free(x), free(x2), free(ref), free(g), free(xs);
    return 0;
}
