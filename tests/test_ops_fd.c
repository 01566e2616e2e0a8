/* test_ops_fd.c -- every built-in op against central finite differences.
 *
 * One table row per (op, shape) case. Each case records the op on random
 * inputs (fixed seed), reduces a non-scalar output to a scalar with a fixed
 * random weighting (L = out . w), sweeps, and compares every gradient
 * element with (L(x + h e_i) - L(x - h e_i)) / 2h, each L from a fresh
 * recording. The forward value is also checked against a plain-C
 * reference, and recording through ad_apply_named must give bit-identical
 * values and gradients. A failure names the op and the shape. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <string.h>

/* How an operand is made. */
enum kind {
    VAR,   /* ad_scalar_var (scalar: inline node) or ad_variable            */
    CONST, /* ad_scalar or ad_constant: must get no gradient                */
    PARAM, /* ad_param: caller buffers (a scalar param is an EXT node)       */
    ALIAS  /* the last operand is the one before it again (x * x)            */
};

/* Where its values are drawn: keeps inputs off kinks and out of domains. */
enum dom {
    ANY,  /* [-2, 2]                                  */
    POS,  /* [0.5, 2]                                 */
    AWAY, /* +-[0.3, 2]: off 0 (relu, abs, divisors)  */
    PROB, /* positive rows summing to 1 (xent target) */
    SQUARE, /* a well-conditioned square matrix whose LU needs row
               exchanges: a diagonally dominant one, rows reversed      */
    SPD,    /* symmetric positive definite: M M^T / n + I        */
    UNIT, /* [-0.9, 0.9]: inside asin, acos, atanh, log1p, tan's domains */
    GT1   /* [1.1, 3]: inside acosh's domain  */
};

typedef struct opcase {
    const char *op;
    const char *label;
    int nin;
    ad_shape shape[3];
    int kind[3];
    int dom[3];
    double c;
} opcase;

/* Shapes as constant initializers. */
#define S0 {1, 1, 0}
#define V(n) {n, 1, 1}
#define M(r, c) {r, c, 2}

#define U(op, lab, s, k, d, c) {op, lab, 1, {s, S0, S0}, {k, VAR, VAR}, {d, ANY, ANY}, c}
#define B(op, lab, s0, k0, d0, s1, k1, d1)                                                    \
    {op, lab, 2, {s0, s1, S0}, {k0, k1, VAR}, {d0, d1, ANY}, 0.0}
#define BA(op, lab, s, d) {op, lab, 2, {s, s, S0}, {VAR, ALIAS, VAR}, {d, d, ANY}, 0.0}
#define T(op, lab, s0, k0, s1, k1, s2, k2) {op, lab, 3, {s0, s1, s2}, {k0, k1, k2}, {ANY, ANY, ANY}, 0.0}

/* Every unary elementwise op on every shape form. */
#define UNARY_SET(op, d, c)                                                                   \
    U(op, "scalar (inline)", S0, VAR, d, c), U(op, "scalar (param, tensor path)", S0, PARAM, d, c), \
        U(op, "1x1 matrix", M(1, 1), VAR, d, c), U(op, "vector of 1", V(1), VAR, d, c),       \
        U(op, "vector of 7", V(7), VAR, d, c), U(op, "3x5", M(3, 5), VAR, d, c),              \
        U(op, "3x5 param", M(3, 5), PARAM, d, c)

/* Every binary elementwise op on same shapes and scalar broadcasts; db is
 * the domain of the second operand (AWAY for a divisor). */
#define BINARY_SET(op, db)                                                                    \
    B(op, "scalar (inline)", S0, VAR, ANY, S0, VAR, db),                                      \
        B(op, "scalar (inline), b constant", S0, VAR, ANY, S0, CONST, db),                    \
        B(op, "scalar (inline), a constant", S0, CONST, ANY, S0, VAR, db),                    \
        BA(op, "scalar (inline), a op a", S0, db),                                            \
        B(op, "scalar param op inline scalar (tensor path)", S0, PARAM, ANY, S0, VAR, db),    \
        B(op, "1x1 matrix", M(1, 1), VAR, ANY, M(1, 1), VAR, db),                             \
        B(op, "vector of 1", V(1), VAR, ANY, V(1), VAR, db),                                  \
        B(op, "vector of 7", V(7), VAR, ANY, V(7), VAR, db),                                  \
        B(op, "3x5", M(3, 5), VAR, ANY, M(3, 5), VAR, db),                                    \
        B(op, "3x5, b constant", M(3, 5), VAR, ANY, M(3, 5), CONST, db),                      \
        B(op, "3x5, a constant", M(3, 5), CONST, ANY, M(3, 5), VAR, db),                      \
        B(op, "3x5 params", M(3, 5), PARAM, ANY, M(3, 5), PARAM, db),                         \
        BA(op, "3x5, a op a", M(3, 5), db),                                                   \
        B(op, "scalar op 3x5", S0, VAR, ANY, M(3, 5), VAR, db),                               \
        B(op, "3x5 op scalar", M(3, 5), VAR, ANY, S0, VAR, db),                               \
        B(op, "scalar op vector of 7", S0, VAR, ANY, V(7), VAR, db),                          \
        B(op, "vector of 7 op scalar", V(7), VAR, ANY, S0, VAR, db),                          \
        B(op, "constant scalar op 3x5", S0, CONST, ANY, M(3, 5), VAR, db),                    \
        B(op, "3x5 op constant scalar", M(3, 5), VAR, ANY, S0, CONST, db),                    \
        B(op, "scalar op 1x1", S0, VAR, ANY, M(1, 1), VAR, db),                               \
        B(op, "scalar param op vector of 7", S0, PARAM, ANY, V(7), VAR, db)

