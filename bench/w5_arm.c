/* W5 -- the planar robot arm's cost and gradient (docs/performance.md, "W5").
 *
 * Three links of lengths l = (1, 0.8, 0.5), joint angles q (3 numbers),
 * link angles theta_i = q_0 + ... + q_i, end effector
 * p = (sum l_i cos theta_i, sum l_i sin theta_i), cost
 * f(q) = |p - t|^2 with t = (1.2, 0.9) -- examples/robot_arm.c's cost.
 *
 * One evaluation is f and its gradient at one pose; the run cycles over
 * NPOSE poses (fixed pseudo-random angles in [-pi, pi]). Timed in one run,
 * each as ns per evaluation, the median of BENCH_REPS repetitions after a
 * warm-up:
 *   t_f                   the cost in plain C (no gradient)
 *   12 libm calls         sin and cos of each angle twice (see trig_floor):
 *                         what the tape's kernels call, a floor under it
 *   hand-written          cost and gradient in plain C (the reference)
 *   the tape, written two ways:
 *     vector  q a vector variable; theta = T q (ad_matvec, T lower-
 *             triangular ones), ad_cos / ad_sin of the vector, p from two
 *             constant 2x3 matrices, f = r . r -- the example's recording
 *     scalar  q three scalar variables and every op a scalar (inline) node
 *   each as
 *     replay + sweep   recorded once; per evaluation ad_set_value,
 *                      ad_replay, ad_backward, the gradient read out
 *     record + sweep   per evaluation ad_tape_reset, the recording,
 *                      ad_backward
 * Every tape gradient is checked against the hand-written one to 1e-12
 * (relative to the gradient's norm) at every pose, outside the timing;
 * the run exits non-zero on a mismatch. Targets (issue 14): replay + sweep
 * <= 3x the hand-written gradient, record + sweep <= 6x. */
#include "bench_util.h"

#include <autodiff/autodiff.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NJ 3
#define NPOSE 1024
#define EVALS 200000 /* evaluations per timed repetition */

static const double len[NJ] = {1.0, 0.8, 0.5};
static const double target[2] = {1.2, 0.9};

/* ---- plain C ---- */

static double f_plain(const double *q)
{
    double th = 0, px = 0, py = 0;
    for (int i = 0; i < NJ; i++) {
        th += q[i];
        px += len[i] * cos(th);
        py += len[i] * sin(th);
    }
    const double rx = px - target[0], ry = py - target[1];
    return rx * rx + ry * ry;
}

/* df/dtheta_i = 2 l_i (ry cos theta_i - rx sin theta_i); df/dq_j is the
 * sum of df/dtheta_i over i >= j. Returns f. */
static double grad_hand(const double *q, double *g)
{
    double th = 0, px = 0, py = 0, c[NJ], s[NJ];
    for (int i = 0; i < NJ; i++) {
        th += q[i];
        c[i] = cos(th);
        s[i] = sin(th);
        px += len[i] * c[i];
        py += len[i] * s[i];
    }
    const double rx = px - target[0], ry = py - target[1];
    double acc = 0;
    for (int i = NJ - 1; i >= 0; i--) {
        acc += 2.0 * len[i] * (ry * c[i] - rx * s[i]);
        g[i] = acc;
    }
    return rx * rx + ry * ry;
}

/* ---- the two recordings ---- */

static ad_node record_vector(ad_tape *t, const double *q, ad_node *qn)
{
    static const double T[NJ * NJ] = {1, 0, 0, 1, 1, 0, 1, 1, 1};
    static const double Ax[2 * NJ] = {1.0, 0.8, 0.5, 0, 0, 0};
    static const double Ay[2 * NJ] = {0, 0, 0, 1.0, 0.8, 0.5};
    *qn = ad_variable(t, ad_shape_vec(NJ), q);
    ad_node theta = ad_matvec(t, ad_constant(t, ad_shape_mat(NJ, NJ), T), *qn);
    ad_node p = ad_add(t, ad_matvec(t, ad_constant(t, ad_shape_mat(2, NJ), Ax), ad_cos(t, theta)),
                       ad_matvec(t, ad_constant(t, ad_shape_mat(2, NJ), Ay), ad_sin(t, theta)));
    ad_node r = ad_sub(t, p, ad_constant(t, ad_shape_vec(2), target));
    return ad_dot(t, r, r);
}

static ad_node record_scalar(ad_tape *t, const double *q, ad_node *qs)
{
    ad_node th = ad_nil(), px = ad_nil(), py = ad_nil();
    for (int i = 0; i < NJ; i++) {
        qs[i] = ad_scalar_var(t, q[i]);
        th = i == 0 ? qs[0] : ad_add(t, th, qs[i]);
        ad_node cx = ad_scale(t, ad_cos(t, th), len[i]), cy = ad_scale(t, ad_sin(t, th), len[i]);
        px = i == 0 ? cx : ad_add(t, px, cx);
        py = i == 0 ? cy : ad_add(t, py, cy);
    }
    ad_node rx = ad_add_const(t, px, -target[0]), ry = ad_add_const(t, py, -target[1]);
    return ad_add(t, ad_square(t, rx), ad_square(t, ry));
}

