/* sparse.c -- sparse Jacobians and Hessians: patterns found on the tape,
 * greedy colourings, compressed evaluation by the modes' vector forward
 * sweep (and forward over reverse), and recovery into a fixed list of
 * nonzeros (docs/sparse.md).
 *
 * Patterns. Every element of every node gets an index set: the input
 * columns it depends on. A leaf that is an input holds its own column; an
 * op's element gets the union of the sets of the operand elements its
 * rule names (ad__sprules, op_table.c: elementwise ops from their formula
 * lines, tensor ops by kind). A set is a range of one pool of column
 * indices; an op that passes a set on unchanged (x + c, a unary op, a
 * dense op's every element) shares the range instead of copying it.
 *
 * Hessian patterns. The same sets, then a reverse pass marks the nodes
 * the outputs depend on; each marked op whose second derivative couples
 * operands a and b adds S(a) x S(b) to the pattern (the nonlinear
 * interactions). Pairs are collected, bucketed by row and made unique.
 *
 * Colouring. Jacobian: greedy distance-2 column colouring (columns that
 * share a row differ), in natural order. Hessian: greedy star colouring
 * (Gebremedhin, Manne and Pothen, SIAM Review 2005, algorithm 4.1), then a
 * check that every nonzero can be read directly from one compressed
 * column; if one cannot, the distance-2 colouring of the symmetric
 * pattern, for which every nonzero can. Both orders are natural: on band
 * structures (the usual case of scalable problems) that is what reaches
 * the band's optimum.
 *
 * Evaluation. One block of at most BLOCK colours per pass: seed each input
 * element with the unit vector of its colour, run the modes' forward sweep
 * (values and tangents) and, for a Hessian, the reverse sweep with the
 * weights as seeds; each nonzero is then one read of a tangent (or
 * adjoint tangent) at a precomputed (row, colour). Nothing is allocated.
 */
#include "autodiff/sparse.h"
#include "internal.h"
#include "sparse_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64 /* colours per sweep */

/* A node element's input set: pool[off .. off + len). */
typedef struct sset {
    size_t off;
    size_t len;
} sset;

/* ---- allocation through the tape's hook ---- */

static void *sp_alloc(ad_tape *t, size_t n, size_t elem)
{
    if (n && elem > SIZE_MAX / n)
        return NULL;
    return ad__alloc(&t->mem, n * elem != 0 ? n * elem : 1);
}
static void sp_free(ad_tape *t, void *p, size_t n, size_t elem)
{
    if (p)
        ad__free(&t->mem, p, n * elem != 0 ? n * elem : 1);
}
static int sp_grow(ad_tape *t, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap && *p)
        return AD_OK;
    size_t ncap = need + need / 2 + 64;
    if (ncap > SIZE_MAX / elem)
        return AD_ENOMEM;
    void *q = ad__realloc(&t->mem, *p, *p ? *cap * elem : 0, ncap * elem);
    if (!q)
        return AD_ENOMEM;
    *p = q;
    *cap = ncap;
    return AD_OK;
}

/* ---- the pattern builder ---- */

typedef struct builder {
    ad_tape *t;
    size_t ncols;
    size_t *base;               /* per node: its first element's set     */
    sset *sets;
    size_t nsets, capsets;
    uint32_t *pool;
    size_t npool, cappool;
    uint32_t *mark;             /* per column: the stamp of the last union */
    uint32_t stamp;
    size_t ustart;
    uint64_t *pairs;            /* Hessian: (row << 32) | col, row >= col */
    size_t npairs, cappairs;
    unsigned char *reach;       /* per node: R_REACH, R_NEED (mark_pass) */
    unsigned char flags[AD_OP_COUNT]; /* per op: F_* from its rule        */
} builder;

enum { F_DA = 1, F_DB = 2, F_AA = 4, F_AB = 8, F_BB = 16 };
enum { R_REACH = 1, R_NEED = 2 }; /* builder.reach */

static bool nonzero(const char *formula) { return formula && strcmp(formula, "0.0") != 0; }

static void rule_flags(builder *b)
{
    for (unsigned op = 0; op < AD_OP_COUNT; op++) {
        const ad__sprule *r = &ad__sprules[op];
        unsigned char f = 0;
        if (r->kind == AD__SP_ELEMWISE)
            f = (unsigned char)((nonzero(r->d1[0]) ? F_DA : 0) | (nonzero(r->d1[1]) ? F_DB : 0)
                                | (nonzero(r->d2[0]) ? F_AA : 0) | (nonzero(r->d2[1]) ? F_AB : 0)
                                | (nonzero(r->d2[2]) ? F_BB : 0));
        b->flags[op] = f;
    }
}

static int push_set(builder *b, sset s)
{
    if (sp_grow(b->t, (void **)&b->sets, &b->capsets, b->nsets + 1, sizeof *b->sets) != AD_OK)
        return AD_ENOMEM;
    b->sets[b->nsets++] = s;
    return AD_OK;
}

/* A union: begin, add sets, end. */
static void u_begin(builder *b)
{
    if (++b->stamp == 0) { /* wrapped: no mark may match a new stamp */
        memset(b->mark, 0, b->ncols * sizeof *b->mark);
        b->stamp = 1;
    }
    b->ustart = b->npool;
}
static int u_add(builder *b, sset s)
{
    if (sp_grow(b->t, (void **)&b->pool, &b->cappool, b->npool + s.len, sizeof *b->pool) != AD_OK)
        return AD_ENOMEM;
    for (size_t i = 0; i < s.len; i++) {
        const uint32_t c = b->pool[s.off + i];
        if (b->mark[c] != b->stamp) {
            b->mark[c] = b->stamp;
            b->pool[b->npool++] = c;
        }
    }
    return AD_OK;
}
static sset u_end(const builder *b)
{
    sset s = {b->ustart, b->npool - b->ustart};
    if (s.len == 0)
        s.off = 0;
    return s;
}

/* The union of two sets, sharing one when the other adds nothing. */
static int union2(builder *b, sset x, sset y, sset *out)
{
    if (y.len == 0 || (x.off == y.off && x.len == y.len)) {
        *out = x;
        return AD_OK;
    }
    if (x.len == 0) {
        *out = y;
        return AD_OK;
    }
    u_begin(b);
    if (u_add(b, x) != AD_OK || u_add(b, y) != AD_OK)
        return AD_ENOMEM;
    *out = u_end(b);
    return AD_OK;
}

/* The union of every element of the nin operands (those in mask). */
static int union_all(builder *b, const ad__ext *x, unsigned mask, sset *out)
{
    u_begin(b);
    for (int k = 0; k < x->call.nin; k++) {
        if (!((mask >> k) & 1u))
            continue;
        const size_t s = ad_shape_size(x->args[k].shape), b0 = b->base[x->in[k]];
        for (size_t e = 0; e < s; e++)
            if (u_add(b, b->sets[b0 + e]) != AD_OK)
                return AD_ENOMEM;
    }
    *out = u_end(b);
    return AD_OK;
}

