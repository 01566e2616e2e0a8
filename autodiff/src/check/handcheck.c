/* handcheck.c -- your hand-derived gradient against the tape's, and one
 * node's gradient against an expected array.
 *
 * Both sides are exact computations, so the default tolerance is tight
 * (1e-9 absolute + 1e-9 relative): only summation order may differ. */
#include "check_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_TOL 1e-9
#define DEFAULT_POINTS 3
#define DEFAULT_SEED 0x5eed5eedu
#define MAX_ROWS 40
#define SMALL_POINT 24  /* write a node's values when it has at most this many */

typedef struct hand {
    ad__session s;
    ad_hand_fn yours;
    void *yours_ud;
    int npoints;
    double *mine;          /* total: your gradient at the current point  */
    double *pts;           /* npoints * total: every point, for the text */
    const double **pp;     /* n */
    double **gp;           /* n */
    /* ad_handcheck_ex */
    int ex;
    const ad_handcheck_opts *ho;
    double *tg, *yg;       /* npoints * total: the tape's and your gradients */
    ad_diagnosis *diag;    /* n: one per input (the compared ones are used) */
} hand;

static int compared(const ad_check_input *in, int i, ad_hand_fn yours)
{
    return in[i].role == AD_INPUT_COMPARE && (yours || in[i].grad);
}

static void describe_point(ad__sb *b, const hand *h, int p)
{
    ad__describe_point(b, &h->s, h->pts + (size_t)p * h->s.off[h->s.n], p);
}

static void mismatch_line(ad__sb *b, const hand *h, const ad_check_entry *e)
{
    char nb[32];
    const ad__session *s = &h->s;
    ad__elem_name(b, "d", ad__input_name(s->in, e->input, nb, sizeof nb), s->in[e->input].shape,
                  e->elem);
    ad__sb_printf(b, ": yours %.10g, tape %.10g", e->other, e->tape);
}

/* The point in full, one line, to the caller's stream (hopts->points). */
static void write_point(FILE *f, const hand *h, int p)
{
    ad__sb b;
    ad__sb_init(&b, h->s.mem);
    describe_point(&b, h, p);
    ad__sb_puts(&b, ": ");
    ad__point_values(&b, &h->s, h->pts + (size_t)p * h->s.off[h->s.n]);
    ad__sb_puts(&b, "\n");
    if (!b.oom && b.buf)
        fwrite(b.buf, 1, b.len, f);
    ad__sb_free(&b);
}

/* Summary line, then the rows grouped under the point they were taken at:
 *   at the given point (W = ..., x = ...):
 *     dW[0][2]: yours -7, tape -8
 * then the worst element. */
