/* robot_arm.c -- a planar arm of three links reaches a target by
 * Gauss-Newton steps, every derivative from the tape.
 *
 * Links of lengths l = (1, 0.8, 0.5) and joint angles q = (q0, q1, q2); the
 * angle of link i is the sum of the joint angles up to it,
 *   theta = (q0, q0 + q1, q0 + q1 + q2)   (ad_at, ad_add, ad_stack),
 * and the end effector sits at
 *   p = (l . cos(theta), l . sin(theta)).
 * The cost is the squared distance to the target t = (1.2, 0.9),
 *   f(q) = |p(q) - t|^2,
 * with gradient 2 J^T (p - t), J = dp/dq the 2x3 Jacobian:
 *   dp_x/dq_j = -sum_{i >= j} l_i sin(theta_i),
 *   dp_y/dq_j =  sum_{i >= j} l_i cos(theta_i).
 *
 * The tape records f once (q a vector of 3 variables); each step sets q
 * (ad_set_value), replays, takes the gradient (ad_backward) and J
 * (ad_jacobian), checks both against the closed forms above to 1e-12, and
 * moves by the damped Gauss-Newton step
 *   (J^T J + lambda I) dq = -J^T (p - t)
 * (three joints for two coordinates: J^T J is singular, the damping
 * lambda picks the smallest move). Exits non-zero unless the arm is within
 * 1e-8 of the target after at most 20 steps. */
#include <autodiff/autodiff.h>

#include <math.h>
#include <stdio.h>

#define NJ 3          /* joints */
#define MAX_STEPS 20
#define TOL 1e-8      /* distance to the target */
#define LAMBDA 1e-9   /* damping of J^T J */

static const double len[NJ] = {1.0, 0.8, 0.5};
static const double target[2] = {1.2, 0.9};

/* Solves the symmetric positive definite 3x3 system A x = b by Cholesky
 * (A is overwritten). Returns 0 when A is not positive definite. */
static int solve3(double A[NJ][NJ], const double *b, double *x)
{
    for (int j = 0; j < NJ; j++) {
        double d = A[j][j];
        for (int k = 0; k < j; k++)
            d -= A[j][k] * A[j][k];
        if (!(d > 0))
            return 0;
        A[j][j] = sqrt(d);
        for (int i = j + 1; i < NJ; i++) {
            double s = A[i][j];
            for (int k = 0; k < j; k++)
                s -= A[i][k] * A[j][k];
            A[i][j] = s / A[j][j];
        }
    }
    double y[NJ];
    for (int i = 0; i < NJ; i++) { /* L y = b */
        double s = b[i];
        for (int k = 0; k < i; k++)
            s -= A[i][k] * y[k];
        y[i] = s / A[i][i];
    }
    for (int i = NJ - 1; i >= 0; i--) { /* L^T x = y */
        double s = y[i];
        for (int k = i + 1; k < NJ; k++)
            s -= A[k][i] * x[k];
        x[i] = s / A[i][i];
    }
    return 1;
}

/* The closed-form Jacobian at q, row-major 2x3. */
static void jacobian_by_hand(const double *q, double *J)
{
    double th = 0, s[NJ], c[NJ];
    for (int i = 0; i < NJ; i++) {
        th += q[i];
        s[i] = sin(th);
        c[i] = cos(th);
    }
    for (int j = 0; j < NJ; j++) {
        double dx = 0, dy = 0;
        for (int i = j; i < NJ; i++) {
            dx -= len[i] * s[i];
            dy += len[i] * c[i];
        }
        J[j] = dx;
        J[NJ + j] = dy;
    }
}

static int fail(ad_tape *t, const char *what)
{
    fprintf(stderr, "robot_arm: %s%s%s\n", what, t ? ": " : "", t ? ad_tape_errmsg(t) : "");
    ad_tape_free(t);
    return 1;
}