static const opcase cases[] = {
    BINARY_SET("add", ANY),
    B("add", "3x5 + row vector of 5", M(3, 5), VAR, ANY, V(5), VAR, ANY),
    B("add", "3x5 + constant row vector of 5", M(3, 5), VAR, ANY, V(5), CONST, ANY),
    B("add", "constant 3x5 + row vector of 5", M(3, 5), CONST, ANY, V(5), VAR, ANY),
    B("add", "3x5 param + row vector param of 5", M(3, 5), PARAM, ANY, V(5), PARAM, ANY),
    B("add", "1x5 + row vector of 5", M(1, 5), VAR, ANY, V(5), VAR, ANY),
    B("add", "4x1 + row vector of 1", M(4, 1), VAR, ANY, V(1), VAR, ANY),
    B("add", "1x1 + row vector of 1", M(1, 1), VAR, ANY, V(1), VAR, ANY),
    BINARY_SET("sub", ANY),
    BINARY_SET("mul", ANY),
    BINARY_SET("div", AWAY),

    UNARY_SET("neg", ANY, 0.0),
    UNARY_SET("scale", ANY, -1.7),
    UNARY_SET("addc", ANY, 0.3),
    UNARY_SET("square", ANY, 0.0),
    UNARY_SET("sqrt", POS, 0.0),
    UNARY_SET("exp", ANY, 0.0),
    UNARY_SET("log", POS, 0.0),
    UNARY_SET("tanh", ANY, 0.0),
    UNARY_SET("sigmoid", ANY, 0.0),
    UNARY_SET("relu", AWAY, 0.0),
    UNARY_SET("abs", AWAY, 0.0),
    UNARY_SET("powc", POS, 2.5),
    U("powc", "vector of 7, p = 3, any sign", V(7), VAR, AWAY, 3.0),
    U("powc", "scalar (inline), p = 3, any sign", S0, VAR, AWAY, 3.0),
    U("powc", "vector of 7, p = -1.5", V(7), VAR, POS, -1.5),
    U("powc", "scalar (inline), p = 0.5", S0, VAR, POS, 0.5),
    U("powc", "3x5, p = 1", M(3, 5), VAR, ANY, 1.0),
/* a binary math op: a from da, b from db; "a op a" from da */
#define MATH_BINARY_SET(op, da, db)                                                           \
    B(op, "scalar (inline)", S0, VAR, da, S0, VAR, db),                                       \
        B(op, "scalar (inline), b constant", S0, VAR, da, S0, CONST, db),                     \
        B(op, "scalar (inline), a constant", S0, CONST, da, S0, VAR, db),                     \
        BA(op, "scalar (inline), a op a", S0, da),                                            \
        B(op, "scalar param op inline scalar (tensor path)", S0, PARAM, da, S0, VAR, db),     \
        B(op, "1x1 matrix", M(1, 1), VAR, da, M(1, 1), VAR, db),                              \
        B(op, "vector of 7", V(7), VAR, da, V(7), VAR, db),                                   \
        B(op, "3x5", M(3, 5), VAR, da, M(3, 5), VAR, db),                                     \
        B(op, "3x5, b constant", M(3, 5), VAR, da, M(3, 5), CONST, db),                       \
        B(op, "3x5, a constant", M(3, 5), CONST, da, M(3, 5), VAR, db),                       \
        B(op, "3x5 params", M(3, 5), PARAM, da, M(3, 5), PARAM, db),                          \
        BA(op, "3x5, a op a", M(3, 5), da),                                                   \
        B(op, "scalar op 3x5", S0, VAR, da, M(3, 5), VAR, db),                                \
        B(op, "3x5 op scalar", M(3, 5), VAR, da, S0, VAR, db),                                \
        B(op, "vector of 7 op constant scalar", V(7), VAR, da, S0, CONST, db),                \
        B(op, "scalar param op vector of 7", S0, PARAM, da, V(7), VAR, db),                  \
        B(op, "3x5 op row vector of 5", M(3, 5), VAR, da, V(5), VAR, db),                     \
        B(op, "row vector of 5 op 3x5", V(5), VAR, da, M(3, 5), VAR, db),                     \
        B(op, "3x5 op column 3x1", M(3, 5), VAR, da, M(3, 1), VAR, db),                       \
        B(op, "column 4x1 op row 1x5 (4x5)", M(4, 1), VAR, da, M(1, 5), VAR, db)
    UNARY_SET("sin", ANY, 0.0),
    UNARY_SET("cos", ANY, 0.0),
    UNARY_SET("tan", UNIT, 0.0),
    UNARY_SET("asin", UNIT, 0.0),
    UNARY_SET("acos", UNIT, 0.0),
    UNARY_SET("atan", ANY, 0.0),
    UNARY_SET("sinh", ANY, 0.0),
    UNARY_SET("cosh", ANY, 0.0),
    UNARY_SET("asinh", ANY, 0.0),
    UNARY_SET("acosh", GT1, 0.0),
    UNARY_SET("atanh", UNIT, 0.0),
    UNARY_SET("log1p", UNIT, 0.0),
    UNARY_SET("expm1", ANY, 0.0),
    UNARY_SET("log2", POS, 0.0),
    UNARY_SET("log10", POS, 0.0),
    UNARY_SET("erf", ANY, 0.0),
    UNARY_SET("erfc", ANY, 0.0),
    UNARY_SET("softplus", ANY, 0.0),
    UNARY_SET("gelu", ANY, 0.0),
    UNARY_SET("elu", AWAY, 1.0),
    U("elu", "vector of 7, alpha = 0.7", V(7), VAR, AWAY, 0.7),
    U("elu", "scalar (inline), alpha = 0.7", S0, VAR, AWAY, 0.7),
    UNARY_SET("leaky_relu", AWAY, 0.1),
    U("leaky_relu", "3x5, slope = -0.5", M(3, 5), VAR, AWAY, -0.5),
    UNARY_SET("floor", ANY, 0.0),
    UNARY_SET("ceil", ANY, 0.0),
    UNARY_SET("round", ANY, 0.0),
    UNARY_SET("clamp_min", ANY, 0.3),
    UNARY_SET("clamp_max", ANY, -0.4),
    MATH_BINARY_SET("pow", POS, ANY),
    MATH_BINARY_SET("atan2", AWAY, ANY),
    MATH_BINARY_SET("hypot", ANY, ANY),
    MATH_BINARY_SET("min", ANY, ANY),
    MATH_BINARY_SET("max", ANY, ANY),
#define COND01 100 /* a domain: 0 or 1, half each (select's cond; ties) */
#define SEL(lab, s0, s1, k1, s2, k2)                                                          \
    {"select", lab, 3, {s0, s1, s2}, {CONST, k1, k2}, {COND01, ANY, ANY}, 0.0}
#define COMPARE_SET(op)                                                                       \
    BINARY_SET(op, ANY), B(op, "3x5 of 0 and 1: ties, constants", M(3, 5), CONST, COND01,     \
                           M(3, 5), CONST, COND01),                                           \
        B(op, "scalar (inline) 0 or 1: a tie or not, constants", S0, CONST, COND01, S0,       \
          CONST, COND01)
    COMPARE_SET("lt"),
    COMPARE_SET("le"),
    COMPARE_SET("gt"),
    COMPARE_SET("ge"),
    COMPARE_SET("eq"),
    COMPARE_SET("ne"),
    SEL("scalars", S0, S0, VAR, S0, VAR),
    SEL("1x1 matrices", M(1, 1), M(1, 1), VAR, M(1, 1), VAR),
    SEL("vectors of 7", V(7), V(7), VAR, V(7), VAR),
    SEL("3x5", M(3, 5), M(3, 5), VAR, M(3, 5), VAR),
    SEL("scalar cond, 3x5 branches", S0, M(3, 5), VAR, M(3, 5), VAR),
    SEL("3x5 cond and b, scalar a", M(3, 5), S0, VAR, M(3, 5), VAR),
    SEL("3x5 cond and a, scalar b", M(3, 5), M(3, 5), VAR, S0, VAR),
    SEL("vector cond, scalar a and b", V(7), S0, VAR, S0, VAR),
    SEL("a and b one node", V(7), V(7), VAR, V(7), ALIAS),
    SEL("3x5 params", M(3, 5), M(3, 5), PARAM, M(3, 5), PARAM),
    SEL("constant a", V(7), V(7), CONST, V(7), VAR),
    SEL("scalar param a, vector b", V(7), S0, PARAM, V(7), VAR),
    /* structure */
#define IDXL(n) (200 + (n)) /* an index operand: the values idx_lists[n] */
#define BI(op, lab, s0, k0, s1, d1, c)                                                        \
    {op, lab, 2, {s0, s1, S0}, {k0, CONST, VAR}, {ANY, d1, ANY}, c}
#define TI(op, lab, s0, k0, s1, d1, s2, k2)                                                   \
    {op, lab, 3, {s0, s1, s2}, {k0, CONST, k2}, {ANY, d1, ANY}, 0.0}
#define BC(lab, s0, k0, s1, k1, c) {"concat", lab, 2, {s0, s1, S0}, {k0, k1, VAR}, {ANY, ANY, ANY}, c}
/* Every broadcast form of a binary op, beside BINARY_SET's scalars. */
#define BCAST_SET(op, db)                                                                     \
    B(op, "3x5 op row vector of 5", M(3, 5), VAR, ANY, V(5), VAR, db),                        \
        B(op, "row vector of 5 op 3x5", V(5), VAR, ANY, M(3, 5), VAR, db),                    \
        B(op, "3x5 op column 3x1", M(3, 5), VAR, ANY, M(3, 1), VAR, db),                      \
        B(op, "column 3x1 op 3x5", M(3, 1), VAR, ANY, M(3, 5), VAR, db),                      \
        B(op, "3x5 op row 1x5", M(3, 5), VAR, ANY, M(1, 5), VAR, db),                         \
        B(op, "row 1x5 op 3x5", M(1, 5), VAR, ANY, M(3, 5), VAR, db),                         \
        B(op, "row vector of 5 op column 4x1 (4x5)", V(5), VAR, ANY, M(4, 1), VAR, db),       \
        B(op, "column 4x1 op row 1x5 (4x5)", M(4, 1), VAR, ANY, M(1, 5), VAR, db),            \
        B(op, "vector of 1 op vector of 7", V(1), VAR, ANY, V(7), VAR, db),                   \
        B(op, "3x5 op 1x1", M(3, 5), VAR, ANY, M(1, 1), VAR, db),                             \
        B(op, "constant column 3x1 op 3x5", M(3, 1), CONST, ANY, M(3, 5), VAR, db),           \
        B(op, "3x5 param op column param 3x1", M(3, 5), PARAM, ANY, M(3, 1), PARAM, db),      \
        B(op, "column 3x1 op constant row vector of 5", M(3, 1), VAR, ANY, V(5), CONST, db)
    BCAST_SET("add", ANY),
    BCAST_SET("sub", ANY),
    BCAST_SET("mul", ANY),
    BCAST_SET("div", AWAY),
    U("reshape", "3x4 to 2x6", M(3, 4), VAR, ANY, 6.0),
    U("reshape", "vector of 6 to 3x2", V(6), VAR, ANY, 2.0),
    U("reshape", "2x3 to a vector", M(2, 3), VAR, ANY, 0.0),
    U("reshape", "1x1 to a scalar", M(1, 1), VAR, ANY, -1.0),
    U("reshape", "scalar (inline) to a vector of 1", S0, VAR, ANY, 0.0),
    U("reshape", "3x4 param to 4x3", M(3, 4), PARAM, ANY, 3.0),
    BI("slice", "elements 2..5 of a vector of 7", V(7), VAR, V(1), IDXL(4), 4.0),
    BI("slice", "all of a vector of 1", V(1), VAR, V(1), IDXL(3), 1.0),
    BI("slice", "1x1 of 1x1", M(1, 1), VAR, V(2), IDXL(6), 3.0),
    BI("slice", "rows 1..2 of 4x5", M(4, 5), VAR, V(2), IDXL(7), 17.0),
    BI("slice", "rows 1..2, columns 1..3 of 4x5", M(4, 5), VAR, V(2), IDXL(5), 15.0),
    BI("slice", "column 2 of 4x5", M(4, 5), VAR, V(2), IDXL(8), 25.0),
    BI("slice", "rows 1..2 of a 3x5 param", M(3, 5), PARAM, V(2), IDXL(7), 17.0),
    TI("slice_add", "vector of 3 into a vector of 7 at 2", V(7), VAR, V(1), IDXL(4), V(3), VAR),
    TI("slice_add", "2x3 into 4x5 at (1, 2)", M(4, 5), VAR, V(2), IDXL(9), M(2, 3), VAR),
    TI("slice_add", "1x1 into 1x1", M(1, 1), VAR, V(2), IDXL(6), M(1, 1), VAR),
    TI("slice_add", "vector of 1 into a vector of 1", V(1), VAR, V(1), IDXL(3), V(1), VAR),
    TI("slice_add", "3x5 param onto a constant 3x5", M(3, 5), CONST, V(2), IDXL(6), M(3, 5),
       PARAM),
    TI("slice_add", "2x3 into a constant 4x5 at (1, 1)", M(4, 5), CONST, V(2), IDXL(5), M(2, 3),
       VAR),
    BI("take", "elements 3 0 3 6 of a vector of 7 (3 twice)", V(7), VAR, V(4), IDXL(0), 0.0),
    BI("take", "element 4 of a vector of 7 (a scalar)", V(7), VAR, S0, IDXL(1), 0.0),
    BI("take", "a vector of 1 three times", V(1), VAR, V(3), IDXL(10), 0.0),
    BI("take", "rows 1 0 1 2 1 of 3x4", M(3, 4), VAR, V(5), IDXL(2), 0.0),
    BI("take", "row 0 of 1x1 (a vector of 1)", M(1, 1), VAR, S0, IDXL(3), 0.0),
    BI("take", "rows 2 0 of a 3x4 param", M(3, 4), PARAM, V(2), IDXL(11), 0.0),
    TI("index_add", "vector of 7 at 3 0 3 6", V(7), VAR, V(4), IDXL(0), V(4), VAR),
    TI("index_add", "vector of 7 at 4, a scalar v", V(7), VAR, S0, IDXL(1), S0, VAR),
    TI("index_add", "3x4 at rows 1 0 1 2 1", M(3, 4), VAR, V(5), IDXL(2), M(5, 4), VAR),
    TI("index_add", "1x1 at row 0", M(1, 1), VAR, S0, IDXL(3), V(1), VAR),
    TI("index_add", "param rows 2 0 onto a constant 3x4", M(3, 4), CONST, V(2), IDXL(11),
       M(2, 4), PARAM),
    BC("vectors of 3 and 4", V(3), VAR, V(4), VAR, 0.0),
    BC("scalar (inline) and a vector of 2", S0, VAR, V(2), VAR, 0.0),
    BC("scalars (inline)", S0, VAR, S0, VAR, 0.0),
    BC("2x3 over 1x3 (axis 0)", M(2, 3), VAR, M(1, 3), VAR, 0.0),
    BC("3x2 beside 3x4 (axis 1)", M(3, 2), VAR, M(3, 4), VAR, 1.0),
    BC("2x3 over a vector of 3 (one row)", M(2, 3), VAR, V(3), VAR, 0.0),
    BC("a vector of 3 (one row) over 2x3", V(3), VAR, M(2, 3), VAR, 0.0),
    BC("1x1 beside 1x1", M(1, 1), VAR, M(1, 1), VAR, 1.0),
    BC("constant 2x2 beside a 2x3 param", M(2, 2), CONST, M(2, 3), PARAM, 1.0),
    BA("concat", "a vector of 3 and itself", V(3), ANY),
    /* reductions along an axis */
#define AXIS_SET(op)                                                                          \
    U(op, "vector of 7", V(7), VAR, ANY, 0.0), U(op, "scalar (inline)", S0, VAR, ANY, 0.0),   \
        U(op, "1x1, axis 0", M(1, 1), VAR, ANY, 0.0), U(op, "3x5, axis 0", M(3, 5), VAR, ANY, 0.0), \
        U(op, "3x5, axis 1", M(3, 5), VAR, ANY, 1.0), U(op, "5x1, axis 1", M(5, 1), VAR, ANY, 1.0), \
        U(op, "1x4, axis 0", M(1, 4), VAR, ANY, 0.0),                                         \
        U(op, "3x5 param, axis 1", M(3, 5), PARAM, ANY, 1.0)
#define ROWS_SET(op)                                                                          \
    U(op, "vector of 7", V(7), VAR, ANY, 0.0), U(op, "vector of 1", V(1), VAR, ANY, 0.0),     \
        U(op, "1x1", M(1, 1), VAR, ANY, 0.0), U(op, "3x5, one sample per row", M(3, 5), VAR, ANY, 0.0), \
        U(op, "5x1", M(5, 1), VAR, ANY, 0.0), U(op, "3x5 param", M(3, 5), PARAM, ANY, 0.0)
    AXIS_SET("sum_axis"),
    AXIS_SET("mean_axis"),
    AXIS_SET("max_axis"),
    AXIS_SET("min_axis"),
    AXIS_SET("max_mask"),
    ROWS_SET("softmax"),
    ROWS_SET("log_softmax"),
    U("norm", "scalar (inline)", S0, VAR, AWAY, 0.0),
    U("norm", "vector of 7", V(7), VAR, ANY, 0.0),
    U("norm", "1x1", M(1, 1), VAR, AWAY, 0.0),
    U("norm", "3x5", M(3, 5), VAR, ANY, 0.0),
    U("norm", "3x5 param", M(3, 5), PARAM, ANY, 0.0),
    B("solve", "1x1 and vector of 1", M(1, 1), VAR, SQUARE, V(1), VAR, ANY),
    B("solve", "4x4 and vector of 4", M(4, 4), VAR, SQUARE, V(4), VAR, ANY),
    B("solve", "4x4 and 4x3", M(4, 4), VAR, SQUARE, M(4, 3), VAR, ANY),
    B("solve", "1x1 and 1x3", M(1, 1), VAR, SQUARE, M(1, 3), VAR, ANY),
    B("solve", "constant 4x4, vector of 4", M(4, 4), CONST, SQUARE, V(4), VAR, ANY),
    B("solve", "4x4, constant 4x2", M(4, 4), VAR, SQUARE, M(4, 2), CONST, ANY),
    B("solve", "3x3 param, 3x2 param", M(3, 3), PARAM, SQUARE, M(3, 2), PARAM, ANY),
    BA("solve", "4x4 against itself", M(4, 4), SQUARE),
    B("solve_spd", "1x1 and vector of 1", M(1, 1), VAR, SPD, V(1), VAR, ANY),
    B("solve_spd", "4x4 and vector of 4", M(4, 4), VAR, SPD, V(4), VAR, ANY),
    B("solve_spd", "4x4 and 4x3", M(4, 4), VAR, SPD, M(4, 3), VAR, ANY),
    B("solve_spd", "constant 4x4, vector of 4", M(4, 4), CONST, SPD, V(4), VAR, ANY),
    B("solve_spd", "4x4, constant 4x2", M(4, 4), VAR, SPD, M(4, 2), CONST, ANY),
    B("solve_spd", "3x3 param, 3x2 param", M(3, 3), PARAM, SPD, M(3, 2), PARAM, ANY),
    BA("solve_spd", "4x4 against itself", M(4, 4), SPD),
    U("logdet", "1x1", M(1, 1), VAR, SQUARE, 0.0),
    U("logdet", "4x4 (row exchanges)", M(4, 4), VAR, SQUARE, 0.0),
    U("logdet", "5x5 SPD", M(5, 5), VAR, SPD, 0.0),
    U("logdet", "3x3 param", M(3, 3), PARAM, SQUARE, 0.0),
    U("trace", "1x1", M(1, 1), VAR, ANY, 0.0),
    U("trace", "4x4", M(4, 4), VAR, ANY, 0.0),
    U("trace", "5x5", M(5, 5), VAR, SQUARE, 0.0),
    U("trace", "3x3 param", M(3, 3), PARAM, ANY, 0.0),
    UNARY_SET("step", AWAY, 0.0),
    UNARY_SET("sign", AWAY, 0.0),
    U("logsumexp", "vector of 1", V(1), VAR, ANY, 0.0),
    U("logsumexp", "vector of 7", V(7), VAR, ANY, 0.0),
    U("logsumexp", "1x1 matrix", M(1, 1), VAR, ANY, 0.0),
    U("logsumexp", "3x5", M(3, 5), VAR, ANY, 0.0),
    U("logsumexp", "3x5 param", M(3, 5), PARAM, ANY, 0.0),
    U("logsumexp", "5x1", M(5, 1), VAR, ANY, 0.0),

    U("sum", "scalar (inline operand)", S0, VAR, ANY, 0.0),
    U("sum", "1x1 matrix", M(1, 1), VAR, ANY, 0.0),
    U("sum", "vector of 1", V(1), VAR, ANY, 0.0),
    U("sum", "vector of 7", V(7), VAR, ANY, 0.0),
    U("sum", "3x5", M(3, 5), VAR, ANY, 0.0),
    U("sum", "3x5 param", M(3, 5), PARAM, ANY, 0.0),
    U("mean", "scalar (inline operand)", S0, VAR, ANY, 0.0),
    U("mean", "1x1 matrix", M(1, 1), VAR, ANY, 0.0),
    U("mean", "vector of 1", V(1), VAR, ANY, 0.0),
    U("mean", "vector of 7", V(7), VAR, ANY, 0.0),
    U("mean", "3x5", M(3, 5), VAR, ANY, 0.0),
    U("mean", "3x5 param", M(3, 5), PARAM, ANY, 0.0),

    B("dot", "scalars (inline operands)", S0, VAR, ANY, S0, VAR, ANY),
    B("dot", "1x1 matrices", M(1, 1), VAR, ANY, M(1, 1), VAR, ANY),
    B("dot", "vectors of 1", V(1), VAR, ANY, V(1), VAR, ANY),
    B("dot", "vectors of 7", V(7), VAR, ANY, V(7), VAR, ANY),
    B("dot", "3x5 matrices", M(3, 5), VAR, ANY, M(3, 5), VAR, ANY),
    B("dot", "vectors of 7, v constant", V(7), VAR, ANY, V(7), CONST, ANY),
    B("dot", "vectors of 7, u constant", V(7), CONST, ANY, V(7), VAR, ANY),
    BA("dot", "vector of 7 with itself", V(7), ANY),

    B("matvec", "3x5 times 5", M(3, 5), VAR, ANY, V(5), VAR, ANY),
    B("matvec", "5x3 times 3", M(5, 3), VAR, ANY, V(3), VAR, ANY),
    B("matvec", "1x1 times 1", M(1, 1), VAR, ANY, V(1), VAR, ANY),
    B("matvec", "1x4 times 4", M(1, 4), VAR, ANY, V(4), VAR, ANY),
    B("matvec", "4x1 times 1", M(4, 1), VAR, ANY, V(1), VAR, ANY),
    B("matvec", "constant 3x5 times 5", M(3, 5), CONST, ANY, V(5), VAR, ANY),
    B("matvec", "3x5 times constant 5", M(3, 5), VAR, ANY, V(5), CONST, ANY),
    B("matvec", "3x5 param times 5", M(3, 5), PARAM, ANY, V(5), VAR, ANY),

    B("matvec_t", "(3x5)^T times 3", M(3, 5), VAR, ANY, V(3), VAR, ANY),
    B("matvec_t", "(5x3)^T times 5", M(5, 3), VAR, ANY, V(5), VAR, ANY),
    B("matvec_t", "(1x1)^T times 1", M(1, 1), VAR, ANY, V(1), VAR, ANY),
    B("matvec_t", "(1x4)^T times 1", M(1, 4), VAR, ANY, V(1), VAR, ANY),
    B("matvec_t", "(4x1)^T times 4", M(4, 1), VAR, ANY, V(4), VAR, ANY),
    B("matvec_t", "constant (3x5)^T times 3", M(3, 5), CONST, ANY, V(3), VAR, ANY),
    B("matvec_t", "(3x5)^T times constant 3", M(3, 5), VAR, ANY, V(3), CONST, ANY),

    B("matmul", "3x4 times 4x5", M(3, 4), VAR, ANY, M(4, 5), VAR, ANY),
    B("matmul", "1x1 times 1x1", M(1, 1), VAR, ANY, M(1, 1), VAR, ANY),
    B("matmul", "1x3 times 3x1", M(1, 3), VAR, ANY, M(3, 1), VAR, ANY),
    B("matmul", "3x1 times 1x4", M(3, 1), VAR, ANY, M(1, 4), VAR, ANY),
    B("matmul", "constant 3x4 times 4x5", M(3, 4), CONST, ANY, M(4, 5), VAR, ANY),
    B("matmul", "3x4 times constant 4x5", M(3, 4), VAR, ANY, M(4, 5), CONST, ANY),
    BA("matmul", "3x3 times itself", M(3, 3), ANY),

    B("matmul_nt", "3x4 times (5x4)^T", M(3, 4), VAR, ANY, M(5, 4), VAR, ANY),
    B("matmul_nt", "1x1 times (1x1)^T", M(1, 1), VAR, ANY, M(1, 1), VAR, ANY),
    B("matmul_nt", "1x3 times (1x3)^T", M(1, 3), VAR, ANY, M(1, 3), VAR, ANY),
    B("matmul_nt", "3x1 times (4x1)^T", M(3, 1), VAR, ANY, M(4, 1), VAR, ANY),
    B("matmul_nt", "constant 3x4 times (5x4)^T", M(3, 4), CONST, ANY, M(5, 4), VAR, ANY),
    B("matmul_nt", "3x4 times constant (5x4)^T", M(3, 4), VAR, ANY, M(5, 4), CONST, ANY),
    BA("matmul_nt", "3x4 times its own transpose", M(3, 4), ANY),

    B("outer", "3 and 5", V(3), VAR, ANY, V(5), VAR, ANY),
    B("outer", "1 and 1", V(1), VAR, ANY, V(1), VAR, ANY),
    B("outer", "1 and 4", V(1), VAR, ANY, V(4), VAR, ANY),
    B("outer", "constant 3 and 5", V(3), CONST, ANY, V(5), VAR, ANY),
    B("outer", "3 and constant 5", V(3), VAR, ANY, V(5), CONST, ANY),
    BA("outer", "4 with itself", V(4), ANY),

    U("transpose", "3x5", M(3, 5), VAR, ANY, 0.0),
    U("transpose", "1x1", M(1, 1), VAR, ANY, 0.0),
    U("transpose", "1x4", M(1, 4), VAR, ANY, 0.0),
    U("transpose", "4x1", M(4, 1), VAR, ANY, 0.0),
    U("transpose", "3x5 param", M(3, 5), PARAM, ANY, 0.0),

    B("softmax_xent", "vector of 5, constant target", V(5), VAR, ANY, V(5), CONST, PROB),
    B("softmax_xent", "vector of 5, variable target", V(5), VAR, ANY, V(5), VAR, PROB),
    B("softmax_xent", "3x5, constant target", M(3, 5), VAR, ANY, M(3, 5), CONST, PROB),
    B("softmax_xent", "3x5, variable target", M(3, 5), VAR, ANY, M(3, 5), VAR, PROB),
    B("softmax_xent", "vector of 1", V(1), VAR, ANY, V(1), CONST, PROB),
    B("softmax_xent", "1x5", M(1, 5), VAR, ANY, M(1, 5), CONST, PROB),
    B("softmax_xent", "3x5 param logits", M(3, 5), PARAM, ANY, M(3, 5), CONST, PROB),

    /* affine: W, x (or X, a sample per row), b */
    T("affine", "3x4 times 4, plus 3", M(3, 4), VAR, V(4), VAR, V(3), VAR),
    T("affine", "6x3 (a block of four rows and two more)", M(6, 3), VAR, V(3), VAR, V(6), VAR),
    T("affine", "1x1", M(1, 1), VAR, V(1), VAR, V(1), VAR),
    T("affine", "params W and b, constant x (a first layer)", M(3, 4), PARAM, V(4), CONST, V(3),
      PARAM),
    T("affine", "constant W and b", M(3, 4), CONST, V(4), VAR, V(3), CONST),
    T("affine", "x and b the same node", M(4, 4), VAR, V(4), VAR, V(4), ALIAS),
    T("affine", "batch: 2x4 samples", M(3, 4), VAR, M(2, 4), VAR, V(3), VAR),
    T("affine", "batch of 1", M(3, 4), VAR, M(1, 4), VAR, V(3), VAR),
    T("affine", "batch: params, constant 5x4 samples", M(3, 4), PARAM, M(5, 4), CONST, V(3),
      PARAM),
    T("affine", "batch: 6x3 weights, 3x3 samples", M(6, 3), VAR, M(3, 3), VAR, V(6), VAR),
};

