/* eval.c -- which names are inputs, and the recording of a syntax tree on a
 * tape with the public API of autodiff.
 *
 * Operators become ops: + - * / on nodes are ad_add ad_sub ad_mul ad_div
 * (a number operand gives ad_add_const, ad_scale, or a division by a
 * scalar constant), x^2 is ad_square, x^p (p a number) ad_pow_const, x^y
 * exp(y log x); '@' is ad_matvec, ad_matmul, ad_dot or ad_matvec_t by
 * the operands' shapes; a > b is ad_step(a - b), a >= b 1 - step(b - a),
 * a == b 1 - |sign(a - b)|, a != b |sign(a - b)| (derivative 0 everywhere,
 * like the indicator functions of the notes). A literal of numbers is one
 * constant; one holding names is the sum of its elements times unit
 * vectors (so it is differentiable). */
#include "adgrad.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Scopes                                                              */
/* ------------------------------------------------------------------ */

int adgrad_scope_add(adgrad_scope *s, const char *name, ad_node node)
{
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        if (cap > INT32_MAX / 2)
            return 1;
        const char **nm = realloc(s->name, (size_t)cap * sizeof *nm);
        if (!nm)
            return 1;
        s->name = nm;
        ad_node *nd = realloc(s->node, (size_t)cap * sizeof *nd);
        if (!nd)
            return 1;
        s->node = nd;
        s->cap = cap;
    }
    s->name[s->n] = name;
    s->node[s->n] = node;
    s->n++;
    return 0;
}

const ad_node *adgrad_scope_find(const adgrad_scope *s, const char *name)
{
    for (int i = s ? s->n - 1 : -1; i >= 0; i--)
        if (!strcmp(s->name[i], name))
            return &s->node[i];
    return NULL;
}

void adgrad_scope_free(adgrad_scope *s)
{
    free(s->name);
    free(s->node);
    s->name = NULL;
    s->node = NULL;
    s->n = s->cap = 0;
}

/* ------------------------------------------------------------------ */
/* Recording                                                           */
/* ------------------------------------------------------------------ */

typedef struct ev {
    ad_tape *t;
    const adgrad_program *p;
    const adgrad_scope *s;
    int name_nodes;
    adgrad_error *err;
    int failed;
} ev;

static ad_node rec(ev *v, const adgrad_expr *e);

static ad_node fail(ev *v, const adgrad_expr *e, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static ad_node fail(ev *v, const adgrad_expr *e, const char *fmt, ...)
{
    if (!v->failed && v->err) {
        va_list ap;
        va_start(ap, fmt);
        v->err->line = e->line;
        v->err->col = e->col;
        v->err->note[0] = '\0';
        vsnprintf(v->err->msg, sizeof v->err->msg, fmt, ap);
        va_end(ap);
    }
    v->failed = 1;
    return ad_nil();
}

/* The source text of e, whitespace collapsed, at most cap - 1 bytes:
 * 1, or 0 when it is longer or holds a comment. */
static int source(const ev *v, const adgrad_expr *e, char *buf, size_t cap)
{
    size_t n = 0;
    int space = 0;
    for (size_t i = e->begin; i < e->end && i < v->p->len; i++) {
        char c = v->p->text[i];
        if (c == '#')
            return 0;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            space = n > 0;
            continue;
        }
        if (n + (size_t)space + 1 >= cap)
            return 0;
        if (space)
            buf[n++] = ' ';
        space = 0;
        buf[n++] = c;
    }
    buf[n] = '\0';
    return n > 0;
}

#define shape_text adgrad_shape_words

/* After recording the op(s) of e from the operands in[0..n-1]: on
 * failure, the tape's message at e's place and a note naming the
 * operands; on success, names the node after its source text. */
