/* tape.c -- tape lifecycle, errors, handles, leaves and recording. */
#include "internal.h"
#include "dense.h"
#include "names.h"
#include "scalar_ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ad_version(void) { return AD_VERSION_STRING; }

const char *ad_strstatus(int status)
{
    static const char *const text[AD_STATUS_COUNT] = {
        [AD_OK] = "ok",
        [AD_ENOMEM] = "out of memory",
        [AD_ESHAPE] = "shape mismatch",
        [AD_EMISUSE] = "misuse of the API",
        [AD_ENOTFOUND] = "no such op",
        [AD_ELIMIT] = "size limit exceeded",
        [AD_EEXIST] = "name already registered",
        [AD_ESINGULAR] = "singular or not positive definite matrix",
        [AD_EBRANCH] = "a recorded comparison changed: the tape follows another branch",
        [AD_EUNSUPPORTED] = "not supported by this CPU or this build",
        [AD_EIO] = "write error on an output stream",
    };
    if (status < 0 || status >= AD_STATUS_COUNT)
        return "unknown status";
    return text[status];
}

/* ---- errors ---- */

int ad__fail(ad_tape *t, int status, const char *fmt, ...)
{
    if (!t)
        return status;
    if (t->status != AD_OK)
        return t->status; /* keep the first error */
    t->status = status;
    t->rec_limit = 0; /* sends every later op to the general path */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    return status;
}

int ad__fail_call(ad_tape *t, int status, const char *fmt, ...)
{
    if (!t)
        return status;
    if (t->status != AD_OK)
        return t->status; /* the recording's own error stays */
    t->call_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    return status;
}

const char *ad__shape_str(ad_shape s, char *buf, size_t cap)
{
    if (s.ndim == 0)
        snprintf(buf, cap, "a scalar");
    else if (s.ndim == 1)
        snprintf(buf, cap, "a vector of length %u", (unsigned)s.rows);
    else
        snprintf(buf, cap, "%ux%u", (unsigned)s.rows, (unsigned)s.cols);
    return buf;
}

int ad_tape_status(const ad_tape *t) { return t ? t->status : AD_EMISUSE; }

const char *ad_tape_errmsg(const ad_tape *t)
{
    if (!t)
        return "tape is NULL";
    return t->status == AD_OK && t->call_status == AD_OK ? "" : t->msg;
}

/* ---- lifecycle ---- */

/* A tag that differs between live tapes and between generations of one
 * tape, so stale and foreign handles are caught without global state. The
 * first generation starts from the clock, so a tape allocated where a freed
 * one lived does not accept the old tape's handles. */
static uint32_t make_tag(const ad_tape *t)
{
    uint64_t x = (uint64_t)(uintptr_t)t ^ ((uint64_t)t->generation * 0x9E3779B97F4A7C15u);
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDu;
    x ^= x >> 33;
    uint32_t tag = (uint32_t)x;
    return tag ? tag : 1;
}

/* Nodes the allocated chunks hold, within the id limit. */
static size_t room(const ad_tape *t)
{
    size_t cap = t->nodes.nchunks << AD__NODE_SHIFT;
    return cap < AD__MAX_NODES ? cap : AD__MAX_NODES;
}

static void set_tag(ad_tape *t) { t->hbase = ((uint64_t)make_tag(t) << 32) + 1; }

/* Node 0 is reserved: the nil handle points at it and unary inline nodes
 * name it as their unused second input. */
static int init_nodes(ad_tape *t)
{
    if (ad__pool_reserve(&t->nodes, &t->mem, 0) != AD_OK)
        return AD_ENOMEM;
    t->rec_limit = (size_t)1 << AD__NODE_SHIFT;
    ad__node *z = ad__N(t, 0);
    z->h = ad__hdr(AD_OP_LEAF, 0, 0, 0);
    z->v = 0;
    z->g = 0;
    t->len = 1;
    return AD_OK;
}

