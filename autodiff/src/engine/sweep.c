/* sweep.c -- the one reverse sweep, and replay.
 *
 * Neither loop knows any op. An inline scalar node dispatches on its op
 * code to the kernels generated in scalar_ops.h (inlined here: a long
 * chain of scalar ops costs no call per node); an EXT node calls its
 * descriptor's forward or vjp through an ad_call. Both walk the node
 * chunks directly instead of indexing node by node. */
#include "internal.h"
#include "scalar_ops.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK ((size_t)1 << AD__NODE_SHIFT)

/* Tensor adjoints are never zeroed in bulk. An EXT node's reached flag says
 * whether its gradient buffer holds this sweep's sum yet; until it does,
 * the buffer is "fresh" -- stale numbers from an earlier sweep, or a
 * caller buffer under AD_SWEEP_ASSIGN -- and the first vjp to reach it
 * writes instead of adding (ad__op.vjp_to). That saves a pass over every
 * adjoint per replay and, for a weight matrix, reading dW in the sweep.
 * Buffers no adjoint reached are zeroed when the sweep ends. Inline
 * scalar adjoints live in the nodes and are zeroed with them. */

/* Makes every adjoint fresh again: for a second sweep without a replay. */
static void reset_adjoints(const ad__eval *e)
{
    for (size_t i = 1; i < e->len; i++) {
        ad__node *n = ad__Nc(e->nodes, (uint32_t)i);
        if (!(n->h & AD__GRAD))
            continue;
        if (n->h & AD__EXT)
            ad__Xc(e->exts, ad__a(n->h))->reached = 0;
        else
            n->g = 0;
    }
    e->ss->adj_dirty = false;
}

/* Whether x's gradient buffer holds no part of this sweep's sum yet. A
 * parameter with an update hook (AD__HK_OWN) takes this sweep's gradient
 * alone. */
static bool is_fresh(const ad__ext *x, bool assign_params)
{
    return !x->reached && (!x->caller_grad || assign_params || (x->hook & AD__HK_OWN));
}

/* The vjp of one EXT node that an adjoint reached; marks its EXT inputs
 * and counts the buffers reached for the first time in *nreached. */
static void ext_vjp(const ad__eval *e, uint64_t h, bool assign_params, size_t *nreached)
{
    ad__ext *x = ad__Xc(e->exts, ad__a(h));
    if (!x->reached) {
        if (x->hook & AD__HK_FIRE) /* a parameter's uses end here all the same */
            ad__hooks_fire(e, x->node, assign_params, nreached);
        return; /* not between the output and the variables */
    }
    const int nin = x->call.nin;
    unsigned fresh = 0;
    for (int k = 0; k < nin; k++)
        if (x->src[k] && is_fresh(x->src[k], assign_params))
            fresh |= 1u << k;
    if (fresh & x->dup) {
        /* An operand named twice (dot(y, y)) gets two contributions: it
         * is zeroed and added to, whatever order the op writes them in. */
        ad__zero_fresh(&x->call, fresh & x->dup);
        fresh &= ~(unsigned)x->dup;
    }
    const unsigned op = x->op;
    if (x->hook & AD__HK_FUSED) { /* some operand's update runs inside */
        const ad__upd *upd[AD_MAX_ARITY];
        ad__upd store[AD_MAX_ARITY];
        ad__hooks_upd(e, x, upd, store);
        ad__vjp_update(op)(&x->call, fresh, upd);
    } else if (op < AD_OP_CUSTOM) {
        ad__ops[op]->vjp_to(&x->call, fresh);
    } else { /* the caller's vjp adds */
        ad__zero_fresh(&x->call, fresh);
        x->def->vjp(&x->call);
    }
    for (int k = 0; k < nin; k++)
        if (x->src[k] && !x->src[k]->reached) {
            x->src[k]->reached = 1;
            ++*nreached;
        }
    if (x->hook & AD__HK_FIRE)
        ad__hooks_fire(e, x->node, assign_params, nreached);
}

/* Zeroes the fresh buffers no adjoint reached: a node the output does not
 * depend on has gradient 0. One pass over the EXT records, skipped when
 * the sweep reached every buffer (nreached of them). */
static void zero_unreached(const ad__eval *e, bool assign_params, size_t nreached)
{
    if (nreached == e->ext_grads)
        return;
    for (size_t i = 0; i < e->next_ext; i++) {
        ad__ext *x = ad__Xc(e->exts, (uint32_t)i);
        if (x->call.out.grad && is_fresh(x, assign_params))
            memset(x->call.out.grad, 0, ad_shape_size(x->call.out.shape) * sizeof(double));
    }
}