static ad_node done(ev *v, const adgrad_expr *e, ad_node r, const ad_node *in, int n)
{
    if (v->failed)
        return ad_nil();
    if (ad_node_is_nil(r)) {
        const char *m = ad_tape_errmsg(v->t);
        fail(v, e, "%s", m && *m ? m : ad_strstatus(ad_tape_status(v->t)));
        if (v->err && n > 0) {
            size_t len = 0;
            len += (size_t)snprintf(v->err->note, sizeof v->err->note, "operands: ");
            int shown = 0;
            for (int i = 0; i < n && len < sizeof v->err->note; i++) {
                char src[48], sh[48];
                if (ad_node_is_nil(in[i]))
                    continue; /* a number argument */
                if (!source(v, e->arg[i], src, sizeof src))
                    snprintf(src, sizeof src, "operand %d", i + 1);
                shape_text(sh, sizeof sh, ad_node_shape(v->t, in[i]));
                len += (size_t)snprintf(v->err->note + len, sizeof v->err->note - len, "%s%s is %s",
                                        shown++ ? ", " : "", src, sh);
            }
            if (!shown)
                v->err->note[0] = '\0';
        }
        return ad_nil();
    }
    if (v->name_nodes && !ad_node_name(v->t, r)) {
        char src[48], name[52];
        if (source(v, e, src + 1, sizeof src - 2)) {
            /* "(yhat - y)", "(dot(W, x))": the trace writes dJ/d<name> */
            const char *nm = src + 1;
            if ((e->kind == AGX_BIN || e->kind == AGX_NEG || e->kind == AGX_CALL) && !e->parens) {
                src[0] = '(';
                strcat(src, ")");
                nm = src;
            }
            snprintf(name, sizeof name, "%s", nm);
            (void)ad_set_name(v->t, r, name); /* decoration: a failure changes nothing */
        }
    }
    return r;
}

static int is_vec(ad_shape s) { return s.ndim == 1; }
static int is_mat(ad_shape s) { return s.ndim == 2; }

/* a - b with number operands folded: the node and whether it was made. */
static ad_node minus(ev *v, const adgrad_expr *a, const adgrad_expr *b, ad_node *ab)
{
    double ca, cb;
    if (adgrad_const_value(b, &cb)) {
        ab[0] = rec(v, a);
        ab[1] = ad_nil();
        if (v->failed)
            return ad_nil();
        return cb == 0 ? ab[0] : ad_add_const(v->t, ab[0], -cb);
    }
    if (adgrad_const_value(a, &ca)) {
        ab[1] = rec(v, b);
        ab[0] = ad_nil();
        if (v->failed)
            return ad_nil();
        ad_node nb = ad_neg(v->t, ab[1]);
        return ca == 0 ? nb : ad_add_const(v->t, nb, ca);
    }
    ab[0] = rec(v, a);
    if (v->failed)
        return ad_nil();
    ab[1] = rec(v, b);
    if (v->failed)
        return ad_nil();
    return ad_sub(v->t, ab[0], ab[1]);
}

/* The operands recorded (nil for a folded number) for the error note. */
static int operands(ad_node *ab, ad_node *out)
{
    int n = 0;
    for (int i = 0; i < 2; i++)
        if (!ad_node_is_nil(ab[i]))
            out[n++] = ab[i];
    return n == 2 ? 2 : 0;
}

/* Products with a transposed vector, as the notes write them: u·vᵀ is
 * outer(u, v), uᵀ·v is dot(u, v), uᵀ·M is the row u^T M (as a vector:
 * matvec_t(M, u)), and Wᵀ·v is matvec_t(W, v) (one node, not two).
 * Returns nil, having recorded nothing, when the form is not one of these
 * (the operands are then recorded as usual: a transposed matrix, or an
 * error for a transposed vector elsewhere). */
