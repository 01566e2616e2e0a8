/* params.c -- named tensors in two flat blocks (values, gradients), found
 * by name through uthash; initialisers; gradient zeroing and clipping. */
#include "params_impl.h"

#include <math.h>
#include <string.h>

nn_params *nn_params_new(ad_alloc_fn alloc, void *alloc_ud)
{
    nn__mem mem;
    nn__mem_init(&mem, alloc, alloc_ud);
    nn_params *p = nn__alloc(&mem, sizeof *p);
    if (!p)
        return NULL;
    memset(p, 0, sizeof *p);
    p->mem = mem;
    return p;
}

void nn_params_free(nn_params *p)
{
    if (!p)
        return;
    nn__mem *uthash_mem = &p->mem;
    HASH_CLEAR(hh, p->by_name); /* frees the table, not the entries */
    for (size_t i = 0; i < p->count; i++)
        nn__free(uthash_mem, p->list[i], sizeof *p->list[i]);
    nn__free(&p->mem, p->list, p->cap_list * sizeof *p->list);
    nn__free(&p->mem, p->val, p->cap_val * sizeof *p->val);
    nn__free(&p->mem, p->grad, p->cap_grad * sizeof *p->grad);
    nn__mem mem = p->mem;
    nn__free(&mem, p, sizeof *p);
}

/* Grows a block to hold at least need doubles. */
static int grow_block(nn__mem *mem, double **blk, size_t *cap, size_t need)
{
    if (need <= *cap)
        return NN_OK;
    size_t ncap = *cap * 2 > need ? *cap * 2 : need;
    if (ncap > NN__MAX_DOUBLES)
        ncap = need;
    double *q = nn__realloc(mem, *blk, *cap * sizeof *q, ncap * sizeof *q);
    if (!q)
        return NN_ENOMEM;
    *blk = q;
    *cap = ncap;
    return NN_OK;
}

int nn_params_add(nn_params *p, const char *name, ad_shape shape, size_t *index)
{
    if (!p)
        return NN_EMISUSE;
    char sb[48];
    if (!name || !*name)
        return nn__fail(p->msg, NN_EMISUSE, "params: a tensor needs a non-empty name");
    const size_t len = strlen(name);
    if (len >= NN_NAME_MAX)
        return nn__fail(p->msg, NN_EMISUSE, "params: name '%.32s...' is %zu bytes; at most %d",
                        name, len, NN_NAME_MAX - 1);
    if (!nn__shape_ok(shape))
        return nn__fail(p->msg, NN_EMISUSE, "params: %s: shape %s (ndim %d, %ux%u) is not valid",
                        name, nn__shape_str(shape, sb, sizeof sb), shape.ndim,
                        (unsigned)shape.rows, (unsigned)shape.cols);
    nn__entry *e;
    HASH_FIND(hh, p->by_name, name, len, e);
    if (e)
        return nn__fail(p->msg, NN_EEXIST, "params: a tensor named %s already exists", name);
    const size_t n = ad_shape_size(shape);
    if (n > NN__MAX_DOUBLES - p->size)
        return nn__fail(p->msg, NN_ELIMIT, "params: %s: %s would make the store too large", name,
                        nn__shape_str(shape, sb, sizeof sb));

    /* Reserve everything first, so a failure leaves the store as it was
     * (grown capacity is harmless). */
    nn__mem *uthash_mem = &p->mem;
    bool uthash_oom = false;
    if (p->count == p->cap_list) {
        size_t ncap = p->cap_list ? 2 * p->cap_list : 8;
        nn__entry **l = nn__realloc(uthash_mem, p->list, p->cap_list * sizeof *l, ncap * sizeof *l);
        if (!l)
            goto oom;
        p->list = l;
        p->cap_list = ncap;
    }
    if (grow_block(uthash_mem, &p->val, &p->cap_val, p->size + n) != NN_OK ||
        grow_block(uthash_mem, &p->grad, &p->cap_grad, p->size + n) != NN_OK)
        goto oom;
    e = nn__alloc(uthash_mem, sizeof *e);
    if (!e)
        goto oom;
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, len + 1);
    e->shape = shape;
    e->offset = p->size;
    e->size = n;
    e->index = p->count;
    HASH_ADD_KEYPTR(hh, p->by_name, e->name, len, e);
    if (uthash_oom) {
        nn__free(uthash_mem, e, sizeof *e);
        goto oom;
    }
    memset(p->val + p->size, 0, n * sizeof *p->val);
    memset(p->grad + p->size, 0, n * sizeof *p->grad);
    p->list[p->count] = e;
    if (index)
        *index = p->count;
    p->count++;
    p->size += n;
    p->version++;
    return NN_OK;
oom:
    return nn__fail(p->msg, NN_ENOMEM, "params: out of memory adding %s (%s)", name,
                    nn__shape_str(shape, sb, sizeof sb));
}

void nn__params_pop(nn_params *p)
{
    if (!p || p->count == 0)
        return;
    nn__mem *uthash_mem = &p->mem;
    nn__entry *e = p->list[--p->count];
    HASH_DEL(p->by_name, e);
    p->size -= e->size;
    p->version++;
    nn__free(uthash_mem, e, sizeof *e);
}

