/* ipopt_luksan.c -- Luksan and Vlcek's problem 5.1 (IPOPT's scalable
 * LukVlE1, examples/luksan_vlcek.h) solved by IPOPT with the engine's
 * exact derivatives: the gradient by a reverse sweep, the constraints'
 * sparse Jacobian (3 colours) and the sparse Hessian of the Lagrangian
 * (tridiagonal, 3 colours) by ad_sparse_eval.
 *
 * Usage: ipopt_luksan [n] [--check] [-v]   (n >= 3, default 1000)
 *   --check  also compares the engine's Jacobian and Hessian with the
 *            hand-written ones at x0 and at the solution
 *   -v       IPOPT's iteration log
 * Prints the pattern and colouring times, the solve time, f* and the
 * iteration count; exits non-zero when the solve or a check fails. */
#include "ipopt_glue.h"
#include "luksan_vlcek.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The engine's derivatives at x against the hand-written ones. */
static double check(ad_nlp *p, const double *x, const double *lambda)
{
    const size_t n = (size_t)p->n, m = (size_t)p->m;
    double *a = malloc(3 * n * sizeof *a), *b = malloc(3 * n * sizeof *b);
    double *d = malloc(2 * n * sizeof *d), *w = malloc((m + 1) * sizeof *w);
    double worst = INFINITY;
    if (!a || !b || !d || !w)
        goto out;
    worst = 0;
    ad_sparse_eval(p->jac, x, n, NULL, 0, a);
    lv_jac(n, x, b);
    for (size_t k = 0; k < ad_sparse_nnz(p->jac); k++)
        worst = fmax(worst, fabs(a[k] - b[k]) / fmax(1.0, fabs(b[k])));
    w[0] = 0.7;
    memcpy(w + 1, lambda, m * sizeof *w);
    ad_sparse_eval(p->hess, x, n, w, m + 1, a);
    lv_hess(n, x, 0.7, lambda, b, d, d + n);
    for (size_t k = 0; k < ad_sparse_nnz(p->hess); k++)
        worst = fmax(worst, fabs(a[k] - b[k]) / fmax(1.0, fabs(b[k])));
out:
    free(a), free(b), free(d), free(w);
    return worst;
}

int main(int argc, char **argv)
{
    long nl = 1000;
    bool verbose = false, checking = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else if (strcmp(argv[i], "--check") == 0)
            checking = true;
        else
            nl = strtol(argv[i], NULL, 10);
    }
    if (nl < 3 || nl > 100000000) {
        fprintf(stderr, "usage: ipopt_luksan [n >= 3] [--check] [-v]\n");
        return 2;
    }
    const size_t n = (size_t)nl, m = n - 2;
    ad_nlp p;
    memset(&p, 0, sizeof p);
    p.n = (int)n, p.m = (int)m;
    p.x = malloc(n * sizeof *p.x);
    p.out = malloc((m + 1) * sizeof *p.out);
    double *x = malloc(n * sizeof *x), *xl = malloc(n * sizeof *xl), *xu = malloc(n * sizeof *xu);
    double *gl = calloc(m, sizeof *gl), *gu = calloc(m, sizeof *gu), *lam = malloc(m * sizeof *lam);
    if (!p.x || !p.out || !x || !xl || !xu || !gl || !gu || !lam)
        return 1;
    double t0 = now();
    p.t = ad_tape_new(NULL);
    lv_record(p.t, n, p.x, &p.out[0], p.out + 1);
    const double t_rec = now() - t0;
    t0 = now();
    if (ad_nlp_init(&p) != 0)
        return 1;
    const double t_pat = now() - t0;
    printf("Luksan-Vlcek 1, n = %zu: recorded %zu nodes in %.3f s; patterns and colourings in "
           "%.3f s\n",
           n, ad_tape_len(p.t), t_rec, t_pat);
    printf("  Jacobian: %zu nonzeros, %zu colours; Hessian of the Lagrangian: %zu nonzeros "
           "(lower), %zu colours\n",
           ad_sparse_nnz(p.jac), ad_sparse_colors(p.jac), ad_sparse_nnz(p.hess),
           ad_sparse_colors(p.hess));
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        x[i] = lv_x0(i), xl[i] = -2e19, xu[i] = 2e19;
    for (size_t i = 0; i < m; i++)
        lam[i] = 0.1 + 0.01 * (double)(i % 7);
    if (checking) {
        const double e = check(&p, x, lam);
        printf("  check at x0: worst relative difference from the hand-written derivatives "
               "%.1e\n",
               e);
        bad |= !(e < 1e-12);
    }
    IpoptProblem nlp = CreateIpoptProblem((Index)n, xl, xu, (Index)m, gl, gu,
                                          (Index)ad_sparse_nnz(p.jac),
                                          (Index)ad_sparse_nnz(p.hess), 0, ad_nlp_f, ad_nlp_g,
                                          ad_nlp_grad_f, ad_nlp_jac_g, ad_nlp_h);
    if (!nlp)
        return 1;
    AddIpoptNumOption(nlp, "tol", 1e-8);
    AddIpoptIntOption(nlp, "print_level", verbose ? 5 : 0);
    AddIpoptStrOption(nlp, "sb", "yes");
    SetIntermediateCallback(nlp, ad_nlp_iter);
    double obj = 0;
    t0 = now();
    const enum ApplicationReturnStatus st =
        IpoptSolve(nlp, x, NULL, &obj, lam, NULL, NULL, &p);
    const double t_solve = now() - t0;
    FreeIpoptProblem(nlp);
    printf("  IPOPT: status %d, f* = %.10g in %d iterations, %.2f s\n", (int)st, obj,
           p.iterations, t_solve);
    bad |= st != Solve_Succeeded;
    if (checking) {
        const double e = check(&p, x, lam);
        printf("  check at x*: worst relative difference %.1e\n", e);
        bad |= !(e < 1e-12);
    }
    ad_nlp_free(&p);
    ad_tape_free(p.t);
    free(p.x), free(p.out), free(x), free(xl), free(xu), free(gl), free(gu), free(lam);
    return bad;
}
