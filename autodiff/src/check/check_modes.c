/* check_modes.c -- checks of the derivative modes.
 *
 *   ad_jvpcheck           J v (ad_jvp) against central differences of f
 *   ad_hvpcheck           H v (ad_hvp) against central differences of the
 *                         tape's gradient, and <H u, w> against <u, H w>
 *   ad_handcheck_hessian  your Hessian blocks against ad_hessian
 *   ad_handcheck_hvp      your H v against ad_hvp
 *
 * Like the other checks they record the function once on a tape of their
 * own (check_session.c) and re-evaluate it with ad_set_value + ad_replay;
 * the modes run on that tape, so the caller's tapes are never touched.
 * Each compared number is an ad_check_entry with an ad_check_index beside
 * it (report_add_ix) saying where it was taken. */
#include "check_internal.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FD_ATOL 1e-6
#define FD_RTOL 1e-5
#define HAND_TOL 1e-9
#define DEFAULT_POINTS 3
#define DEFAULT_HAND_DIRS 3
#define DEFAULT_SEED 0x5eed5eedu
#define DIR_STREAM 0xd1ec7105d1ec7105u /* the directions' generator: seed ^ this */
#define SMALL_TABLE 24 /* list every row when there are at most this many */
#define MAX_ROWS 40    /* otherwise at most this many */

enum { JVP, HVP, HESS, HAND_HVP };

static const char *const WHO[] = {"jvpcheck", "hvpcheck", "handcheck_hessian", "handcheck_hvp"};

typedef struct mcheck {
    ad__session s;
    int which;               /* JVP, HVP, HESS, HAND_HVP                    */
    const char *who;
    const ad_check_opts *o;
    double atol, rtol, step;
    size_t N;                /* all inputs' elements                        */
    int npoints;
    double *pts;             /* npoints * N: every point, for the text      */
    double *x0;              /* N: the current point                        */
    /* the inputs that are not constant: the leaves the modes see */
    int nmv;
    ad_node *mv;             /* nmv                                         */
    const double **vp;       /* nmv: the direction, input by input          */
    double **hp;             /* nmv: H v, input by input                    */
    size_t *moff;            /* n: offset among the moved inputs (Hessian)  */
    size_t Nm;               /* their elements                              */
    /* the compared elements (AD_INPUT_COMPARE) */
    size_t Nc;
    size_t *cpos;            /* Nc: flat positions                          */
    int *cin;                /* Nc: inputs                                  */
    /* directions */
    int unit;                /* the unit directions of the compared elements */
    int ndirs;               /* directions (unit: Nc)                       */
    int given;               /* the caller's                                */
    double *dirs;            /* ndirs * N, unless unit                      */
    double *v;               /* N: the current direction                    */
    double *a, *b;           /* max(N, m): work                             */
    double *hvs;             /* HVP: ndirs * N, H v of every direction      */
    double *H;               /* HESS: Nm * Nm                               */
    double *mine;            /* HESS, HAND_HVP: your numbers                */
    size_t nmine;
    double **yp;             /* HESS: n * n block pointers; HAND_HVP: n     */
    const double **pp;       /* n: the point, input by input                */
    const double **vv;       /* n: the direction, input by input            */
    ad__kinks k;
    char J[64];              /* the output's name                           */
} mcheck;

static const char *in_name(const mcheck *c, int i, char *buf, size_t cap)
{
    return ad__input_name(c->s.in, i, buf, cap);
}

/* ---- set-up and clean-up ---- */

static void mc_free(mcheck *c)
{
    const ad__cmem *m = &c->s.mem;
    const size_t N = c->N, n = (size_t)c->s.n, w = N > c->s.m ? N : c->s.m;
    ad__cmem_free(m, c->pts, (size_t)c->npoints * N * sizeof *c->pts);
    ad__cmem_free(m, c->x0, N * sizeof *c->x0);
    ad__cmem_free(m, c->mv, (size_t)c->nmv * sizeof *c->mv);
    ad__cmem_free(m, c->vp, (size_t)c->nmv * sizeof *c->vp);
    ad__cmem_free(m, c->hp, (size_t)c->nmv * sizeof *c->hp);
    ad__cmem_free(m, c->moff, n * sizeof *c->moff);
    ad__cmem_free(m, c->cpos, c->Nc * sizeof *c->cpos);
    ad__cmem_free(m, c->cin, c->Nc * sizeof *c->cin);
    if (!c->unit)
        ad__cmem_free(m, c->dirs, (size_t)c->ndirs * N * sizeof *c->dirs);
    ad__cmem_free(m, c->v, N * sizeof *c->v);
    ad__cmem_free(m, c->a, w * sizeof *c->a);
    ad__cmem_free(m, c->b, w * sizeof *c->b);
    ad__cmem_free(m, c->hvs, (size_t)c->ndirs * N * sizeof *c->hvs);
    ad__cmem_free(m, c->H, c->Nm * c->Nm * sizeof *c->H);
    ad__cmem_free(m, c->mine, c->nmine * sizeof *c->mine);
    ad__cmem_free(m, c->yp, (c->which == HESS ? n * n : n) * sizeof *c->yp);
    ad__cmem_free(m, c->pp, n * sizeof *c->pp);
    ad__cmem_free(m, c->vv, n * sizeof *c->vv);
    ad__kinks_free(&c->k, m);
    ad__session_close(&c->s);
}

