/* test_shape_ops.c -- structure ops and reductions along an axis (issue
 * 14, part 3) beyond the finite-difference table: every error message,
 * repeated indices, concat and stack of six parts, max/min ties and NaN,
 * the norm at 0 and at the edges of the double range, stability of
 * softmax and log_softmax, index operands changed before a replay, a
 * workspace, the broadcast forms, and values against PyTorch float64. */
#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static const double Z[64]; /* zeros, for leaves of any size */

static ad_tape *tape(void)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    return t;
}

/* The call failed: nil, nothing recorded, the status and the exact message. */
#define EXPECT_FAIL(t, call, status, msg)                                                     \
    do {                                                                                      \
        size_t len_ = ad_tape_len(t);                                                         \
        ad_node r_ = (call);                                                                  \
        cr_assert(ad_node_is_nil(r_), "%s: returned a node", #call);                          \
        cr_assert_eq(ad_tape_len(t), len_, "%s: recorded a node", #call);                     \
        cr_assert_eq(ad_tape_status(t), (status), "%s: status %d (%s)", #call,                \
                     ad_tape_status(t), ad_tape_errmsg(t));                                   \
        cr_assert_str_eq(ad_tape_errmsg(t), (msg));                                           \
    } while (0)

/* One failing call on a fresh tape with a variable x of shape xs (and v
 * of shape vs). */
#define FAIL1(xs, call, status, msg)                                                          \
    do {                                                                                      \
        ad_tape *t = tape();                                                                  \
        ad_node x = ad_variable(t, (xs), Z);                                                  \
        (void)x;                                                                              \
        EXPECT_FAIL(t, call, status, msg);                                                    \
        ad_tape_free(t);                                                                      \
    } while (0)
#define FAIL2(xs, vs, call, status, msg)                                                      \
    do {                                                                                      \
        ad_tape *t = tape();                                                                  \
        ad_node x = ad_variable(t, (xs), Z), v = ad_variable(t, (vs), Z);                     \
        (void)x, (void)v;                                                                     \
        EXPECT_FAIL(t, call, status, msg);                                                    \
        ad_tape_free(t);                                                                      \
    } while (0)

#define VEC(n) ad_shape_vec(n)
#define MAT(r, c) ad_shape_mat(r, c)
#define SCA ad_shape_scalar()

static void expect_near(const double *got, const double *want, size_t n, double tol,
                        const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])),
                  "%s[%zu] = %.17g, want %.17g", what, i, got[i], want[i]);
}

/* ---- error messages ---- */

Test(shape_errors, reshape)
{
    FAIL1(MAT(2, 3), ad_reshape(t, x, MAT(4, 2)), AD_ESHAPE,
          "reshape: x is 2x3 (6 elements) but the target 4x2 has 8");
    FAIL1(VEC(5), ad_reshape(t, x, SCA), AD_ESHAPE,
          "reshape: x is a vector of length 5 (5 elements) but the target a scalar has 1");
    FAIL1(VEC(6), ad_reshape(t, x, ((ad_shape){6, 1, 3})), AD_EMISUSE,
          "reshape: invalid target shape (ndim 3, 6x1)");
    /* through ad_apply: c is the shape code */
    FAIL1(VEC(6), ad_apply_named(t, "reshape", &x, 1, 4.0), AD_ESHAPE,
          "reshape: x is a vector of length 6 (6 elements), which is not rows of 4 columns");
    FAIL1(VEC(6), ad_apply_named(t, "reshape", &x, 1, 2.5), AD_ESHAPE,
          "reshape: c = 2.5 is not a shape (-1 a scalar, 0 a vector, k >= 1 a matrix of k "
          "columns)");
    FAIL1(VEC(6), ad_apply_named(t, "reshape", &x, 1, -1.0), AD_ESHAPE,
          "reshape: x is a vector of length 6 (6 elements), not one element for a scalar");
}

