/* hooks.c -- gradient-ready hooks: a callback when an ad_param's gradient
 * is complete in a sweep, and optimizer updates fused into the sweep.
 *
 * A parameter's gradient is complete once the sweep has run the vjp of
 * every node that uses it; the sweep runs from the output down, so that is
 * the use with the lowest node id. Planning (once after the hooks or the
 * tape change) finds that node for each hooked parameter and flags its
 * record (AD__HK_FIRE); the sweep, after running a flagged record, calls
 * the hooks that fire there. A parameter used once, by an op with a fused
 * form (ad__op.vjp_update), with an update hook, gets its update from
 * inside that op's vjp, row block by row block (AD__HK_FUSED). */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ad__hook {
    ad_grad_hook h;
    ad_node param;      /* the caller's handle, passed back to ready */
    uint32_t node;      /* the parameter's node and EXT record        */
    uint32_t ext;
    uint32_t fire;      /* node after whose vjp it fires; 0: at the end */
    uint32_t consumer;  /* fused: the node whose vjp applies the update */
    uint8_t slot;       /* fused: the operand slot there                */
    uint8_t fused;
    uint8_t fired, applied; /* this sweep */
} ad__hook;

struct ad__hooks {
    ad__hook *v;
    size_t n, cap;
    uint32_t *order;    /* hook indices by node, for planning */
    size_t cap_order;
    size_t planned_len; /* the tape's length when planned; 0: plan again */
    double *scratch;    /* the fused updates' rows */
    size_t cap_scratch;
};

void ad__hooks_free(ad_tape *t)
{
    ad__hooks *H = t->hooks;
    if (!H)
        return;
    ad__free(&t->mem, H->v, H->cap * sizeof *H->v);
    ad__free(&t->mem, H->order, H->cap_order * sizeof *H->order);
    ad__free(&t->mem, H->scratch, H->cap_scratch * sizeof *H->scratch);
    ad__free(&t->mem, H, sizeof *H);
    t->hooks = NULL;
}

void ad__hooks_reset(ad_tape *t)
{
    if (t->hooks) { /* the nodes are gone; the memory stays for the next hooks */
        t->hooks->n = 0;
        t->hooks->planned_len = 0;
    }
}

static ad__hook *find(ad__hooks *H, uint32_t node)
{
    for (size_t j = 0; H && j < H->n; j++)
        if (H->v[j].node == node)
            return &H->v[j];
    return NULL;
}

int ad_set_grad_hook(ad_tape *t, ad_node param, const ad_grad_hook *hook)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    ad__node *n = ad__check_call(t, param, "set_grad_hook", 1);
    if (!n)
        return AD_EMISUSE;
    const ad__ext *x = (n->h & AD__EXT) ? ad__X(t, ad__a(n->h)) : NULL;
    if (!x || ad__opc(n->h) != AD_OP_LEAF || !x->view || !x->caller_grad)
        return ad__fail_call(t, AD_EMISUSE,
                             "set_grad_hook: node %u is not an ad_param with a gradient buffer",
                             (unsigned)param.id_);
    ad__hooks *H = t->hooks;
    ad__hook *old = find(H, param.id_);
    if (!hook) { /* remove */
        if (old) {
            *old = H->v[--H->n];
            H->planned_len = 0;
        }
        return AD_OK;
    }
    if (hook->size < sizeof(ad_grad_hook))
        return ad__fail_call(t, AD_EMISUSE,
                             "set_grad_hook: hook size %zu is less than sizeof(ad_grad_hook) %zu",
                             hook->size, sizeof(ad_grad_hook));
    if (!hook->ready == !hook->update)
        return ad__fail_call(t, AD_EMISUSE,
                             "set_grad_hook: set exactly one of ready and update (%s given)",
                             hook->ready ? "both" : "neither");
    if (hook->update_scaled && !hook->update)
        return ad__fail_call(t, AD_EMISUSE, "set_grad_hook: update_scaled without update");
    if (!H) {
        H = ad__alloc(&t->mem, sizeof *H);
        if (!H)
            return ad__fail_call(t, AD_ENOMEM, "set_grad_hook: out of memory");
        memset(H, 0, sizeof *H);
        t->hooks = H;
    }
    if (!old) {
        if (H->n == H->cap) {
            const size_t cap = H->cap ? 2 * H->cap : 8;
            ad__hook *v = ad__realloc(&t->mem, H->v, H->cap * sizeof *v, cap * sizeof *v);
            if (!v)
                return ad__fail_call(t, AD_ENOMEM, "set_grad_hook: out of memory for %zu hooks",
                                     cap);
            H->v = v, H->cap = cap;
        }
        old = &H->v[H->n++];
    }
    memset(old, 0, sizeof *old);
    old->h = *hook;
    old->h.size = sizeof(ad_grad_hook);
    old->param = param;
    old->node = param.id_;
    old->ext = ad__a(n->h);
    H->planned_len = 0;
    return AD_OK;
}

