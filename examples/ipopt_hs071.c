/* ipopt_hs071.c -- Hock-Schittkowski problem 71, IPOPT's first example,
 * solved twice: with every derivative from the engine (gradient by a
 * reverse sweep, sparse Jacobian and sparse Hessian of the Lagrangian by
 * ad_sparse_eval), and with the derivatives written by hand. Both must
 * reach f* = 17.0140173 in the same number of iterations.
 *
 *   min  x0 x3 (x0 + x1 + x2) + x2
 *   s.t. x0 x1 x2 x3 >= 25,  x0^2 + x1^2 + x2^2 + x3^2 = 40,  1 <= x <= 5
 *   x0 = (1, 5, 5, 1)
 *
 * Usage: ipopt_hs071 [-v]   (-v: IPOPT's iteration log). Exits non-zero
 * when a solve fails, f* is off, or the iteration counts differ. */
#include "ipopt_glue.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* ---- the hand-written twin (as in IPOPT's hs071_c.c, by hand) ---- */

static Bool h_f(Index n, Number *x, Bool new_x, Number *obj, UserDataPtr ud)
{
    (void)n, (void)new_x, (void)ud;
    *obj = x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2];
    return TRUE;
}
static Bool h_grad_f(Index n, Number *x, Bool new_x, Number *g, UserDataPtr ud)
{
    (void)n, (void)new_x, (void)ud;
    g[0] = x[0] * x[3] + x[3] * (x[0] + x[1] + x[2]);
    g[1] = x[0] * x[3];
    g[2] = x[0] * x[3] + 1;
    g[3] = x[0] * (x[0] + x[1] + x[2]);
    return TRUE;
}
static Bool h_g(Index n, Number *x, Bool new_x, Index m, Number *g, UserDataPtr ud)
{
    (void)n, (void)new_x, (void)m, (void)ud;
    g[0] = x[0] * x[1] * x[2] * x[3];
    g[1] = x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3];
    return TRUE;
}
/* dense 2 x 4, row by row */
static Bool h_jac(Index n, Number *x, Bool new_x, Index m, Index nele, Index *r, Index *c,
                  Number *v, UserDataPtr ud)
{
    (void)n, (void)new_x, (void)m, (void)nele, (void)ud;
    if (!v) {
        for (int k = 0; k < 8; k++)
            r[k] = k / 4, c[k] = k % 4;
        return TRUE;
    }
    v[0] = x[1] * x[2] * x[3];
    v[1] = x[0] * x[2] * x[3];
    v[2] = x[0] * x[1] * x[3];
    v[3] = x[0] * x[1] * x[2];
    for (int k = 0; k < 4; k++)
        v[4 + k] = 2 * x[k];
    return TRUE;
}
/* dense lower triangle, row by row */
static Bool h_hess(Index n, Number *x, Bool new_x, Number s, Index m, Number *l, Bool new_l,
                   Index nele, Index *r, Index *c, Number *v, UserDataPtr ud)
{
    (void)n, (void)new_x, (void)m, (void)new_l, (void)nele, (void)ud;
    if (!v) {
        int k = 0;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j <= i; j++)
                r[k] = i, c[k] = j, k++;
        return TRUE;
    }
    double H[4][4] = {{0}};
    /* sigma f */
    H[0][0] = s * 2 * x[3];
    H[1][0] = s * x[3];
    H[2][0] = s * x[3];
    H[3][0] = s * (2 * x[0] + x[1] + x[2]);
    H[3][1] = s * x[0];
    H[3][2] = s * x[0];
    /* lambda_0 x0 x1 x2 x3 */
    H[1][0] += l[0] * x[2] * x[3];
    H[2][0] += l[0] * x[1] * x[3];
    H[2][1] += l[0] * x[0] * x[3];
    H[3][0] += l[0] * x[1] * x[2];
    H[3][1] += l[0] * x[0] * x[2];
    H[3][2] += l[0] * x[0] * x[1];
    /* lambda_1 |x|^2 */
    for (int i = 0; i < 4; i++)
        H[i][i] += l[1] * 2;
    int k = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j <= i; j++)
            v[k++] = H[i][j];
    return TRUE;
}

