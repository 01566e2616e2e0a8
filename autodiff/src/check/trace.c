/* trace.c -- the reverse sweep printed step by step, like lecture notes,
 * and the forward (tangent) sweep likewise (ad_trace_tangent, below).
 *
 * The table below is presentation only: for each built-in op, how to
 * write it and its local derivative as text. Every NUMBER printed comes
 * from the tape: node values and adjoints as they are, and each input's
 * contribution from the op's own vjp, called on scratch buffers with the
 * node's adjoint as seed (and with seed 1 for the local derivative). */
#include "check_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
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
    /* elementwise math (kinks and domains: docs/math.md) */
    {"sin", "sin({0})", 1, {"cos({0})", NULL}, {NULL, NULL}},
    {"cos", "cos({0})", 1, {"-sin({0})", NULL}, {NULL, NULL}},
    {"tan", "tan({0})", 1, {"(1 + tan({0})^2)", NULL}, {NULL, NULL}},
    {"asin", "asin({0})", 1, {"1/sqrt(1 - {0}^2)", NULL}, {NULL, NULL}},
    {"acos", "acos({0})", 1, {"-1/sqrt(1 - {0}^2)", NULL}, {NULL, NULL}},
    {"atan", "atan({0})", 1, {"1/(1 + {0}^2)", NULL}, {NULL, NULL}},
    {"sinh", "sinh({0})", 1, {"cosh({0})", NULL}, {NULL, NULL}},
    {"cosh", "cosh({0})", 1, {"sinh({0})", NULL}, {NULL, NULL}},
    {"asinh", "asinh({0})", 1, {"1/sqrt({0}^2 + 1)", NULL}, {NULL, NULL}},
    {"acosh", "acosh({0})", 1, {"1/sqrt({0}^2 - 1)", NULL}, {NULL, NULL}},
    {"atanh", "atanh({0})", 1, {"1/(1 - {0}^2)", NULL}, {NULL, NULL}},
    {"log1p", "log(1 + {0})", 1, {"1/(1 + {0})", NULL}, {NULL, NULL}},
    {"expm1", "exp({0}) - 1", 1, {"exp({0})", NULL}, {NULL, NULL}},
    {"log2", "log2({0})", 1, {"1/({0}·ln 2)", NULL}, {NULL, NULL}},
    {"log10", "log10({0})", 1, {"1/({0}·ln 10)", NULL}, {NULL, NULL}},
    {"erf", "erf({0})", 1, {"2/sqrt(pi)·exp(-{0}^2)", NULL}, {NULL, NULL}},
    {"erfc", "erfc({0})", 1, {"-2/sqrt(pi)·exp(-{0}^2)", NULL}, {NULL, NULL}},
    {"softplus", "softplus({0})", 1, {"sigmoid({0})", NULL}, {NULL, NULL}},
    {"gelu", "gelu({0})", 1, {"(Phi({0}) + {0}·phi({0}))", NULL}, {NULL, NULL}},
    {"elu", "elu({0}, {c})", 1, {"elu'({0})", NULL}, {NULL, NULL}},
    {"leaky_relu", "leaky_relu({0}, {c})", 1, {"leaky_relu'({0})", NULL}, {NULL, NULL}},
    {"floor", "floor({0})", 1, {"0", NULL}, {NULL, NULL}},
    {"ceil", "ceil({0})", 1, {"0", NULL}, {NULL, NULL}},
    {"round", "round({0})", 1, {"0", NULL}, {NULL, NULL}},
    {"clamp_min", "max({0}, {c})", 1, {"[{0} >= {c}]", NULL}, {NULL, NULL}},
    {"clamp_max", "min({0}, {c})", 1, {"[{0} <= {c}]", NULL}, {NULL, NULL}},
    {"pow", "{0}^{1}", 1, {"{1}·{0}^({1} - 1)", "{0}^{1}·log({0})"}, {NULL, NULL}},
    {"atan2", "atan2({0}, {1})", 1, {"{1}/({0}^2 + {1}^2)", "-{0}/({0}^2 + {1}^2)"}, {NULL, NULL}},
    {"hypot", "hypot({0}, {1})", 1, {"{0}/hypot({0}, {1})", "{1}/hypot({0}, {1})"}, {NULL, NULL}},
    {"min", "min({0}, {1})", 1, {"[{0} < {1}] (1/2 at a tie)", "[{1} < {0}] (1/2 at a tie)"},
     {NULL, NULL}},
    {"max", "max({0}, {1})", 1, {"[{0} > {1}] (1/2 at a tie)", "[{1} > {0}] (1/2 at a tie)"},
     {NULL, NULL}},
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
    /* comparisons (1 or 0, derivative 0) and select */
    {"lt", "[{0} < {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"le", "[{0} <= {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"gt", "[{0} > {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"ge", "[{0} >= {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"eq", "[{0} == {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"ne", "[{0} != {1}]", 1, {"0", "0"}, {NULL, NULL}},
    {"select", "({0} != 0 ? {1} : {2})", 1, {"0", "[{0} != 0]", "[{0} == 0]"},
     {NULL, NULL, NULL}},
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
    char tname[AD_MAX_ARITY][72];  /* "dz/dv": the inputs' tangents      */
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
        } else if (key[0] == 'T' && key[1] >= '0' && key[1] <= '2' && !key[2]) {
            int k = key[1] - '0';
            ad__sb_puts(b, k < x->nin ? x->tname[k] : "?");
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
    (void)def;
    ad__node_vjp(x->t, x->node, seed, out_grad, res, NULL);
}

void ad__node_vjp(const ad_tape *t, ad_node nd, const double *seed, double *out_grad,
                  double *const *res, const double *const *vals)
{
    ad_tensor in[AD_MAX_ARITY];
    ad_node inn[AD_MAX_ARITY];
    const ad_opdef *def = ad_node_op(t, nd);
    const ad_shape shape = ad_node_shape(t, nd);
    int nin = ad_node_inputs(t, nd, inn);
    memcpy(out_grad, seed, ad_shape_size(shape) * sizeof *seed);
    for (int k = 0; k < nin; k++) {
        /* The vjp only reads values; the cast matches ad_tensor's type. */
        in[k].val = (double *)(vals && vals[k] ? vals[k] : ad_value(t, inn[k]));
        in[k].grad = res[k];
        in[k].shape = ad_node_shape(t, inn[k]);
        if (res[k])
            memset(res[k], 0, ad_shape_size(in[k].shape) * sizeof(double));
    }
    ad_call call;
    call.out.val = (double *)ad_value(t, nd);
    call.out.grad = out_grad;
    call.out.shape = shape;
    call.in = in;
    call.nin = nin;
    call.c = ad_node_const(t, nd);
    call.ud = def->ud;
    def->vjp(&call);
}

int ad__local_factor(ad__sb *b, const ad_tape *t, ad_node nd, int k)
{
    const ad_opdef *def = ad_node_op(t, nd);
    if (!def || !strcmp(def->name, "leaf"))
        return 0;
    ctx x;
    ctx_fill(&x, t, nd);
    const rule *r = rule_for(def, &x);
    if (!r || !r->elementwise || k < 0 || k >= x.nin || k >= 3 || !r->d[k] ||
        ad_shape_size(x.ins[k]) != ad_shape_size(x.shape))
        return 0;
    if (b)
        render(b, r->d[k], &x);
    return 1;
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

/* ---- the forward (tangent) sweep ---- */

/* Tangent rules of the ops whose reverse rule is shape-level (rule.full):
 * each operand's term, and the operand shapes it multiplies. The other
 * built-ins' terms come from their reverse rule's local derivative d:
 * dN/dv = sum_k d_k · dk/dv. */
typedef struct frule {
    const char *op;
    const char *term[3];
    const char *shapes[3];
} frule;

static const frule frules[] = {
    {"matvec", {"{T0} · {1}", "{0} · {T1}"}, {"({r0}x{c0})·({r1}x1)", "({r0}x{c0})·({r1}x1)"}},
    {"matvec_t", {"{T0}^T · {1}", "{0}^T · {T1}"},
     {"({c0}x{r0})·({r1}x1)", "({c0}x{r0})·({r1}x1)"}},
    {"matmul", {"{T0} · {1}", "{0} · {T1}"},
     {"({r0}x{c0})·({r1}x{c1})", "({r0}x{c0})·({r1}x{c1})"}},
    {"matmul_nt", {"{T0} · {1}^T", "{0} · {T1}^T"},
     {"({r0}x{c0})·({c1}x{r1})", "({r0}x{c0})·({c1}x{r1})"}},
    {"outer", {"{T0} · {1}^T", "{0} · {T1}^T"}, {"({r0}x1)·(1x{r1})", "({r0}x1)·(1x{r1})"}},
    {"transpose", {"{T0}^T"}, {NULL}},
    {"affine", {"{T0} · {1}", "{0} · {T1}", "{T2}"},
     {"({r0}x{c0})·({r1}x1)", "({r0}x{c0})·({r1}x1)", NULL}},
    {"affine/batch", {"{1} · {T0}^T", "{T1} · {0}^T", "{T2} (each row)"},
     {"({r1}x{c1})·({c0}x{r0})", "({r1}x{c1})·({c0}x{r0})", NULL}},
};

static const frule *find_frule(const rule *r)
{
    for (size_t i = 0; r && i < sizeof frules / sizeof frules[0]; i++)
        if (!strcmp(frules[i].op, r->op))
            return &frules[i];
    return NULL;
}

/* The descriptor's jvp, when a custom op has one (size covers it). */
static void (*opdef_jvp(const ad_opdef *def))(const ad_call *, const double *const *, double *)
{
    return def->size >= offsetof(ad_opdef, jvp) + sizeof def->jvp ? def->jvp : NULL;
}

/* 1 if the factor template names a tensor operand ("{0}" of a vector),
 * not a number or a scalar operand. */
static int names_tensor(const ctx *x, const char *f)
{
    for (int k = 0; k < x->nin && k < 2; k++) {
        const char key[4] = {'{', (char)('0' + k), '}', '\0'};
        if (strstr(f, key) && x->ins[k].ndim != 0)
            return 1;
    }
    return 0;
}

/* The factor of operand k's term when it is "factor · tangent" with a
 * factor worth printing as numbers (a tensor factor, or any factor of a
 * scalar node), else NULL. */
static const char *term_factor(const ctx *x, const rule *r, int k)
{
    if (!r || find_frule(r) || k >= 3 || !r->d[k] || !strcmp(r->d[k], "1") ||
        !strcmp(r->d[k], "-1"))
        return NULL;
    const char *f = r->d[k];
    const int tensor_factor = names_tensor(x, f);
    const int same = x->ins[k].ndim == x->shape.ndim &&
                     ad_shape_size(x->ins[k]) == ad_shape_size(x->shape);
    return x->shape.ndim == 0 || (r->elementwise && same && tensor_factor) ? f : NULL;
}

/* Operand k's term of dN/dv, e.g. "relu'(z) · dz/dv", "x · dW/dv",
 * "dW/dv · x" (with_shapes: and "   (3x4)·(4x1)"). */
static void tangent_term(ad__sb *b, const ctx *x, const rule *r, const ad_opdef *def, int k,
                         int with_shapes)
{
    const frule *fr = find_frule(r);
    const ad_shape is = x->ins[k];
    const size_t isz = ad_shape_size(is), nsz = ad_shape_size(x->shape);
    if (fr) {
        render(b, k < 3 && fr->term[k] ? fr->term[k] : "?", x);
        if (with_shapes && k < 3 && fr->shapes[k]) {
            ad__sb_puts(b, "   ");
            render(b, fr->shapes[k], x);
        }
        return;
    }
    const char *f = r && k < 3 ? r->d[k] : NULL;
    if (!f) { /* a custom op, or a built-in without a rule here */
        ad__sb_printf(b, "∂%s/∂%s · %s", def->name, x->inname[k], x->tname[k]);
        return;
    }
    if (!strcmp(f, "-1")) { /* joined with " - " by tangent_node */
        ad__sb_printf(b, "-%s%s", x->tname[k], isz < nsz ? " (broadcast)" : "");
        return;
    }
    if (!strcmp(f, "1")) {
        if (x->shape.ndim == 0 && isz > 1)
            ad__sb_printf(b, "sum(%s)", x->tname[k]);
        else
            ad__sb_printf(b, "%s%s", x->tname[k], isz < nsz ? " (broadcast)" : "");
        return;
    }
    const int tensor_factor = names_tensor(x, f);
    const int same = is.ndim == x->shape.ndim && isz == nsz;
    /* · for a number, a scalar node (a dot product) or a scalar operand;
     * ⊙ for an elementwise product of tensors */
    const char *sep = x->shape.ndim != 0 && r->elementwise && tensor_factor && same ? "⊙" : "·";
    render(b, f, x);
    ad__sb_printf(b, " %s %s", sep, x->tname[k]);
}

/* Each operand's term as numbers, into con[k] (nsz each), and the local
 * derivative into loc[k] (isz each, from the vjp with seed 1; NULL when
 * not wanted). A custom op's terms come from its jvp; a built-in's from
 * its vjp: row i of operand k's Jacobian is the vjp of the unit seed e_i,
 * and the term's element i is that row times the operand's tangent. */
static void tangent_numbers(tracer *tr, const ctx *x, const ad_opdef *def, double *const *con,
                            double *const *loc, double *og, double *seed, double *zeros,
                            double *const *res)
{
    const size_t nsz = ad_shape_size(x->shape);
    const double *tin[AD_MAX_ARITY];
    for (int k = 0; k < x->nin; k++)
        tin[k] = ad_tangent(tr->t, x->in[k]);
    void (*jvp)(const ad_call *, const double *const *, double *) = opdef_jvp(def);
    if (jvp && def != ad_registry_find(NULL, def->name)) {
        ad_tensor in[AD_MAX_ARITY];
        const double *one[AD_MAX_ARITY];
        for (int k = 0; k < x->nin; k++) {
            in[k].val = (double *)ad_value(x->t, x->in[k]);
            in[k].grad = NULL;
            in[k].shape = x->ins[k];
        }
        ad_call call;
        memset(og, 0, nsz * sizeof *og);
        call.out.val = (double *)ad_value(x->t, x->node);
        call.out.grad = og;
        call.out.shape = x->shape;
        call.in = in;
        call.nin = x->nin;
        call.c = x->c;
        call.ud = def->ud;
        for (int k = 0; k < x->nin; k++) {
            for (int j = 0; j < x->nin; j++)
                one[j] = j == k ? tin[j] : zeros;
            jvp(&call, one, con[k]);
        }
        return;
    }
    /* an operand whose tangent is 0 adds exactly 0: its vjp is not asked
     * (index operands of take, slice, ... are never handed a gradient;
     * local derivatives are only wanted of the ops in the rule table) */
    double *want[AD_MAX_ARITY], *want_loc[AD_MAX_ARITY];
    int any = 0, any_local = 0;
    for (int k = 0; k < x->nin; k++) {
        const size_t isz = ad_shape_size(x->ins[k]);
        int nz = 0;
        for (size_t j = 0; j < isz && !nz; j++)
            nz = tin[k][j] != 0.0;
        want[k] = nz ? res[k] : NULL;
        want_loc[k] = loc[k];
        any |= nz;
        any_local |= want_loc[k] != NULL;
        if (!nz)
            memset(con[k], 0, nsz * sizeof *con[k]);
    }
    for (size_t i = 0; i < nsz && any; i++) {
        memset(seed, 0, nsz * sizeof *seed);
        seed[i] = 1.0;
        run_vjp(x, def, seed, og, want);
        for (int k = 0; k < x->nin; k++) {
            if (!want[k])
                continue;
            double sum = 0;
            for (size_t j = 0, isz = ad_shape_size(x->ins[k]); j < isz; j++)
                sum += res[k][j] * tin[k][j];
            con[k][i] = sum;
        }
    }
    if (any_local) {
        for (size_t i = 0; i < nsz; i++)
            seed[i] = 1.0;
        run_vjp(x, def, seed, og, want_loc);
    }
}

static int tangent_node(tracer *tr, ad_node nd)
{
    const ad_tape *t = tr->t;
    ad__sb *b = &tr->line;
    const ad_opdef *def = ad_node_op(t, nd);
    char nb[32], tb[72], sb[32];
    ctx x;
    ctx_fill(&x, t, nd);
    x.name = ad__node_label(t, nd, nb, sizeof nb);
    snprintf(tb, sizeof tb, "d%s/dv", x.name);
    for (int k = 0; k < x.nin; k++)
        snprintf(x.tname[k], sizeof x.tname[k], "d%s/dv", x.inname[k]);
    const size_t nsz = ad_shape_size(x.shape);
    const double *val = ad_value(t, nd), *tan = ad_tangent(t, nd);
    const int leaf = !strcmp(def->name, "leaf");
    const int small = nsz <= tr->maxv;

    ad__sb_printf(b, "\n%s%s", x.name, leaf ? ": " : " = ");
    ad__node_expr(b, t, nd);
    if (leaf)
        ad__sb_printf(b, ", %s", ad__shape_name(x.shape, sb, sizeof sb));
    if (small) {
        ad__sb_puts(b, " = ");
        put_values(tr, val, x.shape, 0);
    } else if (!leaf) {
        ad__sb_printf(b, "   [%s]", ad__shape_name(x.shape, sb, sizeof sb));
    }
    ad__sb_puts(b, "\n");
    if (leaf) {
        int seeded = 0;
        for (size_t i = 0; i < nsz; i++)
            seeded |= tan[i] != 0.0;
        if (small) {
            ad__sb_printf(b, "  %s = ", tb);
            put_values(tr, tan, x.shape, 0);
        } else {
            ad__sb_printf(b, "  %s: %s, not shown", tb, ad__shape_name(x.shape, sb, sizeof sb));
        }
        ad__sb_puts(b, seeded ? "   (seed)\n" : "\n");
        flush(tr);
        return b->oom ? AD_ENOMEM : AD_OK;
    }

    const rule *r = rule_for(def, &x);
    double *con[AD_MAX_ARITY] = {NULL}, *loc[AD_MAX_ARITY] = {NULL}, *res[AD_MAX_ARITY] = {NULL};
    if (small) {
        size_t maxin = 1, need = 2 * nsz;
        for (int k = 0; k < x.nin; k++) {
            const size_t isz = ad_shape_size(x.ins[k]);
            maxin = isz > maxin ? isz : maxin;
            need += 2 * isz + nsz;
        }
        need += maxin;
        if (scratch(tr, need) != AD_OK)
            return AD_ENOMEM;
        double *p = tr->scratch, *og = p, *seed = p + nsz, *zeros = p + 2 * nsz;
        p += 2 * nsz + maxin;
        memset(zeros, 0, maxin * sizeof *zeros);
        for (int k = 0; k < x.nin; k++) {
            const size_t isz = ad_shape_size(x.ins[k]);
            res[k] = p;
            loc[k] = term_factor(&x, r, k) && isz <= tr->maxv ? p + isz : NULL;
            con[k] = p + 2 * isz;
            p += 2 * isz + nsz;
        }
        tangent_numbers(tr, &x, def, con, loc, og, seed, zeros, res);
    }
    /* dN/dv = term + term ... = the tape's tangent */
    ad__sb_printf(b, "  %s = ", tb);
    for (int k = 0; k < x.nin; k++) {
        if (k == 0) {
            tangent_term(b, &x, r, def, k, x.nin == 1);
            continue;
        }
        ad__sb t1;
        ad__sb_init(&t1, tr->mem);
        tangent_term(&t1, &x, r, def, k, 0);
        const char *tt = t1.buf ? t1.buf : "";
        if (tt[0] == '-')
            ad__sb_printf(b, " - %s", tt + 1);
        else
            ad__sb_printf(b, " + %s", tt);
        if (t1.oom)
            b->oom = 1;
        ad__sb_free(&t1);
    }
    if (x.nin == 1 && small && loc[0]) {
        ad__sb_puts(b, " = ");
        put_values(tr, loc[0], x.ins[0], 0);
        ad__sb_printf(b, " %s ", x.shape.ndim != 0 ? "⊙" : "·");
        put_values(tr, ad_tangent(t, x.in[0]), x.ins[0], 1);
    }
    if (small) {
        ad__sb_puts(b, " = ");
        put_values(tr, tan, x.shape, 0);
    } else {
        ad__sb_printf(b, "   [%s]", ad__shape_name(x.shape, sb, sizeof sb));
    }
    ad__sb_puts(b, "\n");
    /* each term on its own line when there are several */
    for (int k = 0; x.nin > 1 && k < x.nin; k++) {
        ad__sb_puts(b, "    ");
        tangent_term(b, &x, r, def, k, 1);
        if (!small) {
            ad__sb_puts(b, "\n");
            continue;
        }
        if (loc[k]) {
            ad__sb_puts(b, " = ");
            put_values(tr, loc[k], x.ins[k], 0);
            ad__sb_printf(b, " %s ", x.shape.ndim != 0 ? "⊙" : "·");
            put_values(tr, ad_tangent(t, x.in[k]), x.ins[k], 1);
        }
        ad__sb_puts(b, " = ");
        put_values(tr, con[k], x.shape, 0);
        ad__sb_puts(b, "\n");
    }
    flush(tr);
    return b->oom ? AD_ENOMEM : AD_OK;
}

int ad_trace_tangent(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                     const ad_print_opts *o)
{
    if (!t || !write)
        return ad__print_fail(o, AD_EMISUSE, "trace_tangent: %s is NULL", t ? "write" : "tape");
    if (ad_tape_status(t) != AD_OK)
        return ad__print_fail(o, AD_EMISUSE, "trace_tangent: the tape holds an error: %s",
                              ad_tape_errmsg(t));
    size_t oi = ad_node_index(t, output);
    if (!oi)
        return ad__print_fail(o, AD_EMISUSE,
                              "trace_tangent: the output is nil, stale or of another tape");
    char jb[32];
    const char *J = ad__node_label(t, output, jb, sizeof jb);
    if (!ad_tangent(t, output))
        return ad__print_fail(o, AD_EMISUSE,
                              "trace_tangent: no forward sweep of this recording: call "
                              "ad_forward (after ad_tangents and ad_set_tangent) or ad_jvp "
                              "before ad_trace_tangent");

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
    int st = AD_OK;
    if (!tr.mark) {
        st = ad__print_fail(o, AD_ENOMEM, "trace_tangent: out of memory for %zu nodes", tr.len);
        goto done;
    }
    memset(tr.mark, 0, tr.len);
    /* the nodes output depends on, constants included: a tangent may be
     * seeded on any leaf */
    tr.mark[oi] = 1;
    size_t steps = 0;
    for (size_t i = oi; i > 0; i--) {
        if (!tr.mark[i])
            continue;
        steps++;
        ad_node nd = ad_tape_node(t, i), in[AD_MAX_ARITY];
        int nin = ad_node_inputs(t, nd, in);
        for (int k = 0; k < nin; k++)
            tr.mark[ad_node_index(t, in[k])] = 1;
    }
    ad__sb_printf(&tr.line, "forward sweep to %s: %zu steps, tangents dN/dv along the first "
                            "direction\n",
                  J, steps);
    flush(&tr);
    for (size_t i = 1; i <= oi && st == AD_OK; i++)
        if (tr.mark[i])
            st = tangent_node(&tr, ad_tape_node(t, i));
    if (st == AD_OK && tr.line.oom)
        st = AD_ENOMEM;
    if (st == AD_ENOMEM)
        ad__print_fail(o, AD_ENOMEM, "trace_tangent: out of memory");
done:
    ad__cmem_free(&tr.mem, tr.mark, tr.len * sizeof *tr.mark);
    ad__cmem_free(&tr.mem, tr.scratch, tr.scratch_cap * sizeof *tr.scratch);
    ad__sb_free(&tr.line);
    return st;
}

int ad_trace_tangent_fprint(FILE *f, const ad_tape *t, ad_node output, const ad_print_opts *o)
{
    if (!f)
        return ad__print_fail(o, AD_EMISUSE, "trace_tangent: the stream is NULL");
    return ad_trace_tangent(t, output, ad__file_write, f, o);
}