static ad_node transposed_product(ev *v, const adgrad_expr *e)
{
    ad_tape *t = v->t;
    const adgrad_expr *ea = e->arg[0], *eb = e->arg[1];
    const int ta = ea->kind == AGX_T, tb = eb->kind == AGX_T;
    if (ta && tb)
        return ad_nil();
    ad_node a = rec(v, ta ? ea->arg[0] : ea);
    if (v->failed)
        return ad_nil();
    ad_node b = rec(v, tb ? eb->arg[0] : eb);
    if (v->failed)
        return ad_nil();
    const ad_shape sa = ad_node_shape(t, a), sb = ad_node_shape(t, b);
    ad_node in[2] = {a, b}, r;
    if (tb && sa.ndim == 1 && sb.ndim == 1)
        r = ad_outer(t, a, b);
    else if (ta && sa.ndim == 1 && sb.ndim == 1)
        r = ad_dot(t, a, b);
    else if (ta && sa.ndim == 1 && sb.ndim == 2)
        r = ad_matvec_t(t, b, a);
    else if (ta && sa.ndim == 2 && sb.ndim == 1)
        r = ad_matvec_t(t, a, b);
    else if (ta && sa.ndim == 2 && sb.ndim == 2)
        r = ad_matmul(t, ad_transpose(t, a), b);
    else if (tb && sa.ndim == 2 && sb.ndim == 2)
        r = ad_matmul_nt(t, a, b);
    else if (sa.ndim == 0 || sb.ndim == 0)
        r = ad_mul(t, a, b); /* a scalar: transposing it changes nothing */
    else {
        char s1[48], s2[48];
        shape_text(s1, sizeof s1, sa);
        shape_text(s2, sizeof s2, sb);
        return fail(v, e, "no product of %s%s and %s%s: a transposed vector is a row (u·vᵀ, uᵀ·v, "
                          "uᵀ·M)",
                    s1, ta ? " transposed" : "", s2, tb ? " transposed" : "");
    }
    return done(v, e, r, in, 2);
}

