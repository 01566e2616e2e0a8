/* scalar_ops.h -- the elementwise ops, each defined once by its formula.
 *
 * The lists below are the single source of every elementwise forward and
 * derivative: ops_elementwise.c generates the tensor kernels from them,
 * and this header generates the inline scalar kernels and their dispatch,
 * which the sweep and replay loops inline (no call per scalar node).
 *
 * Unary:  X(name, CODE, takes_const, y = f(x, c), dy/dx = f'(x, y, c),
 *          d2y/dx2 = f''(x, y, c), the vjp g f' as recorded ops)
 * Binary: X(name, CODE, z = f(x, y), dz/dx, dz/dy, d2z/dx2, d2z/dxdy, d2z/dy2,
 *          g dz/dx and g dz/dy as recorded ops), each in terms of x, y, z
 * In the recorded-op forms, t is the tape, g the adjoint node and xn, yn,
 * zn the operand and output nodes (unary: xn operand, yn output); ad_nil()
 * means no contribution (a zero derivative).
 *
 * From these come the forward value, the vjp (g f'), the tangent (jvp:
 * f' t) and the forward-over-reverse second-order term (g f'' t) of the
 * Hessian-vector product -- every mode reads the same line.
 *
 * powc: c == 0 gives the derivative 0 everywhere (x^0 is the constant 1),
 * where c x^(c-1) would be 0 * inf = NaN at x = 0 and 0 * NaN at NaN; every
 * other c is c x^(c-1) as IEEE pow gives it (docs/math.md, "edge cases of
 * pow_const"). */
#ifndef AD_SCALAR_OPS_H
#define AD_SCALAR_OPS_H

#include "internal.h"

#include <math.h>

/* ---- elementwise math: helpers of the lines below ----
 * Constants spelled out (M_LN2 and friends are not C11). */
#define AD__LN2 0.693147180559945309417232121458176568
#define AD__LN10 2.30258509299404568401799145468436421
#define AD__2_SQRTPI 1.12837916709551257389615890312154517 /* 2/sqrt(pi)   */
#define AD__SQRT1_2 0.707106781186547524400844362104849039 /* 1/sqrt(2)    */
#define AD__1_SQRT2PI 0.398942280401432677939946059934381868 /* 1/sqrt(2pi) */

/* A derivative where the value y is NaN (outside the op's domain) is NaN,
 * not the formula's finite number there (log1p'(-2) = 1/(1 + x) = -1). */
#define AD__NAN_AT(y, d) ((y) != (y) ? (y) : (d))

/* The helpers the formulas below call, as one macro: expanded here, and
 * stringized (expanded) by the code generator (codegen/), which writes
 * them into every generated file, so generated C computes with these
 * same definitions. Pure functions of their arguments, C99. In order:
 * round half to even, as PyTorch's torch.round and IEEE's default, in
 * any rounding mode (x - trunc(x) is exact, so the half case is seen
 * exactly); sigmoid; cube; 1/sqrt(1 - x^2) as (1 - x)(1 + x), exact
 * near +-1; gelu'; pow(x, y)'s derivatives: d/dx is 0 where y = 0
 * (x^0 = 1, as pow_const), d/dy is 0 where x = 0 and y >= 0 (PyTorch's
 * rules), the second derivatives those of the recorded vjp below
 * (ad__pow_ga, ad__pow_gb); atan2(a, b)'s derivatives with h = hypot(a,
 * b): d/da = b/h^2, d/db = -a/h^2 (which: 0 d/da, 1 d/db, 2 d2/da2, 3
 * d2/dadb, 4 d2/db2); max(a, b) and min(a, b): a tie returns a, a NaN
 * operand gives NaN. */
