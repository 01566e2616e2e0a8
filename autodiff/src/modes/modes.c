/* modes.c -- forward (tangent) mode and forward-over-reverse second
 * order on a recorded tape, and the drivers built on them (J v, H v,
 * dense Jacobians and Hessians).
 *
 * Storage (ad__modes, one per tape, made on first use and kept across
 * resets): for K directions, every node has K tangents -- an inline scalar
 * node's in T[id K .. id K + K), an EXT node's in a buffer of K times its
 * size, direction-major -- and, for the second-order sweep, an adjoint and
 * K adjoint tangents (inline: the node's own g and GT[id K ..]; EXT: the
 * buffers here, never the tape's or the caller's gradient buffers). The
 * layout is for one recording; it is redone when the recording or K
 * changes, and allocates only when it needs more room than it had.
 *
 * The rules come from the op table: an elementwise op's tangent and
 * second-order term from its formula line (scalar_ops.h), a linear op's
 * tangent is its forward applied to the tangents, a bilinear op's
 * second-order term is its own vjp run at the tangents, and the rest carry
 * jvp and so functions (affine, softmax_xent). */
#include "internal.h"
#include "scalar_ops.h"

#include <math.h>
#include <string.h>

#define MAX_DIRS 4096 /* directions one layout may hold */

typedef struct mx {
    double *t;  /* tangents, K x size         */
    double *g;  /* adjoint, size              */
    double *gt; /* adjoint tangents, K x size */
} mx;

struct ad__modes {
    bool valid;             /* the layout below is for this recording */
    uint32_t generation;
    size_t len, next_ext, K;
    double *T, *GT;         /* inline nodes: K each               */
    size_t capT, capGT;
    unsigned char *nz;      /* per node: NZ_NOW | NZ_DIRTY        */
    size_t capnz;
    mx *x;                  /* per EXT record                     */
    size_t capx;
    double *data;           /* every EXT tangent and adjoint      */
    size_t capdata;
    double *scratch;        /* a jvp's scratch                    */
    size_t capscratch;
    double *zeros;          /* stands in for a zero tangent       */
    size_t capzeros;
    bool fwd;               /* tangents are a forward sweep's     */
    bool rev;               /* adjoint tangents are a reverse sweep's */
    bool rev_clean;         /* inline adjoints and adjoint tangents are 0 */
    bool ext_rev_clean;     /* so are the EXT nodes' (forward mode never
                               reads them: cleared by the reverse sweep) */
    const void *owner;      /* the sparse object that seeded the leaves
                               last (sparse.c), or NULL: anyone else   */
    size_t stamp;           /* counts layouts: pointers into the storage
                               stay valid while it is unchanged       */
};

#define NZ_NOW 1u   /* the tangent may be nonzero                    */
#define NZ_DIRTY 2u /* the EXT tangent buffer holds nonzero numbers  */
#define NZ_ADJ 4u   /* reverse sweep: an adjoint reached this EXT node */
#define NZ_SEEN 8u  /* seeding: this leaf was named earlier in in[]  */

/* ---- storage ---- */

static int grow(ad_tape *t, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap && *p)
        return AD_OK;
    if (need == 0)
        need = 1;
    size_t ncap = need + need / 4 + 16;
    void *q = ad__realloc(&t->mem, *p, *p ? *cap * elem : 0, ncap * elem);
    if (!q)
        return AD_ENOMEM;
    *p = q;
    *cap = ncap;
    return AD_OK;
}

void ad__modes_free(ad_tape *t)
{
    ad__modes *m = t->modes;
    if (!m)
        return;
    if (m->T)
        ad__free(&t->mem, m->T, m->capT * sizeof(double));
    if (m->GT)
        ad__free(&t->mem, m->GT, m->capGT * sizeof(double));
    if (m->nz)
        ad__free(&t->mem, m->nz, m->capnz);
    if (m->x)
        ad__free(&t->mem, m->x, m->capx * sizeof(mx));
    if (m->data)
        ad__free(&t->mem, m->data, m->capdata * sizeof(double));
    if (m->scratch)
        ad__free(&t->mem, m->scratch, m->capscratch * sizeof(double));
    if (m->zeros)
        ad__free(&t->mem, m->zeros, m->capzeros * sizeof(double));
    ad__free(&t->mem, m, sizeof *m);
    t->modes = NULL;
}

static size_t ext_size(const ad_tape *t, size_t i)
{
    return ad_shape_size(ad__X(t, (uint32_t)i)->call.out.shape);
}

/* Lays out storage for K directions on the current recording and zeroes
 * every tangent, adjoint and adjoint tangent. AD_OK or AD_ENOMEM. */
