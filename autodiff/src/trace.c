/* trace.c -- the reverse sweep printed step by step, like lecture notes.
 *
 * The table below is presentation only: for each built-in op, how to
 * write it and its local derivative as text. Every NUMBER printed comes
 * from the tape: node values and adjoints as they are, and each input's
 * contribution from the op's own vjp, called on scratch buffers with the
 * node's adjoint as seed (and with seed 1 for the local derivative). */
#include "check_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_MAX_VALUES 12

/* Placeholders in the templates:
 *   {0} {1} {2}  input names      {n}  the node's name
 *   {g}      dJ/d(node)           {c}  the node's constant, {c-1} minus one
 *   {N0}     size of input 0      {*}  "·", or "⊙" between tensors
 *   {r0} {c0} {r1} {c1} {rg} {cg}  rows/cols of inputs and of the node
 * An op whose rule depends on its operands' shapes has one rule per form,
 * named "op/form" (affine/batch); rule_for picks it. */
typedef struct rule {
    const char *op;
    const char *expr;      /* the node as an expression of its inputs     */
    int elementwise;       /* output element i depends on input element i */
    const char *d[3];      /* local derivative factor: dJ/din = {g} · d   */
    const char *full[3];   /* shape-level rule, used instead of d         */
} rule;

static const rule rules[] = {
    {"add", "{0} + {1}", 1, {"1", "1"}, {NULL, NULL}},
    {"sub", "{0} - {1}", 1, {"1", "-1"}, {NULL, NULL}},
    {"mul", "{0} {*} {1}", 1, {"{1}", "{0}"}, {NULL, NULL}},
    {"div", "{0} / {1}", 1, {"1/{1}", "-{0}/{1}^2"}, {NULL, NULL}},
    {"neg", "-{0}", 1, {"-1", NULL}, {NULL, NULL}},
    {"scale", "{c} · {0}", 1, {"{c}", NULL}, {NULL, NULL}},
    {"addc", "{0} + {c}", 1, {"1", NULL}, {NULL, NULL}},
    {"square", "{0}^2", 1, {"2·{0}", NULL}, {NULL, NULL}},
    {"sqrt", "sqrt({0})", 1, {"1/(2·sqrt({0}))", NULL}, {NULL, NULL}},
    {"exp", "exp({0})", 1, {"exp({0})", NULL}, {NULL, NULL}},
    {"log", "log({0})", 1, {"1/{0}", NULL}, {NULL, NULL}},
    {"tanh", "tanh({0})", 1, {"(1 - tanh({0})^2)", NULL}, {NULL, NULL}},
    {"sigmoid", "sigmoid({0})", 1, {"sigmoid({0})·(1 - sigmoid({0}))", NULL}, {NULL, NULL}},
    {"relu", "relu({0})", 1, {"relu'({0})", NULL}, {NULL, NULL}},
    {"abs", "|{0}|", 1, {"sign({0})", NULL}, {NULL, NULL}},
    {"powc", "{0}^{c}", 1, {"{c}·{0}^{c-1}", NULL}, {NULL, NULL}},
    {"sum", "sum({0})", 0, {"1", NULL}, {NULL, NULL}},
    {"mean", "mean({0})", 0, {"1/{N0}", NULL}, {NULL, NULL}},
    {"dot", "{0} · {1}", 0, {"{1}", "{0}"}, {NULL, NULL}},
    {"matvec", "{0} · {1}", 0, {NULL, NULL},
     {"{g} · {1}^T   ({rg}x1)·(1x{r1})", "{0}^T · {g}   ({c0}x{r0})·({rg}x1)"}},
    {"matvec_t", "{0}^T · {1}", 0, {NULL, NULL},
     {"{1} · {g}^T   ({r1}x1)·(1x{rg})", "{0} · {g}   ({r0}x{c0})·({rg}x1)"}},
    {"matmul", "{0} · {1}", 0, {NULL, NULL},
     {"{g} · {1}^T   ({rg}x{cg})·({c1}x{r1})", "{0}^T · {g}   ({c0}x{r0})·({rg}x{cg})"}},
    {"matmul_nt", "{0} · {1}^T", 0, {NULL, NULL},
     {"{g} · {1}   ({rg}x{cg})·({r1}x{c1})", "{g}^T · {0}   ({cg}x{rg})·({r0}x{c0})"}},
    {"outer", "{0} · {1}^T", 0, {NULL, NULL},
     {"{g} · {1}   ({rg}x{cg})·({r1}x1)", "{g}^T · {0}   ({cg}x{rg})·({r0}x1)"}},
    {"transpose", "{0}^T", 0, {NULL, NULL}, {"{g}^T", NULL}},
    {"softmax_xent", "xent(softmax({0}), {1})", 0, {"(softmax({0}) - {1})", "(lse({0}) - {0})"},
     {NULL, NULL}},
    {"affine", "{0} · {1} + {2}", 0, {NULL, NULL, NULL},
     {"{g} · {1}^T   ({rg}x1)·(1x{r1})", "{0}^T · {g}   ({c0}x{r0})·({rg}x1)", "{g}"}},
    {"affine/batch", "{1} · {0}^T + {2}", 0, {NULL, NULL, NULL},
     {"{g}^T · {1}   ({cg}x{rg})·({r1}x{c1})", "{g} · {0}   ({rg}x{cg})·({r0}x{c0})",
      "sum_rows({g})"}},
};