static int write_text(ad_check_report *r, const hand *h, const ad_check_opts *o, double atol,
                      double rtol)
{
    ad__sb b;
    ad__sb_init(&b, h->s.mem);
    ad__sb_printf(&b, "hand-derived gradient check: %s -- ", r->failed ? "FAILED" : "passed");
    if (r->failed)
        ad__sb_printf(&b, "%zu of %zu compared elements differ", r->failed, r->checked);
    else
        ad__sb_printf(&b, "%zu compared elements agree", r->checked);
    if (h->npoints > 1)
        ad__sb_printf(&b, " (the given point and %d random points, seed %llu", h->npoints - 1,
                      (unsigned long long)(o && o->seed ? o->seed : DEFAULT_SEED));
    else
        ad__sb_puts(&b, " (the given point");
    ad__sb_printf(&b, ", atol %g, rtol %g)\n", atol, rtol);
    for (int i = 0; h->ex && i < h->s.n; i++)
        if (compared(h->s.in, i, h->yours))
            ad__sb_printf(&b, "  %s\n", h->diag[i].text);

    const size_t max_rows = h->ex && h->ho && h->ho->max_rows ? h->ho->max_rows : MAX_ROWS;
    FILE *pf = h->ex && h->ho ? h->ho->points : NULL;
    int all = o && (o->flags & AD_CHECK_ALL_ROWS);
    size_t shown = 0, hidden = 0;
    int last_point = -1;
    for (size_t i = 0; i < r->nentries; i++) {
        const ad_check_entry *e = &r->entries[i];
        if (!all && e->verdict == AD_ELEM_OK)
            continue;
        if (shown >= max_rows) {
            hidden++;
            continue;
        }
        if (e->point != last_point) {
            ad__sb_puts(&b, "at ");
            describe_point(&b, h, e->point);
            ad__sb_puts(&b, ":\n");
            last_point = e->point;
            if (pf && !ad__point_is_small(&h->s))
                write_point(pf, h, e->point);
        }
        ad__sb_puts(&b, "  ");
        mismatch_line(&b, h, e);
        ad__sb_puts(&b, e->verdict == AD_ELEM_OK ? "  ok\n" : "\n");
        shown++;
    }
    if (hidden)
        ad__sb_printf(&b, "(%zu more rows not shown)\n", hidden);
    if (r->has_worst) {
        ad__sb_puts(&b, "worst: ");
        mismatch_line(&b, h, &r->worst);
        ad__sb_printf(&b, ", abs err %.2g, rel err %.2g, at ", r->worst.abs_err,
                      r->worst.rel_err);
        ad__sb_puts(&b, r->worst.point ? "random point " : "the given point");
        if (r->worst.point)
            ad__sb_printf(&b, "%d", r->worst.point);
        ad__sb_puts(&b, "\n");
    }
    return ad__report_set_text(r, "handcheck", &b);
}

static void hand_free(hand *h)
{
    ad__session *s = &h->s;
    const size_t total = s->off ? s->off[s->n] : 0;
    ad__cmem_free(&s->mem, h->mine, total * sizeof *h->mine);
    ad__cmem_free(&s->mem, h->pts, (size_t)h->npoints * total * sizeof *h->pts);
    ad__cmem_free(&s->mem, h->pp, (size_t)s->n * sizeof *h->pp);
    ad__cmem_free(&s->mem, h->gp, (size_t)s->n * sizeof *h->gp);
    ad__cmem_free(&s->mem, h->tg, (size_t)h->npoints * total * sizeof *h->tg);
    ad__cmem_free(&s->mem, h->yg, (size_t)h->npoints * total * sizeof *h->yg);
    ad__cmem_free(&s->mem, h->diag, (size_t)s->n * sizeof *h->diag);
    ad__session_close(s);
}

/* ad_handcheck_ex: your values must be numbers. The message names the
 * element and the point without allocating. */
static int finite_values(const hand *h, int i, const double *y, int p, ad_check_report *r)
{
    const ad_shape sh = h->s.in[i].shape;
    char nb[32], eb[48], pb[32];
    for (size_t j = 0, sz = ad_shape_size(sh); j < sz; j++) {
        if (isfinite(y[j]))
            continue;
        const char *name = ad__input_name(h->s.in, i, nb, sizeof nb);
        if (sh.ndim == 2)
            snprintf(eb, sizeof eb, "[%zu][%zu]", j / sh.cols, j % sh.cols);
        else if (sh.ndim == 1)
            snprintf(eb, sizeof eb, "[%zu]", j);
        else
            eb[0] = '\0';
        if (p)
            snprintf(pb, sizeof pb, "random point %d", p);
        else
            snprintf(pb, sizeof pb, "the given point");
        return ad__report_fail(r, AD_EMISUSE, "handcheck: your d%s%s is %s at %s", name, eb,
                               isnan(y[j]) ? "nan" : y[j] > 0 ? "inf" : "-inf", pb);
    }
    return AD_OK;
}