Test(shape_errors, slice)
{
    FAIL1(MAT(5, 2), ad_slice(t, x, 3, 5), AD_ESHAPE, "slice: rows 3..7 of a 5x2 matrix");
    FAIL1(MAT(5, 2), ad_slice_block(t, x, 0, 2, 1, 2), AD_ESHAPE,
          "slice: columns 1..2 of a 5x2 matrix");
    FAIL1(MAT(5, 2), ad_slice_block(t, x, 5, 1, 0, 1), AD_ESHAPE,
          "slice: rows 5..5 of a 5x2 matrix");
    FAIL1(VEC(4), ad_slice(t, x, 2, 3), AD_ESHAPE, "slice: elements 2..4 of a vector of length 4");
    FAIL1(VEC(4), ad_slice(t, x, 1, 0), AD_ESHAPE,
          "slice: no elements (an empty block) of a vector of length 4");
    FAIL1(MAT(3, 3), ad_slice_block(t, x, 0, 1, 0, 0), AD_ESHAPE,
          "slice: no columns (an empty block) of a 3x3 matrix");
    FAIL1(SCA, ad_slice(t, x, 0, 1), AD_ESHAPE,
          "slice: x is a scalar; slice takes a vector or a matrix");
    FAIL1(VEC(4), ad_slice_block(t, x, 0, 1, 0, 1), AD_ESHAPE,
          "slice: x is a vector of length 4; a block needs a matrix (ad_slice cuts a vector)");
    /* through ad_apply: the block size in c, the starts an operand */
    {
        ad_tape *t = tape();
        ad_node x = ad_variable(t, MAT(5, 2), Z), s2 = ad_constant(t, VEC(2), Z);
        ad_node s3 = ad_constant(t, VEC(3), Z);
        ad_node in[2] = {x, s2};
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 1.5), AD_ESHAPE,
                    "slice: c = 1.5 is not a block of 5x2 (rows * (cols of x + 1) + cols)");
        ad_tape_reset(t);
        x = ad_variable(t, MAT(5, 2), Z), s3 = ad_constant(t, VEC(3), Z);
        in[0] = x, in[1] = s3;
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 4.0), AD_ESHAPE,
                    "slice: x is 5x2 but the starts are a vector of length 3 (need a vector of "
                    "2: row, column)");
        ad_tape_reset(t);
        x = ad_variable(t, MAT(5, 2), Z), s2 = ad_constant(t, VEC(2), Z);
        in[0] = x, in[1] = s2;
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 6.0 * 3 + 1), AD_ESHAPE,
                    "slice: c = 19 is not a block of 5x2 (rows * (cols of x + 1) + cols)");
        ad_tape_reset(t);
        x = ad_variable(t, VEC(4), Z), s3 = ad_constant(t, VEC(1), Z);
        in[0] = x, in[1] = s3;
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 5.0), AD_ESHAPE,
                    "slice: 5 elements of a vector of length 4");
        ad_tape_reset(t);
        x = ad_variable(t, VEC(4), Z), s3 = ad_constant(t, VEC(1), Z);
        in[0] = x, in[1] = s3;
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 0.0), AD_ESHAPE,
                    "slice: c = 0 is not a length for a slice of a vector of length 4");
        ad_tape_reset(t);
        in[0] = ad_scalar_var(t, 1.0), in[1] = ad_constant(t, VEC(1), Z);
        EXPECT_FAIL(t, ad_apply_named(t, "slice", in, 2, 1.0), AD_ESHAPE,
                    "slice: x is a scalar; slice takes a vector or a matrix");
        ad_tape_free(t);
    }
}

Test(shape_errors, slice_add)
{
    FAIL2(MAT(4, 5), MAT(2, 3), ad_slice_add(t, x, 3, 0, v), AD_ESHAPE,
          "slice_add: rows 3..4 of a 4x5 matrix");
    FAIL2(MAT(4, 5), MAT(2, 3), ad_slice_add(t, x, 0, 3, v), AD_ESHAPE,
          "slice_add: columns 3..5 of a 4x5 matrix");
    FAIL2(VEC(4), VEC(2), ad_slice_add(t, x, 3, 0, v), AD_ESHAPE,
          "slice_add: elements 3..4 of a vector of length 4");
    FAIL2(VEC(4), VEC(2), ad_slice_add(t, x, 0, 1, v), AD_ESHAPE,
          "slice_add: column 1 of a vector of length 4 (a vector has column 0 only)");
    FAIL2(MAT(4, 5), VEC(2), ad_slice_add(t, x, 0, 0, v), AD_ESHAPE,
          "slice_add: x is 4x5 but v is a vector of length 2 (v must be a block of x)");
    FAIL2(SCA, SCA, ad_slice_add(t, x, 0, 0, v), AD_ESHAPE,
          "slice_add: x is a scalar but v is a scalar (v must be a block of x; x must be a "
          "vector or a matrix)");
    {
        ad_tape *t = tape();
        ad_node in[3] = {ad_variable(t, MAT(2, 2), Z), ad_constant(t, VEC(2), Z),
                         ad_variable(t, MAT(3, 1), Z)};
        EXPECT_FAIL(t, ad_apply_named(t, "slice_add", in, 3, 0.0), AD_ESHAPE,
                    "slice_add: v is 3x1 but x is 2x2 (v must be a block of x: a matrix of at "
                    "most as many rows and columns)");
        ad_tape_reset(t);
        in[0] = ad_scalar_var(t, 1.0), in[1] = ad_constant(t, VEC(1), Z);
        in[2] = ad_scalar_var(t, 1.0);
        EXPECT_FAIL(t, ad_apply_named(t, "slice_add", in, 3, 0.0), AD_ESHAPE,
                    "slice_add: x is a scalar; slice_add takes a vector or a matrix");
        ad_tape_reset(t);
        in[0] = ad_variable(t, VEC(5), Z), in[1] = ad_constant(t, VEC(2), Z);
        in[2] = ad_variable(t, VEC(2), Z);
        EXPECT_FAIL(t, ad_apply_named(t, "slice_add", in, 3, 0.0), AD_ESHAPE,
                    "slice_add: x is a vector of length 5 but the starts are a vector of length "
                    "2 (need one number)");
        ad_tape_free(t);
    }
}