static ad_node binary(ev *v, const adgrad_expr *e)
{
    ad_tape *t = v->t;
    const adgrad_expr *ea = e->arg[0], *eb = e->arg[1];
    double ca, cb;
    const int a_const = adgrad_const_value(ea, &ca), b_const = adgrad_const_value(eb, &cb);
    ad_node a = ad_nil(), b = ad_nil(), r = ad_nil();
    ad_node ab[2] = {ad_nil(), ad_nil()}, ops[2];

    switch (e->op) {
    case '-':
        r = minus(v, ea, eb, ab);
        return done(v, e, r, ops, operands(ab, ops));
    case '>': case '<': case AGB_GE: case AGB_LE: case AGB_EQ: case AGB_NE: {
        /* the difference in the order that makes the op a step of it */
        const int flip = e->op == '<' || e->op == AGB_GE;
        ad_node d = flip ? minus(v, eb, ea, ab) : minus(v, ea, eb, ab);
        if (v->failed)
            return ad_nil();
        if (flip) { /* the note names the operands in the order written */
            ad_node tmp = ab[0];
            ab[0] = ab[1];
            ab[1] = tmp;
        }
        if (ad_node_is_nil(d))
            return done(v, e, d, ops, operands(ab, ops));
        if (e->op == '>' || e->op == '<')
            r = ad_step(t, d);
        else if (e->op == AGB_GE || e->op == AGB_LE)
            r = ad_add_const(t, ad_neg(t, ad_step(t, d)), 1.0);
        else if (e->op == AGB_EQ)
            r = ad_add_const(t, ad_neg(t, ad_abs(t, ad_sign(t, d))), 1.0);
        else
            r = ad_abs(t, ad_sign(t, d));
        return done(v, e, r, ops, operands(ab, ops));
    }
    default:
        break;
    }

    /* + * / ^ @ with folded numbers */
    if (b_const && e->op != '@') { /* a number operand: the middle dot is '*' */
        a = rec(v, ea);
        if (v->failed)
            return ad_nil();
        switch (e->op) {
        case '+': r = ad_add_const(t, a, cb); break;
        case '*': case AGB_CDOT: r = ad_scale(t, a, cb); break;
        case '/': r = ad_div(t, a, ad_scalar(t, cb)); break;
        case '^': r = cb == 2 ? ad_square(t, a) : ad_pow_const(t, a, cb); break;
        }
        return done(v, e, r, &a, 0);
    }
    if (a_const && (e->op == '+' || e->op == '*' || e->op == AGB_CDOT || e->op == '/')) {
        b = rec(v, eb);
        if (v->failed)
            return ad_nil();
        switch (e->op) {
        case '+': r = ad_add_const(t, b, ca); break;
        case '*': case AGB_CDOT: r = ad_scale(t, b, ca); break;
        case '/': r = ad_div(t, ad_scalar(t, ca), b); break;
        }
        return done(v, e, r, &b, 0);
    }
    if ((e->op == '@' || e->op == AGB_CDOT) && (ea->kind == AGX_T || eb->kind == AGX_T)) {
        r = transposed_product(v, e);
        if (v->failed || !ad_node_is_nil(r))
            return r;
    }
    a = rec(v, ea);
    if (v->failed)
        return ad_nil();
    b = rec(v, eb);
    if (v->failed)
        return ad_nil();
    ad_node in[2] = {a, b};
    const ad_shape sa = ad_node_shape(t, a), sb = ad_node_shape(t, b);
    int op = e->op;
    if (op == AGB_CDOT) /* the middle dot: a product with a scalar, else the matrix product */
        op = sa.ndim == 0 || sb.ndim == 0 ? '*' : '@';
    switch (op) {
    case '+':
        /* a vector plus a matrix adds it to every row, in either order */
        r = is_vec(sa) && is_mat(sb) ? ad_add(t, b, a) : ad_add(t, a, b);
        break;
    case '*': r = ad_mul(t, a, b); break;
    case '/': r = ad_div(t, a, b); break;
    case '^': r = ad_exp(t, ad_mul(t, b, ad_log(t, a))); break;
    case '@':
        if (is_mat(sa) && is_vec(sb))
            r = ad_matvec(t, a, b);
        else if (is_mat(sa) && is_mat(sb))
            r = ad_matmul(t, a, b);
        else if (is_vec(sa) && is_vec(sb))
            r = ad_dot(t, a, b);
        else if (is_vec(sa) && is_mat(sb))
            r = ad_matvec_t(t, b, a);
        else {
            char s1[48], s2[48];
            shape_text(s1, sizeof s1, sa);
            shape_text(s2, sizeof s2, sb);
            return fail(v, e, "'@' multiplies matrices and vectors, but its operands are %s and %s: "
                              "use '*' with a scalar", s1, s2);
        }
        break;
    default:
        return fail(v, e, "unknown operator");
    }
    return done(v, e, r, in, 2);
}