static const rule *find_rule(const char *op)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strcmp(rules[i].op, op))
            return &rules[i];
    return NULL;
}

/* Everything a template may refer to. */
typedef struct ctx {
    const ad_tape *t;
    ad_node node;
    ad_shape shape;
    const char *name;
    const char *gname;        /* "dJ/dz" */
    int nin;
    ad_node in[AD_MAX_ARITY];
    ad_shape ins[AD_MAX_ARITY];
    char inname[AD_MAX_ARITY][64];
    double c;
    int tensors;              /* some operand is not a scalar */
} ctx;

/* The rule of a built-in node in its form; NULL for a custom op, even one
 * that reuses a built-in's name. */
static const rule *rule_for(const ad_opdef *def, const ctx *x)
{
    if (def != ad_registry_find(NULL, def->name))
        return NULL;
    if (!strcmp(def->name, "affine") && x->nin == 3 && x->ins[1].ndim == 2)
        return find_rule("affine/batch");
    return find_rule(def->name);
}

const char *ad__node_label(const ad_tape *t, ad_node n, char *buf, size_t cap)
{
    const char *nm = ad_node_name(t, n);
    if (nm)
        return nm;
    snprintf(buf, cap, "n%zu", ad_node_index(t, n));
    return buf;
}

static void render(ad__sb *b, const char *tmpl, const ctx *x)
{
    char num[40];
    for (const char *p = tmpl; *p;) {
        if (*p != '{') {
            const char *q = strchr(p, '{');
            size_t len = q ? (size_t)(q - p) : strlen(p);
            ad__sb_put(b, p, len);
            p += len;
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) {
            ad__sb_puts(b, p);
            return;
        }
        char key[8] = {0};
        size_t klen = (size_t)(end - p - 1);
        memcpy(key, p + 1, klen < sizeof key - 1 ? klen : sizeof key - 1);
        p = end + 1;
        if (key[0] >= '0' && key[0] <= '2' && !key[1]) {
            int k = key[0] - '0';
            ad__sb_puts(b, k < x->nin ? x->inname[k] : "?");
        } else if (!strcmp(key, "n")) {
            ad__sb_puts(b, x->name);
        } else if (!strcmp(key, "g")) {
            ad__sb_puts(b, x->gname);
        } else if (!strcmp(key, "c")) {
            ad__sb_puts(b, ad__num(x->c, 0, num, sizeof num));
        } else if (!strcmp(key, "c-1")) {
            ad__sb_puts(b, ad__num(x->c - 1, 1, num, sizeof num));
        } else if (!strcmp(key, "N0")) {
            ad__sb_printf(b, "%zu", x->nin ? ad_shape_size(x->ins[0]) : (size_t)0);
        } else if (!strcmp(key, "*")) {
            ad__sb_puts(b, x->tensors ? "⊙" : "·");
        } else if ((key[0] == 'r' || key[0] == 'c') && key[1] && !key[2]) {
            ad_shape s = key[1] == 'g' ? x->shape : x->ins[key[1] == '2' ? 2 : key[1] == '1'];
            ad__sb_printf(b, "%u", (unsigned)(key[0] == 'r' ? s.rows : s.cols));
        }
    }
}

