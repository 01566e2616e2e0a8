/* sweep.c -- the one reverse sweep, and replay.
 *
 * Neither loop knows any op: an inline node calls its op's scalar kernel,
 * an EXT node its descriptor's forward or vjp through an ad_call. */
#include "internal.h"

#include <string.h>

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
                memset(x->grad, 0, ad_shape_size(x->shape) * sizeof *x->grad);
            x->reached = 0;
        } else {
            n->g = 0;
        }
    }
    t->adj_dirty = false;
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
    size_t size = ad_shape_size(out.shape);
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

    for (size_t j = 0; j < size; j++)
        out.grad[j] = seed ? seed[j] : 1.0;
    if (o->h & AD__EXT)
        ad__X(t, ad__a(o->h))->reached = 1;

    for (uint32_t i = output.id_; i > 0; i--) {
        ad__node *n = ad__N(t, i);
        const uint64_t h = n->h;
        if (!(h & AD__GRAD))
            continue; /* depends on no variable */
        if (!(h & AD__EXT)) {
            if (n->g != 0.0) /* a zero adjoint: not between output and variables */
                ad__ops[ad__opc(h)]->svjp(t, n);
            continue;
        }
        ad__ext *x = ad__X(t, ad__a(h));
        if (!x->reached)
            continue;
        ad_tensor in[AD_MAX_ARITY];
        ad_call call;
        ad__bind(t, x, &call, in);
        x->def->vjp(&call);
        for (int k = 0; k < x->nin; k++) {
            ad__node *a = ad__N(t, x->in[k]);
            if ((a->h & (AD__EXT | AD__GRAD)) == (AD__EXT | AD__GRAD))
                ad__X(t, ad__a(a->h))->reached = 1;
        }
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

int ad_replay(ad_tape *t)
{
    if (!t)
        return AD_EMISUSE;
    if (t->status != AD_OK)
        return t->status;
    for (size_t i = 1; i < t->len; i++) {
        ad__node *n = ad__N(t, (uint32_t)i);
        const uint64_t h = n->h;
        if (!(h & AD__EXT)) {
            ad__ops[ad__opc(h)]->sfwd(t, n);
            n->g = 0;
            continue;
        }
        ad__ext *x = ad__X(t, ad__a(h));
        if (ad__opc(h) != AD_OP_LEAF) {
            ad_tensor in[AD_MAX_ARITY];
            ad_call call;
            ad__bind(t, x, &call, in);
            x->def->forward(&call);
        }
        if (x->grad && !x->caller_grad)
            memset(x->grad, 0, ad_shape_size(x->shape) * sizeof *x->grad);
        x->reached = 0;
    }
    t->adj_dirty = false;
    return AD_OK;
}
