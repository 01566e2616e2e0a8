/* newton.c -- Newton's method with exact second derivatives from the tape,
 * never a Hessian matrix: minimise the extended Rosenbrock function (W1)
 *   f(x) = sum_{i=0}^{n-2} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2
 * from x_i = cos(0.001 i), n = 1000 (argv[1] overrides). The minimum is
 * x_i = 1 for all i, where f = 0.
 *
 * f is recorded ONCE with scalar ops; every iteration sets the leaves and
 *  - replays the tape and sweeps it backward for f and the gradient g;
 *  - solves H p = -g by conjugate gradients, each product H d an exact
 *    Hessian-vector product from ad_hvp (a forward sweep and a reverse
 *    sweep carrying tangents: about 2-3 gradients). Truncated Newton: CG
 *    stops when the residual |r| <= eta |g|, eta = min(0.5, sqrt(|g|))
 *    (2-norms), or on negative curvature (d^T H d <= 0: the step so far is
 *    kept; if that happens at the first CG step, the direction is steepest
 *    descent, -g), or after n steps;
 *  - backtracks (Armijo) from the full Newton step on f (replays only).
 * Stops when |g|_inf < 1e-10 or after 200 iterations. Each line: iteration,
 * f and |g|_inf at its start, the CG steps (Hessian-vector products), why CG
 * stopped, and the step length taken. Every buffer is set up before the
 * first iteration; the tape allocates nothing after its first ad_hvp
 * (counted here through its allocator). */
#include <autodiff/autodiff.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_ITER 200
#define GTOL 1e-10
#define XTOL 1e-8
#define ARMIJO_C1 1e-4

/* realloc/free, counting the calls that obtain or resize memory. */
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    ++*(long *)ud;
    return realloc(ptr, nsize);
}

/* Records f on t with scalar ops, as bench/w1_rosenbrock.c does; the
 * leaves go into xs[]. Returns the output node (nil if recording failed). */
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