ad_tape *ad_tape_new(const ad_tape_opts *opts)
{
    ad__mem mem = {ad__default_alloc, NULL, 0};
    if (opts && opts->alloc) {
        mem.fn = opts->alloc;
        mem.ud = opts->alloc_ud;
    }
    ad_tape *t = ad__alloc(&mem, sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->mem = mem;
    t->registry = opts ? opts->registry : NULL;
    t->nodes.elem = sizeof(ad__node);
    t->nodes.shift = AD__NODE_SHIFT;
    t->exts.elem = sizeof(ad__ext);
    t->exts.shift = AD__EXT_SHIFT;
    struct timespec now;
    if (timespec_get(&now, TIME_UTC) == TIME_UTC)
        t->generation = (uint32_t)now.tv_nsec ^ (uint32_t)now.tv_sec * 2654435761u;
    set_tag(t);
    t->kern = ad__kernels_get(AD_KERNELS_AUTO);
    const char *env = getenv("AD_KERNELS");
    if (env) {
        static const char *const names[] = {"auto", "portable", "sse2", "avx2"};
        for (int v = 0; v < 4; v++)
            if (strcmp(env, names[v]) == 0 && ad__kernels_get(v))
                t->kern = ad__kernels_get(v);
    }
    if (init_nodes(t) != AD_OK) {
        ad_tape_free(t);
        return NULL;
    }
    return t;
}

void ad_tape_free(ad_tape *t)
{
    if (!t)
        return;
    ad__names_clear(t);
    ad__modes_free(t);
    ad__hooks_free(t);
    ad__guards_free(t);
    ad__pool_free(&t->nodes, &t->mem);
    ad__pool_free(&t->exts, &t->mem);
    ad__free(&t->mem, t->consts, t->cap_consts * sizeof *t->consts);
    ad__arena_free(&t->arena, &t->mem);
    ad__mem mem = t->mem;
    ad__free(&mem, t, sizeof *t);
}

void ad_tape_reset(ad_tape *t)
{
    if (!t)
        return;
    ad__names_clear(t);
    ad__guards_reset(t);
    ad__hooks_reset(t);
    ad__arena_reset(&t->arena, &t->mem);
    t->len = 1;
    t->next_ext = 0;
    t->ext_grads = 0;
    t->nconsts = 0;
    t->ss.adj_dirty = false;
    t->ss.grads_checked = false;
    t->status = AD_OK;
    t->call_status = AD_OK;
    t->msg[0] = '\0';
    t->generation++;
    set_tag(t);
    t->rec_limit = room(t);
}

size_t ad_tape_len(const ad_tape *t) { return t ? t->len : 0; }
size_t ad_tape_memory(const ad_tape *t) { return t ? t->mem.held : 0; }

/* ---- handles ---- */

ad__node *ad__peek(const ad_tape *t, ad_node n)
{
    if (!t || n.id_ == 0 || n.id_ >= t->len || n.tag_ != ad__tag(t))
        return NULL;
    return ad__N(t, n.id_);
}

typedef int (*fail_fn)(ad_tape *t, int status, const char *fmt, ...);

static ad__node *check_with(ad_tape *t, ad_node n, const char *op, int operand, fail_fn fail)
{
    if (!t)
        return NULL;
    if (n.id_ == 0) {
        fail(t, AD_EMISUSE, "%s: operand %d is the nil node (the result of a failed call)", op,
             operand);
        return NULL;
    }
    if (n.tag_ != ad__tag(t) || n.id_ >= t->len) {
        fail(t, AD_EMISUSE,
             "%s: operand %d is not a node of this tape (it belongs to another tape, "
             "or was recorded before ad_tape_reset)",
             op, operand);
        return NULL;
    }
    return ad__N(t, n.id_);
}

ad__node *ad__check(ad_tape *t, ad_node n, const char *op, int operand)
{
    return check_with(t, n, op, operand, ad__fail);
}

ad__node *ad__check_call(ad_tape *t, ad_node n, const char *op, int operand)
{
    return check_with(t, n, op, operand, ad__fail_call);
}

/* ---- views ---- */

void ad__view(const ad_tape *t, uint32_t i, ad_tensor *out)
{
    ad__node *n = ad__N(t, i);
    if (n->h & AD__EXT) {
        ad__ext *x = ad__X(t, ad__a(n->h));
        out->val = x->call.out.val;
        out->grad = x->call.out.grad;
        out->shape = x->call.out.shape;
    } else {
        out->val = &n->v;
        out->grad = (n->h & AD__GRAD) ? &n->g : NULL;
        out->shape = ad_shape_scalar();
    }
}

static ad_shape shape_of(const ad_tape *t, const ad__node *n)
{
    if (n->h & AD__EXT)
        return ad__X(t, ad__a(n->h))->call.out.shape;
    return ad_shape_scalar();
}

/* ---- allocation of nodes ---- */

static uint32_t new_node(ad_tape *t, const char *op)
{
    if (t->len >= AD__MAX_NODES) {
        ad__fail(t, AD_ELIMIT, "%s: the tape is full (%zu nodes)", op, t->len);
        return 0;
    }
    if (ad__pool_reserve(&t->nodes, &t->mem, t->len) != AD_OK) {
        ad__fail(t, AD_ENOMEM, "%s: out of memory growing the tape to %zu nodes", op, t->len + 1);
        return 0;
    }
    t->rec_limit = room(t);
    return (uint32_t)t->len;
}

/* naux: doubles of per-node storage after the value (ad__opstate.aux). */
static ad__ext *new_ext(ad_tape *t, const char *op, ad_shape s, size_t naux, bool grad,
                        uint32_t *xi)
{
    if (t->next_ext >= AD__MAX_NODES) {
        ad__fail(t, AD_ELIMIT, "%s: the tape is full", op);
        return NULL;
    }
    if (ad__pool_reserve(&t->exts, &t->mem, t->next_ext) != AD_OK) {
        ad__fail(t, AD_ENOMEM, "%s: out of memory", op);
        return NULL;
    }
    ad__ext *x = ad__X(t, (uint32_t)t->next_ext);
    memset(x, 0, sizeof *x);
    x->call.out.shape = s;
    size_t size = ad_shape_size(s);
    char buf[48];
    x->call.out.val = ad__arena_alloc(&t->arena, &t->mem, size + naux);
    if (!x->call.out.val || size + naux < size) {
        ad__fail(t, AD_ENOMEM, "%s: out of memory for a value of %s", op,
                 ad__shape_str(s, buf, sizeof buf));
        return NULL;
    }
    if (naux)
        memset(x->call.out.val + size, 0, naux * sizeof(double));
    if (grad) {
        x->call.out.grad = ad__arena_alloc(&t->arena, &t->mem, size);
        if (!x->call.out.grad) {
            ad__fail(t, AD_ENOMEM, "%s: out of memory for a gradient of %s", op,
                     ad__shape_str(s, buf, sizeof buf));
            return NULL;
        }
        memset(x->call.out.grad, 0, size * sizeof *x->call.out.grad);
    }
    *xi = (uint32_t)t->next_ext;
    return x;
}

static int check_shape(ad_tape *t, const char *op, ad_shape s)
{
    char buf[48];
    bool ok = (s.ndim == 0 && s.rows == 1 && s.cols == 1) || (s.ndim == 1 && s.cols == 1)
              || s.ndim == 2;
    if (!ok)
        return ad__fail(t, AD_EMISUSE, "%s: invalid shape (ndim %d, %ux%u)", op, s.ndim,
                        (unsigned)s.rows, (unsigned)s.cols);
    if (s.rows == 0 || s.cols == 0)
        return ad__fail(t, AD_ESHAPE, "%s: the shape is empty (%s)", op,
                        ad__shape_str(s, buf, sizeof buf));
    if ((uint64_t)s.rows * s.cols > ((uint64_t)1 << 40))
        return ad__fail(t, AD_ELIMIT, "%s: %s is too large", op, ad__shape_str(s, buf, sizeof buf));
    return AD_OK;
}

/* ---- leaves ---- */

static const char *leaf_name(bool grad) { return grad ? "variable" : "constant"; }

static ad_node leaf(ad_tape *t, ad_shape s, const double *data, bool grad)
{
    const char *op = leaf_name(grad);
    if (!t || t->status != AD_OK)
        return ad_nil();
    if (check_shape(t, op, s) != AD_OK)
        return ad_nil();
    uint32_t id = new_node(t, op);
    if (!id)
        return ad_nil();
    ad__node *n = ad__N(t, id);
    uint64_t flags = grad ? AD__GRAD : 0;
    if (s.ndim == 0) {
        n->h = ad__hdr(AD_OP_LEAF, flags, 0, 0);
        n->v = data ? data[0] : 0.0;
        n->g = 0;
    } else {
        uint32_t xi;
        ad__ext *x = new_ext(t, op, s, 0, grad, &xi);
        if (!x)
            return ad_nil();
        size_t size = ad_shape_size(s);
        if (data)
            memcpy(x->call.out.val, data, size * sizeof *data);
        else
            memset(x->call.out.val, 0, size * sizeof *x->call.out.val);
        x->def = &ad__leaf_def;
        x->node = id;
        t->next_ext++;
        t->ext_grads += x->call.out.grad != NULL;
        n->h = ad__hdr(AD_OP_LEAF, flags | AD__EXT, xi, 0);
    }
    t->len++;
    return ad__handle(t, id);
}

ad_node ad_constant(ad_tape *t, ad_shape s, const double *data) { return leaf(t, s, data, false); }
ad_node ad_variable(ad_tape *t, ad_shape s, const double *data) { return leaf(t, s, data, true); }
ad_node ad_scalar(ad_tape *t, double x) { return leaf(t, ad_shape_scalar(), &x, false); }
ad_node ad_scalar_var(ad_tape *t, double x) { return leaf(t, ad_shape_scalar(), &x, true); }

ad_node ad_param(ad_tape *t, ad_shape s, const double *value, double *grad)
{
    if (!t || t->status != AD_OK)
        return ad_nil();
    if (!value) {
        ad__fail(t, AD_EMISUSE, "param: value is NULL");
        return ad_nil();
    }
    if (check_shape(t, "param", s) != AD_OK)
        return ad_nil();
    uint32_t id = new_node(t, "param");
    if (!id)
        return ad_nil();
    if (ad__pool_reserve(&t->exts, &t->mem, t->next_ext) != AD_OK) {
        ad__fail(t, AD_ENOMEM, "param: out of memory");
        return ad_nil();
    }
    uint32_t xi = (uint32_t)t->next_ext;
    ad__ext *x = ad__X(t, xi);
    memset(x, 0, sizeof *x);
    x->def = &ad__leaf_def;
    x->call.out.shape = s;
    x->call.out.val = (double *)value; /* never written: leaves have no forward */
    x->call.out.grad = grad;
    x->view = 1;
    x->caller_grad = grad != NULL;
    x->node = id;
    t->next_ext++;
    t->ext_grads += x->call.out.grad != NULL;
    t->ss.grads_checked &= grad == NULL; /* a new caller buffer: check again */
    ad__N(t, id)->h = ad__hdr(AD_OP_LEAF, AD__EXT | (grad ? AD__GRAD : 0), xi, 0);
    t->len++;
    return ad__handle(t, id);
}

int ad_set_value(ad_tape *t, ad_node leafn, const double *data)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    ad__node *n = ad__check_call(t, leafn, "set_value", 1);
    if (!n)
        return AD_EMISUSE;
    if (!data)
        return ad__fail_call(t, AD_EMISUSE, "set_value: data is NULL");
    const unsigned op = ad__opc(n->h);
    ad__ext *x = (n->h & AD__EXT) ? ad__X(t, ad__a(n->h)) : NULL;
    if (op != AD_OP_LEAF)
        return ad__fail_call(t, AD_EMISUSE,
                        "set_value: node %u is the result of %s, not a constant or variable",
                        (unsigned)leafn.id_, x ? x->def->name : ad__ops[op]->def.name);
    if (x && x->view)
        return ad__fail_call(t, AD_EMISUSE,
                        "set_value: node %u is an ad_param; write to the caller's buffer instead",
                        (unsigned)leafn.id_);
    if (x)
        memcpy(x->call.out.val, data, ad_shape_size(x->call.out.shape) * sizeof *data);
    else
        n->v = data[0];
    return AD_OK;
}

