/* W4 Jacobian -- the dense Jacobian of W4's layer with respect to its input.
 *
 *   y = relu(W x + b),  J = dy/dx = diag(relu'(z)) W,  z = W x + b
 *
 * W (m x n) and b (m) are ad_param leaves with gradient buffers, as in
 * bench/w4_dense.c, x (n) an ad_variable; the layer is recorded as the
 * engine records it (ad_affine, ad_relu). Two shapes, n = 256 (argv[1]
 * overrides): square, m = n; and wide, m = 4n (more outputs than inputs).
 * Reported for each: ad_jacobian with AD_JAC_FORWARD, AD_JAC_REVERSE and
 * AD_JAC_AUTO; and the yardstick: one ad_replay then ad_backward_seed with
 * unit seeds, row by row, each row's gradient of x copied out -- timed
 * after n sweeps ("n reverse sweeps") and after all m (the reverse-mode
 * Jacobian done by hand). Forward, auto and the yardstick are timed in
 * each repetition, one after the other; reverse (1 direction instead of
 * 32: switching lays the storage out again) in a loop of its own before
 * them. Checks (the run fails
 * otherwise): every Jacobian, the yardstick's included, against the
 * analytic one to a relative 1e-12; no allocation in any timed call after
 * each mode's first. */
#include "bench_util.h"