#define AD__SCALAR_HELPERS                                                                    \
    static inline double ad__round_even(double x)                                             \
    {                                                                                         \
        const double t = trunc(x), d = fabs(x - t);                                           \
        if (!(d >= 0.5))                                                                      \
            return d == d ? t : x; /* d NaN: x is +-inf or NaN */                             \
        const double up = t + copysign(1.0, x);                                               \
        return d > 0.5 || fmod(t, 2.0) != 0.0 ? up : t;                                       \
    }                                                                                         \
    static inline double ad__sigm(double x) { return 1.0 / (1.0 + exp(-x)); }                \
    static inline double ad__cube(double d) { return d * d * d; }                            \
    static inline double ad__rs1mx2(double x) { return 1.0 / sqrt((1.0 - x) * (1.0 + x)); }  \
    static inline double ad__gelu_d(double x)                                                 \
    {                                                                                         \
        return 0.5 * erfc(-x * AD__SQRT1_2) + x * AD__1_SQRT2PI * exp(-0.5 * x * x);          \
    }                                                                                         \
    static inline double ad__pow_da(double x, double y)                                       \
    {                                                                                         \
        return y == 0.0 ? 0.0 : y * pow(x, y - 1.0);                                          \
    }                                                                                         \
    static inline double ad__pow_db(double x, double y, double z)                             \
    {                                                                                         \
        return x == 0.0 && y >= 0.0 ? 0.0 : z * log(x);                                      \
    }                                                                                         \
    static inline double ad__pow_daa(double x, double y)                                      \
    {                                                                                         \
        return y == 0.0 || y == 1.0 ? 0.0 : y * (y - 1.0) * pow(x, y - 2.0);                  \
    }                                                                                         \
    static inline double ad__pow_dab(double x, double y)                                      \
    {                                                                                         \
        const double e = x == 0.0 && y == 0.0 ? 0.0 : y - 1.0, p = pow(x, e);                 \
        return p + y * (x == 0.0 && e >= 0.0 ? 0.0 : p * log(x));                             \
    }                                                                                         \
    static inline double ad__pow_dbb(double x, double y, double z)                            \
    {                                                                                         \
        const double l = log(x);                                                              \
        return x == 0.0 && y >= 0.0 ? 0.0 : z * l * l;                                        \
    }                                                                                         \
    static inline double ad__atan2_d(double a, double b, int which)                           \
    {                                                                                         \
        const double h = hypot(a, b), sa = a / h, sb = b / h;                                 \
        switch (which) {                                                                      \
        case 0: return sb / h;                          /* d/da   */                          \
        case 1: return -sa / h;                         /* d/db   */                          \
        case 2: return -2.0 * sa * sb / (h * h);        /* d2/da2 */                          \
        case 3: return (sa - sb) * (sa + sb) / (h * h); /* d2/dadb */                         \
        default: return 2.0 * sa * sb / (h * h);        /* d2/db2 */                          \
        }                                                                                     \
    }                                                                                         \
    static inline double ad__max(double a, double b)                                          \
    {                                                                                         \
        return a > b ? a : (a < b ? b : (a == b ? a : a + b));                                \
    }                                                                                         \
    static inline double ad__min(double a, double b)                                          \
    {                                                                                         \
        return a < b ? a : (a > b ? b : (a == b ? a : a + b));                                \
    }

AD__SCALAR_HELPERS

