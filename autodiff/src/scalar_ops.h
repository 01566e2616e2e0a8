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
      ad_nil())                       /* step, sign: derivative 0 (and NaN stays NaN) */

#define AD__BINARY_OPS(X)                                                                     \
    X(add, AD_OP_ADD, x + y, 1.0, 1.0, 0.0, 0.0, 0.0, g, g) /* z = a + b           */         \
    X(sub, AD_OP_SUB, x - y, 1.0, -1.0, 0.0, 0.0, 0.0, g, ad_neg(t, g)) /* z = a - b */       \
    X(mul, AD_OP_MUL, x * y, y, x, 0.0, 1.0, 0.0, ad_mul(t, g, yn), ad_mul(t, g, xn))           \
    X(div, AD_OP_DIV, x / y, 1.0 / y, -z / y, 0.0, -1.0 / (y * y), 2.0 * z / (y * y),         \
      ad_div(t, g, yn), ad_neg(t, ad_div(t, ad_mul(t, g, zn), yn)))                              \
    /* div: dz/db = -a/b^2 = -z/b; d2z/db2 = 2a/b^3 = 2z/b^2 */

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

/* Dispatch on the op code of an inline node, for replay (the sweep has
 * its own switch, on the header's low byte). Leaves do nothing. */
#define AD__CASE_FWD_U(NAME, CODE, ...) case CODE: ad__s_##NAME##_fwd(ch, k, o); break;
#define AD__CASE_FWD_B(NAME, CODE, ...) case CODE: ad__s_##NAME##_fwd(ch, k, o); break;

/* ch: the node chunk table; k: the op constants (t->consts). */
AD__INLINE void ad__sfwd(void *const *ch, const double *k, ad__node *o)
{
    switch (ad__opc(o->h)) {
        AD__UNARY_OPS(AD__CASE_FWD_U)
        AD__BINARY_OPS(AD__CASE_FWD_B)
    case AD_OP_LEAF:
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
    default:
        return 0.0;
    }
}

#endif