/* ---- AD_SWEEP_ASSIGN and shared caller buffers ----
 * Writing a fresh buffer is right only if one node owns it. When two
 * ad_params share gradient memory (a tied weight recorded twice, or
 * overlapping slices of one block), the second write would erase the
 * first. So the first assigning sweep after recording sorts the caller
 * buffers by address, once, and if any two overlap, assigning sweeps zero
 * every caller buffer and then add: the same result, each element's total. */

typedef struct span {
    uintptr_t lo, hi; /* [lo, hi) in bytes */
} span;

static int by_start(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

size_t ad__count_caller_grads(const ad__eval *e)
{
    size_t k = 0;
    for (size_t i = 0; i < e->next_ext; i++)
        k += ad__Xc(e->exts, (uint32_t)i)->caller_grad;
    return k;
}

int ad__check_shared(const ad__eval *e)
{
    const size_t k = ad__count_caller_grads(e);
    e->ss->grads_shared = false;
    if (k >= 2) {
        /* scratch from the arena: reused after a reset, so a loop that
         * re-records allocates nothing in steady state */
        const size_t nd = (k * sizeof(span) + sizeof(double) - 1) / sizeof(double);
        span *s = (span *)(void *)ad__arena_alloc(e->arena, e->mem, nd);
        if (!s)
            return AD_ENOMEM;
        size_t j = 0;
        for (size_t i = 0; i < e->next_ext; i++) {
            const ad__ext *x = ad__Xc(e->exts, (uint32_t)i);
            if (x->caller_grad) {
                s[j].lo = (uintptr_t)x->call.out.grad;
                s[j].hi = s[j].lo + ad_shape_size(x->call.out.shape) * sizeof(double);
                j++;
            }
        }
        qsort(s, k, sizeof *s, by_start);
        for (size_t i = 1; i < k && !e->ss->grads_shared; i++)
            e->ss->grads_shared = s[i].lo < s[i - 1].hi;
    }
    e->ss->grads_checked = true;
    return AD_OK;
}

static void zero_caller_grads(const ad__eval *e)
{
    for (size_t i = 0; i < e->next_ext; i++) {
        const ad__ext *x = ad__Xc(e->exts, (uint32_t)i);
        if (x->caller_grad)
            memset(x->call.out.grad, 0, ad_shape_size(x->call.out.shape) * sizeof(double));
    }
}

/* The low header byte of an inline node that needs a gradient is
 * INLINE_GRAD | op; its case runs the op's scalar vjp unless the adjoint is
 * zero (not between the output and the variables). */
#define INLINE_GRAD ((unsigned)AD__GRAD)
#define SWEEP_CASE(NAME, CODE, ...)                                                           \
    case INLINE_GRAD | CODE:                                                                  \
        if (n->g != 0.0)                                                                      \
            ad__s_##NAME##_vjp(ch, k, n);                                                     \
        break;

int ad__sweep_eval(const ad__eval *e, uint32_t out_id, const double *seed, bool assign)
{
    if (assign && !e->ss->grads_checked && ad__check_shared(e) != AD_OK)
        return AD_ENOMEM;
    if (assign && e->ss->grads_shared) { /* see check_shared */
        zero_caller_grads(e);
        assign = false;
    }
    if (e->ss->adj_dirty)
        reset_adjoints(e);
    e->ss->adj_dirty = true;
    const ad__node *o = ad__Nc(e->nodes, out_id);
    if (!(o->h & AD__GRAD)) { /* no variable reaches the output: all gradients are 0 */
        size_t none = 0;
        if (e->hooks)
            ad__hooks_fire(e, 0, assign, &none);
        zero_unreached(e, assign, none);
        return AD_OK;
    }

    /* The seed. An inline output's adjoint is zero here; an ad_param
     * output's buffer accumulates like every caller gradient unless
     * assigning. */
    bool fresh = false;
    size_t nreached = 0; /* EXT buffers reached so far */
    size_t size = 1;
    double *og = (double *)&o->g;
    if (o->h & AD__EXT) {
        ad__ext *x = ad__Xc(e->exts, ad__a(o->h));
        fresh = is_fresh(x, assign);
        x->reached = 1;
        nreached = 1;
        og = x->call.out.grad;
        size = ad_shape_size(x->call.out.shape);
    }
    for (size_t j = 0; j < size; j++)
        og[j] = (fresh ? 0.0 : og[j]) + (seed ? seed[j] : 1.0);

    /* From the output back to node 1, a chunk at a time. */
    void *const *ch = e->nodes;
    const double *k = e->consts;
    size_t end = (size_t)out_id + 1;
    for (size_t c = (end - 1) / CHUNK + 1; c-- > 0;) {
        const ad__node *base = ch[c];
        const ad__node *n = base + (end - c * CHUNK), *lo = base + (c == 0);
        while (n-- > lo) {
            const uint64_t h = n->h;
            /* One jump on the header's low byte (flags and op): an inline
             * node that needs a gradient goes straight to its op's case. */
            switch ((unsigned)(h & 0xFF)) {
                AD__UNARY_OPS(SWEEP_CASE)
                AD__BINARY_OPS(SWEEP_CASE)
            case INLINE_GRAD | AD_OP_LEAF: /* a scalar variable: no vjp */
                break;
            default: /* EXT, or no variable below it */
                if ((h & (AD__GRAD | AD__EXT)) == (AD__GRAD | AD__EXT) && ad__opc(h) != AD_OP_LEAF)
                    ext_vjp(e, h, assign, &nreached);
                break;
            }
        }
        end = c * CHUNK;
    }
    if (e->hooks) /* those whose uses all lie above the output, or unused */
        ad__hooks_fire(e, 0, assign, &nreached);
    zero_unreached(e, assign, nreached);
    return AD_OK;
}

static int sweep(ad_tape *t, ad_node output, const double *seed, unsigned flags, const char *who)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (flags & ~(unsigned)AD_SWEEP_ASSIGN)
        return ad__fail_call(t, AD_EMISUSE, "%s: unknown flags 0x%x (known: AD_SWEEP_ASSIGN)",
                             who, flags & ~(unsigned)AD_SWEEP_ASSIGN);
    ad__node *o = ad__check_call(t, output, who, 1);
    if (!o)
        return AD_EMISUSE;
    ad_tensor out;
    ad__view(t, output.id_, &out);
    if (!seed && out.shape.ndim != 0) {
        char buf[48];
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the output is %s, not a scalar; pass a seed of the same size "
                             "with ad_backward_seed",
                             who, ad__shape_str(out.shape, buf, sizeof buf));
    }
    ad__eval e = ad__tape_eval(t);
    if (ad__hooks_prepare(t, &e, who) != AD_OK)
        return t->call_status;
    if (ad__sweep_eval(&e, output.id_, seed, (flags & AD_SWEEP_ASSIGN) != 0) != AD_OK)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory checking %zu gradient buffers",
                             who, ad__count_caller_grads(&e));
    return AD_OK;
}