/* The recorded-op forms (the gradient as a tape). */
/* 1 where n is a number, NaN where it is NaN; derivative exactly 0 */
static inline ad_node ad__nanmask(ad_tape *t, ad_node n)
{
    return ad_sign(t, ad_add_const(t, ad_abs(t, n), 1.0));
}
/* 1 where n == 0, else 0 (NaN at NaN); derivative 0 */
static inline ad_node ad__iszero(ad_tape *t, ad_node n)
{
    return ad_add_const(t, ad_neg(t, ad_abs(t, ad_sign(t, n))), 1.0);
}
static inline ad_node ad__sqrt1mx2(ad_tape *t, ad_node x)
{
    return ad_sqrt(t, ad_mul(t, ad_add_const(t, ad_neg(t, x), 1.0), ad_add_const(t, x, 1.0)));
}
static inline ad_node ad__gelu_ops(ad_tape *t, ad_node g, ad_node x)
{
    ad_node Phi = ad_scale(t, ad_erfc(t, ad_scale(t, x, -AD__SQRT1_2)), 0.5);
    ad_node phi = ad_scale(t, ad_exp(t, ad_scale(t, ad_square(t, x), -0.5)), AD__1_SQRT2PI);
    return ad_mul(t, g, ad_add(t, Phi, ad_mul(t, x, phi)));
}
/* elu'(x) = 1 for x > 0, else c e^x: step(x) + (1 - step(x)) c e^min(x, 0) */
static inline ad_node ad__elu_ops(ad_tape *t, ad_node g, ad_node x, double c)
{
    ad_node s = ad_step(t, x);
    ad_node neg = ad_scale(t, ad_exp(t, ad_clamp_max(t, x, 0.0)), c);
    return ad_mul(t, g, ad_add(t, s, ad_mul(t, ad_add_const(t, ad_neg(t, s), 1.0), neg)));
}
/* g y x^(y - 1), the exponent 0 where x = y = 0 (so 0 * 0^-1 is 0 * 1) */
static inline ad_node ad__pow_ga(ad_tape *t, ad_node g, ad_node x, ad_node y)
{
    ad_node e = ad_add(t, ad_add_const(t, y, -1.0), ad_mul(t, ad__iszero(t, x), ad__iszero(t, y)));
    return ad_mul(t, g, ad_mul(t, y, ad_pow(t, x, e)));
}
/* g z log x, log x read as log 1 = 0 where x = 0 and y >= 0 */
static inline ad_node ad__pow_gb(ad_tape *t, ad_node g, ad_node x, ad_node y, ad_node z)
{
    ad_node ynn = ad_add_const(t, ad_neg(t, ad_step(t, ad_neg(t, y))), 1.0); /* y >= 0 */
    ad_node lx = ad_log(t, ad_add(t, x, ad_mul(t, ad__iszero(t, x), ynn)));
    return ad_mul(t, g, ad_mul(t, z, lx));
}
static inline ad_node ad__atan2_ops(ad_tape *t, ad_node g, ad_node a, ad_node b, ad_node num)
{
    return ad_div(t, ad_mul(t, g, num), ad_add(t, ad_square(t, a), ad_square(t, b)));
}
/* g (1 + s sign(a - b)) / 2: the adjoint of max (s = 1) or min (s = -1),
 * split in halves at a tie as PyTorch's maximum and minimum do */
static inline ad_node ad__minmax_ops(ad_tape *t, ad_node g, ad_node a, ad_node b, double s)
{
    return ad_mul(t, g, ad_add_const(t, ad_scale(t, ad_sign(t, ad_sub(t, a, b)), 0.5 * s), 0.5));
}