#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x853c49e6748fea9bULL;
static double uniform(double lo, double hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (double)(rng >> 11) / 9007199254740992.0;
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

enum { FWD, REV, AUTO, SWEEPS_N, SWEEPS_M, NT };
static const char *const names[NT] = {"forward", "reverse", "auto", "n_sweeps", "m_sweeps"};

static void run(size_t n, size_t m, const char *shape)
{
    double *W = malloc(m * n * sizeof *W), *dW = malloc(m * n * sizeof *dW);
    double *b = malloc(m * sizeof *b), *db = malloc(m * sizeof *db), *x = malloc(n * sizeof *x);
    double *Jref = malloc(m * n * sizeof *Jref), *J = malloc(m * n * sizeof *J);
    double *seed = calloc(m, sizeof *seed);
    bench_check(W && dW && b && db && x && Jref && J && seed, "out of memory");
    double r = sqrt(6.0 / (double)n);
    for (size_t i = 0; i < m * n; i++)
        W[i] = uniform(-r, r);
    for (size_t i = 0; i < m; i++)
        b[i] = uniform(-0.1, 0.1);
    for (size_t i = 0; i < n; i++)
        x[i] = uniform(-1, 1);
    memset(dW, 0, m * n * sizeof *dW);
    memset(db, 0, m * sizeof *db);
    size_t active = 0;
    for (size_t i = 0; i < m; i++) { /* J = diag(relu'(z)) W; relu'(0) = 0 */
        double z = b[i];
        for (size_t j = 0; j < n; j++)
            z += W[i * n + j] * x[j];
        active += z > 0;
        for (size_t j = 0; j < n; j++)
            Jref[i * n + j] = z > 0 ? W[i * n + j] : 0.0;
    }

    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_tape *t = ad_tape_new(&opts);
    bench_check(t != NULL, "tape");
    ad_node Wn = ad_param(t, ad_shape_mat((uint32_t)m, (uint32_t)n), W, dW);
    ad_node bn = ad_param(t, ad_shape_vec((uint32_t)m), b, db);
    ad_node xn = ad_variable(t, ad_shape_vec((uint32_t)n), x);
    ad_node y = ad_relu(t, ad_affine(t, Wn, xn, bn));
    bench_check(ad_tape_status(t) == AD_OK, ad_tape_errmsg(t));
    const size_t tape_bytes = ad_tape_memory(t);

    /* enough work per timing at small n */
    const double work = (double)m * (double)n * (double)n;
    const int inner = work >= 1.6e7 ? 1 : (int)(1.6e7 / work) + 1;
    double tm[NT][BENCH_REPS];
    double err[NT];
    /* the first call of each mode lays out its storage (forward: 32
     * directions; reverse: 1) */
    int st = ad_jacobian(t, y, 1, &xn, J, AD_JAC_FORWARD);
    bench_check(st == AD_OK, ad_tape_errmsg(t));
    const size_t modes_bytes = ad_tape_memory(t) - tape_bytes;
    st = ad_jacobian(t, y, 1, &xn, J, AD_JAC_REVERSE);
    bench_check(st == AD_OK, ad_tape_errmsg(t));
    long allocs = 0, a0 = counter.allocs;
    /* reverse on its own: switching between 1 and 32 directions lays the
     * storage out again, which a caller repeating one mode does not pay */
    for (int rep = -1; rep < BENCH_REPS; rep++) {
        double t0 = bench_now();
        for (int i = 0; i < inner; i++)
            st |= ad_jacobian(t, y, 1, &xn, J, AD_JAC_REVERSE);
        double t1 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        if (rep >= 0)
            tm[REV][rep] = (t1 - t0) / inner;
    }
    err[REV] = rel_err(J, Jref, m * n);
    allocs += counter.allocs - a0;
    st = ad_jacobian(t, y, 1, &xn, J, AD_JAC_FORWARD); /* back to 32 directions */
    bench_check(st == AD_OK, ad_tape_errmsg(t));
    /* forward, auto and the yardstick in each repetition: one replay, then
     * a unit-seeded reverse sweep per row (ad_backward_seed uses the tape's
     * own adjoints, not the tangent storage) */
    a0 = counter.allocs;
    for (int rep = -1; rep < BENCH_REPS; rep++) {
        double c[4];
        for (int k = 0; k < 2; k++) {
            const unsigned mode = k == 0 ? AD_JAC_FORWARD : AD_JAC_AUTO;
            double t0 = bench_now();
            for (int i = 0; i < inner; i++)
                st |= ad_jacobian(t, y, 1, &xn, J, mode);
            c[k] = (bench_now() - t0) / inner;
            bench_check(st == AD_OK, ad_tape_errmsg(t));
            err[k == 0 ? FWD : AUTO] = rel_err(J, Jref, m * n);
        }
        double t0 = bench_now(), tn = t0;
        for (int i = 0; i < inner; i++) {
            st |= ad_replay(t);
            for (size_t row = 0; row < m; row++) {
                seed[row] = 1.0;
                st |= ad_backward_seed(t, y, seed);
                seed[row] = 0.0;
                memcpy(J + row * n, ad_grad(t, xn), n * sizeof *J);
                if (row + 1 == n && i == 0)
                    tn = bench_now();
            }
        }
        double t1 = bench_now();
        bench_check(st == AD_OK, ad_tape_errmsg(t));
        c[2] = (t1 - t0) / inner;
        /* with inner > 1, the passes' mean scaled to n rows */
        c[3] = inner == 1 ? tn - t0 : (t1 - t0) / inner * (double)n / (double)m;
        if (rep >= 0) {
            tm[FWD][rep] = c[0];
            tm[AUTO][rep] = c[1];
            tm[SWEEPS_M][rep] = c[2];
            tm[SWEEPS_N][rep] = c[3];
        }
    }
    allocs += counter.allocs - a0;
    err[SWEEPS_N] = err[SWEEPS_M] = rel_err(J, Jref, m * n);
    bench_check(allocs == 0, "W4 Jacobian: a call after the first allocated");
    for (int k = 0; k < NT; k++)
        bench_check(err[k] <= 1e-12, "W4 Jacobian: differs from the analytic diag(relu'(z)) W");

    bench_stats s[NT];
    double raw[NT][BENCH_REPS];
    for (int k = 0; k < NT; k++) {
        memcpy(raw[k], tm[k], sizeof raw[k]);
        s[k] = bench_summarise(tm[k], BENCH_REPS);
    }
    const int square = m == n;
    const double ratio = s[FWD].median / s[SWEEPS_N].median;
    printf("  %-6s W %zu x %zu, x %zu: Jacobian %zu x %zu (%zu active rows); tangent storage "
           "%.1f MB (tape %.1f MB)\n",
           shape, m, n, n, m, n, active, modes_bytes / 1e6, tape_bytes / 1e6);
    printf("    %-36s %10.3f ms\n", "ad_jacobian AD_JAC_FORWARD", s[FWD].median * 1e3);
    printf("    %-36s %10.3f ms\n", "ad_jacobian AD_JAC_REVERSE", s[REV].median * 1e3);
    printf("    %-36s %10.3f ms\n", "ad_jacobian AD_JAC_AUTO", s[AUTO].median * 1e3);
    printf("    %-36s %10.3f ms  (%.2f us per sweep)\n", "n reverse sweeps (replay + n seeds)",
           s[SWEEPS_N].median * 1e3, s[SWEEPS_N].median * 1e6 / (double)n);
    if (!square)
        printf("    %-36s %10.3f ms  (%.2f us per sweep)\n", "m reverse sweeps (replay + m seeds)",
               s[SWEEPS_M].median * 1e3, s[SWEEPS_M].median * 1e6 / (double)m);
    printf("    forward / (n reverse sweeps) = %.2f (target %s: %s)", ratio,
           square ? "<= 1.2" : "< 1", (square ? ratio <= 1.2 : ratio < 1.0) ? "met" : "NOT met");
    if (!square)
        printf("; forward / (m reverse sweeps) = %.2f", s[FWD].median / s[SWEEPS_M].median);
    printf("\n    reverse / (m reverse sweeps) = %.2f; auto / forward = %.2f\n",
           s[REV].median / s[SWEEPS_M].median, s[AUTO].median / s[FWD].median);
    printf("    checks (relative, limit 1e-12): forward %.1e, reverse %.1e, auto %.1e, sweeps "
           "%.1e; allocations after the first call: %ld\n",
           err[FWD], err[REV], err[AUTO], err[SWEEPS_M], allocs);

    char variant[64];
    for (int k = 0; k < NT; k++) {
        if (k == SWEEPS_M && square)
            continue;
        snprintf(variant, sizeof variant, "%s_n%zu_m%zu_%s", shape, n, m, names[k]);
        bench_json("W4-jacobian", variant, s[k], "s", -1);
    }
    /* ratios: the median is the ratio of the medians; min and max those of
     * the per-repetition ratios (forward and the sweeps are timed in
     * separate loops of the same run, repetition r against repetition r) */
    const int den[2] = {SWEEPS_N, SWEEPS_M};
    for (int j = 0; j < (square ? 1 : 2); j++) {
        double q[BENCH_REPS];
        for (int i = 0; i < BENCH_REPS; i++)
            q[i] = raw[FWD][i] / raw[den[j]][i];
        bench_stats sq = bench_summarise(q, BENCH_REPS);
        sq.median = s[FWD].median / s[den[j]].median;
        snprintf(variant, sizeof variant, "%s_n%zu_m%zu_forward_over_%s", shape, n, m,
                 names[den[j]]);
        bench_json("W4-jacobian", variant, sq, "x", -1);
    }
    printf("{\"workload\":\"W4-jacobian\",\"variant\":\"%s_n%zu_m%zu_allocs_after_first\","
           "\"value\":%ld}\n",
           shape, n, m, allocs);
    ad_tape_free(t);
    free(W), free(dW), free(b), free(db), free(x), free(Jref), free(J), free(seed);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 256;
    bench_check(n >= 1, "n must be at least 1");
    printf("W4 Jacobian of y = relu(W x + b) with respect to x (ad_jacobian vs reverse sweeps)\n");
    run(n, n, "square");
    run(n, 4 * n, "wide");
    return 0;
}