/* Normwise relative difference of two gradients. */
static double gdiff(const double *a, const double *b)
{
    double num = 0, den = 0;
    for (int i = 0; i < NJ; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 0 ? den : 1.0);
}

static double poses[NPOSE][NJ];

/* ---- timing ---- */

/* The libm calls a tape evaluation cannot avoid: sin and cos of each link
 * angle in the forward pass, and again in the vjps (sin' = cos, cos' =
 * -sin), 12 calls, where the hand-written gradient makes one sincos per
 * angle (the compiler merges its sin and cos). Called through volatile
 * pointers so that they are not merged here either. */
static double (*volatile vsin)(double) = sin;
static double (*volatile vcos)(double) = cos;
static double trig_floor(const double *q)
{
    double th = 0, acc = 0;
    for (int i = 0; i < NJ; i++) {
        th += q[i];
        acc += vsin(th) + vcos(th) + vcos(th) + vsin(th);
    }
    return acc;
}

typedef enum { PLAIN, TRIG, HAND, VEC_REPLAY, VEC_RECORD, SCA_REPLAY, SCA_RECORD, NV } variant;

static const char *const vname[NV] = {
    "t_f (plain C, no gradient)", "12 libm sin/cos calls", "hand-written gradient",
    "replay + sweep, vector ops", "record + sweep, vector ops", "replay + sweep, scalar ops",
    "record + sweep, scalar ops"};
static const char *const vjson[NV] = {"plain_f", "libm_12_trig", "hand", "vector_replay_sweep",
                                      "vector_record_sweep", "scalar_replay_sweep",
                                      "scalar_record_sweep"};

/* One timed repetition of variant v: EVALS evaluations, seconds. */
static double run(variant v, ad_tape *tv, ad_node qv, ad_node fv, ad_tape *ts, ad_node *qs,
                  ad_node fs, ad_tape *tr, double *sink)
{
    double g[NJ], acc = 0;
    ad_node qn[NJ], f;
    const double t0 = bench_now();
    for (int e = 0; e < EVALS; e++) {
        const double *q = poses[e % NPOSE];
        switch (v) {
        case PLAIN:
            acc += f_plain(q);
            break;
        case TRIG:
            acc += trig_floor(q);
            break;
        case HAND:
            acc += grad_hand(q, g) + g[0];
            break;
        case VEC_REPLAY:
            ad_set_value(tv, qv, q);
            ad_replay(tv);
            ad_backward(tv, fv);
            acc += ad_grad(tv, qv)[0];
            break;
        case VEC_RECORD:
            ad_tape_reset(tr);
            f = record_vector(tr, q, qn);
            ad_backward(tr, f);
            acc += ad_grad(tr, qn[0])[0];
            break;
        case SCA_REPLAY:
            for (int i = 0; i < NJ; i++)
                ad_set_value(ts, qs[i], &q[i]);
            ad_replay(ts);
            ad_backward(ts, fs);
            acc += ad_grad(ts, qs[0])[0];
            break;
        case SCA_RECORD:
            ad_tape_reset(tr);
            f = record_scalar(tr, q, qn);
            ad_backward(tr, f);
            acc += ad_grad(tr, qn[0])[0];
            break;
        default:
            break;
        }
    }
    const double t1 = bench_now();
    *sink += acc;
    return t1 - t0;
}