#define NCASES (sizeof cases / sizeof cases[0])
#define MAXN 64 /* elements per operand, and of an output */

/* A square matrix of the SQUARE or SPD domain into a (n x n). */
static void square_matrix(test_rng *g, size_t n, int dom, double *a)
{
    double m[MAXN];
    for (size_t i = 0; i < n * n; i++)
        m[i] = test_uniform(g, -1.0, 1.0);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            if (dom == SPD) { /* M M^T / n + I: eigenvalues in [1, 1 + n] */
                double s = i == j ? 1.0 : 0.0;
                for (size_t q = 0; q < n; q++)
                    s += m[i * n + q] * m[j * n + q] / (double)n;
                a[i * n + j] = s;
            } else if (i == j) { /* dominant diagonal of either sign, then rows reversed */
                double s = 1.0;
                for (size_t q = 0; q < n; q++)
                    s += q == i ? 0.0 : fabs(m[i * n + q]);
                a[(n - 1 - i) * n + j] = m[i * n + i] < 0 ? -s : s;
            } else {
                a[(n - 1 - i) * n + j] = m[i * n + j];
            }
        }
}

/* X = A^{-1} B by Gaussian elimination with partial pivoting on
 * copies (B n x m); returns log|det A|. */
static double gauss_solve(const double *A0, const double *B0, size_t n, size_t m, double *X)
{
    double A[MAXN], B[MAXN], ld = 0;
    memcpy(A, A0, n * n * sizeof *A);
    memcpy(B, B0, n * m * sizeof *B);
    for (size_t k = 0; k < n; k++) {
        size_t p = k;
        for (size_t i = k + 1; i < n; i++)
            if (fabs(A[i * n + k]) > fabs(A[p * n + k]))
                p = i;
        for (size_t j = 0; j < n; j++) {
            double s = A[k * n + j];
            A[k * n + j] = A[p * n + j], A[p * n + j] = s;
        }
        for (size_t j = 0; j < m; j++) {
            double s = B[k * m + j];
            B[k * m + j] = B[p * m + j], B[p * m + j] = s;
        }
        ld += log(fabs(A[k * n + k]));
        for (size_t i = k + 1; i < n; i++) {
            double l = A[i * n + k] / A[k * n + k];
            for (size_t j = k; j < n; j++)
                A[i * n + j] -= l * A[k * n + j];
            for (size_t j = 0; j < m; j++)
                B[i * m + j] -= l * B[k * m + j];
        }
    }
    for (size_t i = n; i-- > 0;)
        for (size_t j = 0; j < m; j++) {
            double s = B[i * m + j];
            for (size_t q = i + 1; q < n; q++)
                s -= A[i * n + q] * X[q * m + j];
            X[i * m + j] = s / A[i * n + i];
        }
    return ld;
}

