/* workspace.c -- one recorded tape evaluated by several threads.
 *
 * A workspace is everything an evaluation writes, copied out of a tape
 * once: the node array (inline scalar values and adjoints live in the
 * nodes, so the headers come along and the replay and sweep loops are the
 * tape's own), the EXT records with their ad_calls bound to the
 * workspace's own tensor values and adjoints, the op constants, and the
 * sweep's flags. After ad_workspace_new it reads nothing of the tape:
 * only the op descriptors (static, or the caller's registry) and the
 * ad_param value buffers it was not given others for. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NCHUNK ((size_t)1 << AD__NODE_SHIFT)
#define XCHUNK ((size_t)1 << AD__EXT_SHIFT)
#define ALIGN_DOUBLES 8u /* tensors start on 64-byte lines, as in the tape's arena */

struct ad_workspace {
    ad__mem mem;
    void **nodes;               /* chunk table; the last chunk holds only
                                   what is used                      */
    size_t nnode_chunks;
    void **exts;
    size_t next_chunks;
    double *consts;
    size_t nconsts;
    double *data;               /* every tensor value and adjoint    */
    size_t ndata;               /* doubles allocated at data         */
    size_t len, next_ext, ext_grads;
    uint64_t hbase;             /* the tape's, at creation: handles  */
    ad__sweepstate ss;
    ad__arena scratch;          /* the overlap check's               */
    struct ad__guards *guards;  /* the tape's recorded comparisons,
                                   copied (NULL: none)              */
    int status;                 /* the last call's                   */
    char msg[AD__MSG_CAP];
};

static size_t node_chunk_len(const ad_workspace *w, size_t c)
{
    size_t rest = w->len - c * NCHUNK;
    return rest < NCHUNK ? rest : NCHUNK;
}
static size_t ext_chunk_len(const ad_workspace *w, size_t c)
{
    size_t rest = w->next_ext - c * XCHUNK;
    return rest < XCHUNK ? rest : XCHUNK;
}

static ad__eval eval_of(ad_workspace *w)
{
    ad__eval e = {w->nodes, w->exts,   w->consts, w->len,      w->next_ext,
                  w->ext_grads, &w->ss, &w->scratch, &w->mem, NULL};
    return e;
}