static int layout(ad_tape *t, size_t K)
{
    ad__modes *m = t->modes;
    if (!m) {
        m = ad__alloc(&t->mem, sizeof *m);
        if (!m)
            return AD_ENOMEM;
        memset(m, 0, sizeof *m);
        t->modes = m;
    }
    m->valid = false;
    size_t ndata = 0, maxsize = 1, maxin = 1;
    for (size_t i = 0; i < t->next_ext; i++) {
        const size_t s = ext_size(t, i);
        ndata += s * (2 * K + 1);
        maxsize = s > maxsize ? s : maxsize;
        const ad__ext *x = ad__X(t, (uint32_t)i);
        for (int k = 0; k < x->call.nin; k++) {
            const size_t si = ad_shape_size(x->args[k].shape);
            maxin = si > maxin ? si : maxin;
        }
    }
    const size_t nscratch = AD__JVP_SCRATCH_MAX(maxsize, maxin);
    const size_t nzeros = maxsize > maxin ? maxsize : maxin;
    if (grow(t, (void **)&m->T, &m->capT, t->len * K, sizeof(double)) != AD_OK
        || grow(t, (void **)&m->GT, &m->capGT, t->len * K, sizeof(double)) != AD_OK
        || grow(t, (void **)&m->nz, &m->capnz, t->len, 1) != AD_OK
        || grow(t, (void **)&m->x, &m->capx, t->next_ext, sizeof(mx)) != AD_OK
        || grow(t, (void **)&m->data, &m->capdata, ndata, sizeof(double)) != AD_OK
        || grow(t, (void **)&m->scratch, &m->capscratch, nscratch, sizeof(double)) != AD_OK
        || grow(t, (void **)&m->zeros, &m->capzeros, nzeros, sizeof(double)) != AD_OK)
        return AD_ENOMEM;
    memset(m->T, 0, t->len * K * sizeof(double));
    memset(m->GT, 0, t->len * K * sizeof(double));
    memset(m->nz, 0, t->len);
    memset(m->data, 0, ndata * sizeof(double));
    memset(m->zeros, 0, nzeros * sizeof(double));
    double *p = m->data;
    for (size_t i = 0; i < t->next_ext; i++) {
        const size_t s = ext_size(t, i);
        m->x[i].t = p, p += s * K;
        m->x[i].g = p, p += s;
        m->x[i].gt = p, p += s * K;
    }
    m->generation = t->generation;
    m->len = t->len;
    m->next_ext = t->next_ext;
    m->K = K;
    m->fwd = m->rev = false;
    m->rev_clean = m->ext_rev_clean = true;
    m->valid = true;
    m->owner = NULL;
    m->stamp++;
    return AD_OK;
}

/* Whether the layout is for the tape's current recording. */
static bool current(const ad_tape *t)
{
    const ad__modes *m = t->modes;
    return m && m->valid && m->generation == t->generation && m->len == t->len
           && m->next_ext == t->next_ext;
}

/* ---- per-node views ---- */

static double *tan_of(const ad_tape *t, uint32_t id, size_t d)
{
    const ad__modes *m = t->modes;
    const ad__node *n = ad__N(t, id);
    if (n->h & AD__EXT)
        return m->x[ad__a(n->h)].t + d * ext_size(t, ad__a(n->h));
    return m->T + (size_t)id * m->K + d;
}
static double *adj_of(const ad_tape *t, uint32_t id)
{
    ad__node *n = ad__N(t, id);
    if (n->h & AD__EXT)
        return t->modes->x[ad__a(n->h)].g;
    return &n->g;
}
static double *gtan_of(const ad_tape *t, uint32_t id, size_t d)
{
    const ad__modes *m = t->modes;
    const ad__node *n = ad__N(t, id);
    if (n->h & AD__EXT)
        return m->x[ad__a(n->h)].gt + d * ext_size(t, ad__a(n->h));
    return m->GT + (size_t)id * m->K + d;
}

/* ---- the rules a mode needs, per op ---- */

/* The descriptor's jvp, for a custom op: NULL when it has none. */
static void (*custom_jvp(const ad_opdef *def))(const ad_call *, const double *const *, double *)
{
    return def->size >= offsetof(ad_opdef, jvp) + sizeof def->jvp ? def->jvp : NULL;
}
static unsigned custom_flags(const ad_opdef *def)
{
    return def->size >= offsetof(ad_opdef, flags) + sizeof def->flags ? def->flags : 0;
}
static void (*custom_hvp(const ad_opdef *def))(const ad_call *, const double *const *,
                                               double *const *)
{
    return def->size >= offsetof(ad_opdef, hvp) + sizeof def->hvp ? def->hvp : NULL;
}

/* The first custom op among the nodes 1..last lacking the rule a mode
 * needs (second: also a second-order rule), or NULL. */
static const ad_opdef *missing_rule(const ad_tape *t, size_t last, bool second)
{
    for (size_t i = 0; i < t->next_ext; i++) {
        const ad__ext *x = ad__X(t, (uint32_t)i);
        if (x->node > last || ad__opcode_of(x->def) != AD_OP_CUSTOM)
            continue;
        if (!custom_jvp(x->def))
            return x->def;
        if (second && !custom_hvp(x->def)
            && !(custom_flags(x->def) & (AD_OPDEF_LINEAR | AD_OPDEF_BILINEAR)))
            return x->def;
    }
    return NULL;
}

static int missing_fail(ad_tape *t, const char *who, const ad_opdef *def, bool second)
{
    if (!custom_jvp(def))
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: custom op '%s' has no jvp rule (set its descriptor's jvp "
                             "and size = sizeof(ad_opdef))",
                             who, def->name);
    (void)second;
    return ad__fail_call(t, AD_EMISUSE,
                         "%s: custom op '%s' has no second-order rule (set its descriptor's "
                         "hvp, or flags AD_OPDEF_LINEAR or AD_OPDEF_BILINEAR)",
                         who, def->name);
}

/* ---- the forward (tangent) sweep ---- */

/* An inline node that no tangent reached gets zero tangents without its
 * rule, as an EXT node does (ext_jvp): the rule would multiply the zero
 * tangents by the local derivative, and an infinite one (sqrt or log at 0
 * of a constant) gives 0 * inf = NaN. */
#define JVP_U(NAME, CODE, ...)                                                                \
    case CODE:                                                                                \
        ad__s_##NAME##_fwd(ch, kc, n);                                                        \
        if (nz[a] & NZ_NOW)                                                                   \
            ad__s_##NAME##_jvp(ch, kc, n, T + (size_t)id * K, T + (size_t)a * K, K);         \
        else                                                                                  \
            memset(T + (size_t)id * K, 0, K * sizeof *T);                                     \
        nz[id] = nz[a] & NZ_NOW;                                                              \
        break;
