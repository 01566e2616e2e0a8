/* test_solve.c -- solve, solve_spd, logdet and matrix_trace beyond the
 * finite-difference table (tests/test_ops_fd.c, which checks every mode's
 * rule on well-conditioned random matrices):
 *   - every error message, exactly: shapes, a singular matrix at recording
 *     (sticky, the node dropped) and at replay (returned, not sticky; the
 *     value NaN), a matrix that is not positive definite, the forward
 *     sweep and the drivers, a workspace's replay;
 *   - values and gradients against PyTorch 1.13 float64 (torch.linalg.solve,
 *     cholesky + cholesky_solve, slogdet) at fixed points;
 *   - a workspace gives the tape's results bit for bit and keeps its own
 *     factorization;
 *   - allocation failure while recording and while making a workspace. */
#include <criterion/criterion.h>

#include <autodiff/autodiff.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "support.h"

/* Records op on A (r x c) and B and expects the shape error msg. */
static void shape_error(const char *op, ad_shape sa, ad_shape sb, const char *msg)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    ad_node A = ad_variable(t, sa, NULL), B = ad_variable(t, sb, NULL);
    const size_t len = ad_tape_len(t);
    ad_node y;
    if (!strcmp(op, "solve"))
        y = ad_solve(t, A, B);
    else if (!strcmp(op, "solve_spd"))
        y = ad_solve_spd(t, A, B);
    else if (!strcmp(op, "logdet"))
        y = ad_logdet(t, A);
    else
        y = ad_matrix_trace(t, A);
    cr_assert(ad_node_is_nil(y), "%s: recorded despite bad shapes", op);
    cr_assert_eq(ad_tape_status(t), AD_ESHAPE);
    cr_assert_str_eq(ad_tape_errmsg(t), msg);
    cr_assert_eq(ad_tape_len(t), len);
    ad_tape_free(t);
}

Test(solve, shape_errors_name_the_op_and_the_shapes)
{
    shape_error("solve", ad_shape_mat(2, 3), ad_shape_vec(2), "solve: A is 2x3, not square");
    shape_error("solve", ad_shape_vec(3), ad_shape_vec(3),
                "solve: A is a vector of length 3, not a square matrix");
    shape_error("solve", ad_shape_scalar(), ad_shape_scalar(),
                "solve: A is a scalar, not a square matrix");
    shape_error("solve", ad_shape_mat(3, 3), ad_shape_vec(4),
                "solve: A is 3x3 but B is a vector of length 4 (B must be a vector of length 3 "
                "or a matrix with 3 rows)");
    shape_error("solve", ad_shape_mat(3, 3), ad_shape_mat(2, 3),
                "solve: A is 3x3 but B is 2x3 (B must be a vector of length 3 or a matrix with "
                "3 rows)");
    shape_error("solve", ad_shape_mat(1, 1), ad_shape_scalar(),
                "solve: A is 1x1 but B is a scalar (B must be a vector of length 1 or a matrix "
                "with 1 row)");
    shape_error("solve_spd", ad_shape_mat(4, 2), ad_shape_vec(4),
                "solve_spd: A is 4x2, not square");
    shape_error("solve_spd", ad_shape_mat(2, 2), ad_shape_mat(3, 1),
                "solve_spd: A is 2x2 but B is 3x1 (B must be a vector of length 2 or a matrix "
                "with 2 rows)");
    shape_error("logdet", ad_shape_mat(2, 3), ad_shape_vec(1), "logdet: A is 2x3, not square");
    shape_error("logdet", ad_shape_vec(4), ad_shape_vec(1),
                "logdet: A is a vector of length 4, not a square matrix");
    shape_error("trace", ad_shape_mat(3, 2), ad_shape_vec(1), "trace: A is 3x2, not square");
    shape_error("trace", ad_shape_scalar(), ad_shape_vec(1),
                "trace: A is a scalar, not a square matrix");
}

/* Records solve (spd: solve_spd; logdet when B is NULL) on n x n A and
 * expects AD_ESINGULAR with msg, the node dropped, the error sticky. */