/* n * sz bytes, or NULL on overflow (and then *ok = 0). */
static void *arr(mcheck *c, size_t n, size_t sz, int *ok)
{
    void *p = ad__cmem_array(&c->s.mem, n, sz);
    if (!p)
        *ok = 0;
    return p;
}

/* Opens the session and allocates what every check needs. */
static int mc_open(mcheck *c, ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                   ad_check_report *r)
{
    int st = ad__session_open(&c->s, c->who, fn, ud, in, n, c->o, r,
                              c->which == JVP ? AD__SESSION_ANY_SHAPE : 0);
    if (st != AD_OK)
        return st;
    const char *nm = ad_node_name(c->s.t, c->s.out);
    snprintf(c->J, sizeof c->J, "%s", nm && nm[0] ? nm : "J");
    c->N = c->s.off[n];
    for (int i = 0; i < n; i++) {
        c->nmv += in[i].role != AD_INPUT_CONSTANT;
        if (in[i].role == AD_INPUT_COMPARE)
            c->Nc += ad_shape_size(in[i].shape);
    }
    const size_t N = c->N, w = N > c->s.m ? N : c->s.m;
    int ok = 1;
    c->pts = (size_t)c->npoints > SIZE_MAX / sizeof(double) / N
                 ? (ok = 0, NULL)
                 : arr(c, (size_t)c->npoints * N, sizeof *c->pts, &ok);
    c->x0 = arr(c, N, sizeof *c->x0, &ok);
    c->mv = arr(c, (size_t)c->nmv, sizeof *c->mv, &ok);
    c->vp = arr(c, (size_t)c->nmv, sizeof *c->vp, &ok);
    c->hp = arr(c, (size_t)c->nmv, sizeof *c->hp, &ok);
    c->moff = arr(c, (size_t)n, sizeof *c->moff, &ok);
    c->cpos = arr(c, c->Nc, sizeof *c->cpos, &ok);
    c->cin = arr(c, c->Nc, sizeof *c->cin, &ok);
    c->v = arr(c, N, sizeof *c->v, &ok);
    c->a = arr(c, w, sizeof *c->a, &ok);
    c->b = arr(c, w, sizeof *c->b, &ok);
    c->pp = arr(c, (size_t)n, sizeof *c->pp, &ok);
    c->vv = arr(c, (size_t)n, sizeof *c->vv, &ok);
    if (!ok)
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for %d points of %zu values",
                               c->who, c->npoints, N);
    int q = 0;
    size_t ci = 0;
    for (int i = 0; i < n; i++) {
        c->moff[i] = c->Nm;
        if (in[i].role == AD_INPUT_CONSTANT)
            continue;
        c->mv[q] = c->s.leaf[i];
        c->vp[q] = c->v + c->s.off[i];
        q++;
        c->Nm += ad_shape_size(in[i].shape);
        if (in[i].role == AD_INPUT_COMPARE)
            for (size_t j = c->s.off[i]; j < c->s.off[i + 1]; j++) {
                c->cpos[ci] = j;
                c->cin[ci++] = i;
            }
    }
    for (int i = 0; i < n; i++)
        c->vv[i] = c->v + c->s.off[i];
    if ((c->which == JVP || c->which == HVP) && ad__kinks_find(&c->k, &c->s, c->o) != AD_OK)
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for the kink table", c->who);
    return AD_OK;
}

/* ---- arguments ---- */

