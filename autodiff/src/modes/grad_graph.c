/* grad_graph.c -- the gradient as a tape: the reverse sweep run as
 * recorded ops.
 *
 * Walks the nodes from the output back to node 1 as ad_backward does, but
 * each node's vjp is recorded (its op's rvjp: the same formula written in
 * tape ops, scalar_ops.h and the op files) instead of computed, and the
 * contributions to a node are summed with recorded adds. The adjoint of
 * every input is then a node like any other: differentiate it again (any
 * order), replay it at new inputs, trace it, export it. */
#include "internal.h"

#include <string.h>

ad_node ad__fill(ad_tape *t, ad_shape s, double v)
{
    if (s.ndim == 0)
        return ad_scalar(t, v);
    ad_node n = ad_constant(t, s, NULL);
    if (ad_node_is_nil(n))
        return n;
    double *p = ad__X(t, ad__a(ad__N(t, n.id_)->h))->call.out.val;
    for (size_t i = 0; i < ad_shape_size(s); i++)
        p[i] = v;
    return n;
}

static bool same_shape(ad_shape a, ad_shape b)
{
    return a.ndim == b.ndim && a.rows == b.rows && a.cols == b.cols;
}

/* A contribution d recorded in the output's shape for an operand of shape
 * s that was broadcast (a scalar, a row or a column against a matrix, by
 * the elementwise ops' one rule): summed over the repeated dimensions back
 * to s -- a row over the rows, a column (m x 1) over the columns. */
static ad_node unbroadcast(ad_tape *t, ad_node d, ad_shape s)
{
    const ad_shape ds = ad_node_shape(t, d);
    if (same_shape(ds, s))
        return d;
    if (ad_shape_size(s) == 1) {
        ad_node sum = ad_sum(t, d);
        return s.ndim == 0 ? sum : ad_reshape(t, sum, s);
    }
    if (ad_shape_size(s) == ad_shape_size(ds)) /* a vector of n as 1 x n */
        return ad_reshape(t, d, s);
    const bool column = s.ndim == 2 && s.cols == 1;
    const ad_node r = ad_sum_axis(t, d, column ? 1 : 0);
    return s.ndim == 2 ? ad_reshape(t, r, s) : r;
}

typedef void (*rvjp_fn)(ad_tape *t, const ad_node *in, ad_node out, double c, ad_node g,
                        ad_node *dx);

int ad_gradient_nodes(ad_tape *t, ad_node output, ad_node seed, int n, const ad_node *in,
                      ad_node *grads)
{
    static const char who[] = "gradient_nodes";
    if (!t)
        return AD_EMISUSE;
    if (t->status != AD_OK)
        return t->status;
    if (!grads || (n > 0 && !in) || n < 1)
        return ad__fail(t, AD_EMISUSE, "%s: %s", who,
                        !grads ? "grads is NULL" : n < 1 ? "no inputs (n < 1)" : "in is NULL");
    for (int i = 0; i < n; i++)
        grads[i] = ad_nil();
    if (!ad__check(t, output, who, 1))
        return t->status;
    for (int i = 0; i < n; i++)
        if (!ad__check(t, in[i], who, i + 3))
            return t->status;
    const ad_shape os = ad_node_shape(t, output);
    if (ad_node_is_nil(seed)) {
        if (os.ndim != 0) {
            char buf[48];
            return ad__fail(t, AD_EMISUSE,
                            "%s: the output is %s, not a scalar; pass a seed node of its shape",
                            who, ad__shape_str(os, buf, sizeof buf));
        }
    } else {
        if (!ad__check(t, seed, who, 2))
            return t->status;
        if (!same_shape(ad_node_shape(t, seed), os)) {
            char a[48], b[48];
            return ad__fail(t, AD_ESHAPE, "%s: the seed is %s but the output is %s", who,
                            ad__shape_str(ad_node_shape(t, seed), a, sizeof a),
                            ad__shape_str(os, b, sizeof b));
        }
    }
    /* every custom op on the way needs its vjp as recorded ops */
    for (size_t i = 0; i < t->next_ext; i++) {
        const ad__ext *x = ad__X(t, (uint32_t)i);
        if (x->node > output.id_ || ad__opcode_of(x->def) != AD_OP_CUSTOM)
            continue;
        if (x->def->size < offsetof(ad_opdef, vjp_ops) + sizeof x->def->vjp_ops
            || !x->def->vjp_ops)
            return ad__fail(t, AD_EMISUSE,
                            "%s: custom op '%s' has no vjp in recorded ops (set its "
                            "descriptor's vjp_ops and size = sizeof(ad_opdef))",
                            who, x->def->name);
    }

    const uint32_t out = output.id_;
    const size_t nadj = (size_t)out + 1;
    ad_node *adj = ad__alloc(&t->mem, nadj * sizeof *adj);
    if (!adj)
        return ad__fail(t, AD_ENOMEM, "%s: out of memory for %zu adjoints", who, nadj);
    for (size_t i = 0; i < nadj; i++)
        adj[i] = ad_nil();
    adj[out] = ad_node_is_nil(seed) ? ad_scalar(t, 1.0) : seed;

    for (uint32_t id = out; id >= 1 && t->status == AD_OK; id--) {
        const ad__node *nd = ad__N(t, id);
        const uint64_t h = nd->h;
        const unsigned op = ad__opc(h);
        if (!(h & AD__GRAD) || op == AD_OP_LEAF || ad_node_is_nil(adj[id]))
            continue;
        ad_node ops[AD_MAX_ARITY];
        int nin;
        double c;
        rvjp_fn rule;
        if (h & AD__EXT) {
            const ad__ext *x = ad__X(t, ad__a(h));
            nin = x->call.nin;
            for (int k = 0; k < nin; k++)
                ops[k] = ad__handle(t, x->in[k]);
            c = x->call.c;
            rule = x->op < AD_OP_CUSTOM ? ad__ops[x->op]->rvjp : x->def->vjp_ops;
        } else {
            const ad__op *bi = ad__ops[op];
            nin = bi->def.arity;
            ops[0] = ad__handle(t, ad__a(h));
            c = bi->takes_const ? t->consts[ad__b(h)] : 0.0;
            if (nin > 1)
                ops[1] = ad__handle(t, ad__b(h));
            rule = bi->rvjp;
        }
        ad_node dx[AD_MAX_ARITY];
        for (int k = 0; k < AD_MAX_ARITY; k++)
            dx[k] = ad_nil();
        rule(t, ops, ad__handle(t, id), c, adj[id], dx);
        for (int k = 0; k < nin && t->status == AD_OK; k++) {
            if (ad_node_is_nil(dx[k]))
                continue;
            const uint32_t oid = ops[k].id_;
            if (!(ad__N(t, oid)->h & AD__GRAD))
                continue;
            ad_node d = unbroadcast(t, dx[k], ad_node_shape(t, ops[k]));
            adj[oid] = ad_node_is_nil(adj[oid]) ? d : ad_add(t, adj[oid], d);
        }
    }
    if (t->status == AD_OK)
        for (int i = 0; i < n; i++) {
            const uint32_t id = in[i].id_;
            grads[i] = id <= out && !ad_node_is_nil(adj[id])
                           ? adj[id]
                           : ad__fill(t, ad_node_shape(t, in[i]), 0.0);
        }
    ad__free(&t->mem, adj, nadj * sizeof *adj);
    if (t->status != AD_OK)
        for (int i = 0; i < n; i++)
            grads[i] = ad_nil();
    return t->status;
}
