/* model.c -- a sequential stack of dense layers over a parameter store.
 *
 * A dense layer is three tape ops, so its gradients come from the sweep:
 *   one sample  x (n):    z = matvec(W, x) + b         W (k x n), b (k), z (k)
 *   a batch     X (B x n): Z = affine(W, X, b)         Z = X W^T + b (B x k), b on every row
 *   then        a = act(z)                             relu / tanh / sigmoid / identity
 */
#include "nn_internal.h"

#include <stdio.h>
#include <string.h>

nn_model *nn_model_new(const nn_model_opts *opts)
{
    nn_model_opts o = {0};
    if (opts)
        o = *opts;
    nn__mem mem;
    nn__mem_init(&mem, o.alloc, o.alloc_ud);
    nn_model *m = nn__alloc(&mem, sizeof *m);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->mem = mem;
    m->params = nn_params_new(mem.fn, mem.ud);
    if (!m->params) {
        nn__free(&mem, m, sizeof *m);
        return NULL;
    }
    nn_rng_seed(&m->rng, o.seed);
    return m;
}

void nn_model_free(nn_model *m)
{
    if (!m)
        return;
    nn__slot_free(&m->mem, &m->predict);
    nn_params_free(m->params);
    nn__free(&m->mem, m->layers, m->cap_layers * sizeof *m->layers);
    nn__mem mem = m->mem;
    nn__free(&mem, m, sizeof *m);
}

const char *nn_act_name(nn_act act)
{
    switch (act) {
    case NN_ACT_IDENTITY: return "identity";
    case NN_ACT_RELU: return "relu";
    case NN_ACT_TANH: return "tanh";
    case NN_ACT_SIGMOID: return "sigmoid";
    default: return "unknown";
    }
}

/* Appends layer kindN with W (n_out x n_in) uniform and b (n_out) zero. */
static int add_layer(nn_model *m, const char *kind, uint32_t n_in, uint32_t n_out, nn_act act)
{
    if (!m)
        return NN_EMISUSE;
    char name[sizeof m->layers->name];
    snprintf(name, sizeof name, "%s%zu", kind, m->nlayers + 1);
    if (n_in == 0 || n_out == 0)
        return nn__fail(m->msg, NN_EMISUSE, "%s: sizes must be positive (%u inputs, %u outputs)",
                        name, (unsigned)n_in, (unsigned)n_out);
    if ((unsigned)act >= NN_ACT_COUNT)
        return nn__fail(m->msg, NN_EMISUSE, "%s: unknown activation %d", name, (int)act);
    if (m->nlayers > 0) {
        const nn__layer *prev = &m->layers[m->nlayers - 1];
        if (prev->n_out != n_in)
            return nn__fail(m->msg, NN_ESHAPE,
                            "%s: input has %u features but the layer expects %u (%s has %u "
                            "outputs)", name, (unsigned)prev->n_out, (unsigned)n_in, prev->name,
                            (unsigned)prev->n_out);
    }
    if (m->nlayers == m->cap_layers) {
        size_t ncap = m->cap_layers ? 2 * m->cap_layers : 4;
        nn__layer *l = nn__realloc(&m->mem, m->layers, m->cap_layers * sizeof *l, ncap * sizeof *l);
        if (!l)
            return nn__fail(m->msg, NN_ENOMEM, "%s: out of memory", name);
        m->layers = l;
        m->cap_layers = ncap;
    }
    nn__layer L;
    memset(&L, 0, sizeof L);
    memcpy(L.name, name, sizeof L.name);
    L.n_in = n_in;
    L.n_out = n_out;
    L.act = act;
    char tname[NN_NAME_MAX];
    snprintf(tname, sizeof tname, "%s.W", name);
    int st = nn_params_add(m->params, tname, ad_shape_mat(n_out, n_in), &L.W);
    if (st != NN_OK)
        return nn__fail(m->msg, st, "%s: %s", name, nn_params_errmsg(m->params));
    snprintf(tname, sizeof tname, "%s.b", name);
    st = nn_params_add(m->params, tname, ad_shape_vec(n_out), &L.b);
    if (st != NN_OK) {
        nn__fail(m->msg, st, "%s: %s", name, nn_params_errmsg(m->params));
        nn__params_pop(m->params); /* W */
        return st;
    }
    nn_params_init(m->params, L.W, NN_INIT_UNIFORM, 0, &m->rng);
    nn_params_init(m->params, L.b, NN_INIT_ZEROS, 0, NULL);
    m->layers[m->nlayers++] = L;
    return NN_OK;
}

