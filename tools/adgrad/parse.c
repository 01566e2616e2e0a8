/* parse.c -- the expression language of adgrad: lexer and
 * recursive-descent parser into a syntax tree.
 *
 *   program := sep* [stmt {sep+ stmt}] sep*         sep: ';' or a new line
 *   stmt    := NAME '=' expr | expr
 *   expr    := sum [('>' | '<' | '>=' | '<=' | '==' | '!=') sum]
 *   sum     := product {('+' | '-') product}
 *   product := unary {('*' | '/' | '@') unary}
 *   unary   := ('-' | '+') unary | power
 *   power   := primary {'ᵀ'} ['^' unary]              (right-associative)
 *   primary := NUMBER | NAME | NAME '(' [expr {',' expr}] ')'
 *            | '(' expr ')' | '[' [expr {',' expr} [',']] ']'
 *
 * New lines inside brackets, and after an operator, continue the
 * statement. '#' starts a comment. The middle dot and the multiplication
 * dot (U+00B7, U+22C5) is the product of the notes -- '*' when an operand
 * is a scalar, else '@' (W·x, W·x + b) -- the multiplication sign (U+00D7)
 * is '*' and the minus sign (U+2212) '-'; a postfix ᵀ (U+1D40) transposes
 * (dW = dz·xᵀ, dx = Wᵀ·dz), so formulas pasted from notes work.
 *
 * Nothing here touches a tape or does I/O. The tree lives in an arena
 * freed at once, so an error anywhere frees everything; recursion is
 * bounded by ADGRAD_MAX_DEPTH. */
#include "adgrad.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Arena                                                               */
/* ------------------------------------------------------------------ */

typedef struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[]; /* cap bytes */
} block;

struct adgrad_arena {
    block *head;
};

#define BLOCK_BYTES 16384

