/* scalar_ops.h -- the elementwise ops, each defined once by its formula.
 *
 * The lists below are the single source of every elementwise forward and
 * derivative: ops_elementwise.c generates the tensor kernels from them,
 * and this header generates the inline scalar kernels and their dispatch,
 * which the sweep and replay loops inline (no call per scalar node).
 *
 * Unary:  X(name, CODE, takes_const, y = f(x, c), dy/dx = f'(x, y, c))
 * Binary: X(name, CODE, z = f(x, y), dz/dx (x, y, z), dz/dy (x, y, z))
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
    X(neg, AD_OP_NEG, 0, -x, -1.0)                          /* y = -x              */         \
    X(scale, AD_OP_SCALE, 1, c * x, c)                      /* y = c x             */         \
    X(addc, AD_OP_ADDC, 1, x + c, 1.0)                      /* y = x + c           */         \
    X(square, AD_OP_SQUARE, 0, x * x, 2.0 * x)              /* y = x^2             */         \
    X(sqrt, AD_OP_SQRT, 0, sqrt(x), 0.5 / y)                /* y' = 1/(2y)         */         \
    X(exp, AD_OP_EXP, 0, exp(x), y)                         /* y' = y              */         \
    X(log, AD_OP_LOG, 0, log(x), 1.0 / x)                   /* y' = 1/x            */         \
    X(tanh, AD_OP_TANH, 0, tanh(x), 1.0 - y * y)            /* y' = 1 - y^2        */         \
    X(sigmoid, AD_OP_SIGMOID, 0, 1.0 / (1.0 + exp(-x)), y * (1.0 - y)) /* y' = y(1-y) */      \
    X(relu, AD_OP_RELU, 0, x > 0.0 ? x : 0.0, x > 0.0 ? 1.0 : 0.0)     /* relu'(0) = 0 */     \
    X(abs, AD_OP_ABS, 0, fabs(x), x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0)) /* abs'(0) = 0 */    \
    X(powc, AD_OP_POWC, 1, pow(x, c), c == 0.0 ? 0.0 : c * pow(x, c - 1.0)) /* (x^0)' = 0 */

#define AD__BINARY_OPS(X)                                                                     \
    X(add, AD_OP_ADD, x + y, 1.0, 1.0)                      /* z = a + b           */         \
    X(sub, AD_OP_SUB, x - y, 1.0, -1.0)                     /* z = a - b           */         \
    X(mul, AD_OP_MUL, x * y, y, x)                          /* z = a b             */         \
    X(div, AD_OP_DIV, x / y, 1.0 / y, -z / y)               /* dz/db = -a/b^2 = -z/b */

/* ---- inline scalar kernels: value and adjoint live in the node ---- */

#define AD__SCALAR_UNARY(NAME, CODE, TAKES_C, FWD, DER)                                       \
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
    }

#define AD__SCALAR_BINARY(NAME, CODE, FWD, DA, DB)                                            \
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
