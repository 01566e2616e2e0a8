/* W6 sparse -- sparse Jacobian and sparse Hessian of the Lagrangian of
 * Luksan-Vlcek problem 1 (examples/luksan_vlcek.h), what IPOPT asks for at
 * every iteration, at n = 10^4 and 10^5 (argv: other sizes).
 *
 * Reported per n, in one run:
 *   record      recording f and the n - 2 constraints on one tape (once)
 *   pattern     ad_sparse_jacobian_new (the constraints) and
 *               ad_sparse_hessian_new (f and the constraints): pattern +
 *               colouring, median of 3
 *   colours     of each (the optimum for this structure is 3 for both:
 *               a Jacobian row has 3 nonzeros, the Hessian is tridiagonal)
 *   evaluation  ad_sparse_eval at a new point (x passed in): the Jacobian,
 *               and the Hessian of sigma f + sum lambda_i c_i; beside the
 *               hand-written derivatives (the yardstick) and one replay of
 *               the same tape (the floor of anything that replays it);
 *               and, when the bench was built with ADOL-C (libadolc-dev),
 *               ADOL-C on the same problem (w6_adolc.cpp: its patterns,
 *               and the compressed evaluations its sparse drivers repeat)
 * Each variant is timed in a loop of its own (a warm-up, then 7), at a
 * new point each time. Checks (the run fails otherwise): every evaluation
 * against the hand-written values (1e-12 relative; ADOL-C's Hessian
 * 1e-10); no allocation in a timed evaluation of the engine. */
#include "bench_util.h"

#include "../examples/luksan_vlcek.h"

#include <autodiff/autodiff.h>
#include <autodiff/sparse.h>
#ifdef AD_BENCH_ADOLC
#include "w6_adolc.h"
double lv_adolc_now(void) { return bench_now(); }
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double worst(const double *a, const double *b, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++)
        w = fmax(w, fabs(a[i] - b[i]) / fmax(1.0, fabs(b[i])));
    return w;
}