Test(shape_errors, take_and_index_add)
{
    const uint32_t idx[3] = {0, 4, 5};
    FAIL1(VEC(5), ad_take(t, x, 3, idx), AD_ESHAPE,
          "take: index 5 (entry 2) is out of range for a vector of length 5 (elements 0..4)");
    FAIL1(MAT(5, 2), ad_take(t, x, 3, idx), AD_ESHAPE,
          "take: index 5 (entry 2) is out of range for the rows of a 5x2 matrix (rows 0..4)");
    FAIL1(MAT(3, 2), ad_at(t, x, 3), AD_ESHAPE,
          "take: index 3 (entry 0) is out of range for the rows of a 3x2 matrix (rows 0..2)");
    FAIL1(VEC(5), ad_take(t, x, 0, idx), AD_ESHAPE, "take: no indices (n = 0)");
    FAIL1(VEC(5), ad_take(t, x, 2, NULL), AD_EMISUSE, "take: idx is NULL");
    FAIL1(SCA, ad_take(t, x, 1, idx), AD_ESHAPE,
          "take: x is a scalar; it has no elements or rows to index");
    FAIL2(VEC(5), VEC(2), ad_index_add(t, x, 3, idx, v), AD_ESHAPE,
          "index_add: index 5 (entry 2) is out of range for a vector of length 5 (elements "
          "0..4)");
    FAIL2(MAT(6, 2), VEC(2), ad_index_add(t, x, 3, idx, v), AD_ESHAPE,
          "index_add: x is 6x2 and the indices a vector of length 3, so v must be 3x2, not a "
          "vector of length 2");
    FAIL2(VEC(6), MAT(3, 1), ad_index_add(t, x, 3, idx, v), AD_ESHAPE,
          "index_add: x is a vector of length 6 and the indices a vector of length 3, so v "
          "must be a vector of length 3, not 3x1");
    {
        ad_tape *t = tape();
        ad_node in[2] = {ad_variable(t, VEC(4), Z), ad_constant(t, MAT(2, 2), Z)};
        EXPECT_FAIL(t, ad_apply_named(t, "take", in, 2, 0.0), AD_ESHAPE,
                    "take: the indices are 2x2; need a scalar or a vector of them");
        ad_tape_reset(t);
        in[0] = ad_scalar_var(t, 1.0), in[1] = ad_scalar(t, 0.0);
        EXPECT_FAIL(t, ad_apply_named(t, "take", in, 2, 0.0), AD_ESHAPE,
                    "take: x is a scalar; take indexes a vector or a matrix");
        ad_tape_free(t);
    }
    {
        /* the count is checked before any index is read */
        ad_tape *t = tape();
        ad_node x = ad_variable(t, VEC(4), Z);
        EXPECT_FAIL(t, ad_take(t, x, (size_t)1 << 33, idx), AD_ELIMIT,
                    "take: 8589934592 indices are too many (at most 2^32 - 1)");
        ad_tape_free(t);
    }
}

