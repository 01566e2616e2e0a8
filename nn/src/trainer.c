/* trainer.c -- the training loop's fast path: record forward + loss once
 * per batch size, then per step copy the batch into the buffers the tape
 * views, replay, sweep back (the sweep writes the gradients), clip,
 * update. */
#include "nn_internal.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* An ad_grad_hook update: the optimizer's step on one tensor's rows. */
static void apply_piece(void *ud, size_t off, double *w, const double *g, size_t n)
{
    const struct piece *p = ud;
    nn_optim_apply(p->opt, p->off + off, w, g, n);
}

/* An ad_grad_hook ready: tensor complete in the sweep, start its reduction. */
static void ready_piece(void *ud, ad_node param, const ad_tensor *view)
{
    (void)param, (void)view;
    struct piece *p = ud;
    nn_trainer *tr = p->tr;
    if (tr->red_status != 0)
        return; /* a start failed: the step fails after the sweep */
    const int st = tr->red.start(tr->red.ud, p->off, nn_params_grads(tr->m->params) + p->off, p->n);
    if (st != 0) {
        tr->red_status = st;
        tr->red_piece = (size_t)(p - tr->pieces);
    }
}

static bool can_fuse(const nn_trainer *tr)
{
    return tr->assign && tr->clip == 0 && !tr->fused_off && !tr->red.start;
}

nn_trainer *nn_trainer_new(nn_model *m, const nn_trainer_opts *opts)
{
    if (!m)
        return NULL;
    if (!opts) {
        nn__fail(m->msg, NN_EMISUSE, "trainer: options are NULL");
        return NULL;
    }
    if ((unsigned)opts->loss >= NN_LOSS_COUNT) {
        nn__fail(m->msg, NN_EMISUSE, "trainer: unknown loss %d", (int)opts->loss);
        return NULL;
    }
    if (!(opts->clip_norm >= 0 && isfinite(opts->clip_norm))) {
        nn__fail(m->msg, NN_EMISUSE, "trainer: clip_norm %g is not a finite value >= 0",
                 opts->clip_norm);
        return NULL;
    }
    if (nn_optim_check(&opts->optim, m->msg, sizeof m->msg) != NN_OK)
        return NULL;
    if (m->nlayers == 0) {
        nn__fail(m->msg, NN_EMISUSE, "trainer: the model has no layers");
        return NULL;
    }
    nn_trainer *tr = nn__alloc(&m->mem, sizeof *tr);
    if (!tr) {
        nn__fail(m->msg, NN_ENOMEM, "trainer: out of memory");
        return NULL;
    }
    memset(tr, 0, sizeof *tr);
    tr->m = m;
    tr->loss = opts->loss;
    tr->clip = opts->clip_norm;
    tr->version = nn_params_version(m->params);
    tr->assign = 2 * m->nlayers == nn_params_count(m->params); /* W and b per layer */
    tr->opt = nn_optim_new(&opts->optim, nn_params_size(m->params), m->mem.fn, m->mem.ud);
    tr->npieces = nn_params_count(m->params);
    tr->pieces = nn__alloc(&m->mem, tr->npieces * sizeof *tr->pieces);
    tr->nodes = nn__alloc(&m->mem, tr->npieces * sizeof *tr->nodes);
    if (!tr->opt || !tr->pieces || !tr->nodes) {
        nn_trainer_free(tr);
        nn__fail(m->msg, NN_ENOMEM, "trainer: out of memory for the optimizer state");
        return NULL;
    }
    const double *base = nn_params_values(m->params);
    for (size_t i = 0; i < tr->npieces; i++) {
        tr->pieces[i].opt = tr->opt;
        tr->pieces[i].off = (size_t)(nn_params_value(m->params, i) - base);
        tr->pieces[i].n = ad_shape_size(nn_params_shape(m->params, i));
        tr->pieces[i].tr = tr;
    }
    return tr;
}

void nn_trainer_free(nn_trainer *tr)
{
    if (!tr)
        return;
    nn__mem *mem = &tr->m->mem;
    nn__slot_free(mem, &tr->slot[0]);
    nn__slot_free(mem, &tr->slot[1]);
    nn_optim_free(tr->opt);
    nn__free(mem, tr->pieces, tr->npieces * sizeof *tr->pieces);
    nn__free(mem, tr->nodes, tr->npieces * sizeof *tr->nodes);
    nn__free(mem, tr, sizeof *tr);
}

nn_optim *nn_trainer_optim(nn_trainer *tr) { return tr ? tr->opt : NULL; }
uint64_t nn_trainer_recordings(const nn_trainer *tr) { return tr ? tr->recordings : 0; }