/* The checks' shared argument checks, before anything is recorded. */
static int check_dirs(const char *who, const double *dirs, int ndirs, const ad_check_opts *o,
                      ad_check_report *r)
{
    if (ndirs < 0)
        return ad__report_fail(r, AD_EMISUSE, "%s: ndirs is %d; it must be >= 0", who, ndirs);
    if (!dirs && ndirs > 0)
        return ad__report_fail(r, AD_EMISUSE, "%s: dirs is NULL but ndirs is %d", who, ndirs);
    if (dirs && ndirs == 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: dirs is given but ndirs is 0 (pass NULL for random or unit "
                               "directions)",
                               who);
    if (dirs && o && o->directions > 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: both dirs (%d given directions) and opts.directions (%d "
                               "random ones); pass one",
                               who, ndirs, o->directions);
    return AD_OK;
}

static int any_compared(const ad_check_input *in, int n)
{
    for (int i = 0; in && i < n; i++)
        if (in[i].role == AD_INPUT_COMPARE)
            return 1;
    return 0;
}

/* The directions: the caller's (masked to the compared inputs, checked
 * finite) or seeded random ones; nothing to store for unit directions. */
static int make_dirs(mcheck *c, const double *dirs, int ndirs, int ndefault, ad_check_report *r)
{
    const ad__session *s = &c->s;
    const size_t N = c->N;
    if (dirs) {
        c->ndirs = ndirs;
        c->given = 1;
    } else if (c->o && c->o->directions > 0) {
        c->ndirs = c->o->directions;
    } else if (ndefault > 0) {
        c->ndirs = ndefault;
    } else {
        c->unit = 1;
        c->ndirs = c->Nc > (size_t)INT32_MAX ? INT32_MAX : (int)c->Nc;
        return AD_OK;
    }
    if ((size_t)c->ndirs > SIZE_MAX / sizeof(double) / N)
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for %d directions", c->who,
                               c->ndirs);
    c->dirs = ad__cmem_array(&c->s.mem, (size_t)c->ndirs * N, sizeof *c->dirs);
    if (!c->dirs)
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for %d directions", c->who,
                               c->ndirs);
    memset(c->dirs, 0, (size_t)c->ndirs * N * sizeof *c->dirs);
    uint64_t rng = (c->o && c->o->seed ? c->o->seed : DEFAULT_SEED) ^ DIR_STREAM;
    for (int d = 0; d < c->ndirs; d++)
        for (size_t q = 0; q < c->Nc; q++) {
            const size_t j = c->cpos[q];
            double x = dirs ? dirs[(size_t)d * N + j] : ad__rng_sym(&rng);
            if (!isfinite(x)) {
                ad__sb b;
                ad__sb_init(&b, s->mem);
                char nb[32];
                const int i = c->cin[q];
                ad__elem_name(&b, "", in_name(c, i, nb, sizeof nb), s->in[i].shape,
                              j - s->off[i]);
                ad__report_fail(r, AD_EMISUSE,
                                "%s: direction v%d has %s = %s; directions must be finite",
                                c->who, d + 1, b.buf ? b.buf : "an element",
                                isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
                ad__sb_free(&b);
                return AD_EMISUSE;
            }
            c->dirs[(size_t)d * N + j] = x;
        }
    return AD_OK;
}

/* Direction d into c->v; for a unit direction also the element moved. */
static void load_dir(mcheck *c, int d)
{
    if (c->unit) {
        memset(c->v, 0, c->N * sizeof *c->v);
        c->v[c->cpos[d]] = 1.0;
    } else {
        memcpy(c->v, c->dirs + (size_t)d * c->N, c->N * sizeof *c->v);
    }
}

/* ---- points ---- */

/* Moves to point p (0: the given one) and evaluates there. */
static int at_point(mcheck *c, int p, uint64_t *rng, ad_check_report *r)
{
    ad__session *s = &c->s;
    if (p > 0)
        ad__session_random_point(s, c->o, rng);
    memcpy(c->x0, s->cur, c->N * sizeof *c->x0);
    memcpy(c->pts + (size_t)p * c->N, s->cur, c->N * sizeof *c->pts);
    int st = ad__session_replay(s, -1, r);
    if (st == AD_OK)
        ad__kinks_note(&c->k, s->t);
    return st;
}

/* Back to the point's values (after a difference moved them). */
static int restore(mcheck *c, ad_check_report *r)
{
    memcpy(c->s.cur, c->x0, c->N * sizeof *c->x0);
    return ad__session_replay(&c->s, -1, r);
}

/* The half step along the current direction, and the denominator of the
 * difference ((x + h) - (x - h) as represented, for a unit direction). */
static double half_step(const mcheck *c, int d)
{
    if (c->unit) {
        const double x = c->x0[c->cpos[d]];
        return c->step * fmax(1.0, fabs(x));
    }
    double xmax = 0, vmax = 0;
    for (size_t q = 0; q < c->Nc; q++) {
        xmax = fmax(xmax, fabs(c->x0[c->cpos[q]]));
        vmax = fmax(vmax, fabs(c->v[c->cpos[q]]));
    }
    return c->step * fmax(1.0, xmax) / (vmax > 0 ? vmax : 1.0);
}

/* cur = x0 + sign h v. */
static void move(mcheck *c, double h, double sign)
{
    for (size_t j = 0; j < c->N; j++)
        c->s.cur[j] = c->x0[j] + sign * h * c->v[j];
}

/* The tape's mode call failed: its message. */
static int mode_fail(mcheck *c, int st, ad_check_report *r)
{
    return ad__report_fail(r, st, "%s: %s", c->who, ad_tape_errmsg(c->s.t));
}

static ad_check_index make_ix(int kind)
{
    ad_check_index ix;
    memset(&ix, 0, sizeof ix);
    ix.kind = kind;
    ix.direction = ix.direction2 = ix.input2 = -1;
    return ix;
}

/* ---- J v ---- */

static int jvp_direction(mcheck *c, int p, int d, ad_check_report *r)
{
    ad__session *s = &c->s;
    const size_t m = s->m;
    load_dir(c, d);
    int st = ad_jvp(s->t, s->out, c->nmv, c->mv, c->vp, c->a);
    if (st != AD_OK)
        return mode_fail(c, st, r);
    const double h = half_step(c, d);
    move(c, h, 1);
    if ((st = ad__session_replay(s, -1, r)) != AD_OK)
        return st;
    int crossed = ad__kinks_crossed(&c->k, s->t);
    double denom = 2 * h;
    if (c->unit)
        denom = s->cur[c->cpos[d]];
    memcpy(c->b, ad_value(s->t, s->out), m * sizeof *c->b);
    move(c, h, -1);
    if ((st = ad__session_replay(s, -1, r)) != AD_OK)
        return st;
    crossed |= ad__kinks_crossed(&c->k, s->t);
    if (c->unit)
        denom -= s->cur[c->cpos[d]];
    const double *fm = ad_value(s->t, s->out);
    for (size_t k = 0; k < m; k++) {
        ad_check_entry e;
        memset(&e, 0, sizeof e);
        ad_check_index ix = make_ix(AD_CMP_JVP);
        ix.out_elem = k;
        if (c->unit) {
            e.input = c->cin[d];
            e.elem = c->cpos[d] - s->off[e.input];
        } else {
            e.input = -1;
            e.elem = (size_t)d;
            ix.direction = d;
        }
        e.point = p;
        e.tape = c->a[k];
        e.other = (c->b[k] - fm[k]) / denom;
        if ((st = ad__report_add_ix(r, c->who, e, ix, c->atol, c->rtol, crossed)) != AD_OK)
            return st;
    }
    return restore(c, r);
}

/* ---- H v ---- */

static int hvp_direction(mcheck *c, int p, int d, ad_check_report *r)
{
    ad__session *s = &c->s;
    const size_t N = c->N;
    load_dir(c, d);
    double *hv = c->hvs + (size_t)d * N;
    memset(hv, 0, N * sizeof *hv);
    for (int i = 0, q = 0; i < s->n; i++)
        if (s->in[i].role != AD_INPUT_CONSTANT)
            c->hp[q++] = hv + s->off[i];
    int st = ad_hvp(s->t, s->out, c->nmv, c->mv, c->vp, c->hp, NULL);
    if (st != AD_OK)
        return mode_fail(c, st, r);
    const double h = half_step(c, d);
    move(c, h, 1);
    if ((st = ad__session_replay(s, -1, r)) != AD_OK || (st = ad__session_sweep(s, r)) != AD_OK)
        return st;
    int crossed = ad__kinks_crossed(&c->k, s->t);
    double denom = 2 * h;
    if (c->unit)
        denom = s->cur[c->cpos[d]];
    memcpy(c->b, s->g, N * sizeof *c->b);
    move(c, h, -1);
    if ((st = ad__session_replay(s, -1, r)) != AD_OK || (st = ad__session_sweep(s, r)) != AD_OK)
        return st;
    crossed |= ad__kinks_crossed(&c->k, s->t);
    if (c->unit)
        denom -= s->cur[c->cpos[d]];
    for (size_t q = 0; q < c->Nc; q++) {
        const size_t j = c->cpos[q];
        ad_check_entry e;
        memset(&e, 0, sizeof e);
        ad_check_index ix = make_ix(AD_CMP_HVP);
        e.input = c->cin[q];
        e.elem = j - s->off[e.input];
        e.point = p;
        e.tape = hv[j];
        e.other = (c->b[j] - s->g[j]) / denom;
        if (c->unit) {
            ix.input2 = c->cin[d];
            ix.elem2 = c->cpos[d] - s->off[ix.input2];
        } else {
            ix.direction = d;
        }
        if ((st = ad__report_add_ix(r, c->who, e, ix, c->atol, c->rtol, crossed)) != AD_OK)
            return st;
    }
    return restore(c, r);
}

static double dot(const double *x, const double *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* <H v_a, v_b> against <v_a, H v_b> for every pair a < b; with unit
 * directions H[r][c] = (H e_c)[r] against H[c][r]. */
static int symmetry(mcheck *c, int p, ad_check_report *r)
{
    const ad__session *s = &c->s;
    const size_t N = c->N;
    size_t pair = 0;
    for (int a = 0; a < c->ndirs; a++)
        for (int b = a + 1; b < c->ndirs; b++, pair++) {
            ad_check_entry e;
            memset(&e, 0, sizeof e);
            ad_check_index ix = make_ix(AD_CMP_SYMMETRY);
            e.point = p;
            if (c->unit) {
                e.input = c->cin[a];
                e.elem = c->cpos[a] - s->off[e.input];
                ix.input2 = c->cin[b];
                ix.elem2 = c->cpos[b] - s->off[ix.input2];
                e.tape = c->hvs[(size_t)b * N + c->cpos[a]];  /* H[r][c] */
                e.other = c->hvs[(size_t)a * N + c->cpos[b]]; /* H[c][r] */
            } else {
                e.input = -1;
                e.elem = pair;
                ix.direction = a;
                ix.direction2 = b;
                e.tape = dot(c->hvs + (size_t)a * N, c->dirs + (size_t)b * N, N);
                e.other = dot(c->dirs + (size_t)a * N, c->hvs + (size_t)b * N, N);
            }
            int st = ad__report_add_ix(r, c->who, e, ix, c->atol, c->rtol, 0);
            if (st != AD_OK)
                return st;
        }
    return AD_OK;
}

/* ---- your Hessian ---- */

/* 1 if the pair's block is compared. */
static int pair_used(const mcheck *c, const double *const *hess, int a, int b)
{
    const ad_check_input *in = c->s.in;
    if (in[a].role != AD_INPUT_COMPARE || in[b].role != AD_INPUT_COMPARE)
        return 0;
    return hess ? hess[(size_t)a * (size_t)c->s.n + (size_t)b] != NULL : a <= b;
}

static int hess_point(mcheck *c, int p, const double *const *hess, ad_hand_hess_fn yours,
                      void *yud, ad_check_report *r)
{
    ad__session *s = &c->s;
    const int n = s->n;
    int st = ad_hessian(s->t, s->out, c->nmv, c->mv, c->H);
    if (st != AD_OK)
        return mode_fail(c, st, r);
    if (yours) {
        memset(c->mine, 0, c->nmine * sizeof *c->mine);
        for (int i = 0; i < n; i++)
            c->pp[i] = s->cur + s->off[i];
        int rc = yours(c->pp, c->yp, n, yud);
        if (rc != 0 && p == 0)
            return ad__report_fail(r, AD_EMISUSE,
                                   "%s: your Hessian callback returned %d at the given point",
                                   c->who, rc);
        if (rc != 0)
            return ad__report_fail(r, AD_EMISUSE,
                                   "%s: your Hessian callback returned %d at random point %d",
                                   c->who, rc, p);
    }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            if (!pair_used(c, hess, a, b))
                continue;
            const double *blk = hess ? hess[(size_t)a * n + b] : c->yp[(size_t)a * n + b];
            const size_t sa = ad_shape_size(s->in[a].shape), sb = ad_shape_size(s->in[b].shape);
            for (size_t i = 0; i < sa; i++)
                for (size_t j = 0; j < sb; j++) {
                    ad_check_entry e;
                    memset(&e, 0, sizeof e);
                    ad_check_index ix = make_ix(AD_CMP_HESSIAN);
                    e.input = a;
                    e.elem = i;
                    e.point = p;
                    ix.input2 = b;
                    ix.elem2 = j;
                    e.tape = c->H[(c->moff[a] + i) * c->Nm + c->moff[b] + j];
                    e.other = blk[i * sb + j];
                    if ((st = ad__report_add_ix(r, c->who, e, ix, c->atol, c->rtol, 0)) != AD_OK)
                        return st;
                }
        }
    return AD_OK;
}

/* ---- your H v ---- */

static int hand_hvp_direction(mcheck *c, int p, int d, ad_hand_hvp_fn yours, void *yud,
                              ad_check_report *r)
{
    ad__session *s = &c->s;
    const int n = s->n;
    load_dir(c, d);
    memset(c->a, 0, c->N * sizeof *c->a);
    for (int i = 0, q = 0; i < n; i++)
        if (s->in[i].role != AD_INPUT_CONSTANT)
            c->hp[q++] = c->a + s->off[i];
    int st = ad_hvp(s->t, s->out, c->nmv, c->mv, c->vp, c->hp, NULL);
    if (st != AD_OK)
        return mode_fail(c, st, r);
    memset(c->mine, 0, c->nmine * sizeof *c->mine);
    for (int i = 0; i < n; i++) {
        c->pp[i] = s->cur + s->off[i];
        c->yp[i] = s->in[i].role == AD_INPUT_COMPARE ? c->mine + s->off[i] : NULL;
    }
    int rc = yours(c->pp, c->vv, c->yp, n, yud);
    if (rc != 0 && p == 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: your HVP callback returned %d at the given point, direction "
                               "v%d",
                               c->who, rc, d + 1);
    if (rc != 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: your HVP callback returned %d at random point %d, direction "
                               "v%d",
                               c->who, rc, p, d + 1);
    for (size_t q = 0; q < c->Nc; q++) {
        const size_t j = c->cpos[q];
        ad_check_entry e;
        memset(&e, 0, sizeof e);
        ad_check_index ix = make_ix(AD_CMP_HVP);
        e.input = c->cin[q];
        e.elem = j - s->off[e.input];
        e.point = p;
        ix.direction = d;
        e.tape = c->a[j];
        e.other = c->mine[j];
        if ((st = ad__report_add_ix(r, c->who, e, ix, c->atol, c->rtol, 0)) != AD_OK)
            return st;
    }
    return AD_OK;
}

/* ---- text ---- */

/* The row's name: "dJ/dx [2][1]", "dJ/dv1 [2]", "d2J/dW db [1][0]",
 * "d2J/dW dv1 [1]"; symmetry rows "<H v1, v2>" or "d2J/dW db [1][0]". */
static void entry_name(ad__sb *b, const mcheck *c, const ad_check_entry *e,
                       const ad_check_index *ix)
{
    char n1[32], n2[32];
    const char *J = c->J;
    switch (ix->kind) {
    case AD_CMP_JVP:
        if (ix->direction < 0)
            ad__sb_printf(b, "d%s/d%s [%zu][%zu]", J, in_name(c, e->input, n1, sizeof n1),
                          ix->out_elem, e->elem);
        else
            ad__sb_printf(b, "d%s/dv%d [%zu]", J, ix->direction + 1, ix->out_elem);
        return;
    case AD_CMP_SYMMETRY:
        if (ix->input2 < 0)
            ad__sb_printf(b, "<H v%d, v%d>", ix->direction + 1, ix->direction2 + 1);
        else /* H[r][c] */
            ad__sb_printf(b, "d2%s/d%s d%s [%zu][%zu]", J, in_name(c, e->input, n1, sizeof n1),
                          in_name(c, ix->input2, n2, sizeof n2), e->elem, ix->elem2);
        return;
    default: /* AD_CMP_HVP, AD_CMP_HESSIAN */
        if (ix->input2 >= 0)
            ad__sb_printf(b, "d2%s/d%s d%s [%zu][%zu]", J, in_name(c, e->input, n1, sizeof n1),
                          in_name(c, ix->input2, n2, sizeof n2), e->elem, ix->elem2);
        else
            ad__sb_printf(b, "d2%s/d%s dv%d [%zu]", J, in_name(c, e->input, n1, sizeof n1),
                          ix->direction + 1, e->elem);
        return;
    }
}

/* What a symmetry row compares with: "<v1, H v2>" or "d2J/db dW [0][1]". */
static void symmetry_other(ad__sb *b, const mcheck *c, const ad_check_entry *e,
                           const ad_check_index *ix)
{
    char n1[32], n2[32];
    if (ix->input2 < 0)
        ad__sb_printf(b, "<v%d, H v%d>", ix->direction + 1, ix->direction2 + 1);
    else
        ad__sb_printf(b, "d2%s/d%s d%s [%zu][%zu]", c->J, in_name(c, ix->input2, n1, sizeof n1),
                      in_name(c, e->input, n2, sizeof n2), ix->elem2, e->elem);
}

static const char *const MARK[] = {"", "  FAILED", "  at a kink"};

/* One row. FD style: a table row, or for symmetry
 *   symmetry <H v1, v2> = 3 against <v1, H v2> = 3, abs err 0, rel err 0
 * hand style: "d2J/dW db [1][0]: yours 2, tape 1". */
static void row(ad__sb *b, const mcheck *c, int width, ad__sb *nm, const ad_check_entry *e,
                const ad_check_index *ix, int hand)
{
    nm->len = 0;
    entry_name(nm, c, e, ix);
    const char *name = nm->buf ? nm->buf : "";
    if (hand) {
        ad__sb_printf(b, "  %s: yours %.10g, tape %.10g%s\n", name, e->other + 0.0, e->tape + 0.0,
                      e->verdict == AD_ELEM_OK ? "  ok" : "");
    } else if (ix->kind == AD_CMP_SYMMETRY) {
        ad__sb_printf(b, "  symmetry %s = %.10g against ", name, e->tape + 0.0);
        symmetry_other(b, c, e, ix);
        ad__sb_printf(b, " = %.10g, abs err %.2g, rel err %.2g%s\n", e->other + 0.0, e->abs_err,
                      e->rel_err, MARK[e->verdict]);
    } else {
        ad__sb_printf(b, "  %-*s %16.10g %16.10g %11.2g %11.2g%s\n", width, name, e->tape + 0.0,
                      e->other + 0.0, e->abs_err, e->rel_err, MARK[e->verdict]);
    }
}

static void summary(ad__sb *b, const mcheck *c, const ad_check_report *r)
{
    static const char *const title[] = {"jvp check", "hvp check", "hand-derived Hessian check",
                                        "hand-derived HVP check"};
    const int hand = c->which == HESS || c->which == HAND_HVP;
    const char *what = hand ? "compared elements" : "elements";
    const unsigned long long seed = c->o && c->o->seed ? c->o->seed : DEFAULT_SEED;
    int seeded = 0;
    ad__sb_printf(b, "%s: %s -- ", title[c->which], r->failed ? "FAILED" : "passed");
    if (r->failed)
        ad__sb_printf(b, "%zu of %zu %s differ", r->failed, r->checked, what);
    else if (r->kinks)
        ad__sb_printf(b, "%zu of %zu %s agree", r->checked - r->kinks, r->checked, what);
    else
        ad__sb_printf(b, "%zu %s agree", r->checked, what);
    if (r->kinks)
        ad__sb_printf(b, ", %zu at a kink", r->kinks);
    if (c->npoints > 1) {
        ad__sb_printf(b, " (the given point and %d random point%s", c->npoints - 1,
                      c->npoints > 2 ? "s" : "");
        seeded = 1;
    } else {
        ad__sb_puts(b, " (the given point");
    }
    if (c->which != HESS) {
        if (c->unit)
            ad__sb_puts(b, ", unit directions");
        else if (c->given)
            ad__sb_printf(b, ", %d given direction%s", c->ndirs, c->ndirs > 1 ? "s" : "");
        else {
            ad__sb_printf(b, ", %d random direction%s", c->ndirs, c->ndirs > 1 ? "s" : "");
            seeded = 1;
        }
    }
    if (seeded)
        ad__sb_printf(b, ", seed %llu", seed);
    if (!hand) {
        char sb[40];
        if (c->o && c->o->step > 0)
            snprintf(sb, sizeof sb, "%g", c->step);
        else
            snprintf(sb, sizeof sb, "cbrt(eps)");
        ad__sb_printf(b, ", h = %s*max(1,%s)%s", sb, c->unit ? "|x|" : "max|x|",
                      c->unit ? "" : "/max|v|");
    }
    ad__sb_printf(b, ", atol %g, rtol %g)\n", c->atol, c->rtol);
}

static int write_text(const mcheck *c, ad_check_report *r)
{
    ad__sb b, nm;
    ad__sb_init(&b, c->s.mem);
    ad__sb_init(&nm, c->s.mem);
    const int hand = c->which == HESS || c->which == HAND_HVP;
    const int flag_all = c->o && (c->o->flags & AD_CHECK_ALL_ROWS);
    const int all = flag_all || (!hand && r->nentries <= SMALL_TABLE);
    summary(&b, c, r);
    /* the table's name column: as wide as the widest row shown */
    int width = 8;
    for (size_t i = 0; i < r->nentries; i++) {
        if (!all && r->entries[i].verdict == AD_ELEM_OK)
            continue;
        nm.len = 0;
        entry_name(&nm, c, &r->entries[i], &r->index[i]);
        if ((int)nm.len > width)
            width = (int)nm.len;
    }
    if (!hand)
        ad__sb_printf(&b, "  %-*s %16s %16s %11s %11s\n", width, "element", "tape", "numeric",
                      "abs err", "rel err");
    size_t shown = 0, hidden = 0;
    int last_point = -1;
    for (size_t i = 0; i < r->nentries; i++) {
        const ad_check_entry *e = &r->entries[i];
        if (!all && e->verdict == AD_ELEM_OK)
            continue;
        if (shown >= MAX_ROWS && !flag_all) {
            hidden++;
            continue;
        }
        if (e->point != last_point) {
            ad__sb_puts(&b, "at ");
            ad__describe_point(&b, &c->s, c->pts + (size_t)e->point * c->N, e->point);
            ad__sb_puts(&b, ":\n");
            last_point = e->point;
        }
        row(&b, c, width, &nm, e, &r->index[i], hand);
        shown++;
    }
    if (hidden)
        ad__sb_printf(&b, "(%zu more rows not shown)\n", hidden);
    if (r->has_worst) {
        const ad_check_entry *w = &r->worst;
        const ad_check_index *wi = &r->worst_index;
        nm.len = 0;
        entry_name(&nm, c, w, wi);
        const char *name = nm.buf ? nm.buf : "";
        if (hand) {
            ad__sb_printf(&b, "worst: %s: yours %.10g, tape %.10g", name, w->other, w->tape);
        } else if (wi->kind == AD_CMP_SYMMETRY) {
            ad__sb_printf(&b, "worst: symmetry %s = %.10g against ", name, w->tape);
            symmetry_other(&b, c, w, wi);
            ad__sb_printf(&b, " = %.10g", w->other);
        } else {
            ad__sb_printf(&b, "worst: %s: tape %.10g, numeric %.10g", name, w->tape, w->other);
        }
        ad__sb_printf(&b, ", abs err %.2g, rel err %.2g, at ", w->abs_err, w->rel_err);
        if (w->point)
            ad__sb_printf(&b, "random point %d\n", w->point);
        else
            ad__sb_puts(&b, "the given point\n");
    }
    if (nm.oom)
        b.oom = 1;
    ad__sb_free(&nm);
    return ad__report_set_text(r, c->who, &b);
}

/* ---- the checks ---- */

/* Report, options, tolerances and points: what every check starts with. */
static int begin(mcheck *c, int which, const ad_check_opts *o, ad_check_report *r,
                 unsigned fields)
{
    memset(c, 0, sizeof *c);
    c->which = which;
    c->who = WHO[which];
    c->o = o;
    ad__report_init_ix(r, ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL));
    int st = ad__check_opts(r, c->who, o, fields);
    if (st != AD_OK)
        return st;
    const int hand = which == HESS || which == HAND_HVP;
    c->atol = hand ? HAND_TOL : FD_ATOL;
    c->rtol = hand ? HAND_TOL : FD_RTOL;
    if (o && (o->atol != 0 || o->rtol != 0))
        c->atol = o->atol, c->rtol = o->rtol;
    c->step = o && o->step > 0 ? o->step : cbrt(DBL_EPSILON);
    c->npoints = 1 + (!o || o->points == 0 ? DEFAULT_POINTS : (o->points > 0 ? o->points : 0));
    return AD_OK;
}