Test(shape_errors, concat_and_stack)
{
    ad_tape *t = tape();
    ad_node p[4] = {ad_variable(t, MAT(2, 3), Z), ad_variable(t, MAT(1, 3), Z),
                    ad_variable(t, MAT(2, 4), Z), ad_variable(t, VEC(3), Z)};
    EXPECT_FAIL(t, ad_concat(t, 0, 3, p), AD_ESHAPE,
                "concat: part 3 is 2x4 but part 1 is 2x3 (axis 0 stacks rows: the column counts "
                "must agree, a vector being one row)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, MAT(2, 3), Z), p[1] = ad_variable(t, MAT(1, 3), Z);
    EXPECT_FAIL(t, ad_concat(t, 1, 2, p), AD_ESHAPE,
                "concat: part 2 is 1x3 but part 1 is 2x3 (axis 1 puts matrices side by side: "
                "all matrices, with one row count)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, MAT(2, 3), Z), p[1] = ad_variable(t, VEC(3), Z);
    EXPECT_FAIL(t, ad_concat(t, 2, 2, p), AD_EMISUSE,
                "concat: axis 2; 0 joins one after the other, 1 side by side");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_concat(t, 0, 0, p), AD_EMISUSE, "concat: no parts (n < 1)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_concat(t, 0, 2, NULL), AD_EMISUSE, "concat: parts is NULL");
    ad_tape_reset(t);
    p[0] = ad_variable(t, VEC(3), Z), p[1] = ad_nil();
    EXPECT_FAIL(t, ad_concat(t, 0, 2, p), AD_EMISUSE,
                "concat: operand 2 is the nil node (the result of a failed call)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, SCA, Z), p[1] = ad_variable(t, MAT(1, 1), Z);
    EXPECT_FAIL(t, ad_concat(t, 0, 2, p), AD_ESHAPE,
                "concat: part 1 is a scalar but part 2 is 1x1 (axis 0 stacks rows: the column "
                "counts must agree, a vector being one row)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, VEC(3), Z), p[1] = ad_variable(t, VEC(4), Z);
    EXPECT_FAIL(t, ad_stack(t, 2, p), AD_ESHAPE,
                "stack: part 2 is a vector of length 4 but part 1 is a vector of length 3 "
                "(stacked parts must have one shape)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, MAT(2, 2), Z), p[1] = ad_variable(t, MAT(2, 2), Z);
    EXPECT_FAIL(t, ad_stack(t, 2, p), AD_ESHAPE,
                "stack: part 1 is 2x2; stack takes scalars or vectors (ad_concat joins "
                "matrices)");
    ad_tape_reset(t);
    EXPECT_FAIL(t, ad_stack(t, 0, p), AD_EMISUSE, "stack: no parts (n < 1)");
    /* the binary op through ad_apply */
    ad_tape_reset(t);
    p[0] = ad_variable(t, VEC(3), Z), p[1] = ad_variable(t, MAT(2, 4), Z);
    EXPECT_FAIL(t, ad_apply_named(t, "concat", p, 2, 0.0), AD_ESHAPE,
                "concat: a is a vector of length 3 but b is 2x4 (axis 0 stacks rows: the column "
                "counts must agree, a vector being one row)");
    ad_tape_reset(t);
    p[0] = ad_variable(t, VEC(3), Z), p[1] = ad_variable(t, VEC(3), Z);
    EXPECT_FAIL(t, ad_apply_named(t, "concat", p, 2, 2.0), AD_ESHAPE,
                "concat: axis 2; 0 joins one after the other, 1 side by side");
    ad_tape_reset(t);
    p[0] = ad_variable(t, VEC(3), Z), p[1] = ad_variable(t, VEC(3), Z);
    EXPECT_FAIL(t, ad_apply_named(t, "concat", p, 2, 1.0), AD_ESHAPE,
                "concat: a is a vector of length 3 but b is a vector of length 3 (axis 1 puts "
                "matrices side by side: both matrices, with one row count)");
    ad_tape_free(t);
}

Test(shape_errors, reductions)
{
    FAIL1(MAT(3, 4), ad_sum_axis(t, x, 2), AD_ESHAPE,
          "sum_axis: axis 2 of 3x4; 0 reduces down the columns (over the rows), 1 along the "
          "rows");
    FAIL1(VEC(4), ad_mean_axis(t, x, 1), AD_ESHAPE,
          "mean_axis: axis 1 of a vector of length 4 (only a matrix has an axis 1)");
    FAIL1(SCA, ad_max_axis(t, x, 1), AD_ESHAPE,
          "max_axis: axis 1 of a scalar (only a matrix has an axis 1)");
    FAIL1(MAT(3, 4), ad_min_axis(t, x, -1), AD_ESHAPE,
          "min_axis: axis -1 of 3x4; 0 reduces down the columns (over the rows), 1 along the "
          "rows");
    FAIL1(VEC(2), ad_max_mask(t, x, 1), AD_ESHAPE,
          "max_mask: axis 1 of a vector of length 2 (only a matrix has an axis 1)");
    FAIL1(SCA, ad_softmax(t, x), AD_ESHAPE,
          "softmax: x is a scalar; need a vector or a matrix (one row per sample)");
    FAIL1(SCA, ad_log_softmax(t, x), AD_ESHAPE,
          "log_softmax: x is a scalar; need a vector or a matrix (one row per sample)");
}

/* ---- take and index_add: repeated indices add ---- */

Test(shape_ops, take_repeated_indices_add_their_adjoints)
{
    ad_tape *t = tape();
    const double xv[4] = {10, 20, 30, 40};
    const uint32_t idx[6] = {2, 0, 2, 2, 3, 0};
    ad_node x = ad_variable(t, VEC(4), xv);
    ad_node y = ad_take(t, x, 6, idx);
    const double w[6] = {1, 2, 3, 4, 5, 6};
    ad_node L = ad_dot(t, y, ad_constant(t, VEC(6), w));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    const double want_y[6] = {30, 10, 30, 30, 40, 10}, want_g[4] = {2 + 6, 0, 1 + 3 + 4, 5};
    expect_near(ad_value(t, y), want_y, 6, 0, "take");
    expect_near(ad_grad(t, x), want_g, 4, 0, "d/dx");
    /* rows of a matrix, and one row with ad_at */
    const double X[6] = {1, 2, 3, 4, 5, 6};
    const uint32_t rows[3] = {1, 1, 0};
    ad_node Xn = ad_variable(t, MAT(3, 2), X);
    ad_node R = ad_take(t, Xn, 3, rows), r2 = ad_at(t, Xn, 2);
    cr_assert_eq(ad_node_shape(t, R).ndim, 2);
    cr_assert_eq(ad_node_shape(t, r2).ndim, 1);
    const double want_R[6] = {3, 4, 3, 4, 1, 2}, want_r2[2] = {5, 6};
    expect_near(ad_value(t, R), want_R, 6, 0, "take rows");
    expect_near(ad_value(t, r2), want_r2, 2, 0, "at");
    ad_node L2 = ad_add(t, ad_sum(t, R), ad_sum(t, r2));
    cr_assert_eq(ad_backward(t, L2), AD_OK);
    const double want_G[6] = {1, 1, 2, 2, 1, 1};
    expect_near(ad_grad(t, Xn), want_G, 6, 0, "d/dX");
    /* a scalar from a vector */
    ad_node e = ad_at(t, x, 3);
    cr_assert_eq(ad_node_shape(t, e).ndim, 0);
    cr_assert_eq(ad_scalar_value(t, e), 40.0);
    ad_tape_free(t);
}

Test(shape_ops, index_add_scatters_with_repeats)
{
    ad_tape *t = tape();
    const double xv[4] = {1, 1, 1, 1}, vv[3] = {5, 7, 9};
    const uint32_t idx[3] = {3, 1, 3};
    ad_node x = ad_variable(t, VEC(4), xv), v = ad_variable(t, VEC(3), vv);
    ad_node y = ad_index_add(t, x, 3, idx, v);
    const double want[4] = {1, 8, 1, 15};
    expect_near(ad_value(t, y), want, 4, 0, "index_add");
    const double w[4] = {1, 2, 3, 4};
    cr_assert_eq(ad_backward(t, ad_dot(t, y, ad_constant(t, VEC(4), w))), AD_OK);
    const double gx[4] = {1, 2, 3, 4}, gv[3] = {4, 2, 4};
    expect_near(ad_grad(t, x), gx, 4, 0, "d/dx");
    expect_near(ad_grad(t, v), gv, 3, 0, "d/dv");
    ad_tape_free(t);
}

/* ---- slices ---- */

Test(shape_ops, slices_and_their_padded_gradients)
{
    ad_tape *t = tape();
    double X[20];
    for (int i = 0; i < 20; i++)
        X[i] = i;
    ad_node x = ad_variable(t, MAT(4, 5), X);
    ad_node b = ad_slice_block(t, x, 1, 2, 2, 3); /* rows 1..2, cols 2..4 */
    const double want_b[6] = {7, 8, 9, 12, 13, 14};
    cr_assert_eq(ad_node_shape(t, b).rows, 2);
    cr_assert_eq(ad_node_shape(t, b).cols, 3);
    expect_near(ad_value(t, b), want_b, 6, 0, "block");
    ad_node r = ad_slice(t, x, 3, 1); /* the last row, 1x5 */
    cr_assert_eq(ad_node_shape(t, r).ndim, 2);
    cr_assert_eq(ad_value(t, r)[4], 19.0);
    cr_assert_eq(ad_backward(t, ad_add(t, ad_sum(t, b), ad_sum(t, r))), AD_OK);
    double want_g[20] = {0};
    for (int i = 1; i <= 2; i++)
        for (int j = 2; j <= 4; j++)
            want_g[i * 5 + j] = 1;
    for (int j = 0; j < 5; j++)
        want_g[15 + j] = 1;
    expect_near(ad_grad(t, x), want_g, 20, 0, "d/dx");
    /* vector slices, slice_add */
    const double v7[7] = {0, 1, 2, 3, 4, 5, 6};
    ad_node v = ad_variable(t, VEC(7), v7);
    ad_node s = ad_slice(t, v, 2, 3);
    const double want_s[3] = {2, 3, 4};
    expect_near(ad_value(t, s), want_s, 3, 0, "slice");
    ad_node pad = ad_slice_add(t, ad_constant(t, VEC(7), Z), 4, 0, s);
    const double want_p[7] = {0, 0, 0, 0, 2, 3, 4};
    expect_near(ad_value(t, pad), want_p, 7, 0, "slice_add");
    ad_tape_free(t);
}

/* The starts and indices are operands, read at every evaluation: changed
 * with ad_set_value they move the slice; out of range they are clamped
 * (never read outside x), and the gradient follows. */
Test(shape_ops, index_operands_replay_and_clamp)
{
    ad_tape *t = tape();
    const double v7[7] = {0, 10, 20, 30, 40, 50, 60};
    ad_node v = ad_variable(t, VEC(7), v7);
    ad_node s = ad_slice(t, v, 1, 3);
    ad_node in[AD_MAX_ARITY];
    cr_assert_eq(ad_node_inputs(t, s, in), 2);
    const double start = 4;
    cr_assert_eq(ad_set_value(t, in[1], &start), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    const double want[3] = {40, 50, 60};
    expect_near(ad_value(t, s), want, 3, 0, "moved slice");
    const double far = 1e9, nan = NAN, neg = -3;
    cr_assert_eq(ad_set_value(t, in[1], &far), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    expect_near(ad_value(t, s), want, 3, 0, "clamped to the end");
    cr_assert_eq(ad_set_value(t, in[1], &nan), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    const double first[3] = {0, 10, 20};
    expect_near(ad_value(t, s), first, 3, 0, "NaN start reads 0");
    cr_assert_eq(ad_set_value(t, in[1], &neg), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    expect_near(ad_value(t, s), first, 3, 0, "clamped to 0");

    const uint32_t idx[2] = {1, 2};
    ad_node y = ad_take(t, v, 2, idx);
    cr_assert_eq(ad_node_inputs(t, y, in), 2);
    const double bad[2] = {6.9, 100};
    cr_assert_eq(ad_set_value(t, in[1], bad), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    const double wy[2] = {60, 60};
    expect_near(ad_value(t, y), wy, 2, 0, "clamped take");
    cr_assert_eq(ad_backward(t, ad_sum(t, y)), AD_OK);
    const double gy[7] = {0, 0, 0, 0, 0, 0, 2};
    expect_near(ad_grad(t, v), gy, 7, 0, "the gradient goes where the values came from");
    ad_tape_free(t);
}

/* ---- concat and stack: more parts than AD_MAX_ARITY ---- */

Test(shape_ops, concat_and_stack_six_parts)
{
    ad_tape *t = tape();
    ad_node p[6];
    double vals[6][3];
    for (int k = 0; k < 6; k++) {
        for (int j = 0; j < 3; j++)
            vals[k][j] = 10 * k + j;
        p[k] = ad_variable(t, VEC(3), vals[k]);
    }
    const size_t before = ad_tape_len(t);
    ad_node c = ad_concat(t, 0, 6, p);
    cr_assert_eq(ad_tape_len(t) - before, 5, "six parts: five binary concat nodes");
    cr_assert_eq(ad_node_shape(t, c).ndim, 1);
    cr_assert_eq(ad_node_shape(t, c).rows, 18);
    for (int i = 0; i < 18; i++)
        cr_expect_eq(ad_value(t, c)[i], vals[i / 3][i % 3]);
    ad_node S = ad_stack(t, 6, p);
    cr_assert_eq(ad_node_shape(t, S).ndim, 2);
    cr_assert_eq(ad_node_shape(t, S).rows, 6);
    cr_assert_eq(ad_node_shape(t, S).cols, 3);
    for (int i = 0; i < 18; i++)
        cr_expect_eq(ad_value(t, S)[i], vals[i / 3][i % 3]);
    /* gradient: part k gets its weights */
    double w[18];
    for (int i = 0; i < 18; i++)
        w[i] = i + 1;
    ad_node L = ad_add(t, ad_dot(t, c, ad_constant(t, VEC(18), w)),
                       ad_dot(t, S, ad_constant(t, MAT(6, 3), w)));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 3; j++)
            cr_expect_eq(ad_grad(t, p[k])[j], 2 * w[3 * k + j], "part %d[%d]", k, j);
    /* matrices side by side, and scalars stacked */
    ad_node m[6], sc[6];
    double mv[6][4];
    for (int k = 0; k < 6; k++) {
        for (int j = 0; j < 4; j++)
            mv[k][j] = 10 * k + j;
        m[k] = ad_variable(t, MAT(2, (uint32_t)(k % 2 + 1)), mv[k]);
        sc[k] = ad_scalar_var(t, vals[k][0]);
    }
    ad_node H = ad_concat(t, 1, 6, m);
    cr_assert_eq(ad_node_shape(t, H).rows, 2);
    cr_assert_eq(ad_node_shape(t, H).cols, 9);
    const double row0[9] = {0, 10, 11, 20, 30, 31, 40, 50, 51};
    expect_near(ad_value(t, H), row0, 9, 0, "side by side, row 0");
    ad_node sv = ad_stack(t, 6, sc);
    cr_assert_eq(ad_node_shape(t, sv).ndim, 1);
    cr_assert_eq(ad_node_shape(t, sv).rows, 6);
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_mul(t, sv, sv))), AD_OK);
    for (int k = 0; k < 6; k++)
        cr_expect_eq(ad_grad(t, sc[k])[0], 2 * vals[k][0]);
    /* mixed: rows and a matrix, one part as it is */
    ad_node mix[3] = {ad_variable(t, VEC(3), vals[0]), ad_variable(t, MAT(2, 3), Z),
                      ad_variable(t, VEC(3), vals[1])};
    ad_node M = ad_concat(t, 0, 3, mix);
    cr_assert_eq(ad_node_shape(t, M).rows, 4);
    cr_assert_eq(ad_node_shape(t, M).cols, 3);
    cr_assert_eq(ad_concat(t, 0, 1, p).id_, p[0].id_, "one part is the part itself");
    cr_assert_eq(ad_node_shape(t, ad_stack(t, 1, p)).rows, 1);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    /* the gradient as a tape: reverse over reverse through the slices */
    ad_node G[6];
    cr_assert_eq(ad_gradient_nodes(t, L, ad_nil(), 6, p, G), AD_OK, "%s", ad_tape_errmsg(t));
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 3; j++)
            cr_expect_eq(ad_value(t, G[k])[j], 2 * w[3 * k + j]);
    ad_tape_free(t);
}

/* ---- reductions along an axis ---- */

Test(shape_ops, max_and_min_ties_go_to_the_first)
{
    /* PyTorch: torch.max(x, 1) of [[1,3,3,2],[5,5,0,5]] gives (3, 5) at
     * (1, 0) and torch.min(x, 0) gives (1, 3, 0, 2) at (0, 0, 1, 0); the
     * gradient of the sum goes to exactly those elements. */
    ad_tape *t = tape();
    const double X[8] = {1, 3, 3, 2, 5, 5, 0, 5};
    ad_node x = ad_variable(t, MAT(2, 4), X);
    ad_node mx = ad_max_axis(t, x, 1), mn = ad_min_axis(t, x, 0);
    const double want_mx[2] = {3, 5}, want_mn[4] = {1, 3, 0, 2};
    expect_near(ad_value(t, mx), want_mx, 2, 0, "max");
    expect_near(ad_value(t, mn), want_mn, 4, 0, "min");
    cr_assert_eq(ad_backward(t, ad_sum(t, mx)), AD_OK);
    const double g_mx[8] = {0, 1, 0, 0, 1, 0, 0, 0};
    expect_near(ad_grad(t, x), g_mx, 8, 0, "d max");
    cr_assert_eq(ad_backward(t, ad_sum(t, mn)), AD_OK);
    const double g_mn[8] = {1, 1, 0, 1, 0, 0, 1, 0};
    expect_near(ad_grad(t, x), g_mn, 8, 0, "d min");
    ad_node mask = ad_max_mask(t, x, 1);
    expect_near(ad_value(t, mask), g_mx, 8, 0, "max_mask");
    /* the same through the gradient recorded as ops */
    ad_node G;
    cr_assert_eq(ad_gradient_nodes(t, ad_sum(t, mn), ad_nil(), 1, &x, &G), AD_OK);
    expect_near(ad_value(t, G), g_mn, 8, 0, "d min as nodes");
    /* NaN is the extreme: it propagates and takes the adjoint */
    const double Y[4] = {1, NAN, 3, NAN};
    ad_node y = ad_variable(t, VEC(4), Y);
    ad_node ym = ad_max_axis(t, y, 0), yn = ad_min_axis(t, y, 0);
    cr_assert(isnan(ad_scalar_value(t, ym)) && isnan(ad_scalar_value(t, yn)));
    cr_assert_eq(ad_backward(t, ym), AD_OK);
    const double g_nan[4] = {0, 1, 0, 0};
    expect_near(ad_grad(t, y), g_nan, 4, 0, "d max with NaN");
    ad_tape_free(t);
}

Test(shape_ops, sums_and_means_along_axes)
{
    ad_tape *t = tape();
    const double X[6] = {1, 2, 3, 4, 5, 6};
    ad_node x = ad_variable(t, MAT(2, 3), X);
    ad_node s0 = ad_sum_axis(t, x, 0), s1 = ad_sum_axis(t, x, 1), m1 = ad_mean_axis(t, x, 1);
    const double w0[3] = {5, 7, 9}, w1[2] = {6, 15}, wm[2] = {2, 5};
    expect_near(ad_value(t, s0), w0, 3, 0, "sum axis 0");
    expect_near(ad_value(t, s1), w1, 2, 0, "sum axis 1");
    expect_near(ad_value(t, m1), wm, 2, 1e-15, "mean axis 1");
    /* an axis-1 result reshaped to a column broadcasts over the rows */
    ad_node c = ad_sub(t, x, ad_reshape(t, m1, MAT(2, 1)));
    const double centred[6] = {-1, 0, 1, -1, 0, 1};
    expect_near(ad_value(t, c), centred, 6, 1e-15, "x - row means");
    ad_node v = ad_variable(t, VEC(3), X);
    cr_assert_eq(ad_node_shape(t, ad_sum_axis(t, v, 0)).ndim, 0);
    cr_assert_eq(ad_scalar_value(t, ad_mean_axis(t, v, 0)), 2.0);
    ad_tape_free(t);
}

/* ---- softmax, log_softmax: PyTorch's values, and stability ---- */

Test(shape_ops, softmax_and_log_softmax_match_pytorch)
{
    /* torch.softmax(x, 1), torch.log_softmax(x, 1) in float64, and the
     * gradients of sum(y * w) */
    const double X[6] = {0.5, -1.0, 2.0, 3.0, 0.25, -2.0}, W[6] = {0.3, -0.7, 1.1, 0.2, 0.9, -0.4};
    const double sm[6] = {0.1752903921400367, 0.039112573270687456, 0.7855970345892759,
                          0.9339982582200754, 0.0597085110187996, 0.006293230761125011};
    const double gsm[6] = {-0.10331003149953862, -0.06216415714411884, 0.16547418864365732,
                           -0.03551063176305047, 0.039525838974448925, -0.004015207211398482};
    const double lsm[6] = {-1.7413112966571571, -3.241311296657157, -0.24131129665715703,
                           -0.06828070561576617, -2.8182807056157664, -5.068280705615766};
    const double glsm[6] = {0.17729672550197428, -0.7273788012894812, 0.5500820757875068,
                            -0.45379878075405283, 0.8582040422868403, -0.40440526153278755};
    ad_tape *t = tape();
    ad_node x = ad_variable(t, MAT(2, 3), X), w = ad_constant(t, MAT(2, 3), W);
    ad_node y = ad_softmax(t, x), l = ad_log_softmax(t, x);
    expect_near(ad_value(t, y), sm, 6, 1e-15, "softmax");
    expect_near(ad_value(t, l), lsm, 6, 1e-15, "log_softmax");
    cr_assert_eq(ad_backward(t, ad_dot(t, y, w)), AD_OK);
    expect_near(ad_grad(t, x), gsm, 6, 1e-14, "d softmax");
    cr_assert_eq(ad_backward(t, ad_dot(t, l, w)), AD_OK);
    expect_near(ad_grad(t, x), glsm, 6, 1e-14, "d log_softmax");
    ad_tape_free(t);
}

Test(shape_ops, softmax_is_stable_for_large_logits)
{
    ad_tape *t = tape();
    const double z[4] = {1000.0, 1001.0, 999.5, -1000.0};
    ad_node x = ad_variable(t, VEC(4), z);
    ad_node y = ad_softmax(t, x), l = ad_log_softmax(t, x);
    double e[4], s = 0;
    for (int j = 0; j < 4; j++)
        s += (e[j] = exp(z[j] - 1001.0));
    for (int j = 0; j < 4; j++) {
        cr_expect(fabs(ad_value(t, y)[j] - e[j] / s) <= 1e-15, "softmax[%d]", j);
        cr_expect(fabs(ad_value(t, l)[j] - (z[j] - 1001.0 - log(s))) <= 1e-12,
                  "log_softmax[%d] = %.17g", j, ad_value(t, l)[j]);
    }
    cr_assert_eq(ad_backward(t, ad_at(t, l, 1)), AD_OK);
    for (int j = 0; j < 4; j++)
        cr_expect(isfinite(ad_grad(t, x)[j]));
    ad_tape_free(t);
}

/* ---- norm ---- */

Test(shape_ops, norm_values_edges_and_gradient_at_zero)
{
    ad_tape *t = tape();
    const double v3[3] = {3, -4, 12};
    ad_node x = ad_variable(t, VEC(3), v3);
    ad_node n = ad_norm(t, x);
    cr_assert_eq(ad_scalar_value(t, n), 13.0);
    cr_assert_eq(ad_backward(t, n), AD_OK);
    const double g[3] = {3.0 / 13, -4.0 / 13, 12.0 / 13}; /* PyTorch's as well */
    expect_near(ad_grad(t, x), g, 3, 1e-16, "d norm");
    /* no overflow or underflow (PyTorch 1.13's vector_norm gives inf and 0) */
    const double big[2] = {1e200, 1e200}, tiny[2] = {3e-200, 4e-200};
    ad_node nb = ad_norm(t, ad_constant(t, VEC(2), big));
    ad_node nt = ad_norm(t, ad_constant(t, VEC(2), tiny));
    cr_expect(fabs(ad_scalar_value(t, nb) / (sqrt(2.0) * 1e200) - 1) <= 1e-15, "%.17g",
              ad_scalar_value(t, nb));
    cr_expect(fabs(ad_scalar_value(t, nt) / 5e-200 - 1) <= 1e-15, "%.17g", ad_scalar_value(t, nt));
    const double inf2[2] = {INFINITY, 1}, nan2[2] = {NAN, 1};
    cr_expect(isinf(ad_scalar_value(t, ad_norm(t, ad_constant(t, VEC(2), inf2)))));
    cr_expect(isnan(ad_scalar_value(t, ad_norm(t, ad_constant(t, VEC(2), nan2)))));
    ad_tape_free(t);

    /* at 0: gradient 0, tangent 0, Hessian 0 -- by every mode */
    t = tape();
    ad_node z = ad_variable(t, MAT(2, 2), Z);
    ad_node nz = ad_norm(t, z);
    cr_assert_eq(ad_scalar_value(t, nz), 0.0);
    cr_assert_eq(ad_backward(t, nz), AD_OK);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ad_grad(t, z)[i], 0.0);
    const double u[4] = {1, -2, 0.5, 3};
    const double *uv = u;
    double jv = 1, hv[4] = {1, 1, 1, 1};
    double *hvp = hv;
    cr_assert_eq(ad_jvp(t, nz, 1, &z, &uv, &jv), AD_OK, "%s", ad_tape_errmsg(t));
    cr_expect_eq(jv, 0.0);
    cr_assert_eq(ad_hvp(t, nz, 1, &z, &uv, &hvp, NULL), AD_OK, "%s", ad_tape_errmsg(t));
    for (int i = 0; i < 4; i++)
        cr_expect_eq(hv[i], 0.0);
    ad_node G, HG;
    cr_assert_eq(ad_gradient_nodes(t, nz, ad_nil(), 1, &z, &G), AD_OK);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ad_value(t, G)[i], 0.0, "gradient node at 0");
    ad_node gu = ad_dot(t, G, ad_constant(t, MAT(2, 2), u));
    cr_assert_eq(ad_gradient_nodes(t, gu, ad_nil(), 1, &z, &HG), AD_OK);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ad_value(t, HG)[i], 0.0, "Hessian by reverse over reverse at 0");
    ad_tape_free(t);
}

/* ---- the broadcast forms of the binary ops ---- */

Test(shape_ops, broadcast_forms_on_either_side)
{
    ad_tape *t = tape();
    const double M6[6] = {1, 2, 3, 4, 5, 6}, r3[3] = {10, 20, 30}, c2[2] = {100, 200};
    ad_node m = ad_variable(t, MAT(2, 3), M6), r = ad_variable(t, VEC(3), r3);
    ad_node c = ad_variable(t, MAT(2, 1), c2);
    ad_node a = ad_sub(t, r, m);  /* row - matrix */
    ad_node b = ad_div(t, c, m);  /* column / matrix */
    ad_node o = ad_mul(t, r, c);  /* row * column: 2x3 */
    const double wa[6] = {9, 18, 27, 6, 15, 24};
    const double wb[6] = {100, 50, 100.0 / 3, 50, 40, 200.0 / 6};
    const double wo[6] = {1000, 2000, 3000, 2000, 4000, 6000};
    expect_near(ad_value(t, a), wa, 6, 0, "r - m");
    expect_near(ad_value(t, b), wb, 6, 1e-15, "c / m");
    cr_assert_eq(ad_node_shape(t, o).rows, 2);
    cr_assert_eq(ad_node_shape(t, o).cols, 3);
    expect_near(ad_value(t, o), wo, 6, 0, "r * c");
    cr_assert_eq(ad_backward(t, ad_sum(t, o)), AD_OK);
    const double gr[3] = {300, 300, 300}, gc[2] = {60, 60};
    expect_near(ad_grad(t, r), gr, 3, 0, "d/dr: summed over rows");
    expect_near(ad_grad(t, c), gc, 2, 0, "d/dc: summed over columns");
    cr_assert_eq(ad_backward(t, ad_sum(t, b)), AD_OK);
    double g = 0;
    for (int i = 0; i < 3; i++)
        g += 1.0 / M6[i];
    cr_expect(fabs(ad_grad(t, c)[0] - g) <= 1e-15);
    ad_tape_free(t);
}

/* ---- a workspace replays the index operands it copied ---- */

Test(shape_ops, workspace_evaluates_structure_ops)
{
    ad_tape *t = tape();
    const double X[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const uint32_t idx[3] = {2, 0, 2};
    ad_node x = ad_variable(t, MAT(3, 4), X);
    ad_node y = ad_take(t, ad_slice_block(t, x, 0, 3, 1, 2), 3, idx);
    ad_node L = ad_sum(t, ad_mul(t, ad_softmax(t, y), ad_max_mask(t, y, 1)));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    double gt[12];
    memcpy(gt, ad_grad(t, x), sizeof gt);
    int st;
    ad_workspace *ws = ad_workspace_new(t, NULL, &st);
    cr_assert_not_null(ws);
    ad_tape_reset(t); /* the workspace refers to nothing of the tape */
    cr_assert_eq(ad_workspace_replay(ws), AD_OK);
    cr_assert_eq(ad_workspace_sweep(ws, L, NULL, 0), AD_OK, "%s", ad_workspace_errmsg(ws));
    for (int i = 0; i < 12; i++)
        cr_expect_eq(ad_workspace_grad(ws, x)[i], gt[i]);
    ad_workspace_free(ws);
    ad_tape_free(t);
}

/* ---- allocation failure: all or nothing ---- */

Test(shape_ops, failed_allocations_record_nothing)
{
    for (long k = 1; k < 40; k++) {
        test_alloc a = {0};
        ad_tape_opts o = test_alloc_opts(&a);
        ad_tape *t = ad_tape_new(&o);
        if (!t)
            continue;
        ad_node p[3] = {ad_variable(t, VEC(3), Z), ad_variable(t, VEC(3), Z),
                        ad_variable(t, VEC(3), Z)};
        if (ad_tape_status(t) != AD_OK) {
            ad_tape_free(t);
            continue;
        }
        const size_t len = ad_tape_len(t);
        a.fail_at = a.count + k;
        const uint32_t idx[2] = {0, 2};
        ad_node s = ad_stack(t, 3, p);
        const size_t len2 = ad_tape_len(t);
        ad_node y = ad_take(t, s, 2, idx);
        if (ad_node_is_nil(s))
            cr_expect_eq(ad_tape_len(t), len, "fail at %ld: stack left nodes", k);
        else if (ad_node_is_nil(y))
            cr_expect_eq(ad_tape_len(t), len2, "fail at %ld: take left its index node", k);
        ad_tape_free(t);
        cr_assert_eq(a.bytes, 0, "fail at %ld: leaked", k);
    }
}