static void run(size_t n)
{
    const size_t m = n - 2;
    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_node *x = malloc(n * sizeof *x), *out = malloc((m + 1) * sizeof *out);
    double *xv = malloc(n * sizeof *xv), *lam = malloc(m * sizeof *lam);
    double *w = malloc((m + 1) * sizeof *w), *a = malloc(3 * n * sizeof *a);
    double *b = malloc(3 * n * sizeof *b), *d = malloc(2 * n * sizeof *d);
    bench_check(x && out && xv && lam && w && a && b && d, "out of memory");
    for (size_t i = 0; i < n; i++)
        xv[i] = lv_x0(i) + 0.01 * (double)(i % 5);
    for (size_t i = 0; i < m; i++)
        lam[i] = w[i + 1] = 0.3 - 0.01 * (double)(i % 11);
    w[0] = 0.8;

    double t0 = bench_now();
    ad_tape *t = ad_tape_new(&opts);
    lv_record(t, n, x, &out[0], out + 1);
    const double t_rec = bench_now() - t0;
    bench_check(ad_tape_status(t) == AD_OK, "recording");

    /* the constraints alone on a tape of their own (what ADOL-C's tag 1
     * holds): a Jacobian sweep then carries no objective nodes */
    ad_tape *tc = ad_tape_new(&opts);
    ad_node *xc = malloc(n * sizeof *xc), *cc = malloc(m * sizeof *cc);
    bench_check(tc && xc && cc, "out of memory");
    lv_record(tc, n, xc, NULL, cc);
    ad_sparse *Jc = NULL;
    bench_check(ad_sparse_jacobian_new(tc, (int)m, cc, (int)n, xc, 0, &Jc) == AD_OK,
                "jacobian pattern, constraints' tape");
    double tj[3], th[3];
    ad_sparse *J = NULL, *H = NULL;
    for (int r = 0; r < 3; r++) {
        ad_sparse_free(J);
        ad_sparse_free(H);
        t0 = bench_now();
        bench_check(ad_sparse_jacobian_new(t, (int)m, out + 1, (int)n, x, 0, &J) == AD_OK,
                    "jacobian pattern");
        tj[r] = bench_now() - t0;
        t0 = bench_now();
        bench_check(ad_sparse_hessian_new(t, (int)m + 1, out, (int)n, x, 0, &H) == AD_OK,
                    "hessian pattern");
        th[r] = bench_now() - t0;
    }
    const bench_stats pj = bench_summarise(tj, 3), ph = bench_summarise(th, 3);
    bench_check(ad_sparse_nnz(J) == 3 * m && ad_sparse_nnz(H) == 2 * n - 1, "nonzero counts");

    enum { EJ, EH, HJ, HH, REPLAY, EJC, AJ, AH, NT };
    static const char *const names[NT] = {"sparse_jacobian", "sparse_hessian",
                                          "hand_jacobian", "hand_hessian", "replay",
                                          "sparse_jacobian_own_tape", "adolc_jacobian",
                                          "adolc_hessian"};
    int nt = AJ; /* without ADOL-C */
#ifdef AD_BENCH_ADOLC
    double apj, aph;
    lv_adolc *ad = lv_adolc_new(n, xv, w[0], lam, &apj, &aph);
    bench_check(lv_adolc_nnz(ad, 0) == 3 * m && lv_adolc_nnz(ad, 1) == 2 * n - 1,
                "ADOL-C's nonzero counts");
    nt = NT;
#endif
    double tm[NT][BENCH_REPS];
    long allocs = 0;
    /* each variant in a loop of its own (a warm-up, then BENCH_REPS), at a
     * new point each time, checked against the hand-written values */
    for (int k = 0; k < nt; k++) {
        for (int r = -1; r < BENCH_REPS; r++) {
            xv[(size_t)(r + 1) % n] += 1e-3;
            if (k == REPLAY)
                for (size_t i = 0; i < n; i++)
                    ad_set_value(t, x[i], &xv[i]);
            const long before = counter.allocs;
            int st = AD_OK;
            t0 = bench_now();
            switch (k) {
            case EJ: st = ad_sparse_eval(J, xv, n, NULL, 0, a); break;
            case EH: st = ad_sparse_eval(H, xv, n, w, m + 1, a); break;
            case HJ: lv_jac(n, xv, a); break;
            case HH: lv_hess(n, xv, w[0], lam, a, d, d + n); break;
            case REPLAY: st = ad_replay(t); break;
            case EJC: st = ad_sparse_eval(Jc, xv, n, NULL, 0, a); break;
#ifdef AD_BENCH_ADOLC
            case AJ: lv_adolc_jac(ad, xv, a); break;
            case AH: lv_adolc_hess(ad, xv, w[0], lam, a); break;
#endif
            default: break;
            }
            const double e = bench_now() - t0;
            bench_check(st == AD_OK, names[k]);
            if (r >= 0) {
                tm[k][r] = e;
                if (k != AJ && k != AH)
                    allocs += counter.allocs - before;
            }
            if (k == EJ || k == EJC || k == AJ) {
                lv_jac(n, xv, b);
                bench_check(worst(a, b, 3 * m) < 1e-12, names[k]);
            } else if (k == EH || k == AH) {
                lv_hess(n, xv, w[0], lam, b, d, d + n);
                bench_check(worst(a, b, 2 * n - 1) < 1e-10, names[k]);
            }
        }
    }
    bench_check(allocs == 0, "no allocation in an evaluation");
    bench_stats s[NT];
    for (int k = 0; k < nt; k++)
        s[k] = bench_summarise(tm[k], BENCH_REPS);

    printf("W6 sparse, Luksan-Vlcek 1, n = %zu (%zu constraints), tape of %zu nodes recorded "
           "in %.1f ms\n",
           n, m, ad_tape_len(t), 1e3 * t_rec);
    printf("  pattern + colouring: Jacobian %.1f ms (%zu nonzeros, %zu colours), Hessian of "
           "the Lagrangian %.1f ms (%zu nonzeros, %zu colours; optimum 3 and 3)\n",
           1e3 * pj.median, ad_sparse_nnz(J), ad_sparse_colors(J), 1e3 * ph.median,
           ad_sparse_nnz(H), ad_sparse_colors(H));
    printf("  per evaluation, ms, median (min) of %d; ratio of medians to the hand-written:\n",
           BENCH_REPS);
    static const char *const label[NT] = {
        "sparse Jacobian (one tape: f and c)", "sparse Hessian of the Lagrangian",
        "hand-written Jacobian", "hand-written Hessian", "one replay of the tape (floor)",
        "sparse Jacobian (c on its own tape)", "ADOL-C Jacobian (c on its own tape)",
        "ADOL-C Hessian of the Lagrangian"};
    for (int k = 0; k < nt; k++) {
        const int hand = k == EH || k == AH ? HH : k == REPLAY ? -1 : HJ;
        printf("    %-38s %8.3f (%8.3f)", label[k], 1e3 * s[k].median, 1e3 * s[k].min);
        if (hand >= 0 && k != HJ && k != HH)
            printf("  %5.1fx", s[k].median / s[hand].median);
        printf("\n");
    }
#ifdef AD_BENCH_ADOLC
    printf("  ADOL-C 2.7: patterns jac_pat %.1f ms, hess_pat %.1f ms; evaluations fov_forward "
           "and hess_mat on the 3-colour seed (what its sparse drivers repeat); the engine / "
           "ADOL-C: Jacobian %.2fx, Hessian %.2fx (medians)\n",
           1e3 * apj, 1e3 * aph, s[EJC].median / s[AJ].median, s[EH].median / s[AH].median);
    lv_adolc_free(ad);
#else
    printf("  (ADOL-C not built in: apt-get install libadolc-dev for its figures)\n");
#endif
    printf("  allocations in %d timed evaluations: %ld\n", 2 * BENCH_REPS, allocs);
    char variant[64];
    for (int k = 0; k < nt; k++) {
        snprintf(variant, sizeof variant, "n%zu_%s", n, names[k]);
        const double ratio = k == EJ || k == EJC || k == AJ ? s[k].median / s[HJ].median
                             : k == EH || k == AH           ? s[k].median / s[HH].median
                                                            : -1.0;
        bench_json("w6_sparse", variant, s[k], "s", ratio);
    }
    snprintf(variant, sizeof variant, "n%zu_pattern_jacobian", n);
    bench_json("w6_sparse", variant, pj, "s", -1.0);
    snprintf(variant, sizeof variant, "n%zu_pattern_hessian", n);
    bench_json("w6_sparse", variant, ph, "s", -1.0);
    ad_sparse_free(J);
    ad_sparse_free(H);
    ad_sparse_free(Jc);
    ad_tape_free(t);
    ad_tape_free(tc);
    free(xc), free(cc);
    free(x), free(out), free(xv), free(lam), free(w), free(a), free(b), free(d);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            run((size_t)strtoul(argv[i], NULL, 10) < 3 ? 3 : (size_t)strtoul(argv[i], NULL, 10));
        return 0;
    }
    run(10000);
    run(100000);
    return 0;
}