static ad_node call(ev *v, const adgrad_expr *e)
{
    const int n = e->narg;
    ad_node *note = calloc((size_t)n + 1, sizeof *note); /* each argument's node, for errors */
    ad_node *many = NULL;
    uint32_t *idx = NULL;
    adgrad_args a;
    memset(&a, 0, sizeof a);
    const int variadic = e->fn && strchr(e->fn->spec, 'N') != NULL;
    if (!note || (variadic && !(many = calloc((size_t)n + 1, sizeof *many)))) {
        free(note);
        return fail(v, e, "out of memory");
    }
    for (int i = 0; i < n && !v->failed; i++) {
        const adgrad_expr *x = e->arg[i];
        const int kind = e->fn ? adgrad_func_kind(e->fn, i) : i < e->def->arity ? 'n' : 'd';
        double c = 0;
        note[i] = ad_nil();
        if (kind == 'n') {
            ad_node r = rec(v, x);
            if (v->failed)
                break;
            note[i] = r;
            if (variadic && e->fn->spec[strlen(e->fn->spec) - 1] == 'N' &&
                i >= (int)strlen(e->fn->spec) - 1)
                many[a.nmany++] = r;
            else if (a.nnode < (int)(sizeof a.node / sizeof a.node[0]))
                a.node[a.nnode++] = r;
            else
                fail(v, x, "%s: too many operands", e->name);
        } else if (kind == 'I') {
            ad_shape s;
            if (!adgrad_literal(x, &s, NULL)) {
                fail(v, x, "argument %d of %s must be a list of whole numbers", i + 1, e->name);
                break;
            }
            size_t sz = ad_shape_size(s);
            double *d = malloc((sz ? sz : 1) * sizeof *d);
            free(idx);
            idx = malloc((sz ? sz : 1) * sizeof *idx);
            if (!d || !idx) {
                free(d);
                fail(v, x, "out of memory");
                break;
            }
            adgrad_literal(x, &s, d);
            for (size_t k = 0; k < sz; k++)
                idx[k] = (uint32_t)d[k]; /* checked whole and in range by the parser */
            free(d);
            a.idx = idx;
            a.nidx = sz;
        } else if (!adgrad_const_value(x, &c)) {
            fail(v, x, "argument %d of %s must be a number", i + 1, e->name);
        } else if (a.nnum < (int)(sizeof a.num / sizeof a.num[0])) {
            a.num[a.nnum++] = c;
        }
    }
    ad_node r = ad_nil();
    if (!v->failed) {
        a.many = many;
        if (!e->fn)
            r = ad_apply(v->t, e->def, a.node, a.nnode, a.nnum ? a.num[0] : 0.0);
        else if (e->fn->f1)
            r = e->fn->f1(v->t, a.node[0]);
        else if (e->fn->f2)
            r = e->fn->f2(v->t, a.node[0], a.node[1]);
        else if (e->fn->f3)
            r = e->fn->f3(v->t, a.node[0], a.node[1], a.node[2]);
        else if (e->fn->f1c)
            r = e->fn->f1c(v->t, a.node[0], a.num[0]);
        else
            r = e->fn->call(v->t, &a);
        r = done(v, e, r, note, n);
    }
    free(note);
    free(many);
    free(idx);
    return v->failed ? ad_nil() : r;
}

/* A literal: one constant when it holds only numbers; else the sum of its
 * elements times unit vectors (scalars: a vector) or their outer products
 * with unit vectors (vectors: the rows of a matrix). */
static ad_node literal(ev *v, const adgrad_expr *e)
{
    ad_tape *t = v->t;
    ad_shape s;
    if (adgrad_literal(e, &s, NULL)) {
        double small[64], *vals = ad_shape_size(s) <= 64 ? small : malloc(ad_shape_size(s) * sizeof *vals);
        if (!vals)
            return fail(v, e, "out of memory");
        adgrad_literal(e, &s, vals);
        ad_node r = ad_constant(t, s, vals);
        if (vals != small)
            free(vals);
        return done(v, e, r, NULL, 0);
    }
    const int n = e->narg;
    if (n > ADGRAD_MAX_LIT_EXPR)
        return fail(v, e, "a literal holding names or expressions has at most %d elements (this one has %d)",
                    ADGRAD_MAX_LIT_EXPR, n);
    ad_node acc = ad_nil();
    ad_shape first = {0, 0, -1};
    double *unit = calloc((size_t)n, sizeof *unit);
    if (!unit)
        return fail(v, e, "out of memory");
    for (int i = 0; i < n && !v->failed; i++) {
        ad_node x = rec(v, e->arg[i]);
        if (v->failed)
            break;
        ad_shape sx = ad_node_shape(t, x);
        if (i == 0) {
            first = sx;
            if (sx.ndim == 2 || (sx.ndim == 1 && (size_t)n * (size_t)n * sx.rows > ((size_t)1 << 22))) {
                char sh[48];
                shape_text(sh, sizeof sh, sx);
                fail(v, e->arg[i], "the elements of a literal must be scalars (a vector) or vectors "
                                   "(the rows of a matrix), not %s", sh);
                break;
            }
        } else if (sx.ndim != first.ndim || sx.rows != first.rows) {
            char s0[48], s1[48];
            shape_text(s0, sizeof s0, first);
            shape_text(s1, sizeof s1, sx);
            fail(v, e->arg[i], "element %d of the literal is %s but element 1 is %s; they must agree",
                 i + 1, s1, s0);
            break;
        }
        memset(unit, 0, (size_t)n * sizeof *unit);
        unit[i] = 1;
        ad_node u = ad_constant(t, ad_shape_vec((uint32_t)n), unit);
        ad_node term = first.ndim == 0 ? ad_mul(t, x, u) : ad_outer(t, u, x);
        acc = i == 0 ? term : ad_add(t, acc, term);
        if (ad_node_is_nil(acc)) {
            done(v, e, acc, NULL, 0);
            break;
        }
    }
    free(unit);
    if (v->failed)
        return ad_nil();
    return done(v, e, acc, NULL, 0);
}