#define AD__UNARY_OPS(X)                                                                      \
    X(neg, AD_OP_NEG, 0, -x, -1.0, 0.0, ad_neg(t, g))       /* y = -x              */         \
    X(scale, AD_OP_SCALE, 1, c * x, c, 0.0, ad_scale(t, g, c)) /* y = c x          */         \
    X(addc, AD_OP_ADDC, 1, x + c, 1.0, 0.0, g)              /* y = x + c           */         \
    X(square, AD_OP_SQUARE, 0, x * x, 2.0 * x, 2.0, ad_mul(t, g, ad_scale(t, xn, 2.0)))        \
    X(sqrt, AD_OP_SQRT, 0, sqrt(x), 0.5 / y, -0.25 / (y * y * y),                            \
      ad_div(t, ad_scale(t, g, 0.5), yn))                    /* y' = 1/(2y)         */         \
    X(exp, AD_OP_EXP, 0, exp(x), y, y, ad_mul(t, g, yn))     /* y' = y'' = y        */         \
    X(log, AD_OP_LOG, 0, log(x), 1.0 / x, -1.0 / (x * x), ad_div(t, g, xn)) /* y' = 1/x */     \
    X(tanh, AD_OP_TANH, 0, tanh(x), 1.0 - y * y, -2.0 * y * (1.0 - y * y),                    \
      ad_mul(t, g, ad_add_const(t, ad_neg(t, ad_square(t, yn)), 1.0))) /* y' = 1 - y^2 */      \
    X(sigmoid, AD_OP_SIGMOID, 0, 1.0 / (1.0 + exp(-x)), y * (1.0 - y),                        \
      y * (1.0 - y) * (1.0 - 2.0 * y),                                                        \
      ad_mul(t, g, ad_mul(t, yn, ad_add_const(t, ad_neg(t, yn), 1.0)))) /* y' = y(1-y) */       \
    X(relu, AD_OP_RELU, 0, x > 0.0 ? x : 0.0, x > 0.0 ? 1.0 : 0.0, 0.0,                       \
      ad_mul(t, g, ad_step(t, xn)))                          /* relu'(0) = 0        */         \
    X(abs, AD_OP_ABS, 0, fabs(x), x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0), 0.0,                \
      ad_mul(t, g, ad_sign(t, xn)))                          /* abs'(0) = 0         */         \
    X(powc, AD_OP_POWC, 1, pow(x, c), c == 0.0 ? 0.0 : c * pow(x, c - 1.0),                   \
      c == 0.0 || c == 1.0 ? 0.0 : c * (c - 1.0) * pow(x, c - 2.0),                           \
      c == 0.0 ? ad_nil() : ad_mul(t, g, ad_scale(t, ad_pow_const(t, xn, c - 1.0), c)))        \
    X(step, AD_OP_STEP, 0, x > 0.0 ? 1.0 : (x <= 0.0 ? 0.0 : x), 0.0, 0.0, ad_nil())          \
    X(sign, AD_OP_SIGN, 0, x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x == 0.0 ? 0.0 : x)), 0.0, 0.0, \
      ad_nil())                       /* step, sign: derivative 0 (and NaN stays NaN) */      \
    /* elementwise math: (docs/math.md, "Elementwise math: kinks and domains") */        \
    X(sin, AD_OP_SIN, 0, sin(x), cos(x), -y, ad_mul(t, g, ad_cos(t, xn)))                     \
    X(cos, AD_OP_COS, 0, cos(x), -sin(x), -y, ad_neg(t, ad_mul(t, g, ad_sin(t, xn))))         \
    X(tan, AD_OP_TAN, 0, tan(x), 1.0 + y * y, 2.0 * y * (1.0 + y * y),                        \
      ad_mul(t, g, ad_add_const(t, ad_square(t, yn), 1.0)))  /* y' = 1 + y^2        */         \
    X(asin, AD_OP_ASIN, 0, asin(x), ad__rs1mx2(x), x * ad__cube(ad__rs1mx2(x)),               \
      ad_div(t, g, ad__sqrt1mx2(t, xn)))                     /* y' = 1/sqrt(1-x^2)  */         \
    X(acos, AD_OP_ACOS, 0, acos(x), -ad__rs1mx2(x), -x * ad__cube(ad__rs1mx2(x)),             \
      ad_neg(t, ad_div(t, g, ad__sqrt1mx2(t, xn))))                                           \
    X(atan, AD_OP_ATAN, 0, atan(x), 1.0 / (1.0 + x * x), -2.0 * x / ((1.0 + x * x) * (1.0 + x * x)), \
      ad_div(t, g, ad_add_const(t, ad_square(t, xn), 1.0)))                                   \
    X(sinh, AD_OP_SINH, 0, sinh(x), cosh(x), y, ad_mul(t, g, ad_cosh(t, xn)))                 \
    X(cosh, AD_OP_COSH, 0, cosh(x), sinh(x), y, ad_mul(t, g, ad_sinh(t, xn)))                 \
    X(asinh, AD_OP_ASINH, 0, asinh(x), 1.0 / hypot(x, 1.0), -x * ad__cube(1.0 / hypot(x, 1.0)), \
      ad_div(t, g, ad_hypot(t, xn, ad_scalar(t, 1.0))))      /* y' = 1/hypot(x, 1)  */         \
    X(acosh, AD_OP_ACOSH, 0, acosh(x), 1.0 / (sqrt(x - 1.0) * sqrt(x + 1.0)),                 \
      -x * ad__cube(1.0 / (sqrt(x - 1.0) * sqrt(x + 1.0))),                                   \
      ad_div(t, g, ad_sinh(t, yn)))                          /* y' = 1/sinh(y)      */         \
    X(atanh, AD_OP_ATANH, 0, atanh(x), AD__NAN_AT(y, 1.0 / ((1.0 - x) * (1.0 + x))),          \
      AD__NAN_AT(y, 2.0 * x / (((1.0 - x) * (1.0 + x)) * ((1.0 - x) * (1.0 + x)))),           \
      ad_mul(t, g, ad_square(t, ad_cosh(t, yn))))            /* y' = cosh(y)^2      */         \
    X(log1p, AD_OP_LOG1P, 0, log1p(x), AD__NAN_AT(y, 1.0 / (1.0 + x)),                        \
      AD__NAN_AT(y, -1.0 / ((1.0 + x) * (1.0 + x))),                                          \
      ad_mul(t, g, ad_exp(t, ad_neg(t, yn))))                /* y' = e^-y           */         \
    X(expm1, AD_OP_EXPM1, 0, expm1(x), exp(x), exp(x), ad_mul(t, g, ad_exp(t, xn)))          \
    X(log2, AD_OP_LOG2, 0, log2(x), AD__NAN_AT(y, 1.0 / (x * AD__LN2)),                       \
      AD__NAN_AT(y, -1.0 / (x * x * AD__LN2)),                                                \
      ad_div(t, ad_mul(t, g, ad__nanmask(t, yn)), ad_scale(t, xn, AD__LN2)))                  \
    X(log10, AD_OP_LOG10, 0, log10(x), AD__NAN_AT(y, 1.0 / (x * AD__LN10)),                   \
      AD__NAN_AT(y, -1.0 / (x * x * AD__LN10)),                                               \
      ad_div(t, ad_mul(t, g, ad__nanmask(t, yn)), ad_scale(t, xn, AD__LN10)))                 \
    X(erf, AD_OP_ERF, 0, erf(x), AD__2_SQRTPI * exp(-x * x),                                  \
      -2.0 * x * AD__2_SQRTPI * exp(-x * x),                                                  \
      ad_mul(t, g, ad_scale(t, ad_exp(t, ad_neg(t, ad_square(t, xn))), AD__2_SQRTPI)))        \
    X(erfc, AD_OP_ERFC, 0, erfc(x), -AD__2_SQRTPI * exp(-x * x),                              \
      2.0 * x * AD__2_SQRTPI * exp(-x * x),                                                   \
      ad_mul(t, g, ad_scale(t, ad_exp(t, ad_neg(t, ad_square(t, xn))), -AD__2_SQRTPI)))       \
    X(softplus, AD_OP_SOFTPLUS, 0, x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)), ad__sigm(x), \
      ad__sigm(x) * ad__sigm(-x), ad_mul(t, g, ad_sigmoid(t, xn))) /* y' = sigmoid(x) */       \
    X(gelu, AD_OP_GELU, 0, 0.5 * x * erfc(-x * AD__SQRT1_2), ad__gelu_d(x),                   \
      AD__1_SQRT2PI * exp(-0.5 * x * x) * (2.0 - x * x),                                      \
      ad__gelu_ops(t, g, xn))                 /* x Phi(x); y' = Phi(x) + x phi(x)   */         \
    X(elu, AD_OP_ELU, 1, x > 0.0 ? x : c * expm1(x), x > 0.0 ? 1.0 : c * exp(x),              \
      x > 0.0 ? 0.0 : c * exp(x), ad__elu_ops(t, g, xn, c)) /* elu'(0) = c         */         \
    X(leaky_relu, AD_OP_LEAKY_RELU, 1, x > 0.0 ? x : c * x, x > 0.0 ? 1.0 : c, 0.0,           \
      ad_mul(t, g, ad_add_const(t, ad_scale(t, ad_step(t, xn), 1.0 - c), c))) /* '(0) = c */   \
    X(floor, AD_OP_FLOOR, 0, floor(x), 0.0, 0.0, ad_nil())                                    \
    X(ceil, AD_OP_CEIL, 0, ceil(x), 0.0, 0.0, ad_nil())                                       \
    X(round, AD_OP_ROUND, 0, ad__round_even(x), 0.0, 0.0, ad_nil()) /* half to even  */       \
    X(clamp_min, AD_OP_CLAMP_MIN, 1, c != c ? c : (x < c ? c : x), x >= c ? 1.0 : 0.0, 0.0,   \
      ad_mul(t, g, ad_add_const(t, ad_neg(t, ad_step(t, ad_add_const(t, ad_neg(t, xn), c))), \
                                1.0)))                       /* 1 at x = c          */         \
    X(clamp_max, AD_OP_CLAMP_MAX, 1, c != c ? c : (x > c ? c : x), x <= c ? 1.0 : 0.0, 0.0,   \
      ad_mul(t, g, ad_add_const(t, ad_neg(t, ad_step(t, ad_add_const(t, xn, -c))), 1.0)))