/* Adds the pairs of A x B (A == B: each unordered pair once). */
static int add_pairs(builder *b, sset A, sset B)
{
    if (A.len == 0 || B.len == 0)
        return AD_OK;
    const bool same = A.off == B.off && A.len == B.len;
    if (sp_grow(b->t, (void **)&b->pairs, &b->cappairs, b->npairs + A.len * B.len,
                sizeof *b->pairs) != AD_OK)
        return AD_ENOMEM;
    for (size_t i = 0; i < A.len; i++) {
        const uint32_t u = b->pool[A.off + i];
        for (size_t j = same ? i : 0; j < B.len; j++) {
            const uint32_t v = b->pool[B.off + j];
            const uint32_t r = u > v ? u : v, c = u > v ? v : u;
            b->pairs[b->npairs++] = (uint64_t)r << 32 | c;
        }
    }
    return AD_OK;
}

/* Element e's operand element under the binary broadcasting rule
 * (ops_elementwise.c) and select's (a scalar against the others). */
static size_t bcast_elem(ad_shape in, ad_shape out, size_t e)
{
    const size_t m = ad_shape_size(in), n = ad_shape_size(out);
    if (m == n)
        return e;
    if (m == 1)
        return 0;
    if (in.ndim == 2 && in.cols == 1)
        return e / out.cols;
    return e % out.cols;
}

static const char *op_name(const ad_tape *t, const ad__node *n)
{
    return (n->h & AD__EXT) ? ad__X(t, ad__a(n->h))->def->name : ad__ops[ad__opc(n->h)]->def.name;
}

/* The sets of node id's elements. col_of: per node, the input column of
 * its first element + 1 (0: not an input). */
static int forward_node(builder *b, uint32_t id, const size_t *col_of, const char *who)
{
    ad_tape *t = b->t;
    const ad__node *n = ad__N(t, id);
    const uint64_t h = n->h;
    const unsigned op = ad__opc(h);
    b->base[id] = b->nsets;
    const sset none = {0, 0};
    if (!(h & AD__EXT)) {
        if (op == AD_OP_LEAF || !(h & AD__GRAD)) {
            if (op == AD_OP_LEAF && col_of[id]) {
                if (sp_grow(t, (void **)&b->pool, &b->cappool, b->npool + 1, sizeof *b->pool))
                    return AD_ENOMEM;
                sset s = {b->npool, 1};
                b->pool[b->npool++] = (uint32_t)(col_of[id] - 1);
                return push_set(b, s);
            }
            return push_set(b, none);
        }
        const unsigned char f = b->flags[op];
        const sset sa = (f & F_DA) ? b->sets[b->base[ad__a(h)]] : none;
        const sset sb = (ad__ops[op]->def.arity == 2 && (f & F_DB)) ? b->sets[b->base[ad__b(h)]]
                                                                    : none;
        sset s;
        if (union2(b, sa, sb, &s) != AD_OK)
            return AD_ENOMEM;
        return push_set(b, s);
    }
    const ad__ext *x = ad__X(t, ad__a(h));
    const ad_shape os = x->call.out.shape;
    const size_t size = ad_shape_size(os);
    if (op == AD_OP_LEAF || !(h & AD__GRAD)) {
        const bool input = op == AD_OP_LEAF && col_of[id];
        if (input && sp_grow(t, (void **)&b->pool, &b->cappool, b->npool + size, sizeof *b->pool))
            return AD_ENOMEM;
        for (size_t e = 0; e < size; e++) {
            sset s = none;
            if (input) {
                s.off = b->npool, s.len = 1;
                b->pool[b->npool++] = (uint32_t)(col_of[id] - 1 + e);
            }
            if (push_set(b, s) != AD_OK)
                return AD_ENOMEM;
        }
        return AD_OK;
    }
    const unsigned code = x->op;
    const unsigned kind = code < AD_OP_COUNT ? ad__sprules[code].kind : AD__SP_DENSE;
    if (kind == AD__SP_MISSING || kind == AD__SP_LEAF)
        return ad__fail_call(t, AD_EMISUSE, "%s: op '%s' (node %u) has no sparsity rule", who,
                             x->def->name, (unsigned)id);
    const int nin = x->call.nin;
    if (kind == AD__SP_ELEMWISE || kind == AD__SP_SELECT || kind == AD__SP_IDENTITY) {
        unsigned mask; /* the operands the output depends on */
        if (kind == AD__SP_ELEMWISE)
            mask = (b->flags[code] & F_DA ? 1u : 0u) | (nin > 1 && (b->flags[code] & F_DB) ? 2u : 0u);
        else
            mask = kind == AD__SP_SELECT ? 6u : 1u;
        for (size_t e = 0; e < size; e++) {
            sset s = none;
            for (int k = 0; k < nin; k++) {
                if (!((mask >> k) & 1u))
                    continue;
                const sset sk = b->sets[b->base[x->in[k]] + bcast_elem(x->args[k].shape, os, e)];
                if (union2(b, s, sk, &s) != AD_OK)
                    return AD_ENOMEM;
            }
            if (push_set(b, s) != AD_OK)
                return AD_ENOMEM;
        }
        return AD_OK;
    }
    if (kind == AD__SP_CONCAT || kind == AD__SP_TRANSPOSE) {
        /* each output element copies one operand element: share its set */
        const size_t na = ad_shape_size(x->args[0].shape);
        const ad_shape as = x->args[0].shape;
        for (size_t e = 0; e < size; e++) {
            int k = 0;
            size_t i = e;
            if (kind == AD__SP_TRANSPOSE) {
                if (as.ndim == 2) /* out (C x R) = A^T, A (R x C) */
                    i = (e % os.cols) * as.cols + e / os.cols;
            } else if (x->call.c == 0.0) { /* a's elements, then b's */
                k = e >= na, i = e >= na ? e - na : e;
            } else { /* side by side, row by row */
                const size_t ca = as.cols, cb = x->args[1].shape.cols;
                const size_t r = e / (ca + cb), j = e % (ca + cb);
                k = j >= ca, i = j >= ca ? r * cb + (j - ca) : r * ca + j;
            }
            if (push_set(b, b->sets[b->base[x->in[k]] + i]) != AD_OK)
                return AD_ENOMEM;
        }
        return AD_OK;
    }
    /* every output element from every operand element: one shared set */
    sset s;
    if (union_all(b, x, (1u << nin) - 1u, &s) != AD_OK)
        return AD_ENOMEM;
    for (size_t e = 0; e < size; e++)
        if (push_set(b, s) != AD_OK)
            return AD_ENOMEM;
    return AD_OK;
}