static void singular_at_recording(const char *op, int n, const double *A, const char *msg)
{
    ad_tape *t = ad_tape_new(NULL);
    cr_assert_not_null(t);
    const double b[4] = {1, 2, 3, 4};
    ad_node An = ad_variable(t, ad_shape_mat((uint32_t)n, (uint32_t)n), A);
    ad_node bn = ad_variable(t, ad_shape_vec((uint32_t)n), b);
    const size_t len = ad_tape_len(t);
    ad_node y = !strcmp(op, "solve")       ? ad_solve(t, An, bn)
                : !strcmp(op, "solve_spd") ? ad_solve_spd(t, An, bn)
                                           : ad_logdet(t, An);
    cr_assert(ad_node_is_nil(y), "%s: a singular matrix gave a node", op);
    cr_assert_eq(ad_tape_status(t), AD_ESINGULAR, "%s: status %d", op, ad_tape_status(t));
    cr_assert_str_eq(ad_tape_errmsg(t), msg);
    cr_assert_eq(ad_tape_len(t), len, "%s: the failed node stayed on the tape", op);
    /* sticky: nothing records afterwards, the message stays */
    cr_assert(ad_node_is_nil(ad_sum(t, bn)));
    cr_assert_eq(ad_replay(t), AD_ESINGULAR);
    cr_assert_str_eq(ad_tape_errmsg(t), msg);
    ad_tape_reset(t);
    cr_assert_eq(ad_tape_status(t), AD_OK);
    ad_tape_free(t);
}

Test(solve, singular_matrix_at_recording_names_the_pivot)
{
    /* rank 2 of 4: the third pivot is exactly 0 */
    const double d[16] = {1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3};
    singular_at_recording("solve", 4, d, "solve: A is singular (pivot 3 of 4 is 0)");
    singular_at_recording("logdet", 4, d, "logdet: A is singular (pivot 3 of 4 is 0)");
    /* rows 1 and 2 dependent, after a row exchange */
    const double r[4] = {1, 2, 2, 4};
    singular_at_recording("solve", 2, r, "solve: A is singular (pivot 2 of 2 is 0)");
    const double z[4] = {0, 0, 0, 0};
    singular_at_recording("solve", 2, z, "solve: A is singular (pivot 1 of 2 is 0)");
    /* a pivot of 2^-52 next to entries of 1: rounding noise, not a pivot */
    const double e[4] = {1, 1, 1, 1 + DBL_EPSILON};
    singular_at_recording("solve", 2, e,
                          "solve: A is singular to working precision (pivot 2 of 2 is 2.22e-16, "
                          "at most 2 eps max|A_ij| = 4.44e-16)");
    singular_at_recording("logdet", 2, e,
                          "logdet: A is singular to working precision (pivot 2 of 2 is "
                          "2.22e-16, at most 2 eps max|A_ij| = 4.44e-16)");
    /* ... while a well-scaled pivot of the same size is fine */
    const double s[4] = {1e-16, 0, 0, 1e-16};
    ad_tape *t = ad_tape_new(NULL);
    ad_node y = ad_solve(t, ad_constant(t, ad_shape_mat(2, 2), s),
                         ad_constant(t, ad_shape_vec(2), s));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_value(t, y)[0], 1.0);
    ad_tape_free(t);
}

Test(solve, not_positive_definite_names_the_pivot)
{
    const double indef[4] = {1, 2, 2, 1}; /* eigenvalues 3 and -1 */
    singular_at_recording("solve_spd", 2, indef,
                          "solve_spd: A is not positive definite (pivot 2 of 2 is -3)");
    const double zero[9] = {0, 0, 0, 0, 1, 0, 0, 0, 1};
    singular_at_recording("solve_spd", 3, zero,
                          "solve_spd: A is not positive definite (pivot 1 of 3 is 0)");
    const double negd[9] = {4, 0, 0, 0, 1, 0, 0, 0, -2};
    singular_at_recording("solve_spd", 3, negd,
                          "solve_spd: A is not positive definite (pivot 3 of 3 is -2)");
    const double semi[4] = {1, 1, 1, 1 + DBL_EPSILON};
    singular_at_recording("solve_spd", 2, semi,
                          "solve_spd: A is not positive definite to working precision (pivot 2 "
                          "of 2 is 2.22e-16, at most 2 eps max|A_ij| = 4.44e-16)");
    /* the symmetric part decides: this A is not symmetric, (A + A^T) / 2
     * is the indefinite one above */
    const double skew[4] = {1, 0, 4, 1};
    singular_at_recording("solve_spd", 2, skew,
                          "solve_spd: A is not positive definite (pivot 2 of 2 is -3)");
}