/* The reference forward of solve, solve_spd (on (A + A^T) / 2),
 * logdet and trace; 0 for another op. */
static int linalg_ref(const char *op, const double *a, const double *b, ad_shape sa,
                      ad_shape sb, double *out, ad_shape *so)
{
    const size_t n = sa.rows, m = sb.ndim == 2 ? sb.cols : 1;
    if (!strcmp(op, "solve") || !strcmp(op, "solve_spd")) {
        double S[MAXN];
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                S[i * n + j] = op[5] ? 0.5 * (a[i * n + j] + a[j * n + i]) : a[i * n + j];
        gauss_solve(S, b, n, m, out);
        *so = sb;
        return 1;
    }
    if (!strcmp(op, "logdet")) {
        double x[MAXN], z[MAXN] = {0};
        out[0] = gauss_solve(a, z, n, 1, x);
        *so = (ad_shape){1, 1, 0};
        return 1;
    }
    if (!strcmp(op, "trace")) {
        out[0] = 0;
        for (size_t i = 0; i < n; i++)
            out[0] += a[i * n + i];
        *so = (ad_shape){1, 1, 0};
        return 1;
    }
    return 0;
}

/* Structure and reductions: the index operands' values (domain
 * IDXL(n): list n, copied into the operand), the public function of each
 * op (its integer arguments read back from the index operand and c), and
 * the reference forward. */
static const double idx_lists[][8] = {
    {3, 0, 3, 6},    /* 0: take from a vector of 7, 3 twice          */
    {4},             /* 1: one element / one row                     */
    {1, 0, 1, 2, 1}, /* 2: rows of a 3-row matrix, 1 three times     */
    {0},             /* 3: the first element, row, start             */
    {2},             /* 4: a vector slice from element 2             */
    {1, 1},          /* 5: a block from row 1, column 1              */
    {0, 0},          /* 6: a block from the corner                   */
    {1, 0},          /* 7: rows from row 1                           */
    {0, 2},          /* 8: columns from column 2                     */
    {1, 2},          /* 9: a block from row 1, column 2              */
    {0, 0, 0},       /* 10: one element three times                  */
    {2, 0},          /* 11: rows 2 and 0 of a 3-row matrix           */
};
#define IDX_LIST_COUNT (sizeof idx_lists / sizeof idx_lists[0])

static void shape_dims(ad_shape s, size_t *R, size_t *C)
{
    *R = s.ndim == 0 ? 1 : s.rows;
    *C = s.ndim == 2 ? s.cols : 1;
}

/* 1 when op is a structure op or an axis reduction, with its node in *out. */
static int apply_143(ad_tape *t, const char *op, const ad_node *in, double c, ad_node *out)
{
    const ad_shape xs = ad_node_shape(t, in[0]);
    size_t R, C;
    shape_dims(xs, &R, &C);
    const double *iv = NULL;
    uint32_t idx[64];
    size_t n = 0;
    if (!strcmp(op, "slice") || !strcmp(op, "slice_add") || !strcmp(op, "take")
        || !strcmp(op, "index_add")) {
        iv = ad_value(t, in[1]);
        n = ad_shape_size(ad_node_shape(t, in[1]));
        for (size_t k = 0; k < n && k < 64; k++)
            idx[k] = (uint32_t)iv[k];
    }
    if (!strcmp(op, "reshape")) {
        const size_t N = ad_shape_size(xs);
        *out = ad_reshape(t, in[0], c == -1.0  ? ad_shape_scalar()
                                    : c == 0.0 ? ad_shape_vec((uint32_t)N)
                                               : ad_shape_mat((uint32_t)(N / (size_t)c),
                                                              (uint32_t)c));
    } else if (!strcmp(op, "slice")) {
        const size_t v = (size_t)c;
        *out = xs.ndim == 1 ? ad_slice(t, in[0], idx[0], (uint32_t)v)
                            : ad_slice_block(t, in[0], idx[0], (uint32_t)(v / (C + 1)), idx[1],
                                             (uint32_t)(v % (C + 1)));
    } else if (!strcmp(op, "slice_add")) {
        *out = ad_slice_add(t, in[0], idx[0], xs.ndim == 2 ? idx[1] : 0, in[2]);
    } else if (!strcmp(op, "take")) {
        *out = ad_node_shape(t, in[1]).ndim == 0 ? ad_at(t, in[0], idx[0])
                                                 : ad_take(t, in[0], n, idx);
    } else if (!strcmp(op, "index_add")) {
        *out = ad_index_add(t, in[0], n, idx, in[2]);
    } else if (!strcmp(op, "concat")) {
        *out = ad_concat(t, (int)c, 2, in);
    } else if (!strcmp(op, "sum_axis")) {
        *out = ad_sum_axis(t, in[0], (int)c);
    } else if (!strcmp(op, "mean_axis")) {
        *out = ad_mean_axis(t, in[0], (int)c);
    } else if (!strcmp(op, "max_axis")) {
        *out = ad_max_axis(t, in[0], (int)c);
    } else if (!strcmp(op, "min_axis")) {
        *out = ad_min_axis(t, in[0], (int)c);
    } else if (!strcmp(op, "max_mask")) {
        *out = ad_max_mask(t, in[0], (int)c);
    } else if (!strcmp(op, "softmax")) {
        *out = ad_softmax(t, in[0]);
    } else if (!strcmp(op, "log_softmax")) {
        *out = ad_log_softmax(t, in[0]);
    } else if (!strcmp(op, "norm")) {
        *out = ad_norm(t, in[0]);
    } else {
        return 0;
    }
    return 1;
}

/* Plain-C forwards of the structure ops and axis reductions: 1 with the output in out and its shape
 * in *so, 0 for another op. */
static int ref_143(const opcase *k, const double *const v[3], double *out, ad_shape *so)
{
    const char *op = k->op;
    const ad_shape xs = k->shape[0];
    const double *x = v[0], c = k->c;
    size_t R, C;
    shape_dims(xs, &R, &C);
    const size_t N = R * C;
    if (!strcmp(op, "reshape")) {
        *so = c == -1.0  ? (ad_shape){1, 1, 0}
              : c == 0.0 ? (ad_shape){(uint32_t)N, 1, 1}
                         : (ad_shape){(uint32_t)(N / (size_t)c), (uint32_t)c, 2};
        memcpy(out, x, N * sizeof *out);
    } else if (!strcmp(op, "slice")) {
        const size_t q = (size_t)c, nr = xs.ndim == 2 ? q / (C + 1) : q;
        const size_t nc = xs.ndim == 2 ? q % (C + 1) : 1;
        const size_t r0 = (size_t)v[1][0], c0 = xs.ndim == 2 ? (size_t)v[1][1] : 0;
        *so = xs.ndim == 2 ? (ad_shape){(uint32_t)nr, (uint32_t)nc, 2}
                           : (ad_shape){(uint32_t)nr, 1, 1};
        for (size_t i = 0; i < nr; i++)
            for (size_t j = 0; j < nc; j++)
                out[i * nc + j] = x[(r0 + i) * C + c0 + j];
    } else if (!strcmp(op, "slice_add")) {
        size_t nr, nc;
        shape_dims(k->shape[2], &nr, &nc);
        const size_t r0 = (size_t)v[1][0], c0 = xs.ndim == 2 ? (size_t)v[1][1] : 0;
        *so = xs;
        memcpy(out, x, N * sizeof *out);
        for (size_t i = 0; i < nr; i++)
            for (size_t j = 0; j < nc; j++)
                out[(r0 + i) * C + c0 + j] += v[2][i * nc + j];
    } else if (!strcmp(op, "take") || !strcmp(op, "index_add")) {
        const ad_shape is = k->shape[1];
        const size_t n = ad_shape_size(is);
        if (op[0] == 't') {
            *so = xs.ndim == 1 ? is
                  : is.ndim == 0 ? (ad_shape){(uint32_t)C, 1, 1}
                                 : (ad_shape){(uint32_t)n, (uint32_t)C, 2};
            for (size_t q = 0; q < n; q++)
                memcpy(out + q * C, x + (size_t)v[1][q] * C, C * sizeof *out);
        } else {
            *so = xs;
            memcpy(out, x, N * sizeof *out);
            for (size_t q = 0; q < n; q++)
                for (size_t j = 0; j < C; j++)
                    out[(size_t)v[1][q] * C + j] += v[2][q * C + j];
        }
    } else if (!strcmp(op, "concat")) {
        const ad_shape bs = k->nin > 1 ? k->shape[1] : xs;
        const double *b = v[1];
        size_t Rb, Cb;
        shape_dims(bs, &Rb, &Cb);
        if (c == 1.0) {
            *so = (ad_shape){(uint32_t)R, (uint32_t)(C + Cb), 2};
            for (size_t i = 0; i < R; i++) {
                memcpy(out + i * (C + Cb), x + i * C, C * sizeof *out);
                memcpy(out + i * (C + Cb) + C, b + i * Cb, Cb * sizeof *out);
            }
        } else {
            const size_t na = ad_shape_size(xs), nb = ad_shape_size(bs);
            const int mat = xs.ndim == 2 || bs.ndim == 2;
            const size_t cols = xs.ndim == 2 ? xs.cols : bs.cols;
            *so = mat ? (ad_shape){(uint32_t)((na + nb) / cols), (uint32_t)cols, 2}
                      : (ad_shape){(uint32_t)(na + nb), 1, 1};
            memcpy(out, x, na * sizeof *out);
            memcpy(out + na, b, nb * sizeof *out);
        }
    } else if (!strcmp(op, "sum_axis") || !strcmp(op, "mean_axis") || !strcmp(op, "max_axis")
               || !strcmp(op, "min_axis") || !strcmp(op, "max_mask")) {
        /* groups G of L elements: axis 0 of a matrix is a column */
        const int mat = xs.ndim == 2, ax1 = c == 1.0;
        const size_t G = !mat ? 1 : ax1 ? R : C, L = !mat ? N : ax1 ? C : R;
        *so = !strcmp(op, "max_mask") ? xs : !mat ? (ad_shape){1, 1, 0}
                                               : (ad_shape){(uint32_t)G, 1, 1};
        if (!strcmp(op, "max_mask"))
            memset(out, 0, N * sizeof *out);
        for (size_t g = 0; g < G; g++) {
            double s = 0, m = 0;
            size_t am = 0;
            for (size_t l = 0; l < L; l++) {
                const size_t e = !mat ? l : ax1 ? g * C + l : l * C + g;
                s += x[e];
                if (l == 0 || (op[1] == 'i' ? x[e] < m : x[e] > m))
                    m = x[e], am = e;
            }
            if (!strcmp(op, "max_mask"))
                out[am] = 1.0;
            else
                out[g] = op[0] == 's' ? s : op[1] == 'e' ? s / (double)L : m;
        }
    } else if (!strcmp(op, "softmax") || !strcmp(op, "log_softmax")) {
        const size_t rows = xs.ndim == 2 ? R : 1, cols = N / rows;
        *so = xs;
        for (size_t r = 0; r < rows; r++) {
            double s = 0;
            for (size_t j = 0; j < cols; j++)
                s += exp(x[r * cols + j]);
            for (size_t j = 0; j < cols; j++)
                out[r * cols + j] = op[0] == 's' ? exp(x[r * cols + j]) / s
                                                 : x[r * cols + j] - log(s);
        }
    } else if (!strcmp(op, "norm")) {
        double s = 0;
        for (size_t i = 0; i < N; i++)
            s += x[i] * x[i];
        out[0] = sqrt(s);
        *so = (ad_shape){1, 1, 0};
    } else {
        return 0;
    }
    return 1;
}

