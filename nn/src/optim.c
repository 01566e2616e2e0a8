/* optim.c -- SGD, momentum and Adam: each one loop over the flat value and
 * gradient blocks of a parameter store. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

nn_optim_opts nn_optim_defaults(nn_optim_kind kind)
{
    nn_optim_opts o = {kind, kind == NN_OPTIM_ADAM ? 0.001 : 0.01, 0.9, 0.9, 0.999, 1e-8};
    return o;
}

const char *nn_optim_name(nn_optim_kind kind)
{
    switch (kind) {
    case NN_OPTIM_SGD: return "sgd";
    case NN_OPTIM_MOMENTUM: return "momentum";
    case NN_OPTIM_ADAM: return "adam";
    default: return "unknown";
    }
}

static int bad(char *msg, size_t cap, const char *what, double v)
{
    if (msg && cap)
        snprintf(msg, cap, "optimizer: %s %g is out of range", what, v);
    return NN_EMISUSE;
}

static int in01(double v) { return v >= 0 && v < 1; } /* [0, 1), false for NaN */

int nn_optim_check(const nn_optim_opts *o, char *msg, size_t cap)
{
    if (!o) {
        if (msg && cap)
            snprintf(msg, cap, "optimizer: options are NULL");
        return NN_EMISUSE;
    }
    if ((unsigned)o->kind >= NN_OPTIM_COUNT) {
        if (msg && cap)
            snprintf(msg, cap, "optimizer: unknown kind %d", (int)o->kind);
        return NN_EMISUSE;
    }
    if (!(o->lr > 0 && isfinite(o->lr)))
        return bad(msg, cap, "learning rate", o->lr);
    if (o->kind == NN_OPTIM_MOMENTUM && !in01(o->momentum))
        return bad(msg, cap, "momentum", o->momentum);
    if (o->kind == NN_OPTIM_ADAM) {
        if (!in01(o->beta1))
            return bad(msg, cap, "beta1", o->beta1);
        if (!in01(o->beta2))
            return bad(msg, cap, "beta2", o->beta2);
        if (!(o->eps > 0 && isfinite(o->eps)))
            return bad(msg, cap, "eps", o->eps);
    }
    if (msg && cap)
        msg[0] = '\0';
    return NN_OK;
}

nn_optim *nn_optim_new(const nn_optim_opts *opts, size_t size, ad_alloc_fn alloc, void *alloc_ud)
{
    if (nn_optim_check(opts, NULL, 0) != NN_OK || size == 0 ||
        size > ((size_t)-1) / sizeof(double) / 4)
        return NULL;
    nn__mem mem;
    nn__mem_init(&mem, alloc, alloc_ud);
    nn_optim *o = nn__alloc(&mem, sizeof *o);
    if (!o)
        return NULL;
    memset(o, 0, sizeof *o);
    o->mem = mem;
    o->o = *opts;
    o->size = size;
    if (opts->kind != NN_OPTIM_SGD) {
        o->m1 = nn__alloc(&mem, size * sizeof *o->m1);
        if (!o->m1)
            goto oom;
    }
    if (opts->kind == NN_OPTIM_ADAM) {
        o->m2 = nn__alloc(&mem, size * sizeof *o->m2);
        if (!o->m2)
            goto oom;
    }
    nn_optim_reset(o);
    return o;
oom:
    nn_optim_free(o);
    return NULL;
}

void nn_optim_free(nn_optim *o)
{
    if (!o)
        return;
    nn__free(&o->mem, o->m1, o->size * sizeof *o->m1);
    nn__free(&o->mem, o->m2, o->size * sizeof *o->m2);
    nn__mem mem = o->mem;
    nn__free(&mem, o, sizeof *o);
}

void nn_optim_reset(nn_optim *o)
{
    if (!o)
        return;
    if (o->m1)
        memset(o->m1, 0, o->size * sizeof *o->m1);
    if (o->m2)
        memset(o->m2, 0, o->size * sizeof *o->m2);
    o->t = 0;
    o->b1t = o->b2t = 1.0;
}

int nn_optim_set_lr(nn_optim *o, double lr)
{
    if (!o)
        return NN_EMISUSE;
    if (!(lr > 0 && isfinite(lr)))
        return bad(o->msg, sizeof o->msg, "learning rate", lr);
    o->o.lr = lr;
    return NN_OK;
}

uint64_t nn_optim_steps(const nn_optim *o) { return o ? o->t : 0; }

const char *nn_optim_errmsg(const nn_optim *o) { return o ? o->msg : "no optimizer"; }

void nn_optim_begin(nn_optim *o)
{
    if (!o)
        return;
    o->t++;
    if (o->o.kind == NN_OPTIM_ADAM) {
        o->b1t *= o->o.beta1;
        o->b2t *= o->o.beta2;
    }
}

void nn_optim_apply(nn_optim *o, size_t off, double *restrict w, const double *restrict g,
                    size_t n)
{
    if (!o || off > o->size || n > o->size - off)
        return;
    const double lr = o->o.lr;
    switch (o->o.kind) {
    case NN_OPTIM_SGD:
        for (size_t k = 0; k < n; k++)
            w[k] -= lr * g[k]; /* w -= lr g */
        break;
    case NN_OPTIM_MOMENTUM: {
        double *restrict v = o->m1 + off;
        const double mu = o->o.momentum;
        for (size_t k = 0; k < n; k++) {
            v[k] = mu * v[k] + g[k]; /* v = mu v + g */
            w[k] -= lr * v[k];       /* w -= lr v    */
        }
        break;
    }
    default: {
        double *restrict m1 = o->m1 + off, *restrict m2 = o->m2 + off;
        const double b1 = o->o.beta1, b2 = o->o.beta2, eps = o->o.eps;
        const double c1 = 1.0 / (1.0 - o->b1t), c2 = 1.0 / (1.0 - o->b2t);
        for (size_t k = 0; k < n; k++) {
            m1[k] = b1 * m1[k] + (1.0 - b1) * g[k];        /* m = b1 m + (1-b1) g     */
            m2[k] = b2 * m2[k] + (1.0 - b2) * g[k] * g[k]; /* v = b2 v + (1-b2) g^2   */
            w[k] -= lr * (m1[k] * c1) / (sqrt(m2[k] * c2) + eps); /* w -= lr mhat/(sqrt(vhat)+eps) */
        }
        break;
    }
    }
}

int nn_optim_step(nn_optim *o, nn_params *p)
{
    if (!o)
        return NN_EMISUSE;
    if (!p)
        return nn__fail(o->msg, NN_EMISUSE, "optimizer: the parameter store is NULL");
    if (nn_params_size(p) != o->size)
        return nn__fail(o->msg, NN_ESHAPE,
                        "optimizer: made for %zu values but the store holds %zu", o->size,
                        nn_params_size(p));
    nn_optim_begin(o);
    nn_optim_apply(o, 0, nn_params_values(p), nn_params_grads(p), o->size);
    return NN_OK;
}