Test(solve, status_text)
{
    cr_assert_str_eq(ad_strstatus(AD_ESINGULAR), "singular or not positive definite matrix");
}

/* A non-finite entry is not a singular matrix: NaN values, no error. */
Test(solve, nan_entries_propagate_without_an_error)
{
    ad_tape *t = ad_tape_new(NULL);
    const double A[4] = {1, NAN, 0, 1}, b[2] = {1, 1};
    ad_node An = ad_variable(t, ad_shape_mat(2, 2), A);
    ad_node x = ad_solve(t, An, ad_constant(t, ad_shape_vec(2), b));
    ad_node l = ad_logdet(t, An);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert(isnan(ad_value(t, x)[0]) && isnan(ad_value(t, x)[1]));
    cr_assert(isnan(ad_scalar_value(t, l)));
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_backward(t, l), AD_OK);
    for (int i = 0; i < 4; i++)
        cr_assert(isnan(ad_grad(t, An)[i]));
    ad_tape_free(t);
}

/* A solve recorded at a regular A, replayed at a singular one. */
Test(solve, singular_at_replay_is_reported_not_sticky)
{
    ad_tape *t = ad_tape_new(NULL);
    const double A0[4] = {2, 1, 1, 3}, A1[4] = {1, 2, 2, 4}, b0[2] = {1, -1};
    ad_node A = ad_variable(t, ad_shape_mat(2, 2), A0);
    ad_node b = ad_variable(t, ad_shape_vec(2), b0);
    ad_node x = ad_solve(t, A, b);
    ad_node L = ad_sum(t, ad_square(t, x));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_node_index(t, x), 3);
    double x0[2];
    memcpy(x0, ad_value(t, x), sizeof x0);

    cr_assert_eq(ad_set_value(t, A, A1), AD_OK);
    cr_assert_eq(ad_replay(t), AD_ESINGULAR);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "solve: A is singular (pivot 2 of 2 is 0) at node 3; its value is NaN");
    cr_assert_eq(ad_tape_status(t), AD_OK, "a replay's failure must not be sticky");
    cr_assert(isnan(ad_value(t, x)[0]) && isnan(ad_value(t, x)[1]));
    cr_assert(isnan(ad_scalar_value(t, L)));
    /* the sweep runs and gives NaN, never a crash */
    cr_assert_eq(ad_backward(t, L), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");
    for (int i = 0; i < 4; i++)
        cr_assert(isnan(ad_grad(t, A)[i]));
    for (int i = 0; i < 2; i++)
        cr_assert(isnan(ad_grad(t, b)[i]));
    /* the forward sweep and the drivers report it the same way */
    cr_assert_eq(ad_tangents(t, 1), AD_OK);
    cr_assert_eq(ad_forward(t), AD_ESINGULAR);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "solve: A is singular (pivot 2 of 2 is 0) at node 3; its value is NaN");
    const double va[4] = {1, 0, 0, 0}, vb[2] = {0, 0};
    const double *v[2] = {va, vb};
    const ad_node in[2] = {A, b};
    double jv[2], hva[4], hvb[2], J[12], H[36];
    double *hv[2] = {hva, hvb};
    cr_assert_eq(ad_jvp(t, x, 2, in, v, jv), AD_ESINGULAR);
    cr_assert(isnan(jv[0]));
    cr_assert_eq(ad_hvp(t, L, 2, in, v, hv, NULL), AD_ESINGULAR);
    cr_assert_eq(ad_jacobian(t, x, 2, in, J, AD_JAC_FORWARD), AD_ESINGULAR);
    cr_assert_eq(ad_jacobian(t, x, 2, in, J, AD_JAC_REVERSE), AD_ESINGULAR);
    cr_assert_eq(ad_hessian(t, L, 2, in, H), AD_ESINGULAR);
    cr_assert_str_eq(ad_tape_errmsg(t),
                     "solve: A is singular (pivot 2 of 2 is 0) at node 3; its value is NaN");
    cr_assert_eq(ad_tape_status(t), AD_OK);

    /* back to a regular A: everything as at recording */
    cr_assert_eq(ad_set_value(t, A, A0), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_str_eq(ad_tape_errmsg(t), "");
    cr_assert(memcmp(ad_value(t, x), x0, sizeof x0) == 0);
    cr_assert_eq(ad_backward(t, L), AD_OK);
    cr_assert(isfinite(ad_grad(t, A)[0]));
    cr_assert_eq(ad_forward(t), AD_OK);
    ad_tape_free(t);
}

