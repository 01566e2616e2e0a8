/* robot_arm_codegen.c -- examples/robot_arm.c without a tape: the arm's
 * forward kinematics p(q) and its Jacobian come from C that ad_codegen
 * wrote at build time (arm_generator.c, through autodiff_generate_c() in
 * CMakeLists.txt). This program links no autodiff library: arm.c needs
 * only <math.h>, and it allocates nothing (the work array is static).
 *
 * Damped Gauss-Newton steps (J^T J + lambda I) dq = -J^T (p - t) move the
 * arm to the target t = (1.2, 0.9); each step checks the generated J
 * against the closed form to 1e-12. Exits non-zero unless the arm is
 * within 1e-8 of the target after at most 20 steps. */
#include "arm.h"

#include <math.h>
#include <stdio.h>

#define NJ 3
#define MAX_STEPS 20
#define TOL 1e-8
#define LAMBDA 1e-9

static const double len[NJ] = {1.0, 0.8, 0.5};
static const double target[2] = {1.2, 0.9};

static double work[arm_WORK_SIZE]; /* the generated code's only memory */

/* Cholesky solve of the SPD 3x3 system A x = b; 0 if not SPD. */
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
    for (int i = 0; i < NJ; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++)
            s -= A[i][k] * y[k];
        y[i] = s / A[i][i];
    }
    for (int i = NJ - 1; i >= 0; i--) {
        double s = y[i];
        for (int k = i + 1; k < NJ; k++)
            s -= A[k][i] * x[k];
        x[i] = s / A[i][i];
    }
    return 1;
}

int main(void)
{
    double q[NJ] = {0.3, 0.9, -0.4};
    const double *in[1] = {q};
    printf("planar arm (generated code), target (%g, %g)\n", target[0], target[1]);
    printf("step   q0        q1        q2        p_x        p_y        distance\n");
    for (int step = 0; step <= MAX_STEPS; step++) {
        double p[2], J[2 * NJ];
        if (arm_jacobian(in, p, J, work) != 0) { /* 1: a replay guard fired */
            fprintf(stderr, "robot_arm_codegen: the recorded branch no longer holds\n");
            return 1;
        }
        const double r[2] = {p[0] - target[0], p[1] - target[1]};
        const double dist = hypot(r[0], r[1]);
        printf("%4d  % .6f % .6f % .6f  % .7f  % .7f  %.3e\n", step, q[0], q[1], q[2], p[0], p[1],
               dist);
        /* the generated Jacobian against the closed form */
        double th = 0;
        for (int j = 0; j < NJ; j++) {
            double dx = 0, dy = 0, t2 = th + q[j];
            for (int i = j; i < NJ; i++) {
                dx -= len[i] * sin(t2);
                dy += len[i] * cos(t2);
                if (i + 1 < NJ)
                    t2 += q[i + 1];
            }
            th += q[j];
            if (!(fabs(J[j] - dx) <= 1e-12 && fabs(J[NJ + j] - dy) <= 1e-12)) {
                fprintf(stderr, "robot_arm_codegen: generated Jacobian differs\n");
                return 1;
            }
        }
        if (dist <= TOL) {
            printf("reached the target in %d steps\n", step);
            return 0;
        }
        double A[NJ][NJ], b[NJ], dq[NJ];
        for (int i = 0; i < NJ; i++) {
            for (int j = 0; j < NJ; j++)
                A[i][j] = J[i] * J[j] + J[NJ + i] * J[NJ + j] + (i == j ? LAMBDA : 0.0);
            b[i] = -(J[i] * r[0] + J[NJ + i] * r[1]);
        }
        if (!solve3(A, b, dq)) {
            fprintf(stderr, "robot_arm_codegen: singular step\n");
            return 1;
        }
        for (int i = 0; i < NJ; i++)
            q[i] += dq[i];
    }
    fprintf(stderr, "robot_arm_codegen: not within %g after %d steps\n", TOL, MAX_STEPS);
    return 1;
}
