/* diagnose.c -- why a hand-derived gradient block differs from the tape's.
 *
 * Each hypothesis is a prediction of your block, computed from the tape:
 *   block kinds  from the gradients already swept at every point: a
 *                constant factor (least squares over every element of
 *                every point), the block transposed, another input's
 *                gradient;
 *   node kinds   from a reverse sweep of our own over the check's tape,
 *                calling each op's vjp (as the trace does) and changing it
 *                at ONE node: an elementwise local derivative left out or
 *                applied twice, W used where W^T belongs in a matvec, one
 *                consumer's contribution (a path) dropped.
 * A hypothesis is kept only if its prediction matches your value on every
 * element of the block at every point to the check's tolerance: numbers
 * prove it, nothing is guessed. */
#include "check_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_NODES 4096 /* longer tapes: block hypotheses only (see check.h) */

typedef struct hyp {
    int kind;   /* a node kind of AD_DIAG_* */
    size_t node;
    int slot;
} hyp;

/* Our own reverse sweep over the session's tape. */
typedef struct msweep {
    const ad_tape *t;
    ad__cmem mem;
    size_t oi;              /* the output's index                          */
    size_t *off;            /* oi + 2: node i's adjoint at adj + off[i]      */
    unsigned char *live;    /* oi + 1: the sweep visits it (takes a gradient) */
    uint32_t *uses;         /* oi + 1: live consumers, with multiplicity     */
    double *adj;            /* off[oi + 1]                                   */
    double *scr;            /* (AD_MAX_ARITY + 4) * maxsz scratch            */
    size_t maxsz;
} msweep;

static void ms_free(msweep *m)
{
    const size_t len = m->oi + 1;
    if (m->off)
        ad__cmem_free(&m->mem, m->adj, m->off[len] * sizeof *m->adj);
    ad__cmem_free(&m->mem, m->off, (len + 1) * sizeof *m->off);
    ad__cmem_free(&m->mem, m->live, len * sizeof *m->live);
    ad__cmem_free(&m->mem, m->uses, len * sizeof *m->uses);
    ad__cmem_free(&m->mem, m->scr, (AD_MAX_ARITY + 4) * m->maxsz * sizeof *m->scr);
}

static int ms_init(msweep *m, const ad__session *s)
{
    memset(m, 0, sizeof *m);
    m->t = s->t;
    m->mem = s->mem;
    m->oi = ad_node_index(s->t, s->out);
    const size_t len = m->oi + 1;
    m->off = ad__cmem_array(&m->mem, len + 1, sizeof *m->off);
    m->live = ad__cmem_array(&m->mem, len, sizeof *m->live);
    m->uses = ad__cmem_array(&m->mem, len, sizeof *m->uses);
    if (!m->off || !m->live || !m->uses) {
        if (m->off)
            m->off[len] = 0;
        return AD_ENOMEM;
    }
    memset(m->live, 0, len);
    memset(m->uses, 0, len * sizeof *m->uses);
    m->off[0] = 0;
    m->maxsz = 1;
    for (size_t i = 0; i < len; i++) {
        size_t sz = i ? ad_shape_size(ad_node_shape(m->t, ad_tape_node(m->t, i))) : 0;
        m->off[i + 1] = m->off[i] + sz;
        m->maxsz = sz > m->maxsz ? sz : m->maxsz;
    }
    m->live[m->oi] = 1;
    for (size_t i = m->oi; i > 0; i--) { /* inputs come before their users */
        if (!m->live[i])
            continue;
        ad_node in[AD_MAX_ARITY];
        int nin = ad_node_inputs(m->t, ad_tape_node(m->t, i), in);
        for (int k = 0; k < nin; k++)
            if (ad_node_requires_grad(m->t, in[k])) {
                size_t j = ad_node_index(m->t, in[k]);
                m->live[j] = 1;
                m->uses[j]++;
            }
    }
    m->adj = ad__cmem_array(&m->mem, m->off[len] ? m->off[len] : 1, sizeof *m->adj);
    m->scr = ad__cmem_array(&m->mem, (AD_MAX_ARITY + 4) * m->maxsz, sizeof *m->scr);
    if (!m->adj || !m->scr)
        return AD_ENOMEM;
    return AD_OK;
}

static int op_is(const ad_tape *t, ad_node nd, const char *name)
{
    const ad_opdef *def = ad_node_op(t, nd);
    return def && !strcmp(def->name, name);
}

