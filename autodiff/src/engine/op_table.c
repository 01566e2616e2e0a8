/* op_table.c -- the one table of built-in ops, indexed by op code, and the
 * public functions that record them. */
#include "internal.h"
#include "scalar_ops.h"

const ad__op *const ad__ops[AD_OP_COUNT] = {
    [AD_OP_LEAF] = &ad__op_leaf,
    [AD_OP_ADD] = &ad__op_add,
    [AD_OP_SUB] = &ad__op_sub,
    [AD_OP_MUL] = &ad__op_mul,
    [AD_OP_DIV] = &ad__op_div,
    [AD_OP_NEG] = &ad__op_neg,
    [AD_OP_SCALE] = &ad__op_scale,
    [AD_OP_ADDC] = &ad__op_addc,
    [AD_OP_SQUARE] = &ad__op_square,
    [AD_OP_SQRT] = &ad__op_sqrt,
    [AD_OP_EXP] = &ad__op_exp,
    [AD_OP_LOG] = &ad__op_log,
    [AD_OP_TANH] = &ad__op_tanh,
    [AD_OP_SIGMOID] = &ad__op_sigmoid,
    [AD_OP_RELU] = &ad__op_relu,
    [AD_OP_ABS] = &ad__op_abs,
    [AD_OP_POWC] = &ad__op_powc,
    [AD_OP_STEP] = &ad__op_step,
    [AD_OP_SIGN] = &ad__op_sign,
    [AD_OP_SUM] = &ad__op_sum,
    [AD_OP_MEAN] = &ad__op_mean,
    [AD_OP_DOT] = &ad__op_dot,
    [AD_OP_MATVEC] = &ad__op_matvec,
    [AD_OP_MATVEC_T] = &ad__op_matvec_t,
    [AD_OP_MATMUL] = &ad__op_matmul,
    [AD_OP_MATMUL_NT] = &ad__op_matmul_nt,
    [AD_OP_OUTER] = &ad__op_outer,
    [AD_OP_TRANSPOSE] = &ad__op_transpose,
    [AD_OP_SOFTMAX_XENT] = &ad__op_softmax_xent,
    [AD_OP_AFFINE] = &ad__op_affine,
    [AD_OP_LOGSUMEXP] = &ad__op_logsumexp,
    [AD_OP_SIN] = &ad__op_sin,
    [AD_OP_COS] = &ad__op_cos,
    [AD_OP_TAN] = &ad__op_tan,
    [AD_OP_ASIN] = &ad__op_asin,
    [AD_OP_ACOS] = &ad__op_acos,
    [AD_OP_ATAN] = &ad__op_atan,
    [AD_OP_SINH] = &ad__op_sinh,
    [AD_OP_COSH] = &ad__op_cosh,
    [AD_OP_ASINH] = &ad__op_asinh,
    [AD_OP_ACOSH] = &ad__op_acosh,
    [AD_OP_ATANH] = &ad__op_atanh,
    [AD_OP_LOG1P] = &ad__op_log1p,
    [AD_OP_EXPM1] = &ad__op_expm1,
    [AD_OP_LOG2] = &ad__op_log2,
    [AD_OP_LOG10] = &ad__op_log10,
    [AD_OP_ERF] = &ad__op_erf,
    [AD_OP_ERFC] = &ad__op_erfc,
    [AD_OP_SOFTPLUS] = &ad__op_softplus,
    [AD_OP_GELU] = &ad__op_gelu,
    [AD_OP_ELU] = &ad__op_elu,
    [AD_OP_LEAKY_RELU] = &ad__op_leaky_relu,
    [AD_OP_FLOOR] = &ad__op_floor,
    [AD_OP_CEIL] = &ad__op_ceil,
    [AD_OP_ROUND] = &ad__op_round,
    [AD_OP_CLAMP_MIN] = &ad__op_clamp_min,
    [AD_OP_CLAMP_MAX] = &ad__op_clamp_max,
    [AD_OP_POW] = &ad__op_pow,
    [AD_OP_ATAN2] = &ad__op_atan2,
    [AD_OP_HYPOT] = &ad__op_hypot,
    [AD_OP_MIN] = &ad__op_min,
    [AD_OP_MAX] = &ad__op_max,
    [AD_OP_LT] = &ad__op_lt,
    [AD_OP_LE] = &ad__op_le,
    [AD_OP_GT] = &ad__op_gt,
    [AD_OP_GE] = &ad__op_ge,
    [AD_OP_EQ] = &ad__op_eq,
    [AD_OP_NE] = &ad__op_ne,
    [AD_OP_SELECT] = &ad__op_select,
    /* structure */
    [AD_OP_RESHAPE] = &ad__op_reshape,
    [AD_OP_SLICE] = &ad__op_slice,
    [AD_OP_SLICE_ADD] = &ad__op_slice_add,
    [AD_OP_TAKE] = &ad__op_take,
    [AD_OP_INDEX_ADD] = &ad__op_index_add,
    [AD_OP_CONCAT] = &ad__op_concat,
    /* reductions along an axis */
    [AD_OP_SUM_AXIS] = &ad__op_sum_axis,
    [AD_OP_MEAN_AXIS] = &ad__op_mean_axis,
    [AD_OP_MAX_AXIS] = &ad__op_max_axis,
    [AD_OP_MIN_AXIS] = &ad__op_min_axis,
    [AD_OP_MAX_MASK] = &ad__op_max_mask,
    [AD_OP_SOFTMAX] = &ad__op_softmax,
    [AD_OP_LOG_SOFTMAX] = &ad__op_log_softmax,
    [AD_OP_NORM] = &ad__op_norm,
    [AD_OP_SOLVE] = &ad__op_solve,
    [AD_OP_SOLVE_SPD] = &ad__op_solve_spd,
    [AD_OP_LOGDET] = &ad__op_logdet,
    [AD_OP_TRACE] = &ad__op_trace,
};