/* ---- recording ---- */

static int push_const(ad_tape *t, const char *op, double c, uint32_t *ci)
{
    if (ad__const_repeats(t, c)) {
        *ci = (uint32_t)t->nconsts - 1;
        return AD_OK;
    }
    if (t->nconsts == t->cap_consts) {
        size_t ncap = t->cap_consts ? 2 * t->cap_consts : 256;
        if (ncap > AD__MAX_NODES)
            return ad__fail(t, AD_ELIMIT, "%s: too many op constants", op);
        double *p = ad__realloc(&t->mem, t->consts, t->cap_consts * sizeof *p, ncap * sizeof *p);
        if (!p)
            return ad__fail(t, AD_ENOMEM, "%s: out of memory", op);
        t->consts = p;
        t->cap_consts = ncap;
    }
    t->consts[t->nconsts] = c;
    *ci = (uint32_t)t->nconsts++;
    return AD_OK;
}

ad_node ad__record(ad_tape *t, unsigned op, const ad_opdef *def, const ad_node *in, int n,
                   double c)
{
    if (!t || t->status != AD_OK)
        return ad_nil();
    const char *name = def->name;
    if (n != def->arity) {
        ad__fail(t, AD_EMISUSE, "%s: takes %d operand%s, got %d", name, def->arity,
                 def->arity == 1 ? "" : "s", n);
        return ad_nil();
    }
    if (n > 0 && !in) {
        ad__fail(t, AD_EMISUSE, "%s: operand array is NULL", name);
        return ad_nil();
    }
    ad__node *inp[AD_MAX_ARITY];
    ad_shape shp[AD_MAX_ARITY];
    bool grad = false, all_inline = true;
    for (int k = 0; k < n; k++) {
        inp[k] = ad__check(t, in[k], name, k + 1);
        if (!inp[k])
            return ad_nil();
        shp[k] = shape_of(t, inp[k]);
        grad |= (inp[k]->h & AD__GRAD) != 0;
        all_inline &= !(inp[k]->h & AD__EXT);
    }
    /* a comparison: derivative 0, so never GRAD; a replay guard */
    const bool guard = ad__is_compare(op);
    grad &= !guard;

    const ad__op *bi = op < AD_OP_CUSTOM ? ad__ops[op] : NULL;
    if (bi && bi->scalar_form && all_inline) {
        /* Inline scalar: value and adjoint live in the node. */
        if (guard && ad__guard_reserve(t, name, 1) != AD_OK)
            return ad_nil();
        uint32_t id = new_node(t, name);
        if (!id)
            return ad_nil();
        uint32_t b = n > 1 ? in[1].id_ : 0;
        if (bi->takes_const && push_const(t, name, c, &b) != AD_OK)
            return ad_nil();
        ad__node *o = ad__N(t, id);
        o->h = ad__hdr(op, grad ? AD__GRAD : 0, in[0].id_, b);
        o->g = 0;
        ad__sfwd(t->nodes.chunk, t->consts, o);
        t->len++;
        if (guard)
            ad__guard_push(t, id, &o->v, 1);
        return ad__handle(t, id);
    }

    ad_shape out;
    if (def->shape) {
        char why[160];
        why[0] = '\0';
        if (def->shape(shp, n, c, &out, why, sizeof why) != AD_OK) {
            ad__fail(t, AD_ESHAPE, "%s: %s", name, why[0] ? why : "operand shapes do not fit");
            return ad_nil();
        }
    } else {
        out = shp[0];
    }
    if (check_shape(t, name, out) != AD_OK)
        return ad_nil();
    if (guard && ad__guard_reserve(t, name, ad_shape_size(out)) != AD_OK)
        return ad_nil();
    uint32_t id = new_node(t, name);
    if (!id)
        return ad_nil();
    uint32_t xi;
    const ad__opstate *st = op < AD_OP_CUSTOM ? ad__opstates[op] : NULL;
    ad__ext *x = new_ext(t, name, out, st && st->aux ? st->aux(shp, n, out) : 0, grad, &xi);
    if (!x)
        return ad_nil();
    x->def = def;
    x->checks = st && st->check;
    for (int k = 0; k < n; k++) {
        x->in[k] = in[k].id_;
        ad__view(t, in[k].id_, &x->args[k]);
        const uint64_t ha = inp[k]->h;
        x->src[k] = (ha & (AD__EXT | AD__GRAD)) == (AD__EXT | AD__GRAD) ? ad__X(t, ad__a(ha)) : NULL;
        for (int j = 0; j < k; j++)
            if (in[j].id_ == in[k].id_)
                x->dup |= (uint8_t)(1u << j | 1u << k);
    }
    x->call.in = x->args;
    x->call.nin = n;
    /* an elementwise built-in without a constant keeps none, in either
     * form (the inline form stores none either) */
    x->call.c = bi && bi->scalar_form && !bi->takes_const ? 0.0 : c;
    /* built-in ops carry the tape's dense-kernel table (dense.h); the
     * others ignore it */
    x->call.ud = bi ? (void *)(uintptr_t)t->kern : def->ud;
    x->node = id;
    t->next_ext++;
    t->ext_grads += x->call.out.grad != NULL;
    x->op = (uint16_t)op;
    ad__N(t, id)->h = ad__hdr(AD__OP_EXT, AD__EXT | (grad ? AD__GRAD : 0), xi, 0);
    t->len++;
    def->forward(&x->call);
    if (guard)
        ad__guard_push(t, id, x->call.out.val, ad_shape_size(out));
    if (x->checks) {
        char why[160];
        why[0] = '\0';
        const int bad = st->check(&x->call, why, sizeof why);
        if (bad != AD_OK) { /* a singular matrix: the node is dropped, as if never recorded */
            t->len--;
            t->next_ext--;
            t->ext_grads -= x->call.out.grad != NULL;
            ad__fail(t, bad, "%s: %s", name, why);
            return ad_nil();
        }
    }
    return ad__handle(t, id);
}