#define JVP_B(NAME, CODE, ...)                                                                \
    case CODE:                                                                                \
        ad__s_##NAME##_fwd(ch, kc, n);                                                        \
        if ((nz[a] | nz[b]) & NZ_NOW)                                                         \
            ad__s_##NAME##_jvp(ch, n, T + (size_t)id * K, T + (size_t)a * K,                 \
                               T + (size_t)b * K, K);                                         \
        else                                                                                  \
            memset(T + (size_t)id * K, 0, K * sizeof *T);                                     \
        nz[id] = (nz[a] | nz[b]) & NZ_NOW;                                                    \
        break;

/* A comparison: its value, and tangents exactly 0 (never 0 * an
 * infinite tangent). */
#define JVP_C(NAME, CODE, ...)                                                                \
    case CODE:                                                                                \
        ad__s_##NAME##_fwd(ch, kc, n);                                                        \
        memset(T + (size_t)id * K, 0, K * sizeof *T);                                         \
        nz[id] = 0;                                                                           \
        break;

/* One EXT node's tangents, every direction. */
static void ext_jvp(ad_tape *t, uint32_t id, ad__ext *x, unsigned op)
{
    ad__modes *m = t->modes;
    const size_t K = m->K, size = ad_shape_size(x->call.out.shape);
    const int nin = x->call.nin;
    unsigned char any = 0;
    for (int k = 0; k < nin; k++)
        any |= m->nz[x->in[k]] & NZ_NOW;
    double *tout0 = m->x[ad__a(ad__N(t, id)->h)].t;
    if (!any || ad__is_compare(op)) { /* a comparison's tangent is exactly 0 */
        if (m->nz[id] & NZ_DIRTY)
            memset(tout0, 0, K * size * sizeof *tout0);
        m->nz[id] = 0;
        return;
    }
    m->nz[id] = NZ_NOW | NZ_DIRTY;
    const ad__op *bi = op < AD_OP_CUSTOM ? ad__ops[op] : NULL;
    for (size_t d = 0; d < K; d++) {
        const double *tin[AD_MAX_ARITY];
        for (int k = 0; k < nin; k++)
            tin[k] = (m->nz[x->in[k]] & NZ_NOW) ? tan_of(t, x->in[k], d) : NULL;
        double *tout = tout0 + d * size;
        if (!bi) { /* a custom op's rule sees zeros, never NULL */
            for (int k = 0; k < nin; k++)
                if (!tin[k])
                    tin[k] = m->zeros;
            custom_jvp(x->def)(&x->call, tin, tout);
        } else if (bi->jvp) {
            bi->jvp(&x->call, tin, tout, m->scratch);
        } else {
            /* linear: the forward at the tangents; bilinear: the forward
             * at (ta, b) plus at (a, tb) */
            ad_tensor args[AD_MAX_ARITY];
            ad_call c = x->call;
            c.in = args;
            memset(tout, 0, size * sizeof *tout);
            for (int k = 0; k < nin; k++) {
                if (!tin[k])
                    continue;
                memcpy(args, x->args, (size_t)nin * sizeof *args);
                if (bi->order2 == AD__LINEAR)
                    for (int j = 0; j < nin; j++)
                        args[j].val = (double *)(tin[j] ? tin[j] : m->zeros);
                else
                    args[k].val = (double *)tin[k];
                c.out.val = m->scratch;
                bi->def.forward(&c);
                for (size_t i = 0; i < size; i++)
                    tout[i] += m->scratch[i];
                if (bi->order2 == AD__LINEAR)
                    break;
            }
        }
    }
}

/* Values and tangents of every node, in recording order; clears the
 * inline nodes' adjoints and adjoint tangents on the way, so the reverse
 * sweep needs no pass over the nodes (it clears the EXT nodes' buffers
 * itself: forward mode alone never reads them). K is a constant in the instance for one
 * direction, so its loops over directions vanish. */
AD__INLINE const ad__ext *forward_sweep_k(ad_tape *t, const size_t K)
{
    const ad__ext *failed = NULL; /* the first node whose op's check failed */
    ad__modes *m = t->modes;
    void *const *ch = t->nodes.chunk;
    const double *kc = t->consts;
    double *T = m->T, *GT = m->GT;
    unsigned char *nz = m->nz;
    const size_t len = t->len;
    for (uint32_t id = 1; id < len; id++) {
        ad__node *n = ad__Nc(ch, id);
        const uint64_t h = n->h;
        const unsigned op = ad__opc(h);
        if (h & AD__EXT) {
            ad__ext *x = ad__X(t, ad__a(h));
            x->reached = 0;
            if (op != AD_OP_LEAF) {
                x->def->forward(&x->call);
                if (x->checks && !failed && ad__opstates[x->op]->check(&x->call, NULL, 0) != AD_OK)
                    failed = x;
                ext_jvp(t, id, x, x->op);
            }
            continue;
        }
        n->g = 0;
        for (size_t j = 0; j < K; j++)
            GT[(size_t)id * K + j] = 0.0;
        if (op == AD_OP_LEAF)
            continue;
        const uint32_t a = ad__a(h), b = ad__b(h);
        (void)b;
        switch (op) {
            AD__UNARY_OPS(JVP_U)
            AD__BINARY_OPS(JVP_B)
            AD__COMPARE_OPS(JVP_C)
        default: /* an inline node only ever holds a leaf or one of these */
            AD__UNREACHABLE();
        }
    }
    t->ss.adj_dirty = false;
    m->fwd = true;
    m->rev = false;
    m->rev_clean = true;
    return failed;
}

/* AD_OK, or the status of the first node whose op's check failed (a
 * singular matrix), reported as ad_replay does: the sweep ran to the end,
 * with NaN from that node on. Before that, the replay guards: a
 * recorded comparison that changed gives AD_EBRANCH (everything computed)
 * naming who and the comparison, as ad_replay. */
