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
 *   the tape, written three ways:
 *     slices  q a vector variable; theta stacked from ad_at(q, i) and
 *             adds, ad_cos / ad_sin of theta, p stacked from two ad_dot,
 *             f = r . r -- examples/robot_arm.c's recording
 *     matvec  the same with constant matrices: theta = T q (T lower-
 *             triangular ones), p = Ax cos(theta) + Ay sin(theta)
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

/* ---- the three recordings ----
 * Each records f at q and returns it; the leaves go to qn: one vector
 * (qn[0]) or three scalars. */

/* examples/robot_arm.c's: slices and stacks */
static ad_node record_slices(ad_tape *t, const double *q, ad_node *qn)
{
    qn[0] = ad_variable(t, ad_shape_vec(NJ), q);
    ad_node th[NJ];
    th[0] = ad_at(t, qn[0], 0);
    for (int i = 1; i < NJ; i++)
        th[i] = ad_add(t, th[i - 1], ad_at(t, qn[0], (uint32_t)i));
    ad_node theta = ad_stack(t, NJ, th);
    ad_node l = ad_constant(t, ad_shape_vec(NJ), len);
    ad_node xy[2] = {ad_dot(t, l, ad_cos(t, theta)), ad_dot(t, l, ad_sin(t, theta))};
    ad_node r = ad_sub(t, ad_stack(t, 2, xy), ad_constant(t, ad_shape_vec(2), target));
    return ad_dot(t, r, r);
}

/* constant matrices: theta = T q, p = Ax cos(theta) + Ay sin(theta) */
static ad_node record_matvec(ad_tape *t, const double *q, ad_node *qn)
{
    static const double T[NJ * NJ] = {1, 0, 0, 1, 1, 0, 1, 1, 1};
    static const double Ax[2 * NJ] = {1.0, 0.8, 0.5, 0, 0, 0};
    static const double Ay[2 * NJ] = {0, 0, 0, 1.0, 0.8, 0.5};
    qn[0] = ad_variable(t, ad_shape_vec(NJ), q);
    ad_node theta = ad_matvec(t, ad_constant(t, ad_shape_mat(NJ, NJ), T), qn[0]);
    ad_node p = ad_add(t, ad_matvec(t, ad_constant(t, ad_shape_mat(2, NJ), Ax), ad_cos(t, theta)),
                       ad_matvec(t, ad_constant(t, ad_shape_mat(2, NJ), Ay), ad_sin(t, theta)));
    ad_node r = ad_sub(t, p, ad_constant(t, ad_shape_vec(2), target));
    return ad_dot(t, r, r);
}

/* three scalar variables, every op an inline scalar node */
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

typedef struct recording {
    const char *name;
    ad_node (*record)(ad_tape *, const double *, ad_node *);
    int scalar; /* q as three scalars (else one vector) */
} recording;

#define NREC 3
static const recording recs[NREC] = {
    {"slices", record_slices, 0}, {"matvec", record_matvec, 0}, {"scalar", record_scalar, 1}};

/* One recording, kept for replay. */
typedef struct taped {
    ad_tape *t;
    ad_node q[NJ], f;
} taped;

static void set_q(const recording *r, taped *x, const double *q)
{
    if (r->scalar)
        for (int i = 0; i < NJ; i++)
            ad_set_value(x->t, x->q[i], &q[i]);
    else
        ad_set_value(x->t, x->q[0], q);
}