static int at_point(hand *h, int p, double atol, double rtol, ad_check_report *r)
{
    ad__session *s = &h->s;
    const size_t total = s->off[s->n];
    double f;
    int st;
    if ((st = ad__session_eval(s, -1, r, &f)) != AD_OK || (st = ad__session_sweep(s, r)) != AD_OK)
        return st;
    memcpy(h->pts + (size_t)p * total, s->cur, total * sizeof *s->cur);
    if (h->ex)
        memcpy(h->tg + (size_t)p * total, s->g, total * sizeof *s->g);
    if (h->yours) {
        memset(h->mine, 0, total * sizeof *h->mine);
        for (int i = 0; i < s->n; i++) {
            h->pp[i] = s->cur + s->off[i];
            h->gp[i] = s->in[i].role == AD_INPUT_COMPARE ? h->mine + s->off[i] : NULL;
        }
        int rc = h->yours(h->pp, h->gp, s->n, h->yours_ud);
        if (rc != 0 && p == 0)
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck: your gradient callback returned %d at the given "
                                   "point",
                                   rc);
        if (rc != 0)
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck: your gradient callback returned %d at random "
                                   "point %d",
                                   rc, p);
    }
    for (int i = 0; i < s->n; i++) {
        if (!compared(s->in, i, h->yours))
            continue;
        const double *yg = h->yours ? h->mine + s->off[i] : s->in[i].grad;
        const size_t sz = ad_shape_size(s->in[i].shape);
        if (h->ex) {
            if ((st = finite_values(h, i, yg, p, r)) != AD_OK)
                return st;
            memcpy(h->yg + (size_t)p * total + s->off[i], yg, sz * sizeof *yg);
        }
        for (size_t j = 0; j < sz; j++) {
            ad_check_entry e = {0};
            e.input = i;
            e.elem = j;
            e.point = p;
            e.tape = s->g[s->off[i] + j];
            e.other = yg[j];
            if ((st = ad__report_add(r, "handcheck", e, atol, rtol, 0)) != AD_OK)
                return st;
        }
    }
    return AD_OK;
}

/* ad_handcheck_ex's own arguments, before anything runs. */
static int check_ex_args(const ad_check_input *in, int n, ad_hand_fn yours,
                         const ad_check_opts *o, const ad_handcheck_opts *ho, int *want,
                         ad_check_report *r)
{
    *want = -2; /* no diagnosis */
    if (!ho)
        return AD_OK;
    if (ho->size < sizeof *ho)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: hopts.size is %zu; set it to sizeof(ad_handcheck_opts) "
                               "(%zu)",
                               ho->size, sizeof *ho);
    if (!in || n < 1)
        return AD_OK; /* the session says why */
    char nb[32], sb[32];
    for (int i = 0; ho->grad_sizes && i < n; i++) {
        const size_t sz = ad_shape_size(in[i].shape);
        if (compared(in, i, yours) && ho->grad_sizes[i] != sz)
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck: your gradient of %s has %zu values "
                                   "(hopts.grad_sizes[%d]) but %s is %s: %zu values",
                                   ad__input_name(in, i, nb, sizeof nb), ho->grad_sizes[i], i,
                                   ad__input_name(in, i, nb, sizeof nb),
                                   ad__shape_name(in[i].shape, sb, sizeof sb), sz);
    }
    if (!ho->diagnose)
        return AD_OK;
    if (strcmp(ho->diagnose, "*") != 0) {
        for (int i = 0; i < n && *want == -2; i++)
            if (!strcmp(ad__input_name(in, i, nb, sizeof nb), ho->diagnose))
                *want = i;
        if (*want == -2)
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck: hopts.diagnose names '%s', which is no input",
                                   ho->diagnose);
        if (!compared(in, *want, yours))
            return ad__report_fail(r, AD_EMISUSE,
                                   "handcheck: hopts.diagnose names '%s', whose gradient is not "
                                   "compared (role %d)",
                                   ho->diagnose, in[*want].role);
    } else {
        *want = -1; /* every failing block */
    }
    if (!yours || (o && o->points < 0))
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: a diagnosis needs your gradient at 2 points or more: "
                               "pass a callback (yours) and opts.points >= 0, not %s",
                               yours ? "opts.points < 0" : "in[i].grad alone");
    return AD_OK;
}