static void ctx_fill(ctx *x, const ad_tape *t, ad_node nd)
{
    memset(x, 0, sizeof *x);
    x->t = t;
    x->node = nd;
    x->shape = ad_node_shape(t, nd);
    x->nin = ad_node_inputs(t, nd, x->in);
    if (x->nin < 0)
        x->nin = 0;
    x->c = ad_node_const(t, nd);
    x->tensors = x->shape.ndim != 0;
    for (int k = 0; k < x->nin; k++) {
        x->ins[k] = ad_node_shape(t, x->in[k]);
        x->tensors |= x->ins[k].ndim != 0;
        char buf[32];
        snprintf(x->inname[k], sizeof x->inname[k], "%s",
                 ad__node_label(t, x->in[k], buf, sizeof buf));
    }
}

void ad__node_expr(ad__sb *b, const ad_tape *t, ad_node nd)
{
    const ad_opdef *def = ad_node_op(t, nd);
    if (!def)
        return;
    if (!strcmp(def->name, "leaf")) {
        ad__sb_puts(b, ad_node_is_variable(t, nd) ? "variable" : "constant");
        return;
    }
    ctx x;
    ctx_fill(&x, t, nd);
    const rule *r = rule_for(def, &x);
    if (r) {
        render(b, r->expr, &x);
        return;
    }
    ad__sb_printf(b, "%s(", def->name); /* a custom op */
    for (int k = 0; k < x.nin; k++)
        ad__sb_printf(b, "%s%s", k ? ", " : "", x.inname[k]);
    ad__sb_puts(b, ")");
}

int ad__print_fail(const ad_print_opts *o, int status, const char *fmt, ...)
{
    if (o && o->errbuf && o->errcap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(o->errbuf, o->errcap, fmt, ap);
        va_end(ap);
    }
    return status;
}

void ad__file_write(void *ud, const char *text, size_t len) { fwrite(text, 1, len, (FILE *)ud); }

/* ---- the trace ---- */

typedef struct tracer {
    const ad_tape *t;
    ad__cmem mem;
    ad_write_fn write;
    void *ud;
    size_t maxv;
    const char *J;            /* the output's name */
    size_t len;
    unsigned char *mark;      /* len: visited by the sweep */
    uint32_t *uses;           /* len: visited consumers (with multiplicity) */
    double *scratch;          /* vjp seeds and results */
    size_t scratch_cap;       /* doubles */
    ad__sb line;
} tracer;

static void flush(tracer *tr)
{
    if (tr->line.len)
        tr->write(tr->ud, tr->line.buf, tr->line.len);
    tr->line.len = 0;
}

static int scratch(tracer *tr, size_t n)
{
    if (n <= tr->scratch_cap)
        return AD_OK;
    if (n > SIZE_MAX / sizeof(double))
        return AD_ENOMEM;
    double *p = tr->mem.fn(tr->mem.ud, tr->scratch, tr->scratch_cap * sizeof(double),
                           n * sizeof(double));
    if (!p)
        return AD_ENOMEM;
    tr->scratch = p;
    tr->scratch_cap = n;
    return AD_OK;
}

/* Runs the node's vjp with out.grad = seed (one value per output element)
 * on zeroed buffers: res[k] receives input k's contribution (NULL for
 * inputs that take no gradient). */