/* W^T of operand 0 into buf when the node is a product by a square
 * matrix W (matvec, matvec_t, matmul, affine); else 0. */
static int square_w(const ad_tape *t, ad_node nd, double *buf)
{
    if (!op_is(t, nd, "matvec") && !op_is(t, nd, "matvec_t") && !op_is(t, nd, "matmul") &&
        !op_is(t, nd, "affine"))
        return 0;
    ad_node in[AD_MAX_ARITY];
    int nin = ad_node_inputs(t, nd, in);
    ad_shape ws = ad_node_shape(t, in[0]);
    if (nin < 2 || ws.ndim != 2 || ws.rows != ws.cols || ws.rows < 2)
        return 0;
    if (op_is(t, nd, "affine") && ad_node_shape(t, in[1]).ndim != 1)
        return 0; /* the batch form multiplies by W^T already */
    if (buf) {
        const double *w = ad_value(t, in[0]); /* W: (k, k) */
        for (uint32_t r = 0; r < ws.rows; r++)
            for (uint32_t c = 0; c < ws.cols; c++)
                buf[(size_t)c * ws.rows + r] = w[(size_t)r * ws.cols + c];
    }
    return 1;
}

/* The reverse sweep from the (scalar) output, changed at h->node as h
 * says (h NULL: unchanged). Adjoints in m->adj. */
static void ms_sweep(msweep *m, const hyp *h)
{
    const size_t ms = m->maxsz;
    double *og = m->scr, *ones = og + ms, *loc = ones + ms, *wt = loc + ms, *res[AD_MAX_ARITY];
    for (int k = 0; k < AD_MAX_ARITY; k++)
        res[k] = wt + ms * (size_t)(k + 1);
    memset(m->adj, 0, m->off[m->oi + 1] * sizeof *m->adj);
    m->adj[m->off[m->oi]] = 1.0;
    for (size_t i = m->oi; i > 0; i--) {
        if (!m->live[i])
            continue;
        ad_node nd = ad_tape_node(m->t, i), in[AD_MAX_ARITY];
        int nin = ad_node_inputs(m->t, nd, in);
        if (nin <= 0)
            continue; /* a leaf */
        const double *seed = m->adj + m->off[i];
        const size_t nsz = m->off[i + 1] - m->off[i];
        int nz = 0;
        for (size_t j = 0; j < nsz && !nz; j++)
            nz = seed[j] != 0.0;
        if (!nz)
            continue; /* every vjp is linear in its seed */
        double *want[AD_MAX_ARITY] = {NULL};
        size_t idx[AD_MAX_ARITY];
        for (int k = 0; k < nin; k++) {
            idx[k] = ad_node_index(m->t, in[k]);
            want[k] = m->live[idx[k]] ? res[k] : NULL;
        }
        ad__node_vjp(m->t, nd, seed, og, want, NULL);
        if (h && h->node == i) {
            const int k = h->slot;
            const size_t isz = m->off[idx[k] + 1] - m->off[idx[k]];
            if (h->kind == AD_DIAG_MISSING_FACTOR) {
                memcpy(res[k], seed, isz * sizeof *seed);
            } else if (h->kind == AD_DIAG_EXTRA_FACTOR) {
                double *one[AD_MAX_ARITY] = {NULL};
                one[k] = loc;
                for (size_t j = 0; j < nsz; j++)
                    ones[j] = 1.0;
                ad__node_vjp(m->t, nd, ones, og, one, NULL); /* the local derivative */
                for (size_t j = 0; j < isz; j++)
                    res[k][j] *= loc[j];
            } else if (h->kind == AD_DIAG_MISSING_PATH) {
                want[k] = NULL;
            } else if (h->kind == AD_DIAG_W_NOT_WT && square_w(m->t, nd, wt)) {
                const double *vals[AD_MAX_ARITY] = {wt};
                double *other[AD_MAX_ARITY] = {NULL};
                for (int j = 1; j < nin; j++)
                    other[j] = want[j];
                ad__node_vjp(m->t, nd, seed, og, other, vals);
            }
        }
        for (int k = 0; k < nin; k++) {
            if (!want[k])
                continue;
            double *a = m->adj + m->off[idx[k]];
            for (size_t j = 0, isz = m->off[idx[k] + 1] - m->off[idx[k]]; j < isz; j++)
                a[j] += res[k][j];
        }
    }
}