int nn_trainer_fused(const nn_trainer *tr) { return tr ? can_fuse(tr) : 0; }

void nn_trainer_set_fused(nn_trainer *tr, int on)
{
    if (!tr || tr->fused_off == !on)
        return;
    tr->fused_off = !on;
    tr->slot[0].batch = tr->slot[1].batch = 0; /* record again, with or without hooks */
}
const char *nn_trainer_errmsg(const nn_trainer *tr) { return tr ? tr->msg : "no trainer"; }

/* Records input -> forward -> loss on slot s, whose buffers hold the batch. */
static int record(nn_trainer *tr, nn__slot *s, uint32_t batch)
{
    nn_model *m = tr->m;
    const uint32_t n_in = nn_model_input_size(m), n_out = nn_model_output_size(m);
    const ad_shape xs = batch == 1 ? ad_shape_vec(n_in) : ad_shape_mat(batch, n_in);
    const ad_shape ys = batch == 1 ? ad_shape_vec(n_out) : ad_shape_mat(batch, n_out);
    ad_node x = ad_param(s->tape, xs, s->X, NULL); /* views: refilled before each replay */
    ad_node y = ad_param(s->tape, ys, s->Y, NULL);
    if (ad_node_is_nil(x) || ad_node_is_nil(y))
        return nn__fail(tr->msg, nn__from_ad(ad_tape_status(s->tape)), "trainer: %s",
                        ad_tape_errmsg(s->tape));
    ad_node yhat;
    for (size_t i = 0; i < tr->npieces; i++)
        tr->nodes[i] = ad_nil(); /* tensors outside the layers stay nil */
    int st = nn__forward_params(m, s->tape, x, 1, &yhat, tr->nodes);
    if (st == NN_OK)
        st = nn__loss(m, s->tape, tr->loss, yhat, y, nn_trainer_ranks(tr), &s->out);
    if (st != NN_OK)
        return nn__fail(tr->msg, st, "trainer: %s", m->msg);
    /* the optimizer inside the sweep: the engine hands each tensor's
     * gradient (in pieces, as the sweep completes them) to the update hook,
     * which applies the step to it; the gradient itself is the sweep's
     * alone. Every store tensor is in a layer (can_fuse: tr->assign). */
    for (size_t i = 0; can_fuse(tr) && i < tr->npieces; i++) {
        ad_grad_hook h = {.size = sizeof h, .update = apply_piece, .ud = &tr->pieces[i]};
        const int hs = ad_set_grad_hook(s->tape, tr->nodes[i], &h);
        if (hs != AD_OK)
            return nn__fail(tr->msg, nn__from_ad(hs), "trainer: %s", ad_tape_errmsg(s->tape));
    }
    /* a reduction per tensor: started as soon as its gradient is complete
     * (tensors outside the layers keep zero gradients on every rank) */
    for (size_t i = 0; tr->red.start && tr->red.per_tensor && i < tr->npieces; i++) {
        if (ad_node_is_nil(tr->nodes[i]))
            continue;
        ad_grad_hook h = {sizeof h, ready_piece, NULL, &tr->pieces[i], NULL};
        const int hs = ad_set_grad_hook(s->tape, tr->nodes[i], &h);
        if (hs != AD_OK)
            return nn__fail(tr->msg, nn__from_ad(hs), "trainer: %s", ad_tape_errmsg(s->tape));
    }
    s->batch = batch;
    s->version = tr->version;
    tr->recordings++;
    return NN_OK;
}