static void get_grad(const recording *r, const ad_tape *t, const ad_node *qn, double *g)
{
    for (int i = 0; i < NJ; i++)
        g[i] = r->scalar ? ad_grad(t, qn[i])[0] : ad_grad(t, qn[0])[i];
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

/* Variants: 0 plain f, 1 the 12 libm calls, 2 hand-written, then for
 * each recording k: 3 + 2k replay + sweep, 4 + 2k record + sweep. */
#define PLAIN 0
#define TRIG 1
#define HAND 2
#define NV (3 + 2 * NREC)

/* One timed repetition of variant v: EVALS evaluations, seconds. */
static double run(int v, taped *tp, ad_tape *tr, double *sink)
{
    double g[NJ], acc = 0;
    const recording *r = v >= 3 ? &recs[(v - 3) / 2] : NULL;
    taped *x = v >= 3 ? &tp[(v - 3) / 2] : NULL;
    const int replay = v >= 3 && (v - 3) % 2 == 0;
    ad_node qn[NJ];
    const double t0 = bench_now();
    for (int e = 0; e < EVALS; e++) {
        const double *q = poses[e % NPOSE];
        if (v == PLAIN) {
            acc += f_plain(q);
        } else if (v == TRIG) {
            acc += trig_floor(q);
        } else if (v == HAND) {
            acc += grad_hand(q, g) + g[0];
        } else if (replay) {
            set_q(r, x, q);
            ad_replay(x->t);
            ad_backward(x->t, x->f);
            acc += r->scalar ? ad_grad(x->t, x->q[0])[0] : ad_grad(x->t, x->q[0])[0];
        } else {
            ad_tape_reset(tr);
            ad_node f = r->record(tr, q, qn);
            ad_backward(tr, f);
            acc += ad_grad(tr, qn[0])[0];
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
    taped tp[NREC];
    size_t nodes[NREC];
    ad_tape *tr = ad_tape_new(&opts);
    bench_check(tr != NULL, "tape");
    for (int k = 0; k < NREC; k++) {
        tp[k].t = ad_tape_new(&opts);
        bench_check(tp[k].t != NULL, "tape");
        tp[k].f = recs[k].record(tp[k].t, poses[0], tp[k].q);
        bench_check(ad_tape_status(tp[k].t) == AD_OK, ad_tape_errmsg(tp[k].t));
        nodes[k] = ad_tape_len(tp[k].t) - 1;
    }

    /* every tape gradient against the hand-written one, at every pose,
     * replayed and recorded afresh */
    double worst[NV] = {0};
    for (int p = 0; p < NPOSE; p++) {
        const double *q = poses[p];
        double gh[NJ], g[NJ];
        const double fh = grad_hand(q, gh);
        bench_check(fabs(f_plain(q) - fh) <= 1e-12 * fmax(1.0, fh), "W5: f_plain differs");
        for (int k = 0; k < NREC; k++)
            for (int replay = 1; replay >= 0; replay--) {
                ad_tape *t = replay ? tp[k].t : tr;
                ad_node qn[NJ], f;
                if (replay) {
                    set_q(&recs[k], &tp[k], q);
                    bench_check(ad_replay(t) == AD_OK, ad_tape_errmsg(t));
                    f = tp[k].f;
                    for (int i = 0; i < NJ; i++)
                        qn[i] = tp[k].q[i];
                } else {
                    ad_tape_reset(tr);
                    f = recs[k].record(tr, q, qn);
                }
                bench_check(ad_backward(t, f) == AD_OK, ad_tape_errmsg(t));
                get_grad(&recs[k], t, qn, g);
                bench_check(fabs(ad_scalar_value(t, f) - fh) <= 1e-12 * fmax(1.0, fh),
                            "W5: the tape's cost differs from the hand-written one");
                const int v = 3 + 2 * k + !replay;
                worst[v] = fmax(worst[v], gdiff(g, gh));
                bench_check(gdiff(g, gh) <= 1e-12,
                            "W5: the tape's gradient differs from the hand-written one");
            }
    }

    double tm[NV][BENCH_REPS];
    double sink = 0;
    long allocs_replay = 0;
    for (int r = -1; r < BENCH_REPS; r++)
        for (int v = 0; v < NV; v++) {
            const long a0 = counter.allocs;
            const double dt = run(v, tp, tr, &sink);
            if (v >= 3 && (v - 3) % 2 == 0)
                allocs_replay += counter.allocs - a0;
            if (r >= 0)
                tm[v][r] = dt;
        }
    volatile double vsink = sink;
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
    printf("  tape nodes: slices %zu, matvec %zu, scalar %zu\n", nodes[0], nodes[1], nodes[2]);
    char name[NV][48], json[NV][48];
    snprintf(name[PLAIN], sizeof name[0], "t_f (plain C, no gradient)");
    snprintf(json[PLAIN], sizeof json[0], "plain_f");
    snprintf(name[TRIG], sizeof name[0], "12 libm sin/cos calls");
    snprintf(json[TRIG], sizeof json[0], "libm_12_trig");
    snprintf(name[HAND], sizeof name[0], "hand-written gradient");
    snprintf(json[HAND], sizeof json[0], "hand");
    for (int k = 0; k < NREC; k++) {
        snprintf(name[3 + 2 * k], sizeof name[0], "%s: replay + sweep", recs[k].name);
        snprintf(json[3 + 2 * k], sizeof json[0], "%s_replay_sweep", recs[k].name);
        snprintf(name[4 + 2 * k], sizeof name[0], "%s: record + sweep", recs[k].name);
        snprintf(json[4 + 2 * k], sizeof json[0], "%s_record_sweep", recs[k].name);
    }
    for (int v = 0; v < NV; v++) {
        printf("  %-27s %8.1f ns/eval  (min %7.1f, max %7.1f)", name[v], st[v].median, st[v].min,
               st[v].max);
        if (v >= TRIG)
            printf("  %5.2f x hand", st[v].median / hand);
        if (v >= 3)
            printf("  target <= %d: %s", (v - 3) % 2 ? 6 : 3,
                   st[v].median / hand <= ((v - 3) % 2 ? 6.0 : 3.0) ? "met" : "NOT met");
        printf("\n");
    }
    printf("  allocations during the timed replays: %ld\n", allocs_replay);
    printf("  gradient check (normwise relative, limit 1e-12), worst over the poses:");
    for (int k = 0; k < NREC; k++)
        printf(" %s %.1e/%.1e", recs[k].name, worst[3 + 2 * k], worst[4 + 2 * k]);
    printf(" (replayed/recorded)\n");
    for (int v = 0; v < NV; v++)
        bench_json("W5", json[v], st[v], "ns/eval", v >= TRIG ? st[v].median / hand : -1.0);
    for (int k = 0; k < NREC; k++)
        ad_tape_free(tp[k].t);
    ad_tape_free(tr);
    return 0;
}