Test(solve, not_positive_definite_at_replay)
{
    ad_tape *t = ad_tape_new(NULL);
    const double A0[9] = {4, 1, 0, 1, 3, 0, 0, 0, 2}, A1[9] = {4, 1, 0, 1, 3, 0, 0, 0, -1};
    const double b0[3] = {1, 2, 3};
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), A0);
    ad_node b = ad_constant(t, ad_shape_vec(3), b0);
    ad_node x = ad_solve_spd(t, A, b); /* node 3 */
    ad_node y = ad_add(t, ad_sum(t, x), ad_logdet(t, A));
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_set_value(t, A, A1), AD_OK);
    /* the first failure is reported (the logdet of A1 is fine: det -11) */
    cr_assert_eq(ad_replay(t), AD_ESINGULAR);
    cr_assert_str_eq(ad_tape_errmsg(t), "solve_spd: A is not positive definite (pivot 3 of 3 "
                                        "is -1) at node 3; its value is NaN");
    cr_assert(isnan(ad_scalar_value(t, y)));
    ad_tape_free(t);
}

/* ---- PyTorch 1.13, float64 ---- */

static void close_all(const double *got, const double *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_leq(test_err(got[i], want[i]), 1e-13, "%s[%zu]: %.17g, PyTorch %.17g", what, i,
                      got[i], want[i]);
}