/* The block summaries: counts per input from the entries. */
static void block_counts(hand *h, const ad_check_report *r)
{
    const ad__session *s = &h->s;
    for (size_t i = 0; i < r->nentries; i++) {
        const ad_check_entry *e = &r->entries[i];
        ad_diagnosis *d = &h->diag[e->input];
        d->checked++;
        d->failed += e->verdict == AD_ELEM_FAIL;
        if (e->abs_err > d->worst_abs)
            d->worst_abs = e->abs_err;
    }
    for (int i = 0; i < s->n; i++) {
        ad_diagnosis *d = &h->diag[i];
        char nb[32];
        const char *name = ad__input_name(s->in, i, nb, sizeof nb);
        d->input = i;
        if (d->failed)
            snprintf(d->text, sizeof d->text, "d%s: %zu of %zu elements differ, worst abs err %.2g",
                     name, d->failed, d->checked, d->worst_abs);
        else
            snprintf(d->text, sizeof d->text, "d%s: %zu elements agree", name, d->checked);
    }
}

/* Moves the compared blocks' diagnoses into the report, after the
 * entries in the same block (ad_check_report_free frees both). */
static int attach_diagnoses(hand *h, ad_check_report *r)
{
    const size_t se = sizeof(ad_check_entry);
    size_t nd = 0;
    for (int i = 0; i < h->s.n; i++)
        nd += compared(h->s.in, i, h->yours);
    const size_t units = (nd * sizeof(ad_diagnosis) + se - 1) / se;
    char *p = r->alloc_(r->alloc_ud_, (void *)r->entries, r->entries_cap_ * se,
                        (r->entries_cap_ + units) * se);
    if (!p)
        return ad__report_fail(r, AD_ENOMEM, "handcheck: out of memory for the diagnoses");
    ad_diagnosis *d = (ad_diagnosis *)(void *)(p + r->entries_cap_ * se);
    for (int i = 0, k = 0; i < h->s.n; i++)
        if (compared(h->s.in, i, h->yours))
            d[k++] = h->diag[i];
    r->entries = (const ad_check_entry *)(void *)p;
    r->entries_cap_ += units;
    r->diagnoses = d;
    r->ndiagnoses = nd;
    return AD_OK;
}

_Static_assert(sizeof(ad_check_entry) % _Alignof(ad_diagnosis) == 0,
               "the diagnoses after the entries are aligned");