int main(void)
{
    double q[NJ] = {0.3, 0.9, -0.4}; /* the starting pose */
    ad_tape *t = ad_tape_new(NULL);
    if (!t)
        return fail(NULL, "out of memory");

    /* ---- the recording ---- */
    ad_node qn = ad_variable(t, ad_shape_vec(NJ), q); /* the joint angles */
    ad_node th[NJ];                                    /* the link angles  */
    th[0] = ad_at(t, qn, 0);
    for (int i = 1; i < NJ; i++)
        th[i] = ad_add(t, th[i - 1], ad_at(t, qn, (uint32_t)i));
    ad_node theta = ad_stack(t, NJ, th);
    ad_node l = ad_constant(t, ad_shape_vec(NJ), len);
    ad_node xy[2] = {ad_dot(t, l, ad_cos(t, theta)), ad_dot(t, l, ad_sin(t, theta))};
    ad_node p = ad_stack(t, 2, xy); /* the end effector */
    ad_node r = ad_sub(t, p, ad_constant(t, ad_shape_vec(2), target));
    ad_node f = ad_dot(t, r, r);
    if (ad_tape_status(t) != AD_OK)
        return fail(t, "recording");

    printf("planar arm, links (1, 0.8, 0.5), target (%g, %g)\n", target[0], target[1]);
    printf("step   q0        q1        q2        p_x        p_y        distance   |grad f|\n");
    int ok = 0;
    for (int step = 0; step <= MAX_STEPS; step++) {
        /* the same recording at the new q */
        if (ad_set_value(t, qn, q) != AD_OK || ad_replay(t) != AD_OK)
            return fail(t, "replay");
        if (ad_backward(t, f) != AD_OK)
            return fail(t, "gradient");
        double J[2 * NJ], Jh[2 * NJ];
        if (ad_jacobian(t, p, 1, &qn, J, AD_JAC_AUTO) != AD_OK)
            return fail(t, "Jacobian");
        const double *pv = ad_value(t, p), *rv = ad_value(t, r), *g = ad_grad(t, qn);
        const double dist = hypot(rv[0], rv[1]);
        printf("%4d  % .6f % .6f % .6f  % .7f  % .7f  %.3e  %.3e\n", step, q[0], q[1], q[2],
               pv[0], pv[1], dist, sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]));

        /* the tape against the closed forms: J, and grad f = 2 J^T r */
        jacobian_by_hand(q, Jh);
        for (int k = 0; k < 2 * NJ; k++)
            if (!(fabs(J[k] - Jh[k]) <= 1e-12))
                return fail(NULL, "the tape's Jacobian differs from the closed form");
        for (int j = 0; j < NJ; j++)
            if (!(fabs(g[j] - 2 * (Jh[j] * rv[0] + Jh[NJ + j] * rv[1])) <= 1e-12))
                return fail(NULL, "the tape's gradient differs from 2 J^T (p - t)");

        if (dist <= TOL) {
            ok = 1;
            break;
        }
        /* (J^T J + lambda I) dq = -J^T r */
        double A[NJ][NJ], b[NJ], dq[NJ];
        for (int i = 0; i < NJ; i++) {
            for (int j = 0; j < NJ; j++)
                A[i][j] = J[i] * J[j] + J[NJ + i] * J[NJ + j] + (i == j ? LAMBDA : 0.0);
            b[i] = -(J[i] * rv[0] + J[NJ + i] * rv[1]);
        }
        if (!solve3(A, b, dq))
            return fail(NULL, "J^T J + lambda I is not positive definite");
        for (int i = 0; i < NJ; i++)
            q[i] += dq[i];
    }
    if (!ok)
        return fail(NULL, "the arm did not reach the target within 1e-8 in 20 steps");
    printf("reached: joint angles (%.12f, %.12f, %.12f) rad\n", q[0], q[1], q[2]);
    printf("Jacobian and gradient matched the closed forms to 1e-12 at every step\n");
    ad_tape_free(t);
    return 0;
}