Test(solve, agrees_with_pytorch)
{
    /* X = torch.linalg.solve(A, B), L = sum(X * W), L.backward() */
    const double A0[9] = {4.0, 1.0, -2.0, 0.5, -3.0, 1.0, 2.0, 1.5, 5.0};
    const double B0[6] = {1.0, -2.0, 0.25, 3.0, -1.5, 0.5};
    const double W0[6] = {0.3, -0.7, 1.1, 0.2, -0.4, 0.9};
    const double X_pt[6] = {0.13749999999999998, -0.08124999999999999, -0.1625,
                            -0.8812500000000001, -0.30625,           0.396875};
    const double gA_pt[9] = {-0.031892578124999994, -0.176392578125,     0.11833105468749999,
                             0.03709375,            -0.12690625000000003, -0.06426562500000003,
                             0.005449218749999999,  0.10044921875000003, -0.035751953125};
    const double gB_pt[6] = {0.10250000000000001, -0.2190625,           -0.32000000000000006,
                             -0.085,              0.025000000000000005, 0.10937500000000001};
    ad_tape *t = ad_tape_new(NULL);
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), A0);
    ad_node B = ad_variable(t, ad_shape_mat(3, 2), B0);
    ad_node X = ad_solve(t, A, B);
    ad_node L = ad_dot(t, X, ad_constant(t, ad_shape_mat(3, 2), W0));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    close_all(ad_value(t, X), X_pt, 6, "solve X");
    close_all(ad_grad(t, A), gA_pt, 9, "solve dA");
    close_all(ad_grad(t, B), gB_pt, 6, "solve dB");

    /* sign, logabsdet = torch.linalg.slogdet(A); logabsdet.backward():
     * det A < 0 (sign -1), where torch.logdet gives NaN */
    ad_node ld = ad_logdet(t, A);
    cr_assert_eq(ad_backward(t, ld), AD_OK, "%s", ad_tape_errmsg(t));
    const double gld_pt[9] = {0.20625, 0.006249999999999999, -0.084375, 0.1, -0.3, 0.05,
                              0.0625,  0.0625,               0.15625};
    cr_assert_leq(test_err(ad_scalar_value(t, ld), 4.382026634673882), 1e-13, "logdet %.17g",
                  ad_scalar_value(t, ld));
    close_all(ad_grad(t, A), gld_pt, 9, "logdet dA");
    ad_tape_free(t);

    /* x = torch.cholesky_solve(b, torch.linalg.cholesky(S)); PyTorch's
     * gradient through cholesky is the symmetric one, as ours */
    const double S0[9] = {4.0, 1.0, -0.5, 1.0, 3.0, 0.25, -0.5, 0.25, 2.0};
    const double b0[3] = {1.0, -1.0, 2.0}, w0[3] = {0.5, 1.5, -1.0};
    const double x_pt[3] = {0.5572289156626506, -0.6204819277108435, 1.2168674698795183};
    const double gS_pt[9] = {0.05286961097401656,  -0.1914011467556975, 0.22388953403977363,
                             -0.19140114675569753, 0.360701843518653,   -0.5387211496588766,
                             0.22388953403977363,  -0.5387211496588766, 0.72572216577152};
    const double gb_pt[3] = {-0.09487951807228917, 0.5813253012048193, -0.5963855421686748};
    t = ad_tape_new(NULL);
    ad_node S = ad_variable(t, ad_shape_mat(3, 3), S0);
    ad_node b = ad_variable(t, ad_shape_vec(3), b0);
    ad_node x = ad_solve_spd(t, S, b);
    L = ad_dot(t, x, ad_constant(t, ad_shape_vec(3), w0));
    cr_assert_eq(ad_backward(t, L), AD_OK, "%s", ad_tape_errmsg(t));
    close_all(ad_value(t, x), x_pt, 3, "solve_spd x");
    close_all(ad_grad(t, S), gS_pt, 9, "solve_spd dS");
    close_all(ad_grad(t, b), gb_pt, 3, "solve_spd db");
    ad_tape_free(t);
}

/* solve_spd is the solve of the symmetric part; on a symmetric matrix it
 * equals the LU solve; trace is the sum of the diagonal, gradient I. */
