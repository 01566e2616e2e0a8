// w6_adolc.cpp -- ADOL-C on W6's problem (Luksan-Vlcek 1), linked into
// bench_w6_sparse when ADOL-C is found (libadolc-dev), so that it is timed
// in the same run as the engine and the hand-written derivatives. Only
// bench code: the library never sees it.
//
// Debian 12's ADOL-C (2.7.2) is built without ColPack, so its drivers
// sparse_jac and sparse_hess stop with "can only be used if linked with
// ColPack". What they run on a repeated call (repeat = 1) is done here
// with the same building blocks: the compressed Jacobian J S by
// fov_forward and the compressed Hessian H S by hess_mat, S the 3-colour
// seed (column j in colour j mod 3, the optimum, as the engine's greedy
// colourings give it), each nonzero read directly. Patterns are ADOL-C's
// own (jac_pat, hess_pat: index domains), timed. The constraints are
// taped once (tag 1); the Lagrangian sigma f + sum lambda_i c_i once (tag
// 2) with sigma and lambda as ADOL-C parameters (mkparam), changed per
// evaluation with set_param_vec. Values go into the engine's order.
#include <adolc/adolc.h>
#include <adolc/adolc_sparse.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "w6_adolc.h"

struct lv_adolc {
    size_t n, m;
    std::vector<double> g, params, y;
    double **S = nullptr, **Y = nullptr, **HS = nullptr;
    size_t nnzj = 0, nnzh = 0;
};

static adouble lv_c(const adouble &w, const adouble &u, const adouble &v)
{
    return 3.0 * u * u * u + 2.0 * v - 5.0 + sin(u - v) * sin(u + v) + 4.0 * u - w * exp(w - u)
           - 3.0;
}

extern "C" lv_adolc *lv_adolc_new(size_t n, const double *x, double sigma, const double *lam,
                                  double *t_pattern_jac, double *t_pattern_hess)
{
    lv_adolc *p = new lv_adolc;
    p->n = n, p->m = n - 2;
    p->g.resize(p->m);
    p->params.resize(p->m + 1);
    {
        trace_on(1);
        std::vector<adouble> ax(n);
        for (size_t i = 0; i < n; i++)
            ax[i] <<= x[i];
        for (size_t i = 0; i + 2 < n; i++) {
            adouble c = lv_c(ax[i], ax[i + 1], ax[i + 2]);
            c >>= p->g[i];
        }
        trace_off();
    }
    {
        trace_on(2);
        std::vector<adouble> ax(n);
        for (size_t i = 0; i < n; i++)
            ax[i] <<= x[i];
        adouble L = 0.0;
        pdouble s = mkparam(sigma);
        adouble f = 0.0;
        for (size_t i = 0; i + 1 < n; i++) {
            adouble a = ax[i] * ax[i] - ax[i + 1], b = ax[i] - 1.0;
            f += 100.0 * a * a + b * b;
        }
        L = s * f;
        for (size_t i = 0; i + 2 < n; i++) {
            pdouble l = mkparam(lam[i]);
            L += l * lv_c(ax[i], ax[i + 1], ax[i + 2]);
        }
        double out;
        L >>= out;
        trace_off();
    }
    // patterns, as ADOL-C finds them (counted, then freed)
    std::vector<unsigned int *> crs(n);
    int opt[4] = {0, 0, 0, 0};
    double t0 = lv_adolc_now();
    jac_pat(1, (int)p->m, (int)n, x, crs.data(), opt);
    *t_pattern_jac = lv_adolc_now() - t0;
    for (size_t i = 0; i < p->m; i++)
        p->nnzj += crs[i][0], free(crs[i]);
    t0 = lv_adolc_now();
    hess_pat(2, (int)n, x, crs.data(), 0);
    *t_pattern_hess = lv_adolc_now() - t0;
    for (size_t i = 0; i < n; i++) {
        for (unsigned int k = 1; k <= crs[i][0]; k++)
            p->nnzh += crs[i][k] <= i; // lower triangle
        free(crs[i]);
    }
    p->S = myalloc2((int)n, 3);
    p->Y = myalloc2((int)p->m, 3);
    p->HS = myalloc2((int)n, 3);
    p->y.resize(p->m);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            p->S[i][c] = (size_t)c == i % 3 ? 1.0 : 0.0;
    return p;
}

extern "C" size_t lv_adolc_nnz(const lv_adolc *p, int hessian)
{
    return hessian ? p->nnzh : p->nnzj;
}

extern "C" void lv_adolc_jac(lv_adolc *p, const double *x, double *val)
{
    fov_forward(1, (int)p->m, (int)p->n, 3, x, p->S, p->y.data(), p->Y);
    for (size_t i = 0; i < p->m; i++)
        for (size_t k = 0; k < 3; k++)
            val[3 * i + k] = p->Y[i][(i + k) % 3];
}

extern "C" void lv_adolc_hess(lv_adolc *p, const double *x, double sigma, const double *lam,
                              double *val)
{
    p->params[0] = sigma;
    for (size_t i = 0; i < p->m; i++)
        p->params[i + 1] = lam[i];
    set_param_vec(2, p->m + 1, p->params.data());
    hess_mat(2, (int)p->n, 3, const_cast<double *>(x), p->S, p->HS); // reads x only
    val[0] = p->HS[0][0];
    for (size_t r = 1; r < p->n; r++) {
        val[2 * r - 1] = p->HS[r][(r - 1) % 3];
        val[2 * r] = p->HS[r][r % 3];
    }
}

extern "C" void lv_adolc_free(lv_adolc *p)
{
    myfree2(p->S), myfree2(p->Y), myfree2(p->HS);
    delete p;
}