static void run_vjp(const ctx *x, const ad_opdef *def, const double *seed, double *out_grad,
                    double *const *res)
{
    ad_tensor in[AD_MAX_ARITY];
    size_t n = ad_shape_size(x->shape);
    memcpy(out_grad, seed, n * sizeof *seed);
    for (int k = 0; k < x->nin; k++) {
        /* The vjp only reads values; the cast matches ad_tensor's type. */
        in[k].val = (double *)ad_value(x->t, x->in[k]);
        in[k].grad = res[k];
        in[k].shape = x->ins[k];
        if (res[k])
            memset(res[k], 0, ad_shape_size(x->ins[k]) * sizeof(double));
    }
    ad_call call;
    call.out.val = (double *)ad_value(x->t, x->node);
    call.out.grad = out_grad;
    call.out.shape = x->shape;
    call.in = in;
    call.nin = x->nin;
    call.c = x->c;
    call.ud = def->ud;
    def->vjp(&call);
}

static void put_values(tracer *tr, const double *v, ad_shape s, int neg_parens)
{
    char num[40];
    if (s.ndim == 0)
        ad__sb_puts(&tr->line, ad__num(v[0], neg_parens, num, sizeof num));
    else
        ad__sb_values(&tr->line, v, s);
}

/* One "dJ/dx = rule = numbers" line for input k of node x. */
static void contribution(tracer *tr, const ctx *x, const rule *r, const ad_opdef *def, int k,
                         const double *adj, const double *contrib, const double *local)
{
    ad__sb *b = &tr->line;
    const ad_shape is = x->ins[k];
    const size_t isz = ad_shape_size(is), nsz = ad_shape_size(x->shape);
    const int same = is.ndim == x->shape.ndim && isz == nsz;
    /* a factor that is a tensor ("relu'(z)", "x") rather than a number
     * ("1", "{c}"): only then are the local values worth printing */
    const char *fac = r && k < 3 && !r->full[k] ? r->d[k] : NULL;
    const int tensor_factor = !fac || strstr(fac, "{0}") || strstr(fac, "{1}");
    ad__sb_printf(b, "  d%s/d%s %s ", tr->J, x->inname[k],
                  tr->uses[ad_node_index(tr->t, x->in[k])] > 1 ? "+=" : "=");
    if (r && k < 3 && r->full[k]) {
        render(b, r->full[k], x);
    } else {
        const char *f = r && k < 3 ? r->d[k] : NULL;
        ad__sb fb;
        ad__sb_init(&fb, tr->mem);
        if (f)
            render(&fb, f, x);
        else
            ad__sb_printf(&fb, "∂%s/∂%s", def->name, x->inname[k]);
        const char *ftxt = fb.buf ? fb.buf : "";
        const int one = !strcmp(ftxt, "1");
        /* ⊙ for an elementwise product of tensors; · when a factor is a
         * number or the node is a scalar */
        const char *sep = x->shape.ndim != 0 && r && r->elementwise && tensor_factor ? "⊙" : "·";
        if (r && r->elementwise && isz < nsz) { /* broadcast: summed back */
            ad__sb_printf(b, "%s(%s", isz == 1 ? "sum"
                                      : is.ndim == 2 && is.cols == 1 ? "sum_cols" /* a column */
                                                                     : "sum_rows",
                          x->gname);
            if (!one)
                ad__sb_printf(b, " %s %s", sep, ftxt);
            ad__sb_puts(b, ")");
        } else {
            ad__sb_printf(b, "%s %s %s", x->gname, sep, ftxt);
        }
        if (fb.oom)
            b->oom = 1;
        ad__sb_free(&fb);
    }
    if (!contrib || isz > tr->maxv) {
        if (is.ndim != 0) {
            char sb[32];
            ad__sb_printf(b, "   [%s]", ad__shape_name(is, sb, sizeof sb));
        }
        ad__sb_puts(b, "\n");
        return;
    }
    if (local && x->shape.ndim == 0) {
        ad__sb_puts(b, " = ");
        put_values(tr, adj, x->shape, 0);
        ad__sb_puts(b, " · ");
        put_values(tr, local, is, 1);
    } else if (local && same && tensor_factor && nsz <= tr->maxv) {
        ad__sb_puts(b, " = ");
        put_values(tr, adj, x->shape, 0);
        ad__sb_puts(b, " ⊙ ");
        put_values(tr, local, is, 1);
    }
    ad__sb_puts(b, " = ");
    put_values(tr, contrib, is, 0);
    ad__sb_puts(b, "\n");
}