/* Sets every leaf to x[] and replays: f at x. Returns the status. */
static int eval_f(ad_tape *t, const ad_node *xs, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int st = ad_set_value(t, xs[i], &x[i]);
        if (st != AD_OK)
            return st;
    }
    return ad_replay(t);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static double norm_inf(const double *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

int main(int argc, char **argv)
{
    size_t n = 1000;
    if (argc > 1) {
        char *end;
        errno = 0;
        long v = strtol(argv[1], &end, 10);
        if (errno || *end || end == argv[1] || v < 2 || v > 10000000) {
            fprintf(stderr, "usage: newton [n], 2 <= n <= 10000000 (default 1000)\n");
            return 1;
        }
        n = (size_t)v;
    }

    /* Everything the iterations use, set up once. ad_hvp takes one pointer
     * per input (here every input is a scalar): v[i] -> d[i], hv[i] -> Hd[i]. */
    double *x = malloc(n * sizeof *x), *xt = malloc(n * sizeof *xt);
    double *g = malloc(n * sizeof *g), *p = malloc(n * sizeof *p);
    double *r = malloc(n * sizeof *r), *d = malloc(n * sizeof *d);
    double *Hd = malloc(n * sizeof *Hd);
    ad_node *xs = malloc(n * sizeof *xs);
    const double **v = malloc(n * sizeof *v);
    double **hv = malloc(n * sizeof *hv);
    long allocs = 0;
    ad_tape_opts opts = {counting_alloc, &allocs, NULL};
    ad_tape *t = ad_tape_new(&opts);
    int rc = 1;
    if (!x || !xt || !g || !p || !r || !d || !Hd || !xs || !v || !hv || !t) {
        fprintf(stderr, "newton: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = cos(0.001 * (double)i);
        v[i] = &d[i];
        hv[i] = &Hd[i];
    }

    ad_node out = record(t, x, xs, n);
    if (ad_tape_status(t) != AD_OK) {
        fprintf(stderr, "newton: recording: %s\n", ad_tape_errmsg(t));
        goto done;
    }
    printf("extended Rosenbrock, n = %zu, %zu ops recorded once\n", n, ad_tape_len(t) - 1);
    printf("%4s %24s %11s %4s %-13s %9s\n", "iter", "f", "|g|_inf", "CG", "CG stopped on", "step");

    long allocs_setup = -1; /* the tape's count after the first ad_hvp */
    long hvps = 0;
    int iter, converged = 0;
    for (iter = 0;; iter++) {
        /* f and g at x: replay, then one reverse sweep. */
        int st = eval_f(t, xs, x, n);
        if (st == AD_OK)
            st = ad_backward(t, out);
        if (st != AD_OK) {
            fprintf(stderr, "newton: gradient: %s\n", ad_tape_errmsg(t));
            goto done;
        }
        double f = ad_scalar_value(t, out);
        for (size_t i = 0; i < n; i++)
            g[i] = ad_grad(t, xs[i])[0];
        double ginf = norm_inf(g, n);
        if (ginf < GTOL) {
            converged = 1;
            printf("%4d %24.16e %11.3e\n", iter, f, ginf);
            break;
        }
        if (iter == MAX_ITER) {
            printf("%4d %24.16e %11.3e\n", iter, f, ginf);
            break;
        }

        /* CG on H p = -g from p = 0: residual r = -g - H p, direction d. */
        double gnorm = sqrt(dot(g, g, n));
        double tol = fmin(0.5, sqrt(gnorm)) * gnorm;
        for (size_t i = 0; i < n; i++) {
            p[i] = 0;
            r[i] = d[i] = -g[i];
        }
        double rr = gnorm * gnorm;
        int cg = 0;
        const char *why = "n steps";
        for (size_t k = 0; k < n; k++) {
            if (ad_hvp(t, out, (int)n, xs, v, hv, NULL) != AD_OK) {
                fprintf(stderr, "newton: Hessian-vector product: %s\n", ad_tape_errmsg(t));
                goto done;
            }
            hvps++;
            if (allocs_setup < 0)
                allocs_setup = allocs;
            cg++;
            double dHd = dot(d, Hd, n);
            if (!(dHd > 0)) { /* negative (or zero) curvature along d */
                why = "neg. curv.";
                if (k == 0) {
                    why = "neg. curv. SD";
                    for (size_t i = 0; i < n; i++)
                        p[i] = -g[i]; /* steepest descent */
                }
                break;
            }
            double alpha = rr / dHd;
            for (size_t i = 0; i < n; i++) {
                p[i] += alpha * d[i];
                r[i] -= alpha * Hd[i];
            }
            double rr_new = dot(r, r, n);
            if (sqrt(rr_new) <= tol) {
                why = "residual";
                break;
            }
            for (size_t i = 0; i < n; i++)
                d[i] = r[i] + rr_new / rr * d[i];
            rr = rr_new;
        }

        /* Backtracking line search: the largest step 2^-j with
         * f(x + step p) <= f + c1 step g.p. */
        double slope = dot(g, p, n), step = 1;
        if (!(slope < 0)) {
            fprintf(stderr, "newton: not a descent direction (g.p = %g)\n", slope);
            goto done;
        }
        for (;;) {
            for (size_t i = 0; i < n; i++)
                xt[i] = x[i] + step * p[i];
            if (eval_f(t, xs, xt, n) != AD_OK) {
                fprintf(stderr, "newton: line search: %s\n", ad_tape_errmsg(t));
                goto done;
            }
            double ft = ad_scalar_value(t, out);
            if (ft <= f + ARMIJO_C1 * step * slope)
                break;
            step *= 0.5;
            if (step < 1e-20) {
                fprintf(stderr, "newton: line search found no decrease\n");
                goto done;
            }
        }
        printf("%4d %24.16e %11.3e %4d %-13s %9.3g\n", iter, f, ginf, cg, why, step);
        double *swap = x;
        x = xt;
        xt = swap;
    }

    double err = 0;
    for (size_t i = 0; i < n; i++)
        err = fmax(err, fabs(x[i] - 1));
    printf("\n%s after %d Newton iterations, %ld Hessian-vector products\n",
           converged ? "converged" : "NOT converged", iter, hvps);
    printf("max |x_i - 1| = %.3e\n", err);
    if (allocs_setup >= 0)
        printf("tape allocations after the first ad_hvp: %ld\n", allocs - allocs_setup);
    if (converged && err <= XTOL) {
        printf("reached the minimum x_i = 1 within %g\n", XTOL);
        rc = 0;
    } else {
        fprintf(stderr, "newton: did not reach the minimum x_i = 1 within %g\n", XTOL);
    }

done:
    ad_tape_free(t);
    free(x);
    free(xt);
    free(g);
    free(p);
    free(r);
    free(d);
    free(Hd);
    free(xs);
    free(v);
    free(hv);
    return rc;
}