static int forward_sweep(ad_tape *t, const char *who)
{
    const ad__ext *failed =
        t->modes->K == 1 ? forward_sweep_k(t, 1) : forward_sweep_k(t, t->modes->K);
    const int guards = ad__guards_check(t, who);
    if (guards != AD_OK)
        return guards;
    if (!failed)
        return AD_OK;
    char msg[AD__MSG_CAP];
    const int st = ad__eval_failure(failed, msg, sizeof msg);
    return ad__fail_call(t, st, "%s", msg);
}

/* ---- the reverse sweep of forward over reverse ---- */

#define HVP_U(NAME, CODE, ...)                                                                \
    case CODE:                                                                                \
        ad__s_##NAME##_hvp(ch, kc, n, GT + (size_t)id * K, GT + (size_t)a * K,               \
                           T + (size_t)a * K, K);                                             \
        break;
#define HVP_B(NAME, CODE, ...)                                                                \
    case CODE:                                                                                \
        ad__s_##NAME##_hvp(ch, n, GT + (size_t)id * K, GT + (size_t)a * K,                   \
                           GT + (size_t)b * K, T + (size_t)a * K, T + (size_t)b * K, K);     \
        break;

/* The EXT nodes' adjoints and adjoint tangents: a reverse sweep's own
 * clearing, so that forward mode (Jacobians) never pays for buffers it
 * does not read. */
static void clear_ext_reverse(ad_tape *t)
{
    ad__modes *m = t->modes;
    for (size_t i = 0; i < t->next_ext; i++) {
        const size_t s = ext_size(t, i);
        memset(m->x[i].g, 0, s * sizeof(double));
        memset(m->x[i].gt, 0, s * m->K * sizeof(double));
    }
    m->ext_rev_clean = true;
}

static void clear_reverse(ad_tape *t)
{
    ad__modes *m = t->modes;
    for (uint32_t id = 1; id < t->len; id++) {
        ad__node *n = ad__N(t, id);
        if (!(n->h & AD__EXT))
            n->g = 0;
        m->nz[id] &= (unsigned char)~NZ_ADJ;
    }
    memset(m->GT, 0, t->len * m->K * sizeof(double));
    clear_ext_reverse(t);
    m->rev_clean = true;
}

/* One EXT node: the adjoint (vjp at the values), then per direction the
 * adjoint tangent: the vjp of the adjoint tangent plus the second-order
 * term along the tangents. */
static void ext_hvp(ad_tape *t, uint32_t id, ad__ext *x, unsigned op)
{
    ad__modes *m = t->modes;
    const mx *me = &m->x[ad__a(ad__N(t, id)->h)];
    const size_t K = m->K, size = ad_shape_size(x->call.out.shape);
    const int nin = x->call.nin;
    const ad__op *bi = op < AD_OP_CUSTOM ? ad__ops[op] : NULL;
    void (*vjp)(const ad_call *) = x->def->vjp;
    unsigned order2 = bi ? bi->order2 : AD__SO_FN;
    if (!bi) {
        const unsigned f = custom_flags(x->def);
        order2 = (f & AD_OPDEF_LINEAR) ? AD__LINEAR : (f & AD_OPDEF_BILINEAR) ? AD__BILINEAR : AD__SO_FN;
    }
    bool wants[AD_MAX_ARITY];
    unsigned char any_nz = 0;
    for (int k = 0; k < nin; k++) {
        wants[k] = (ad__N(t, x->in[k])->h & AD__GRAD) != 0;
        any_nz |= m->nz[x->in[k]] & NZ_NOW;
    }
    ad_tensor args[AD_MAX_ARITY];
    ad_call c = x->call;
    c.in = args;
    /* the adjoint */
    memcpy(args, x->args, (size_t)nin * sizeof *args);
    for (int k = 0; k < nin; k++)
        args[k].grad = wants[k] ? adj_of(t, x->in[k]) : NULL;
    c.out.grad = me->g;
    vjp(&c);
    for (int k = 0; k < nin; k++)
        if (wants[k])
            m->nz[x->in[k]] |= NZ_ADJ;
    for (size_t d = 0; d < K; d++) {
        /* the vjp of the adjoint tangent */
        for (int k = 0; k < nin; k++)
            args[k].grad = wants[k] ? gtan_of(t, x->in[k], d) : NULL;
        c.out.grad = me->gt + d * size;
        vjp(&c);
        if (order2 == AD__LINEAR || !any_nz)
            continue;
        /* the second-order term, with the adjoint as the seed */
        const double *tin[AD_MAX_ARITY];
        double *tg[AD_MAX_ARITY];
        for (int k = 0; k < nin; k++) {
            tin[k] = (m->nz[x->in[k]] & NZ_NOW) ? tan_of(t, x->in[k], d) : m->zeros;
            tg[k] = wants[k] ? gtan_of(t, x->in[k], d) : NULL;
        }
        c.out.grad = me->g;
        if (order2 == AD__BILINEAR) {
            for (int k = 0; k < nin; k++) {
                args[k].val = (double *)tin[k];
                args[k].grad = tg[k];
            }
            vjp(&c);
            memcpy(args, x->args, (size_t)nin * sizeof *args);
        } else if (bi) {
            for (int k = 0; k < nin; k++)
                args[k].grad = NULL;
            bi->so(&c, tin, tg);
        } else {
            for (int k = 0; k < nin; k++)
                args[k].grad = NULL;
            custom_hvp(x->def)(&c, tin, tg);
        }
    }
}