static ad_node rec(ev *v, const adgrad_expr *e)
{
    if (v->failed)
        return ad_nil();
    double c;
    switch (e->kind) {
    case AGX_NUM:
        return done(v, e, ad_scalar(v->t, e->num), NULL, 0);
    case AGX_NAME: {
        const ad_node *n = adgrad_scope_find(v->s, e->name);
        if (n)
            return *n;
        const char *s = v->s ? adgrad_suggest(e->name, v->s->name, (size_t)v->s->n) : NULL;
        if (s)
            return fail(v, e, "unknown name '%s' (did you mean '%s'?)", e->name, s);
        return fail(v, e, "unknown name '%s'", e->name);
    }
    case AGX_NEG: {
        if (adgrad_const_value(e, &c))
            return done(v, e, ad_scalar(v->t, c), NULL, 0);
        ad_node a = rec(v, e->arg[0]);
        return v->failed ? ad_nil() : done(v, e, ad_neg(v->t, a), &a, 1);
    }
    case AGX_BIN:
        if (adgrad_const_value(e, &c))
            return done(v, e, ad_scalar(v->t, c), NULL, 0);
        return binary(v, e);
    case AGX_CALL:
        return call(v, e);
    case AGX_LIST:
        return literal(v, e);
    case AGX_T: {
        ad_node a = rec(v, e->arg[0]);
        if (v->failed)
            return ad_nil();
        ad_shape s = ad_node_shape(v->t, a);
        if (s.ndim == 0)
            return a;
        if (s.ndim == 1)
            return fail(v, e, "a transposed vector is a row: use it in a product, as in u·vᵀ (the "
                              "outer product) or uᵀ·v (the dot product)");
        return done(v, e, ad_transpose(v->t, a), &a, 1);
    }
    default:
        return fail(v, e, "unknown expression");
    }
}

ad_node adgrad_record_expr(ad_tape *t, const adgrad_program *p, const adgrad_expr *e,
                           const adgrad_scope *scope, int name_nodes, adgrad_error *err)
{
    ev v = {t, p, scope, name_nodes, err, 0};
    if (!t || !p || !e) {
        adgrad_fail(err, 0, 0, "out of memory");
        return ad_nil();
    }
    ad_node r = rec(&v, e);
    return v.failed ? ad_nil() : r;
}

/* ------------------------------------------------------------------ */
/* The model                                                           */
/* ------------------------------------------------------------------ */

int adgrad_model_input(const adgrad_model *m, const char *name)
{
    for (int i = 0; i < m->nin; i++)
        if (!strcmp(m->in[i].name, name))
            return i;
    return -1;
}

int adgrad_model_stmt(const adgrad_model *m, const char *name)
{
    for (int i = 0; i < m->prog->nstmt; i++)
        if (m->label[i] && !strcmp(m->label[i], name))
            return i;
    return -1;
}