static int fail(ad_workspace *w, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(ad_workspace *w, int status, const char *fmt, ...)
{
    w->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
    return status;
}

static inline ad__node *wnode(const ad_workspace *w, uint32_t i) { return ad__Nc(w->nodes, i); }
static inline ad__ext *wext(const ad_workspace *w, uint32_t i) { return ad__Xc(w->exts, i); }

/* Node i's tensor view in the workspace (as ad__view for a tape). */
static void wview(const ad_workspace *w, uint32_t i, ad_tensor *out)
{
    ad__node *n = wnode(w, i);
    if (n->h & AD__EXT) {
        const ad__ext *x = wext(w, ad__a(n->h));
        *out = x->call.out;
    } else {
        out->val = &n->v;
        out->grad = (n->h & AD__GRAD) ? &n->g : NULL;
        out->shape = ad_shape_scalar();
    }
}

void ad_workspace_free(ad_workspace *w)
{
    if (!w)
        return;
    ad__mem m = w->mem;
    if (w->nodes) {
        for (size_t c = 0; c < w->nnode_chunks; c++)
            ad__free(&m, w->nodes[c], node_chunk_len(w, c) * sizeof(ad__node));
        ad__free(&m, w->nodes, w->nnode_chunks * sizeof *w->nodes);
    }
    if (w->exts) {
        for (size_t c = 0; c < w->next_chunks; c++)
            ad__free(&m, w->exts[c], ext_chunk_len(w, c) * sizeof(ad__ext));
        ad__free(&m, w->exts, w->next_chunks * sizeof *w->exts);
    }
    ad__free(&m, w->consts, w->nconsts * sizeof *w->consts);
    ad__free(&m, w->data, w->ndata * sizeof *w->data);
    ad__guards_free_copy(w->guards, &m);
    ad__arena_free(&w->scratch, &m);
    ad__free(&m, w, sizeof *w);
}

/* Rounds n doubles up to whole cache lines. */
static size_t lines(size_t n) { return (n + ALIGN_DOUBLES - 1) / ALIGN_DOUBLES * ALIGN_DOUBLES; }

/* Allocates a chunk table of k chunks, chunk c holding len(c) records of
 * elem bytes; the table is zeroed first so a failure frees what exists. */
static int copy_chunks(ad__mem *m, void ***tab, size_t k, void *const *src, size_t elem,
                       size_t (*len)(const ad_workspace *, size_t), const ad_workspace *w)
{
    if (k == 0)
        return AD_OK;
    *tab = ad__alloc(m, k * sizeof **tab);
    if (!*tab)
        return AD_ENOMEM;
    memset(*tab, 0, k * sizeof **tab);
    for (size_t c = 0; c < k; c++) {
        (*tab)[c] = ad__alloc(m, len(w, c) * elem);
        if (!(*tab)[c])
            return AD_ENOMEM;
        memcpy((*tab)[c], src[c], len(w, c) * elem);
    }
    return AD_OK;
}

ad_workspace *ad_workspace_new(const ad_tape *t, const ad_tape_opts *opts, int *status)
{
    int dummy;
    if (!status)
        status = &dummy;
    if (!t || t->status != AD_OK) {
        *status = AD_EMISUSE;
        return NULL;
    }
    ad__mem mem = t->mem;
    mem.held = 0;
    if (opts && opts->alloc) {
        mem.fn = opts->alloc;
        mem.ud = opts->alloc_ud;
    }
    ad_workspace *w = ad__alloc(&mem, sizeof *w);
    *status = AD_ENOMEM;
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->mem = mem;
    w->len = t->len;
    w->next_ext = t->next_ext;
    w->ext_grads = t->ext_grads;
    w->hbase = t->hbase;
    w->nnode_chunks = (w->len + NCHUNK - 1) / NCHUNK;
    w->next_chunks = (w->next_ext + XCHUNK - 1) / XCHUNK;

    /* Tensor data: one block for every value and adjoint the workspace
     * owns (ad_param values stay views of the caller's buffers). */
    size_t ndata = 0;
    for (size_t i = 0; i < t->next_ext; i++) {
        const ad__ext *x = ad__X(t, (uint32_t)i);
        const size_t size = ad_shape_size(x->call.out.shape);
        ndata += (x->view ? 0 : lines(size + ad__aux_size(x)))
                 + (x->call.out.grad ? lines(size) : 0);
    }
    if (copy_chunks(&w->mem, &w->nodes, w->nnode_chunks, t->nodes.chunk, sizeof(ad__node),
                    node_chunk_len, w) != AD_OK
        || copy_chunks(&w->mem, &w->exts, w->next_chunks, t->exts.chunk, sizeof(ad__ext),
                       ext_chunk_len, w) != AD_OK)
        goto oom;
    if (t->nconsts) {
        w->consts = ad__alloc(&w->mem, t->nconsts * sizeof *w->consts);
        if (!w->consts)
            goto oom;
        w->nconsts = t->nconsts;
        memcpy(w->consts, t->consts, t->nconsts * sizeof *w->consts);
    }
    if (ndata) {
        /* + one line, so the first tensor can start on a line boundary */
        w->data = ad__alloc(&w->mem, (ndata + ALIGN_DOUBLES) * sizeof *w->data);
        if (!w->data)
            goto oom;
        w->ndata = ndata + ALIGN_DOUBLES;
    }

    /* Bind each record to the workspace's memory: its own value (copied,
     * so leaves keep theirs) and adjoint, then the operand views. */
    double *p = w->data;
    if (p)
        while (((uintptr_t)p & (ALIGN_DOUBLES * sizeof(double) - 1)) != 0)
            p++;
    for (size_t i = 0; i < w->next_ext; i++) {
        ad__ext *x = wext(w, (uint32_t)i);
        const size_t size = ad_shape_size(x->call.out.shape);
        if (!x->view) {
            /* the value and the op's per-node storage after it (a
             * factorization: each workspace keeps its own) */
            const size_t naux = ad__aux_size(x);
            memcpy(p, x->call.out.val, (size + naux) * sizeof *p);
            x->call.out.val = p;
            p += lines(size + naux);
        }
        if (x->call.out.grad) {
            /* ad_param gradients too: the caller's buffer is the tape's;
             * the workspace's own is read with ad_workspace_grad unless
             * ad_workspace_bind gives it another. */
            memset(p, 0, size * sizeof *p);
            x->call.out.grad = p;
            x->caller_grad = 0;
            p += lines(size);
        }
        x->reached = 0;
        x->hook = 0; /* hooks are the tape's own sweeps' */
    }
    for (size_t i = 0; i < w->next_ext; i++) {
        ad__ext *x = wext(w, (uint32_t)i);
        x->call.in = x->args;
        for (int k = 0; k < x->call.nin; k++) {
            wview(w, x->in[k], &x->args[k]);
            const uint64_t ha = wnode(w, x->in[k])->h;
            x->src[k] = (ha & (AD__EXT | AD__GRAD)) == (AD__EXT | AD__GRAD)
                            ? wext(w, ad__a(ha))
                            : NULL;
        }
    }
    /* Inline adjoints start at zero; the first sweep needs no reset. */
    for (size_t i = 1; i < w->len; i++) {
        ad__node *n = wnode(w, (uint32_t)i);
        if (!(n->h & AD__EXT))
            n->g = 0;
    }
    if (ad__guards_copy(t, &w->mem, &w->guards) != AD_OK)
        goto oom;
    w->ss.grads_checked = true; /* no caller gradient buffers yet */
    *status = AD_OK;
    return w;
oom:
    ad_workspace_free(w);
    return NULL;
}

/* The node behind handle h, or NULL with a message. */
static ad__node *check(ad_workspace *w, ad_node h, const char *who)
{
    if (h.id_ == 0) {
        fail(w, AD_EMISUSE, "%s: the node is nil (the result of a failed call)", who);
        return NULL;
    }
    if (h.tag_ != (uint32_t)(w->hbase >> 32) || h.id_ >= w->len) {
        fail(w, AD_EMISUSE,
             "%s: the node is not one of the tape this workspace was made from (another tape, "
             "a later recording, or recorded after the workspace was made)",
             who);
        return NULL;
    }
    return wnode(w, h.id_);
}

static ad__node *peek(const ad_workspace *w, ad_node h)
{
    if (!w || h.id_ == 0 || h.id_ >= w->len || h.tag_ != (uint32_t)(w->hbase >> 32))
        return NULL;
    return wnode(w, h.id_);
}

int ad_workspace_replay(ad_workspace *w)
{
    if (!w)
        return AD_EMISUSE;
    w->status = AD_OK;
    const ad__eval e = eval_of(w);
    const ad__ext *failed = ad__replay_eval(&e);
    if (w->guards) { /* a changed comparison first, as ad_replay */
        char msg[AD__MSG_CAP];
        if (ad__guards_check_nodes(w->guards, w->nodes, w->exts, "workspace_replay", msg,
                                   sizeof msg) != AD_OK)
            return fail(w, AD_EBRANCH, "%s", msg);
    }
    if (failed) {
        char msg[AD__MSG_CAP];
        const int st = ad__eval_failure(failed, msg, sizeof msg);
        return fail(w, st, "%s", msg);
    }
    return AD_OK;
}

int ad_workspace_sweep(ad_workspace *w, ad_node output, const double *seed, unsigned flags)
{
    if (!w)
        return AD_EMISUSE;
    w->status = AD_OK;
    if (flags & ~(unsigned)AD_SWEEP_ASSIGN)
        return fail(w, AD_EMISUSE, "workspace_sweep: unknown flags 0x%x (known: AD_SWEEP_ASSIGN)",
                    flags & ~(unsigned)AD_SWEEP_ASSIGN);
    if (!check(w, output, "workspace_sweep"))
        return AD_EMISUSE;
    ad_tensor out;
    wview(w, output.id_, &out);
    if (!seed && out.shape.ndim != 0) {
        char buf[48];
        return fail(w, AD_EMISUSE,
                    "workspace_sweep: the output is %s, not a scalar; pass a seed of the same "
                    "size",
                    ad__shape_str(out.shape, buf, sizeof buf));
    }
    const ad__eval e = eval_of(w);
    if (ad__sweep_eval(&e, output.id_, seed, (flags & AD_SWEEP_ASSIGN) != 0) != AD_OK)
        return fail(w, AD_ENOMEM, "workspace_sweep: out of memory checking %zu gradient buffers",
                    ad__count_caller_grads(&e));
    return AD_OK;
}

int ad_workspace_set_value(ad_workspace *w, ad_node leaf, const double *data)
{
    if (!w)
        return AD_EMISUSE;
    w->status = AD_OK;
    ad__node *n = check(w, leaf, "workspace_set_value");
    if (!n)
        return AD_EMISUSE;
    if (!data)
        return fail(w, AD_EMISUSE, "workspace_set_value: data is NULL");
    ad__ext *x = (n->h & AD__EXT) ? wext(w, ad__a(n->h)) : NULL;
    if (ad__opc(n->h) != AD_OP_LEAF)
        return fail(w, AD_EMISUSE,
                    "workspace_set_value: node %u is the result of %s, not a constant or "
                    "variable",
                    (unsigned)leaf.id_, x ? x->def->name : ad__ops[ad__opc(n->h)]->def.name);
    if (x && x->view)
        return fail(w, AD_EMISUSE,
                    "workspace_set_value: node %u is an ad_param; bind a buffer of your own "
                    "with ad_workspace_bind",
                    (unsigned)leaf.id_);
    if (x)
        memcpy(x->call.out.val, data, ad_shape_size(x->call.out.shape) * sizeof *data);
    else
        n->v = data[0];
    return AD_OK;
}

int ad_workspace_bind(ad_workspace *w, ad_node param, const double *value, double *grad)
{
    if (!w)
        return AD_EMISUSE;
    w->status = AD_OK;
    ad__node *n = check(w, param, "workspace_bind");
    if (!n)
        return AD_EMISUSE;
    ad__ext *x = (n->h & AD__EXT) ? wext(w, ad__a(n->h)) : NULL;
    if (!x || !x->view)
        return fail(w, AD_EMISUSE, "workspace_bind: node %u is not an ad_param",
                    (unsigned)param.id_);
    if (grad && !x->call.out.grad)
        return fail(w, AD_EMISUSE,
                    "workspace_bind: node %u was recorded without a gradient buffer; it has no "
                    "gradient to bind",
                    (unsigned)param.id_);
    if (value)
        x->call.out.val = (double *)value;
    if (grad) {
        x->call.out.grad = grad;
        x->caller_grad = 1;
        w->ss.grads_checked = false; /* a new caller buffer: check again */
    }
    /* Every operand view of this node must see the new buffers. */
    const uint32_t id = param.id_;
    for (size_t i = 0; i < w->next_ext; i++) {
        ad__ext *y = wext(w, (uint32_t)i);
        for (int k = 0; k < y->call.nin; k++)
            if (y->in[k] == id)
                y->args[k] = x->call.out;
    }
    return AD_OK;
}

const double *ad_workspace_value(const ad_workspace *w, ad_node h)
{
    ad__node *n = peek(w, h);
    if (!n)
        return NULL;
    return (n->h & AD__EXT) ? wext(w, ad__a(n->h))->call.out.val : &n->v;
}

const double *ad_workspace_grad(const ad_workspace *w, ad_node h)
{
    ad__node *n = peek(w, h);
    if (!n || !(n->h & AD__GRAD))
        return NULL;
    return (n->h & AD__EXT) ? wext(w, ad__a(n->h))->call.out.grad : &n->g;
}

const char *ad_workspace_errmsg(const ad_workspace *w)
{
    if (!w)
        return "workspace is NULL";
    return w->status == AD_OK ? "" : w->msg;
}

size_t ad_workspace_memory(const ad_workspace *w) { return w ? w->mem.held : 0; }