/* One reverse pass over nodes last..1, before the sets are made. A
 * Hessian marks R_REACH on what the outputs depend on (through a first
 * derivative that is not identically 0) and R_NEED on the operands of the
 * reached nonlinear ops, whose sets the interactions read; a Jacobian
 * marks R_NEED on the outputs. R_NEED then spreads to the operands a
 * needed set is made from. Only needed sets are made: the running sum of
 * an objective (s_k = s_{k-1} + term_k, each set one longer than the
 * last: quadratic) is never an operand of a nonlinear op, so it is
 * skipped. */
static void mark_pass(builder *b, uint32_t last)
{
    ad_tape *t = b->t;
    unsigned char *r = b->reach;
    for (uint32_t id = last; id >= 1; id--) {
        if (!r[id])
            continue;
        const ad__node *n = ad__N(t, id);
        const uint64_t h = n->h;
        const unsigned op = ad__opc(h);
        if (op == AD_OP_LEAF || !(h & AD__GRAD))
            continue;
        const unsigned char mark = r[id]; /* both flags pass down the same way */
        if (!(h & AD__EXT)) {
            const unsigned char f = b->flags[op];
            const uint32_t a = ad__a(h), bb = ad__b(h);
            const bool two = ad__ops[op]->def.arity == 2;
            if (f & F_DA)
                r[a] |= mark;
            if (two && (f & F_DB))
                r[bb] |= mark;
            if (mark & R_REACH) {
                if (f & (F_AA | F_AB))
                    r[a] |= R_NEED;
                if (two && (f & (F_AB | F_BB)))
                    r[bb] |= R_NEED;
            }
            continue;
        }
        const ad__ext *x = ad__X(t, ad__a(h));
        const unsigned code = x->op;
        const unsigned kind = code < AD_OP_COUNT ? ad__sprules[code].kind : AD__SP_DENSE;
        const int nin = x->call.nin;
        if (kind == AD__SP_ELEMWISE) {
            const unsigned char f = b->flags[code];
            if (f & F_DA)
                r[x->in[0]] |= mark;
            if (nin > 1 && (f & F_DB))
                r[x->in[1]] |= mark;
            if (mark & R_REACH) {
                if (f & (F_AA | F_AB))
                    r[x->in[0]] |= R_NEED;
                if (nin > 1 && (f & (F_AB | F_BB)))
                    r[x->in[1]] |= R_NEED;
            }
            continue;
        }
        for (int k = 0; k < nin; k++) {
            if ((kind == AD__SP_SELECT && k == 0) || (kind == AD__SP_IDENTITY && k > 0))
                continue;
            r[x->in[k]] |= mark;
            if ((mark & R_REACH) && (kind == AD__SP_DENSE || (kind == AD__SP_BILINEAR && k < 2)))
                r[x->in[k]] |= R_NEED;
        }
    }
}

/* The nonlinear interactions of every node the outputs depend on. */
static int hessian_pairs(builder *b, uint32_t last)
{
    ad_tape *t = b->t;
    for (uint32_t id = 1; id <= last; id++) {
        if (!(b->reach[id] & R_REACH))
            continue;
        const ad__node *n = ad__N(t, id);
        const uint64_t h = n->h;
        const unsigned op = ad__opc(h);
        if (op == AD_OP_LEAF || !(h & AD__GRAD))
            continue;
        if (!(h & AD__EXT)) {
            const unsigned char f = b->flags[op];
            const uint32_t a = ad__a(h), bb = ad__b(h);
            const bool two = ad__ops[op]->def.arity == 2;
            if (!(f & (F_AA | F_AB | F_BB)))
                continue;
            const sset sa = b->sets[b->base[a]];
            const sset sb = two ? b->sets[b->base[bb]] : sa;
            if ((f & F_AA) && add_pairs(b, sa, sa) != AD_OK)
                return AD_ENOMEM;
            if (two && (f & F_AB) && add_pairs(b, sa, sb) != AD_OK)
                return AD_ENOMEM;
            if (two && (f & F_BB) && add_pairs(b, sb, sb) != AD_OK)
                return AD_ENOMEM;
            continue;
        }
        const ad__ext *x = ad__X(t, ad__a(h));
        const unsigned code = x->op;
        const unsigned kind = code < AD_OP_COUNT ? ad__sprules[code].kind : AD__SP_DENSE;
        const int nin = x->call.nin;
        if (kind == AD__SP_ELEMWISE) {
            const unsigned char f = b->flags[code];
            if (!(f & (F_AA | F_AB | F_BB)))
                continue;
            const ad_shape os = x->call.out.shape;
            const size_t size = ad_shape_size(os);
            for (size_t e = 0; e < size; e++) {
                const sset sa = b->sets[b->base[x->in[0]] + bcast_elem(x->args[0].shape, os, e)];
                const sset sb = nin > 1
                                    ? b->sets[b->base[x->in[1]] + bcast_elem(x->args[1].shape, os, e)]
                                    : sa;
                if ((f & F_AA) && add_pairs(b, sa, sa) != AD_OK)
                    return AD_ENOMEM;
                if (nin > 1 && (f & F_AB) && add_pairs(b, sa, sb) != AD_OK)
                    return AD_ENOMEM;
                if (nin > 1 && (f & F_BB) && add_pairs(b, sb, sb) != AD_OK)
                    return AD_ENOMEM;
            }
            continue;
        }
        if (kind == AD__SP_BILINEAR) {
            sset s0, s1;
            if (union_all(b, x, 1u, &s0) != AD_OK || union_all(b, x, 2u, &s1) != AD_OK
                || add_pairs(b, s0, s1) != AD_OK)
                return AD_ENOMEM;
        } else if (kind == AD__SP_DENSE) {
            sset s;
            if (union_all(b, x, (1u << nin) - 1u, &s) != AD_OK || add_pairs(b, s, s) != AD_OK)
                return AD_ENOMEM;
        }
    }
    return AD_OK;
}

static void builder_free(builder *b, size_t len)
{
    ad_tape *t = b->t;
    sp_free(t, b->base, len, sizeof *b->base);
    sp_free(t, b->sets, b->capsets, sizeof *b->sets);
    sp_free(t, b->pool, b->cappool, sizeof *b->pool);
    sp_free(t, b->mark, b->ncols, sizeof *b->mark);
    sp_free(t, b->pairs, b->cappairs, sizeof *b->pairs);
    sp_free(t, b->reach, len, 1);
}

/* ---- small sorts ---- */