Test(solve, spd_is_the_symmetric_part_and_trace)
{
    const double A0[9] = {4, 2, -1, 0, 3, 0.5, 0, 0.5, 2}, b0[3] = {1, 2, -1};
    double S0[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            S0[i * 3 + j] = 0.5 * (A0[i * 3 + j] + A0[j * 3 + i]);
    ad_tape *t = ad_tape_new(NULL);
    ad_node b = ad_constant(t, ad_shape_vec(3), b0);
    ad_node x1 = ad_solve_spd(t, ad_constant(t, ad_shape_mat(3, 3), A0), b);
    ad_node x2 = ad_solve(t, ad_constant(t, ad_shape_mat(3, 3), S0), b);
    ad_node A = ad_variable(t, ad_shape_mat(3, 3), A0);
    ad_node tr = ad_matrix_trace(t, A);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    for (int i = 0; i < 3; i++)
        cr_assert_leq(fabs(ad_value(t, x1)[i] - ad_value(t, x2)[i]), 1e-14);
    cr_assert_eq(ad_scalar_value(t, tr), 9.0);
    cr_assert_eq(ad_backward(t, tr), AD_OK);
    for (int i = 0; i < 9; i++)
        cr_assert_eq(ad_grad(t, A)[i], i % 4 == 0 ? 1.0 : 0.0);
    ad_tape_free(t);
}

/* ---- workspaces ---- */

typedef struct sys {
    ad_node A, B, S, X, Y, J;
} sys;

static const double A_0[16] = {3, 1, 0, -1, 0.5, -4, 1, 0, 1, 0, 5, 2, 0, 1, -1, 3};
static const double S_0[9] = {4, 1, 0.5, 1, 3, -0.25, 0.5, -0.25, 2};
static const double B_0[8] = {1, -1, 0.5, 2, -2, 0, 1, 1};

/* J = sum(solve(A, B)^2) + logdet(A) + |solve_spd(S, c)|^2 + trace(S), c a
 * constant right-hand side made by ops */
static sys record_sys(ad_tape *t)
{
    sys s;
    s.A = ad_variable(t, ad_shape_mat(4, 4), A_0);
    s.B = ad_variable(t, ad_shape_mat(4, 2), B_0);
    s.S = ad_variable(t, ad_shape_mat(3, 3), S_0);
    s.X = ad_solve(t, s.A, s.B);
    s.Y = ad_solve_spd(t, s.S, ad_matvec(t, ad_transpose(t, ad_constant(t, ad_shape_mat(2, 3),
                                                                          B_0)),
                                          ad_constant(t, ad_shape_vec(2), B_0 + 4)));
    s.J = ad_add(t, ad_add(t, ad_sum(t, ad_square(t, s.X)), ad_logdet(t, s.A)),
                 ad_add(t, ad_dot(t, s.Y, s.Y), ad_matrix_trace(t, s.S)));
    return s;
}

static void same(const double *a, const double *b, size_t n, const char *what)
{
    cr_assert_not_null(a, "%s: NULL", what);
    cr_assert_not_null(b, "%s: NULL", what);
    cr_assert(memcmp(a, b, n * sizeof *a) == 0, "%s differs: %.17g vs %.17g", what, a[0], b[0]);
}

Test(solve, workspace_equals_the_tape_bit_for_bit)
{
    ad_tape *t = ad_tape_new(NULL);
    sys s = record_sys(t);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_errmsg(t));
    int st;
    ad_workspace *w1 = ad_workspace_new(t, NULL, &st), *w2 = ad_workspace_new(t, NULL, &st);
    cr_assert(w1 && w2);

    /* a sweep without a replay uses the factors the workspace copied */
    cr_assert_eq(ad_backward(t, s.J), AD_OK);
    cr_assert_eq(ad_workspace_sweep(w1, s.J, NULL, 0), AD_OK, "%s", ad_workspace_errmsg(w1));
    same(ad_workspace_grad(w1, s.A), ad_grad(t, s.A), 16, "dA before any replay");
    same(ad_workspace_grad(w1, s.S), ad_grad(t, s.S), 9, "dS before any replay");

    /* new inputs in w1 and on the tape, others in w2 */
    double A1[16], A2[16], S1[9];
    for (int i = 0; i < 16; i++) {
        A1[i] = A_0[i] + 0.1 * sin(i + 1.0);
        A2[i] = A_0[i] - 0.2 * cos(i + 1.0);
    }
    for (int i = 0; i < 9; i++)
        S1[i] = S_0[i] + (i % 4 == 0 ? 0.5 : 0.0);
    cr_assert_eq(ad_workspace_set_value(w1, s.A, A1), AD_OK);
    cr_assert_eq(ad_workspace_set_value(w1, s.S, S1), AD_OK);
    cr_assert_eq(ad_workspace_set_value(w2, s.A, A2), AD_OK);
    cr_assert_eq(ad_workspace_replay(w1), AD_OK);
    cr_assert_eq(ad_workspace_replay(w2), AD_OK);
    cr_assert_eq(ad_set_value(t, s.A, A1), AD_OK);
    cr_assert_eq(ad_set_value(t, s.S, S1), AD_OK);
    cr_assert_eq(ad_replay(t), AD_OK);
    /* w2 sweeps after the tape and w1 replayed: its own factors */
    cr_assert_eq(ad_workspace_sweep(w2, s.J, NULL, 0), AD_OK);
    cr_assert_eq(ad_workspace_sweep(w1, s.J, NULL, 0), AD_OK);
    cr_assert_eq(ad_backward(t, s.J), AD_OK);
    same(ad_workspace_value(w1, s.X), ad_value(t, s.X), 8, "X");
    same(ad_workspace_value(w1, s.J), ad_value(t, s.J), 1, "J");
    same(ad_workspace_grad(w1, s.A), ad_grad(t, s.A), 16, "dA");
    same(ad_workspace_grad(w1, s.B), ad_grad(t, s.B), 8, "dB");
    same(ad_workspace_grad(w1, s.S), ad_grad(t, s.S), 9, "dS");

    /* w2 against a tape recorded at its inputs */
    ad_tape *t2 = ad_tape_new(NULL);
    sys s2 = record_sys(t2);
    cr_assert_eq(ad_set_value(t2, s2.A, A2), AD_OK);
    cr_assert_eq(ad_replay(t2), AD_OK);
    cr_assert_eq(ad_backward(t2, s2.J), AD_OK);
    same(ad_workspace_value(w2, s.J), ad_value(t2, s2.J), 1, "w2 J");
    same(ad_workspace_grad(w2, s.A), ad_grad(t2, s2.A), 16, "w2 dA");
    same(ad_workspace_grad(w2, s.S), ad_grad(t2, s2.S), 9, "w2 dS");

    /* a singular A in w1 only: reported there, w2 and the tape unaffected */
    double sing[16] = {0};
    cr_assert_eq(ad_workspace_set_value(w1, s.A, sing), AD_OK);
    cr_assert_eq(ad_workspace_replay(w1), AD_ESINGULAR);
    cr_assert_str_eq(ad_workspace_errmsg(w1),
                     "solve: A is singular (pivot 1 of 4 is 0) at node 4; its value is NaN");
    cr_assert(isnan(ad_workspace_value(w1, s.J)[0]));
    cr_assert_eq(ad_workspace_replay(w2), AD_OK);
    cr_assert_str_eq(ad_workspace_errmsg(w2), "");
    cr_assert(isfinite(ad_workspace_value(w2, s.J)[0]));
    cr_assert_eq(ad_replay(t), AD_OK);
    cr_assert_eq(ad_workspace_set_value(w1, s.A, A1), AD_OK);
    cr_assert_eq(ad_workspace_replay(w1), AD_OK);
    cr_assert_str_eq(ad_workspace_errmsg(w1), "");
    same(ad_workspace_value(w1, s.J), ad_value(t, s.J), 1, "J after recovering");

    ad_workspace_free(w1);
    ad_workspace_free(w2);
    ad_tape_free(t2);
    ad_tape_free(t);
}