#define AD__BINARY_OPS(X)                                                                     \
    X(add, AD_OP_ADD, x + y, 1.0, 1.0, 0.0, 0.0, 0.0, g, g) /* z = a + b           */         \
    X(sub, AD_OP_SUB, x - y, 1.0, -1.0, 0.0, 0.0, 0.0, g, ad_neg(t, g)) /* z = a - b */       \
    X(mul, AD_OP_MUL, x * y, y, x, 0.0, 1.0, 0.0, ad_mul(t, g, yn), ad_mul(t, g, xn))           \
    X(div, AD_OP_DIV, x / y, 1.0 / y, -z / y, 0.0, -1.0 / (y * y), 2.0 * z / (y * y),         \
      ad_div(t, g, yn), ad_neg(t, ad_div(t, ad_mul(t, g, zn), yn)))                              \
    /* div: dz/db = -a/b^2 = -z/b; d2z/db2 = 2a/b^3 = 2z/b^2 */                               \
    /* elementwise math */                                                                    \
    X(pow, AD_OP_POW, pow(x, y), ad__pow_da(x, y), ad__pow_db(x, y, z), ad__pow_daa(x, y),    \
      ad__pow_dab(x, y), ad__pow_dbb(x, y, z), ad__pow_ga(t, g, xn, yn),                      \
      ad__pow_gb(t, g, xn, yn, zn))                                                           \
    X(atan2, AD_OP_ATAN2, atan2(x, y), ad__atan2_d(x, y, 0), ad__atan2_d(x, y, 1),            \
      ad__atan2_d(x, y, 2), ad__atan2_d(x, y, 3), ad__atan2_d(x, y, 4),                       \
      ad__atan2_ops(t, g, xn, yn, yn), ad_neg(t, ad__atan2_ops(t, g, xn, yn, xn)))            \
    X(hypot, AD_OP_HYPOT, hypot(x, y), x / z, y / z, (y / z) * (y / z) / z,                   \
      -(x / z) * (y / z) / z, (x / z) * (x / z) / z, ad_div(t, ad_mul(t, g, xn), zn),         \
      ad_div(t, ad_mul(t, g, yn), zn))                                                        \
    X(min, AD_OP_MIN, ad__min(x, y), x > y ? 0.0 : (x == y ? 0.5 : 1.0),                      \
      x < y ? 0.0 : (x == y ? 0.5 : 1.0), 0.0, 0.0, 0.0, ad__minmax_ops(t, g, xn, yn, -1.0),  \
      ad__minmax_ops(t, g, xn, yn, 1.0))                                                      \
    X(max, AD_OP_MAX, ad__max(x, y), x < y ? 0.0 : (x == y ? 0.5 : 1.0),                      \
      x > y ? 0.0 : (x == y ? 0.5 : 1.0), 0.0, 0.0, 0.0, ad__minmax_ops(t, g, xn, yn, 1.0),   \
      ad__minmax_ops(t, g, xn, yn, -1.0))  /* a tie gives each operand half      */