_Static_assert(sizeof ad__ops / sizeof ad__ops[0] == AD_OP_COUNT, "one descriptor per op code");

/* The few ops that keep state in their node (a factorization) or report a
 * failure after forward (a singular matrix): see ad__opstate. */
const ad__opstate *const ad__opstates[AD_OP_COUNT] = {
    [AD_OP_SOLVE] = &ad__opstate_solve,
    [AD_OP_SOLVE_SPD] = &ad__opstate_solve_spd,
    [AD_OP_LOGDET] = &ad__opstate_logdet,
};

/* Sparsity rules (see ad__sprule). The elementwise ops' come from their
 * formula lines in scalar_ops.h: a derivative spelled 0.0 there is
 * identically zero, so it adds no dependency (first) or no coupling
 * (second); any other formula is taken as nonzero. */
#define SP_UNARY(NAME, CODE, TC, FWD, DER, D2, ...) [CODE] = {AD__SP_ELEMWISE, {#DER, "0.0"}, {#D2, "0.0", "0.0"}},
#define SP_BINARY(NAME, CODE, FWD, DA, DB, DAA, DAB, DBB, ...)                                 \
    [CODE] = {AD__SP_ELEMWISE, {#DA, #DB}, {#DAA, #DAB, #DBB}},
#define SP(CODE, KIND) [CODE] = {KIND, {NULL, NULL}, {NULL, NULL, NULL}},
const ad__sprule ad__sprules[AD_OP_COUNT] = {
    SP(AD_OP_LEAF, AD__SP_LEAF)
    AD__UNARY_OPS(SP_UNARY)
    AD__BINARY_OPS(SP_BINARY)
    AD__COMPARE_OPS(SP_BINARY)
    SP(AD_OP_SUM, AD__SP_LINEAR)
    SP(AD_OP_MEAN, AD__SP_LINEAR)
    SP(AD_OP_DOT, AD__SP_BILINEAR)
    SP(AD_OP_MATVEC, AD__SP_BILINEAR)
    SP(AD_OP_MATVEC_T, AD__SP_BILINEAR)
    SP(AD_OP_MATMUL, AD__SP_BILINEAR)
    SP(AD_OP_MATMUL_NT, AD__SP_BILINEAR)
    SP(AD_OP_OUTER, AD__SP_BILINEAR)
    SP(AD_OP_TRANSPOSE, AD__SP_TRANSPOSE)
    SP(AD_OP_SOFTMAX_XENT, AD__SP_DENSE)
    SP(AD_OP_AFFINE, AD__SP_BILINEAR) /* W x + b: b is linear */
    SP(AD_OP_LOGSUMEXP, AD__SP_DENSE)
    SP(AD_OP_SELECT, AD__SP_SELECT)
    SP(AD_OP_RESHAPE, AD__SP_IDENTITY)
    SP(AD_OP_SLICE, AD__SP_LINEAR)
    SP(AD_OP_SLICE_ADD, AD__SP_LINEAR)
    SP(AD_OP_TAKE, AD__SP_LINEAR)
    SP(AD_OP_INDEX_ADD, AD__SP_LINEAR)
    SP(AD_OP_CONCAT, AD__SP_CONCAT)
    SP(AD_OP_SUM_AXIS, AD__SP_LINEAR)
    SP(AD_OP_MEAN_AXIS, AD__SP_LINEAR)
    SP(AD_OP_MAX_AXIS, AD__SP_LINEAR) /* piecewise linear: second derivative 0 */
    SP(AD_OP_MIN_AXIS, AD__SP_LINEAR)
    SP(AD_OP_MAX_MASK, AD__SP_LINEAR)
    SP(AD_OP_SOFTMAX, AD__SP_DENSE)
    SP(AD_OP_LOG_SOFTMAX, AD__SP_DENSE)
    SP(AD_OP_NORM, AD__SP_DENSE)
    SP(AD_OP_SOLVE, AD__SP_DENSE)
    SP(AD_OP_SOLVE_SPD, AD__SP_DENSE)
    SP(AD_OP_LOGDET, AD__SP_DENSE)
    SP(AD_OP_TRACE, AD__SP_LINEAR)
};
#undef SP
#undef SP_UNARY
#undef SP_BINARY

unsigned ad__opcode_of(const ad_opdef *def)
{
    for (unsigned i = 0; i < AD_OP_COUNT; i++)
        if (&ad__ops[i]->def == def)
            return i;
    return AD_OP_CUSTOM;
}

/* Built-ins are numbered from 1: the leaf is not an op one can apply. */
size_t ad_builtin_count(void) { return AD_OP_COUNT - 1; }

const ad_opdef *ad_builtin_op(size_t index)
{
    return index < AD_OP_COUNT - 1 ? &ad__ops[index + 1]->def : NULL;
}

#define REC1(op, x, c) ad__record(t, (op), &ad__ops[(op)]->def, &(x), 1, (c))
#define REC2(op, a, b)                                                                        \
    do {                                                                                      \
        ad_node in_[2] = {(a), (b)};                                                          \
        return ad__record(t, (op), &ad__ops[(op)]->def, in_, 2, 0.0);                         \
    } while (0)

ad_node ad_sum(ad_tape *t, ad_node x) { return REC1(AD_OP_SUM, x, 0.0); }
ad_node ad_mean(ad_tape *t, ad_node x) { return REC1(AD_OP_MEAN, x, 0.0); }
ad_node ad_dot(ad_tape *t, ad_node u, ad_node v) { REC2(AD_OP_DOT, u, v); }
ad_node ad_matvec(ad_tape *t, ad_node W, ad_node x) { REC2(AD_OP_MATVEC, W, x); }
ad_node ad_matvec_t(ad_tape *t, ad_node W, ad_node x) { REC2(AD_OP_MATVEC_T, W, x); }
ad_node ad_matmul(ad_tape *t, ad_node A, ad_node B) { REC2(AD_OP_MATMUL, A, B); }
ad_node ad_matmul_nt(ad_tape *t, ad_node A, ad_node B) { REC2(AD_OP_MATMUL_NT, A, B); }
ad_node ad_outer(ad_tape *t, ad_node u, ad_node v) { REC2(AD_OP_OUTER, u, v); }
ad_node ad_transpose(ad_tape *t, ad_node A) { return REC1(AD_OP_TRANSPOSE, A, 0.0); }
ad_node ad_softmax_xent(ad_tape *t, ad_node z, ad_node y) { REC2(AD_OP_SOFTMAX_XENT, z, y); }
ad_node ad_logsumexp(ad_tape *t, ad_node z) { return REC1(AD_OP_LOGSUMEXP, z, 0.0); }
ad_node ad_affine(ad_tape *t, ad_node W, ad_node x, ad_node b)
{
    ad_node in[3] = {W, x, b};
    return ad__record(t, AD_OP_AFFINE, &ad__ops[AD_OP_AFFINE]->def, in, 3, 0.0);
}