size_t ad__aux_size(const ad__ext *x)
{
    const ad__opstate *st = x->op < AD_OP_CUSTOM ? ad__opstates[x->op] : NULL;
    if (!st || !st->aux)
        return 0;
    ad_shape in[AD_MAX_ARITY];
    for (int k = 0; k < x->call.nin; k++)
        in[k] = x->args[k].shape;
    return st->aux(in, x->call.nin, x->call.out.shape);
}

int ad__eval_failure(const ad__ext *x, char *msg, size_t cap)
{
    char why[160];
    why[0] = '\0';
    const int st = ad__opstates[x->op]->check(&x->call, why, sizeof why);
    snprintf(msg, cap, "%s: %s at node %u; its value is NaN", x->def->name, why,
             (unsigned)x->node);
    return st;
}

ad_node ad_apply(ad_tape *t, const ad_opdef *def, const ad_node *in, int n, double c)
{
    if (!t || t->status != AD_OK)
        return ad_nil();
    if (!def || !def->name || !def->forward || !def->vjp || def->arity < 1
        || def->arity > AD_MAX_ARITY) {
        ad__fail(t, AD_EMISUSE, "apply: invalid op descriptor (%s)",
                 def && def->name ? def->name : "unnamed");
        return ad_nil();
    }
    return ad__record(t, ad__opcode_of(def), def, in, n, c);
}

