/* luksan_vlcek.h -- Luksan and Vlcek's problem 5.1 ("Sparse and partially
 * separable test problems for unconstrained and equality constrained
 * optimization", 1999), which IPOPT ships among its scalable examples
 * (LukVlE1): a chained Rosenbrock function with n - 2 equality
 * constraints, n >= 3 (0-based indices):
 *
 *   min  f(x) = sum_{i=0}^{n-2} 100 (x_i^2 - x_{i+1})^2 + (x_i - 1)^2
 *   s.t. c_i(x) = 3 x_{i+1}^3 + 2 x_{i+2} - 5
 *                 + sin(x_{i+1} - x_{i+2}) sin(x_{i+1} + x_{i+2})
 *                 + 4 x_{i+1} - x_i exp(x_i - x_{i+1}) - 3 = 0,  i < n - 2
 *   x0 = (-1.2, 1, -1.2, 1, ...), x free.
 *
 * Shared by examples/ipopt_luksan.c and bench/w6_sparse.c: the problem
 * recorded on a tape, and the derivatives written by hand (the yardstick;
 * with w = x_i, u = x_{i+1}, v = x_{i+2}, e = exp(w - u), and
 * sin(u - v) sin(u + v) = sin^2 u - sin^2 v:
 *   dc/dw = -(1 + w) e,  dc/du = 9u^2 + sin 2u + 4 + w e,  dc/dv = 2 - sin 2v
 *   d2c/dw2 = -(2 + w) e, d2c/dwdu = (1 + w) e,
 *   d2c/du2 = 18u + 2 cos 2u - w e, d2c/dv2 = -2 cos 2v, d2c/dudv = 0),
 * in the engine's order of nonzeros: the Jacobian row by row (columns i,
 * i+1, i+2), the Hessian's lower triangle row by row ((r, r-1), (r, r)):
 * tridiagonal. */
#ifndef LUKSAN_VLCEK_H
#define LUKSAN_VLCEK_H

#include <autodiff/autodiff.h>
#include <math.h>
#include <stddef.h>

static inline double lv_x0(size_t i) { return i % 2 == 0 ? -1.2 : 1.0; }

/* Records f and c_0 .. c_{n-3} on t from the n scalar variables x (made
 * here at x0): f first, so that a sweep of f covers only f's nodes. f
 * NULL: the constraints only. */
static inline void lv_record(ad_tape *t, size_t n, ad_node *x, ad_node *f, ad_node *c)
{
    for (size_t i = 0; i < n; i++)
        x[i] = ad_scalar_var(t, lv_x0(i));
    ad_node s = ad_scalar(t, 0.0);
    for (size_t i = 0; f && i + 1 < n; i++) {
        ad_node a = ad_sub(t, ad_square(t, x[i]), x[i + 1]);
        ad_node b = ad_add_const(t, x[i], -1.0);
        s = ad_add(t, s, ad_add(t, ad_scale(t, ad_square(t, a), 100.0), ad_square(t, b)));
    }
    if (f)
        *f = s;
    for (size_t i = 0; i + 2 < n; i++) {
        ad_node u = x[i + 1], v = x[i + 2], w = x[i];
        ad_node p = ad_add(t, ad_scale(t, ad_pow_const(t, u, 3.0), 3.0), ad_scale(t, v, 2.0));
        ad_node q = ad_mul(t, ad_sin(t, ad_sub(t, u, v)), ad_sin(t, ad_add(t, u, v)));
        ad_node r = ad_mul(t, w, ad_exp(t, ad_sub(t, w, u)));
        c[i] = ad_add_const(t, ad_sub(t, ad_add(t, ad_add(t, p, q), ad_scale(t, u, 4.0)), r),
                            -8.0);
    }
}

static inline double lv_f(size_t n, const double *x)
{
    double s = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const double a = x[i] * x[i] - x[i + 1], b = x[i] - 1.0;
        s += 100.0 * a * a + b * b;
    }
    return s;
}

static inline void lv_grad(size_t n, const double *x, double *g)
{
    for (size_t i = 0; i < n; i++)
        g[i] = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const double a = x[i] * x[i] - x[i + 1];
        g[i] += 400.0 * x[i] * a + 2.0 * (x[i] - 1.0);
        g[i + 1] -= 200.0 * a;
    }
}

static inline void lv_c(size_t n, const double *x, double *c)
{
    for (size_t i = 0; i + 2 < n; i++) {
        const double w = x[i], u = x[i + 1], v = x[i + 2];
        c[i] = 3.0 * u * u * u + 2.0 * v - 5.0 + sin(u - v) * sin(u + v) + 4.0 * u
               - w * exp(w - u) - 3.0;
    }
}

/* The Jacobian's 3 (n - 2) nonzeros. */
static inline void lv_jac(size_t n, const double *x, double *val)
{
    for (size_t i = 0; i + 2 < n; i++) {
        const double w = x[i], u = x[i + 1], v = x[i + 2], e = exp(w - u);
        val[3 * i] = -(1.0 + w) * e;
        val[3 * i + 1] = 9.0 * u * u + sin(2.0 * u) + 4.0 + w * e;
        val[3 * i + 2] = 2.0 - sin(2.0 * v);
    }
}

/* The Hessian of sigma f + sum lambda_i c_i: 2n - 1 nonzeros, (0,0) then
 * (r, r-1), (r, r) for r >= 1. diag, off: n scratch each. */
static inline void lv_hess(size_t n, const double *x, double sigma, const double *lambda,
                           double *val, double *diag, double *off)
{
    if (n < 3)
        return;
    for (size_t r = 0; r < n; r++)
        diag[r] = off[r] = 0.0;
    for (size_t i = 0; i + 1 < n; i++) {
        diag[i] += sigma * (1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0);
        diag[i + 1] += 200.0 * sigma;
        off[i + 1] -= 400.0 * sigma * x[i];
    }
    for (size_t i = 0; i + 2 < n; i++) {
        const double w = x[i], u = x[i + 1], v = x[i + 2], e = exp(w - u), l = lambda[i];
        diag[i] -= l * (2.0 + w) * e;
        off[i + 1] += l * (1.0 + w) * e;
        diag[i + 1] += l * (18.0 * u + 2.0 * cos(2.0 * u) - w * e);
        diag[i + 2] -= l * 2.0 * cos(2.0 * v);
    }
    val[0] = diag[0];
    for (size_t r = 1; r < n; r++) {
        val[2 * r - 1] = off[r];
        val[2 * r] = diag[r];
    }
}

#endif
