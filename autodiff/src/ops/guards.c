/* guards.c -- replay guards: the recorded comparisons, checked again
 * whenever the tape is evaluated at new inputs.
 *
 * A comparison node (lt le gt ge eq ne) has the value 1 or 0 per element:
 * its outcome. Recording one keeps that outcome here, one byte per
 * element, beside the node's id. Replay (ad_replay, a workspace's replay)
 * and the forward sweep of the modes recompute the node like any other;
 * afterwards each kept outcome is compared with the new value. When one
 * differs, the evaluation has still run to its end on the recorded
 * structure, and the call returns AD_EBRANCH naming the first changed
 * comparison in tape order (node, name, element, operands) and how many
 * changed: the program would branch differently now, so the caller
 * should record again.
 *
 * The recorded outcomes are kept, never updated: a tape follows the branch
 * it was recorded on, so every evaluation where a comparison differs from
 * the recording reports it, and one back on the recorded side is silent.
 * A tape without comparisons has no guards and pays one test per call. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct guard {
    uint32_t node; /* the comparison node                               */
    uint32_t name; /* workspace copies: 1 + offset of its name, 0: none */
    size_t off;    /* its recorded outcomes: rec[off .. off + size)     */
} guard;

typedef struct ad__guards ad__guards;

struct ad__guards {
    guard *g;
    size_t n, cap;
    unsigned char *rec; /* recorded outcomes, 0 or 1 per element */
    size_t nrec, caprec;
    char *names; /* workspace copies: the names, each NUL-terminated */
    size_t nnames;
};

/* ---- recording ---- */

static int grow(ad__mem *m, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return AD_OK;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *q = ad__realloc(m, *p, *cap * elem, ncap * elem);
    if (!q)
        return AD_ENOMEM;
    *p = q;
    *cap = ncap;
    return AD_OK;
}

int ad__guard_reserve(ad_tape *t, const char *op, size_t n)
{
    ad__guards *gs = t->guards;
    if (!gs) {
        gs = ad__alloc(&t->mem, sizeof *gs);
        if (!gs)
            return ad__fail(t, AD_ENOMEM, "%s: out of memory for its replay guard", op);
        memset(gs, 0, sizeof *gs);
        t->guards = gs;
    }
    if (grow(&t->mem, (void **)&gs->g, &gs->cap, gs->n + 1, sizeof *gs->g) != AD_OK
        || grow(&t->mem, (void **)&gs->rec, &gs->caprec, gs->nrec + n, 1) != AD_OK)
        return ad__fail(t, AD_ENOMEM, "%s: out of memory for its replay guard", op);
    return AD_OK;
}

void ad__guard_push(ad_tape *t, uint32_t id, const double *v, size_t n)
{
    ad__guards *gs = t->guards; /* room made by ad__guard_reserve */
    guard *g = &gs->g[gs->n++];
    g->node = id;
    g->name = 0;
    g->off = gs->nrec;
    for (size_t i = 0; i < n; i++)
        gs->rec[gs->nrec++] = v[i] != 0.0;
}

void ad__guards_reset(ad_tape *t)
{
    if (t->guards)
        t->guards->n = t->guards->nrec = 0;
}

static void free_guards(ad__guards *gs, ad__mem *m)
{
    if (!gs)
        return;
    ad__free(m, gs->g, gs->cap * sizeof *gs->g);
    ad__free(m, gs->rec, gs->caprec);
    ad__free(m, gs->names, gs->nnames);
    ad__free(m, gs, sizeof *gs);
}

void ad__guards_free(ad_tape *t)
{
    free_guards(t->guards, &t->mem);
    t->guards = NULL;
}

/* ---- the check ---- */

/* The first changed comparison and what the message says of it. */
typedef struct hit {
    const guard *g;
    unsigned op;
    ad_shape shape;
    size_t elem;
    bool was;
    double a, b; /* the operands at that element, now */
} hit;

/* The element of operand shape s that output element j of shape o reads:
 * the same one, a broadcast scalar's, a row's (a vector, or 1 x n) or a
 * column's (m x 1), as the elementwise kernels broadcast. */
static size_t operand_index(ad_shape s, ad_shape o, size_t j)
{
    const size_t n = ad_shape_size(s);
    if (n == ad_shape_size(o))
        return j;
    if (n == 1)
        return 0;
    if (s.ndim == 2 && s.cols == 1)
        return j / o.cols;
    return j % o.cols;
}

/* Compares every kept outcome with the node's value now; returns how many
 * comparisons changed (nodes, not elements) and the first one in h. */
static size_t scan(const ad__guards *gs, void *const *nodes, void *const *exts, hit *h)
{
    size_t changed = 0;
    for (size_t i = 0; i < gs->n; i++) {
        const guard *g = &gs->g[i];
        const ad__node *nd = ad__Nc(nodes, g->node);
        const unsigned char *rec = gs->rec + g->off;
        if (!(nd->h & AD__EXT)) {
            if ((nd->v != 0.0) == rec[0])
                continue;
            if (changed++ == 0) {
                *h = (hit){g, ad__opc(nd->h), ad_shape_scalar(), 0, rec[0] != 0,
                           ad__Nc(nodes, ad__a(nd->h))->v, ad__Nc(nodes, ad__b(nd->h))->v};
            }
            continue;
        }
        const ad__ext *x = ad__Xc(exts, ad__a(nd->h));
        const size_t n = ad_shape_size(x->call.out.shape);
        const double *v = x->call.out.val;
        size_t j = 0;
        while (j < n && (v[j] != 0.0) == rec[j])
            j++;
        if (j == n)
            continue;
        if (changed++ == 0) {
            const ad_tensor *in = x->call.in;
            const ad_shape o = x->call.out.shape;
            *h = (hit){g, x->op, o, j, rec[j] != 0, in[0].val[operand_index(in[0].shape, o, j)],
                       in[1].val[operand_index(in[1].shape, o, j)]};
        }
    }
    return changed;
}