ad_node ad_apply_named(ad_tape *t, const char *name, const ad_node *in, int n, double c)
{
    if (!t || t->status != AD_OK)
        return ad_nil();
    if (!name) {
        ad__fail(t, AD_EMISUSE, "apply: op name is NULL");
        return ad_nil();
    }
    const ad_opdef *def = ad_registry_find(t->registry, name);
    if (!def) {
        ad__fail(t, AD_ENOTFOUND, "apply: unknown op '%s'", name);
        return ad_nil();
    }
    return ad_apply(t, def, in, n, c);
}

/* ---- reading nodes ---- */

const double *ad_value(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    if (!n)
        return NULL;
    return (n->h & AD__EXT) ? ad__X(t, ad__a(n->h))->call.out.val : &n->v;
}

double ad_scalar_value(const ad_tape *t, ad_node h)
{
    const double *v = ad_value(t, h);
    return v ? v[0] : NAN;
}

const double *ad_grad(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    if (!n || !(n->h & AD__GRAD))
        return NULL;
    return (n->h & AD__EXT) ? ad__X(t, ad__a(n->h))->call.out.grad : &n->g;
}

ad_shape ad_node_shape(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    if (!n) {
        ad_shape s = {0, 0, -1};
        return s;
    }
    return shape_of(t, n);
}