static void sort_u32(uint32_t *a, size_t n)
{
    if (n < 24) {
        for (size_t i = 1; i < n; i++) {
            const uint32_t v = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1] > v; j--)
                a[j] = a[j - 1];
            a[j] = v;
        }
        return;
    }
    /* heapsort: no recursion, no allocation */
    for (size_t s = n / 2; s-- > 0;) {
        for (size_t r = s;;) {
            size_t c = 2 * r + 1;
            if (c >= n)
                break;
            if (c + 1 < n && a[c + 1] > a[c])
                c++;
            if (a[r] >= a[c])
                break;
            const uint32_t tmp = a[r];
            a[r] = a[c], a[c] = tmp, r = c;
        }
    }
    for (size_t end = n; end-- > 1;) {
        const uint32_t tmp = a[0];
        a[0] = a[end], a[end] = tmp;
        for (size_t r = 0;;) {
            size_t c = 2 * r + 1;
            if (c >= end)
                break;
            if (c + 1 < end && a[c + 1] > a[c])
                c++;
            if (a[r] >= a[c])
                break;
            const uint32_t tmp2 = a[r];
            a[r] = a[c], a[c] = tmp2, r = c;
        }
    }
}

/* ---- colourings ---- */

/* Greedy distance-2 colouring of the columns of the nrows x ncols pattern
 * (rowptr, col) with its transpose (cptr, crow): no two columns of one
 * colour share a row. forb: ncols scratch. Returns the colour count. */
static size_t color_d2(size_t nrows, size_t ncols, const size_t *rowptr, const int *col,
                       const size_t *cptr, const uint32_t *crow, uint32_t *color, size_t *forb)
{
    (void)nrows;
    size_t ncolors = 0;
    for (size_t j = 0; j < ncols; j++)
        forb[j] = SIZE_MAX, color[j] = UINT32_MAX;
    for (size_t j = 0; j < ncols; j++) {
        for (size_t p = cptr[j]; p < cptr[j + 1]; p++) {
            const size_t r = crow[p];
            for (size_t q = rowptr[r]; q < rowptr[r + 1]; q++) {
                const uint32_t c = color[col[q]];
                if (c != UINT32_MAX)
                    forb[c] = j;
            }
        }
        uint32_t c = 0;
        while (forb[c] == j)
            c++;
        color[j] = c;
        if (c + 1 > ncolors)
            ncolors = c + 1;
    }
    return ncolors;
}

/* Greedy star colouring of the graph (adj, aptr: both directions, no
 * self-loops) after Gebremedhin, Manne and Pothen's algorithm 4.1: a
 * distance-1 colouring in which, in addition, no path on four vertices is
 * coloured with two colours. */
static size_t color_star(size_t n, const size_t *aptr, const uint32_t *adj, uint32_t *color,
                         size_t *forb)
{
    size_t ncolors = 0;
    for (size_t j = 0; j < n; j++)
        forb[j] = SIZE_MAX, color[j] = UINT32_MAX;
    for (size_t v = 0; v < n; v++) {
        for (size_t p = aptr[v]; p < aptr[v + 1]; p++) {
            const uint32_t w = adj[p];
            if (color[w] != UINT32_MAX)
                forb[color[w]] = v;
        }
        for (size_t p = aptr[v]; p < aptr[v + 1]; p++) {
            const uint32_t w = adj[p];
            for (size_t q = aptr[w]; q < aptr[w + 1]; q++) {
                const uint32_t x = adj[q];
                if (x == v || color[x] == UINT32_MAX)
                    continue;
                if (color[w] == UINT32_MAX) {
                    forb[color[x]] = v;
                    continue;
                }
                for (size_t r = aptr[x]; r < aptr[x + 1]; r++) {
                    const uint32_t y = adj[r];
                    if (y != w && color[y] == color[w]) {
                        forb[color[x]] = v;
                        break;
                    }
                }
            }
        }
        uint32_t c = 0;
        while (forb[c] == v)
            c++;
        color[v] = c;
        if (c + 1 > ncolors)
            ncolors = c + 1;
    }
    return ncolors;
}

/* ---- the object ---- */

void ad_sparse_free(ad_sparse *sp)
{
    if (!sp)
        return;
    ad_tape *t = sp->t;
    sp_free(t, sp->rowptr, sp->nrows + 1, sizeof *sp->rowptr);
    sp_free(t, sp->col, sp->nnz, sizeof *sp->col);
    sp_free(t, sp->color, sp->ncols, sizeof *sp->color);
    sp_free(t, sp->src, sp->nnz, sizeof *sp->src);
    sp_free(t, sp->dir, sp->nnz, sizeof *sp->dir);
    sp_free(t, sp->in_loc, sp->ncols, sizeof *sp->in_loc);
    sp_free(t, sp->row_loc, sp->hessian ? 0 : sp->nrows, sizeof *sp->row_loc);
    sp_free(t, sp->rbase, sp->hessian ? sp->ncols : sp->nrows, sizeof *sp->rbase);
    sp_free(t, sp->sbase, sp->ncols, sizeof *sp->sbase);
    sp_free(t, sp->vptr, sp->nnz, sizeof *sp->vptr);
    ad__modes_release(t, sp);
    sp_free(t, sp->in_id, (size_t)sp->nin, sizeof *sp->in_id);
    sp_free(t, sp->out_id, (size_t)sp->nout, sizeof *sp->out_id);
    sp_free(t, sp->seeds, (size_t)sp->nout, sizeof *sp->seeds);
    sp_free(t, sp->ones, sp->nout_elems, sizeof *sp->ones);
    ad__free(&t->mem, sp, sizeof *sp);
}

static size_t node_size(const ad_tape *t, uint32_t id)
{
    const ad__node *n = ad__N(t, id);
    return (n->h & AD__EXT) ? ad_shape_size(ad__X(t, ad__a(n->h))->call.out.shape) : 1;
}

/* Checks the arguments of the constructors. */
static int check_args(ad_tape *t, int nout, const ad_node *out, int nin, const ad_node *in,
                      unsigned flags, unsigned allowed, const char *who)
{
    if (!out || !in)
        return ad__fail_call(t, AD_EMISUSE, "%s: the %s array is NULL", who,
                             !out ? "output" : "input");
    if (nout < 1 || nin < 1)
        return ad__fail_call(t, AD_EMISUSE, "%s: %s (%d); at least one is needed", who,
                             nout < 1 ? "no outputs" : "no inputs", nout < 1 ? nout : nin);
    if (flags & ~allowed)
        return ad__fail_call(t, AD_EMISUSE, "%s: unknown flags 0x%x", who, flags & ~allowed);
    char ctx[48]; /* "sparse_jacobian (outputs): operand 2 is ..." */
    snprintf(ctx, sizeof ctx, "%s (outputs)", who);
    for (int k = 0; k < nout; k++)
        if (!ad__check_call(t, out[k], ctx, k + 1))
            return AD_EMISUSE;
    snprintf(ctx, sizeof ctx, "%s (inputs)", who);
    for (int i = 0; i < nin; i++) {
        const ad__node *p = ad__check_call(t, in[i], ctx, i + 1);
        if (!p)
            return AD_EMISUSE;
        if (ad__opc(p->h) != AD_OP_LEAF)
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: input %d (node %u) is the result of %s, not a leaf", who,
                                 i + 1, (unsigned)in[i].id_, op_name(t, p));
        if (!(p->h & AD__GRAD))
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: input %d (node %u) is a constant; derivatives are taken "
                                 "with respect to variables",
                                 who, i + 1, (unsigned)in[i].id_);
    }
    return AD_OK;
}