/* ---- recording ---- */

/* The public function of each op (not ad_apply): that is what programs
 * call. */
static ad_node apply_direct(ad_tape *t, const char *op, const ad_node *in, double c)
{
    if (!strcmp(op, "affine"))
        return ad_affine(t, in[0], in[1], in[2]);
    if (!strcmp(op, "select"))
        return ad_select(t, in[0], in[1], in[2]);
    ad_node o143;
    if (apply_143(t, op, in, c, &o143))
        return o143;
    const ad_node a = in[0]; /* in[1] is read only for a binary op */
    static const struct {
        const char *name;
        ad_node (*f1)(ad_tape *, ad_node);
        ad_node (*f1c)(ad_tape *, ad_node, double);
        ad_node (*f2)(ad_tape *, ad_node, ad_node);
    } fns[] = {
        {"add", NULL, NULL, ad_add},         {"sub", NULL, NULL, ad_sub},
        {"mul", NULL, NULL, ad_mul},         {"div", NULL, NULL, ad_div},
        {"neg", ad_neg, NULL, NULL},         {"scale", NULL, ad_scale, NULL},
        {"addc", NULL, ad_add_const, NULL},  {"square", ad_square, NULL, NULL},
        {"sqrt", ad_sqrt, NULL, NULL},       {"exp", ad_exp, NULL, NULL},
        {"log", ad_log, NULL, NULL},         {"tanh", ad_tanh, NULL, NULL},
        {"sigmoid", ad_sigmoid, NULL, NULL}, {"relu", ad_relu, NULL, NULL},
        {"abs", ad_abs, NULL, NULL},         {"powc", NULL, ad_pow_const, NULL},
        {"sum", ad_sum, NULL, NULL},         {"mean", ad_mean, NULL, NULL},
        {"dot", NULL, NULL, ad_dot},         {"matvec", NULL, NULL, ad_matvec},
        {"matvec_t", NULL, NULL, ad_matvec_t}, {"matmul", NULL, NULL, ad_matmul},
        {"matmul_nt", NULL, NULL, ad_matmul_nt}, {"outer", NULL, NULL, ad_outer},
        {"transpose", ad_transpose, NULL, NULL}, {"softmax_xent", NULL, NULL, ad_softmax_xent},
        {"step", ad_step, NULL, NULL},       {"sign", ad_sign, NULL, NULL},
        {"logsumexp", ad_logsumexp, NULL, NULL},
        {"sin", ad_sin, NULL, NULL},         {"cos", ad_cos, NULL, NULL},
        {"tan", ad_tan, NULL, NULL},         {"asin", ad_asin, NULL, NULL},
        {"acos", ad_acos, NULL, NULL},       {"atan", ad_atan, NULL, NULL},
        {"sinh", ad_sinh, NULL, NULL},       {"cosh", ad_cosh, NULL, NULL},
        {"asinh", ad_asinh, NULL, NULL},     {"acosh", ad_acosh, NULL, NULL},
        {"atanh", ad_atanh, NULL, NULL},     {"log1p", ad_log1p, NULL, NULL},
        {"expm1", ad_expm1, NULL, NULL},     {"log2", ad_log2, NULL, NULL},
        {"log10", ad_log10, NULL, NULL},     {"erf", ad_erf, NULL, NULL},
        {"erfc", ad_erfc, NULL, NULL},       {"softplus", ad_softplus, NULL, NULL},
        {"gelu", ad_gelu, NULL, NULL},       {"elu", NULL, ad_elu, NULL},
        {"leaky_relu", NULL, ad_leaky_relu, NULL}, {"floor", ad_floor, NULL, NULL},
        {"ceil", ad_ceil, NULL, NULL},       {"round", ad_round, NULL, NULL},
        {"clamp_min", NULL, ad_clamp_min, NULL}, {"clamp_max", NULL, ad_clamp_max, NULL},
        {"pow", NULL, NULL, ad_pow},         {"atan2", NULL, NULL, ad_atan2},
        {"hypot", NULL, NULL, ad_hypot},     {"min", NULL, NULL, ad_min},
        {"max", NULL, NULL, ad_max},
        {"lt", NULL, NULL, ad_lt}, {"le", NULL, NULL, ad_le}, {"gt", NULL, NULL, ad_gt},
        {"ge", NULL, NULL, ad_ge}, {"eq", NULL, NULL, ad_eq}, {"ne", NULL, NULL, ad_ne},
        /* structure */
        /* reductions along an axis */
        {"solve", NULL, NULL, ad_solve},     {"solve_spd", NULL, NULL, ad_solve_spd},
        {"logdet", ad_logdet, NULL, NULL},   {"trace", ad_matrix_trace, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        if (strcmp(fns[i].name, op) != 0)
            continue;
        if (fns[i].f1)
            return fns[i].f1(t, a);
        if (fns[i].f1c)
            return fns[i].f1c(t, a, c);
        return fns[i].f2(t, a, in[1]);
    }
    cr_assert_fail("no public function for op %s", op);
    return ad_nil();
}

/* Number of operands that own elements of x (an alias, always last, owns
 * none). */
static int nown(const opcase *k) { return k->kind[k->nin - 1] == ALIAS ? k->nin - 1 : k->nin; }

static size_t total(const opcase *k)
{
    size_t n = 0;
    for (int i = 0; i < nown(k); i++)
        n += ad_shape_size(k->shape[i]);
    return n;
}

typedef struct rec {
    ad_node in[3], out, loss;
    double grad[3][MAXN]; /* ad_param gradient buffers */
} rec;

/* Records the case at x (the operands' elements, concatenated) on t. via:
 * 0 the public function, 1 ad_apply_named. w weights a non-scalar output. */
static void record(ad_tape *t, const opcase *k, const double *x, const double *w, int via,
                   rec *r)
{
    memset(r, 0, sizeof *r);
    const double *p = x;
    for (int i = 0; i < k->nin; i++) {
        ad_shape s = k->shape[i];
        switch (k->kind[i]) {
        case VAR:
            r->in[i] = s.ndim == 0 ? ad_scalar_var(t, p[0]) : ad_variable(t, s, p);
            break;
        case CONST:
            r->in[i] = s.ndim == 0 ? ad_scalar(t, p[0]) : ad_constant(t, s, p);
            break;
        case PARAM:
            r->in[i] = ad_param(t, s, p, r->grad[i]);
            break;
        case ALIAS:
            r->in[i] = r->in[i - 1];
            continue;
        }
        p += ad_shape_size(s);
    }
    if (via == 0)
        r->out = apply_direct(t, k->op, r->in, k->c);
    else
        r->out = ad_apply_named(t, k->op, r->in, k->nin, k->c);
    ad_shape so = ad_node_shape(t, r->out);
    if (so.ndim == 0) {
        r->loss = r->out; /* seeded with 1 directly */
    } else {
        ad_node wn = ad_constant(t, so, w);
        r->loss = ad_dot(t, r->out, wn); /* L = sum_i out_i w_i */
    }
}

typedef struct fdctx {
    const opcase *k;
    const double *w;
    ad_tape *t; /* reset before each recording: a fresh recording, no malloc */
} fdctx;

static double loss_at(void *vctx, const double *x)
{
    fdctx *c = vctx;
    ad_tape *t = c->t;
    ad_tape_reset(t);
    rec r;
    record(t, c->k, x, c->w, 0, &r);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s [%s]: %s", c->k->op, c->k->label,
                 ad_tape_errmsg(t));
    return ad_scalar_value(t, r.loss);
}

/* ---- plain-C reference forward ---- */

/* The element of an operand of shape s feeding element i of the output
 * o, by the one broadcasting rule (each operand as rows x cols, a vector
 * a row, a dimension of 1 repeated). */
static size_t bidx(ad_shape s, ad_shape o, size_t i)
{
    const size_t sr = s.ndim == 2 ? s.rows : 1, sc = s.ndim == 2 ? s.cols : s.rows;
    const size_t oc = o.ndim == 2 ? o.cols : o.rows;
    const size_t r = i / oc, j = i % oc;
    return (sr == 1 ? 0 : r) * sc + (sc == 1 ? 0 : j);
}

/* The broadcast output shape of a and b (the operands fit). */
static ad_shape bshape(ad_shape a, ad_shape b)
{
    const uint32_t ar = a.ndim == 2 ? a.rows : 1, ac = a.ndim == 2 ? a.cols : a.rows;
    const uint32_t br = b.ndim == 2 ? b.rows : 1, bc = b.ndim == 2 ? b.cols : b.rows;
    const uint32_t r = ar > br ? ar : br, c = ac > bc ? ac : bc;
    const int nd = a.ndim > b.ndim ? a.ndim : b.ndim;
    return nd == 2 ? (ad_shape){r, c, 2} : nd == 1 ? (ad_shape){c, 1, 1} : (ad_shape){1, 1, 0};
}

static double unary(const char *op, double x, double c)
{
    if (!strcmp(op, "neg")) return -x;
    if (!strcmp(op, "scale")) return c * x;
    if (!strcmp(op, "addc")) return x + c;
    if (!strcmp(op, "square")) return x * x;
    if (!strcmp(op, "sqrt")) return sqrt(x);
    if (!strcmp(op, "exp")) return exp(x);
    if (!strcmp(op, "log")) return log(x);
    if (!strcmp(op, "tanh")) return tanh(x);
    if (!strcmp(op, "sigmoid")) return 1.0 / (1.0 + exp(-x));
    if (!strcmp(op, "relu")) return x > 0 ? x : 0;
    if (!strcmp(op, "abs")) return fabs(x);
    if (!strcmp(op, "powc")) return pow(x, c);
    if (!strcmp(op, "step")) return x > 0 ? 1 : 0;
    if (!strcmp(op, "sign")) return x > 0 ? 1 : x < 0 ? -1 : 0;
    return NAN;
}

/* The elementwise math ops in plain C (independent forms where
 * there is one: nearbyint for round, erf for gelu, sqrt for hypot). 1 when
 * op is one of them. */
static int math_unary_ref(const char *op, double x, double c, double *y)
{
    static const struct {
        const char *name;
        double (*f)(double);
    } fs[] = {{"sin", sin},     {"cos", cos},     {"tan", tan},     {"asin", asin},
              {"acos", acos},   {"atan", atan},   {"sinh", sinh},   {"cosh", cosh},
              {"asinh", asinh}, {"acosh", acosh}, {"atanh", atanh}, {"log1p", log1p},
              {"expm1", expm1}, {"log2", log2},   {"log10", log10}, {"erf", erf},
              {"erfc", erfc},   {"floor", floor}, {"ceil", ceil},   {"round", nearbyint}};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (!strcmp(op, fs[i].name))
            return *y = fs[i].f(x), 1;
    if (!strcmp(op, "softplus"))
        return *y = log(1.0 + exp(x)), 1;
    if (!strcmp(op, "gelu"))
        return *y = 0.5 * x * (1.0 + erf(x / sqrt(2.0))), 1;
    if (!strcmp(op, "elu"))
        return *y = x > 0 ? x : c * (exp(x) - 1.0), 1;
    if (!strcmp(op, "leaky_relu"))
        return *y = x > 0 ? x : c * x, 1;
    if (!strcmp(op, "clamp_min"))
        return *y = fmax(x, c), 1;
    if (!strcmp(op, "clamp_max"))
        return *y = fmin(x, c), 1;
    return 0;
}

static int math_binary_ref(const char *op, double x, double y, double *z)
{
    if (!strcmp(op, "pow"))
        return *z = pow(x, y), 1;
    if (!strcmp(op, "atan2"))
        return *z = atan2(x, y), 1;
    if (!strcmp(op, "hypot"))
        return *z = sqrt(x * x + y * y), 1;
    if (!strcmp(op, "min"))
        return *z = fmin(x, y), 1;
    if (!strcmp(op, "max"))
        return *z = fmax(x, y), 1;
    return 0;
}

/* The comparisons and select: 1 with the output in out and its
 * shape in *so, 0 for another op. */