/* The hypotheses at one node of the tape, from its structure. */
static size_t node_hyps(const msweep *m, hyp *out)
{
    size_t n = 0;
    if (m->oi > MAX_NODES)
        return 0;
    for (size_t i = m->oi; i > 0; i--) {
        if (!m->live[i])
            continue;
        ad_node nd = ad_tape_node(m->t, i), in[AD_MAX_ARITY];
        int nin = ad_node_inputs(m->t, nd, in);
        const int add = op_is(m->t, nd, "add") || op_is(m->t, nd, "addc");
        /* ops whose local derivative squared is itself (1, -1, or 0/1) */
        const int idem = add || op_is(m->t, nd, "sub") || op_is(m->t, nd, "neg") ||
                         op_is(m->t, nd, "relu") || op_is(m->t, nd, "abs");
        for (int k = 0; k < nin; k++) {
            size_t j = ad_node_index(m->t, in[k]);
            if (!m->live[j])
                continue;
            if (ad__local_factor(NULL, m->t, nd, k)) {
                if (!add && !(op_is(m->t, nd, "sub") && k == 0)) {
                    if (out)
                        out[n] = (hyp){AD_DIAG_MISSING_FACTOR, i, k};
                    n++;
                }
                if (!idem) {
                    if (out)
                        out[n] = (hyp){AD_DIAG_EXTRA_FACTOR, i, k};
                    n++;
                }
            }
            if (k == 0 && square_w(m->t, nd, NULL)) {
                if (out)
                    out[n] = (hyp){AD_DIAG_W_NOT_WT, i, 0};
                n++;
            }
            if (m->uses[j] >= 2) {
                if (out)
                    out[n] = (hyp){AD_DIAG_MISSING_PATH, i, k};
                n++;
            }
        }
    }
    return n;
}

static int near(double a, double b, double atol, double rtol)
{
    return fabs(a - b) <= atol + rtol * fmax(fabs(a), fabs(b));
}

/* ---- the sentences ---- */

static void node_sentence(ad__sb *b, const ad_tape *t, const hyp *h, const char *block)
{
    char nb[32], ib[32];
    ad_node nd = ad_tape_node(t, h->node), in[AD_MAX_ARITY];
    int nin = ad_node_inputs(t, nd, in);
    const char *name = ad__node_label(t, nd, nb, sizeof nb);
    const char *opnd = ad__node_label(t, in[h->slot], ib, sizeof ib);
    switch (h->kind) {
    case AD_DIAG_MISSING_FACTOR:
    case AD_DIAG_EXTRA_FACTOR:
        ad__sb_printf(b, "%s looks like the tape's gradient %s the factor ", block,
                      h->kind == AD_DIAG_MISSING_FACTOR ? "without" : "with");
        ad__local_factor(b, t, nd, h->slot);
        ad__sb_printf(b, " of node '%s' = ", name);
        ad__node_expr(b, t, nd);
        if (nin > 1)
            ad__sb_printf(b, " (on the path to %s)", opnd);
        if (h->kind == AD_DIAG_EXTRA_FACTOR)
            ad__sb_puts(b, " applied twice");
        break;
    case AD_DIAG_W_NOT_WT:
        ad__sb_printf(b, "%s looks like the tape's gradient with %s where %s^T belongs at node "
                         "'%s' = ",
                      block, opnd, opnd, name);
        ad__node_expr(b, t, nd);
        ad__sb_printf(b, " (what flows back through it used %s, not %s^T)", opnd, opnd);
        break;
    default: /* AD_DIAG_MISSING_PATH */
        ad__sb_printf(b, "%s looks like the tape's gradient without the path through node '%s' "
                         "= ",
                      block, name);
        ad__node_expr(b, t, nd);
        ad__sb_printf(b, ": %s feeds several nodes and this path was left out", opnd);
        break;
    }
}