AD__INLINE void reverse_sweep_k(ad_tape *t, size_t nout, const uint32_t *outs,
                                 const double *const *seeds, const size_t K)
{
    ad__modes *m = t->modes;
    if (!m->rev_clean)
        clear_reverse(t);
    else if (!m->ext_rev_clean)
        clear_ext_reverse(t);
    m->rev_clean = m->ext_rev_clean = false;
    void *const *ch = t->nodes.chunk;
    const double *kc = t->consts;
    double *T = m->T, *GT = m->GT;
    /* An EXT node runs its vjp only once an adjoint reached it, as in the
     * tape's sweep: a node the output does not depend on has adjoint 0,
     * and its vjp would turn an infinite local derivative into 0 * inf =
     * NaN in the inputs' adjoints. (Inline nodes skip a zero adjoint.)
     * The forward sweep and clear_reverse leave NZ_ADJ clear on every
     * node that is not a leaf. */
    /* Several outputs (a weighted sum, sparse.c): each seed adds, so an
     * output named twice, or one that is an operand of another, sums. */
    uint32_t out = 0;
    for (size_t k = 0; k < nout; k++) { /* as the one-output form: = seed */
        ad__node *o = ad__Nc(ch, outs[k]);
        if (o->h & AD__EXT)
            memset(m->x[ad__a(o->h)].g, 0,
                   ad_shape_size(ad__X(t, ad__a(o->h))->call.out.shape) * sizeof(double));
        else
            o->g = 0.0;
    }
    for (size_t k = 0; k < nout; k++) {
        const double *seed = seeds ? seeds[k] : NULL;
        out = outs[k] > out ? outs[k] : out;
        m->nz[outs[k]] |= NZ_ADJ;
        ad__node *o = ad__Nc(ch, outs[k]);
        if (o->h & AD__EXT) {
            const size_t s = ad_shape_size(ad__X(t, ad__a(o->h))->call.out.shape);
            double *g = m->x[ad__a(o->h)].g;
            for (size_t i = 0; i < s; i++)
                g[i] += seed ? seed[i] : 1.0;
        } else {
            o->g += seed ? seed[0] : 1.0;
        }
    }
    for (uint32_t id = out; id >= 1; id--) {
        ad__node *n = ad__Nc(ch, id);
        const uint64_t h = n->h;
        const unsigned op = ad__opc(h);
        if (!(h & AD__GRAD) || op == AD_OP_LEAF)
            continue;
        if (h & AD__EXT) {
            if (m->nz[id] & NZ_ADJ)
                {
                ad__ext *x = ad__X(t, ad__a(h));
                ext_hvp(t, id, x, x->op);
            }
            continue;
        }
        if (n->g == 0.0) { /* nothing reached it unless an adjoint tangent did */
            bool zero = true;
            for (size_t j = 0; j < K && zero; j++)
                zero = GT[(size_t)id * K + j] == 0.0;
            if (zero)
                continue;
        }
        const uint32_t a = ad__a(h), b = ad__b(h);
        switch (op) {
            AD__UNARY_OPS(HVP_U)
            AD__BINARY_OPS(HVP_B)
        default:
            break;
        }
    }
    t->ss.adj_dirty = true; /* the inline adjoints are this sweep's */
    m->rev = true;
}

static void reverse_sweep(ad_tape *t, uint32_t out, const double *seed)
{
    if (t->modes->K == 1)
        reverse_sweep_k(t, 1, &out, &seed, 1);
    else
        reverse_sweep_k(t, 1, &out, &seed, t->modes->K);
}

/* ---- the public calls ---- */

int ad_tangents(ad_tape *t, int k)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (k < 1 || k > MAX_DIRS)
        return ad__fail_call(t, AD_EMISUSE, "tangents: %d directions; 1 to %d are allowed", k,
                             MAX_DIRS);
    if (layout(t, (size_t)k) != AD_OK)
        return ad__fail_call(t, AD_ENOMEM,
                             "tangents: out of memory for %d directions of %zu nodes", k,
                             t->len - 1);
    return AD_OK;
}

int ad_set_tangent(ad_tape *t, ad_node leafn, const double *tangent)
{
    /* The common case first, in a few instructions: a live scalar variable
     * of the current recording, one direction (W1-modes seeds 100 000 of
     * them per evaluation). Anything else takes the checked path below. */
    if (t && tangent && t->status == AD_OK && ad__hbits(leafn) - t->hbase < t->len - 1) {
        ad__modes *m = t->modes;
        const ad__node *n = ad__N(t, leafn.id_);
        if (m && m->K == 1 && ad__opc(n->h) == AD_OP_LEAF && !(n->h & AD__EXT) && current(t)) {
            t->call_status = AD_OK;
            m->T[leafn.id_] = tangent[0];
            m->nz[leafn.id_] = NZ_NOW | NZ_DIRTY;
            m->fwd = false;
            m->owner = NULL;
            return AD_OK;
        }
    }
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    ad__node *n = ad__check_call(t, leafn, "set_tangent", 1);
    if (!n)
        return AD_EMISUSE;
    if (!current(t))
        return ad__fail_call(t, AD_EMISUSE,
                             "set_tangent: no tangent storage for this recording; call "
                             "ad_tangents(t, k) after recording");
    if (!tangent)
        return ad__fail_call(t, AD_EMISUSE, "set_tangent: tangent is NULL");
    if (ad__opc(n->h) != AD_OP_LEAF) {
        const char *name = (n->h & AD__EXT) ? ad__X(t, ad__a(n->h))->def->name
                                            : ad__ops[ad__opc(n->h)]->def.name;
        return ad__fail_call(t, AD_EMISUSE,
                             "set_tangent: node %u is the result of %s, not a leaf; tangents "
                             "are seeded on leaves",
                             (unsigned)leafn.id_, name);
    }
    ad__modes *m = t->modes;
    const size_t size = (n->h & AD__EXT) ? ext_size(t, ad__a(n->h)) : 1;
    memcpy(tan_of(t, leafn.id_, 0), tangent, m->K * size * sizeof *tangent);
    m->nz[leafn.id_] = NZ_NOW | NZ_DIRTY;
    m->fwd = false;
    m->owner = NULL;
    return AD_OK;
}