static int ref_conditionals(const opcase *k, const double *const v[3], double *out, ad_shape *so)
{
    static const char *const cmp[] = {"lt", "le", "gt", "ge", "eq", "ne"};
    const ad_shape s0 = k->shape[0], s1 = k->shape[1], s2 = k->shape[2];
    for (int c = 0; c < 6; c++) {
        if (strcmp(k->op, cmp[c]) != 0)
            continue;
        *so = s0.ndim == 0 ? s1 : s0;
        for (size_t i = 0; i < ad_shape_size(*so); i++) {
            const double x = v[0][bidx(s0, *so, i)], y = v[1][bidx(s1, *so, i)];
            const int r = c == 0 ? x < y : c == 1 ? x <= y : c == 2 ? x > y
                        : c == 3 ? x >= y : c == 4 ? x == y : x != y;
            out[i] = r ? 1.0 : 0.0;
        }
        return 1;
    }
    if (strcmp(k->op, "select") != 0)
        return 0;
    *so = s0.ndim != 0 ? s0 : s1.ndim != 0 ? s1 : s2;
    for (size_t i = 0; i < ad_shape_size(*so); i++)
        out[i] = v[0][bidx(s0, *so, i)] != 0.0 ? v[1][bidx(s1, *so, i)] : v[2][bidx(s2, *so, i)];
    return 1;
}

/* Writes the op's output for the operands' elements v into out and returns
 * its shape; ndim -1 for an op it does not know. */
static ad_shape reference(const opcase *k, const double *const v[3], double *out)
{
    const char *op = k->op;
    const double *a = v[0], *b = v[1];
    const ad_shape sa = k->shape[0], sb = k->nin > 1 ? k->shape[1] : k->shape[0];
    ad_shape so = sa;
    size_t na = ad_shape_size(sa);
    if (ref_conditionals(k, v, out, &so))
        return so;
    double probe; /* elementwise math reference: */
    if (math_binary_ref(op, 1.0, 1.0, &probe)) {
        so = bshape(sa, sb);
        for (size_t i = 0; i < ad_shape_size(so); i++)
            math_binary_ref(op, a[bidx(sa, so, i)], b[bidx(sb, so, i)], &out[i]);
        return so;
    }
    if (math_unary_ref(op, 1.0, k->c, &probe)) {
        for (size_t i = 0; i < na; i++)
            math_unary_ref(op, a[i], k->c, &out[i]);
        return so;
    }
    if (ref_143(k, v, out, &so))
        return so;
    if (!strcmp(op, "add") || !strcmp(op, "sub") || !strcmp(op, "mul") || !strcmp(op, "div")) {
        so = bshape(sa, sb);
        for (size_t i = 0; i < ad_shape_size(so); i++) {
            double x = a[bidx(sa, so, i)], y = b[bidx(sb, so, i)];
            out[i] = op[0] == 'a' ? x + y : op[0] == 's' ? x - y : op[0] == 'm' ? x * y : x / y;
        }
    } else if (!strcmp(op, "sum") || !strcmp(op, "mean") || !strcmp(op, "dot")) {
        double s = 0;
        for (size_t i = 0; i < na; i++)
            s += op[0] == 'd' ? a[i] * b[i] : a[i];
        out[0] = op[0] == 'm' ? s / (double)na : s;
        so = (ad_shape){1, 1, 0};
    } else if (!strcmp(op, "matvec")) { /* W (r x n), x (n) */
        so = (ad_shape){sa.rows, 1, 1};
        for (size_t i = 0; i < sa.rows; i++) {
            out[i] = 0;
            for (size_t j = 0; j < sa.cols; j++)
                out[i] += a[i * sa.cols + j] * b[j];
        }
    } else if (!strcmp(op, "matvec_t")) { /* W (r x n), x (r) */
        so = (ad_shape){sa.cols, 1, 1};
        for (size_t j = 0; j < sa.cols; j++) {
            out[j] = 0;
            for (size_t i = 0; i < sa.rows; i++)
                out[j] += a[i * sa.cols + j] * b[i];
        }
    } else if (!strcmp(op, "matmul") || !strcmp(op, "matmul_nt")) {
        int nt = op[6] == '_';
        size_t m = sa.rows, p = sa.cols, n = nt ? sb.rows : sb.cols;
        so = (ad_shape){(uint32_t)m, (uint32_t)n, 2};
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t q = 0; q < p; q++)
                    s += a[i * p + q] * (nt ? b[j * p + q] : b[q * n + j]);
                out[i * n + j] = s;
            }
    } else if (!strcmp(op, "affine")) { /* W (r x n); x (n) or X (B x n); bias v[2] (r) */
        size_t B = sb.ndim == 2 ? sb.rows : 1;
        so = sb.ndim == 2 ? (ad_shape){(uint32_t)B, sa.rows, 2} : (ad_shape){sa.rows, 1, 1};
        for (size_t q = 0; q < B; q++)
            for (size_t i = 0; i < sa.rows; i++) {
                double s = 0;
                for (size_t j = 0; j < sa.cols; j++)
                    s += a[i * sa.cols + j] * b[q * sa.cols + j];
                out[q * sa.rows + i] = s + v[2][i];
            }
    } else if (!strcmp(op, "outer")) {
        so = (ad_shape){sa.rows, sb.rows, 2};
        for (size_t i = 0; i < sa.rows; i++)
            for (size_t j = 0; j < sb.rows; j++)
                out[i * sb.rows + j] = a[i] * b[j];
    } else if (!strcmp(op, "transpose")) {
        so = (ad_shape){sa.cols, sa.rows, 2};
        for (size_t i = 0; i < sa.rows; i++)
            for (size_t j = 0; j < sa.cols; j++)
                out[j * sa.rows + i] = a[i * sa.cols + j];
    } else if (!strcmp(op, "softmax_xent")) {
        size_t R = sa.ndim == 2 ? sa.rows : 1, C = sa.ndim == 2 ? sa.cols : sa.rows;
        double L = 0;
        for (size_t r = 0; r < R; r++) {
            double s = 0;
            for (size_t j = 0; j < C; j++)
                s += exp(a[r * C + j]);
            for (size_t j = 0; j < C; j++) /* -y log softmax = y (log sum e^z - z) */
                L += b[r * C + j] * (log(s) - a[r * C + j]);
        }
        out[0] = L;
        so = (ad_shape){1, 1, 0};
    } else if (!strcmp(op, "logsumexp")) {
        size_t R = sa.ndim == 2 ? sa.rows : 1, C = sa.ndim == 2 ? sa.cols : sa.rows;
        for (size_t r = 0; r < R; r++) {
            double s = 0;
            for (size_t j = 0; j < C; j++)
                s += exp(a[r * C + j]);
            out[r] = log(s);
        }
        so = sa.ndim == 2 ? (ad_shape){sa.rows, 1, 1} : (ad_shape){1, 1, 0};
    } else if (linalg_ref(op, a, b, sa, sb, out, &so)) {
    } else {
        double v = unary(op, 0.5, k->c);
        if (isnan(v))
            return (ad_shape){0, 0, -1};
        for (size_t i = 0; i < na; i++)
            out[i] = unary(op, a[i], k->c);
    }
    return so;
}

/* ---- inputs ---- */

static double draw(test_rng *g, int dom)
{
    switch (dom) {
    case POS:
        return test_uniform(g, 0.5, 2.0);
    case AWAY:
        return test_signed(g, 0.3, 2.0);
    case PROB:
        return test_uniform(g, 0.1, 1.0);
    case COND01:
        return test_uniform(g, 0.0, 1.0) < 0.5 ? 0.0 : 1.0;
    case UNIT:
        return test_uniform(g, -0.9, 0.9);
    case GT1:
        return test_uniform(g, 1.1, 3.0);
    default:
        return test_uniform(g, -2.0, 2.0);
    }
}

static void fill(test_rng *g, const opcase *k, double *x)
{
    double *p = x;
    for (int i = 0; i < nown(k); i++) {
        ad_shape s = k->shape[i];
        size_t n = ad_shape_size(s);
        if (k->dom[i] >= IDXL(0) && k->dom[i] < IDXL((int)IDX_LIST_COUNT)) {
            memcpy(p, idx_lists[k->dom[i] - IDXL(0)], n * sizeof *p);
            p += n;
            continue;
        }
        if (k->dom[i] == SQUARE || k->dom[i] == SPD) {
            square_matrix(g, s.rows, k->dom[i], p);
            p += n;
            continue;
        }
        for (size_t j = 0; j < n; j++)
            p[j] = draw(g, k->dom[i]);
        if (k->dom[i] == PROB) { /* each row a probability vector */
            size_t C = s.ndim == 2 ? s.cols : n;
            for (size_t r = 0; r < n / C; r++) {
                double sum = 0;
                for (size_t j = 0; j < C; j++)
                    sum += p[r * C + j];
                for (size_t j = 0; j < C; j++)
                    p[r * C + j] /= sum;
            }
        }
        p += n;
    }
}

static int same_shape(ad_shape a, ad_shape b)
{
    return a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols;
}

/* ---- the check ---- */

#define FD_TOL 1e-6
#define FD_H 1e-5

/* Reports a failed expectation and abandons the case (the other cases of
 * the op still run, so one run lists every failing shape). */
#define REQUIRE(cond, ...)                                                                    \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            cr_expect(0, __VA_ARGS__);                                                        \
            goto done;                                                                        \
        }                                                                                     \
    } while (0)

/* The gradients of r's operands and of the op's node, copied. */
typedef struct grads {
    double in[3][MAXN];
    double out[MAXN];
} grads;

static void take(ad_tape *t, const opcase *k, const rec *r, grads *gs)
{
    memset(gs, 0, sizeof *gs);
    for (int i = 0; i < nown(k); i++) {
        const double *g = ad_grad(t, r->in[i]);
        if (g)
            memcpy(gs->in[i], g, ad_shape_size(k->shape[i]) * sizeof *g);
    }
    const double *g = ad_grad(t, r->out);
    if (g)
        memcpy(gs->out, g, ad_shape_size(ad_node_shape(t, r->out)) * sizeof *g);
}

/* Fills the case's ad_param gradient buffers with v. */
static void fill_params(const opcase *k, rec *r, double v)
{
    for (int i = 0; i < nown(k); i++)
        if (k->kind[i] == PARAM)
            for (size_t j = 0; j < ad_shape_size(k->shape[i]); j++)
                r->grad[i][j] = v;
}

static int same_by_every_sweep(ad_tape *t, const opcase *k, rec *r)
{
    static const char *const how[] = {"after a replay", "in a second sweep without a replay",
                                      "with AD_SWEEP_ASSIGN and NaN in the buffers",
                                      "with AD_SWEEP_ASSIGN after a replay"};
    grads ref, got;
    take(t, k, r, &ref);
    for (int m = 0; m < 4; m++) {
        if (m == 0 || m == 3)
            cr_expect_eq(ad_replay(t), AD_OK, "%s [%s]: replay: %s", k->op, k->label,
                         ad_tape_errmsg(t));
        fill_params(k, r, m >= 2 ? NAN : 0.0);
        int st = m >= 2 ? ad_sweep(t, r->loss, NULL, AD_SWEEP_ASSIGN) : ad_backward(t, r->loss);
        if (st != AD_OK) {
            cr_expect(0, "%s [%s]: sweep %s: %s", k->op, k->label, how[m], ad_tape_errmsg(t));
            return 0;
        }
        take(t, k, r, &got);
        for (int i = 0; i < 3; i++)
            for (size_t j = 0; j < MAXN; j++)
                if (!(got.in[i][j] == ref.in[i][j])) {
                    cr_expect(0, "%s [%s]: d/d(operand %d)[%zu] is %.17g %s, %.17g at first",
                              k->op, k->label, i + 1, j, got.in[i][j], how[m], ref.in[i][j]);
                    return 0;
                }
        for (size_t j = 0; j < MAXN; j++)
            if (!(got.out[j] == ref.out[j])) {
                cr_expect(0, "%s [%s]: the op node's adjoint [%zu] is %.17g %s, %.17g at first",
                          k->op, k->label, j, got.out[j], how[m], ref.out[j]);
                return 0;
            }
    }
    return 1;
}

/* ---- the derivative modes of the same case ----
 * L = out . w as above, and L2 = tanh(out) . w, whose Hessian runs through
 * both parts of the op's second-order rule (its own second-order term, and
 * its vjp of the adjoint tangent that tanh sends back). u and u2 are
 * random directions over the operands that are not constants. */