int ad_backward(ad_tape *t, ad_node output) { return sweep(t, output, NULL, 0, "backward"); }

int ad_backward_seed(ad_tape *t, ad_node output, const double *seed)
{
    if (t && ad__begin_call(t) == AD_OK && !seed)
        return ad__fail_call(t, AD_EMISUSE, "backward_seed: seed is NULL");
    return sweep(t, output, seed, 0, "backward_seed");
}

int ad_sweep(ad_tape *t, ad_node output, const double *seed, unsigned flags)
{
    return sweep(t, output, seed, flags, "sweep");
}

/* Recomputes one EXT node; returns it when its op's check reports a
 * failure (ad__opstate.check: a singular matrix, the value NaN), else NULL. */
static const ad__ext *ext_forward(void *const *exts, uint64_t h)
{
    ad__ext *x = ad__Xc(exts, ad__a(h));
    if (ad__opc(h) != AD_OP_LEAF)
        x->def->forward(&x->call);
    x->reached = 0; /* the adjoint is fresh: no zeroing pass */
    if (x->checks && ad__opstates[x->op]->check(&x->call, NULL, 0) != AD_OK)
        return x;
    return NULL;
}

const ad__ext *ad__replay_eval(const ad__eval *e)
{
    const ad__ext *failed = NULL;
    void *const *ch = e->nodes;
    void *const *exts = e->exts;
    const double *k = e->consts;
    const size_t len = e->len;
    for (size_t c = 0; c * CHUNK < len; c++) {
        ad__node *base = ch[c];
        size_t hi = len - c * CHUNK;
        ad__node *o = base + (c == 0), *end = base + (hi < CHUNK ? hi : CHUNK);
        for (; o < end; o++) {
            const uint64_t h = o->h;
            if (h & AD__EXT) {
                const ad__ext *f = ext_forward(exts, h);
                if (f && !failed)
                    failed = f;
            } else {
                ad__sfwd(ch, k, o);
                o->g = 0;
            }
        }
    }
    e->ss->adj_dirty = false;
    return failed;
}

int ad_replay(ad_tape *t)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    const ad__eval e = ad__tape_eval(t);
    const ad__ext *failed = ad__replay_eval(&e);
    /* a recorded comparison that changed is reported first: the
     * tape no longer follows the program, whatever else went wrong */
    const int guards = ad__guards_check(t, "replay");
    if (guards != AD_OK)
        return guards;
    if (failed) { /* the replay ran to the end; the reason is kept, not sticky */
        char msg[AD__MSG_CAP];
        const int st = ad__eval_failure(failed, msg, sizeof msg);
        return ad__fail_call(t, st, "%s", msg);
    }
    return AD_OK;
}