/* The part of both constructors: the object, its inputs and outputs, the
 * column of each input node (col_of, len entries, made here). */
static int sparse_begin(ad_tape *t, int nout, const ad_node *out, int nin, const ad_node *in,
                        bool hessian, const char *who, ad_sparse **spp, size_t **col_of)
{
    ad_sparse *sp = ad__alloc(&t->mem, sizeof *sp);
    if (!sp)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    memset(sp, 0, sizeof *sp);
    sp->t = t;
    sp->hessian = hessian;
    sp->generation = t->generation;
    sp->len = t->len;
    sp->next_ext = t->next_ext;
    sp->nin = nin;
    sp->nout = nout;
    *spp = sp;
    sp->in_id = sp_alloc(t, (size_t)nin, sizeof *sp->in_id);
    sp->out_id = sp_alloc(t, (size_t)nout, sizeof *sp->out_id);
    sp->seeds = sp_alloc(t, (size_t)nout, sizeof *sp->seeds);
    *col_of = sp_alloc(t, t->len, sizeof **col_of);
    if (!sp->in_id || !sp->out_id || !sp->seeds || !*col_of)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    memset(*col_of, 0, t->len * sizeof **col_of);
    size_t ncols = 0;
    for (int i = 0; i < nin; i++) {
        const uint32_t id = in[i].id_;
        if ((*col_of)[id]) {
            int j = 0;
            while (in[j].id_ != id)
                j++;
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: input %d (node %u) is input %d again; name each input once",
                                 who, i + 1, (unsigned)id, j + 1);
        }
        sp->in_id[i] = id;
        (*col_of)[id] = ncols + 1;
        ncols += node_size(t, id);
        if (ad__N(t, id)->h & AD__EXT)
            sp->in_view |= ad__X(t, ad__a(ad__N(t, id)->h))->view != 0;
    }
    sp->ncols = ncols;
    size_t nelems = 0;
    for (int k = 0; k < nout; k++) {
        sp->out_id[k] = out[k].id_;
        nelems += node_size(t, out[k].id_);
    }
    sp->nout_elems = nelems;
    sp->ones = sp_alloc(t, nelems, sizeof *sp->ones);
    sp->in_loc = sp_alloc(t, ncols, sizeof *sp->in_loc);
    sp->color = sp_alloc(t, ncols, sizeof *sp->color);
    if (!sp->ones || !sp->in_loc || !sp->color)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    for (size_t e = 0; e < nelems; e++)
        sp->ones[e] = 1.0;
    size_t c = 0;
    for (int i = 0; i < nin; i++) {
        const size_t s = node_size(t, sp->in_id[i]);
        for (size_t e = 0; e < s; e++, c++) {
            loc l = {sp->in_id[i], (uint32_t)e, s};
            sp->in_loc[c] = l;
        }
    }
    return AD_OK;
}

/* Runs the marking pass and the forward pass of the pattern over nodes
 * 1..last; the outputs' flags are set (b->reach made) by the caller. */
static int pattern_forward(builder *b, uint32_t last, const size_t *col_of, const char *who)
{
    ad_tape *t = b->t;
    b->base = sp_alloc(t, t->len, sizeof *b->base);
    b->mark = sp_alloc(t, b->ncols, sizeof *b->mark);
    if (!b->base || !b->mark)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    memset(b->mark, 0, b->ncols * sizeof *b->mark);
    rule_flags(b);
    mark_pass(b, last);
    for (uint32_t id = 1; id <= last; id++) {
        if (!(b->reach[id] & R_NEED))
            continue; /* base[id] is never read */
        const int st = forward_node(b, id, col_of, who);
        if (st == AD_ENOMEM)
            return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for the index sets (%zu "
                                               "nodes, %zu indices so far)",
                                 who, (size_t)id, b->npool);
        if (st != AD_OK)
            return st;
    }
    return AD_OK;
}

/* Fills src/dir of every nonzero of a Jacobian: row r, colour of column. */
static int finish_common(ad_sparse *sp, const char *who)
{
    ad_tape *t = sp->t;
    sp->src = sp_alloc(t, sp->nnz, sizeof *sp->src);
    sp->dir = sp_alloc(t, sp->nnz, sizeof *sp->dir);
    sp->rbase = sp_alloc(t, sp->hessian ? sp->ncols : sp->nrows, sizeof *sp->rbase);
    sp->sbase = sp_alloc(t, sp->ncols, sizeof *sp->sbase);
    sp->vptr = sp_alloc(t, sp->nnz, sizeof *sp->vptr);
    if (!sp->src || !sp->dir || !sp->rbase || !sp->sbase || !sp->vptr)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    return AD_OK;
}

/* The marks, with flag on every output. */
static int make_reach(builder *b, const ad_sparse *sp, unsigned char flag, const char *who)
{
    ad_tape *t = b->t;
    b->reach = sp_alloc(t, t->len, 1);
    if (!b->reach)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
    memset(b->reach, 0, t->len);
    for (int k = 0; k < sp->nout; k++)
        b->reach[sp->out_id[k]] |= flag;
    return AD_OK;
}

static uint32_t last_output(const ad_sparse *sp)
{
    uint32_t last = 0;
    for (int k = 0; k < sp->nout; k++)
        last = sp->out_id[k] > last ? sp->out_id[k] : last;
    return last;
}