/* ---- allocation failure ---- */

Test(solve, allocation_failure_while_recording_and_copying)
{
    long k = 1;
    for (;; k++) {
        test_alloc al = {0};
        al.fail_at = k;
        ad_tape_opts o = test_alloc_opts(&al);
        ad_tape *t = ad_tape_new(&o);
        if (!t) {
            cr_assert_eq(al.bytes, 0);
            continue;
        }
        sys s = record_sys(t);
        int st = ad_tape_status(t);
        ad_workspace *w = NULL;
        if (st == AD_OK) {
            cr_assert_eq(ad_backward(t, s.J), AD_OK);
            w = ad_workspace_new(t, NULL, &st);
        } else {
            cr_assert_eq(st, AD_ENOMEM, "allocation %ld: %s", k, ad_tape_errmsg(t));
        }
        const int done = w != NULL;
        if (w) {
            cr_assert_eq(ad_workspace_sweep(w, s.J, NULL, 0), AD_OK);
            same(ad_workspace_grad(w, s.A), ad_grad(t, s.A), 16, "dA");
            ad_workspace_free(w);
        } else if (st != AD_ENOMEM) {
            cr_assert_fail("allocation %ld: status %d", k, st);
        }
        ad_tape_free(t);
        cr_assert_eq(al.bytes, 0, "allocation %ld: %zu bytes leaked", k, al.bytes);
        cr_assert_eq(al.bad_osize, 0);
        if (done)
            break;
    }
    cr_assert(k > 3, "only %ld allocations", k);
}