static int add_input(adgrad_model *m, int *cap, const char *name, int stmt, int line, int col)
{
    if (m->nin == *cap) {
        int c = *cap ? *cap * 2 : 8;
        if (c > INT32_MAX / 2)
            return 1;
        adgrad_input *in = realloc(m->in, (size_t)c * sizeof *in);
        if (!in)
            return 1;
        m->in = in;
        *cap = c;
    }
    adgrad_input *x = &m->in[m->nin++];
    memset(x, 0, sizeof *x);
    x->name = name;
    x->stmt = stmt;
    x->line = line;
    x->col = col;
    return 0;
}

/* The statement computing name (not an input statement), or -1. */
static int computed(const adgrad_model *m, const char *name)
{
    for (int i = 0; i < m->prog->nstmt; i++)
        if (!m->is_input[i] && m->prog->stmt[i].name && !strcmp(m->prog->stmt[i].name, name))
            return i;
    return -1;
}

typedef struct walk {
    adgrad_model *m;
    int cap;
    int stmt;
    adgrad_error *err;
} walk;

static int walk_names(walk *w, const adgrad_expr *e)
{
    if (e->kind == AGX_NAME) {
        int j = computed(w->m, e->name);
        if (j >= 0 && j >= w->stmt) {
            if (j == w->stmt)
                return adgrad_fail(w->err, e->line, e->col, "'%s' is used in its own definition",
                                   e->name);
            return adgrad_fail(w->err, e->line, e->col,
                               "'%s' is used before its definition on line %d", e->name,
                               w->m->prog->stmt[j].line);
        }
        if (j < 0 && adgrad_model_input(w->m, e->name) < 0 &&
            add_input(w->m, &w->cap, e->name, -1, e->line, e->col))
            return adgrad_fail(w->err, 0, 0, "out of memory");
        return 0;
    }
    for (int i = 0; i < e->narg; i++)
        if (walk_names(w, e->arg[i]))
            return 1;
    return 0;
}

static int referenced(const adgrad_expr *e, const char *name)
{
    if (e->kind == AGX_NAME)
        return !strcmp(e->name, name);
    for (int i = 0; i < e->narg; i++)
        if (referenced(e->arg[i], name))
            return 1;
    return 0;
}

/* An automatic label that no statement or name of the text uses. */
static const char *fresh_label(adgrad_model *m, const char *base)
{
    char buf[ADGRAD_MAX_NAME + 8];
    snprintf(buf, sizeof buf, "%s", base);
    for (int tries = 0; tries < 64; tries++) {
        int taken = 0;
        for (int i = 0; i < m->prog->nstmt && !taken; i++) {
            const adgrad_stmt *s = &m->prog->stmt[i];
            taken = (s->name && !strcmp(s->name, buf)) || referenced(s->expr, buf) ||
                    (m->label[i] && !strcmp(m->label[i], buf));
        }
        if (!taken)
            return adgrad_program_strdup(m->prog, buf, strlen(buf));
        size_t l = strlen(buf);
        if (l + 1 >= sizeof buf)
            break;
        buf[l] = '_';
        buf[l + 1] = '\0';
    }
    return NULL;
}

