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
 *   generated   ad_codegen_sparse of the same two ad_sparse objects,
 *               compiled with the system compiler ($CC, else cc) at -O2
 *               into a shared object and loaded (as W7 does): generation
 *               and compile time, source size, and P_sparse per evaluation
 *               beside the others
 * Each variant is timed in a loop of its own (a warm-up, then 7), at a
 * new point each time. Checks (the run fails otherwise): every evaluation
 * against the hand-written values (1e-12 relative; ADOL-C's Hessian
 * 1e-10), the generated values against ad_sparse_eval's at the same point
 * (1e-13); no allocation in a timed evaluation of the engine. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "bench_util.h"

#include "../examples/luksan_vlcek.h"

#include <autodiff/autodiff.h>
#include <autodiff/codegen.h>
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

typedef int (*sparse_fn)(const double *, const double *, double *, double *);
typedef unsigned long (*ws_fn)(void);

static char dir[64];

/* ad_codegen_sparse of sp, cc -O2, dlopen: P_sparse and its work array */
typedef struct built {
    sparse_fn f;
    double *work;
    double gen_s, cc_s;
    long bytes;
} built;

static built build(ad_sparse *sp, ad_tape *t, const char *prefix)
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
    double t0 = bench_now();
    const int st = ad_codegen_sparse(sp, &o, f, NULL);
    b.gen_s = bench_now() - t0;
    fclose(f);
    bench_check(st == AD_OK, ad_tape_errmsg(t));
    void *h = bench_cc_load(path, so, &b.bytes, &b.cc_s);
    void *p = bench_sym(h, prefix, "sparse");
    memcpy(&b.f, &p, sizeof p);
    p = bench_sym(h, prefix, "work_size");
    ws_fn wsz;
    memcpy(&wsz, &p, sizeof p);
    b.work = malloc(wsz() * sizeof *b.work);
    bench_check(b.work != NULL, "work");
    return b; /* the object stays loaded until exit */
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

    /* generated code for the same two objects */
    char nj[32], nh[32]; /* a name per n: dlopen of a path already loaded returns that object */
    snprintf(nj, sizeof nj, "w6j%zu", n);
    snprintf(nh, sizeof nh, "w6h%zu", n);
    const built gj = build(J, t, nj), gh = build(H, t, nh);
    double *ref = malloc(3 * n * sizeof *ref);
    bench_check(ref != NULL, "out of memory");

    enum { EJ, EH, HJ, HH, REPLAY, EJC, GJ, GH, AJ, AH, NT };
    static const char *const names[NT] = {"sparse_jacobian", "sparse_hessian",
                                          "hand_jacobian", "hand_hessian", "replay",
                                          "sparse_jacobian_own_tape", "generated_jacobian",
                                          "generated_hessian", "adolc_jacobian",
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
            case GJ: st = gj.f(xv, NULL, a, gj.work); break;
            case GH: st = gh.f(xv, w, a, gh.work); break;
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
            if (k == GJ || k == GH) { /* the interpreter's values, at the same point */
                bench_check(ad_sparse_eval(k == GJ ? J : H, xv, n, k == GJ ? NULL : w,
                                           k == GJ ? 0 : m + 1, ref) == AD_OK, names[k]);
                const double e = worst(a, ref, k == GJ ? 3 * m : 2 * n - 1);
                if (!(e < 1e-13))
                    fprintf(stderr, "%s: generated and ad_sparse_eval differ by %.3g\n", names[k], e);
                bench_check(e < 1e-13, "generated values = ad_sparse_eval's");
            }
            if (k == EJ || k == EJC || k == AJ || k == GJ) {
                lv_jac(n, xv, b);
                bench_check(worst(a, b, 3 * m) < 1e-12, names[k]);
            } else if (k == EH || k == AH || k == GH) {
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
        "sparse Jacobian (c on its own tape)", "generated Jacobian (ad_codegen_sparse)",
        "generated Hessian (ad_codegen_sparse)", "ADOL-C Jacobian (c on its own tape)",
        "ADOL-C Hessian of the Lagrangian"};
    for (int k = 0; k < nt; k++) {
        const int hand = k == EH || k == AH || k == GH ? HH : k == REPLAY ? -1 : HJ;
        printf("    %-38s %8.3f (%8.3f)", label[k], 1e3 * s[k].median, 1e3 * s[k].min);
        if (hand >= 0 && k != HJ && k != HH)
            printf("  %5.1fx", s[k].median / s[hand].median);
        printf("\n");
    }
    printf("  generated: Jacobian %.2f s to generate (%.1f MB), %.1f s to compile (cc -O2); "
           "Hessian %.2f s (%.1f MB), %.1f s\n",
           gj.gen_s, (double)gj.bytes / 1e6, gj.cc_s, gh.gen_s, (double)gh.bytes / 1e6, gh.cc_s);
    printf("  generated / interpreter (medians): Jacobian %.3fx (of the one-tape eval), %.3fx "
           "(own tape), Hessian %.3fx\n",
           s[GJ].median / s[EJ].median, s[GJ].median / s[EJC].median,
           s[GH].median / s[EH].median);
#ifdef AD_BENCH_ADOLC
    printf("  generated / ADOL-C (medians): Jacobian %.3fx, Hessian %.3fx\n",
           s[GJ].median / s[AJ].median, s[GH].median / s[AH].median);
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
        const double ratio = k == EJ || k == EJC || k == AJ || k == GJ
                                 ? s[k].median / s[HJ].median
                             : k == EH || k == AH || k == GH ? s[k].median / s[HH].median
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
    free(ref), free(gj.work), free(gh.work);
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof dir, "/tmp/w6_XXXXXX");
    bench_check(mkdtemp(dir) != NULL, "mkdtemp");
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            run((size_t)strtoul(argv[i], NULL, 10) < 3 ? 3 : (size_t)strtoul(argv[i], NULL, 10));
    } else {
        run(10000);
        run(100000);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