/* ---- planning ---- */

static int by_node(const void *a, const void *b, const ad__hook *v)
{
    const uint32_t x = v[*(const uint32_t *)a].node, y = v[*(const uint32_t *)b].node;
    return x < y ? -1 : x > y;
}

/* Insertion sort of the hook indices by node: few hooks, and no qsort
 * context argument in C11. */
static void sort_order(ad__hooks *H)
{
    for (size_t i = 0; i < H->n; i++)
        H->order[i] = (uint32_t)i;
    for (size_t i = 1; i < H->n; i++) {
        const uint32_t k = H->order[i];
        size_t j = i;
        while (j > 0 && by_node(&H->order[j - 1], &k, H->v) > 0) {
            H->order[j] = H->order[j - 1];
            j--;
        }
        H->order[j] = k;
    }
}

static ad__hook *lookup(ad__hooks *H, uint32_t node)
{
    size_t lo = 0, hi = H->n;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        const uint32_t m = H->v[H->order[mid]].node;
        if (m == node)
            return &H->v[H->order[mid]];
        if (m < node)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Whether operand slot k of op has a fused update form, and the doubles of
 * scratch it needs: four rows of a weight, or the bias. */
static size_t fused_scratch(const ad__ext *c, int k)
{
    if (!ad__vjp_update(c->op))
        return 0;
    const ad_shape s = c->call.in[k].shape;
    if (k == 0 && s.ndim == 2 && c->call.nin == 3 && c->call.in[1].shape.ndim == 2)
        return (s.rows < AD__UPD_BATCH_ROWS ? s.rows : AD__UPD_BATCH_ROWS) * (size_t)s.cols;
    if (k == 0 && s.ndim == 2) /* W of matvec / affine */
        return 4 * (size_t)s.cols;
    if (k == 2 && s.ndim == 1 && c->call.nin == 3) /* b of affine */
        return s.rows;
    return 0;
}

static int plan(ad_tape *t, ad__hooks *H, const char *who)
{
    if (H->cap_order < H->n) {
        uint32_t *o = ad__realloc(&t->mem, H->order, H->cap_order * sizeof *o, H->n * sizeof *o);
        if (!o)
            return ad__fail_call(t, AD_ENOMEM, "%s: out of memory planning %zu hooks", who, H->n);
        H->order = o, H->cap_order = H->n;
    }
    sort_order(H);
    for (size_t j = 0; j < H->n; j++) {
        ad__hook *k = &H->v[j];
        k->fire = UINT32_MAX, k->consumer = 0, k->slot = 0, k->fused = 0;
        k->applied = 0; /* reused as the count of uses while planning */
    }
    for (size_t i = 0; i < t->next_ext; i++)
        ad__X(t, (uint32_t)i)->hook = 0;
    /* every use of a hooked parameter as an operand */
    for (size_t i = 0; i < t->next_ext; i++) {
        const ad__ext *x = ad__X(t, (uint32_t)i);
        for (int s = 0; s < x->call.nin; s++) {
            ad__hook *k = lookup(H, x->in[s]);
            if (!k)
                continue;
            if (k->applied < 255)
                k->applied++;
            if (x->node < k->fire)
                k->fire = x->node;
            k->consumer = x->node, k->slot = (uint8_t)s;
        }
    }
    size_t need = 0;
    for (size_t j = 0; j < H->n; j++) {
        ad__hook *k = &H->v[j];
        ad__ext *p = ad__X(t, k->ext);
        const size_t size = ad_shape_size(p->call.out.shape);
        /* a value another node views: its old values may be read after
         * its last use here, so it waits for the end */
        bool shared = false;
        for (size_t i = 0; i < t->next_ext && !shared; i++) {
            const ad__ext *q = ad__X(t, (uint32_t)i);
            shared = q != p && q->view
                     && ad__overlap(q->call.out.val, ad_shape_size(q->call.out.shape),
                                    p->call.out.val, size);
        }
        const unsigned nuses = k->applied;
        k->applied = 0;
        if (shared || nuses == 0)
            k->fire = 0;
        if (k->h.update && !shared && nuses == 1) {
            const ad__ext *c = ad__X(t, ad__a(ad__N(t, k->consumer)->h));
            const size_t sz = fused_scratch(c, k->slot);
            if (sz) {
                k->fused = 1;
                need = sz > need ? sz : need;
            }
        }
        if (k->h.update)
            p->hook |= AD__HK_OWN;
        if (k->fire)
            ad__X(t, ad__a(ad__N(t, k->fire)->h))->hook |= AD__HK_FIRE;
        if (k->fused)
            ad__X(t, ad__a(ad__N(t, k->consumer)->h))->hook |= AD__HK_FUSED;
    }
    if (need > H->cap_scratch) {
        double *s = ad__realloc(&t->mem, H->scratch, H->cap_scratch * sizeof *s, need * sizeof *s);
        if (!s) {
            for (size_t i = 0; i < t->next_ext; i++)
                ad__X(t, (uint32_t)i)->hook = 0;
            return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for %zu doubles of hook scratch",
                                 who, need);
        }
        H->scratch = s, H->cap_scratch = need;
    }
    H->planned_len = t->len;
    return AD_OK;
}