/* comparisons: lt le gt ge eq ne: binary lines like those above, in
 * a list of their own. The value is 1 or 0 (a NaN operand: false, but ne
 * true), the derivative 0. A comparison is never recorded with GRAD
 * (ad__is_compare), so the reverse sweeps never meet one and their switch
 * leaves them out; replay evaluates them out of line (ad__cmp_fwd), which
 * keeps the replay loop's jump table blocks for the other ops where they
 * were (W1's replay was up to 1.8x slower with six more inline cases in
 * it, on identical per-op code); the forward sweep gives them exact zero
 * tangents. Everything else (kernels, tensor ops, values at recording)
 * expands this list beside AD__BINARY_OPS. Each is a replay guard
 * (guards.c). */
#define AD__COMPARE_OPS(X)                                                                    \
    X(lt, AD_OP_LT, x < y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),          \
      ad_nil())                                                                               \
    X(le, AD_OP_LE, x <= y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),         \
      ad_nil())                                                                               \
    X(gt, AD_OP_GT, x > y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),          \
      ad_nil())                                                                               \
    X(ge, AD_OP_GE, x >= y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),         \
      ad_nil())                                                                               \
    X(eq, AD_OP_EQ, x == y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),         \
      ad_nil())                                                                               \
    X(ne, AD_OP_NE, x != y ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ((void)g, ad_nil()),         \
      ad_nil())

/* ---- inline scalar kernels: value and adjoint live in the node ---- */