ad_node ad_tape_node(const ad_tape *t, size_t index)
{
    if (!t || index == 0 || index >= t->len)
        return ad_nil();
    return ad__handle(t, (uint32_t)index);
}

size_t ad_node_index(const ad_tape *t, ad_node h) { return ad__peek(t, h) ? h.id_ : 0; }

const ad_opdef *ad_node_op(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    if (!n)
        return NULL;
    if (n->h & AD__EXT)
        return ad__X(t, ad__a(n->h))->def;
    return &ad__ops[ad__opc(n->h)]->def;
}

int ad_node_inputs(const ad_tape *t, ad_node h, ad_node in[AD_MAX_ARITY])
{
    ad__node *n = ad__peek(t, h);
    if (!n || !in)
        return -1;
    if (n->h & AD__EXT) {
        ad__ext *x = ad__X(t, ad__a(n->h));
        for (int k = 0; k < x->call.nin; k++)
            in[k] = ad__handle(t, x->in[k]);
        return x->call.nin;
    }
    unsigned op = ad__opc(n->h);
    if (op == AD_OP_LEAF)
        return 0;
    int arity = ad__ops[op]->def.arity;
    in[0] = ad__handle(t, ad__a(n->h));
    if (arity > 1)
        in[1] = ad__handle(t, ad__b(n->h));
    return arity;
}

