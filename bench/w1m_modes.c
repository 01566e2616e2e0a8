/* W1-modes -- forward mode and second order on W1, see WORKLOADS.md.
 *
 * W1's function and point (extended Rosenbrock with scalar ops, x_i =
 * cos(0.001 i), n = 100 000, argv[1] overrides), the direction v_i =
 * sin(0.5 i). One recording; per evaluation the n leaves are set one call
 * at a time (ad_set_value, and ad_set_tangent where tangents are used),
 * then:
 *   t_replay  set values + ad_replay                  (yardstick of t_jvp)
 *   t_jvp     set values and tangents + ad_forward    -> f, grad f . v
 *   t_grad    set values + ad_replay + ad_backward    (yardstick of t_hvp)
 *   t_hvp     set values and tangents + ad_forward + ad_backward_tangent
 *             -> H v and the gradient
 * and each again without the per-leaf calls (replay, forward, replay +
 * backward, forward + backward_tangent), since those calls are in both
 * sides of each ratio. The eight are timed in the same repetition, one
 * after the other; medians of BENCH_REPS after a warm-up. For comparison,
 * the drivers ad_jvp and ad_hvp (values set per leaf, the direction
 * passed in one call), timed after them in a loop of their own.
 * Then the dense Hessian, which is tridiagonal: 3 colours (directions
 * e_c = sum of e_i over i = c mod 3, c = 0, 1, 2) in one vector-mode pass
 * with K = 3, and its three diagonals read back.
 * Checks (the run fails otherwise): f, grad f . v against the analytic
 * gradient dotted with v, H v against the analytic Hessian times v, the
 * gradient of the HVP pass, and the three recovered diagonals, each to a
 * relative 1e-12; no allocation in any timed evaluation. */
#include "bench_util.h"

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

/* The analytic gradient. */
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

/* The analytic Hessian, tridiagonal: diagonal d[0..n), off-diagonal
 * e[i] = H[i][i+1] = H[i+1][i], i < n-1. Term i contributes
 * d2/dx_i^2 = 1200 x_i^2 - 400 x_{i+1} + 2, d2/dx_i dx_{i+1} = -400 x_i,
 * d2/dx_{i+1}^2 = 200. */
static void hess_hand(const double *x, double *d, double *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        d[i] += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
        d[i + 1] += 200;
        e[i] = -400 * x[i];
    }
}

static void hv_hand(const double *d, const double *e, const double *v, double *hv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double s = d[i] * v[i];
        if (i + 1 < n)
            s += e[i] * v[i + 1];
        if (i > 0)
            s += e[i - 1] * v[i - 1];
        hv[i] = s;
    }
}

/* Records f on t (as bench/w1_rosenbrock.c does); leaves in xs[]. */
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

/* max |a - ref| / max |ref| */
static double rel_err(const double *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - ref[i]));
        den = fmax(den, fabs(ref[i]));
    }
    return den > 0 ? num / den : num;
}

static void set_values(ad_tape *t, const ad_node *xs, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ad_set_value(t, xs[i], &x[i]);
}

static void set_values_tangents(ad_tape *t, const ad_node *xs, const double *x, const double *v,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ad_set_value(t, xs[i], &x[i]);
        ad_set_tangent(t, xs[i], &v[i]);
    }
}

/* A ratio's JSON line: the median is the ratio of the two medians; min and
 * max are those of the per-repetition ratios (both timed in the same
 * repetition). */
static void json_ratio(const char *variant, const double *num, const double *den,
                       bench_stats snum, bench_stats sden)
{
    double r[BENCH_REPS];
    for (int i = 0; i < BENCH_REPS; i++)
        r[i] = num[i] / den[i];
    bench_stats s = bench_summarise(r, BENCH_REPS);
    s.median = snum.median / sden.median;
    bench_json("W1-modes", variant, s, "x", -1);
}

