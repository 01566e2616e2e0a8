/* test_edge_cases.c -- ops at the edges of their domains, where the
 * derivative formula meets 0, infinities and NaN.
 *
 * ad_pow_const: every row of the table in docs/math.md ("edge cases of
 * pow_const") is recorded in every form the tape has for the op -- the
 * inline scalar kernel, the tensor kernel writing a fresh gradient, the
 * tensor kernel adding into one, a scalar ad_param (tensor path), and a
 * replay of a recording made at another point -- and the value and the
 * gradient must be the table's, bit for bit up to the sign of a zero
 * (infinities keep their sign; NaN must be NaN). A failure names the row
 * and the form. */
#include <autodiff/autodiff.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* pow_const: y = x^c and dy/dx. Every row is what PyTorch 1.13 gives in
 * float64 (x.pow(c) and its autograd) except the two at x = -0 with
 * c = +-0.5, where torch computes sqrt/rsqrt instead of pow and so gets
 * the other sign (docs/math.md). */
typedef struct pow_case {
    double c, x, y, dy;
    const char *why;
} pow_case;

static const pow_case POW[] = {
    {0.0, 0.0, 1.0, 0.0, "x^0 is 1 everywhere: derivative 0, not 0 * 0^-1 = NaN"},
    {0.0, -0.0, 1.0, 0.0, "x^0 at -0"},
    {0.0, 2.0, 1.0, 0.0, "x^0 away from 0"},
    {0.0, -3.0, 1.0, 0.0, "x^0 at a negative x"},
    {0.0, INFINITY, 1.0, 0.0, "x^0 at inf: not 0 * inf^-1"},
    {0.0, NAN, 1.0, 0.0, "x^0 at NaN: pow(NaN, 0) = 1, derivative 0 (as torch)"},
    {1.0, 0.0, 0.0, 1.0, "x^1 at 0: derivative 1 * 0^0 = 1"},
    {1.0, -2.0, -2.0, 1.0, "x^1 at a negative x"},
    {2.0, 0.0, 0.0, 0.0, "x^2 at 0"},
    {2.0, -0.0, 0.0, -0.0, "x^2 at -0"},
    {3.0, 0.0, 0.0, 0.0, "x^3 at 0"},
    {3.0, -2.0, -8.0, 12.0, "x^3 at a negative x (integer c)"},
    {2.5, 0.0, 0.0, 0.0, "x^2.5 at 0: 2.5 * 0^1.5 = 0"},
    {1.5, 0.0, 0.0, 0.0, "x^1.5 at 0: 1.5 * 0^0.5 = 0"},
    {0.5, 0.0, 0.0, INFINITY, "sqrt at 0: 0.5 * 0^-0.5 = inf"},
    {0.3, 0.0, 0.0, INFINITY, "0 < c < 1 at 0: 0.3 * 0^-0.7 = inf"},
    {-2.5, 0.0, INFINITY, -INFINITY, "negative non-integer c at 0: -2.5 * 0^-3.5 = -inf"},
    {0.5, -0.0, 0.0, INFINITY, "x^0.5 at -0: C pow gives +0 and +inf (torch's sqrt: -0, -inf)"},
    {-0.5, 0.0, INFINITY, -INFINITY, "x^-0.5 at 0: -0.5 * 0^-1.5 = -inf"},
    {-0.5, -0.0, INFINITY, -INFINITY, "x^-0.5 at -0: C pow gives +inf (torch's rsqrt: -inf)"},
    {-1.0, 0.0, INFINITY, -INFINITY, "1/x at +0: -1 * 0^-2 = -inf"},
    {-1.0, -0.0, -INFINITY, -INFINITY, "1/x at -0: -1 * (-0)^-2 = -inf"},
    {-2.0, 0.0, INFINITY, -INFINITY, "x^-2 at +0: -2 * 0^-3 = -inf"},
    {-2.0, -0.0, INFINITY, INFINITY, "x^-2 at -0: -2 * (-0)^-3 = +inf"},
    {-3.0, -0.0, -INFINITY, -INFINITY, "x^-3 at -0: -3 * (-0)^-4 = -inf"},
    {-3.0, 0.0, INFINITY, -INFINITY, "x^-3 at +0: -3 * 0^-4 = -inf"},
    {-4.0, -0.0, INFINITY, INFINITY, "x^-4 at -0: -4 * (-0)^-5 = +inf"},
    {1.0, NAN, NAN, 1.0, "x^1 at NaN: 1 * NaN^0 = 1"},
    {2.0, INFINITY, INFINITY, INFINITY, "x^2 at inf"},
    {2.0, -INFINITY, INFINITY, -INFINITY, "x^2 at -inf"},
    {-1.0, INFINITY, 0.0, -0.0, "1/x at inf: -1 * inf^-2 = -0"},
    {0.5, INFINITY, INFINITY, 0.0, "sqrt at inf: 0.5 * inf^-0.5 = 0"},
    {0.5, -1.0, NAN, NAN, "sqrt of a negative x: NaN, gradient NaN"},
    {1.5, -1.0, NAN, NAN, "non-integer c at a negative x: NaN, gradient NaN"},
    {-1.5, -4.0, NAN, NAN, "negative non-integer c at a negative x"},
};
#define NPOW (sizeof POW / sizeof POW[0])