#define AD__SCALAR_UNARY(NAME, CODE, TAKES_C, FWD, DER, D2, GOPS)                                     \
    AD__INLINE double ad__s_##NAME##_val(double x, double y, double c)                        \
    {                                                                                         \
        (void)y, (void)c;                                                                     \
        return (FWD);                                                                         \
    }                                                                                         \
    AD__INLINE void ad__s_##NAME##_fwd(void *const *ch, const double *k, ad__node *o)       \
    {                                                                                         \
        const double x = ad__Nc(ch, ad__a(o->h))->v;                                          \
        const double c = (TAKES_C) ? k[ad__b(o->h)] : 0.0;                                    \
        (void)k;                                                                              \
        o->v = ad__s_##NAME##_val(x, 0.0, c);                                                 \
    }                                                                                         \
    AD__INLINE void ad__s_##NAME##_vjp(void *const *ch, const double *k, const ad__node *o) \
    {                                                                                         \
        ad__node *a = ad__Nc(ch, ad__a(o->h));                                                \
        const double x = a->v, y = o->v;                                                      \
        const double c = (TAKES_C) ? k[ad__b(o->h)] : 0.0;                                    \
        (void)k;                                                                              \
        (void)x, (void)y, (void)c;                                                            \
        a->g += o->g * (DER);                                                                 \
    }                                                                                         \
    /* tangents, K directions: to = f'(x) ta */                                               \
    AD__INLINE void ad__s_##NAME##_jvp(void *const *ch, const double *k, const ad__node *o,   \
                                       double *restrict to, const double *restrict ta,        \
                                       size_t K)                                              \
    {                                                                                         \
        const double x = ad__Nc(ch, ad__a(o->h))->v, y = o->v;                                \
        const double c = (TAKES_C) ? k[ad__b(o->h)] : 0.0;                                    \
        (void)k, (void)x, (void)y, (void)c;                                                   \
        const double d = (DER);                                                               \
        for (size_t j = 0; j < K; j++)                                                        \
            to[j] = d * ta[j];                                                                \
    }                                                                                         \
    /* forward over reverse: ga += g f'; gta += gto f' + g f'' ta */                          \
    AD__INLINE void ad__s_##NAME##_hvp(void *const *ch, const double *k, const ad__node *o,   \
                                       const double *gto, double *gta, const double *ta,      \
                                       size_t K)                                              \
    {                                                                                         \
        ad__node *a = ad__Nc(ch, ad__a(o->h));                                                \
        const double x = a->v, y = o->v, g = o->g;                                            \
        const double c = (TAKES_C) ? k[ad__b(o->h)] : 0.0;                                    \
        (void)k, (void)x, (void)y, (void)c;                                                   \
        const double d = (DER), gd2 = g == 0.0 ? 0.0 : g * (D2);                              \
        a->g += g * d;                                                                        \
        for (size_t j = 0; j < K; j++)                                                        \
            gta[j] += gto[j] * d + gd2 * ta[j];                                               \
    }