static int trace_node(tracer *tr, ad_node nd, int is_output)
{
    const ad_tape *t = tr->t;
    ad__sb *b = &tr->line;
    const ad_opdef *def = ad_node_op(t, nd);
    char nb[32], gb[96], sb[32];
    ctx x;
    ctx_fill(&x, t, nd);
    x.name = ad__node_label(t, nd, nb, sizeof nb);
    snprintf(gb, sizeof gb, "d%s/d%s", tr->J, x.name);
    x.gname = gb;
    const size_t nsz = ad_shape_size(x.shape);
    const double *val = ad_value(t, nd), *adj = ad_grad(t, nd);
    const int leaf = !strcmp(def->name, "leaf");

    /* the node and its value */
    ad__sb_printf(b, "\n%s%s", x.name, leaf ? ": " : " = ");
    ad__node_expr(b, t, nd);
    if (leaf)
        ad__sb_printf(b, ", %s", ad__shape_name(x.shape, sb, sizeof sb));
    if (nsz <= tr->maxv) {
        ad__sb_puts(b, " = ");
        put_values(tr, val, x.shape, 0);
    } else if (!leaf) {
        ad__sb_printf(b, "   [%s]", ad__shape_name(x.shape, sb, sizeof sb));
    }
    ad__sb_puts(b, "\n");
    /* its adjoint */
    if (nsz <= tr->maxv) {
        ad__sb_printf(b, "  %s = ", x.gname);
        put_values(tr, adj, x.shape, 0);
    } else {
        ad__sb_printf(b, "  %s: %s, not shown", x.gname, ad__shape_name(x.shape, sb, sizeof sb));
    }
    ad__sb_puts(b, is_output ? "   (seed)\n" : "\n");
    if (leaf) {
        flush(tr);
        return AD_OK;
    }

    /* each input's contribution, from the op's own vjp */
    const rule *r = rule_for(def, &x);
    double *res[AD_MAX_ARITY] = {NULL}, *loc[AD_MAX_ARITY] = {NULL};
    int small = 0;
    size_t need = 2 * nsz;
    for (int k = 0; k < x.nin; k++)
        if (ad_node_requires_grad(t, x.in[k]) && ad_shape_size(x.ins[k]) <= tr->maxv) {
            small = 1;
            need += 2 * ad_shape_size(x.ins[k]);
        }
    const int want_local = x.shape.ndim == 0 || (r && r->elementwise && nsz <= tr->maxv);
    if (small) {
        if (scratch(tr, need) != AD_OK)
            return AD_ENOMEM;
        double *p = tr->scratch, *og = p, *seed1 = p + nsz;
        p += 2 * nsz;
        for (int k = 0; k < x.nin; k++)
            if (ad_node_requires_grad(t, x.in[k]) && ad_shape_size(x.ins[k]) <= tr->maxv) {
                res[k] = p;
                loc[k] = p + ad_shape_size(x.ins[k]);
                p += 2 * ad_shape_size(x.ins[k]);
            }
        if (want_local) { /* seed 1 (ones): the local derivative itself */
            for (size_t i = 0; i < nsz; i++)
                seed1[i] = 1.0;
            run_vjp(&x, def, seed1, og, loc);
        }
        run_vjp(&x, def, adj, og, res);
    }
    for (int k = 0; k < x.nin; k++) {
        if (!ad_node_requires_grad(t, x.in[k])) {
            ad__sb_printf(b, "  (%s is a constant: no gradient)\n", x.inname[k]);
            continue;
        }
        contribution(tr, &x, r, def, k, adj, res[k], want_local ? loc[k] : NULL);
    }
    flush(tr);
    return b->oom ? AD_ENOMEM : AD_OK;
}