static int finish(mcheck *c, int st, ad_check_report *r)
{
    if (st == AD_OK)
        st = write_text(c, r);
    mc_free(c);
    if (st != AD_OK) {
        r->passed = 0;
        return r->status = st;
    }
    r->passed = r->failed == 0;
    return AD_OK;
}

static int fd_check(int which, ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                    const double *dirs, int ndirs, const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    mcheck c;
    int st = begin(&c, which, o, r,
                   AD__OPT_TOL | AD__OPT_STEP | AD__OPT_DIRECTIONS | AD__OPT_POINTS |
                       AD__OPT_SPREAD);
    if (st != AD_OK || (st = check_dirs(c.who, dirs, ndirs, o, r)) != AD_OK)
        return st;
    if (in && n > 0 && !any_compared(in, n))
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: no input to compare (every role is skip or constant)", c.who);
    if ((st = mc_open(&c, fn, ud, in, n, r)) != AD_OK ||
        (st = make_dirs(&c, dirs, ndirs, 0, r)) != AD_OK)
        goto done;
    if (which == HVP) {
        c.hvs = (size_t)c.ndirs > SIZE_MAX / sizeof(double) / c.N
                    ? NULL
                    : ad__cmem_array(&c.s.mem, (size_t)c.ndirs * c.N, sizeof *c.hvs);
        if (!c.hvs) {
            st = ad__report_fail(r, AD_ENOMEM, "%s: out of memory for %d products H v", c.who,
                                 c.ndirs);
            goto done;
        }
    }
    uint64_t rng = o && o->seed ? o->seed : DEFAULT_SEED;
    for (int p = 0; p < c.npoints && st == AD_OK; p++) {
        st = at_point(&c, p, &rng, r);
        for (int d = 0; d < c.ndirs && st == AD_OK; d++)
            st = which == JVP ? jvp_direction(&c, p, d, r) : hvp_direction(&c, p, d, r);
        if (st == AD_OK && which == HVP)
            st = symmetry(&c, p, r);
    }
done:
    return finish(&c, st, r);
}

