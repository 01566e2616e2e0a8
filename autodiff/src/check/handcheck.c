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

    int all = o && (o->flags & AD_CHECK_ALL_ROWS);
    size_t shown = 0, hidden = 0;
    int last_point = -1;
    for (size_t i = 0; i < r->nentries; i++) {
        const ad_check_entry *e = &r->entries[i];
        if (!all && e->verdict == AD_ELEM_OK)
            continue;
        if (shown >= MAX_ROWS) {
            hidden++;
            continue;
        }
        if (e->point != last_point) {
            ad__sb_puts(&b, "at ");
            describe_point(&b, h, e->point);
            ad__sb_puts(&b, ":\n");
            last_point = e->point;
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
    ad__session_close(s);
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
        for (size_t j = 0, sz = ad_shape_size(s->in[i].shape); j < sz; j++) {
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

int ad_handcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n, ad_hand_fn yours,
                 void *yours_ud, const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    ad__report_init(r, ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL));
    int st = ad__check_opts(r, "handcheck", o, AD__OPT_TOL | AD__OPT_POINTS | AD__OPT_SPREAD);
    if (st != AD_OK)
        return st;
    if (!yours && o && o->points > 0)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: %d random points need a gradient callback (yours): "
                               "in[i].grad holds only at the given point",
                               o->points);
    int any = 0;
    for (int i = 0; in && i < n; i++)
        any |= compared(in, i, yours);
    if (in && n > 0 && !any)
        return ad__report_fail(r, AD_EMISUSE,
                               "handcheck: nothing to compare (set in[i].grad on an input with "
                               "role compare, or pass a callback)");
    double atol = DEFAULT_TOL, rtol = DEFAULT_TOL;
    if (o && (o->atol != 0 || o->rtol != 0))
        atol = o->atol, rtol = o->rtol;

    hand h;
    memset(&h, 0, sizeof h);
    h.yours = yours;
    h.yours_ud = yours_ud;
    h.npoints = 1;
    if (yours)
        h.npoints += !o || o->points == 0 ? DEFAULT_POINTS : (o->points > 0 ? o->points : 0);
    st = ad__session_open(&h.s, "handcheck", fn, ud, in, n, o, r, 0);
    if (st != AD_OK)
        return st;
    const size_t total = h.s.off[n];
    h.mine = ad__cmem_array(&h.s.mem, total, sizeof *h.mine);
    h.pts = (size_t)h.npoints > SIZE_MAX / sizeof(double) / total
                ? NULL
                : ad__cmem_array(&h.s.mem, (size_t)h.npoints * total, sizeof *h.pts);
    h.pp = ad__cmem_array(&h.s.mem, (size_t)n, sizeof *h.pp);
    h.gp = ad__cmem_array(&h.s.mem, (size_t)n, sizeof *h.gp);
    if (!h.mine || !h.pts || !h.pp || !h.gp) {
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
    if (st == AD_OK)
        st = write_text(r, &h, o, atol, rtol);
done:
    hand_free(&h);
    if (st != AD_OK) {
        r->passed = 0;
        return r->status = st;
    }
    r->passed = r->failed == 0;
    return AD_OK;
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
