/* gradcheck.c -- the tape's gradient against central finite differences.
 *
 *   numeric_j = (f(x + h_j e_j) - f(x - h_j e_j)) / (2 h_j),
 *   h_j = step * max(1, |x_j|),  step = cbrt(DBL_EPSILON) by default
 *
 * (the error of a central difference is O(h^2) truncation + O(eps/h)
 * rounding; cbrt(eps) balances the two). The function is recorded once;
 * each evaluation is ad_set_value + ad_replay.
 *
 * Kinks: before the differences, the inputs of every relu/abs node (and
 * opts->kink_ops) are read and the side of 0 each element lies on is
 * kept. An evaluation at x +- h that puts any of them on another side (or
 * on 0) has crossed a kink; a mismatch there is reported as "at a kink". */
#include "check_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define DEFAULT_ATOL 1e-6
#define DEFAULT_RTOL 1e-5
#define DEFAULT_SEED 0x5eed5eedu
#define SMALL_TABLE 24   /* list every element when there are at most this many */
#define MAX_ROWS 40      /* otherwise at most this many failures */

/* ---- text ---- */

static void row(ad__sb *b, int width, const char *name, const ad_check_entry *e)
{
    static const char *const mark[] = {"", "  FAILED", "  at a kink"};
    ad__sb_printf(b, "%-*s %16.10g %16.10g %11.2g %11.2g%s\n", width, name, e->tape, e->other,
                  e->abs_err, e->rel_err, mark[e->verdict]);
}

static void entry_name(ad__sb *b, const ad__session *s, const ad_check_entry *e)
{
    char nb[32];
    if (e->input < 0) {
        ad__sb_printf(b, "direction %zu", e->elem + 1);
        return;
    }
    ad__elem_name(b, "d", ad__input_name(s->in, e->input, nb, sizeof nb), s->in[e->input].shape,
                  e->elem);
}

static int write_text(ad_check_report *r, const ad__session *s, const ad_check_opts *o,
                      double step, double atol, double rtol)
{
    ad__sb b, nm;
    ad__sb_init(&b, s->mem);
    ad__sb_init(&nm, s->mem);
    int dirs = o ? o->directions : 0;
    const char *what = dirs > 0 ? "directions" : "elements";

    ad__sb_printf(&b, "gradient check: %s -- ", r->failed ? "FAILED" : "passed");
    if (r->failed)
        ad__sb_printf(&b, "%zu of %zu %s differ", r->failed, r->checked, what);
    else if (r->kinks)
        ad__sb_printf(&b, "%zu of %zu %s agree", r->checked - r->kinks, r->checked, what);
    else
        ad__sb_printf(&b, "%zu %s agree", r->checked, what);
    if (r->kinks)
        ad__sb_printf(&b, ", %zu at a kink", r->kinks);
    if (o && o->step > 0)
        ad__sb_printf(&b, " (h = %g*max(1,|x|)", step);
    else
        ad__sb_puts(&b, " (h = cbrt(eps)*max(1,|x|)");
    if (dirs > 0)
        ad__sb_printf(&b, ", %d random directions, seed %llu", dirs,
                      (unsigned long long)(o->seed ? o->seed : DEFAULT_SEED));
    ad__sb_printf(&b, ", atol %g, rtol %g)\n", atol, rtol);

    /* Which rows: all when small (or asked), else failures and kinks. */
    int all = r->nentries <= SMALL_TABLE || (o && (o->flags & AD_CHECK_ALL_ROWS));
    int width = 8;
    for (size_t i = 0; i < r->nentries; i++) {
        nm.len = 0;
        entry_name(&nm, s, &r->entries[i]);
        if ((all || r->entries[i].verdict != AD_ELEM_OK) && (int)nm.len > width)
            width = (int)nm.len;
    }
    ad__sb_printf(&b, "%-*s %16s %16s %11s %11s\n", width, dirs > 0 ? "direction" : "element",
                  "analytic", "numeric", "abs err", "rel err");
    size_t shown = 0, hidden = 0;
    for (size_t i = 0; i < r->nentries; i++) {
        const ad_check_entry *e = &r->entries[i];
        if (!all && (e->verdict == AD_ELEM_OK || shown >= MAX_ROWS)) {
            hidden++;
            continue;
        }
        nm.len = 0;
        entry_name(&nm, s, e);
        row(&b, width, nm.buf ? nm.buf : "", e);
        shown++;
    }
    if (hidden)
        ad__sb_printf(&b, "(%zu more rows not shown%s)\n", hidden,
                      all ? "" : "; AD_CHECK_ALL_ROWS lists them");
    if (r->has_worst) {
        nm.len = 0;
        entry_name(&nm, s, &r->worst);
        ad__sb_printf(&b, "worst: %s: analytic %.10g, numeric %.10g, abs err %.2g, rel err %.2g\n",
                      nm.buf ? nm.buf : "", r->worst.tape, r->worst.other, r->worst.abs_err,
                      r->worst.rel_err);
    }
    int oom = nm.oom;
    ad__sb_free(&nm);
    if (oom)
        b.oom = 1;
    return ad__report_set_text(r, "gradcheck", &b);
}

/* ---- the two modes ---- */