int ad_jvpcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n, const double *dirs,
                int ndirs, const ad_check_opts *o, ad_check_report *r)
{
    return fd_check(JVP, fn, ud, in, n, dirs, ndirs, o, r);
}

int ad_hvpcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n, const double *dirs,
                int ndirs, const ad_check_opts *o, ad_check_report *r)
{
    return fd_check(HVP, fn, ud, in, n, dirs, ndirs, o, r);
}

int ad_handcheck_hessian(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                         const double *const *hess, ad_hand_hess_fn yours, void *yours_ud,
                         const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    mcheck c;
    int st = begin(&c, HESS, o, r, AD__OPT_TOL | AD__OPT_POINTS | AD__OPT_SPREAD);
    if (st != AD_OK)
        return st;
    if (hess && yours)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck_hessian: give your Hessian either as blocks at the "
                               "given point (hess) or as a callback (yours), not both");
    if (!hess && !yours)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck_hessian: nothing to compare: pass your Hessian as "
                               "blocks (hess) or as a callback (yours)");
    if (!yours && o && o->points > 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck_hessian: %d random points need a Hessian callback "
                               "(yours): hess holds only at the given point",
                               o->points);
    if (!yours)
        c.npoints = 1;
    if (in && n > 0) {
        int any = 0;
        for (int a = 0; a < n && !any; a++)
            for (int b = 0; b < n && !any; b++)
                any = in[a].role == AD_INPUT_COMPARE && in[b].role == AD_INPUT_COMPARE &&
                      (yours || hess[(size_t)a * (size_t)n + (size_t)b]);
        if (!any)
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck_hessian: nothing to compare (%s)",
                                   yours ? "no input has role compare"
                                         : "set hess[a * n + b] for a pair of inputs with role "
                                           "compare");
    }
    if ((st = mc_open(&c, fn, ud, in, n, r)) != AD_OK)
        goto done;
    int ok = 1;
    c.H = c.Nm > SIZE_MAX / sizeof(double) / c.Nm ? (ok = 0, NULL)
                                                   : arr(&c, c.Nm * c.Nm, sizeof *c.H, &ok);
    if (yours) {
        c.yp = arr(&c, (size_t)n * (size_t)n, sizeof *c.yp, &ok);
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (pair_used(&c, NULL, a, b))
                    c.nmine += ad_shape_size(in[a].shape) * ad_shape_size(in[b].shape);
        c.mine = arr(&c, c.nmine, sizeof *c.mine, &ok);
        if (ok) {
            double *p = c.mine;
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++) {
                    double **slot = &c.yp[(size_t)a * (size_t)n + (size_t)b];
                    *slot = NULL;
                    if (pair_used(&c, NULL, a, b)) {
                        *slot = p;
                        p += ad_shape_size(in[a].shape) * ad_shape_size(in[b].shape);
                    }
                }
        }
    }
    if (!ok) {
        st = ad__report_fail(r, AD_ENOMEM, "handcheck_hessian: out of memory for a %zux%zu "
                                           "Hessian",
                             c.Nm, c.Nm);
        goto done;
    }
    uint64_t rng = o && o->seed ? o->seed : DEFAULT_SEED;
    for (int p = 0; p < c.npoints && st == AD_OK; p++)
        if ((st = at_point(&c, p, &rng, r)) == AD_OK)
            st = hess_point(&c, p, yours ? NULL : hess, yours, yours_ud, r);