static void block_sentence(ad__sb *b, const ad__session *s, const ad_diag_fit *f,
                           const char *block, int input)
{
    char nb[32];
    const ad_shape sh = s->in[input].shape;
    switch (f->kind) {
    case AD_DIAG_FACTOR:
        if (f->factor == 0.0)
            ad__sb_printf(b, "%s is 0 where the tape's is not", block);
        else
            ad__sb_printf(b, "%s = %.6g x the tape's (a constant factor%s)", block, f->factor,
                          f->factor == -1.0  ? ": a sign error"
                          : f->factor == 2.0 ? ": a 1/2 left out, or a term counted twice"
                          : f->factor == 0.5 ? ": an extra 1/2, or a term counted once "
                                               "instead of twice"
                                             : "");
        break;
    case AD_DIAG_TRANSPOSE:
        if (sh.rows == sh.cols)
            ad__sb_printf(b, "%s is the tape's transposed", block);
        else
            ad__sb_printf(b, "%s holds the tape's transposed: a %ux%u matrix written where a "
                             "%ux%u one belongs",
                          block, (unsigned)sh.cols, (unsigned)sh.rows, (unsigned)sh.rows,
                          (unsigned)sh.cols);
        break;
    default: /* AD_DIAG_WRONG_INPUT */
        ad__sb_printf(b, "%s is the tape's gradient of %s, another input", block,
                      ad__input_name(s->in, f->other_input, nb, sizeof nb));
        break;
    }
}

/* ---- the hypotheses on the recorded gradients ---- */

static void add_fit(ad_diagnosis *d, ad_diag_fit f)
{
    if (d->nfits < AD_DIAG_MAX_FITS)
        d->fit[d->nfits] = f;
    d->nfits++;
}

static ad_diag_fit no_fit(int kind)
{
    ad_diag_fit f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.slot = -1;
    f.other_input = -1;
    return f;
}

static void block_hyps(const ad__diag_in *d, int b, ad_diagnosis *out)
{
    const ad__session *s = d->s;
    const size_t total = s->off[s->n], o = s->off[b], sz = s->off[b + 1] - o;
    const ad_shape sh = s->in[b].shape;
    /* a constant factor: c = <yours, tape> / <tape, tape> over all points */
    double yt = 0, tt = 0;
    for (int p = 0; p < d->npoints; p++)
        for (size_t j = 0; j < sz; j++) {
            const double tv = d->tg[(size_t)p * total + o + j];
            yt += d->yg[(size_t)p * total + o + j] * tv;
            tt += tv * tv;
        }
    int ok = tt > 0 && isfinite(yt / tt);
    const double c = ok ? yt / tt : 0;
    for (int p = 0; p < d->npoints && ok; p++)
        for (size_t j = 0; j < sz && ok; j++)
            ok = near(d->yg[(size_t)p * total + o + j], c * d->tg[(size_t)p * total + o + j],
                      d->atol, d->rtol);
    if (ok && c != 1.0) {
        ad_diag_fit f = no_fit(AD_DIAG_FACTOR);
        f.factor = c;
        add_fit(out, f);
    }
    /* transposed: yours, read as a cols x rows matrix, is the tape's ^T */
    ok = sh.ndim == 2 && sh.rows > 1 && sh.cols > 1;
    for (int p = 0; p < d->npoints && ok; p++) {
        const double *y = d->yg + (size_t)p * total + o, *t = d->tg + (size_t)p * total + o;
        for (uint32_t r = 0; r < sh.rows && ok; r++) /* t: (rows, cols), y: (cols, rows) */
            for (uint32_t cc = 0; cc < sh.cols && ok; cc++)
                ok = near(y[(size_t)cc * sh.rows + r], t[(size_t)r * sh.cols + cc], d->atol,
                          d->rtol);
    }
    if (ok)
        add_fit(out, no_fit(AD_DIAG_TRANSPOSE));
    /* the gradient of another input (of the same size) */
    for (int i = 0; i < s->n; i++) {
        if (i == b || s->in[i].role == AD_INPUT_CONSTANT || s->off[i + 1] - s->off[i] != sz)
            continue;
        ok = 1;
        for (int p = 0; p < d->npoints && ok; p++)
            for (size_t j = 0; j < sz && ok; j++)
                ok = near(d->yg[(size_t)p * total + o + j],
                          d->tg[(size_t)p * total + s->off[i] + j], d->atol, d->rtol);
        if (ok) {
            ad_diag_fit f = no_fit(AD_DIAG_WRONG_INPUT);
            f.other_input = i;
            add_fit(out, f);
        }
    }
}