/* Equal as the table means it: NaN matches NaN, 0 matches -0. */
static int same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static void expect(const pow_case *k, const char *form, double y, double dy, double mult)
{
    cr_expect(same(y, k->y), "pow_const c = %g at x = %g (%s), %s: value %g, expected %g", k->c,
              k->x, k->why, form, y, k->y);
    cr_expect(same(dy, mult * k->dy),
              "pow_const c = %g at x = %g (%s), %s: gradient %g, expected %g", k->c, k->x, k->why,
              form, dy, mult * k->dy);
}

/* The inline scalar kernels (sweep and recording). */
Test(edge_cases, pow_const_scalar_inline)
{
    for (size_t i = 0; i < NPOW; i++) {
        ad_tape *t = ad_tape_new(NULL);
        ad_node x = ad_scalar_var(t, POW[i].x);
        ad_node y = ad_pow_const(t, x, POW[i].c);
        cr_assert_eq(ad_backward(t, y), AD_OK, "%s", ad_tape_errmsg(t));
        expect(&POW[i], "inline scalar", ad_scalar_value(t, y), ad_grad(t, x)[0], 1.0);
        ad_tape_free(t);
    }
}

/* The tensor kernels: the writing loop (one use of v) and the adding loop
 * (v used twice: the second contribution is added to the first). */
Test(edge_cases, pow_const_tensor)
{
    for (size_t i = 0; i < NPOW; i++) {
        const double v3[3] = {POW[i].x, POW[i].x, POW[i].x};
        for (int uses = 1; uses <= 2; uses++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_node v = ad_variable(t, ad_shape_vec(3), v3);
            ad_node p = ad_pow_const(t, v, POW[i].c);
            ad_node J = ad_sum(t, p);
            if (uses == 2)
                J = ad_add(t, J, ad_sum(t, ad_pow_const(t, v, POW[i].c)));
            cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
            for (int j = 0; j < 3; j++)
                expect(&POW[i], uses == 1 ? "vector (fresh gradient)" : "vector used twice",
                       ad_value(t, p)[j], ad_grad(t, v)[j], (double)uses);
            ad_tape_free(t);
        }
    }
}

/* A scalar ad_param goes through the tensor kernel on one element. */
Test(edge_cases, pow_const_scalar_param)
{
    for (size_t i = 0; i < NPOW; i++) {
        double val = POW[i].x, grad = 0.0;
        ad_tape *t = ad_tape_new(NULL);
        ad_node x = ad_param(t, ad_shape_scalar(), &val, &grad);
        ad_node y = ad_pow_const(t, x, POW[i].c);
        cr_assert_eq(ad_backward(t, y), AD_OK, "%s", ad_tape_errmsg(t));
        expect(&POW[i], "scalar param", ad_scalar_value(t, y), grad, 1.0);
        ad_tape_free(t);
    }
}

/* Recorded at x = 2, moved to the edge with ad_set_value, replayed. */
Test(edge_cases, pow_const_replayed)
{
    for (size_t i = 0; i < NPOW; i++) {
        ad_tape *t = ad_tape_new(NULL);
        const double two[2] = {2.0, 2.0}, at[2] = {POW[i].x, POW[i].x};
        ad_node s = ad_scalar_var(t, 2.0);
        ad_node v = ad_variable(t, ad_shape_vec(2), two);
        ad_node ys = ad_pow_const(t, s, POW[i].c);
        ad_node yv = ad_pow_const(t, v, POW[i].c);
        ad_node J = ad_add(t, ys, ad_sum(t, yv));
        cr_assert_eq(ad_set_value(t, s, at), AD_OK);
        cr_assert_eq(ad_set_value(t, v, at), AD_OK);
        cr_assert_eq(ad_replay(t), AD_OK, "%s", ad_tape_errmsg(t));
        cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
        expect(&POW[i], "replayed scalar", ad_scalar_value(t, ys), ad_grad(t, s)[0], 1.0);
        for (int j = 0; j < 2; j++)
            expect(&POW[i], "replayed vector", ad_value(t, yv)[j], ad_grad(t, v)[j], 1.0);
        ad_tape_free(t);
    }
}