enum { SETREP, REP, JVP, FWD, GRAD, SWEEP, HVP, HVPSW, NTIMES };

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 100000;
    bench_check(n >= 4, "n must be at least 4");
    double *x = malloc(n * sizeof *x), *v = malloc(n * sizeof *v), *g = malloc(n * sizeof *g);
    double *gref = malloc(n * sizeof *gref), *d = malloc(n * sizeof *d), *e = malloc(n * sizeof *e);
    double *hv = malloc(n * sizeof *hv), *hvref = malloc(n * sizeof *hvref);
    double *rd = malloc(n * sizeof *rd), *re = malloc(n * sizeof *re), *rl = malloc(n * sizeof *rl);
    double *seed3 = malloc(3 * n * sizeof *seed3);
    double *jvd = malloc(n * sizeof *jvd), *hvd = malloc(n * sizeof *hvd);
    double *gd = malloc(n * sizeof *gd);
    const double **vp = malloc(n * sizeof *vp);
    double **hvp = malloc(n * sizeof *hvp), **gp = malloc(n * sizeof *gp);
    ad_node *xs = malloc(n * sizeof *xs);
    bench_check(x && v && g && gref && d && e && hv && hvref && rd && re && rl && seed3 && xs,
                "out of memory");
    bench_check(jvd && hvd && gd && vp && hvp && gp, "out of memory");
    for (size_t i = 0; i < n; i++) {
        x[i] = cos(0.001 * (double)i);
        v[i] = sin(0.5 * (double)i);
        vp[i] = &v[i], hvp[i] = &hvd[i], gp[i] = &gd[i];
    }
    grad_hand(x, gref, n);
    hess_hand(x, d, e, n);
    hv_hand(d, e, v, hvref, n);
    const double fref = f_plain(x, n);
    double gv = 0, gv_abs = 0; /* grad f . v, and sum |g_i v_i| (conditioning) */
    for (size_t i = 0; i < n; i++) {
        gv += gref[i] * v[i];
        gv_abs += fabs(gref[i] * v[i]);
    }

    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_tape *t = ad_tape_new(&opts);
    bench_check(t != NULL, "tape");
    ad_node out = record(t, x, xs, n);
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    const size_t nops = ad_tape_len(t) - 1;
    const size_t tape_bytes = ad_tape_memory(t);
    bench_check(ad_tangents(t, 1) == AD_OK, ad_tape_errmsg(t));
    const size_t modes1_bytes = ad_tape_memory(t) - tape_bytes;

    /* ---- K = 1: the eight timings, interleaved ---- */
    double tm[NTIMES][BENCH_REPS];
    double fjvp = 0, tjvp = 0;
    long allocs0 = counter.allocs;
    for (int r = -1; r < BENCH_REPS; r++) {
        double c[2 * NTIMES];
        int st = AD_OK;
        c[0] = bench_now();
        set_values(t, xs, x, n);
        st |= ad_replay(t);
        c[1] = bench_now();
        c[2] = bench_now();
        st |= ad_replay(t);
        c[3] = bench_now();

        c[4] = bench_now();
        set_values_tangents(t, xs, x, v, n);
        st |= ad_forward(t);
        c[5] = bench_now();
        fjvp = ad_scalar_value(t, out);
        tjvp = ad_tangent(t, out)[0];
        c[6] = bench_now();
        st |= ad_forward(t);
        c[7] = bench_now();
        bench_check(ad_tangent(t, out)[0] == tjvp, "W1-modes: two forward sweeps differ");

        c[8] = bench_now();
        set_values(t, xs, x, n);
        st |= ad_replay(t);
        st |= ad_backward(t, out);
        c[9] = bench_now();
        c[10] = bench_now();
        st |= ad_replay(t);
        st |= ad_backward(t, out);
        c[11] = bench_now();

        c[12] = bench_now();
        set_values_tangents(t, xs, x, v, n);
        st |= ad_forward(t);
        st |= ad_backward_tangent(t, out, NULL);
        c[13] = bench_now();
        c[14] = bench_now();
        st |= ad_forward(t);
        st |= ad_backward_tangent(t, out, NULL);
        c[15] = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (r >= 0)
            for (int k = 0; k < NTIMES; k++)
                tm[k][r] = c[2 * k + 1] - c[2 * k];
    }
    long allocs1 = counter.allocs - allocs0;
    bench_check(allocs1 == 0, "W1-modes: an evaluation allocated (K = 1)");

    /* checks of the K = 1 results */
    for (size_t i = 0; i < n; i++) {
        hv[i] = ad_grad_tangent(t, xs[i])[0];
        g[i] = ad_grad(t, xs[i])[0];
    }
    const double err_f = fabs(fjvp - fref) / fabs(fref);
    const double err_jvp = fabs(tjvp - gv) / fabs(gv);
    const double err_hv = rel_err(hv, hvref, n);
    const double err_g = rel_err(g, gref, n);
    bench_check(err_f <= 1e-12, "W1-modes: f of the forward sweep differs from the plain f");
    bench_check(err_jvp <= 1e-12, "W1-modes: grad f . v differs from the analytic one");
    bench_check(err_hv <= 1e-12, "W1-modes: H v differs from the analytic Hessian times v");
    bench_check(err_g <= 1e-12, "W1-modes: the HVP pass's gradient differs from the analytic one");

    /* The drivers, for comparison: ad_jvp and ad_hvp take the n leaves and
     * the direction in one call each (values still set per leaf). Timed in
     * their own loop, after the figures above: a call that takes more than
     * a second (the drivers' cost grows faster than n) is timed once. */
    double tjd[BENCH_REPS], thd[BENCH_REPS];
    int dreps = BENCH_REPS;
    allocs0 = counter.allocs;
    for (int r = -1; r < dreps; r++) {
        int st = AD_OK;
        double t0 = bench_now();
        set_values(t, xs, x, n);
        st |= ad_jvp(t, out, (int)n, xs, vp, jvd);
        double t1 = bench_now();
        set_values(t, xs, x, n);
        st |= ad_hvp(t, out, (int)n, xs, vp, hvp, gp);
        double t2 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (r < 0 && t2 - t0 > 1.0) {
            dreps = 1;
            r = 0;
        }
        if (r >= 0) {
            tjd[r] = t1 - t0;
            thd[r] = t2 - t1;
        }
    }
    long allocsd = counter.allocs - allocs0;
    bench_check(allocsd == 0, "W1-modes: a driver call allocated");
    bench_check(jvd[0] == tjvp, "W1-modes: ad_jvp differs from ad_forward");
    bench_check(rel_err(hvd, hvref, n) <= 1e-12 && rel_err(gd, gref, n) <= 1e-12,
                "W1-modes: ad_hvp differs from the analytic H v or gradient");

    /* ---- the dense Hessian: 3 colours, one pass with K = 3 ---- */
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            seed3[3 * i + (size_t)c] = (int)(i % 3) == c;
    bench_check(ad_tangents(t, 3) == AD_OK, ad_tape_errmsg(t));
    const size_t modes3_bytes = ad_tape_memory(t) - tape_bytes;
    double th[BENCH_REPS], ths[BENCH_REPS];
    allocs0 = counter.allocs;
    for (int r = -1; r < BENCH_REPS; r++) {
        int st = AD_OK;
        double t0 = bench_now();
        for (size_t i = 0; i < n; i++) {
            ad_set_value(t, xs[i], &x[i]);
            ad_set_tangent(t, xs[i], &seed3[3 * i]);
        }
        double t1 = bench_now();
        st |= ad_forward(t);
        st |= ad_backward_tangent(t, out, NULL);
        double t2 = bench_now();
        /* column c of H e_c holds H[i][j] for the j = c mod 3 next to i */
        for (size_t i = 0; i < n; i++) {
            const double *h = ad_grad_tangent(t, xs[i]);
            rd[i] = h[i % 3];
            if (i + 1 < n)
                re[i] = h[(i + 1) % 3];  /* H[i][i+1] */
            if (i > 0)
                rl[i - 1] = h[(i - 1) % 3]; /* H[i][i-1] */
        }
        double t3 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (r >= 0) {
            th[r] = t3 - t0;
            ths[r] = t2 - t1;
        }
    }
    long allocs3 = counter.allocs - allocs0;
    bench_check(allocs3 == 0, "W1-modes: an evaluation allocated (K = 3)");
    const double err_d = rel_err(rd, d, n);
    const double err_e = rel_err(re, e, n - 1), err_l = rel_err(rl, e, n - 1);
    bench_check(err_d <= 1e-12, "W1-modes: the Hessian's diagonal differs from the analytic one");
    bench_check(err_e <= 1e-12 && err_l <= 1e-12,
                "W1-modes: the Hessian's off-diagonals differ from the analytic ones");

    /* ---- report ---- */
    bench_stats s[NTIMES];
    double raw[NTIMES][BENCH_REPS];
    for (int k = 0; k < NTIMES; k++) {
        for (int r = 0; r < BENCH_REPS; r++)
            raw[k][r] = tm[k][r];
        s[k] = bench_summarise(tm[k], BENCH_REPS); /* sorts tm[k] */
    }
    bench_stats sh = bench_summarise(th, BENCH_REPS), shs = bench_summarise(ths, BENCH_REPS);
    bench_stats sjd = bench_summarise(tjd, dreps), shd = bench_summarise(thd, dreps);
    const double per = 1e9 / (double)nops;
    printf("W1-modes extended Rosenbrock, n = %zu, %zu recorded ops; v_i = sin(0.5 i)\n", n, nops);
    printf("  tape %.1f MB; tangent storage K = 1: %.1f MB, K = 3: %.1f MB\n", tape_bytes / 1e6,
           modes1_bytes / 1e6, modes3_bytes / 1e6);
    printf("  %-40s %9s %8s\n", "", "ms", "ns/op");