/* L2's gradient at x (operands that are constants left out), into g. */
static void grad_l2(const opcase *k, const double *x, const double *w, double *g)
{
    ad_tape *t = ad_tape_new(NULL);
    rec r;
    record(t, k, x, w, 0, &r);
    ad_node wn = ad_constant(t, ad_node_shape(t, r.out), w);
    ad_node L2 = ad_dot(t, ad_tanh(t, r.out), wn);
    cr_assert_eq(ad_backward(t, L2), AD_OK, "%s", ad_tape_errmsg(t));
    size_t off = 0;
    for (int i = 0; i < nown(k); i++) {
        const size_t ni = ad_shape_size(k->shape[i]);
        const double *gi = ad_grad(t, r.in[i]);
        for (size_t j = 0; j < ni; j++)
            g[off + j] = k->kind[i] == CONST ? 0.0 : gi[j];
        off += ni;
    }
    ad_tape_free(t);
}

static double dotn(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Relative agreement of two sums that may cancel: |a - b| against the
 * scale of their terms. */
static int close_to(double a, double b, double scale, double tol)
{
    return fabs(a - b) <= tol * (scale > 1 ? scale : 1);
}

static void check_modes(const opcase *k, const double *x, const double *w)
{
    test_rng g = {0xD1Au + (uint64_t)k->nin * 7919u + (uint64_t)total(k)};
    const size_t N = total(k);
    double u[3 * MAXN], u2[3 * MAXN];
    for (int i = 0, off = 0; i < nown(k); off += (int)ad_shape_size(k->shape[i]), i++)
        for (size_t j = 0; j < ad_shape_size(k->shape[i]); j++) {
            u[off + j] = k->kind[i] == CONST ? 0.0 : test_uniform(&g, -1, 1);
            u2[off + j] = k->kind[i] == CONST ? 0.0 : test_uniform(&g, -1, 1);
        }

    /* J u: the forward sweep, against the gradient (<J u, w> = <u, J^T w>)
     * and against a central difference of L along u. */
    ad_tape *t = ad_tape_new(NULL);
    rec r;
    record(t, k, x, w, 0, &r);
    REQUIRE(ad_backward(t, r.loss) == AD_OK, "%s [%s]: %s", k->op, k->label, ad_tape_errmsg(t));
    double gu = 0, scale = 0;
    for (int i = 0, off = 0; i < nown(k); off += (int)ad_shape_size(k->shape[i]), i++) {
        if (k->kind[i] == CONST)
            continue;
        const double *gi = ad_grad(t, r.in[i]);
        for (size_t j = 0; j < ad_shape_size(k->shape[i]); j++) {
            gu += gi[j] * u[off + j];
            scale += fabs(gi[j] * u[off + j]);
        }
    }
    const double *outv = ad_value(t, r.out);
    const size_t M = ad_shape_size(ad_node_shape(t, r.out));
    double before[MAXN];
    memcpy(before, outv, M * sizeof *before);
    REQUIRE(ad_tangents(t, 1) == AD_OK, "%s [%s]: tangents: %s", k->op, k->label,
            ad_tape_errmsg(t));
    for (int i = 0, off = 0; i < nown(k); off += (int)ad_shape_size(k->shape[i]), i++)
        if (k->kind[i] != CONST)
            REQUIRE(ad_set_tangent(t, r.in[i], u + off) == AD_OK, "%s", ad_tape_errmsg(t));
    REQUIRE(ad_forward(t) == AD_OK, "%s [%s]: forward: %s", k->op, k->label, ad_tape_errmsg(t));
    for (size_t i = 0; i < M; i++)
        REQUIRE(ad_value(t, r.out)[i] == before[i], "%s [%s]: ad_forward changed value %zu",
                k->op, k->label, i);
    const double *tj = ad_tangent(t, r.out);
    REQUIRE(tj, "%s [%s]: no tangent", k->op, k->label);
    double jw = 0;
    for (size_t i = 0; i < M; i++) {
        jw += tj[i] * (M == 1 && ad_node_shape(t, r.out).ndim == 0 ? 1.0 : w[i]);
        scale += fabs(tj[i] * w[i]);
    }
    REQUIRE(close_to(jw, gu, scale, 1e-12), "%s [%s]: <J u, w> = %.17g but <u, J^T w> = %.17g",
            k->op, k->label, jw, gu);
    {
        double xp[3 * MAXN], xm[3 * MAXN];
        for (size_t i = 0; i < N; i++)
            xp[i] = x[i] + FD_H * u[i], xm[i] = x[i] - FD_H * u[i];
        fdctx fc = {k, w, ad_tape_new(NULL)};
        const double fd = (loss_at(&fc, xp) - loss_at(&fc, xm)) / (2 * FD_H);
        ad_tape_free(fc.t);
        REQUIRE(test_err(jw, fd) <= FD_TOL, "%s [%s]: J u = %.12g, central difference %.12g",
                k->op, k->label, jw, fd);
    }
    ad_tape_free(t);

    /* H u of L2: against a central difference of its gradient along u,
     * and symmetric: <H u, u2> = <u, H u2>. */
    t = ad_tape_new(NULL);
    record(t, k, x, w, 0, &r);
    ad_node wn = ad_constant(t, ad_node_shape(t, r.out), w);
    ad_node L2 = ad_dot(t, ad_tanh(t, r.out), wn);
    REQUIRE(ad_tape_status(t) == AD_OK, "%s", ad_tape_errmsg(t));
    ad_node vin[3];
    const double *vu[3], *vu2[3];
    double hu[3 * MAXN], hu2[3 * MAXN], gr[3 * MAXN];
    double *phu[3], *phu2[3], *pgr[3];
    int nv = 0;
    size_t voff[3];
    for (int i = 0, off = 0; i < nown(k); off += (int)ad_shape_size(k->shape[i]), i++) {
        if (k->kind[i] == CONST)
            continue;
        vin[nv] = r.in[i], vu[nv] = u + off, vu2[nv] = u2 + off, voff[nv] = (size_t)off;
        phu[nv] = hu + off, phu2[nv] = hu2 + off, pgr[nv] = gr + off;
        nv++;
    }
    if (nv > 0) {
        memset(hu, 0, sizeof hu), memset(hu2, 0, sizeof hu2);
        REQUIRE(ad_hvp(t, L2, nv, vin, vu, phu, pgr) == AD_OK, "%s [%s]: hvp: %s", k->op,
                k->label, ad_tape_errmsg(t));
        REQUIRE(ad_hvp(t, L2, nv, vin, vu2, phu2, NULL) == AD_OK, "%s [%s]: hvp: %s", k->op,
                k->label, ad_tape_errmsg(t));
        double gp[3 * MAXN] = {0}, gm[3 * MAXN] = {0}, xp[3 * MAXN], xm[3 * MAXN], g0[3 * MAXN];
        for (size_t i = 0; i < N; i++)
            xp[i] = x[i] + FD_H * u[i], xm[i] = x[i] - FD_H * u[i];
        grad_l2(k, xp, w, gp);
        grad_l2(k, xm, w, gm);
        grad_l2(k, x, w, g0);
        for (int v = 0; v < nv; v++)
            for (size_t j = 0; j < ad_shape_size(ad_node_shape(t, vin[v])); j++) {
                const size_t e = voff[v] + j;
                const double fd = (gp[e] - gm[e]) / (2 * FD_H);
                REQUIRE(test_err(hu[e], fd) <= FD_TOL,
                        "%s [%s]: (H u)[%zu] = %.12g, central difference of gradients %.12g",
                        k->op, k->label, e, hu[e], fd);
                REQUIRE(test_err(gr[e], g0[e]) <= 1e-12, "%s [%s]: hvp's gradient[%zu] %.17g, "
                        "backward's %.17g", k->op, k->label, e, gr[e], g0[e]);
            }
        double a = dotn(hu, u2, N), b = dotn(u, hu2, N), sc = 0;
        for (size_t i = 0; i < N; i++)
            sc += fabs(hu[i] * u2[i]) + fabs(u[i] * hu2[i]);
        REQUIRE(close_to(a, b, sc, 1e-12), "%s [%s]: <H u, u2> = %.17g but <u, H u2> = %.17g",
                k->op, k->label, a, b);

        /* reverse over reverse: the gradient recorded as nodes, then the
         * gradient of <gradient, u>, gives the same H u */
        ad_node G[3], HG[3];
        REQUIRE(ad_gradient_nodes(t, L2, ad_nil(), nv, vin, G) == AD_OK, "%s [%s]: %s", k->op,
                k->label, ad_tape_errmsg(t));
        ad_node hsum = ad_nil();
        for (int v = 0; v < nv; v++) {
            const ad_shape vs = ad_node_shape(t, vin[v]);
            const double *gv = ad_value(t, G[v]);
            for (size_t j = 0; j < ad_shape_size(vs); j++)
                REQUIRE(test_err(gv[j], g0[voff[v] + j]) <= 1e-12,
                        "%s [%s]: gradient node %d[%zu] = %.17g, backward %.17g", k->op,
                        k->label, v, j, gv[j], g0[voff[v] + j]);
            ad_node term = ad_dot(t, G[v], ad_constant(t, vs, u + voff[v]));
            hsum = ad_node_is_nil(hsum) ? term : ad_add(t, hsum, term);
        }
        REQUIRE(ad_gradient_nodes(t, hsum, ad_nil(), nv, vin, HG) == AD_OK, "%s [%s]: %s",
                k->op, k->label, ad_tape_errmsg(t));
        for (int v = 0; v < nv; v++) {
            const double *hv = ad_value(t, HG[v]);
            for (size_t j = 0; j < ad_shape_size(ad_node_shape(t, vin[v])); j++) {
                const size_t e = voff[v] + j;
                REQUIRE(test_err(hv[j], hu[e]) <= 1e-12,
                        "%s [%s]: reverse over reverse (H u)[%zu] = %.17g, hvp %.17g", k->op,
                        k->label, e, hv[j], hu[e]);
            }
        }

        /* the dense drivers agree with the directional ones */
        static double J1[MAXN * 3 * MAXN], J2[MAXN * 3 * MAXN], H[9 * MAXN * MAXN];
        size_t Nv = 0;
        for (int v = 0; v < nv; v++)
            Nv += ad_shape_size(ad_node_shape(t, vin[v]));
        REQUIRE(ad_jacobian(t, r.out, nv, vin, J1, AD_JAC_FORWARD) == AD_OK, "%s [%s]: %s",
                k->op, k->label, ad_tape_errmsg(t));
        REQUIRE(ad_jacobian(t, r.out, nv, vin, J2, AD_JAC_REVERSE) == AD_OK, "%s [%s]: %s",
                k->op, k->label, ad_tape_errmsg(t));
        for (size_t i = 0; i < M * Nv; i++)
            REQUIRE(test_err(J1[i], J2[i]) <= 1e-12, "%s [%s]: Jacobian[%zu]: forward %.17g, "
                    "reverse %.17g", k->op, k->label, i, J1[i], J2[i]);
        REQUIRE(ad_hessian(t, L2, nv, vin, H) == AD_OK, "%s [%s]: %s", k->op, k->label,
                ad_tape_errmsg(t));
        double hcol[3 * MAXN];
        size_t row = 0; /* H u from the dense Hessian, over the variables */
        for (int v = 0; v < nv; v++)
            for (size_t j = 0; j < ad_shape_size(ad_node_shape(t, vin[v])); j++, row++) {
                double sum = 0;
                size_t col = 0;
                for (int q = 0; q < nv; q++)
                    for (size_t m = 0; m < ad_shape_size(ad_node_shape(t, vin[q])); m++, col++)
                        sum += H[row * Nv + col] * u[voff[q] + m];
                hcol[row] = sum;
                REQUIRE(test_err(hcol[row], hu[voff[v] + j]) <= 1e-10,
                        "%s [%s]: (Hessian u)[%zu] = %.17g, hvp %.17g", k->op, k->label, row,
                        hcol[row], hu[voff[v] + j]);
            }
    }
done:
    ad_tape_free(t);
}

static void check_case(size_t ci)
{
    const opcase *k = &cases[ci];
    test_rng g = {0x5EED0000u + ci};
    double x[3 * MAXN], w[MAXN], ref[MAXN];
    ad_tape *t = ad_tape_new(NULL), *t2 = ad_tape_new(NULL);
    fdctx fc = {k, w, ad_tape_new(NULL)};
    rec rr, rr2, *r = &rr, *r2 = &rr2;
    const ad_opdef *def;
    const double *val, *val2, *opv[3], *xp;
    ad_shape so, got;

    REQUIRE(t && t2 && fc.t, "%s [%s]: ad_tape_new failed", k->op, k->label);
    REQUIRE(total(k) <= 3 * MAXN && k->nin >= 1 && k->nin <= 3 && k->kind[0] != ALIAS,
            "%s [%s]: bad row", k->op, k->label);
    fill(&g, k, x);
    for (size_t i = 0; i < MAXN; i++)
        w[i] = test_uniform(&g, -1.5, 1.5);

    record(t, k, x, w, 0, r);
    REQUIRE(ad_tape_status(t) == AD_OK, "%s [%s]: recording failed: %s", k->op, k->label,
            ad_tape_errmsg(t));
    REQUIRE(ad_backward(t, r->loss) == AD_OK, "%s [%s]: backward: %s", k->op, k->label,
            ad_tape_errmsg(t));

    /* The node is the op asked for, with its constant. */
    def = ad_node_op(t, r->out);
    REQUIRE(def && !strcmp(def->name, k->op), "%s [%s]: recorded as %s", k->op, k->label,
            def ? def->name : "(null)");
    REQUIRE(ad_node_const(t, r->out) == k->c, "%s [%s]: node constant %g, want %g", k->op,
            k->label, ad_node_const(t, r->out), k->c);

    /* Forward against the reference. */
    xp = x;
    for (int i = 0; i < 3; i++) { /* each operand's elements in x */
        opv[i] = i < k->nin && k->kind[i] == ALIAS ? opv[i - 1] : xp;
        if (i < k->nin && k->kind[i] != ALIAS)
            xp += ad_shape_size(k->shape[i]);
    }
    so = reference(k, opv, ref);
    REQUIRE(so.ndim != -1, "%s: no reference forward for this op", k->op);
    got = ad_node_shape(t, r->out);
    REQUIRE(same_shape(got, so), "%s [%s]: output shape ndim %d %ux%u, expected ndim %d %ux%u",
            k->op, k->label, got.ndim, got.rows, got.cols, so.ndim, so.rows, so.cols);
    val = ad_value(t, r->out);
    REQUIRE(val, "%s [%s]: no value", k->op, k->label);
    for (size_t i = 0; i < ad_shape_size(so); i++)
        REQUIRE(test_err(val[i], ref[i]) <= 1e-12, "%s [%s]: value[%zu] = %.17g, expected %.17g",
                k->op, k->label, i, val[i], ref[i]);

    /* Gradients against central differences. */
    xp = x;
    for (int i = 0; i < nown(k); i++) {
        size_t ni = ad_shape_size(k->shape[i]);
        const double *gr = ad_grad(t, r->in[i]);
        if (k->kind[i] == CONST) {
            REQUIRE(!gr, "%s [%s]: constant operand %d has a gradient", k->op, k->label, i + 1);
            xp += ni;
            continue;
        }
        REQUIRE(gr, "%s [%s]: operand %d has no gradient", k->op, k->label, i + 1);
        if (k->kind[i] == PARAM)
            REQUIRE(gr == r->grad[i], "%s [%s]: ad_grad of a param is not the caller buffer",
                    k->op, k->label);
        for (size_t j = 0; j < ni; j++) {
            double fd = test_fd(loss_at, &fc, x, (size_t)(xp - x) + j, FD_H);
            REQUIRE(test_err(gr[j], fd) <= FD_TOL,
                    "%s [%s]: d/d(operand %d)[%zu]: tape %.12g, finite difference %.12g", k->op,
                    k->label, i + 1, j, gr[j], fd);
        }
        xp += ni;
    }

    /* Every way of sweeping gives these gradients bit for bit: after a
     * replay (tape adjoints are not zeroed; the first write to each one
     * assigns), a second sweep without a replay, and AD_SWEEP_ASSIGN into
     * parameter buffers filled with NaN (written, never read). */
    if (!same_by_every_sweep(t, k, r))
        goto done;

    check_modes(k, x, w);

    /* ad_apply_named records the same thing, bit for bit. */
    record(t2, k, x, w, 1, r2);
    REQUIRE(ad_backward(t2, r2->loss) == AD_OK, "%s [%s] via ad_apply_named: %s", k->op,
            k->label, ad_tape_errmsg(t2));
    REQUIRE(ad_node_op(t2, r2->out) == def, "%s [%s]: ad_apply_named recorded another op",
            k->op, k->label);
    val2 = ad_value(t2, r2->out);
    for (size_t i = 0; i < ad_shape_size(so); i++)
        REQUIRE(val2[i] == val[i], "%s [%s] via ad_apply_named: value[%zu] differs", k->op,
                k->label, i);
    for (int i = 0; i < nown(k); i++) {
        if (k->kind[i] == CONST)
            continue;
        const double *g1 = ad_grad(t, r->in[i]), *g2 = ad_grad(t2, r2->in[i]);
        for (size_t j = 0; j < ad_shape_size(k->shape[i]); j++)
            REQUIRE(g1[j] == g2[j], "%s [%s] via ad_apply_named: grad %d[%zu] differs", k->op,
                    k->label, i + 1, j);
    }
done:
    ad_tape_free(fc.t);
    ad_tape_free(t2);
    ad_tape_free(t);
}

/* One test per built-in op (Criterion forks a process per test, so one
 * per row would be slow); it runs every row of the op. */
ParameterizedTestParameters(ops, finite_differences)
{
    static size_t idx[256];
    size_t n = ad_builtin_count() < 256 ? ad_builtin_count() : 256;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, n);
}

