/* w6_adolc.h -- ADOL-C's sparse drivers on W6's problem (w6_adolc.cpp),
 * built into bench_w6_sparse when ADOL-C is found (AD_BENCH_ADOLC). */
#ifndef W6_ADOLC_H
#define W6_ADOLC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lv_adolc lv_adolc;
/* Tapes the constraints and the Lagrangian at x, and finds both patterns
 * (jac_pat, hess_pat, timed into *t_pattern_*). */
lv_adolc *lv_adolc_new(size_t n, const double *x, double sigma, const double *lam,
                       double *t_pattern_jac, double *t_pattern_hess);
size_t lv_adolc_nnz(const lv_adolc *p, int hessian);
/* The nonzeros at x, in the engine's order. */
void lv_adolc_jac(lv_adolc *p, const double *x, double *val);
void lv_adolc_hess(lv_adolc *p, const double *x, double sigma, const double *lam, double *val);
void lv_adolc_free(lv_adolc *p);
/* bench_now, for the C++ side (w6_sparse.c). */
double lv_adolc_now(void);

#ifdef __cplusplus
}
#endif

#endif
