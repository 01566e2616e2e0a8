/* min_tape.c -- see min_tape.h. Recording is out of line (one call per op,
 * like the engine's API); the two passes are one switch loop each. */
#include "min_tape.h"

#include <stdlib.h>

int mt_init(min_tape *t, size_t cap, double scale_constant)
{
    t->n = malloc(cap * sizeof *t->n);
    t->cap = cap;
    t->len = 1;
    t->k[0] = scale_constant;
    return t->n != NULL;
}

void mt_free(min_tape *t) { free(t->n); }
void mt_reset(min_tape *t) { t->len = 1; }

static uint32_t put(min_tape *t, uint32_t op, uint32_t a, uint32_t b, double v)
{
    mt_node *o = &t->n[t->len];
    o->op = op;
    o->a = a;
    o->b = b;
    o->v = v;
    o->g = 0;
    return (uint32_t)t->len++;
}

uint32_t mt_leaf(min_tape *t, double v) { return put(t, MT_LEAF, 0, 0, v); }
uint32_t mt_add(min_tape *t, uint32_t a, uint32_t b)
{
    return put(t, MT_ADD, a, b, t->n[a].v + t->n[b].v);
}
uint32_t mt_sub(min_tape *t, uint32_t a, uint32_t b)
{
    return put(t, MT_SUB, a, b, t->n[a].v - t->n[b].v);
}
uint32_t mt_scale(min_tape *t, uint32_t a) { return put(t, MT_SCALE, a, 0, t->k[0] * t->n[a].v); }
uint32_t mt_square(min_tape *t, uint32_t a)
{
    return put(t, MT_SQUARE, a, a, t->n[a].v * t->n[a].v);
}

void mt_replay(min_tape *t)
{
    mt_node *n = t->n;
    for (mt_node *o = n + 1, *end = n + t->len; o < end; o++) {
        const double x = n[o->a].v, y = n[o->b].v;
        switch (o->op) {
        case MT_ADD: o->v = x + y; break;
        case MT_SUB: o->v = x - y; break;
        case MT_SCALE: o->v = t->k[o->b] * x; break;
        case MT_SQUARE: o->v = x * x; break;
        default: break; /* a leaf keeps its value */
        }
        o->g = 0;
    }
}

void mt_sweep(min_tape *t, uint32_t out)
{
    mt_node *n = t->n;
    n[out].g = 1;
    for (mt_node *o = n + out + 1; o-- > n + 1;) {
        const double g = o->g;
        if (g == 0.0)
            continue;
        mt_node *a = &n[o->a], *b = &n[o->b];
        switch (o->op) {
        case MT_ADD: a->g += g, b->g += g; break;
        case MT_SUB: a->g += g, b->g -= g; break;
        case MT_SCALE: a->g += g * t->k[o->b]; break;
        case MT_SQUARE: a->g += g * 2.0 * a->v; break;
        default: break;
        }
    }
}