int main(void)
{
    uint64_t s = 0x5EED5u; /* splitmix64: the same poses on every machine */
    for (int p = 0; p < NPOSE; p++)
        for (int i = 0; i < NJ; i++) {
            uint64_t z = (s += 0x9E3779B97F4A7C15u);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
            z ^= z >> 31;
            poses[p][i] = ((double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 3.141592653589793;
        }

    bench_alloc counter = {0, 0, 0};
    ad_tape_opts opts = {bench_alloc_fn, &counter, NULL};
    ad_tape *tv = ad_tape_new(&opts), *ts = ad_tape_new(&opts), *tr = ad_tape_new(&opts);
    bench_check(tv && ts && tr, "tape");
    ad_node qv, qs[NJ];
    ad_node fv = record_vector(tv, poses[0], &qv), fs = record_scalar(ts, poses[0], qs);
    bench_check(ad_tape_status(tv) == AD_OK && ad_tape_status(ts) == AD_OK, "recording");
    const size_t nodes_v = ad_tape_len(tv) - 1, nodes_s = ad_tape_len(ts) - 1;

    /* every variant's gradient against the hand-written one, every pose */
    double worst[NV] = {0};
    for (int p = 0; p < NPOSE; p++) {
        const double *q = poses[p];
        double gh[NJ], g[NJ];
        const double fh = grad_hand(q, gh);
        bench_check(fabs(f_plain(q) - fh) <= 1e-12 * fmax(1.0, fh), "W5: f_plain differs");
        for (int v = VEC_REPLAY; v < NV; v++) {
            ad_tape *t = v == VEC_REPLAY ? tv : v == SCA_REPLAY ? ts : tr;
            ad_node in[NJ], f;
            if (v == VEC_REPLAY) {
                bench_check(ad_set_value(tv, qv, q) == AD_OK, ad_tape_errmsg(tv));
                bench_check(ad_replay(tv) == AD_OK, ad_tape_errmsg(tv));
                f = fv;
            } else if (v == SCA_REPLAY) {
                for (int i = 0; i < NJ; i++)
                    bench_check(ad_set_value(ts, qs[i], &q[i]) == AD_OK, ad_tape_errmsg(ts));
                bench_check(ad_replay(ts) == AD_OK, ad_tape_errmsg(ts));
                f = fs;
            } else {
                ad_tape_reset(tr);
                f = v == VEC_RECORD ? record_vector(tr, q, in) : record_scalar(tr, q, in);
            }
            bench_check(ad_backward(t, f) == AD_OK, ad_tape_errmsg(t));
            for (int i = 0; i < NJ; i++)
                g[i] = v == VEC_REPLAY ? ad_grad(tv, qv)[i]
                       : v == SCA_REPLAY ? ad_grad(ts, qs[i])[0]
                       : v == VEC_RECORD ? ad_grad(tr, in[0])[i]
                                         : ad_grad(tr, in[i])[0];
            bench_check(fabs(ad_scalar_value(t, f) - fh) <= 1e-12 * fmax(1.0, fh),
                        "W5: the tape's cost differs from the hand-written one");
            worst[v] = fmax(worst[v], gdiff(g, gh));
            bench_check(gdiff(g, gh) <= 1e-12,
                        "W5: the tape's gradient differs from the hand-written one");
        }
    }

    double tm[NV][BENCH_REPS];
    volatile double vsink = 0;
    double sink = 0;
    long allocs_replay = 0;
    for (int r = -1; r < BENCH_REPS; r++)
        for (int v = 0; v < NV; v++) {
            const long a0 = counter.allocs;
            const double dt = run((variant)v, tv, qv, fv, ts, qs, fs, tr, &sink);
            if (v == VEC_REPLAY || v == SCA_REPLAY)
                allocs_replay += counter.allocs - a0;
            if (r >= 0)
                tm[v][r] = dt;
        }
    vsink = sink;
    (void)vsink;

    bench_stats st[NV];
    for (int v = 0; v < NV; v++) {
        for (int r = 0; r < BENCH_REPS; r++)
            tm[v][r] *= 1e9 / EVALS; /* ns per evaluation */
        st[v] = bench_summarise(tm[v], BENCH_REPS);
    }
    const double hand = st[HAND].median;
    printf("W5 planar 3-link arm, f = |p(q) - t|^2 and its gradient, %d poses, %d evaluations "
           "per repetition\n", NPOSE, EVALS);
    printf("  tape: vector ops %zu nodes, scalar ops %zu nodes\n", nodes_v, nodes_s);
    for (int v = 0; v < NV; v++) {
        printf("  %-28s %8.1f ns/eval  (min %.1f, max %.1f)", vname[v], st[v].median, st[v].min,
               st[v].max);
        if (v >= TRIG)
            printf("  %5.2f x hand", st[v].median / hand);
        if (v == VEC_REPLAY || v == SCA_REPLAY)
            printf("  target <= 3: %s", st[v].median / hand <= 3.0 ? "met" : "NOT met");
        if (v == VEC_RECORD || v == SCA_RECORD)
            printf("  target <= 6: %s", st[v].median / hand <= 6.0 ? "met" : "NOT met");
        printf("\n");
    }
    printf("  allocations during the timed replays: %ld\n", allocs_replay);
    printf("  gradient check (normwise relative, limit 1e-12): vector replay %.1e, record %.1e; "
           "scalar replay %.1e, record %.1e\n",
           worst[VEC_REPLAY], worst[VEC_RECORD], worst[SCA_REPLAY], worst[SCA_RECORD]);
    for (int v = 0; v < NV; v++)
        bench_json("W5", vjson[v], st[v], "ns/eval", v >= TRIG ? st[v].median / hand : -1.0);
    ad_tape_free(tv);
    ad_tape_free(ts);
    ad_tape_free(tr);
    return 0;
}
