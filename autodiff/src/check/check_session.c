/* check_session.c -- the function under check, recorded once on its own
 * tape and re-evaluated with ad_set_value + ad_replay (no re-recording). */
#include "check_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *ad__input_name(const ad_check_input *in, int i, char *buf, size_t cap)
{
    if (in[i].name && in[i].name[0])
        return in[i].name;
    snprintf(buf, cap, "in%d", i);
    return buf;
}

void ad__session_close(ad__session *s)
{
    size_t total = s->off ? s->off[s->n] : 0;
    ad_tape_free(s->t);
    ad__cmem_free(&s->mem, s->leaf, (size_t)s->n * sizeof *s->leaf);
    ad__cmem_free(&s->mem, s->cur, total * sizeof *s->cur);
    ad__cmem_free(&s->mem, s->g, total * sizeof *s->g);
    ad__cmem_free(&s->mem, s->off, ((size_t)s->n + 1) * sizeof *s->off);
    s->t = NULL;
    s->leaf = NULL;
    s->cur = s->g = NULL;
    s->off = NULL;
}

static int check_inputs(const char *who, const ad_check_input *in, int n, ad_check_report *r)
{
    if (!in || n < 1)
        return ad__report_fail(r, AD_EMISUSE, "%s: no inputs (in is NULL or n is %d)", who, n);
    for (int i = 0; i < n; i++) {
        char nb[32];
        const char *name = ad__input_name(in, i, nb, sizeof nb);
        if (!in[i].value)
            return ad__report_fail(r, AD_EMISUSE, "%s: input %d (%s) has no value", who, i, name);
        if (!ad__shape_ok(in[i].shape))
            return ad__report_fail(r, AD_EMISUSE,
                                   "%s: input %d (%s) has an invalid shape (ndim %d, %ux%u)", who,
                                   i, name, in[i].shape.ndim, (unsigned)in[i].shape.rows,
                                   (unsigned)in[i].shape.cols);
        if (in[i].role < AD_INPUT_COMPARE || in[i].role > AD_INPUT_CONSTANT)
            return ad__report_fail(r, AD_EMISUSE, "%s: input %d (%s) has an unknown role %d", who,
                                   i, name, in[i].role);
    }
    return AD_OK;
}

static int tape_error(ad__session *s, ad_check_report *r, const char *what)
{
    int st = ad_tape_status(s->t);
    ad__report_fail(r, st, "%s: %s failed: %s", s->who, what, ad_tape_errmsg(s->t));
    ad__session_close(s);
    return st;
}