int ad__diagnose(const ad__diag_in *d, ad_diagnosis *out, ad_check_report *r)
{
    ad__session *s = d->s;
    const int n = s->n;
    const size_t total = s->off[n];
    msweep m;
    size_t nh = 0;
    hyp *hs = NULL;
    unsigned char *fits = NULL; /* nh * n */
    int st = ms_init(&m, s);
    if (st == AD_OK && (nh = node_hyps(&m, NULL)) > 0) {
        hs = ad__cmem_array(&s->mem, nh, sizeof *hs);
        fits = ad__cmem_array(&s->mem, nh * (size_t)n, 1);
        if (!hs || !fits)
            st = AD_ENOMEM;
        else
            node_hyps(&m, hs);
    }
    if (st != AD_OK) {
        st = ad__report_fail(r, AD_ENOMEM, "handcheck: out of memory for the diagnosis");
        goto done;
    }
    for (size_t h = 0; h < nh; h++)
        for (int b = 0; b < n; b++)
            fits[h * (size_t)n + b] = d->want[b];
    for (int p = 0; p < d->npoints && nh; p++) {
        memcpy(s->cur, d->pts + (size_t)p * total, total * sizeof *s->cur);
        if ((st = ad__session_replay(s, -1, r)) != AD_OK)
            goto done;
        for (size_t h = 0; h < nh; h++) {
            unsigned char *fh = fits + h * (size_t)n;
            int alive = 0;
            for (int b = 0; b < n; b++)
                alive |= fh[b];
            if (!alive)
                continue;
            ms_sweep(&m, &hs[h]);
            for (int b = 0; b < n; b++) {
                if (!fh[b])
                    continue;
                const size_t li = ad_node_index(s->t, s->leaf[b]), sz = s->off[b + 1] - s->off[b];
                const double *y = d->yg + (size_t)p * total + s->off[b];
                for (size_t j = 0; j < sz && fh[b]; j++)
                    fh[b] = near(y[j], m.live[li] ? m.adj[m.off[li] + j] : 0.0, d->atol, d->rtol);
            }
        }
    }
    for (int b = 0; b < n; b++) {
        if (!d->want[b])
            continue;
        char nb[32], bb[40];
        snprintf(bb, sizeof bb, "d%s", ad__input_name(s->in, b, nb, sizeof nb));
        ad_diagnosis *o = &out[b];
        block_hyps(d, b, o);
        const int nblock = o->nfits;
        for (size_t h = 0; h < nh; h++) {
            if (!fits[h * (size_t)n + b])
                continue;
            ad_diag_fit f = no_fit(hs[h].kind);
            f.node = hs[h].node;
            f.slot = hs[h].slot;
            snprintf(f.name, sizeof f.name, "%s",
                     ad__node_label(s->t, ad_tape_node(s->t, hs[h].node), nb, sizeof nb));
            add_fit(o, f);
        }
        /* the sentences, after the counts already in o->text */
        ad__sb sb;
        ad__sb_init(&sb, s->mem);
        ad__sb_puts(&sb, " -- ");
        if (!o->nfits)
            ad__sb_puts(&sb, "no simple explanation found");
        int k = 0;
        for (int i = 0; i < nblock && i < AD_DIAG_MAX_FITS; i++, k++) {
            if (k)
                ad__sb_puts(&sb, "; or ");
            block_sentence(&sb, s, &o->fit[i], k ? "it" : bb, b);
        }
        for (size_t h = 0; h < nh; h++) {
            if (!fits[h * (size_t)n + b])
                continue;
            if (k++)
                ad__sb_puts(&sb, "; or ");
            node_sentence(&sb, s->t, &hs[h], k > 1 ? "it" : bb);
        }
        if (sb.oom) {
            ad__sb_free(&sb);
            st = ad__report_fail(r, AD_ENOMEM, "handcheck: out of memory for the diagnosis");
            goto done;
        }
        const size_t have = strlen(o->text), room = sizeof o->text - have;
        if (sb.len < room) {
            memcpy(o->text + have, sb.buf, sb.len + 1);
        } else if (room > 4) { /* cut, and say so */
            memcpy(o->text + have, sb.buf, room - 4);
            memcpy(o->text + sizeof o->text - 4, "...", 4);
        }
        ad__sb_free(&sb);
    }
done:
    ad__cmem_free(&s->mem, hs, nh * sizeof *hs);
    ad__cmem_free(&s->mem, fits, nh * (size_t)n);
    ms_free(&m);
    return st;
}