int ad_trace(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
             const ad_print_opts *o)
{
    if (!t || !write)
        return ad__print_fail(o, AD_EMISUSE, "trace: %s is NULL", t ? "write" : "tape");
    if (ad_tape_status(t) != AD_OK)
        return ad__print_fail(o, AD_EMISUSE, "trace: the tape holds an error: %s",
                              ad_tape_errmsg(t));
    size_t oi = ad_node_index(t, output);
    if (!oi)
        return ad__print_fail(o, AD_EMISUSE, "trace: the output is nil, stale or of another tape");
    char jb[32];
    const char *J = ad__node_label(t, output, jb, sizeof jb);
    const double *seed = ad_grad(t, output);
    if (!seed)
        return ad__print_fail(o, AD_EMISUSE,
                              "trace: %s depends on no variable: there is no sweep to trace", J);
    ad_shape os = ad_node_shape(t, output);
    int seeded = 0;
    for (size_t i = 0; i < ad_shape_size(os); i++)
        seeded |= seed[i] != 0.0;
    if (!seeded)
        return ad__print_fail(o, AD_EMISUSE,
                              "trace: the adjoint of %s is 0: call ad_backward(t, %s) before "
                              "ad_trace",
                              J, J);

    tracer tr;
    memset(&tr, 0, sizeof tr);
    tr.t = t;
    tr.mem = ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL);
    tr.write = write;
    tr.ud = ud;
    tr.maxv = o && o->max_values ? o->max_values : DEFAULT_MAX_VALUES;
    tr.J = J;
    tr.len = oi + 1;
    ad__sb_init(&tr.line, tr.mem);
    tr.mark = ad__cmem_array(&tr.mem, tr.len, sizeof *tr.mark);
    tr.uses = ad__cmem_array(&tr.mem, tr.len, sizeof *tr.uses);
    int st = AD_OK;
    if (!tr.mark || !tr.uses) {
        st = ad__print_fail(o, AD_ENOMEM, "trace: out of memory for %zu nodes", tr.len);
        goto done;
    }
    memset(tr.mark, 0, tr.len);
    memset(tr.uses, 0, tr.len * sizeof *tr.uses);
    /* The sweep's nodes: output and what it depends on that takes a
     * gradient; inputs come before their users, so one backward pass. */
    tr.mark[oi] = 1;
    size_t steps = 0;
    for (size_t i = oi; i > 0; i--) {
        if (!tr.mark[i])
            continue;
        steps++;
        ad_node nd = ad_tape_node(t, i), in[AD_MAX_ARITY];
        int nin = ad_node_inputs(t, nd, in);
        for (int k = 0; k < nin; k++)
            if (ad_node_requires_grad(t, in[k])) {
                size_t j = ad_node_index(t, in[k]);
                tr.mark[j] = 1;
                tr.uses[j]++;
            }
    }
    ad__sb_printf(&tr.line, "reverse sweep from %s: %zu steps, seed d%s/d%s = ", J, steps, J, J);
    put_values(&tr, seed, os, 0);
    ad__sb_puts(&tr.line, "\n");
    flush(&tr);
    for (size_t i = oi; i > 0 && st == AD_OK; i--)
        if (tr.mark[i])
            st = trace_node(&tr, ad_tape_node(t, i), i == oi);
    if (st == AD_OK && tr.line.oom)
        st = AD_ENOMEM;
    if (st == AD_ENOMEM)
        ad__print_fail(o, AD_ENOMEM, "trace: out of memory");
done:
    ad__cmem_free(&tr.mem, tr.mark, tr.len * sizeof *tr.mark);
    ad__cmem_free(&tr.mem, tr.uses, tr.len * sizeof *tr.uses);
    ad__cmem_free(&tr.mem, tr.scratch, tr.scratch_cap * sizeof *tr.scratch);
    ad__sb_free(&tr.line);
    return st;
}

int ad_trace_fprint(FILE *f, const ad_tape *t, ad_node output, const ad_print_opts *o)
{
    if (!f)
        return ad__print_fail(o, AD_EMISUSE, "trace: the stream is NULL");
    return ad_trace(t, output, ad__file_write, f, o);
}