int ad_forward(ad_tape *t)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    if (!current(t))
        return ad__fail_call(t, AD_EMISUSE,
                             "forward: no tangent storage for this recording; call "
                             "ad_tangents(t, k) after recording");
    const ad_opdef *bad = missing_rule(t, t->len, false);
    if (bad)
        return missing_fail(t, "forward", bad, false);
    return forward_sweep(t, "forward");
}

const double *ad_tangent(const ad_tape *t, ad_node n)
{
    if (!ad__peek(t, n) || !current(t) || !t->modes->fwd)
        return NULL;
    return tan_of(t, n.id_, 0);
}

/* The reverse sweep's checks, shared with the drivers. */
static int check_reverse(ad_tape *t, ad_node out, const double *seed, const char *who)
{
    ad__node *o = ad__check_call(t, out, who, 1);
    if (!o)
        return AD_EMISUSE;
    if (!current(t) || !t->modes->fwd)
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: no forward sweep of this recording to go back over; call "
                             "ad_forward first",
                             who);
    if (!seed && (o->h & AD__EXT) && ad__X(t, ad__a(o->h))->call.out.shape.ndim != 0) {
        char buf[48];
        return ad__fail_call(t, AD_EMISUSE,
                             "%s: the output is %s, not a scalar; pass a seed of its size", who,
                             ad__shape_str(ad__X(t, ad__a(o->h))->call.out.shape, buf,
                                           sizeof buf));
    }
    const ad_opdef *bad = missing_rule(t, out.id_, true);
    if (bad)
        return missing_fail(t, who, bad, true);
    return AD_OK;
}

int ad_backward_tangent(ad_tape *t, ad_node output, const double *seed)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    int st = check_reverse(t, output, seed, "backward_tangent");
    if (st != AD_OK)
        return st;
    reverse_sweep(t, output.id_, seed);
    return AD_OK;
}

const double *ad_grad_tangent(const ad_tape *t, ad_node n)
{
    const ad__node *p = ad__peek(t, n);
    if (!p || !(p->h & AD__GRAD) || !current(t) || !t->modes->rev)
        return NULL;
    return gtan_of(t, n.id_, 0);
}

/* ---- drivers ---- */

/* Checks the inputs of a driver: n leaves of this tape; *N receives the
 * total of their sizes. */
static int check_inputs(ad_tape *t, int n, const ad_node *in, size_t *N, const char *who,
                        bool need_grad)
{
    if (n < 1 || !in)
        return ad__fail_call(t, AD_EMISUSE, "%s: %s", who,
                             !in ? "the input array is NULL" : "no inputs (n < 1)");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        ad__node *p = ad__check_call(t, in[i], who, i + 1);
        if (!p)
            return AD_EMISUSE;
        if (ad__opc(p->h) != AD_OP_LEAF)
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: input %d (node %u) is the result of %s, not a leaf", who,
                                 i + 1, (unsigned)in[i].id_,
                                 (p->h & AD__EXT) ? ad__X(t, ad__a(p->h))->def->name
                                                  : ad__ops[ad__opc(p->h)]->def.name);
        if (need_grad && !(p->h & AD__GRAD))
            return ad__fail_call(t, AD_EMISUSE,
                                 "%s: input %d (node %u) needs no gradient (a constant, or an "
                                 "ad_param without a gradient buffer); derivatives are taken "
                                 "with respect to variables",
                                 who, i + 1, (unsigned)in[i].id_);
        total += (p->h & AD__EXT) ? ext_size(t, ad__a(p->h)) : 1;
    }
    *N = total;
    return AD_OK;
}

static size_t size_of(const ad_tape *t, ad_node n)
{
    const ad__node *p = ad__N(t, n.id_);
    return (p->h & AD__EXT) ? ext_size(t, ad__a(p->h)) : 1;
}

/* Seeds directions d = 0..K-1 as the unit vectors of the flat input
 * columns c0 .. c0+K-1 (columns past N get none). A leaf named twice in
 * in[] is one variable with two column ranges: every tangent is cleared
 * first, so no occurrence erases the units of another (its Jacobian
 * column then repeats, as reverse mode gives it). */
static void seed_units(ad_tape *t, int n, const ad_node *in, size_t c0, size_t K)
{
    ad__modes *m = t->modes;
    for (int i = 0; i < n; i++) {
        memset(tan_of(t, in[i].id_, 0), 0, K * size_of(t, in[i]) * sizeof(double));
        m->nz[in[i].id_] = NZ_DIRTY;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const size_t s = size_of(t, in[i]);
        double *tv = tan_of(t, in[i].id_, 0);
        for (size_t d = 0; d < K; d++) {
            const size_t c = c0 + d;
            if (c >= off && c < off + s) {
                tv[d * s + (c - off)] = 1.0;
                m->nz[in[i].id_] = NZ_NOW | NZ_DIRTY;
            }
        }
        off += s;
    }
}

/* Seeds direction 0 of the inputs with v[i]. A leaf named twice gets the
 * sum of its directions: J v with J's column repeated for it. */
static void seed_directions(ad_tape *t, int n, const ad_node *in, const double *const *v)
{
    unsigned char *nz = t->modes->nz;
    for (int i = 0; i < n; i++) /* one mark per leaf: linear in n */
        nz[in[i].id_] &= (unsigned char)~NZ_SEEN;
    for (int i = 0; i < n; i++) {
        const size_t s = size_of(t, in[i]);
        double *tv = tan_of(t, in[i].id_, 0);
        if (!(nz[in[i].id_] & NZ_SEEN))
            memcpy(tv, v[i], s * sizeof *tv);
        else
            for (size_t e = 0; e < s; e++)
                tv[e] += v[i][e];
        nz[in[i].id_] = NZ_NOW | NZ_DIRTY | NZ_SEEN;
    }
    for (int i = 0; i < n; i++)
        nz[in[i].id_] &= (unsigned char)~NZ_SEEN;
}