double ad_node_const(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    if (!n)
        return 0;
    if (n->h & AD__EXT)
        return ad__X(t, ad__a(n->h))->call.c;
    unsigned op = ad__opc(n->h);
    return ad__ops[op]->takes_const ? t->consts[ad__b(n->h)] : 0;
}

int ad_node_requires_grad(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    return n && (n->h & AD__GRAD) ? 1 : 0;
}

int ad_node_is_variable(const ad_tape *t, ad_node h)
{
    ad__node *n = ad__peek(t, h);
    return n && ad__opc(n->h) == AD_OP_LEAF && (n->h & AD__GRAD) ? 1 : 0;
}

int ad_tape_set_kernels(ad_tape *t, int variant)
{
    if (!t)
        return AD_EMISUSE;
    ad__begin_call(t);
    if (variant < AD_KERNELS_AUTO || variant > AD_KERNELS_AVX2)
        return ad__fail_call(t, AD_EMISUSE, "ad_tape_set_kernels: unknown variant %d", variant);
    const ad__kernels *k = ad__kernels_get(variant);
    if (!k) {
        static const char *const names[] = {"auto", "portable", "sse2", "avx2"};
        return ad__fail_call(t, AD_EUNSUPPORTED,
                             "ad_tape_set_kernels: %s kernels: not in this build or not "
                             "supported by this CPU (in use: %s)",
                             names[variant], t->kern->name);
    }
    t->kern = k;
    return AD_OK;
}

int ad_tape_kernels(const ad_tape *t)
{
    return t ? t->kern->variant : ad__kernels_get(AD_KERNELS_AUTO)->variant;
}