static int by_element(ad__session *s, const ad__kinks *k, double step, double atol, double rtol,
                      ad_check_report *r)
{
    for (int i = 0; i < s->n; i++) {
        if (s->in[i].role != AD_INPUT_COMPARE)
            continue;
        for (size_t j = 0, sz = ad_shape_size(s->in[i].shape); j < sz; j++) {
            double *xj = s->cur + s->off[i] + j;
            const double x = *xj, h = step * fmax(1.0, fabs(x));
            const double xp = x + h, xm = x - h;
            double fp, fm;
            int st, crossed;
            *xj = xp;
            if ((st = ad__session_eval(s, i, r, &fp)) != AD_OK)
                return st;
            crossed = ad__kinks_crossed(k, s->t);
            *xj = xm;
            if ((st = ad__session_eval(s, i, r, &fm)) != AD_OK)
                return st;
            crossed |= ad__kinks_crossed(k, s->t);
            *xj = x;
            ad_check_entry e = {0};
            e.input = i;
            e.elem = j;
            e.tape = s->g[s->off[i] + j];
            e.other = (fp - fm) / (xp - xm); /* the step as represented */
            if ((st = ad__report_add(r, "gradcheck", e, atol, rtol, crossed)) != AD_OK)
                return st;
        }
        /* put the input back before moving the next one */
        double f;
        int st = ad__session_eval(s, i, r, &f);
        if (st != AD_OK)
            return st;
    }
    return AD_OK;
}

static int by_direction(ad__session *s, const ad__kinks *k, const ad_check_opts *o, double step,
                        double atol, double rtol, ad_check_report *r)
{
    const size_t total = s->off[s->n];
    double *x0 = ad__cmem_array(&s->mem, total, sizeof *x0);
    double *v = ad__cmem_array(&s->mem, total, sizeof *v);
    int st = AD_OK;
    if (!x0 || !v) {
        st = ad__report_fail(r, AD_ENOMEM, "gradcheck: out of memory for the directions");
        goto done;
    }
    memcpy(x0, s->cur, total * sizeof *x0);
    double xmax = 0;
    for (int i = 0; i < s->n; i++)
        if (s->in[i].role == AD_INPUT_COMPARE)
            for (size_t j = s->off[i]; j < s->off[i + 1]; j++)
                xmax = fmax(xmax, fabs(x0[j]));
    const double h = step * fmax(1.0, xmax);
    uint64_t rng = o->seed ? o->seed : DEFAULT_SEED;

    for (int d = 0; d < o->directions; d++) {
        double gv = 0;
        memset(v, 0, total * sizeof *v);
        for (int i = 0; i < s->n; i++)
            if (s->in[i].role == AD_INPUT_COMPARE)
                for (size_t j = s->off[i]; j < s->off[i + 1]; j++) {
                    v[j] = ad__rng_sym(&rng);
                    gv += s->g[j] * v[j]; /* g^T v */
                }
        double fp, fm;
        int crossed;
        for (size_t j = 0; j < total; j++)
            s->cur[j] = x0[j] + h * v[j];
        if ((st = ad__session_eval(s, -1, r, &fp)) != AD_OK)
            goto done;
        crossed = ad__kinks_crossed(k, s->t);
        for (size_t j = 0; j < total; j++)
            s->cur[j] = x0[j] - h * v[j];
        if ((st = ad__session_eval(s, -1, r, &fm)) != AD_OK)
            goto done;
        crossed |= ad__kinks_crossed(k, s->t);
        ad_check_entry e = {0};
        e.input = -1;
        e.elem = (size_t)d;
        e.tape = gv;
        e.other = (fp - fm) / (2 * h);
        if ((st = ad__report_add(r, "gradcheck", e, atol, rtol, crossed)) != AD_OK)
            goto done;
    }
    memcpy(s->cur, x0, total * sizeof *x0);
done:
    ad__cmem_free(&s->mem, x0, total * sizeof *x0);
    ad__cmem_free(&s->mem, v, total * sizeof *v);
    return st;
}

int ad_gradcheck(ad_check_fn fn, void *ud, const ad_check_input *in, int n,
                 const ad_check_opts *o, ad_check_report *r)
{
    if (!r)
        return AD_EMISUSE;
    ad__report_init(r, ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL));
    int st = ad__check_opts(r, "gradcheck", o, AD__OPT_TOL | AD__OPT_STEP | AD__OPT_DIRECTIONS);
    if (st != AD_OK)
        return st;
    int compared = 0;
    for (int i = 0; in && i < n; i++)
        compared |= in[i].role == AD_INPUT_COMPARE;
    if (in && n > 0 && !compared)
        return ad__report_fail(r, AD_EMISUSE,
                               "gradcheck: no input to compare (every role is skip or constant)");

    const double step = o && o->step > 0 ? o->step : cbrt(DBL_EPSILON);
    double atol = DEFAULT_ATOL, rtol = DEFAULT_RTOL;
    if (o && (o->atol != 0 || o->rtol != 0))
        atol = o->atol, rtol = o->rtol;

    ad__session s;
    st = ad__session_open(&s, "gradcheck", fn, ud, in, n, o, r, 0);
    if (st != AD_OK)
        return st;
    ad__kinks k;
    if ((st = ad__session_sweep(&s, r)) != AD_OK)
        goto done;
    if (ad__kinks_find(&k, &s, o) != AD_OK) {
        st = ad__report_fail(r, AD_ENOMEM, "gradcheck: out of memory for the kink table");
        goto done;
    }
    if (o && o->directions > 0)
        st = by_direction(&s, &k, o, step, atol, rtol, r);
    else
        st = by_element(&s, &k, step, atol, rtol, r);
    ad__kinks_free(&k, &s.mem);
    if (st == AD_OK)
        st = write_text(r, &s, o, step, atol, rtol);
done:
    ad__session_close(&s);
    if (st != AD_OK) {
        r->passed = 0;
        return r->status = st;
    }
    r->passed = r->failed == 0;
    return AD_OK;
}