static int run(ad_check_fn fn, void *ud, const ad_check_input *in, int n, ad_hand_fn yours,
               void *yours_ud, const ad_check_opts *o, const ad_handcheck_opts *ho, int ex,
               ad_check_report *r)
{
    int st = ad__check_opts(r, "handcheck", o, AD__OPT_TOL | AD__OPT_POINTS | AD__OPT_SPREAD);
    if (st != AD_OK)
        return st;
    if (!yours && o && o->points > 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: %d random points need a gradient callback (yours): "
                               "in[i].grad holds only at the given point",
                               o->points);
    int any = 0, want = -2;
    for (int i = 0; in && i < n; i++)
        any |= compared(in, i, yours);
    if (in && n > 0 && !any)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: nothing to compare (set in[i].grad on an input with "
                               "role compare, or pass a callback)");
    if (ex && (st = check_ex_args(in, n, yours, o, ho, &want, r)) != AD_OK)
        return st;
    double atol = DEFAULT_TOL, rtol = DEFAULT_TOL;
    if (o && (o->atol != 0 || o->rtol != 0))
        atol = o->atol, rtol = o->rtol;

    hand h;
    memset(&h, 0, sizeof h);
    h.yours = yours;
    h.yours_ud = yours_ud;
    h.ex = ex;
    h.ho = ho;
    h.npoints = 1;
    if (yours)
        h.npoints += !o || o->points == 0 ? DEFAULT_POINTS : (o->points > 0 ? o->points : 0);
    st = ad__session_open(&h.s, "handcheck", fn, ud, in, n, o, r, 0);
    if (st != AD_OK)
        return st;
    const size_t total = h.s.off[n];
    const int fits = (size_t)h.npoints <= SIZE_MAX / sizeof(double) / total;
    h.mine = ad__cmem_array(&h.s.mem, total, sizeof *h.mine);
    h.pts = fits ? ad__cmem_array(&h.s.mem, (size_t)h.npoints * total, sizeof *h.pts) : NULL;
    h.pp = ad__cmem_array(&h.s.mem, (size_t)n, sizeof *h.pp);
    h.gp = ad__cmem_array(&h.s.mem, (size_t)n, sizeof *h.gp);
    int nomem = !h.mine || !h.pts || !h.pp || !h.gp;
    if (ex && !nomem) {
        h.tg = ad__cmem_array(&h.s.mem, (size_t)h.npoints * total, sizeof *h.tg);
        h.yg = ad__cmem_array(&h.s.mem, (size_t)h.npoints * total, sizeof *h.yg);
        h.diag = ad__cmem_array(&h.s.mem, (size_t)n, sizeof *h.diag);
        nomem = !h.tg || !h.yg || !h.diag;
        if (!nomem) {
            memset(h.yg, 0, (size_t)h.npoints * total * sizeof *h.yg);
            memset(h.diag, 0, (size_t)n * sizeof *h.diag);
        }
    }
    if (nomem) {
        st = ad__report_fail(r, AD_ENOMEM, "handcheck: out of memory for %d points of %zu values",
                             h.npoints, total);
        goto done;
    }
    uint64_t rng = o && o->seed ? o->seed : DEFAULT_SEED;
    for (int p = 0; p < h.npoints && st == AD_OK; p++) {
        if (p > 0)
            ad__session_random_point(&h.s, o, &rng);
        st = at_point(&h, p, atol, rtol, r);
    }
    if (st == AD_OK && ex) {
        block_counts(&h, r);
        if (want >= 0 && !h.diag[want].failed)
            st = ad__report_fail(r, AD_EMISUSE,
                                 "handcheck: hopts.diagnose names '%s', but its gradient passed "
                                 "(%zu elements agree): there is nothing to diagnose",
                                 ho->diagnose, h.diag[want].checked);
    }
    if (st == AD_OK && ex && want != -2) {
        unsigned char wb[64], *wp = (size_t)n <= sizeof wb ? wb : NULL;
        if (!wp && !(wp = ad__cmem_alloc(&h.s.mem, (size_t)n)))
            st = ad__report_fail(r, AD_ENOMEM, "handcheck: out of memory for the diagnosis");
        for (int i = 0; st == AD_OK && i < n; i++)
            wp[i] = compared(in, i, yours) && h.diag[i].failed && (want < 0 || want == i);
        if (st == AD_OK) {
            ad__diag_in d = {&h.s, h.npoints, h.pts, h.tg, h.yg, atol, rtol, wp};
            st = ad__diagnose(&d, h.diag, r);
        }
        if (wp && wp != wb)
            ad__cmem_free(&h.s.mem, wp, (size_t)n);
    }
    if (st == AD_OK)
        st = write_text(r, &h, o, atol, rtol);
    if (st == AD_OK && ex)
        st = attach_diagnoses(&h, r);
done:
    hand_free(&h);
    if (st != AD_OK) {
        r->passed = 0;
        return r->status = st;
    }
    r->passed = r->failed == 0;
    return AD_OK;
}

int ad_handcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n, ad_hand_fn yours,
                 void *yours_ud, const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    ad__report_init(r, ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL));
    return run(fn, ud, in, n, yours, yours_ud, o, NULL, 0, r);
}