int ad__session_open(ad__session *s, const char *who, ad_check_fn fn, void *ud,
                     const ad_check_input *in, int n, const ad_check_opts *o,
                     ad_check_report *r, unsigned flags)
{
    memset(s, 0, sizeof *s);
    s->who = who;
    s->mem = ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL);
    if (!fn)
        return ad__report_fail(r, AD_EMISUSE, "%s: fn is NULL", who);
    int st = check_inputs(who, in, n, r);
    if (st != AD_OK)
        return st;
    s->in = in;
    s->n = n;

    s->off = ad__cmem_array(&s->mem, (size_t)n + 1, sizeof *s->off);
    s->leaf = ad__cmem_array(&s->mem, (size_t)n, sizeof *s->leaf);
    if (!s->off || !s->leaf) {
        if (s->off) /* close reads off[n]: make it valid */
            s->off[n] = 0;
        ad__session_close(s);
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory", who);
    }
    s->off[0] = 0;
    for (int i = 0; i < n; i++)
        s->off[i + 1] = s->off[i] + ad_shape_size(in[i].shape);
    s->cur = ad__cmem_array(&s->mem, s->off[n], sizeof *s->cur);
    s->g = ad__cmem_array(&s->mem, s->off[n], sizeof *s->g);
    if (!s->cur || !s->g) {
        size_t total = s->off[n];
        ad__session_close(s);
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory for %zu input values", who,
                               total);
    }
    for (int i = 0; i < n; i++)
        memcpy(s->cur + s->off[i], in[i].value, ad_shape_size(in[i].shape) * sizeof(double));

    ad_tape_opts topts = {s->mem.fn, s->mem.ud, o ? o->registry : NULL};
    s->t = ad_tape_new(&topts);
    if (!s->t) {
        ad__session_close(s);
        return ad__report_fail(r, AD_ENOMEM, "%s: out of memory creating the tape", who);
    }
    for (int i = 0; i < n; i++) {
        const double *v = s->cur + s->off[i];
        s->leaf[i] = in[i].role == AD_INPUT_CONSTANT ? ad_constant(s->t, in[i].shape, v)
                                                     : ad_variable(s->t, in[i].shape, v);
    }
    if (ad_tape_status(s->t) != AD_OK)
        return tape_error(s, r, "recording the inputs");
    for (int i = 0; i < n; i++) { /* for the diagnoses; decoration only */
        char nb[32];
        (void)ad_named(s->t, s->leaf[i], ad__input_name(in, i, nb, sizeof nb));
    }

    s->out = fn(s->t, s->leaf, n, ud);
    if (ad_tape_status(s->t) != AD_OK)
        return tape_error(s, r, "recording the function");
    if (ad_node_is_nil(s->out)) {
        ad__session_close(s);
        return ad__report_fail(r, AD_EMISUSE, "%s: the function returned the nil node", who);
    }
    ad_shape os = ad_node_shape(s->t, s->out);
    if (os.ndim < 0) {
        ad__session_close(s);
        return ad__report_fail(r, AD_EMISUSE,
                               "%s: the function returned a node that is not on the check's tape",
                               who);
    }
    s->m = ad_shape_size(os);
    if (os.ndim != 0 && !(flags & AD__SESSION_ANY_SHAPE)) {
        char sb[32];
        ad__session_close(s);
        return ad__report_fail(r, AD_EMISUSE, "%s: the function's output is %s, not a scalar",
                               who, ad__shape_name(os, sb, sizeof sb));
    }
    return AD_OK;
}

int ad__session_replay(ad__session *s, int i, ad_check_report *r)
{
    for (int k = 0; k < s->n; k++) {
        if ((i >= 0 && k != i) || s->in[k].role == AD_INPUT_CONSTANT)
            continue;
        if (ad_set_value(s->t, s->leaf[k], s->cur + s->off[k]) != AD_OK)
            return ad__report_fail(r, AD_EMISUSE, "%s: could not set input %d", s->who, k);
    }
    int st = ad_replay(s->t);
    if (st != AD_OK)
        return ad__report_fail(r, st, "%s: replay failed: %s", s->who, ad_tape_errmsg(s->t));
    return AD_OK;
}

int ad__session_eval(ad__session *s, int i, ad_check_report *r, double *f)
{
    int st = ad__session_replay(s, i, r);
    if (st != AD_OK)
        return st;
    *f = ad_scalar_value(s->t, s->out);
    return AD_OK;
}

void ad__session_random_point(ad__session *s, const ad_check_opts *o, uint64_t *rng)
{
    const double spread = o && o->spread > 0 ? o->spread : 1.0;
    for (int i = 0; i < s->n; i++) {
        if (s->in[i].role == AD_INPUT_CONSTANT)
            continue;
        for (size_t j = 0, sz = ad_shape_size(s->in[i].shape); j < sz; j++) {
            const double x = s->in[i].value[j];
            s->cur[s->off[i] + j] = x + spread * ad__rng_sym(rng) * fmax(1.0, fabs(x));
        }
    }
}

#define SMALL_POINT 24 /* write a point's values when it has at most this many */

void ad__point_values(ad__sb *b, const ad__session *s, const double *x)
{
    char nb[32];
    for (int i = 0; i < s->n; i++) {
        ad__sb_printf(b, "%s%s = ", i ? ", " : "", ad__input_name(s->in, i, nb, sizeof nb));
        ad__sb_values(b, x + s->off[i], s->in[i].shape);
    }
}

void ad__describe_point(ad__sb *b, const ad__session *s, const double *x, int p)
{
    if (p > 0)
        ad__sb_printf(b, "random point %d", p);
    else
        ad__sb_puts(b, "the given point");
    if (s->off[s->n] > SMALL_POINT)
        return;
    ad__sb_puts(b, " (");
    ad__point_values(b, s, x);
    ad__sb_puts(b, ")");
}