ParameterizedTest(size_t *bi, ops, finite_differences)
{
    const ad_opdef *def = ad_builtin_op(*bi);
    cr_assert_not_null(def);
    int n = 0;
    for (size_t c = 0; c < NCASES; c++)
        if (!strcmp(cases[c].op, def->name)) {
            check_case(c);
            n++;
        }
    cr_assert_geq(n, 4, "built-in op '%s' has %d finite-difference cases (need >= 4)",
                  def->name, n);
}

/* A new built-in op without a row in the table fails here. */
Test(ops, every_builtin_has_cases)
{
    cr_assert_gt(ad_builtin_count(), 0);
    cr_assert_leq(ad_builtin_count(), 256, "raise idx[] in ops/finite_differences");
    for (size_t i = 0; i < ad_builtin_count(); i++) {
        const ad_opdef *def = ad_builtin_op(i);
        cr_assert_not_null(def, "ad_builtin_op(%zu) is NULL", i);
        int n = 0;
        for (size_t c = 0; c < NCASES; c++)
            n += strcmp(cases[c].op, def->name) == 0;
        cr_assert_geq(n, 4, "built-in op '%s' has %d finite-difference cases (need >= 4)",
                      def->name, n);
    }
    cr_assert_null(ad_builtin_op(ad_builtin_count()));
    /* And every row names a built-in. */
    for (size_t c = 0; c < NCASES; c++)
        cr_assert_not_null(ad_registry_find(NULL, cases[c].op), "row %zu: unknown op %s", c,
                           cases[c].op);
}

/* Every elementwise op (the ones with an inline scalar form) has an
 * inline scalar case and a tensor case. */
Test(ops, elementwise_ops_cover_both_paths)
{
    static const char *const elementwise[] = {
        "add", "sub", "mul", "div", "neg", "scale", "addc", "square",
        "sqrt", "exp", "log", "tanh", "sigmoid", "relu", "abs", "powc",
    };
    for (size_t e = 0; e < sizeof elementwise / sizeof elementwise[0]; e++) {
        const opcase probe = {elementwise[e], "", 0, {S0, S0}, {VAR, VAR}, {ANY, ANY}, 0};
        const opcase *k = &probe;
        int inl = 0, tensor = 0;
        for (size_t d = 0; d < NCASES; d++) {
            if (strcmp(cases[d].op, k->op) != 0)
                continue;
            int all_scalar = 1;
            for (int i = 0; i < cases[d].nin; i++)
                all_scalar &= cases[d].shape[i].ndim == 0 && cases[d].kind[i] != PARAM;
            inl |= all_scalar;
            tensor |= !all_scalar;
        }
        cr_assert(inl && tensor, "%s: needs an inline scalar case and a tensor case", k->op);
    }
}

/* relu'(0) = 0 and abs'(0) = 0 exactly, on both paths; and the sides. */
static void kink(const char *op, double x, double want)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node s = ad_scalar_var(t, x);
    ad_node ys = apply_direct(t, op, &s, 0);
    cr_assert_eq(ad_backward(t, ys), AD_OK);
    cr_assert_eq(ad_grad(t, s)[0], want, "%s'(%g) inline: %g, want %g", op, x, ad_grad(t, s)[0],
                 want);

    double v[3] = {x, x, x};
    ad_node vn = ad_variable(t, ad_shape_vec(3), v);
    ad_node y = ad_sum(t, apply_direct(t, op, &vn, 0));
    cr_assert_eq(ad_backward(t, y), AD_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_grad(t, vn)[i], want, "%s'(%g) tensor: %g, want %g", op, x,
                     ad_grad(t, vn)[i], want);
    ad_tape_free(t);
}

Test(ops, relu_and_abs_derivative_at_zero_is_zero)
{
    kink("relu", 0.0, 0.0);
    kink("relu", -0.0, 0.0);
    kink("abs", 0.0, 0.0);
    kink("abs", -0.0, 0.0);
    kink("relu", 1e-300, 1.0);
    kink("relu", -1e-300, 0.0);
    kink("abs", 1e-300, 1.0);
    kink("abs", -1e-300, -1.0);
}

/* The fused loss is stable where the naive formula overflows: logits near
 * 1000, gradient softmax(z) - y by hand. */
Test(ops, softmax_xent_is_stable_for_large_logits)
{
    const double z[4] = {1000.0, 1001.0, 999.5, 1000.25}, y[4] = {0, 1, 0, 0};
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node zn = ad_variable(t, ad_shape_vec(4), z);
    ad_node yn = ad_constant(t, ad_shape_vec(4), y);
    ad_node L = ad_softmax_xent(t, zn, yn);
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    double e[4], s = 0;
    for (int j = 0; j < 4; j++)
        s += (e[j] = exp(z[j] - 1001.0));
    double want = log(s) - (z[1] - 1001.0); /* -log softmax_1 */
    cr_assert(isfinite(ad_scalar_value(t, L)));
    cr_assert_leq(fabs(ad_scalar_value(t, L) - want), 1e-12, "loss %.17g, want %.17g",
                  ad_scalar_value(t, L), want);
    for (int j = 0; j < 4; j++)
        cr_assert_leq(fabs(ad_grad(t, zn)[j] - (e[j] / s - y[j])), 1e-12, "dz[%d] = %.17g", j,
                      ad_grad(t, zn)[j]);
    ad_tape_free(t);
}

/* Op constants are stored exactly: -0.0 is not folded into a preceding
 * +0.0, on the inline path and the tensor path. */
Test(ops, constants_are_kept_bit_exact)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node x = ad_scalar_var(t, 2.0);
    ad_node a = ad_scale(t, x, 0.0);
    ad_node b = ad_scale(t, x, -0.0);
    ad_node c = ad_add_const(t, x, -0.0);
    cr_assert(!signbit(ad_node_const(t, a)));
    cr_assert(signbit(ad_node_const(t, b)), "scale by -0.0 recorded as +0.0");
    cr_assert(signbit(ad_node_const(t, c)));
    cr_assert(signbit(ad_scalar_value(t, b)), "-0.0 * 2 = -0.0");
    const double v[2] = {1, 2};
    ad_node vn = ad_variable(t, ad_shape_vec(2), v);
    ad_node va = ad_scale(t, vn, 0.0), vb = ad_scale(t, vn, -0.0);
    cr_assert(!signbit(ad_value(t, va)[0]));
    cr_assert(signbit(ad_value(t, vb)[0]));
    cr_assert(signbit(ad_node_const(t, vb)));
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert(signbit(ad_scalar_value(t, b)), "after replay");
    cr_assert(!signbit(ad_scalar_value(t, a)));
    ad_tape_free(t);
}