int adgrad_model_init(adgrad_model *m, adgrad_program *prog, adgrad_error *err)
{
    memset(m, 0, sizeof *m);
    m->prog = prog;
    const int n = prog->nstmt;
    m->label = calloc(n ? (size_t)n : 1, sizeof *m->label);
    m->is_input = calloc(n ? (size_t)n : 1, sizeof *m->is_input);
    if (!m->label || !m->is_input)
        return adgrad_fail(err, 0, 0, "out of memory");
    ad_shape s;
    int unnamed = 0;
    for (int i = 0; i < n; i++) {
        const adgrad_stmt *st = &prog->stmt[i];
        m->is_input[i] = st->name && adgrad_literal(st->expr, &s, NULL);
        if (!st->name)
            unnamed++;
        m->label[i] = st->name;
        for (int j = 0; st->name && j < i; j++)
            if (prog->stmt[j].name && !strcmp(prog->stmt[j].name, st->name))
                return adgrad_fail(err, st->line, st->col, "'%s' is already defined on line %d",
                                   st->name, prog->stmt[j].line);
    }
    for (int i = 0, k = 0; i < n; i++) {
        if (prog->stmt[i].name)
            continue;
        char base[16];
        if (unnamed == 1)
            snprintf(base, sizeof base, "f");
        else
            snprintf(base, sizeof base, "f%d", ++k);
        m->label[i] = fresh_label(m, base);
        if (!m->label[i])
            return adgrad_fail(err, 0, 0, "out of memory");
    }
    walk w = {m, 0, 0, err};
    for (int i = 0; i < n; i++) {
        const adgrad_stmt *st = &prog->stmt[i];
        w.stmt = i;
        if (walk_names(&w, st->expr))
            return 1;
        if (m->is_input[i]) {
            int k = adgrad_model_input(m, st->name);
            if (k >= 0)
                m->in[k].stmt = i;
            else if (add_input(m, &w.cap, st->name, i, st->line, st->col))
                return adgrad_fail(err, 0, 0, "out of memory");
        }
    }
    return 0;
}

void adgrad_model_free(adgrad_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nin; i++)
        free(m->in[i].value);
    free(m->in);
    free(m->label);
    free(m->is_input);
    memset(m, 0, sizeof *m);
}

int adgrad_model_set(adgrad_model *m, int i, ad_shape shape, const double *vals)
{
    if (i < 0 || i >= m->nin)
        return 1;
    size_t sz = ad_shape_size(shape);
    double *v = malloc((sz ? sz : 1) * sizeof *v);
    if (!v)
        return 1;
    memcpy(v, vals, sz * sizeof *v);
    free(m->in[i].value);
    m->in[i].value = v;
    m->in[i].shape = shape;
    m->in[i].has_value = 1;
    return 0;
}

int adgrad_model_record(ad_tape *t, const adgrad_model *m, const ad_node *in, const ad_node *shift,
                        ad_node *stmt_node, adgrad_scope *scope, int name_nodes,
                        adgrad_error *err)
{
    adgrad_scope local = {0};
    adgrad_scope *s = scope ? scope : &local;
    int rc = 0;
    for (int i = 0; i < m->nin && !rc; i++) {
        if (name_nodes)
            (void)ad_set_name(t, in[i], m->in[i].name);
        if (adgrad_scope_add(s, m->in[i].name, in[i]))
            rc = adgrad_fail(err, 0, 0, "out of memory");
    }
    for (int i = 0; i < m->prog->nstmt && !rc; i++) {
        const adgrad_stmt *st = &m->prog->stmt[i];
        ad_node r;
        if (m->is_input[i]) {
            r = in[adgrad_model_input(m, st->name)];
        } else {
            r = adgrad_record_expr(t, m->prog, st->expr, s, name_nodes, err);
            if (ad_node_is_nil(r)) {
                rc = 1;
                break;
            }
            if (name_nodes && st->expr->kind != AGX_NAME)
                (void)ad_set_name(t, r, m->label[i]);
            if (shift && !ad_node_is_nil(shift[i])) {
                r = ad_add(t, r, shift[i]);
                if (ad_node_is_nil(r)) {
                    rc = adgrad_fail(err, st->line, st->col, "%s", ad_tape_errmsg(t));
                    break;
                }
                if (name_nodes) /* what the later statements see as the name */
                    (void)ad_set_name(t, r, m->label[i]);
            }
        }
        if (stmt_node)
            stmt_node[i] = r;
        if (adgrad_scope_add(s, m->label[i], r))
            rc = adgrad_fail(err, 0, 0, "out of memory");
    }
    if (!scope)
        adgrad_scope_free(&local);
    return rc;
}