static void *arena_alloc(adgrad_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX / 4)
        return NULL;
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > BLOCK_BYTES ? n : BLOCK_BYTES;
        if (cap > SIZE_MAX - sizeof(block))
            return NULL;
        b = malloc(sizeof(block) + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(adgrad_arena *a)
{
    if (!a)
        return;
    for (block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

char *adgrad_program_strdup(adgrad_program *p, const char *s, size_t n)
{
    if (n > SIZE_MAX / 4)
        return NULL;
    char *d = arena_alloc(p->arena, n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void adgrad_program_free(adgrad_program *p)
{
    if (p)
        arena_free(p->arena); /* p itself lives in its arena */
}

/* ------------------------------------------------------------------ */
/* Positions                                                           */
/* ------------------------------------------------------------------ */

void adgrad_position(const char *text, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) { /* not a UTF-8 continuation byte */
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* ------------------------------------------------------------------ */
/* Lexer                                                               */
/* ------------------------------------------------------------------ */

enum { TK_EOF, TK_NUM, TK_NAME, TK_OP, TK_NL };

typedef struct token {
    int kind;
    int op;             /* TK_OP: the operator character or AGB_* code */
    size_t begin, end;  /* bytes of the source                         */
    int line, col;
    double num;
} token;

typedef struct parser {
    adgrad_program *prog;
    const char *s;      /* the program's copy of the text */
    size_t len;
    token *tok;
    size_t ntok, pos;
    int nest;           /* open ( and [ : new lines are spaces inside     */
    int depth;          /* recursion depth                                */
    int failed;
    adgrad_error *err;
} parser;

static int fail_at(parser *p, int line, int col, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int fail_at(parser *p, int line, int col, const char *fmt, ...)
{
    if (p->failed)
        return 1;
    p->failed = 1;
    if (p->err) {
        va_list ap;
        va_start(ap, fmt);
        p->err->line = line;
        p->err->col = col;
        p->err->note[0] = '\0';
        vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static int oom(parser *p)
{
    return fail_at(p, 0, 0, "out of memory");
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* Length of the UTF-8 sequence at s (n bytes left) and its code point, or
 * 0 when it is not valid UTF-8. */
static size_t utf8(const unsigned char *s, size_t n, unsigned long *cp)
{
    size_t len;
    unsigned long c;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        c = s[0] & 0x1Fu;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        c = s[0] & 0x0Fu;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        c = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
        c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

static int push(parser *p, token t)
{
    p->tok[p->ntok++] = t;
    return 0;
}

static int lex(parser *p)
{
    const char *s = p->s;
    const size_t n = p->len;
    /* At most one token per byte, plus the end. */
    if (n >= SIZE_MAX / sizeof(token) - 1)
        return oom(p);
    p->tok = arena_alloc(p->prog->arena, (n + 1) * sizeof(token));
    if (!p->tok)
        return oom(p);
    int line = 1, col = 1;
    size_t i = 0;
    while (i < n) {
        const unsigned char c = (unsigned char)s[i];
        token t = {0};
        t.begin = i;
        t.line = line;
        t.col = col;
        if (c == '\n') {
            t.kind = TK_NL;
            t.end = ++i;
            push(p, t);
            line++;
            col = 1;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            i++;
            col++;
            continue;
        }
        if (c == '#') {
            while (i < n && s[i] != '\n') {
                if (((unsigned char)s[i] & 0xC0) != 0x80)
                    col++;
                i++;
            }
            continue;
        }
        if (is_digit(c) || (c == '.' && i + 1 < n && is_digit((unsigned char)s[i + 1]))) {
            size_t j = i;
            while (j < n && is_digit((unsigned char)s[j]))
                j++;
            if (j < n && s[j] == '.') {
                j++;
                while (j < n && is_digit((unsigned char)s[j]))
                    j++;
            }
            if (j < n && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < n && (s[k] == '+' || s[k] == '-'))
                    k++;
                if (k < n && is_digit((unsigned char)s[k])) {
                    while (k < n && is_digit((unsigned char)s[k]))
                        k++;
                    j = k;
                }
            }
            char buf[64];
            if (j - i >= sizeof buf)
                return fail_at(p, line, col, "number too long (more than %d characters)",
                               (int)sizeof buf - 1);
            memcpy(buf, s + i, j - i);
            buf[j - i] = '\0';
            errno = 0;
            char *endp;
            double v = strtod(buf, &endp);
            if (*endp != '\0')
                return fail_at(p, line, col, "malformed number '%s'", buf);
            if (isinf(v))
                return fail_at(p, line, col, "number '%s' is out of range", buf);
            t.kind = TK_NUM;
            t.num = v;
            t.end = j;
            col += (int)(j - i);
            i = j;
            push(p, t);
            continue;
        }
        if (is_alpha(c)) {
            size_t j = i;
            while (j < n && (is_alpha((unsigned char)s[j]) || is_digit((unsigned char)s[j])))
                j++;
            if (j - i > ADGRAD_MAX_NAME)
                return fail_at(p, line, col, "name too long (more than %d characters)",
                               ADGRAD_MAX_NAME);
            t.kind = TK_NAME;
            t.end = j;
            col += (int)(j - i);
            i = j;
            push(p, t);
            continue;
        }
        t.kind = TK_OP;
        size_t w = 1;
        switch (c) {
        case '+': case '-': case '*': case '/': case '^': case '@':
        case '(': case ')': case '[': case ']': case ',': case ';':
            t.op = c;
            break;
        case '=':
            if (i + 1 < n && s[i + 1] == '=') {
                t.op = AGB_EQ;
                w = 2;
            } else {
                t.op = '=';
            }
            break;
        case '>': case '<':
            if (i + 1 < n && s[i + 1] == '=') {
                t.op = c == '>' ? AGB_GE : AGB_LE;
                w = 2;
            } else {
                t.op = c;
            }
            break;
        case '!':
            if (i + 1 < n && s[i + 1] == '=') {
                t.op = AGB_NE;
                w = 2;
                break;
            }
            return fail_at(p, line, col, "unexpected character '!' (did you mean '!='?)");
        default: {
            unsigned long cp = 0;
            size_t ulen = c >= 0x80 ? utf8((const unsigned char *)s + i, n - i, &cp) : 0;
            if (ulen && (cp == 0xB7 || cp == 0x22C5)) { /* · ⋅ : W·x, dz·x^T */
                t.op = AGB_CDOT;
                w = ulen;
                break;
            }
            if (ulen && cp == 0x1D40) { /* ᵀ, postfix */
                t.op = 'T';
                w = ulen;
                break;
            }
            if (ulen && cp == 0xD7) { /* × */
                t.op = '*';
                w = ulen;
                break;
            }
            if (ulen && cp == 0x2212) { /* − */
                t.op = '-';
                w = ulen;
                break;
            }
            if (ulen)
                return fail_at(p, line, col, "unexpected character U+%04lX", cp);
            if (c >= 0x21 && c < 0x7F)
                return fail_at(p, line, col, "unexpected character '%c'", (int)c);
            return fail_at(p, line, col, "unexpected byte 0x%02x", (unsigned)c);
        }
        }
        t.end = i + w;
        i += w;
        col++;
        push(p, t);
    }
    token t = {0};
    t.kind = TK_EOF;
    t.begin = t.end = n;
    t.line = line;
    t.col = col;
    push(p, t);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

/* The current token; new lines are skipped inside brackets. */
static const token *peek(parser *p)
{
    while (p->nest > 0 && p->tok[p->pos].kind == TK_NL)
        p->pos++;
    return &p->tok[p->pos];
}

static const token *next(parser *p)
{
    const token *t = peek(p);
    if (t->kind != TK_EOF)
        p->pos++;
    return t;
}

static void skip_nl(parser *p)
{
    while (p->tok[p->pos].kind == TK_NL)
        p->pos++;
}

static int is_op(const token *t, int op) { return t->kind == TK_OP && t->op == op; }

static const char *op_text(int op)
{
    static const char *const two[] = {">=", "<=", "==", "!="};
    switch (op) {
    case AGB_GE: return two[0];
    case AGB_LE: return two[1];
    case AGB_EQ: return two[2];
    case AGB_NE: return two[3];
    default: return NULL;
    }
}

/* "'+'", "name 'x'", "number 2", "a new line", "the end of the text" */
static void describe(const parser *p, const token *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case TK_EOF:
        snprintf(buf, cap, "the end of the text");
        break;
    case TK_NL:
        snprintf(buf, cap, "a new line");
        break;
    case TK_NUM:
        snprintf(buf, cap, "number %.*s", (int)(t->end - t->begin), p->s + t->begin);
        break;
    case TK_NAME:
        snprintf(buf, cap, "name '%.*s'", (int)(t->end - t->begin), p->s + t->begin);
        break;
    default: {
        const char *two = op_text(t->op);
        if (two)
            snprintf(buf, cap, "'%s'", two);
        else
            snprintf(buf, cap, "'%.*s'", (int)(t->end - t->begin), p->s + t->begin);
    }
    }
}

static adgrad_expr *node(parser *p, int kind, const token *t)
{
    adgrad_expr *e = arena_alloc(p->prog->arena, sizeof *e);
    if (!e) {
        oom(p);
        return NULL;
    }
    e->kind = kind;
    e->line = t->line;
    e->col = t->col;
    e->begin = t->begin;
    e->end = t->end;
    e->height = 1;
    return e;
}

/* Sets e's height from its operands; fails past ADGRAD_MAX_HEIGHT, which
 * bounds the recursion of everything that walks the tree. */
static int grown(parser *p, adgrad_expr *e)
{
    int h = 0;
    for (int i = 0; i < e->narg; i++)
        if (e->arg[i]->height > h)
            h = e->arg[i]->height;
    e->height = h + 1;
    if (e->height > ADGRAD_MAX_HEIGHT)
        return fail_at(p, e->line, e->col,
                       "expression too long (more than %d operations in a chain): split it into statements",
                       ADGRAD_MAX_HEIGHT);
    return 0;
}

static adgrad_expr *expr(parser *p);
static adgrad_expr *unary(parser *p);

/* A list of expressions up to the closing bracket close, separated by
 * ','; a trailing ',' is allowed when trailing_ok. */
typedef struct item {
    adgrad_expr *e;
    struct item *next;
} item;

static int list(parser *p, int close, int trailing_ok, const token *open, adgrad_expr *into)
{
    item *head = NULL, **tail = &head;
    int n = 0;
    p->nest++;
    if (!is_op(peek(p), close)) {
        for (;;) {
            adgrad_expr *e = expr(p);
            if (!e)
                return 1;
            item *it = arena_alloc(p->prog->arena, sizeof *it);
            if (!it)
                return oom(p);
            it->e = e;
            *tail = it;
            tail = &it->next;
            n++;
            const token *t = peek(p);
            if (is_op(t, ',')) {
                next(p);
                if (trailing_ok && is_op(peek(p), close))
                    break;
                continue;
            }
            if (is_op(t, close))
                break;
            char d[96];
            describe(p, t, d, sizeof d);
            return fail_at(p, t->line, t->col, "expected ',' or '%c' to close the '%c' at line %d, column %d, found %s",
                           close, open->op, open->line, open->col, d);
        }
    }
    const token *t = next(p); /* the closing bracket */
    p->nest--;
    into->end = t->end;
    into->narg = n;
    if (n) {
        into->arg = arena_alloc(p->prog->arena, (size_t)n * sizeof *into->arg);
        if (!into->arg)
            return oom(p);
        int i = 0;
        for (item *it = head; it; it = it->next)
            into->arg[i++] = it->e;
    }
    return grown(p, into);
}

static int enter(parser *p, const token *t)
{
    if (++p->depth > ADGRAD_MAX_DEPTH)
        return fail_at(p, t->line, t->col, "expression nested too deeply (more than %d levels)",
                       ADGRAD_MAX_DEPTH);
    return 0;
}

static adgrad_expr *call(parser *p, const token *name, const token *open)
{
    adgrad_expr *e = node(p, AGX_CALL, name);
    if (!e)
        return NULL;
    const size_t nlen = name->end - name->begin;
    e->name = adgrad_program_strdup(p->prog, p->s + name->begin, nlen);
    if (!e->name) {
        oom(p);
        return NULL;
    }
    e->fn = adgrad_func_find(e->name, nlen);
    if (!e->fn)
        e->def = ad_registry_find(NULL, e->name);
    if (!e->fn && !e->def) {
        const char *s = adgrad_suggest_function(e->name);
        if (s)
            fail_at(p, name->line, name->col, "unknown function '%s' (did you mean '%s'?)", e->name, s);
        else
            fail_at(p, name->line, name->col,
                    "unknown function '%s' (adgrad --list-functions lists them)", e->name);
        return NULL;
    }
    if (list(p, ')', 0, open, e))
        return NULL;
    /* Arity and argument kinds: a table entry's spec; a built-in op found
     * in the registry takes its operands and an optional constant. */
    int lo, hi;
    const char *args = "";
    if (e->fn) {
        adgrad_func_arity(e->fn, &lo, &hi);
        args = e->fn->args;
    } else {
        lo = e->def->arity;
        hi = lo + 1;
    }
    if (e->narg < lo || e->narg > hi) {
        if (lo == hi)
            fail_at(p, name->line, name->col, "%s%s takes %d argument%s, got %d", e->name, args, lo,
                    lo == 1 ? "" : "s", e->narg);
        else if (hi == INT_MAX)
            fail_at(p, name->line, name->col, "%s%s takes at least %d argument%s, got %d", e->name,
                    args, lo, lo == 1 ? "" : "s", e->narg);
        else if (e->fn)
            fail_at(p, name->line, name->col, "%s%s takes %d to %d arguments, got %d", e->name, args,
                    lo, hi, e->narg);
        else
            fail_at(p, name->line, name->col,
                    "%s takes %d operand%s and an optional constant, got %d arguments", e->name, lo,
                    lo == 1 ? "" : "s", e->narg);
        return NULL;
    }
    for (int i = 0; i < e->narg; i++) {
        const int kind = e->fn ? adgrad_func_kind(e->fn, i) : i < lo ? 'n' : 'd';
        const adgrad_expr *a = e->arg[i];
        double v;
        ad_shape s;
        if (kind == 'd' && !adgrad_const_value(a, &v)) {
            fail_at(p, a->line, a->col,
                    "argument %d of %s must be a number (a constant, not an expression of names)",
                    i + 1, e->name);
            return NULL;
        }
        if (kind == 'i' && (!adgrad_const_value(a, &v) || !(v >= 0 && v <= 4294967295.0) || v != floor(v))) {
            fail_at(p, a->line, a->col, "argument %d of %s must be a whole number from 0 to 4294967295",
                    i + 1, e->name);
            return NULL;
        }
        if (kind == 'I') {
            int ok = adgrad_literal(a, &s, NULL) && s.ndim <= 1;
            for (int k = 0; ok && a->kind == AGX_LIST && k < a->narg; k++)
                ok = adgrad_const_value(a->arg[k], &v) && v >= 0 && v <= 4294967295.0 && v == floor(v);
            if (ok && a->kind != AGX_LIST)
                ok = adgrad_const_value(a, &v) && v >= 0 && v <= 4294967295.0 && v == floor(v);
            if (!ok) {
                fail_at(p, a->line, a->col,
                        "argument %d of %s must be a list of whole numbers, like [0, 2, 2]", i + 1,
                        e->name);
                return NULL;
            }
        }
    }
    return e;
}

static adgrad_expr *primary(parser *p)
{
    const token *t = next(p);
    if (t->kind == TK_NUM) {
        adgrad_expr *e = node(p, AGX_NUM, t);
        if (e)
            e->num = t->num;
        return e;
    }
    if (t->kind == TK_NAME) {
        if (is_op(&p->tok[p->pos], '('))
            return call(p, t, next(p));
        adgrad_expr *e = node(p, AGX_NAME, t);
        if (!e)
            return NULL;
        e->name = adgrad_program_strdup(p->prog, p->s + t->begin, t->end - t->begin);
        if (!e->name) {
            oom(p);
            return NULL;
        }
        return e;
    }
    if (is_op(t, '(')) {
        p->nest++;
        adgrad_expr *e = expr(p);
        if (!e)
            return NULL;
        const token *c = peek(p);
        if (!is_op(c, ')')) {
            char d[96];
            describe(p, c, d, sizeof d);
            fail_at(p, c->line, c->col, "expected ')' to close the '(' at line %d, column %d, found %s",
                    t->line, t->col, d);
            return NULL;
        }
        const token *close = next(p);
        p->nest--;
        e->begin = t->begin;
        e->end = close->end;
        e->parens = 1;
        return e;
    }
    if (is_op(t, '[')) {
        adgrad_expr *e = node(p, AGX_LIST, t);
        if (!e || list(p, ']', 1, t, e))
            return NULL;
        if (e->narg == 0) {
            fail_at(p, t->line, t->col, "empty literal '[]': a vector needs at least one element");
            return NULL;
        }
        return e;
    }
    char d[96];
    describe(p, t, d, sizeof d);
    fail_at(p, t->line, t->col, "expected a number, a name, '(' or '[', found %s", d);
    return NULL;
}

static adgrad_expr *binary(parser *p, const token *op, adgrad_expr *a, adgrad_expr *b)
{
    adgrad_expr *e = node(p, AGX_BIN, op);
    if (!e)
        return NULL;
    e->op = op->op;
    e->begin = a->begin;
    e->end = b->end;
    e->arg = arena_alloc(p->prog->arena, 2 * sizeof *e->arg);
    if (!e->arg) {
        oom(p);
        return NULL;
    }
    e->arg[0] = a;
    e->arg[1] = b;
    e->narg = 2;
    return grown(p, e) ? NULL : e;
}

static adgrad_expr *power(parser *p)
{
    adgrad_expr *a = primary(p);
    if (!a)
        return NULL;
    while (is_op(peek(p), 'T')) { /* postfix transpose: xᵀ */
        const token *t = next(p);
        adgrad_expr *e = node(p, AGX_T, t);
        if (!e)
            return NULL;
        e->begin = a->begin;
        e->arg = arena_alloc(p->prog->arena, sizeof *e->arg);
        if (!e->arg) {
            oom(p);
            return NULL;
        }
        e->arg[0] = a;
        e->narg = 1;
        if (grown(p, e))
            return NULL;
        a = e;
    }
    const token *t = peek(p);
    if (!is_op(t, '^'))
        return a;
    next(p);
    adgrad_expr *b = unary(p);
    return b ? binary(p, t, a, b) : NULL;
}

static adgrad_expr *unary(parser *p)
{
    if (p->nest == 0)
        skip_nl(p); /* an operand never starts with a new line: continue the statement */
    const token *t = peek(p);
    if (enter(p, t))
        return NULL;
    adgrad_expr *r;
    if (is_op(t, '-') || is_op(t, '+')) {
        next(p);
        adgrad_expr *a = unary(p);
        if (!a)
            return NULL;
        if (t->op == '+') {
            r = a;
        } else {
            r = node(p, AGX_NEG, t);
            if (!r)
                return NULL;
            r->end = a->end;
            r->arg = arena_alloc(p->prog->arena, sizeof *r->arg);
            if (!r->arg) {
                oom(p);
                return NULL;
            }
            r->arg[0] = a;
            r->narg = 1;
            if (grown(p, r))
                return NULL;
        }
    } else {
        r = power(p);
    }
    p->depth--;
    return r;
}

static adgrad_expr *product(parser *p)
{
    adgrad_expr *a = unary(p);
    while (a) {
        const token *t = peek(p);
        if (!(is_op(t, '*') || is_op(t, '/') || is_op(t, '@') || is_op(t, AGB_CDOT)))
            break;
        next(p);
        adgrad_expr *b = unary(p);
        a = b ? binary(p, t, a, b) : NULL;
    }
    return a;
}

static adgrad_expr *sum(parser *p)
{
    adgrad_expr *a = product(p);
    while (a) {
        const token *t = peek(p);
        if (!(is_op(t, '+') || is_op(t, '-')))
            break;
        next(p);
        adgrad_expr *b = product(p);
        a = b ? binary(p, t, a, b) : NULL;
    }
    return a;
}

static int is_cmp(const token *t)
{
    return t->kind == TK_OP && (t->op == '>' || t->op == '<' || t->op == AGB_GE ||
                                t->op == AGB_LE || t->op == AGB_EQ || t->op == AGB_NE);
}

static adgrad_expr *expr(parser *p)
{
    const token *first = peek(p);
    if (enter(p, first))
        return NULL;
    adgrad_expr *a = sum(p);
    if (a && is_cmp(peek(p))) {
        const token *t = next(p);
        adgrad_expr *b = sum(p);
        a = b ? binary(p, t, a, b) : NULL;
        if (a && is_cmp(peek(p))) {
            const token *u = peek(p);
            fail_at(p, u->line, u->col,
                    "comparisons do not chain: write (a < b) * (b < c) for a < b < c");
            a = NULL;
        }
    }
    p->depth--;
    return a;
}

/* After a statement: ';', a new line or the end. */
static int end_of_stmt(parser *p, const adgrad_expr *e)
{
    const token *t = peek(p);
    if (t->kind == TK_EOF || t->kind == TK_NL || is_op(t, ';'))
        return 0;
    char d[96];
    describe(p, t, d, sizeof d);
    if (t->kind == TK_NAME || t->kind == TK_NUM || is_op(t, '(') || is_op(t, '['))
        return fail_at(p, t->line, t->col,
                       "unexpected %s after '%.*s': a missing operator, or ';' between statements?",
                       d, (int)(e->end - e->begin > 40 ? 40 : e->end - e->begin), p->s + e->begin);
    if (is_op(t, '='))
        return fail_at(p, t->line, t->col,
                       "unexpected '=': the left side of '=' must be a single name");
    if (is_op(t, ')') || is_op(t, ']'))
        return fail_at(p, t->line, t->col, "unexpected %s: no bracket to close", d);
    return fail_at(p, t->line, t->col, "unexpected %s", d);
}

typedef struct stmt_item {
    adgrad_stmt s;
    struct stmt_item *next;
} stmt_item;

static int is_sep(const token *t) { return t->kind == TK_NL || is_op(t, ';'); }

static int program(parser *p)
{
    stmt_item *head = NULL, **tail = &head;
    int n = 0;
    for (;;) {
        while (is_sep(peek(p)))
            next(p);
        const token *t = peek(p);
        if (t->kind == TK_EOF)
            break;
        stmt_item *it = arena_alloc(p->prog->arena, sizeof *it);
        if (!it)
            return oom(p);
        it->s.line = t->line;
        it->s.col = t->col;
        if (t->kind == TK_NAME && is_op(&p->tok[p->pos + 1], '=')) {
            it->s.name = adgrad_program_strdup(p->prog, p->s + t->begin, t->end - t->begin);
            if (!it->s.name)
                return oom(p);
            p->pos += 2;
        }
        it->s.expr = expr(p);
        if (!it->s.expr || end_of_stmt(p, it->s.expr))
            return 1;
        *tail = it;
        tail = &it->next;
        if (n == INT32_MAX)
            return fail_at(p, t->line, t->col, "too many statements");
        n++;
    }
    p->prog->nstmt = n;
    if (n) {
        p->prog->stmt = arena_alloc(p->prog->arena, (size_t)n * sizeof *p->prog->stmt);
        if (!p->prog->stmt)
            return oom(p);
        int i = 0;
        for (stmt_item *it = head; it; it = it->next)
            p->prog->stmt[i++] = it->s;
    }
    return 0;
}

/* One unnamed statement holding e. */
static int single(parser *p, adgrad_expr *e, const char *name, const char *of, const token *at)
{
    p->prog->stmt = arena_alloc(p->prog->arena, sizeof *p->prog->stmt);
    if (!p->prog->stmt)
        return oom(p);
    p->prog->nstmt = 1;
    p->prog->stmt[0].expr = e;
    p->prog->stmt[0].name = name;
    p->prog->stmt[0].of = of;
    p->prog->stmt[0].line = at->line;
    p->prog->stmt[0].col = at->col;
    return 0;
}

static adgrad_expr *list_of(parser *p, item *head, int n, const token *at, size_t begin, size_t end,
                            int force)
{
    if (n == 1 && !force)
        return head->e;
    adgrad_expr *e = node(p, AGX_LIST, at);
    if (!e)
        return NULL;
    e->begin = begin;
    e->end = end;
    e->narg = n;
    e->arg = arena_alloc(p->prog->arena, (size_t)n * sizeof *e->arg);
    if (!e->arg) {
        oom(p);
        return NULL;
    }
    int i = 0;
    for (item *it = head; it; it = it->next)
        e->arg[i++] = it->e;
    return grown(p, e) ? NULL : e;
}

typedef struct row {
    item *elems;
    int n;
    const token *at;
    size_t begin, end;
    struct row *next;
} row;

/* value := row {(';' | new line) row},  row := expr {',' expr}
 * One row is a number, a literal or a vector; several rows are the rows
 * of a matrix (1;2;3 is 3x1; a row may be a literal: [1, 2]; [3, 4]). */
static int value(parser *p)
{
    const token *first = peek(p);
    if (first->kind == TK_EOF)
        return fail_at(p, first->line, first->col, "empty value: give a number, a list 4,2,-5, "
                                                   "rows 1,2;3,4 or a literal [[1, 2], [3, 4]]");
    row *rows = NULL, **rtail = &rows;
    int nrows = 0;
    for (;;) {
        row *r = arena_alloc(p->prog->arena, sizeof *r);
        if (!r)
            return oom(p);
        r->at = peek(p);
        r->begin = r->end = r->at->begin;
        item **etail = &r->elems;
        for (;;) {
            adgrad_expr *e = expr(p);
            if (!e)
                return 1;
            item *it = arena_alloc(p->prog->arena, sizeof *it);
            if (!it)
                return oom(p);
            it->e = e;
            *etail = it;
            etail = &it->next;
            r->n++;
            r->end = e->end;
            if (!is_op(peek(p), ','))
                break;
            next(p);
        }
        *rtail = r;
        rtail = &r->next;
        nrows++;
        const token *t = peek(p);
        if (t->kind == TK_EOF)
            break;
        if (is_sep(t)) {
            next(p);
            while (is_sep(peek(p)))
                next(p);
            if (peek(p)->kind == TK_EOF)
                break;
            continue;
        }
        if (end_of_stmt(p, r->elems->e))
            return 1;
    }
    item *built = NULL, **btail = &built;
    for (row *r = rows; r; r = r->next) {
        int one_literal = r->n == 1 && r->elems->e->kind == AGX_LIST;
        adgrad_expr *e = list_of(p, r->elems, r->n, r->at, r->begin, r->end, nrows > 1 && !one_literal);
        item *it = e ? arena_alloc(p->prog->arena, sizeof *it) : NULL;
        if (!it)
            return e ? oom(p) : 1;
        it->e = e;
        *btail = it;
        btail = &it->next;
    }
    adgrad_expr *v = list_of(p, built, nrows, first, first->begin, p->tok[p->pos].begin, 0);
    return v ? single(p, v, NULL, NULL, first) : 1;
}

/* claim := NAME ['/' NAME] '=' expr, the names d<something> */
static int claim(parser *p)
{
    const token *a = next(p);
    const token *b = NULL;
    if (a->kind == TK_NAME && is_op(peek(p), '/')) {
        next(p);
        b = next(p);
    }
    const token *eq = next(p);
    const token *target = b ? b : a;
    if (a->kind != TK_NAME || (b && b->kind != TK_NAME) || !is_op(eq, '=') ||
        a->end - a->begin < 2 || p->s[a->begin] != 'd' ||
        target->end - target->begin < 2 || p->s[target->begin] != 'd')
        return fail_at(p, a->line, a->col,
                       "a claim reads 'dW = expression' or 'dJ/dW = expression': the derivative of the "
                       "output with respect to W, an input or a statement");
    char *name = adgrad_program_strdup(p->prog, p->s + target->begin, target->end - target->begin);
    char *of = b ? adgrad_program_strdup(p->prog, p->s + a->begin + 1, a->end - a->begin - 1) : NULL;
    if (!name || (b && !of))
        return oom(p);
    adgrad_expr *e = expr(p);
    if (!e || end_of_stmt(p, e))
        return 1;
    while (is_sep(peek(p)))
        next(p);
    const token *t = peek(p);
    if (t->kind != TK_EOF)
        return fail_at(p, t->line, t->col, "one claim per --check: give another --check for the next");
    return single(p, e, name, of, a);
}

int adgrad_parse(const char *text, size_t len, int mode, adgrad_program **out, adgrad_error *err)
{
    if (err) {
        err->line = err->col = 0;
        err->msg[0] = err->note[0] = '\0';
    }
    if (out)
        *out = NULL;
    if (!out || (!text && len) || mode < ADGRAD_PARSE_PROGRAM || mode > ADGRAD_PARSE_CLAIM)
        return adgrad_fail(err, 0, 0, "adgrad_parse: bad arguments");
    adgrad_arena *arena = calloc(1, sizeof *arena);
    adgrad_program *prog = arena ? arena_alloc(arena, sizeof *prog) : NULL;
    if (!prog) {
        free(arena);
        return adgrad_fail(err, 0, 0, "out of memory");
    }
    prog->arena = arena;
    parser p = {0};
    p.prog = prog;
    p.err = err;
    prog->text = adgrad_program_strdup(prog, text ? text : "", len);
    prog->len = len;
    p.s = prog->text;
    p.len = len;
    int rc = !prog->text ? oom(&p) : lex(&p);
    if (!rc) {
        if (mode == ADGRAD_PARSE_VALUE)
            rc = value(&p);
        else if (mode == ADGRAD_PARSE_CLAIM)
            rc = claim(&p);
        else
            rc = program(&p);
    }
    if (rc || p.failed) {
        if (!p.failed)
            oom(&p);
        adgrad_program_free(prog);
        return 1;
    }
    *out = prog;
    return 0;
}

int adgrad_parse_text(const char *text, size_t len, adgrad_program **out, adgrad_error *err)
{
    return adgrad_parse(text, len, ADGRAD_PARSE_PROGRAM, out, err);
}

/* ------------------------------------------------------------------ */
/* Constants                                                           */
/* ------------------------------------------------------------------ */

static int const_value(const adgrad_expr *e, double *v, int depth)
{
    double a, b;
    if (depth > ADGRAD_MAX_DEPTH * 4)
        return 0;
    switch (e->kind) {
    case AGX_NUM:
        *v = e->num;
        return 1;
    case AGX_NEG:
        if (!const_value(e->arg[0], &a, depth + 1))
            return 0;
        *v = -a;
        return 1;
    case AGX_BIN:
        if (!const_value(e->arg[0], &a, depth + 1) || !const_value(e->arg[1], &b, depth + 1))
            return 0;
        switch (e->op) {
        case '+': *v = a + b; return 1;
        case '-': *v = a - b; return 1;
        case '*': case AGB_CDOT: *v = a * b; return 1;
        case '/': *v = a / b; return 1;
        case '^': *v = b == 2 ? a * a : pow(a, b); return 1;
        default: return 0;
        }
    default:
        return 0;
    }
}

int adgrad_const_value(const adgrad_expr *e, double *v)
{
    return e && v && const_value(e, v, 0);
}

int adgrad_literal(const adgrad_expr *e, ad_shape *shape, double *vals)
{
    double v;
    if (!e || !shape)
        return 0;
    if (e->kind != AGX_LIST) {
        if (!adgrad_const_value(e, &v))
            return 0;
        *shape = ad_shape_scalar();
        if (vals)
            vals[0] = v;
        return 1;
    }
    if (e->arg[0]->kind != AGX_LIST) { /* a vector of numbers */
        for (int i = 0; i < e->narg; i++) {
            if (!adgrad_const_value(e->arg[i], &v))
                return 0;
            if (vals)
                vals[i] = v;
        }
        *shape = ad_shape_vec((uint32_t)e->narg);
        return 1;
    }
    const int cols = e->arg[0]->narg; /* a matrix: rows of numbers, all as long */
    for (int r = 0; r < e->narg; r++) {
        const adgrad_expr *rw = e->arg[r];
        if (rw->kind != AGX_LIST || rw->narg != cols)
            return 0;
        for (int c = 0; c < cols; c++) {
            if (rw->arg[c]->kind == AGX_LIST || !adgrad_const_value(rw->arg[c], &v))
                return 0;
            if (vals)
                vals[(size_t)r * (size_t)cols + (size_t)c] = v;
        }
    }
    *shape = ad_shape_mat((uint32_t)e->narg, (uint32_t)cols);
    return 1;
}