int nn_model_add_dense(nn_model *m, uint32_t n_in, uint32_t n_out, nn_act act)
{
    return add_layer(m, "dense", n_in, n_out, act);
}

int nn_model_add_neuron(nn_model *m, uint32_t n_in, nn_act act)
{
    return add_layer(m, "neuron", n_in, 1, act);
}

int nn_model_add_mlp(nn_model *m, const uint32_t *sizes, size_t nsizes, nn_act hidden,
                     nn_act output)
{
    if (!m)
        return NN_EMISUSE;
    if (!sizes || nsizes < 2)
        return nn__fail(m->msg, NN_EMISUSE, "mlp: need at least 2 sizes (inputs and outputs), got %zu",
                        sizes ? nsizes : (size_t)0);
    const size_t before = m->nlayers;
    const nn_rng rng = m->rng;
    for (size_t i = 0; i + 1 < nsizes; i++) {
        int st = add_layer(m, "dense", sizes[i], sizes[i + 1], i + 2 == nsizes ? output : hidden);
        if (st != NN_OK) {
            while (m->nlayers > before) { /* undo this call: b, then W, of each layer */
                m->nlayers--;
                nn__params_pop(m->params);
                nn__params_pop(m->params);
            }
            m->rng = rng;
            return st;
        }
    }
    return NN_OK;
}

size_t nn_model_layers(const nn_model *m) { return m ? m->nlayers : 0; }

const char *nn_model_layer_name(const nn_model *m, size_t i)
{
    return m && i < m->nlayers ? m->layers[i].name : NULL;
}

uint32_t nn_model_input_size(const nn_model *m)
{
    return m && m->nlayers ? m->layers[0].n_in : 0;
}

uint32_t nn_model_output_size(const nn_model *m)
{
    return m && m->nlayers ? m->layers[m->nlayers - 1].n_out : 0;
}

nn_params *nn_model_params(nn_model *m) { return m ? m->params : NULL; }
nn_rng *nn_model_rng(nn_model *m) { return m ? &m->rng : NULL; }

const char *nn_model_errmsg(const nn_model *m) { return m ? m->msg : "no model"; }

static int fail_tape(char *msg, const char *what, const ad_tape *t)
{
    return nn__fail(msg, nn__from_ad(ad_tape_status(t)), "%s: %s", what, ad_tape_errmsg(t));
}

int nn__forward(nn_model *m, ad_tape *t, ad_node x, int grad, ad_node *out)
{
    return nn__forward_params(m, t, x, grad, out, NULL);
}

int nn__forward_params(nn_model *m, ad_tape *t, ad_node x, int grad, ad_node *out,
                       ad_node *params)
{
    *out = ad_nil();
    if (!m)
        return NN_EMISUSE;
    if (!t)
        return nn__fail(m->msg, NN_EMISUSE, "forward: the tape is NULL");
    if (m->nlayers == 0)
        return nn__fail(m->msg, NN_EMISUSE, "forward: the model has no layers");
    if (ad_tape_status(t) != AD_OK)
        return fail_tape(m->msg, "forward: the tape already failed", t);
    const nn__layer *L0 = &m->layers[0];
    const ad_shape xs = ad_node_shape(t, x);
    if (xs.ndim < 0)
        return nn__fail(m->msg, NN_EMISUSE, "%s: the input is not a valid node of this tape",
                        L0->name);
    if (xs.ndim == 0)
        return nn__fail(m->msg, NN_ESHAPE,
                        "%s: input is a scalar; need a vector (one sample) or a matrix (one per row)",
                        L0->name);
    const uint32_t features = xs.ndim == 1 ? xs.rows : xs.cols;
    if (features != L0->n_in)
        return nn__fail(m->msg, NN_ESHAPE, "%s: input has %u features but the layer expects %u",
                        L0->name, (unsigned)features, (unsigned)L0->n_in);
    ad_node h = x;
    for (size_t i = 0; i < m->nlayers; i++) {
        const nn__layer *L = &m->layers[i];
        ad_node W = nn_params_node(m->params, t, L->W, grad);
        ad_node b = nn_params_node(m->params, t, L->b, grad);
        if (params)
            params[L->W] = W, params[L->b] = b;
        /* z = W h + b (k), or Z = H W^T + b (B, k): one node */
        ad_node z = ad_affine(t, W, h, b);
        switch (L->act) {
        case NN_ACT_RELU: h = ad_relu(t, z); break;
        case NN_ACT_TANH: h = ad_tanh(t, z); break;
        case NN_ACT_SIGMOID: h = ad_sigmoid(t, z); break;
        default: h = z; break;
        }
        if (ad_node_is_nil(h))
            return fail_tape(m->msg, L->name, t);
    }
    *out = h;
    return NN_OK;
}