int nn_trainer_step(nn_trainer *tr, const double *X, const double *Y, uint32_t batch, double *loss)
{
    if (!tr)
        return NN_EMISUSE;
    nn_model *m = tr->m;
    if (!X || !Y)
        return nn__fail(tr->msg, NN_EMISUSE, "trainer: X or Y is NULL");
    if (batch == 0)
        return nn__fail(tr->msg, NN_EMISUSE, "trainer: the batch is empty");
    if (nn_params_version(m->params) != tr->version)
        return nn__fail(tr->msg, NN_EMISUSE,
                        "trainer: the model's parameters changed after the trainer was made");
    const uint32_t n_in = nn_model_input_size(m), n_out = nn_model_output_size(m);
    nn__slot *s = tr->slot[0].batch == batch ? &tr->slot[0]
                : tr->slot[1].batch == batch ? &tr->slot[1]
                                             : NULL;
    int st;
    if (s) {
        memcpy(s->X, X, (size_t)batch * n_in * sizeof *X);
        memcpy(s->Y, Y, (size_t)batch * n_out * sizeof *Y);
        st = ad_replay(s->tape);
        if (st != AD_OK)
            return nn__fail(tr->msg, nn__from_ad(st), "trainer: replay: %s", ad_tape_errmsg(s->tape));
    } else {
        s = tr->slot[0].batch == 0 ? &tr->slot[0] : &tr->slot[1];
        char why[NN__MSG_CAP];
        st = nn__slot_reserve(&m->mem, s, batch, n_in, n_out, why);
        if (st != NN_OK)
            return nn__fail(tr->msg, st, "trainer: %s", why);
        memcpy(s->X, X, (size_t)batch * n_in * sizeof *X);
        memcpy(s->Y, Y, (size_t)batch * n_out * sizeof *Y);
        st = record(tr, s, batch); /* recording evaluates: no replay needed */
        if (st != NN_OK)
            return st;
    }
    /* Tensors outside the model's layers keep zero gradients, so with any
     * the store is zeroed and the sweep adds; otherwise the sweep
     * overwrites every gradient and zeroing would be a wasted pass. */
    if (!tr->assign)
        nn_params_zero_grad(m->params);
    const bool fused = can_fuse(tr);
    if (fused)
        nn_optim_begin(tr->opt); /* the hooks apply the step's pieces */
    tr->red_status = 0;
    st = ad_sweep(s->tape, s->out, NULL, tr->assign ? AD_SWEEP_ASSIGN : 0);
    if (st != AD_OK)
        return nn__fail(tr->msg, nn__from_ad(st), "trainer: backward: %s", ad_tape_errmsg(s->tape));
    if (loss)
        *loss = ad_scalar_value(s->tape, s->out);
    if (fused)
        return NN_OK;
    if (tr->red.start) { /* sum the ranks' gradients, then update */
        if (tr->red_status != 0) {
            /* the reductions started before the failure must not write into
             * the gradient block later: complete them (the result no matter) */
            (void)tr->red.wait(tr->red.ud);
            return nn__fail(tr->msg, NN_EIO,
                            "trainer: reduce: start failed with %d on %s; parameters not updated",
                            tr->red_status, nn_params_name(m->params, tr->red_piece));
        }
        if (!tr->red.per_tensor) {
            const int rs = tr->red.start(tr->red.ud, 0, nn_params_grads(m->params),
                                         nn_params_size(m->params));
            if (rs != 0 && (tr->red.wait(tr->red.ud), 1))
                return nn__fail(tr->msg, NN_EIO,
                                "trainer: reduce: start failed with %d on the gradient block; "
                                "parameters not updated", rs);
        }
        const int ws = tr->red.wait(tr->red.ud);
        if (ws != 0)
            return nn__fail(tr->msg, NN_EIO,
                            "trainer: reduce: wait failed with %d; parameters not updated", ws);
    }
    if (tr->clip > 0)
        nn_params_clip_grad_norm(m->params, tr->clip, NULL);
    st = nn_optim_step(tr->opt, m->params);
    if (st != NN_OK)
        return nn__copy_msg(tr->msg, st, nn_optim_errmsg(tr->opt));
    return NN_OK;
}

uint32_t nn_trainer_ranks(const nn_trainer *tr)
{
    return !tr ? 0 : tr->red.start ? tr->red.ranks : 1;
}

int nn_trainer_set_reduce(nn_trainer *tr, const nn_reduce *r)
{
    if (!tr)
        return NN_EMISUSE;
    if (r) {
        if (r->size < sizeof *r)
            return nn__fail(tr->msg, NN_EMISUSE,
                            "trainer: set_reduce: size %zu is smaller than nn_reduce (%zu)",
                            r->size, sizeof *r);
        if (r->ranks == 0)
            return nn__fail(tr->msg, NN_EMISUSE, "trainer: set_reduce: ranks is 0");
        if (!r->start || !r->wait)
            return nn__fail(tr->msg, NN_EMISUSE, "trainer: set_reduce: %s is NULL",
                            !r->start ? "start" : "wait");
        tr->red = *r;
    } else {
        memset(&tr->red, 0, sizeof tr->red);
    }
    tr->slot[0].batch = tr->slot[1].batch = 0; /* record again: loss share, hooks */
    return NN_OK;
}

int nn_shard(uint64_t batch, uint32_t ranks, uint32_t rank, uint64_t *begin, uint64_t *end)
{
    if (ranks == 0 || rank >= ranks || !begin || !end)
        return NN_EMISUSE;
    const uint64_t q = batch / ranks, r = batch % ranks;
    *begin = rank * q + (rank < r ? rank : r);
    *end = *begin + q + (rank < r);
    return NN_OK;
}