int ad__hooks_prepare(ad_tape *t, ad__eval *e, const char *who)
{
    ad__hooks *H = t->hooks;
    if (!H || H->n == 0)
        return AD_OK;
    if (H->planned_len != t->len && plan(t, H, who) != AD_OK)
        return t->call_status;
    if (!t->ss.grads_checked) {
        /* the check the assigning sweep makes: hooks need it either way */
        const ad__eval tmp = ad__tape_eval(t);
        if (ad__check_shared(&tmp) != AD_OK)
            return ad__fail_call(t, AD_ENOMEM, "%s: out of memory checking %zu gradient buffers",
                                 who, ad__count_caller_grads(&tmp));
    }
    if (t->ss.grads_shared)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the tape has gradient hooks and ad_param gradient buffers that "
                             "overlap; a hooked gradient would not be its parameter's own",
                             who);
    for (size_t j = 0; j < H->n; j++)
        H->v[j].fired = 0, H->v[j].applied = 0;
    e->hooks = H;
    return AD_OK;
}

static void fire_one(const ad__eval *e, ad__hook *k, bool assign, size_t *nreached)
{
    k->fired = 1;
    if (k->fused && k->applied)
        return; /* the op's vjp gave every row to update */
    ad__ext *p = ad__Xc(e->exts, k->ext);
    ad_tensor view = p->call.out;
    const size_t size = ad_shape_size(view.shape);
    if (!p->reached) { /* no contribution: the gradient is 0 (or, added to, unchanged) */
        if (assign || (p->hook & AD__HK_OWN))
            memset(view.grad, 0, size * sizeof *view.grad);
        p->reached = 1;
        ++*nreached;
    }
    if (k->h.ready)
        k->h.ready(k->h.ud, k->param, &view);
    else
        k->h.update(k->h.ud, 0, view.val, view.grad, size);
}

void ad__hooks_fire(const ad__eval *e, uint32_t node, bool assign, size_t *nreached)
{
    ad__hooks *H = e->hooks;
    for (size_t j = 0; j < H->n; j++) {
        ad__hook *k = &H->v[j];
        if (!k->fired && (node == 0 || k->fire == node))
            fire_one(e, k, assign, nreached);
    }
}

void ad__hooks_upd(const ad__eval *e, const ad__ext *x, const ad__upd **upd, ad__upd *store)
{
    ad__hooks *H = e->hooks;
    for (int s = 0; s < AD_MAX_ARITY; s++)
        upd[s] = NULL;
    for (size_t j = 0; j < H->n; j++) {
        ad__hook *k = &H->v[j];
        if (k->fused && k->consumer == x->node) {
            store[k->slot].fn = k->h.update;
            store[k->slot].scaled = k->h.update_scaled;
            store[k->slot].ud = k->h.ud;
            store[k->slot].scratch = H->scratch;
            upd[k->slot] = &store[k->slot];
            k->applied = 1;
        }
    }
}