#define ROW(label, k) \
    printf("  %-40s %9.3f %8.2f\n", label, s[k].median * 1e3, s[k].median * per)
    ROW("t_replay: set values + replay", SETREP);
    ROW("  replay alone", REP);
    ROW("t_jvp: set values, tangents + forward", JVP);
    ROW("  forward sweep alone", FWD);
    ROW("t_grad: set values + replay + backward", GRAD);
    ROW("  replay + backward alone", SWEEP);
    ROW("t_hvp: set values, tangents + fwd + bwd_tan", HVP);
    ROW("  forward + backward_tangent alone", HVPSW);
    printf("  %-40s %9.3f %8.2f%s\n", "driver: set values + ad_jvp", sjd.median * 1e3,
           sjd.median * per, dreps == 1 ? "  (one call)" : "");
    printf("  %-40s %9.3f %8.2f%s\n", "driver: set values + ad_hvp", shd.median * 1e3,
           shd.median * per, dreps == 1 ? "  (one call)" : "");
#undef ROW
    const double rep_sweep = s[SWEEP].median; /* replay + backward, no leaves set */
    printf("  t_jvp / t_replay = %.2f (target <= 2: %s); sweeps alone: forward / replay = %.2f\n",
           s[JVP].median / s[SETREP].median, s[JVP].median / s[SETREP].median <= 2 ? "met" : "NOT met",
           s[FWD].median / s[REP].median);
    printf("  t_hvp / t_grad = %.2f (target <= 2.5: %s); sweeps alone: (forward + "
           "backward_tangent) / (replay + backward) = %.2f\n",
           s[HVP].median / s[GRAD].median, s[HVP].median / s[GRAD].median <= 2.5 ? "met" : "NOT met",
           s[HVPSW].median / rep_sweep);
    printf("  drivers: (set values + ad_jvp) / t_replay = %.2f; (set values + ad_hvp) / t_grad = "
           "%.2f\n",
           sjd.median / s[SETREP].median, shd.median / s[GRAD].median);
    printf("  dense Hessian (tridiagonal): 3 colours, 1 forward + 1 reverse sweep with K = 3:\n");
    printf("    %.3f ms in all (%.2f x t_grad, %.2f x t_hvp); sweeps alone %.3f ms (%.2f x "
           "replay + backward)\n",
           sh.median * 1e3, sh.median / s[GRAD].median, sh.median / s[HVP].median,
           shs.median * 1e3, shs.median / rep_sweep);
    printf("  checks (relative, limit 1e-12): f %.1e, grad.v %.1e (sum |g_i v_i| / |grad.v| = "
           "%.1f), H v %.1e, gradient %.1e, diagonals %.1e %.1e %.1e\n",
           err_f, err_jvp, gv_abs / fabs(gv), err_hv, err_g, err_d, err_e, err_l);
    printf("  allocations in the timed evaluations: %ld (K = 1), %ld (drivers), %ld (K = 3)\n",
           allocs1, allocsd, allocs3);

    bench_json("W1-modes", "set_replay", s[SETREP], "s", -1);
    bench_json("W1-modes", "replay", s[REP], "s", -1);
    bench_json("W1-modes", "jvp", s[JVP], "s", -1);
    bench_json("W1-modes", "forward_sweep", s[FWD], "s", -1);
    bench_json("W1-modes", "grad", s[GRAD], "s", -1);
    bench_json("W1-modes", "replay_backward", s[SWEEP], "s", -1);
    bench_json("W1-modes", "hvp", s[HVP], "s", -1);
    bench_json("W1-modes", "hvp_sweeps", s[HVPSW], "s", -1);
    bench_json("W1-modes", "driver_ad_jvp", sjd, "s", -1);
    bench_json("W1-modes", "driver_ad_hvp", shd, "s", -1);
    bench_json("W1-modes", "hessian_3colours", sh, "s", -1);
    bench_json("W1-modes", "hessian_3colours_sweeps", shs, "s", -1);
    json_ratio("jvp_over_replay", raw[JVP], raw[SETREP], s[JVP], s[SETREP]);
    json_ratio("forward_over_replay_sweeps", raw[FWD], raw[REP], s[FWD], s[REP]);
    json_ratio("hvp_over_grad", raw[HVP], raw[GRAD], s[HVP], s[GRAD]);
    json_ratio("hvp_over_grad_sweeps", raw[HVPSW], raw[SWEEP], s[HVPSW], s[SWEEP]);
    bench_stats hg = {sh.median / s[GRAD].median, sh.min / s[GRAD].median,
                      sh.max / s[GRAD].median};
    bench_json("W1-modes", "hessian_over_grad", hg, "x", -1);
    printf("{\"workload\":\"W1-modes\",\"variant\":\"hessian_colours\",\"value\":3}\n");
    printf("{\"workload\":\"W1-modes\",\"variant\":\"allocs_per_eval\",\"value\":%ld}\n",
           allocs1 + allocsd + allocs3);

    ad_tape_free(t);
    free(x), free(v), free(g), free(gref), free(d), free(e), free(hv), free(hvref);
    free(rd), free(re), free(rl), free(seed3), free(xs);
    free(jvd), free(hvd), free(gd), free(vp), free(hvp), free(gp);
    return 0;
}