int ad_handcheck_ex(ad_check_fn fn, void *ud, const ad_check_input *in, int n, ad_hand_fn yours,
                    void *yours_ud, const ad_check_opts *o, const ad_handcheck_opts *ho,
                    ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    ad__report_init_ix(r, ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL));
    r->diagnoses = NULL;
    r->ndiagnoses = 0;
    return run(fn, ud, in, n, yours, yours_ud, o, ho, 1, r);
}

/* ---- one node against an expected array ---- */

int ad_check_grad(const ad_tape *t, ad_node node, const double *expected,
                  const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    ad__cmem mem = ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL);
    ad__report_init(r, mem);
    if (ad__check_opts(r, "check_grad", o, AD__OPT_TOL) != AD_OK)
        return AD_EMISUSE;
    if (!t || !expected)
        return ad__report_fail(r, AD_EMISUSE, "check_grad: %s is NULL", t ? "expected" : "tape");
    if (ad_tape_status(t) != AD_OK)
        return ad__report_fail(r, AD_EMISUSE, "check_grad: the tape holds an error: %s",
                               ad_tape_errmsg(t));
    size_t idx = ad_node_index(t, node);
    if (!idx)
        return ad__report_fail(r, AD_EMISUSE,
                               "check_grad: the node is nil, stale or of another tape");
    char nb[32];
    const char *name = ad_node_name(t, node);
    if (!name) {
        snprintf(nb, sizeof nb, "n%zu", idx);
        name = nb;
    }
    const double *g = ad_grad(t, node);
    if (!g)
        return ad__report_fail(r, AD_EMISUSE,
                               "check_grad: %s has no gradient (it depends on no variable)", name);
    double atol = DEFAULT_TOL, rtol = DEFAULT_TOL;
    if (o && (o->atol != 0 || o->rtol != 0))
        atol = o->atol, rtol = o->rtol;
    ad_shape sh = ad_node_shape(t, node);
    const size_t sz = ad_shape_size(sh);
    for (size_t j = 0; j < sz; j++) {
        ad_check_entry e = {0};
        e.elem = j;
        e.tape = g[j];
        e.other = expected[j];
        if (ad__report_add(r, "check_grad", e, atol, rtol, 0) != AD_OK)
            return AD_ENOMEM;
    }
    ad__sb b;
    ad__sb_init(&b, mem);
    ad__sb_printf(&b, "gradient of %s: %s -- ", name, r->failed ? "FAILED" : "passed");
    if (r->failed)
        ad__sb_printf(&b, "%zu of %zu elements differ", r->failed, r->checked);
    else
        ad__sb_printf(&b, "%zu elements agree", r->checked);
    ad__sb_printf(&b, " (atol %g, rtol %g)\n", atol, rtol);
    size_t shown = 0;
    int all = o && (o->flags & AD_CHECK_ALL_ROWS);
    for (size_t j = 0; j < sz; j++) {
        const ad_check_entry *e = &r->entries[j];
        if ((!all && e->verdict == AD_ELEM_OK) || shown >= MAX_ROWS)
            continue;
        ad__elem_name(&b, "d", name, sh, j);
        ad__sb_printf(&b, ": expected %.10g, tape %.10g%s\n", e->other, e->tape,
                      e->verdict == AD_ELEM_OK ? "  ok" : "");
        shown++;
    }
    if (r->failed > shown)
        ad__sb_printf(&b, "(%zu more mismatches not shown)\n", r->failed - shown);
    if (sz <= SMALL_POINT) {
        ad__sb_puts(&b, "tape:     ");
        ad__sb_values(&b, g, sh);
        ad__sb_puts(&b, "\nexpected: ");
        ad__sb_values(&b, expected, sh);
        ad__sb_puts(&b, "\n");
    }
    int st = ad__report_set_text(r, "check_grad", &b);
    if (st != AD_OK)
        return st;
    r->passed = r->failed == 0;
    return AD_OK;
}