int ad_sparse_jacobian_new(ad_tape *t, int nout, const ad_node *out, int nin, const ad_node *in,
                           unsigned flags, ad_sparse **spp)
{
    static const char who[] = "sparse_jacobian";
    if (spp)
        *spp = NULL;
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (!spp)
        return ad__fail_call(t, AD_EMISUSE, "%s: sp is NULL", who);
    int st = check_args(t, nout, out, nin, in, flags, 0u, who);
    if (st != AD_OK)
        return st;
    if ((st = ad__modes_rules(t, false, who)) != AD_OK)
        return st;
    ad_sparse *sp = NULL;
    size_t *col_of = NULL;
    builder b;
    memset(&b, 0, sizeof b);
    b.t = t;
    size_t *cptr = NULL, *forb = NULL;
    uint32_t *crow = NULL;
    st = sparse_begin(t, nout, out, nin, in, false, who, &sp, &col_of);
    if (st != AD_OK)
        goto done;
    b.ncols = sp->ncols;
    if ((st = make_reach(&b, sp, R_NEED, who)) != AD_OK
        || (st = pattern_forward(&b, last_output(sp), col_of, who)) != AD_OK)
        goto done;
    /* rows: the outputs' elements, their sets sorted */
    sp->nrows = sp->nout_elems;
    sp->rowptr = sp_alloc(t, sp->nrows + 1, sizeof *sp->rowptr);
    sp->row_loc = sp_alloc(t, sp->nrows, sizeof *sp->row_loc);
    if (!sp->rowptr || !sp->row_loc) {
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    size_t r = 0, nnz = 0;
    sp->rowptr[0] = 0;
    for (int k = 0; k < nout; k++) {
        const size_t s = node_size(t, sp->out_id[k]);
        for (size_t e = 0; e < s; e++, r++) {
            loc l = {sp->out_id[k], (uint32_t)e, s};
            sp->row_loc[r] = l;
            nnz += b.sets[b.base[sp->out_id[k]] + e].len;
            sp->rowptr[r + 1] = nnz;
        }
    }
    sp->nnz = nnz;
    sp->col = sp_alloc(t, nnz, sizeof *sp->col);
    cptr = sp_alloc(t, sp->ncols + 1, sizeof *cptr);
    crow = sp_alloc(t, nnz, sizeof *crow);
    forb = sp_alloc(t, sp->ncols, sizeof *forb);
    if (!sp->col || !cptr || !crow || !forb || (st = finish_common(sp, who)) != AD_OK) {
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    r = 0;
    for (int k = 0; k < nout; k++) {
        const size_t s = node_size(t, sp->out_id[k]);
        for (size_t e = 0; e < s; e++, r++) {
            const sset ss = b.sets[b.base[sp->out_id[k]] + e];
            uint32_t *dst = (uint32_t *)crow + sp->rowptr[r]; /* crow as scratch */
            if (ss.len) /* an empty row: the pool may not exist */
                memcpy(dst, b.pool + ss.off, ss.len * sizeof *dst);
            sort_u32(dst, ss.len);
            for (size_t q = 0; q < ss.len; q++)
                sp->col[sp->rowptr[r] + q] = (int)dst[q];
        }
    }
    /* the transpose, for the colouring */
    memset(cptr, 0, (sp->ncols + 1) * sizeof *cptr);
    for (size_t q = 0; q < nnz; q++)
        cptr[sp->col[q] + 1]++;
    for (size_t j = 0; j < sp->ncols; j++)
        cptr[j + 1] += cptr[j];
    for (size_t i = 0; i < sp->nrows; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++)
            crow[cptr[sp->col[q]]++] = (uint32_t)i;
    for (size_t j = sp->ncols; j > 0; j--)
        cptr[j] = cptr[j - 1];
    cptr[0] = 0;
    sp->ncolors = color_d2(sp->nrows, sp->ncols, sp->rowptr, sp->col, cptr, crow, sp->color, forb);
    for (size_t i = 0; i < sp->nrows; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++) {
            sp->src[q] = (uint32_t)i;
            sp->dir[q] = sp->color[sp->col[q]];
        }
    /* the tangent storage now, so the first evaluation allocates nothing */
    st = ad__modes_layout(t, sp->ncolors < BLOCK ? (sp->ncolors ? sp->ncolors : 1) : BLOCK, who);
done:
    sp_free(t, cptr, sp ? sp->ncols + 1 : 0, sizeof *cptr);
    sp_free(t, crow, sp ? sp->nnz : 0, sizeof *crow);
    sp_free(t, forb, sp ? sp->ncols : 0, sizeof *forb);
    sp_free(t, col_of, t->len, sizeof *col_of);
    builder_free(&b, t->len);
    if (st != AD_OK) {
        ad_sparse_free(sp);
        return st;
    }
    *spp = sp;
    return AD_OK;
}

/* Binary search of column c in row r of the symmetric adjacency. */
static size_t find_adj(const size_t *aptr, const uint32_t *adj, size_t r, uint32_t c)
{
    size_t lo = aptr[r], hi = aptr[r + 1];
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (adj[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Where each nonzero (i, j), i >= j, of a Hessian is read: row i at colour
 * of j when no other column of row i (diagonal included) has that colour,
 * else row j at the colour of i. false: some nonzero has neither. ok,
 * cnt: scratch (adjacency entries, colours). */
static bool recover_map(ad_sparse *sp, const size_t *aptr, const uint32_t *adj,
                        unsigned char *ok, size_t *cnt, size_t *stamp)
{
    const size_t n = sp->ncols;
    for (size_t c = 0; c < n; c++)
        stamp[c] = SIZE_MAX, cnt[c] = 0;
    for (size_t i = 0; i < n; i++) {
        /* colour counts of row i: its neighbours and itself */
        const uint32_t ci = sp->color[i];
        stamp[ci] = i, cnt[ci] = 1;
        for (size_t p = aptr[i]; p < aptr[i + 1]; p++) {
            const uint32_t c = sp->color[adj[p]];
            if (stamp[c] != i)
                stamp[c] = i, cnt[c] = 0;
            cnt[c]++;
        }
        for (size_t p = aptr[i]; p < aptr[i + 1]; p++)
            ok[p] = cnt[sp->color[adj[p]]] == 1;
        ok[aptr[n] + i] = cnt[ci] == 1; /* the diagonal */
    }
    for (size_t i = 0; i < n; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++) {
            const uint32_t j = (uint32_t)sp->col[q];
            if (j == i) {
                if (!ok[aptr[n] + i])
                    return false;
                sp->src[q] = (uint32_t)i, sp->dir[q] = sp->color[i];
            } else if (ok[find_adj(aptr, adj, i, j)]) {
                sp->src[q] = (uint32_t)i, sp->dir[q] = sp->color[j];
            } else if (ok[find_adj(aptr, adj, j, (uint32_t)i)]) {
                sp->src[q] = j, sp->dir[q] = sp->color[i];
            } else {
                return false;
            }
        }
    return true;
}

int ad_sparse_hessian_new(ad_tape *t, int nout, const ad_node *out, int nin, const ad_node *in,
                          unsigned flags, ad_sparse **spp)
{
    static const char who[] = "sparse_hessian";
    if (spp)
        *spp = NULL;
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (!spp)
        return ad__fail_call(t, AD_EMISUSE, "%s: sp is NULL", who);
    int st = check_args(t, nout, out, nin, in, flags, AD_SPARSE_DISTANCE2, who);
    if (st != AD_OK)
        return st;
    if ((st = ad__modes_rules(t, true, who)) != AD_OK)
        return st;
    ad_sparse *sp = NULL;
    size_t *col_of = NULL, *aptr = NULL, *cnt = NULL, *forb = NULL, *stamp = NULL;
    size_t nadj = 0;
    uint32_t *adj = NULL;
    unsigned char *ok = NULL;
    builder b;
    memset(&b, 0, sizeof b);
    b.t = t;
    st = sparse_begin(t, nout, out, nin, in, true, who, &sp, &col_of);
    if (st != AD_OK)
        goto done;
    b.ncols = sp->ncols;
    const uint32_t last = last_output(sp);
    if ((st = make_reach(&b, sp, R_REACH, who)) != AD_OK
        || (st = pattern_forward(&b, last, col_of, who)) != AD_OK)
        goto done;
    if (hessian_pairs(&b, last) != AD_OK) {
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory for the pattern (%zu pairs)", who,
                           b.npairs);
        goto done;
    }
    /* bucket the pairs by row, sort and drop repeats: lower triangle CSR */
    const size_t n = sp->ncols;
    sp->nrows = n;
    sp->rowptr = sp_alloc(t, n + 1, sizeof *sp->rowptr);
    uint32_t *cols = sp_alloc(t, b.npairs, sizeof *cols);
    if (!sp->rowptr || !cols) {
        sp_free(t, cols, b.npairs, sizeof *cols);
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    memset(sp->rowptr, 0, (n + 1) * sizeof *sp->rowptr);
    for (size_t p = 0; p < b.npairs; p++)
        sp->rowptr[(b.pairs[p] >> 32) + 1]++;
    for (size_t i = 0; i < n; i++)
        sp->rowptr[i + 1] += sp->rowptr[i];
    for (size_t p = 0; p < b.npairs; p++)
        cols[sp->rowptr[b.pairs[p] >> 32]++] = (uint32_t)b.pairs[p];
    for (size_t i = n; i > 0; i--)
        sp->rowptr[i] = sp->rowptr[i - 1];
    sp->rowptr[0] = 0;
    size_t nnz = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t s = sp->rowptr[i], e = sp->rowptr[i + 1];
        sort_u32(cols + s, e - s);
        sp->rowptr[i] = nnz;
        for (size_t q = s; q < e; q++)
            if (q == s || cols[q] != cols[q - 1])
                cols[nnz++] = cols[q];
    }
    sp->rowptr[n] = nnz;
    sp->nnz = nnz;
    sp->col = sp_alloc(t, nnz, sizeof *sp->col);
    if (!sp->col) {
        sp_free(t, cols, b.npairs, sizeof *cols);
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    for (size_t q = 0; q < nnz; q++)
        sp->col[q] = (int)cols[q];
    sp_free(t, cols, b.npairs, sizeof *cols);
    if ((st = finish_common(sp, who)) != AD_OK)
        goto done;
    /* the symmetric adjacency (off the diagonal), rows sorted */
    aptr = sp_alloc(t, n + 1, sizeof *aptr);
    for (size_t i = 0; i < n; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++)
            nadj += (size_t)sp->col[q] != i ? 2 : 0;
    adj = sp_alloc(t, nadj, sizeof *adj);
    ok = sp_alloc(t, nadj + n, 1);
    cnt = sp_alloc(t, n, sizeof *cnt);
    forb = sp_alloc(t, n, sizeof *forb);
    stamp = sp_alloc(t, n, sizeof *stamp);
    if (!aptr || !adj || !ok || !cnt || !forb || !stamp) {
        st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
        goto done;
    }
    memset(aptr, 0, (n + 1) * sizeof *aptr);
    for (size_t i = 0; i < n; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++)
            if ((size_t)sp->col[q] != i)
                aptr[i + 1]++, aptr[sp->col[q] + 1]++;
    for (size_t i = 0; i < n; i++)
        aptr[i + 1] += aptr[i];
    /* row i: first its lower columns j < i (in order), then the rows k > i
     * that name i (in order): sorted */
    for (size_t i = 0; i < n; i++)
        cnt[i] = aptr[i];
    for (size_t i = 0; i < n; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++) {
            const size_t j = (size_t)sp->col[q];
            if (j != i) {
                adj[cnt[i]++] = (uint32_t)j;
                adj[cnt[j]++] = (uint32_t)i;
            }
        }
    bool direct = false;
    if (!(flags & AD_SPARSE_DISTANCE2)) {
        sp->ncolors = color_star(n, aptr, adj, sp->color, forb);
        direct = recover_map(sp, aptr, adj, ok, cnt, stamp);
    }
    if (!direct) {
        /* distance 2 on the symmetric pattern, diagonal included: columns
         * sharing a row differ, so every nonzero is read directly */
        size_t *rp = sp_alloc(t, n + 1, sizeof *rp);
        int *ci = sp_alloc(t, nadj + n, sizeof *ci);
        uint32_t *cr = sp_alloc(t, nadj + n, sizeof *cr);
        if (!rp || !ci || !cr) {
            sp_free(t, rp, n + 1, sizeof *rp);
            sp_free(t, ci, nadj + n, sizeof *ci);
            sp_free(t, cr, nadj + n, sizeof *cr);
            st = ad__fail_call(t, AD_ENOMEM, "%s: out of memory", who);
            goto done;
        }
        rp[0] = 0;
        for (size_t i = 0; i < n; i++) {
            size_t p = rp[i];
            for (size_t q = aptr[i]; q < aptr[i + 1]; q++)
                ci[p] = (int)adj[q], cr[p] = adj[q], p++;
            ci[p] = (int)i, cr[p] = (uint32_t)i, p++; /* symmetric: its own transpose */
            rp[i + 1] = p;
        }
        sp->ncolors = color_d2(n, n, rp, ci, rp, cr, sp->color, forb);
        sp_free(t, rp, n + 1, sizeof *rp);
        sp_free(t, ci, nadj + n, sizeof *ci);
        sp_free(t, cr, nadj + n, sizeof *cr);
        if (!recover_map(sp, aptr, adj, ok, cnt, stamp)) { /* cannot happen */
            st = ad__fail_call(t, AD_ENOMEM, "%s: no direct recovery of the colouring", who);
            goto done;
        }
    }
    st = ad__modes_layout(t, sp->ncolors < BLOCK ? (sp->ncolors ? sp->ncolors : 1) : BLOCK, who);
done:
    sp_free(t, aptr, sp ? sp->ncols + 1 : 0, sizeof *aptr);
    sp_free(t, adj, nadj, sizeof *adj);
    sp_free(t, ok, nadj + (sp ? sp->ncols : 0), 1);
    sp_free(t, cnt, sp ? sp->ncols : 0, sizeof *cnt);
    sp_free(t, forb, sp ? sp->ncols : 0, sizeof *forb);
    sp_free(t, stamp, sp ? sp->ncols : 0, sizeof *stamp);
    sp_free(t, col_of, t->len, sizeof *col_of);
    builder_free(&b, t->len);
    if (st != AD_OK) {
        ad_sparse_free(sp);
        return st;
    }
    *spp = sp;
    return AD_OK;
}

/* ---- queries ---- */

size_t ad_sparse_rows(const ad_sparse *sp) { return sp ? sp->nrows : 0; }
size_t ad_sparse_cols(const ad_sparse *sp) { return sp ? sp->ncols : 0; }
size_t ad_sparse_nnz(const ad_sparse *sp) { return sp ? sp->nnz : 0; }
size_t ad_sparse_colors(const ad_sparse *sp) { return sp ? sp->ncolors : 0; }

void ad_sparse_pattern(const ad_sparse *sp, int *rows, int *cols)
{
    if (!sp)
        return;
    for (size_t i = 0; i < sp->nrows; i++)
        for (size_t q = sp->rowptr[i]; q < sp->rowptr[i + 1]; q++) {
            if (rows)
                rows[q] = (int)i;
            if (cols)
                cols[q] = sp->col[q];
        }
}

void ad_sparse_csr(const ad_sparse *sp, size_t *rowptr, int *cols)
{
    if (!sp)
        return;
    if (rowptr)
        memcpy(rowptr, sp->rowptr, (sp->nrows + 1) * sizeof *rowptr);
    if (cols && sp->nnz)
        memcpy(cols, sp->col, sp->nnz * sizeof *cols);
}

/* ---- evaluation ---- */

int ad_sparse_eval(ad_sparse *sp, const double *x, size_t nx, const double *w, size_t nw,
                   double *values)
{
    if (!sp)
        return AD_EMISUSE;
    ad_tape *t = sp->t;
    const char *who = sp->hessian ? "sparse_eval (Hessian)" : "sparse_eval (Jacobian)";
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (t->generation != sp->generation || t->len != sp->len || t->next_ext != sp->next_ext)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the tape was reset or recorded on since this pattern was made "
                             "(%zu nodes then, %zu now); make it again",
                             who, sp->len - 1, t->len - 1);
    if (!values)
        return ad__fail_call(t, AD_EMISUSE, "%s: values is NULL", who);
    if ((x == NULL) != (nx == 0) || (x && nx != sp->ncols))
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: x has %zu values%s but the inputs have %zu elements", who, nx,
                             x ? "" : " and is NULL", sp->ncols);
    if (x && sp->in_view)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: an input is an ad_param; write its buffer and pass x NULL",
                             who);
    if ((w == NULL) != (nw == 0) || (w && !sp->hessian)
        || (w && nw != sp->nout_elems))
        return ad__fail_call(t, AD_EMISUSE,
                             sp->hessian ? "%s: %zu weights%s for %zu output elements (one "
                                           "weight per output element: sigma and the "
                                           "multipliers)"
                                         : "%s: %zu weights%s, but a Jacobian takes none "
                                           "(w NULL, nw 0; it had %zu output elements)",
                             who, nw, w || !nw ? "" : " (w NULL)", sp->nout_elems);
    if (sp->hessian && !w)
        for (int k = 0; k < sp->nout; k++) {
            const ad__node *o = ad__N(t, sp->out_id[k]);
            if (o->h & AD__EXT && ad__X(t, ad__a(o->h))->call.out.shape.ndim != 0) {
                char buf[48];
                return ad__fail_call(
                    t, AD_EMISUSE,
                    "%s: output %d is %s, not a scalar, and no weights were given; the "
                    "Hessian is of a scalar function: pass one weight per output element "
                    "(%zu) for the Hessian of their weighted sum",
                    who, k + 1, ad__shape_str(ad__X(t, ad__a(o->h))->call.out.shape, buf, sizeof buf),
                    sp->nout_elems);
            }
        }
    /* the point */
    if (x) {
        size_t c = 0;
        for (int i = 0; i < sp->nin; i++) {
            ad__node *n = ad__N(t, sp->in_id[i]);
            if (n->h & AD__EXT) {
                ad__ext *xe = ad__X(t, ad__a(n->h));
                const size_t s = ad_shape_size(xe->call.out.shape);
                memcpy(xe->call.out.val, x + c, s * sizeof *x);
                c += s;
            } else {
                n->v = x[c++];
            }
        }
    }
    /* the weights, per output */
    size_t off = 0;
    for (int k = 0; k < sp->nout; k++) {
        sp->seeds[k] = (w ? w : sp->ones) + off;
        off += node_size(t, sp->out_id[k]);
    }
    const size_t nc = sp->ncolors ? sp->ncolors : 1;
    const size_t K = nc < BLOCK ? nc : BLOCK;
    size_t stamp;
    bool cleared;
    int st = ad__modes_claim(t, K, sp, who, &stamp, &cleared);
    if (st != AD_OK)
        return st;
    const bool one_pass = nc <= K;
    if (stamp != sp->stamp) { /* the storage moved: where everything is */
        for (size_t c = 0; c < sp->ncols; c++) {
            const loc l = sp->in_loc[c];
            sp->sbase[c] = ad__modes_tan(t, l.id) + l.e;
            if (sp->hessian)
                sp->rbase[c] = ad__modes_gtan(t, l.id) + l.e;
        }
        for (size_t r = 0; !sp->hessian && r < sp->nrows; r++) {
            const loc l = sp->row_loc[r];
            sp->rbase[r] = ad__modes_tan(t, l.id) + l.e;
        }
        const loc *rl = sp->hessian ? sp->in_loc : sp->row_loc;
        for (size_t q = 0; one_pass && q < sp->nnz; q++)
            sp->vptr[q] = sp->rbase[sp->src[q]] + sp->dir[q] * rl[sp->src[q]].size;
        sp->stamp = stamp;
    }
    if (cleared) /* the layout cleared the marks: the inputs are seeded */
        for (int i = 0; i < sp->nin; i++)
            ad__modes_seeded(t, sp->in_id[i]);
    int result = AD_OK;
    for (size_t c0 = 0; c0 < nc; c0 += K) {
        /* seeds: each input element the unit vector of its colour (or 0) */
        for (size_t c = 0; c < sp->ncols; c++) {
            double *p = sp->sbase[c];
            const size_t stride = sp->in_loc[c].size, d = sp->color[c] - c0;
            for (size_t k = 0; k < K; k++)
                p[k * stride] = 0.0;
            if (sp->color[c] >= c0 && d < K)
                p[d * stride] = 1.0;
        }
        st = ad__modes_forward(t, who);
        if (st != AD_OK && result == AD_OK)
            result = st; /* a changed branch or a singular matrix: values still made */
        if (sp->hessian)
            ad__modes_reverse(t, (size_t)sp->nout, sp->out_id, sp->seeds);
        if (one_pass) {
            for (size_t q = 0; q < sp->nnz; q++)
                values[q] = *sp->vptr[q];
            continue;
        }
        const loc *rl = sp->hessian ? sp->in_loc : sp->row_loc;
        for (size_t q = 0; q < sp->nnz; q++) {
            const size_t d = sp->dir[q] - c0;
            if (sp->dir[q] >= c0 && d < K)
                values[q] = sp->rbase[sp->src[q]][d * rl[sp->src[q]].size];
        }
    }
    if (result != AD_OK) /* the message of the pass that failed is kept */
        t->call_status = result;
    return result;
}