size_t nn_params_count(const nn_params *p) { return p ? p->count : 0; }
size_t nn_params_size(const nn_params *p) { return p ? p->size : 0; }
uint64_t nn_params_version(const nn_params *p) { return p ? p->version : 0; }

int nn_params_find(nn_params *p, const char *name, size_t *index)
{
    if (!p)
        return NN_EMISUSE;
    if (!name)
        return nn__fail(p->msg, NN_EMISUSE, "params: find: name is NULL");
    nn__entry *e;
    HASH_FIND(hh, p->by_name, name, strlen(name), e);
    if (!e)
        return nn__fail(p->msg, NN_ENOTFOUND, "params: no tensor named %.*s", NN_NAME_MAX, name);
    if (index)
        *index = e->index;
    return NN_OK;
}

static nn__entry *entry(const nn_params *p, size_t i) { return p && i < p->count ? p->list[i] : NULL; }

const char *nn_params_name(const nn_params *p, size_t i)
{
    nn__entry *e = entry(p, i);
    return e ? e->name : NULL;
}

ad_shape nn_params_shape(const nn_params *p, size_t i)
{
    nn__entry *e = entry(p, i);
    ad_shape none = {0, 0, -1};
    return e ? e->shape : none;
}

size_t nn_params_offset(const nn_params *p, size_t i)
{
    nn__entry *e = entry(p, i);
    return e ? e->offset : 0;
}

double *nn_params_value(nn_params *p, size_t i)
{
    nn__entry *e = entry(p, i);
    return e ? p->val + e->offset : NULL;
}

double *nn_params_grad(nn_params *p, size_t i)
{
    nn__entry *e = entry(p, i);
    return e ? p->grad + e->offset : NULL;
}

double *nn_params_values(nn_params *p) { return p && p->size ? p->val : NULL; }
double *nn_params_grads(nn_params *p) { return p && p->size ? p->grad : NULL; }

int nn_params_init(nn_params *p, size_t i, nn_init init, double std, nn_rng *rng)
{
    if (!p)
        return NN_EMISUSE;
    nn__entry *e = entry(p, i);
    if (!e)
        return nn__fail(p->msg, NN_EMISUSE, "params: init: no tensor %zu (the store has %zu)", i,
                        p->count);
    if ((unsigned)init >= NN_INIT_COUNT)
        return nn__fail(p->msg, NN_EMISUSE, "params: init %s: unknown initialiser %d", e->name,
                        (int)init);
    if (init != NN_INIT_ZEROS && !rng)
        return nn__fail(p->msg, NN_EMISUSE, "params: init %s: the generator is NULL", e->name);
    if (init == NN_INIT_NORMAL && !(std >= 0 && isfinite(std)))
        return nn__fail(p->msg, NN_EMISUSE, "params: init %s: std %g is not a finite value >= 0",
                        e->name, std);
    double *v = p->val + e->offset;
    const double fan_in = e->shape.ndim == 2 ? e->shape.cols : e->shape.rows;
    const double a = sqrt(6.0 / fan_in);
    for (size_t k = 0; k < e->size; k++) {
        switch (init) {
        case NN_INIT_UNIFORM: v[k] = a * (2.0 * nn_rng_uniform(rng) - 1.0); break; /* U(-a, a) */
        case NN_INIT_NORMAL: v[k] = std * nn_rng_normal(rng); break;               /* N(0, std^2) */
        default: v[k] = 0.0; break;
        }
    }
    return NN_OK;
}

void nn_params_zero_grad(nn_params *p)
{
    if (p && p->size)
        memset(p->grad, 0, p->size * sizeof *p->grad);
}

double nn_params_grad_norm(const nn_params *p)
{
    if (!p)
        return 0.0;
    double s = 0;
    for (size_t k = 0; k < p->size; k++) /* ||g||^2 = sum g_k^2 */
        s += p->grad[k] * p->grad[k];
    return sqrt(s);
}

int nn_params_clip_grad_norm(nn_params *p, double max_norm, double *norm)
{
    if (!p)
        return NN_EMISUSE;
    if (!(max_norm > 0 && isfinite(max_norm)))
        return nn__fail(p->msg, NN_EMISUSE, "params: clip: max_norm %g is not positive and finite",
                        max_norm);
    const double g = nn_params_grad_norm(p);
    if (norm)
        *norm = g;
    if (g > max_norm) {
        const double s = max_norm / g; /* g <- g * max / ||g|| */
        for (size_t k = 0; k < p->size; k++)
            p->grad[k] *= s;
    }
    return NN_OK;
}

ad_node nn_params_node(nn_params *p, ad_tape *t, size_t i, int grad)
{
    if (!p)
        return ad_nil();
    nn__entry *e = entry(p, i);
    if (!e) {
        nn__fail(p->msg, NN_EMISUSE, "params: node: no tensor %zu (the store has %zu)", i, p->count);
        return ad_nil();
    }
    return ad_param(t, e->shape, p->val + e->offset, grad ? p->grad + e->offset : NULL);
}

const char *nn_params_errmsg(const nn_params *p) { return p ? p->msg : "no parameter store"; }