static int layout_for(ad_tape *t, size_t K, const char *who)
{
    if (current(t) && t->modes->K == K) {
        t->modes->owner = NULL; /* the callers seed their own leaves */
        /* the same layout: only the tangents of leaves need clearing; the
         * last sweeps' tangents and adjoint tangents are then stale (they
         * are of other seeds), as after a new layout (ad_sparse_*_new lays
         * out and sweeps nothing) */
        ad__modes *m = t->modes;
        m->fwd = m->rev = false;
        for (uint32_t id = 1; id < t->len; id++) {
            const ad__node *p = ad__N(t, id);
            if (ad__opc(p->h) == AD_OP_LEAF && (m->nz[id] & (NZ_NOW | NZ_DIRTY))) {
                memset(tan_of(t, id, 0), 0,
                       K * ((p->h & AD__EXT) ? ext_size(t, ad__a(p->h)) : 1) * sizeof(double));
                m->nz[id] = 0;
            }
        }
        return AD_OK;
    }
    if (layout(t, K) != AD_OK)
        return ad__fail_call(t, AD_ENOMEM, "%s: out of memory for %zu directions of %zu nodes",
                             who, K, t->len - 1);
    return AD_OK;
}

int ad_jvp(ad_tape *t, ad_node out, int n, const ad_node *in, const double *const *v,
           double *jv)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    size_t N;
    if (!ad__check_call(t, out, "jvp", 0) || check_inputs(t, n, in, &N, "jvp", false) != AD_OK)
        return AD_EMISUSE;
    if (!v || !jv)
        return ad__fail_call(t, AD_EMISUSE, "jvp: %s is NULL", !v ? "v" : "jv");
    for (int i = 0; i < n; i++)
        if (!v[i])
            return ad__fail_call(t, AD_EMISUSE, "jvp: v[%d] is NULL", i);
    const ad_opdef *bad = missing_rule(t, t->len, false);
    if (bad)
        return missing_fail(t, "jvp", bad, false);
    if (layout_for(t, 1, "jvp") != AD_OK)
        return AD_ENOMEM;
    seed_directions(t, n, in, v);
    const int st = forward_sweep(t, "jvp"); /* on failure, NaN from the failed node on */
    memcpy(jv, tan_of(t, out.id_, 0), size_of(t, out) * sizeof *jv);
    return st;
}

int ad_hvp(ad_tape *t, ad_node out, int n, const ad_node *in, const double *const *v,
           double *const *hv, double *const *grad)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    size_t N;
    ad__node *o = ad__check_call(t, out, "hvp", 0);
    if (!o || check_inputs(t, n, in, &N, "hvp", true) != AD_OK)
        return AD_EMISUSE;
    if (size_of(t, out) != 1) {
        char buf[48];
        return ad__fail_call(t, AD_EMISUSE, "hvp: the output is %s, not a scalar",
                             ad__shape_str(ad__X(t, ad__a(o->h))->call.out.shape, buf,
                                           sizeof buf));
    }
    if (!v || !hv)
        return ad__fail_call(t, AD_EMISUSE, "hvp: %s is NULL", !v ? "v" : "hv");
    for (int i = 0; i < n; i++)
        if (!v[i] || !hv[i])
            return ad__fail_call(t, AD_EMISUSE, "hvp: %s[%d] is NULL", !v[i] ? "v" : "hv", i);
    const ad_opdef *bad = missing_rule(t, t->len, true);
    if (bad)
        return missing_fail(t, "hvp", bad, true);
    if (layout_for(t, 1, "hvp") != AD_OK)
        return AD_ENOMEM;
    seed_directions(t, n, in, v);
    const int st = forward_sweep(t, "hvp"); /* on failure, NaN from the failed node on */
    reverse_sweep(t, out.id_, NULL);
    for (int i = 0; i < n; i++) {
        const size_t s = size_of(t, in[i]);
        const bool g = (ad__N(t, in[i].id_)->h & AD__GRAD) != 0;
        if (g)
            memcpy(hv[i], gtan_of(t, in[i].id_, 0), s * sizeof(double));
        else
            memset(hv[i], 0, s * sizeof(double));
        if (grad && grad[i]) {
            if (g)
                memcpy(grad[i], adj_of(t, in[i].id_), s * sizeof(double));
            else
                memset(grad[i], 0, s * sizeof(double));
        }
    }
    return st;
}

#define JAC_BLOCK 32 /* directions per forward pass of a Jacobian */
#define HESS_BLOCK 8 /* directions per pass of a Hessian          */