#define AD__SCALAR_BINARY(NAME, CODE, FWD, DA, DB, DAA, DAB, DBB, GA, GB)                                          \
    AD__INLINE double ad__s_##NAME##_val(double x, double y, double c)                        \
    {                                                                                         \
        (void)c;                                                                              \
        return (FWD);                                                                         \
    }                                                                                         \
    AD__INLINE void ad__s_##NAME##_fwd(void *const *ch, const double *k, ad__node *o)       \
    {                                                                                         \
        const double x = ad__Nc(ch, ad__a(o->h))->v, y = ad__Nc(ch, ad__b(o->h))->v;          \
        (void)k;                                                                              \
        o->v = ad__s_##NAME##_val(x, y, 0.0);                                                 \
    }                                                                                         \
    AD__INLINE void ad__s_##NAME##_vjp(void *const *ch, const double *k, const ad__node *o) \
    {                                                                                         \
        ad__node *a = ad__Nc(ch, ad__a(o->h)), *b = ad__Nc(ch, ad__b(o->h));                  \
        (void)k;                                                                              \
        const double x = a->v, y = b->v, z = o->v, g = o->g;                                  \
        (void)x, (void)y, (void)z;                                                            \
        a->g += g * (DA);                                                                     \
        b->g += g * (DB);                                                                     \
    }                                                                                         \
    /* tangents: to = dz/dx ta + dz/dy tb */                                                  \
    AD__INLINE void ad__s_##NAME##_jvp(void *const *ch, const ad__node *o, double *to,        \
                                       const double *ta, const double *tb, size_t K)          \
    {                                                                                         \
        const double x = ad__Nc(ch, ad__a(o->h))->v, y = ad__Nc(ch, ad__b(o->h))->v;          \
        const double z = o->v;                                                                \
        (void)x, (void)y, (void)z;                                                            \
        const double da = (DA), db = (DB);                                                    \
        for (size_t j = 0; j < K; j++)                                                        \
            to[j] = da * ta[j] + db * tb[j];                                                  \
    }                                                                                         \
    /* forward over reverse; gta and gtb may be one array (mul(x, x)) */                      \
    AD__INLINE void ad__s_##NAME##_hvp(void *const *ch, const ad__node *o, const double *gto, \
                                       double *gta, double *gtb, const double *ta,            \
                                       const double *tb, size_t K)                            \
    {                                                                                         \
        ad__node *a = ad__Nc(ch, ad__a(o->h)), *b = ad__Nc(ch, ad__b(o->h));                  \
        const double x = a->v, y = b->v, z = o->v, g = o->g;                                  \
        (void)x, (void)y, (void)z;                                                            \
        const double da = (DA), db = (DB);                                                    \
        const double gaa = g * (DAA), gab = g * (DAB), gbb = g * (DBB);                       \
        a->g += g * da;                                                                       \
        b->g += g * db;                                                                       \
        for (size_t j = 0; j < K; j++) {                                                      \
            const double u = ta[j], v = tb[j], w = gto[j];                                    \
            gta[j] += w * da + gaa * u + gab * v;                                             \
            gtb[j] += w * db + gab * u + gbb * v;                                             \
        }                                                                                     \
    }

AD__UNARY_OPS(AD__SCALAR_UNARY)
AD__BINARY_OPS(AD__SCALAR_BINARY)
AD__COMPARE_OPS(AD__SCALAR_BINARY)

/* Dispatch on the op code of an inline node, for replay (the sweep has
 * its own switch, on the header's low byte). Leaves do nothing. */
#define AD__CASE_FWD_U(NAME, CODE, ...) case CODE: ad__s_##NAME##_fwd(ch, k, o); break;
#define AD__CASE_FWD_B(NAME, CODE, ...) case CODE: ad__s_##NAME##_fwd(ch, k, o); break;

/* A comparison's value, out of the replay loop (see AD__COMPARE_OPS): its
 * codes share one case of the jump table, which calls this. */
#define AD__CASE_CMP(NAME, CODE, ...) case CODE:
#if defined(__GNUC__)
__attribute__((noinline, cold, unused))
#endif
static void ad__cmp_fwd(void *const *ch, const double *k, ad__node *o)
{
    switch (ad__opc(o->h)) {
        AD__COMPARE_OPS(AD__CASE_FWD_B)
    default:
        break;
    }
}

/* ch: the node chunk table; k: the op constants (t->consts). */
AD__INLINE void ad__sfwd(void *const *ch, const double *k, ad__node *o)
{
    switch (ad__opc(o->h)) {
        AD__UNARY_OPS(AD__CASE_FWD_U)
        AD__BINARY_OPS(AD__CASE_FWD_B)
    case AD_OP_LEAF:
        break;
    AD__COMPARE_OPS(AD__CASE_CMP) /* out of line */
        ad__cmp_fwd(ch, k, o);
        break;
    default: /* an inline node only ever holds a leaf or one of the ops above */
        AD__UNREACHABLE();
    }
}

/* The value of op code on operand values x (and y) with constant c; used
 * when recording, where the operands are already at hand. */
#define AD__CASE_VAL(NAME, CODE, ...) case CODE: return ad__s_##NAME##_val(x, y, c);
AD__INLINE double ad__sval(unsigned code, double x, double y, double c)
{
    switch (code) {
        AD__UNARY_OPS(AD__CASE_VAL)
        AD__BINARY_OPS(AD__CASE_VAL)
        AD__COMPARE_OPS(AD__CASE_VAL)
    default:
        return 0.0;
    }
}

#endif