/* "replay: comparison gt (node 7, 'x > 0') was true when recorded, false
 * now (operands -0.5 and 0)", with the element of a tensor comparison and,
 * when several changed, how many. */
static void message(char *msg, size_t cap, const char *who, const hit *h, const char *name,
                    size_t changed)
{
    char where[96] = "", more[96] = "", shp[48];
    if (h->shape.ndim != 0)
        snprintf(where, sizeof where, " at element %zu of %s", h->elem,
                 ad__shape_str(h->shape, shp, sizeof shp));
    if (changed > 1)
        snprintf(more, sizeof more, "; %zu recorded comparisons changed, this is the first",
                 changed);
    snprintf(msg, cap, "%s: comparison %s (node %u%s%.60s%s)%s was %s when recorded, %s now "
                       "(operands %.17g and %.17g)%s",
             who, ad__ops[h->op]->def.name, (unsigned)h->g->node, name ? ", '" : "",
             name ? name : "", name ? "'" : "", where, h->was ? "true" : "false",
             h->was ? "false" : "true", h->a, h->b, more);
}

int ad__guards_check(ad_tape *t, const char *who)
{
    const ad__guards *gs = t->guards;
    if (!gs || gs->n == 0)
        return AD_OK;
    hit h;
    const size_t changed = scan(gs, t->nodes.chunk, t->exts.chunk, &h);
    if (!changed)
        return AD_OK;
    char msg[AD__MSG_CAP];
    message(msg, sizeof msg, who, &h, ad_node_name(t, ad__handle(t, h.g->node)), changed);
    return ad__fail_call(t, AD_EBRANCH, "%s", msg);
}

/* ---- workspaces ---- */

int ad__guards_copy(const ad_tape *t, ad__mem *m, ad__guards **out)
{
    *out = NULL;
    const ad__guards *src = t->guards;
    if (!src || src->n == 0)
        return AD_OK;
    ad__guards *gs = ad__alloc(m, sizeof *gs);
    if (!gs)
        return AD_ENOMEM;
    memset(gs, 0, sizeof *gs);
    size_t nnames = 0;
    for (size_t i = 0; i < src->n; i++) {
        const char *nm = ad_node_name(t, ad__handle(t, src->g[i].node));
        nnames += nm ? strlen(nm) + 1 : 0;
    }
    gs->g = ad__alloc(m, src->n * sizeof *gs->g);
    gs->rec = ad__alloc(m, src->nrec ? src->nrec : 1);
    gs->names = nnames ? ad__alloc(m, nnames) : NULL;
    /* sizes as allocated, so that free_guards gives back what was taken */
    gs->cap = gs->g ? src->n : 0;
    gs->caprec = gs->rec ? (src->nrec ? src->nrec : 1) : 0;
    gs->nnames = gs->names ? nnames : 0;
    if (!gs->g || !gs->rec || (nnames && !gs->names)) {
        free_guards(gs, m);
        return AD_ENOMEM;
    }
    gs->n = src->n;
    gs->nrec = src->nrec;
    memcpy(gs->g, src->g, src->n * sizeof *gs->g);
    memcpy(gs->rec, src->rec, src->nrec);
    size_t off = 0;
    for (size_t i = 0; i < gs->n; i++) {
        const char *nm = ad_node_name(t, ad__handle(t, gs->g[i].node));
        gs->g[i].name = 0;
        if (nm) {
            const size_t len = strlen(nm) + 1;
            memcpy(gs->names + off, nm, len);
            gs->g[i].name = (uint32_t)off + 1;
            off += len;
        }
    }
    *out = gs;
    return AD_OK;
}

void ad__guards_free_copy(ad__guards *g, ad__mem *m) { free_guards(g, m); }

int ad__guards_check_nodes(const ad__guards *gs, void *const *nodes, void *const *exts,
                           const char *who, char *msg, size_t cap)
{
    if (!gs || gs->n == 0)
        return AD_OK;
    hit h;
    const size_t changed = scan(gs, nodes, exts, &h);
    if (!changed)
        return AD_OK;
    message(msg, cap, who, &h, h.g->name ? gs->names + h.g->name - 1 : NULL, changed);
    return AD_EBRANCH;
}

/* ---- reading the table (code generation) ---- */

size_t ad__guards_count(const ad_tape *t) { return t->guards ? t->guards->n : 0; }

void ad__guard_at(const ad_tape *t, size_t i, uint32_t *node, const unsigned char **rec)
{
    const guard *g = &t->guards->g[i];
    *node = g->node;
    *rec = t->guards->rec + g->off;
}