static int solve(bool engine, bool verbose, double *fstar, int *iters, double *xs)
{
    Number xl[4] = {1, 1, 1, 1}, xu[4] = {5, 5, 5, 5}, gl[2] = {25, 40}, gu[2] = {2e19, 40};
    ad_nlp p;
    memset(&p, 0, sizeof p);
    ad_node xn[4], out[3];
    int nj = 8, nh = 10;
    if (engine) {
        p.t = ad_tape_new(NULL);
        p.n = 4, p.m = 2, p.x = xn, p.out = out;
        for (int i = 0; i < 4; i++)
            xn[i] = ad_scalar_var(p.t, 1.0);
        ad_node s = ad_add(p.t, ad_add(p.t, xn[0], xn[1]), xn[2]);
        out[0] = ad_add(p.t, ad_mul(p.t, ad_mul(p.t, xn[0], xn[3]), s), xn[2]);
        out[1] = ad_mul(p.t, ad_mul(p.t, ad_mul(p.t, xn[0], xn[1]), xn[2]), xn[3]);
        ad_node q = ad_square(p.t, xn[0]);
        for (int i = 1; i < 4; i++)
            q = ad_add(p.t, q, ad_square(p.t, xn[i]));
        out[2] = q;
        if (ad_nlp_init(&p) != 0)
            return 1;
        nj = (int)ad_sparse_nnz(p.jac);
        nh = (int)ad_sparse_nnz(p.hess);
        printf("engine: Jacobian %d nonzeros, %zu colours; Hessian of the Lagrangian %d "
               "nonzeros (lower), %zu colours\n",
               nj, ad_sparse_colors(p.jac), nh, ad_sparse_colors(p.hess));
    }
    IpoptProblem nlp =
        engine ? CreateIpoptProblem(4, xl, xu, 2, gl, gu, nj, nh, 0, ad_nlp_f, ad_nlp_g,
                                    ad_nlp_grad_f, ad_nlp_jac_g, ad_nlp_h)
               : CreateIpoptProblem(4, xl, xu, 2, gl, gu, nj, nh, 0, h_f, h_g, h_grad_f, h_jac,
                                    h_hess);
    if (!nlp)
        return 1;
    AddIpoptNumOption(nlp, "tol", 1e-7);
    AddIpoptStrOption(nlp, "mu_strategy", "adaptive");
    AddIpoptIntOption(nlp, "print_level", verbose ? 5 : 0);
    AddIpoptStrOption(nlp, "sb", "yes");
    SetIntermediateCallback(nlp, ad_nlp_iter);
    Number x[4] = {1, 5, 5, 1}, obj = 0;
    const enum ApplicationReturnStatus st = IpoptSolve(nlp, x, NULL, &obj, NULL, NULL, NULL, &p);
    FreeIpoptProblem(nlp);
    if (engine) {
        ad_nlp_free(&p);
        ad_tape_free(p.t);
    }
    *fstar = obj;
    *iters = p.iterations;
    memcpy(xs, x, sizeof x);
    return st == Solve_Succeeded ? 0 : 1;
}

int main(int argc, char **argv)
{
    const bool verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    double fe, fh, xe[4], xh[4];
    int ie, ih;
    const int se = solve(true, verbose, &fe, &ie, xe);
    const int sh = solve(false, verbose, &fh, &ih, xh);
    printf("engine derivatives: f* = %.7f in %d iterations, x* = (%.7f, %.7f, %.7f, %.7f)\n", fe,
           ie, xe[0], xe[1], xe[2], xe[3]);
    printf("hand-written:       f* = %.7f in %d iterations, x* = (%.7f, %.7f, %.7f, %.7f)\n", fh,
           ih, xh[0], xh[1], xh[2], xh[3]);
    const bool ok = se == 0 && sh == 0 && fabs(fe - 17.0140173) < 1e-6 && ie == ih;
    printf("%s\n", ok ? "ok: the same optimum in the same number of iterations"
                      : "MISMATCH");
    return ok ? 0 : 1;
}