/* ---- kinks ---- */

static int is_kink_op(const char *name, const ad_check_opts *o)
{
    if (!strcmp(name, "relu") || !strcmp(name, "abs"))
        return 1;
    if (o && o->kink_ops)
        for (const char *const *k = o->kink_ops; *k; k++)
            if (!strcmp(name, *k))
                return 1;
    return 0;
}

static signed char side_of(double v) { return (signed char)((v > 0) - (v < 0)); }

void ad__kinks_free(ad__kinks *k, const ad__cmem *m)
{
    ad__cmem_free(m, k->node, k->n * sizeof *k->node);
    if (k->off) {
        ad__cmem_free(m, k->side, k->off[k->n] * sizeof *k->side);
        ad__cmem_free(m, k->off, (k->n + 1) * sizeof *k->off);
    }
    memset(k, 0, sizeof *k);
}

void ad__kinks_note(ad__kinks *k, const ad_tape *t)
{
    for (size_t i = 0; i < k->n; i++) {
        const double *v = ad_value(t, k->node[i]);
        for (size_t j = 0, sz = k->off[i + 1] - k->off[i]; j < sz; j++)
            k->side[k->off[i] + j] = side_of(v[j]);
    }
}

int ad__kinks_find(ad__kinks *k, const ad__session *s, const ad_check_opts *o)
{
    memset(k, 0, sizeof *k);
    size_t len = ad_tape_len(s->t), n = 0, total = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 1; i < len; i++) {
            ad_node nd = ad_tape_node(s->t, i), in[AD_MAX_ARITY];
            const ad_opdef *def = ad_node_op(s->t, nd);
            if (!def || !def->name || !is_kink_op(def->name, o))
                continue;
            if (ad_node_inputs(s->t, nd, in) < 1)
                continue;
            size_t sz = ad_shape_size(ad_node_shape(s->t, in[0]));
            if (pass == 1) {
                k->node[n] = in[0];
                k->off[n] = total;
            }
            n++;
            total += sz;
        }
        if (pass == 0) {
            if (n == 0)
                return AD_OK;
            k->node = ad__cmem_array(&s->mem, n, sizeof *k->node);
            k->off = ad__cmem_array(&s->mem, n + 1, sizeof *k->off);
            k->side = ad__cmem_array(&s->mem, total, sizeof *k->side);
            k->n = n;
            if (!k->node || !k->off || !k->side) {
                ad__cmem_free(&s->mem, k->node, n * sizeof *k->node);
                ad__cmem_free(&s->mem, k->off, (n + 1) * sizeof *k->off);
                ad__cmem_free(&s->mem, k->side, total * sizeof *k->side);
                memset(k, 0, sizeof *k);
                return AD_ENOMEM;
            }
            k->off[n] = total;
            n = total = 0;
        }
    }
    ad__kinks_note(k, s->t);
    return AD_OK;
}

int ad__kinks_crossed(const ad__kinks *k, const ad_tape *t)
{
    for (size_t i = 0; i < k->n; i++) {
        const double *v = ad_value(t, k->node[i]);
        for (size_t j = 0, sz = k->off[i + 1] - k->off[i]; j < sz; j++)
            if (side_of(v[j]) != k->side[k->off[i] + j])
                return 1;
    }
    return 0;
}

int ad__session_sweep(ad__session *s, ad_check_report *r)
{
    int st = ad_backward(s->t, s->out);
    if (st != AD_OK)
        return ad__report_fail(r, st, "%s: the reverse sweep failed: %s", s->who,
                               ad_tape_errmsg(s->t));
    for (int k = 0; k < s->n; k++) {
        size_t sz = s->off[k + 1] - s->off[k];
        const double *gk = s->in[k].role == AD_INPUT_CONSTANT ? NULL : ad_grad(s->t, s->leaf[k]);
        if (gk)
            memcpy(s->g + s->off[k], gk, sz * sizeof *gk);
        else
            memset(s->g + s->off[k], 0, sz * sizeof *s->g);
    }
    return AD_OK;
}

int ad__point_is_small(const ad__session *s) { return s->off[s->n] <= SMALL_POINT; }