ad_node nn_model_forward(nn_model *m, ad_tape *t, ad_node x, int grad)
{
    ad_node out;
    nn__forward(m, t, x, grad, &out);
    return out;
}

/* ---- slots: a tape recorded for one batch size, with owned inputs ---- */

static int grow(nn__mem *mem, double **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return NN_OK;
    double *q = nn__realloc(mem, *buf, *cap * sizeof *q, need * sizeof *q);
    if (!q)
        return NN_ENOMEM;
    *buf = q;
    *cap = need;
    return NN_OK;
}

int nn__slot_reserve(nn__mem *mem, nn__slot *s, uint32_t batch, uint32_t n_in, uint32_t n_out,
                     char *msg)
{
    s->batch = 0; /* nothing valid recorded until the caller says so */
    const size_t limit = ((size_t)-1) / sizeof(double) / 4;
    if ((size_t)batch > limit / n_in || (n_out && (size_t)batch > limit / n_out))
        return nn__fail(msg, NN_ELIMIT, "a batch of %u rows is too large", (unsigned)batch);
    if (grow(mem, &s->X, &s->capX, (size_t)batch * n_in) != NN_OK ||
        grow(mem, &s->Y, &s->capY, (size_t)batch * n_out) != NN_OK)
        return nn__fail(msg, NN_ENOMEM, "out of memory for a batch of %u rows", (unsigned)batch);
    if (s->tape) {
        ad_tape_reset(s->tape);
    } else {
        ad_tape_opts o = {mem->fn, mem->ud, NULL};
        s->tape = ad_tape_new(&o);
        if (!s->tape)
            return nn__fail(msg, NN_ENOMEM, "out of memory creating a tape");
    }
    return NN_OK;
}

void nn__slot_free(nn__mem *mem, nn__slot *s)
{
    ad_tape_free(s->tape);
    nn__free(mem, s->X, s->capX * sizeof *s->X);
    nn__free(mem, s->Y, s->capY * sizeof *s->Y);
    memset(s, 0, sizeof *s);
}

int nn_model_predict(nn_model *m, const double *X, uint32_t batch, double *out)
{
    if (!m)
        return NN_EMISUSE;
    if (!X || !out)
        return nn__fail(m->msg, NN_EMISUSE, "predict: X or out is NULL");
    if (batch == 0)
        return nn__fail(m->msg, NN_EMISUSE, "predict: the batch is empty");
    if (m->nlayers == 0)
        return nn__fail(m->msg, NN_EMISUSE, "predict: the model has no layers");
    nn__slot *s = &m->predict;
    const uint32_t n_in = nn_model_input_size(m), n_out = nn_model_output_size(m);
    const uint64_t version = nn_params_version(m->params);
    if (s->batch == batch && s->version == version) {
        memcpy(s->X, X, (size_t)batch * n_in * sizeof *X);
        int st = ad_replay(s->tape);
        if (st != AD_OK)
            return nn__fail(m->msg, nn__from_ad(st), "predict: %s", ad_tape_errmsg(s->tape));
    } else {
        char why[NN__MSG_CAP];
        int st = nn__slot_reserve(&m->mem, s, batch, n_in, 0, why);
        if (st != NN_OK)
            return nn__fail(m->msg, st, "predict: %s", why);
        memcpy(s->X, X, (size_t)batch * n_in * sizeof *X);
        ad_shape xs = batch == 1 ? ad_shape_vec(n_in) : ad_shape_mat(batch, n_in);
        ad_node x = ad_param(s->tape, xs, s->X, NULL);
        if (ad_node_is_nil(x))
            return fail_tape(m->msg, "predict", s->tape);
        st = nn__forward(m, s->tape, x, 0, &s->out); /* records and evaluates */
        if (st != NN_OK)
            return st;
        s->batch = batch;
        s->version = version;
    }
    memcpy(out, ad_value(s->tape, s->out), (size_t)batch * n_out * sizeof *out);
    return NN_OK;
}

int nn_model_save(nn_model *m, const char *path)
{
    if (!m)
        return NN_EMISUSE;
    int st = nn_params_save(m->params, path);
    if (st != NN_OK)
        nn__copy_msg(m->msg, st, nn_params_errmsg(m->params));
    return st;
}

int nn_model_load(nn_model *m, const char *path)
{
    if (!m)
        return NN_EMISUSE;
    int st = nn_params_load(m->params, path);
    if (st != NN_OK)
        nn__copy_msg(m->msg, st, nn_params_errmsg(m->params));
    return st;
}