done:
    return finish(&c, st, r);
}

int ad_handcheck_hvp(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                     const double *dirs, int ndirs, ad_hand_hvp_fn yours, void *yours_ud,
                     const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    mcheck c;
    int st = begin(&c, HAND_HVP, o, r,
                   AD__OPT_TOL | AD__OPT_DIRECTIONS | AD__OPT_POINTS | AD__OPT_SPREAD);
    if (st != AD_OK || (st = check_dirs(c.who, dirs, ndirs, o, r)) != AD_OK)
        return st;
    if (!yours)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck_hvp: yours is NULL (your Hessian-vector product "
                               "callback)");
    if (in && n > 0 && !any_compared(in, n))
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck_hvp: nothing to compare (no input has role compare)");
    if ((st = mc_open(&c, fn, ud, in, n, r)) != AD_OK ||
        (st = make_dirs(&c, dirs, ndirs, DEFAULT_HAND_DIRS, r)) != AD_OK)
        goto done;
    int ok = 1;
    c.nmine = c.N;
    c.mine = arr(&c, c.N, sizeof *c.mine, &ok);
    c.yp = arr(&c, (size_t)n, sizeof *c.yp, &ok);
    if (!ok) {
        st = ad__report_fail(r, AD_ENOMEM, "handcheck_hvp: out of memory for %zu values", c.N);
        goto done;
    }
    uint64_t rng = o && o->seed ? o->seed : DEFAULT_SEED;
    for (int p = 0; p < c.npoints && st == AD_OK; p++) {
        st = at_point(&c, p, &rng, r);
        for (int d = 0; d < c.ndirs && st == AD_OK; d++)
            st = hand_hvp_direction(&c, p, d, yours, yours_ud, r);
    }
done:
    return finish(&c, st, r);
}