int ad_jacobian(ad_tape *t, ad_node out, int n, const ad_node *in, double *J, unsigned mode)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    size_t N;
    if (!ad__check_call(t, out, "jacobian", 0) || check_inputs(t, n, in, &N, "jacobian", true) != AD_OK)
        return AD_EMISUSE;
    if (!J)
        return ad__fail_call(t, AD_EMISUSE, "jacobian: J is NULL");
    if (mode > AD_JAC_REVERSE)
        return ad__fail_call(t, AD_EMISUSE,
                             "jacobian: unknown mode %u (AD_JAC_AUTO, AD_JAC_FORWARD or "
                             "AD_JAC_REVERSE)",
                             mode);
    const size_t M = size_of(t, out);
    const bool fwd = mode == AD_JAC_FORWARD || (mode == AD_JAC_AUTO && N <= M);
    const ad_opdef *bad = missing_rule(t, t->len, false);
    if (fwd && bad)
        return missing_fail(t, "jacobian (forward mode)", bad, false);
    int st = AD_OK; /* a failed check (a singular matrix): NaN there, reported */
    if (fwd) {
        const size_t K = N < JAC_BLOCK ? N : JAC_BLOCK;
        if (layout_for(t, K, "jacobian") != AD_OK)
            return AD_ENOMEM;
        for (size_t c0 = 0; c0 < N; c0 += K) {
            seed_units(t, n, in, c0, K);
            st = forward_sweep(t, "jacobian");
            const double *to = tan_of(t, out.id_, 0);
            const bool nzo = (t->modes->nz[out.id_] & NZ_NOW) != 0;
            for (size_t d = 0; d < K && c0 + d < N; d++)
                for (size_t r = 0; r < M; r++)
                    J[r * N + c0 + d] = nzo ? to[d * M + r] : 0.0;
        }
        return st;
    }
    /* reverse: one sweep per output element, on the modes' own adjoints
     * (K = 1 with no tangent seeded: the second-order parts are skipped) */
    if (layout_for(t, 1, "jacobian") != AD_OK)
        return AD_ENOMEM;
    st = forward_sweep(t, "jacobian");
    double *seed = t->modes->scratch; /* M <= the scratch's length */
    for (size_t r = 0; r < M; r++) {
        for (size_t i = 0; i < M; i++)
            seed[i] = i == r;
        reverse_sweep(t, out.id_, seed);
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const size_t s = size_of(t, in[i]);
            const bool g = (ad__N(t, in[i].id_)->h & AD__GRAD) != 0;
            const double *gi = g ? adj_of(t, in[i].id_) : NULL;
            for (size_t j = 0; j < s; j++)
                J[r * N + off + j] = gi ? gi[j] : 0.0;
            off += s;
        }
    }
    return st;
}

int ad_hessian(ad_tape *t, ad_node out, int n, const ad_node *in, double *H)
{
    if (!t)
        return AD_EMISUSE;
    if (ad__begin_call(t) != AD_OK)
        return t->status;
    size_t N;
    ad__node *o = ad__check_call(t, out, "hessian", 0);
    if (!o || check_inputs(t, n, in, &N, "hessian", true) != AD_OK)
        return AD_EMISUSE;
    if (size_of(t, out) != 1) {
        char buf[48];
        return ad__fail_call(t, AD_EMISUSE,
                             "hessian: the output is %s, not a scalar (take the Hessian of "
                             "one element, or of a weighted sum)",
                             ad__shape_str(ad__X(t, ad__a(o->h))->call.out.shape, buf,
                                           sizeof buf));
    }
    if (!H)
        return ad__fail_call(t, AD_EMISUSE, "hessian: H is NULL");
    const ad_opdef *bad = missing_rule(t, t->len, true);
    if (bad)
        return missing_fail(t, "hessian", bad, true);
    const size_t K = N < HESS_BLOCK ? N : HESS_BLOCK;
    if (layout_for(t, K, "hessian") != AD_OK)
        return AD_ENOMEM;
    int st = AD_OK; /* a failed check (a singular matrix): NaN there, reported */
    for (size_t c0 = 0; c0 < N; c0 += K) {
        seed_units(t, n, in, c0, K);
        st = forward_sweep(t, "hessian");
        reverse_sweep(t, out.id_, NULL);
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const size_t s = size_of(t, in[i]);
            const bool g = (ad__N(t, in[i].id_)->h & AD__GRAD) != 0;
            for (size_t d = 0; d < K && c0 + d < N; d++) {
                const double *gt = g ? gtan_of(t, in[i].id_, d) : NULL;
                for (size_t j = 0; j < s; j++) /* column c0 + d of H */
                    H[(off + j) * N + c0 + d] = gt ? gt[j] : 0.0;
            }
            off += s;
        }
    }
    /* exact in exact arithmetic; made symmetric to the last bit */
    for (size_t i = 0; i < N; i++)
        for (size_t j = i + 1; j < N; j++) {
            const double a = 0.5 * (H[i * N + j] + H[j * N + i]);
            H[i * N + j] = H[j * N + i] = a;
        }
    return st;
}

/* ---- for the sparse drivers (sparse/sparse.c) ---- */

int ad__modes_layout(ad_tape *t, size_t K, const char *who) { return layout_for(t, K, who); }

int ad__modes_claim(ad_tape *t, size_t K, const void *owner, const char *who, size_t *stamp,
                    bool *cleared)
{
    ad__modes *m = t->modes;
    *cleared = false;
    if (!(m && current(t) && m->K == K && m->owner == owner)) {
        *cleared = true;
        const int st = layout_for(t, K, who);
        if (st != AD_OK)
            return st;
        m = t->modes;
        m->owner = owner;
    }
    *stamp = m->stamp;
    return AD_OK;
}

void ad__modes_release(ad_tape *t, const void *owner)
{
    if (t->modes && t->modes->owner == owner)
        t->modes->owner = NULL;
}

int ad__modes_rules(ad_tape *t, bool second, const char *who)
{
    const ad_opdef *bad = missing_rule(t, t->len, second);
    return bad ? missing_fail(t, who, bad, second) : AD_OK;
}

double *ad__modes_tan(ad_tape *t, uint32_t id) { return tan_of(t, id, 0); }
double *ad__modes_gtan(ad_tape *t, uint32_t id) { return gtan_of(t, id, 0); }

void ad__modes_seeded(ad_tape *t, uint32_t id)
{
    t->modes->nz[id] = NZ_NOW | NZ_DIRTY;
    t->modes->fwd = false;
}

int ad__modes_forward(ad_tape *t, const char *who) { return forward_sweep(t, who); }

void ad__modes_reverse(ad_tape *t, size_t nout, const uint32_t *outs, const double *const *seeds)
{
    reverse_sweep_k(t, nout, outs, seeds, t->modes->K);
}
