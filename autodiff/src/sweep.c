/* sweep.c -- the one reverse sweep, and replay.
 *
 * Neither loop knows any op. An inline scalar node dispatches on its op
 * code to the kernels generated in scalar_ops.h (inlined here: a long
 * chain of scalar ops costs no call per node); an EXT node calls its
 * descriptor's forward or vjp through an ad_call. Both walk the node
 * chunks directly instead of indexing node by node. */
#include "internal.h"
#include "scalar_ops.h"

#include <string.h>

#define CHUNK ((size_t)1 << AD__NODE_SHIFT)

/* Zeroes every tape-owned adjoint (caller gradient buffers accumulate). */
static void zero_adjoints(ad_tape *t)
{
    for (size_t i = 1; i < t->len; i++) {
        ad__node *n = ad__N(t, (uint32_t)i);
        if (!(n->h & AD__GRAD))
            continue;
        if (n->h & AD__EXT) {
            ad__ext *x = ad__X(t, ad__a(n->h));
            if (!x->caller_grad)
                memset(x->call.out.grad, 0, ad_shape_size(x->call.out.shape) * sizeof(double));
            x->reached = 0;
        } else {
            n->g = 0;
        }
    }
    t->adj_dirty = false;
}

/* The vjp of one EXT node that an adjoint reached; marks its EXT inputs. */
static void ext_vjp(const ad_tape *t, uint64_t h)
{
    ad__ext *x = ad__X(t, ad__a(h));
    if (!x->reached)
        return; /* not between the output and the variables */
    x->def->vjp(&x->call);
    for (int k = 0; k < x->call.nin; k++) {
        const ad__node *a = ad__N(t, x->in[k]);
        if ((a->h & (AD__EXT | AD__GRAD)) == (AD__EXT | AD__GRAD))
            ad__X(t, ad__a(a->h))->reached = 1;
    }
}

static int sweep(ad_tape *t, ad_node output, const double *seed, const char *who)
{
    if (!t)
        return AD_EMISUSE;
    if (t->status != AD_OK)
        return t->status;
    ad__node *o = ad__check(t, output, who, 1);
    if (!o)
        return t->status;
    ad_tensor out;
    ad__view(t, output.id_, &out);
    if (!seed && out.shape.ndim != 0) {
        char buf[48];
        return ad__fail(t, AD_EMISUSE,
                        "%s: the output is %s, not a scalar; pass a seed of the same size "
                        "with ad_backward_seed",
                        who, ad__shape_str(out.shape, buf, sizeof buf));
    }
    if (t->adj_dirty)
        zero_adjoints(t);
    t->adj_dirty = true;
    if (!(o->h & AD__GRAD))
        return AD_OK; /* no variable reaches the output: all gradients are 0 */

    /* Add, not assign: tape adjoints are zero here, and an ad_param output's
     * buffer accumulates like every caller gradient. */
    const size_t size = ad_shape_size(out.shape);
    for (size_t j = 0; j < size; j++)
        out.grad[j] += seed ? seed[j] : 1.0;
    if (o->h & AD__EXT)
        ad__X(t, ad__a(o->h))->reached = 1;

    /* From the output back to node 1, a chunk at a time. */
    void *const *ch = t->nodes.chunk;
    const double *k = t->consts;
    size_t end = (size_t)output.id_ + 1;
    for (size_t c = (end - 1) / CHUNK + 1; c-- > 0;) {
        const ad__node *base = ch[c];
        const ad__node *n = base + (end - c * CHUNK), *lo = base + (c == 0);
        while (n-- > lo) {
            const uint64_t h = n->h;
            const uint64_t kind = h & (AD__GRAD | AD__EXT);
            if (kind == AD__GRAD) {
                if (n->g != 0.0) /* zero: not between the output and the variables */
                    ad__svjp(ch, k, n);
            } else if (kind == (AD__GRAD | AD__EXT)) {
                ext_vjp(t, h);
            } /* else: depends on no variable */
        }
        end = c * CHUNK;
    }
    return AD_OK;
}

int ad_backward(ad_tape *t, ad_node output) { return sweep(t, output, NULL, "backward"); }

int ad_backward_seed(ad_tape *t, ad_node output, const double *seed)
{
    if (t && t->status == AD_OK && !seed)
        return ad__fail(t, AD_EMISUSE, "backward_seed: seed is NULL");
    return sweep(t, output, seed, "backward_seed");
}

static void ext_forward(ad_tape *t, uint64_t h)
{
    ad__ext *x = ad__X(t, ad__a(h));
    if (ad__opc(h) != AD_OP_LEAF)
        x->def->forward(&x->call);
    if (x->call.out.grad && !x->caller_grad)
        memset(x->call.out.grad, 0, ad_shape_size(x->call.out.shape) * sizeof(double));
    x->reached = 0;
}

int ad_replay(ad_tape *t)
{
    if (!t)
        return AD_EMISUSE;
    if (t->status != AD_OK)
        return t->status;
    void *const *ch = t->nodes.chunk;
    const double *k = t->consts;
    const size_t len = t->len;
    for (size_t c = 0; c * CHUNK < len; c++) {
        ad__node *base = ch[c];
        size_t hi = len - c * CHUNK;
        ad__node *o = base + (c == 0), *end = base + (hi < CHUNK ? hi : CHUNK);
        for (; o < end; o++) {
            const uint64_t h = o->h;
            if (h & AD__EXT) {
                ext_forward(t, h);
            } else {
                ad__sfwd(ch, k, o);
                o->g = 0;
            }
        }
    }
    t->adj_dirty = false;
    return AD_OK;
}
