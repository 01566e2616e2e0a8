/* main.c -- adgrad: differentiate a formula from the shell with the
 * autodiff tape, check hand-derived derivatives, explain the chain rule.
 * Written only on the public API (autodiff.h, check.h). See
 * docs/adgrad.md and adgrad(1). */
#include "app.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADGRAD_VERSION AD_VERSION_STRING

static const char usage_text[] =
    "Usage: adgrad [OPTION]... [-e TEXT | FILE | -] [--NAME VALUE]...\n"
    "\n"
    "Differentiate a formula with the autodiff tape: print its values and the\n"
    "gradient of a scalar, check derivatives derived by hand, show the chain rule.\n"
    "\n"
    "  adgrad -e 'z = dot(W, x) + b; yhat = relu(z); J = 0.5*(yhat - y)^2' \\\n"
    "         --W 4,2,-5 --x 1,0,2 --b 7 --y 5 --check 'dW = (yhat - y)*(z > 0)*x'\n"
    "\n"
    "Input:\n"
    "  -e, --expr TEXT      the program (repeatable: each TEXT is one more line)\n"
    "  FILE                 read the program from FILE ('-': standard input);\n"
    "                       with neither -e nor FILE, from standard input\n"
    "  --NAME VALUE         give input NAME a value (or --NAME=VALUE): a number 7,\n"
    "                       a vector 4,2,-5, a matrix 1,2;3,4 (rows split by ';')\n"
    "                       or a literal [[1, 2], [3, 4]]\n"
    "  --set NAME=VALUE     the same, for a NAME that is also an option\n"
    "  --values FILE        values from FILE, lines NAME = literal (names the\n"
    "                       program does not use are ignored)\n"
    "                       Precedence: the command line, then --values, then\n"
    "                       values written in the program (W = [4, 2, -5]).\n"
    "\n"
    "Output (text like examples/neuron, or JSON):\n"
    "  --of NAME            differentiate NAME (default: the last statement when\n"
    "                       it is a scalar, else the last scalar statement)\n"
    "  --wrt NAMES          comma-separated inputs or statements to differentiate\n"
    "                       with respect to (default: every input)\n"
    "  --json               print one JSON object instead of text\n"
    "  --trace              print the chain-rule trace of the reverse sweep\n"
    "  --dot FILE           write the tape as a Graphviz DOT graph ('-': stdout)\n"
    "  --jacobian           the Jacobian of the output (--of, else the last\n"
    "                       statement; any shape) with respect to the --wrt inputs\n"
    "  --hessian            the Hessian of the scalar output, block by block\n"
    "  --hvp 'W = [..]; ..' the Hessian-vector product along a direction given per\n"
    "                       input (inputs not named: 0)\n"
    "  -q, --quiet          print only the reports of --check and --gradcheck\n"
    "\n";

/* (split: C11 compilers need only take string literals of 4095 bytes) */
static const char usage_checks[] =
    "Checks (exit status 1 when one differs):\n"
    "  --check 'dW = EXPR'  a derivative of the output derived by hand, written in\n"
    "                       the same language with any name of the program and of\n"
    "                       earlier checks, compared with the tape's at the given\n"
    "                       point and at random points (repeatable). Also\n"
    "                       'dJ/dW = EXPR'; 'dz = EXPR' claims the derivative with\n"
    "                       respect to the statement z (use it in later checks).\n"
    "                       A failing claim is diagnosed: which factor, transpose\n"
    "                       or path of the chain rule explains it.\n"
    "  --gradcheck          the tape's gradient against central differences\n"
    "  --points N           random points for --check (default 3; 0: none)\n"
    "  --seed N             their seed (default 1)\n"
    "  --spread X           each input element moves to x + X*u*max(1, |x|),\n"
    "                       u uniform in [-1, 1] (default 1)\n"
    "  --atol X, --rtol X   an element agrees when |tape - yours| <= atol +\n"
    "                       rtol*max(|tape|, |yours|); default 1e-9, 1e-9 for\n"
    "                       --check, 1e-6, 1e-5 for --gradcheck (give one and\n"
    "                       both are used as given)\n"
    "  --step X             the step of --gradcheck (default cbrt(DBL_EPSILON))\n"
    "\n";

static const char usage_language[] =
    "Other:\n"
    "  --list-functions     the functions callable by name, with their arguments\n"
    "  -h, --help           this text\n"
    "  --version            the versions of adgrad and of the library\n"
    "\n"
    "Language:\n"
    "  statements  name = expr, separated by ';' or new lines; '#' comments\n"
    "  operators   + - * / elementwise (a scalar operand is broadcast), ^ power,\n"
    "              unary -, @ matrix product (matvec, matmul, dot or W^T x by the\n"
    "              shapes), comparisons > < >= <= == != (1 or 0, derivative 0)\n"
    "  notation    of the notes: the middle dot is * with a scalar, else @ (W\u00b7x);\n"
    "              postfix \u1d40 transposes (dW = dz\u00b7x\u1d40 is outer(dz, x), dx =\n"
    "              W\u1d40\u00b7dz is matvec_t(W, dz)); \u00d7 and \u2212 are * and -\n"
    "  precedence  \u1d40, ^, unary -, * / @ \u00b7, + -, comparisons\n"
    "  literals    7, 1e-3, [4, 2, -5], [[1, 2], [3, 4]] (elements may be\n"
    "              expressions)\n"
    "  functions   every op of the library, by name (built-in ops also by their\n"
    "              registry names, like addc(x, 1): operands, then a constant):\n";

static const char usage_tail[] =
    "\n"
    "Exit status: 0 success (every check agrees), 1 a check differs, 2 a usage,\n"
    "parse, shape or I/O error. Errors name the place: 'line 2, column 9'.\n"
    "More: docs/adgrad.md, man adgrad.\n";

static void print_help(void)
{
    fputs(usage_text, stdout);
    fputs(usage_checks, stdout);
    fputs(usage_language, stdout);
    size_t col = 0;
    for (size_t i = 0; i < adgrad_func_count(); i++) {
        const char *n = adgrad_func_at(i)->name;
        if (col == 0 || col + strlen(n) + 1 > 76) {
            fputs(col ? "\n              " : "              ", stdout);
            col = 14;
        } else {
            fputs(" ", stdout);
            col++;
        }
        fputs(n, stdout);
        col += strlen(n);
    }
    fputs("\n", stdout);
    fputs(usage_tail, stdout);
}

static void print_functions(void)
{
    for (size_t i = 0; i < adgrad_func_count(); i++) {
        const adgrad_func *f = adgrad_func_at(i);
        char sig[64];
        snprintf(sig, sizeof sig, "%s%s", f->name, f->args);
        printf("%-22s %s\n", sig, f->help);
    }
    int header = 0;
    for (size_t i = 0; i < ad_builtin_count(); i++) {
        const ad_opdef *d = ad_builtin_op(i);
        if (adgrad_func_find(d->name, strlen(d->name)))
            continue;
        if (!header)
            printf("\nbuilt-in ops by their registry names (operands, then an optional constant):\n");
        header = 1;
        printf("%s (%d operand%s)\n", d->name, d->arity, d->arity == 1 ? "" : "s");
    }
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static void json_error(app *a, const char *msg, const char *source, int line, int col)
{
    if (!a->json)
        return;
    adgrad_buf j = {0};
    adgrad_buf_puts(&j, "{\"error\": {\"message\": ");
    adgrad_buf_json_str(&j, msg, strlen(msg));
    if (source) {
        adgrad_buf_puts(&j, ", \"source\": ");
        adgrad_buf_json_str(&j, source, strlen(source));
    }
    if (line > 0)
        adgrad_buf_printf(&j, ", \"line\": %d, \"column\": %d", line, col);
    adgrad_buf_puts(&j, "}}\n");
    if (j.s)
        fputs(j.s, stdout);
    adgrad_buf_free(&j);
}

int app_error(app *a, const char *label, const adgrad_program *src, const adgrad_error *err)
{
    adgrad_buf b = {0};
    int multi = src && memchr(src->text, '\n', src->len) != NULL;
    adgrad_buf_puts(&b, "adgrad: ");
    if (err->line > 0) {
        if (!label && a->file)
            adgrad_buf_printf(&b, "%s: line %d, column %d: ", a->file, err->line, err->col);
        else if (!label)
            adgrad_buf_printf(&b, "line %d, column %d: ", err->line, err->col);
        else if (multi)
            adgrad_buf_printf(&b, "%s, line %d, column %d: ", label, err->line, err->col);
        else
            adgrad_buf_printf(&b, "%s, column %d: ", label, err->col);
    } else if (label) {
        adgrad_buf_printf(&b, "%s: ", label);
    }
    adgrad_buf_printf(&b, "%s\n", err->msg);
    if (src && err->line > 0)
        adgrad_show_place(&b, src->text, src->len, err->line, err->col);
    if (err->note[0])
        adgrad_buf_printf(&b, "  %s\n", err->note);
    if (b.s)
        fputs(b.s, stderr);
    adgrad_buf_free(&b);
    json_error(a, err->msg, label ? label : a->file ? a->file : "program", err->line, err->col);
    return EXIT_USAGE;
}

int app_errorf(app *a, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "adgrad: %s\n", msg);
    json_error(a, msg, NULL, 0, 0);
    return EXIT_USAGE;
}

void app_json_key(app *a, const char *key)
{
    adgrad_buf_puts(&a->json_out, a->json_fields++ ? ",\n  " : "{\n  ");
    adgrad_buf_json_str(&a->json_out, key, strlen(key));
    adgrad_buf_puts(&a->json_out, ": ");
}

void app_elem_name(adgrad_buf *b, const char *prefix, const char *name, ad_shape s, size_t elem)
{
    adgrad_buf_printf(b, "%s%s", prefix, name);
    if (s.ndim == 1)
        adgrad_buf_printf(b, "[%zu]", elem);
    else if (s.ndim == 2)
        adgrad_buf_printf(b, "[%zu][%zu]", elem / s.cols, elem % s.cols);
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static const char *const option_names[] = {
    "expr", "set", "values", "of", "wrt", "json", "trace", "dot", "jacobian", "hessian", "hvp",
    "quiet", "check", "gradcheck", "points", "seed", "spread", "atol", "rtol", "step",
    "list-functions", "help", "version",
};
#define NOPTIONS (sizeof option_names / sizeof option_names[0])

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n > ADGRAD_MAX_NAME)
        return 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' ||
              (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* "-e", "--json": an argument that reads as an option rather than as a
 * value (a value may start with '-' followed by a digit or '.'). */
static int looks_like_option(const char *s)
{
    return s[0] == '-' && s[1] != '\0' && !(s[1] >= '0' && s[1] <= '9') && s[1] != '.';
}

static int parse_double(app *a, const char *opt, const char *s, double *out, int positive)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0 || (positive && v == 0))
        return app_errorf(a, "%s: '%s' is not a %s number", opt, s,
                          positive ? "positive" : "finite non-negative");
    *out = v;
    return 0;
}

static int parse_count(app *a, const char *opt, const char *s, unsigned long long max,
                       unsigned long long *out)
{
    char *end;
    errno = 0;
    if (s[0] == '-' || s[0] == '+')
        return app_errorf(a, "%s: '%s' is not a whole number from 0 to %llu", opt, s, max);
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v > max)
        return app_errorf(a, "%s: '%s' is not a whole number from 0 to %llu", opt, s, max);
    *out = v;
    return 0;
}

static int add_claim(app *a, const char *text)
{
    claim *c = realloc(a->claims, (size_t)(a->nclaims + 1) * sizeof *c);
    if (!c)
        return app_errorf(a, "out of memory");
    a->claims = c;
    memset(&c[a->nclaims], 0, sizeof *c);
    c[a->nclaims].text = text;
    c[a->nclaims].input = c[a->nclaims].stmt = -1;
    a->nclaims++;
    return 0;
}

static int add_binding(app *a, const char *name, const char *value, const char *origin)
{
    binding *b = realloc(a->bind, (size_t)(a->nbind + 1) * sizeof *b);
    if (!b)
        return app_errorf(a, "out of memory");
    a->bind = b;
    b[a->nbind].name = name;
    b[a->nbind].value = value;
    b[a->nbind].origin = origin;
    a->nbind++;
    return 0;
}

/* Returns -1 to go on, or an exit status. Option names with '=' are
 * split in place (argv is ours). */
static int parse_args(app *a, int argc, char **argv)
{
    int only_files = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (only_files || arg[0] != '-' || !strcmp(arg, "-")) {
            if (a->file)
                return app_errorf(a, "two programs: '%s' and '%s' (give one FILE, or -e)", a->file, arg);
            a->file = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            only_files = 1;
            continue;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            print_help();
            return EXIT_AGREE;
        }
        if (!strcmp(arg, "--version")) {
            printf("adgrad %s (autodiff library %s)\n", ADGRAD_VERSION, ad_version());
            return EXIT_AGREE;
        }
        if (!strcmp(arg, "--list-functions")) {
            print_functions();
            return EXIT_AGREE;
        }
        /* -e TEXT, -eTEXT, -q */
        if (arg[1] != '-') {
            if (arg[1] == 'e') {
                const char *v = arg[2] ? arg + 2 : (i + 1 < argc ? argv[++i] : NULL);
                if (!v)
                    return app_errorf(a, "-e: missing TEXT (the program)");
                const char **e = realloc(a->expr, (size_t)(a->nexpr + 1) * sizeof *e);
                if (!e)
                    return app_errorf(a, "out of memory");
                a->expr = e;
                a->expr[a->nexpr++] = v;
                continue;
            }
            if (!strcmp(arg, "-q")) {
                a->quiet = 1;
                continue;
            }
            return app_errorf(a, "unknown option '%s' (adgrad --help lists them)", arg);
        }
        /* --name, --name=value, --name value */
        char *name = arg + 2;
        char *eq = strchr(name, '=');
        const char *inline_value = NULL;
        if (eq) {
            *eq = '\0';
            inline_value = eq + 1;
        }
        static const char *const flags[] = {"json", "trace", "gradcheck", "jacobian", "hessian",
                                            "quiet"};
        int *const flagp[] = {&a->json, &a->trace, &a->gradcheck, &a->jacobian, &a->hessian,
                              &a->quiet};
        int handled = 0;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (!strcmp(name, flags[k])) {
                if (inline_value)
                    return app_errorf(a, "--%s takes no value", name);
                *flagp[k] = 1;
                handled = 1;
            }
        if (handled)
            continue;
        int known = 0;
        for (size_t k = 0; k < NOPTIONS; k++)
            known |= !strcmp(name, option_names[k]);
        const char *value = inline_value;
        if (!value && i + 1 < argc && (!looks_like_option(argv[i + 1]) || known))
            value = argv[++i];
        if (!known) {
            if (!valid_name(name, strlen(name)))
                return app_errorf(a, "unknown option '%s' (adgrad --help lists them)", arg);
            if (!value) {
                const char *s = adgrad_suggest(name, option_names, NOPTIONS);
                if (s)
                    return app_errorf(a, "unknown option '--%s' (did you mean '--%s'?)", name, s);
                return app_errorf(a, "--%s: missing VALUE (an input's value: --%s 4,2,-5)", name,
                                  name);
            }
            if (add_binding(a, name, value, arg))
                return EXIT_USAGE;
            continue;
        }
        if (!value)
            return app_errorf(a, "--%s: missing value (adgrad --help)", name);
        if (!strcmp(name, "expr")) {
            const char **e = realloc(a->expr, (size_t)(a->nexpr + 1) * sizeof *e);
            if (!e)
                return app_errorf(a, "out of memory");
            a->expr = e;
            a->expr[a->nexpr++] = value;
        } else if (!strcmp(name, "set")) {
            char *v = (char *)strchr(value, '=');
            if (!v || !valid_name(value, (size_t)(v - value)))
                return app_errorf(a, "--set: '%s' is not NAME=VALUE", value);
            *v = '\0';
            if (add_binding(a, value, v + 1, "--set"))
                return EXIT_USAGE;
        } else if (!strcmp(name, "values")) {
            a->values_file = value;
        } else if (!strcmp(name, "of")) {
            a->of = value;
        } else if (!strcmp(name, "wrt")) {
            a->wrt_text = value;
        } else if (!strcmp(name, "dot")) {
            a->dot = value;
        } else if (!strcmp(name, "hvp")) {
            a->hvp = value;
        } else if (!strcmp(name, "check")) {
            if (add_claim(a, value))
                return EXIT_USAGE;
        } else if (!strcmp(name, "points")) {
            unsigned long long v;
            if (parse_count(a, "--points", value, 100000, &v))
                return EXIT_USAGE;
            a->points_set = 1;
            a->points = (int)v;
        } else if (!strcmp(name, "seed")) {
            if (parse_count(a, "--seed", value, UINT64_MAX, &a->seed))
                return EXIT_USAGE;
        } else if (!strcmp(name, "spread")) {
            if (parse_double(a, "--spread", value, &a->spread, 1))
                return EXIT_USAGE;
        } else if (!strcmp(name, "atol")) {
            if (parse_double(a, "--atol", value, &a->atol, 0))
                return EXIT_USAGE;
        } else if (!strcmp(name, "rtol")) {
            if (parse_double(a, "--rtol", value, &a->rtol, 0))
                return EXIT_USAGE;
        } else if (!strcmp(name, "step")) {
            if (parse_double(a, "--step", value, &a->step, 1))
                return EXIT_USAGE;
        } else {
            return app_errorf(a, "--%s takes no value", name);
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

static int read_stream(FILE *f, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    if (!s)
        return 1;
    for (;;) {
        if (n == cap) {
            if (cap > ((size_t)1 << 30)) {
                free(s);
                errno = EFBIG;
                return 1;
            }
            char *t = realloc(s, cap * 2);
            if (!t) {
                free(s);
                return 1;
            }
            s = t;
            cap *= 2;
        }
        size_t got = fread(s + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(s);
        return 1;
    }
    *out = s;
    *len = n;
    return 0;
}

static int read_file(app *a, const char *path, char **out, size_t *len)
{
    if (!strcmp(path, "-")) {
        if (read_stream(stdin, out, len))
            return app_errorf(a, "standard input: %s", strerror(errno));
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return app_errorf(a, "%s: %s", path, strerror(errno));
    int rc = read_stream(f, out, len);
    int e = errno;
    fclose(f);
    if (rc)
        return app_errorf(a, "%s: %s", path, strerror(e ? e : EIO));
    return 0;
}

static int read_program(app *a)
{
    if (a->nexpr && a->file)
        return app_errorf(a, "two programs: -e and the file '%s' (give one)", a->file);
    if (a->nexpr) {
        adgrad_buf b = {0};
        for (int i = 0; i < a->nexpr; i++) {
            if (i)
                adgrad_buf_puts(&b, "\n");
            adgrad_buf_puts(&b, a->expr[i]);
        }
        if (b.oom) {
            adgrad_buf_free(&b);
            return app_errorf(a, "out of memory");
        }
        a->text = b.s ? b.s : calloc(1, 1);
        a->text_len = b.len;
        return a->text ? 0 : app_errorf(a, "out of memory");
    }
    if (!a->file) {
        if (isatty(0))
            return app_errorf(a, "no program: give -e TEXT, a FILE, or pipe the text in "
                                 "(adgrad --help)");
        a->file = "-";
    }
    if (read_file(a, a->file, &a->text, &a->text_len))
        return EXIT_USAGE;
    if (!strcmp(a->file, "-"))
        a->file = "<stdin>";
    return 0;
}

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

/* Why e is not a literal of numbers: an error at its place. */
static int literal_error(const adgrad_expr *e, adgrad_error *err)
{
    double v;
    if (e->kind != AGX_LIST) {
        if (adgrad_const_value(e, &v))
            return 0;
        if (e->kind == AGX_NAME)
            return adgrad_fail(err, e->line, e->col, "a value holds numbers only, not the name '%s'",
                               e->name);
        return adgrad_fail(err, e->line, e->col,
                           "a value holds numbers only: 7, 4,2,-5, 1,2;3,4 or [[1, 2], [3, 4]]");
    }
    int rows_are_lists = e->arg[0]->kind == AGX_LIST;
    for (int i = 0; i < e->narg; i++) {
        const adgrad_expr *r = e->arg[i];
        if ((r->kind == AGX_LIST) != rows_are_lists)
            return adgrad_fail(err, r->line, r->col,
                               "element %d is %s but element 1 is %s: a literal is a vector of "
                               "numbers or a matrix of rows",
                               i + 1, r->kind == AGX_LIST ? "a row" : "a number",
                               rows_are_lists ? "a row" : "a number");
        if (!rows_are_lists) {
            if (literal_error(r, err))
                return 1;
            continue;
        }
        if (r->narg != e->arg[0]->narg)
            return adgrad_fail(err, r->line, r->col,
                               "row %d has %d element%s but row 1 has %d: a matrix's rows have one "
                               "length",
                               i + 1, r->narg, r->narg == 1 ? "" : "s", e->arg[0]->narg);
        for (int k = 0; k < r->narg; k++) {
            if (r->arg[k]->kind == AGX_LIST)
                return adgrad_fail(err, r->arg[k]->line, r->arg[k]->col,
                                   "a value is a number, a vector or a matrix (2 levels of [ ] "
                                   "at most)");
            if (literal_error(r->arg[k], err))
                return 1;
        }
    }
    return 0;
}

/* Sets input k from the literal e. */
static int set_from_literal(app *a, int k, const adgrad_expr *e, adgrad_error *err)
{
    ad_shape s;
    if (!adgrad_literal(e, &s, NULL)) {
        if (!literal_error(e, err))
            adgrad_fail(err, e->line, e->col, "not a value");
        return 1;
    }
    double *v = malloc((ad_shape_size(s) ? ad_shape_size(s) : 1) * sizeof *v);
    if (!v)
        return adgrad_fail(err, 0, 0, "out of memory");
    adgrad_literal(e, &s, v);
    int rc = adgrad_model_set(&a->model, k, s, v);
    free(v);
    return rc ? adgrad_fail(err, 0, 0, "out of memory") : 0;
}

static const char **all_names(const app *a, size_t *n)
{
    const adgrad_model *m = &a->model;
    const char **c = malloc(((size_t)m->nin + (size_t)a->prog->nstmt + 1) * sizeof *c);
    *n = 0;
    if (!c)
        return NULL;
    for (int i = 0; i < m->nin; i++)
        c[(*n)++] = m->in[i].name;
    for (int i = 0; i < a->prog->nstmt; i++)
        if (!m->is_input[i])
            c[(*n)++] = m->label[i];
    return c;
}

/* "(inputs: W, x, b, y)" */
static void inputs_list(const app *a, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "inputs:");
    for (int i = 0; i < a->model.nin && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s %s", i ? "," : "", a->model.in[i].name);
    if (a->model.nin == 0)
        snprintf(buf, cap, "the program has no inputs");
}

static int apply_values(app *a)
{
    adgrad_model *m = &a->model;
    adgrad_error err = {0};
    /* the values file */
    if (a->values_file) {
        char *text;
        size_t len;
        if (read_file(a, a->values_file, &text, &len))
            return EXIT_USAGE;
        adgrad_program *vp;
        int rc = adgrad_parse(text, len, ADGRAD_PARSE_PROGRAM, &vp, &err);
        if (rc) {
            adgrad_program tmp = {0};
            tmp.text = text;
            tmp.len = len;
            rc = app_error(a, a->values_file, &tmp, &err);
            free(text);
            return rc;
        }
        free(text);
        for (int i = 0; i < vp->nstmt; i++) {
            const adgrad_stmt *st = &vp->stmt[i];
            if (!st->name) {
                adgrad_fail(&err, st->line, st->col,
                            "a values file holds lines NAME = value, like W = [4, 2, -5]");
                rc = 1;
                break;
            }
            int k = adgrad_model_input(m, st->name);
            if (k < 0) {
                if (adgrad_model_stmt(m, st->name) >= 0) {
                    adgrad_fail(&err, st->line, st->col,
                                "'%s' is computed by the program; only inputs take values",
                                st->name);
                    rc = 1;
                    break;
                }
                continue; /* a value the program does not use */
            }
            if (set_from_literal(a, k, st->expr, &err)) {
                rc = 1;
                break;
            }
        }
        if (rc) {
            rc = app_error(a, a->values_file, vp, &err);
            adgrad_program_free(vp);
            return rc;
        }
        adgrad_program_free(vp);
    }
    /* the command line */
    for (int i = 0; i < a->nbind; i++) {
        const binding *b = &a->bind[i];
        int k = adgrad_model_input(m, b->name);
        char label[96];
        snprintf(label, sizeof label, "%s%s", !strcmp(b->origin, "--set") ? "--set " : "--", b->name);
        if (k < 0) {
            if (adgrad_model_stmt(m, b->name) >= 0)
                return app_errorf(a, "%s: '%s' is computed by the program (line %d); only inputs "
                                     "take values",
                                  label, b->name, a->prog->stmt[adgrad_model_stmt(m, b->name)].line);
            const char *s = adgrad_suggest(b->name, option_names, NOPTIONS);
            char list[256];
            inputs_list(a, list, sizeof list);
            if (s)
                return app_errorf(a, "unknown option '--%s' (did you mean '--%s'?)", b->name, s);
            size_t n;
            const char **names = all_names(a, &n);
            const char *sn = names ? adgrad_suggest(b->name, names, n) : NULL;
            char hint[128] = "";
            if (sn)
                snprintf(hint, sizeof hint, "did you mean '%s'? ", sn);
            int rc = app_errorf(a, "%s: the program uses no name '%s' (%s%s)", label, b->name, hint,
                                list);
            free(names);
            return rc;
        }
        adgrad_program *vp;
        if (adgrad_parse(b->value, strlen(b->value), ADGRAD_PARSE_VALUE, &vp, &err)) {
            adgrad_program tmp = {0};
            tmp.text = (char *)b->value;
            tmp.len = strlen(b->value);
            return app_error(a, label, &tmp, &err);
        }
        int rc = set_from_literal(a, k, vp->stmt[0].expr, &err);
        if (rc)
            rc = app_error(a, label, vp, &err);
        adgrad_program_free(vp);
        if (rc)
            return rc;
    }
    /* defaults written in the program; names with no value at all */
    for (int k = 0; k < m->nin; k++) {
        adgrad_input *x = &m->in[k];
        if (x->has_value)
            continue;
        if (x->stmt >= 0) {
            if (set_from_literal(a, k, a->prog->stmt[x->stmt].expr, &err))
                return app_error(a, NULL, a->prog, &err);
            continue;
        }
        size_t n = 0;
        const char **names = all_names(a, &n);
        /* suggest only names that have a value or are computed */
        size_t w = 0;
        for (size_t i = 0; names && i < n; i++) {
            int ki = adgrad_model_input(m, names[i]);
            if (ki < 0 || m->in[ki].has_value || m->in[ki].stmt >= 0)
                names[w++] = names[i];
        }
        const char *s = names ? adgrad_suggest(x->name, names, w) : NULL;
        if (s)
            adgrad_fail(&err, x->line, x->col, "unknown name '%s' (did you mean '%s'?)", x->name, s);
        else
            adgrad_fail(&err, x->line, x->col, "unknown name '%s': give it a value with --%s VALUE",
                        x->name, x->name);
        free(names);
        return app_error(a, NULL, a->prog, &err);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Recording and the names of the output                               */
/* ------------------------------------------------------------------ */

static int record(app *a)
{
    const adgrad_model *m = &a->model;
    adgrad_error err = {0};
    a->t = ad_tape_new(NULL);
    a->in = calloc((size_t)m->nin + 1, sizeof *a->in);
    a->stmt = calloc((size_t)a->prog->nstmt + 1, sizeof *a->stmt);
    if (!a->t || !a->in || !a->stmt)
        return app_errorf(a, "out of memory");
    /* Inputs are variables, except, when --wrt names inputs only, those
     * it leaves out (constants: the trace then says "no gradient"). */
    int any_stmt = !a->wrt_text;
    for (int k = 0; k < a->nwrt; k++)
        any_stmt |= a->wrt[k] < 0;
    for (int i = 0; i < m->nin; i++) {
        int var = any_stmt;
        for (int k = 0; k < a->nwrt && !var; k++)
            var = a->wrt[k] == i;
        a->in[i] = (var ? ad_variable : ad_constant)(a->t, m->in[i].shape, m->in[i].value);
        if (ad_node_is_nil(a->in[i]))
            return app_errorf(a, "input %s: %s", m->in[i].name, ad_tape_errmsg(a->t));
    }
    if (adgrad_model_record(a->t, m, a->in, NULL, a->stmt, NULL, 1, &err))
        return app_error(a, NULL, a->prog, &err);
    return 0;
}

static int is_scalar(const app *a, ad_node n) { return ad_node_shape(a->t, n).ndim == 0; }

/* name: a statement or an input; sets *stmt or *input. */
static int find_name(const app *a, const char *name, int *stmt, int *input)
{
    *stmt = adgrad_model_stmt(&a->model, name);
    *input = *stmt >= 0 && a->model.is_input[*stmt] ? adgrad_model_input(&a->model, name)
             : *stmt >= 0                           ? -1
                                                    : adgrad_model_input(&a->model, name);
    if (*input >= 0)
        *stmt = -1;
    return *stmt >= 0 || *input >= 0;
}

static int unknown_name(app *a, const char *opt, const char *name)
{
    size_t n;
    const char **names = all_names(a, &n);
    const char *s = names ? adgrad_suggest(name, names, n) : NULL;
    int rc = s ? app_errorf(a, "%s: no name '%s' in the program (did you mean '%s'?)", opt, name, s)
               : app_errorf(a, "%s: no name '%s' in the program", opt, name);
    free(names);
    return rc;
}

static int choose_output(app *a)
{
    const adgrad_program *p = a->prog;
    a->out = a->out_input = -1;
    a->out_node = ad_nil();
    int need_scalar = a->nclaims || a->gradcheck || a->hessian || a->hvp || a->trace;
    if (a->of) {
        int st, in;
        if (!find_name(a, a->of, &st, &in))
            return unknown_name(a, "--of", a->of);
        a->out = st;
        a->out_input = in;
        a->out_node = st >= 0 ? a->stmt[st] : a->in[in];
        a->out_label = a->of;
        if (!is_scalar(a, a->out_node) && !a->jacobian) {
            char sh[48];
            adgrad_shape_words(sh, sizeof sh, ad_node_shape(a->t, a->out_node));
            return app_errorf(a, "--of %s: %s is %s; a gradient needs a scalar (sum() it, or use "
                                 "--jacobian)",
                              a->of, a->of, sh);
        }
        return 0;
    }
    if (p->nstmt == 0)
        return 0;
    /* the last computed statement (for --jacobian), else the last scalar one */
    int pick = -1, last = -1;
    for (int i = p->nstmt - 1; i >= 0 && last < 0; i--)
        if (!a->model.is_input[i])
            last = i;
    if (a->jacobian)
        pick = last;
    for (int i = p->nstmt - 1; i >= 0 && pick < 0; i--)
        if (!a->model.is_input[i] && is_scalar(a, a->stmt[i]))
            pick = i;
    if (pick < 0) {
        if (!need_scalar)
            return 0;
        if (last < 0)
            return app_errorf(a, "nothing to differentiate: every statement gives an input its "
                                 "value");
        char sh[48];
        adgrad_shape_words(sh, sizeof sh, ad_node_shape(a->t, a->stmt[last]));
        return app_errorf(a, "no scalar statement to differentiate: the last one, %s, is %s "
                             "(sum() it, or choose a scalar with --of)",
                          a->model.label[last], sh);
    }
    a->out = pick;
    a->out_node = a->stmt[pick];
    a->out_label = a->model.label[pick];
    return 0;
}

static int choose_wrt(app *a)
{
    const adgrad_model *m = &a->model;
    if (!a->wrt_text) {
        a->wrt = malloc(((size_t)m->nin + 1) * sizeof *a->wrt);
        if (!a->wrt)
            return app_errorf(a, "out of memory");
        for (int i = 0; i < m->nin; i++)
            a->wrt[a->nwrt++] = i;
        return 0;
    }
    size_t len = strlen(a->wrt_text);
    a->wrt = malloc((len + 1) * sizeof *a->wrt);
    if (!a->wrt)
        return app_errorf(a, "out of memory");
    const char *s = a->wrt_text;
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != ',' && *e != ' ')
            e++;
        char name[ADGRAD_MAX_NAME + 2];
        if ((size_t)(e - s) > ADGRAD_MAX_NAME)
            return app_errorf(a, "--wrt: name too long: '%.*s...'", 20, s);
        memcpy(name, s, (size_t)(e - s));
        name[e - s] = '\0';
        int st, in;
        if (!find_name(a, name, &st, &in))
            return unknown_name(a, "--wrt", name);
        int code = in >= 0 ? in : -1 - st;
        for (int k = 0; k < a->nwrt; k++)
            if (a->wrt[k] == code)
                return app_errorf(a, "--wrt: '%s' is given twice", name);
        a->wrt[a->nwrt++] = code;
        s = e;
    }
    if (a->nwrt == 0)
        return app_errorf(a, "--wrt: no names given");
    return 0;
}

static const char *wrt_name(const app *a, int k)
{
    return a->wrt[k] >= 0 ? a->model.in[a->wrt[k]].name : a->model.label[-1 - a->wrt[k]];
}

static ad_node wrt_node(const app *a, int k)
{
    return a->wrt[k] >= 0 ? a->in[a->wrt[k]] : a->stmt[-1 - a->wrt[k]];
}

/* The derivative modes take inputs only. */
static int wrt_inputs_only(app *a, const char *opt)
{
    for (int k = 0; k < a->nwrt; k++)
        if (a->wrt[k] < 0)
            return app_errorf(a, "%s: '%s' is a statement; %s is taken with respect to inputs "
                                 "only (choose them with --wrt)",
                              opt, wrt_name(a, k), opt);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Text and JSON                                                       */
/* ------------------------------------------------------------------ */

/* "name    = value", the name padded to width; matrix rows one a line. */
static void named(adgrad_buf *b, const char *name, int width, const double *v, ad_shape s)
{
    adgrad_buf_printf(b, "%-*s = ", width, name);
    char sep[160];
    int indent = width + 4 < 150 ? width + 4 : 150;
    snprintf(sep, sizeof sep, ",\n%*s", indent, "");
    adgrad_buf_values(b, v, s, sep);
    adgrad_buf_puts(b, "\n");
}

static const double *zeros_for(ad_shape s, double **scratch)
{
    free(*scratch);
    *scratch = calloc(ad_shape_size(s) ? ad_shape_size(s) : 1, sizeof **scratch);
    return *scratch;
}

static int print_values(app *a)
{
    const adgrad_model *m = &a->model;
    const adgrad_program *p = a->prog;
    adgrad_buf *o = &a->text_out;
    int width = 7;
    for (int i = 0; i < p->nstmt; i++)
        if (!m->is_input[i] && (int)strlen(m->label[i]) > width)
            width = (int)strlen(m->label[i]);
    if (a->json) {
        app_json_key(a, "inputs");
        adgrad_buf_puts(&a->json_out, "{");
        for (int i = 0; i < m->nin; i++) {
            adgrad_buf_puts(&a->json_out, i ? ", " : "");
            adgrad_buf_json_str(&a->json_out, m->in[i].name, strlen(m->in[i].name));
            adgrad_buf_puts(&a->json_out, ": ");
            adgrad_buf_json_values(&a->json_out, m->in[i].value, m->in[i].shape);
        }
        adgrad_buf_puts(&a->json_out, "}");
        app_json_key(a, "values");
        adgrad_buf_puts(&a->json_out, "{");
        int first = 1;
        for (int i = 0; i < p->nstmt; i++) {
            if (m->is_input[i])
                continue;
            adgrad_buf_puts(&a->json_out, first ? "" : ", ");
            first = 0;
            adgrad_buf_json_str(&a->json_out, m->label[i], strlen(m->label[i]));
            adgrad_buf_puts(&a->json_out, ": ");
            adgrad_buf_json_values(&a->json_out, ad_value(a->t, a->stmt[i]),
                                   ad_node_shape(a->t, a->stmt[i]));
        }
        adgrad_buf_puts(&a->json_out, "}");
        return 0;
    }
    if (a->quiet)
        return 0;
    int computed = 0;
    for (int i = 0; i < p->nstmt; i++)
        computed += !m->is_input[i];
    if (computed)
        adgrad_buf_puts(o, "forward\n");
    for (int i = 0; i < p->nstmt; i++)
        if (!m->is_input[i])
            named(o, m->label[i], width, ad_value(a->t, a->stmt[i]), ad_node_shape(a->t, a->stmt[i]));
    return 0;
}

static int backward(app *a)
{
    if (ad_node_is_nil(a->out_node) || !is_scalar(a, a->out_node) || a->nwrt == 0)
        return 0;
    if (ad_backward(a->t, a->out_node) != AD_OK)
        return app_errorf(a, "the reverse sweep failed: %s", ad_tape_errmsg(a->t));
    return 0;
}

static void print_gradient(app *a)
{
    double *zero = NULL;
    const int has = !ad_node_is_nil(a->out_node) && is_scalar(a, a->out_node) && a->nwrt > 0;
    if (a->json) {
        if (!ad_node_is_nil(a->out_node)) {
            app_json_key(a, "output");
            adgrad_buf_json_str(&a->json_out, a->out_label, strlen(a->out_label));
        }
        if (has) {
            app_json_key(a, "gradient");
            adgrad_buf_puts(&a->json_out, "{");
            for (int k = 0; k < a->nwrt; k++) {
                ad_node n = wrt_node(a, k);
                ad_shape s = ad_node_shape(a->t, n);
                const double *g = ad_grad(a->t, n);
                adgrad_buf_puts(&a->json_out, k ? ", " : "");
                adgrad_buf_json_str(&a->json_out, wrt_name(a, k), strlen(wrt_name(a, k)));
                adgrad_buf_puts(&a->json_out, ": ");
                adgrad_buf_json_values(&a->json_out, g ? g : zeros_for(s, &zero), s);
            }
            adgrad_buf_puts(&a->json_out, "}");
        }
        free(zero);
        return;
    }
    if (a->quiet)
        return;
    adgrad_buf *o = &a->text_out;
    if (!has) {
        if (a->model.nin > 0 && ad_node_is_nil(a->out_node))
            adgrad_buf_puts(o, "(no scalar statement to differentiate: sum() one, or use --jacobian)\n");
        else if (a->model.nin > 0 && !a->jacobian)
            adgrad_buf_puts(o, "(the output is not a scalar: use --of, or --jacobian)\n");
        return;
    }
    adgrad_buf_puts(o, "backward (every value from the reverse sweep)\n");
    int width = 7;
    for (int k = 0; k < a->nwrt; k++) {
        int w = (int)(strlen(a->out_label) + strlen(wrt_name(a, k)) + 3);
        if (w > width)
            width = w;
    }
    for (int k = 0; k < a->nwrt; k++) {
        ad_node n = wrt_node(a, k);
        ad_shape s = ad_node_shape(a->t, n);
        const double *g = ad_grad(a->t, n);
        char label[2 * ADGRAD_MAX_NAME + 8];
        snprintf(label, sizeof label, "d%s/d%s", a->out_label, wrt_name(a, k));
        named(o, label, width, g ? g : zeros_for(s, &zero), s);
    }
    free(zero);
}

static void write_to_buf(void *ud, const char *text, size_t len) { adgrad_buf_put(ud, text, len); }

static int trace_and_dot(app *a)
{
    char errbuf[512] = "";
    ad_print_opts po = {0};
    po.errbuf = errbuf;
    po.errcap = sizeof errbuf;
    if (a->trace) {
        adgrad_buf tb = {0};
        if (a->nwrt == 0)
            return app_errorf(a, "--trace: the program has no inputs: nothing is differentiated");
        int st = ad_trace(a->t, a->out_node, write_to_buf, &tb, &po);
        if (st != AD_OK || tb.oom) {
            adgrad_buf_free(&tb);
            return app_errorf(a, "--trace: %s", errbuf[0] ? errbuf : ad_strstatus(st));
        }
        if (a->json) {
            app_json_key(a, "trace");
            adgrad_buf_json_str(&a->json_out, tb.s ? tb.s : "", tb.len);
        } else {
            adgrad_buf_puts(&a->text_out, a->text_out.len ? "\n" : "");
            adgrad_buf_put(&a->text_out, tb.s ? tb.s : "", tb.len);
        }
        adgrad_buf_free(&tb);
    }
    if (a->dot) {
        adgrad_buf db = {0};
        int st = ad_export_dot(a->t, a->out_node, write_to_buf, &db, &po);
        if (st != AD_OK || db.oom) {
            adgrad_buf_free(&db);
            return app_errorf(a, "--dot: %s", errbuf[0] ? errbuf : ad_strstatus(st));
        }
        int rc = 0;
        if (!strcmp(a->dot, "-")) {
            if (a->json) {
                app_json_key(a, "dot");
                adgrad_buf_json_str(&a->json_out, db.s ? db.s : "", db.len);
            } else {
                adgrad_buf_puts(&a->text_out, a->text_out.len ? "\n" : "");
                adgrad_buf_put(&a->text_out, db.s ? db.s : "", db.len);
            }
        } else {
            FILE *f = fopen(a->dot, "w");
            if (!f) {
                rc = app_errorf(a, "--dot: %s: %s", a->dot, strerror(errno));
            } else {
                fwrite(db.s ? db.s : "", 1, db.len, f);
                int bad = ferror(f);
                if (fclose(f) != 0 || bad)
                    rc = app_errorf(a, "--dot: %s: write error", a->dot);
            }
        }
        adgrad_buf_free(&db);
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Derivative modes                                                    */
/* ------------------------------------------------------------------ */

static int mode_inputs(app *a, const char *opt, ad_node **in, size_t *total)
{
    if (wrt_inputs_only(a, opt))
        return EXIT_USAGE;
    if (a->nwrt == 0)
        return app_errorf(a, "%s: the program has no inputs", opt);
    *in = malloc((size_t)a->nwrt * sizeof **in);
    if (!*in)
        return app_errorf(a, "out of memory");
    *total = 0;
    for (int k = 0; k < a->nwrt; k++) {
        (*in)[k] = wrt_node(a, k);
        *total += ad_shape_size(ad_node_shape(a->t, (*in)[k]));
    }
    return 0;
}

/* A block of a row-major M x N matrix: rows r0.., columns c0..c0+w. */
static void block(adgrad_buf *b, const char *label, int width, const double *J, size_t N, size_t M,
                  size_t c0, size_t w, ad_shape wshape)
{
    double *blk = malloc((M * w > 0 ? M * w : 1) * sizeof *blk);
    if (!blk) {
        b->oom = 1;
        return;
    }
    for (size_t r = 0; r < M; r++)
        for (size_t c = 0; c < w; c++)
            blk[r * w + c] = J[r * N + c0 + c];
    ad_shape s = M == 1 ? wshape : w == 1 ? ad_shape_vec((uint32_t)M)
                                          : ad_shape_mat((uint32_t)M, (uint32_t)w);
    named(b, label, width, blk, s);
    free(blk);
}

static void json_matrix(adgrad_buf *b, const double *v, size_t rows, size_t cols)
{
    adgrad_buf_puts(b, "[");
    for (size_t r = 0; r < rows; r++) {
        adgrad_buf_puts(b, r ? ", [" : "[");
        for (size_t c = 0; c < cols; c++) {
            if (c)
                adgrad_buf_puts(b, ", ");
            adgrad_buf_json_num(b, v[r * cols + c]);
        }
        adgrad_buf_puts(b, "]");
    }
    adgrad_buf_puts(b, "]");
}

static void json_inputs(app *a)
{
    adgrad_buf_puts(&a->json_out, "\"inputs\": [");
    for (int k = 0; k < a->nwrt; k++) {
        adgrad_buf_puts(&a->json_out, k ? ", " : "");
        adgrad_buf_json_str(&a->json_out, wrt_name(a, k), strlen(wrt_name(a, k)));
    }
    adgrad_buf_puts(&a->json_out, "]");
}

static int run_jacobian(app *a)
{
    ad_node *in;
    size_t N;
    if (ad_node_is_nil(a->out_node))
        return app_errorf(a, "--jacobian: the program has no statement");
    if (mode_inputs(a, "--jacobian", &in, &N))
        return EXIT_USAGE;
    const ad_shape os = ad_node_shape(a->t, a->out_node);
    const size_t M = ad_shape_size(os);
    if (M > 0 && N > SIZE_MAX / sizeof(double) / M) {
        free(in);
        return app_errorf(a, "--jacobian: too large");
    }
    double *J = calloc(M * N > 0 ? M * N : 1, sizeof *J);
    if (!J) {
        free(in);
        return app_errorf(a, "--jacobian: out of memory (%zu x %zu)", M, N);
    }
    int st = ad_jacobian(a->t, a->out_node, a->nwrt, in, J, AD_JAC_AUTO);
    if (st != AD_OK) {
        free(in);
        free(J);
        return app_errorf(a, "--jacobian: %s", ad_tape_errmsg(a->t));
    }
    if (a->json) {
        app_json_key(a, "jacobian");
        adgrad_buf_puts(&a->json_out, "{\"of\": ");
        adgrad_buf_json_str(&a->json_out, a->out_label, strlen(a->out_label));
        adgrad_buf_puts(&a->json_out, ", ");
        json_inputs(a);
        adgrad_buf_puts(&a->json_out, ", \"matrix\": ");
        json_matrix(&a->json_out, J, M, N);
        adgrad_buf_puts(&a->json_out, "}");
    } else {
        adgrad_buf *o = &a->text_out;
        adgrad_buf_puts(o, o->len ? "\n" : "");
        adgrad_buf_printf(o, "jacobian of %s (", a->out_label);
        adgrad_buf_shape(o, os);
        adgrad_buf_printf(o, ") with respect to %s: %zux%zu%s\n",
                          a->nwrt == 1 ? wrt_name(a, 0) : "the inputs", M, N,
                          M > 1 ? "; row i is the gradient of element i (a matrix input flattened)" : "");
        int width = 7;
        for (int k = 0; k < a->nwrt; k++) {
            int w = (int)(strlen(a->out_label) + strlen(wrt_name(a, k)) + 3);
            width = w > width ? w : width;
        }
        size_t c0 = 0;
        for (int k = 0; k < a->nwrt; k++) {
            ad_shape ws = ad_node_shape(a->t, in[k]);
            char label[2 * ADGRAD_MAX_NAME + 8];
            snprintf(label, sizeof label, "d%s/d%s", a->out_label, wrt_name(a, k));
            block(o, label, width, J, N, M, c0, ad_shape_size(ws), ws);
            c0 += ad_shape_size(ws);
        }
    }
    free(in);
    free(J);
    return 0;
}

static int run_hessian(app *a)
{
    ad_node *in;
    size_t N;
    if (mode_inputs(a, "--hessian", &in, &N))
        return EXIT_USAGE;
    if (N > 4096) {
        free(in);
        return app_errorf(a, "--hessian: %zu inputs make a %zux%zu matrix; use --hvp", N, N, N);
    }
    double *H = calloc(N * N > 0 ? N * N : 1, sizeof *H);
    if (!H) {
        free(in);
        return app_errorf(a, "--hessian: out of memory");
    }
    int st = ad_hessian(a->t, a->out_node, a->nwrt, in, H);
    if (st != AD_OK) {
        free(in);
        free(H);
        return app_errorf(a, "--hessian: %s", ad_tape_errmsg(a->t));
    }
    if (a->json) {
        app_json_key(a, "hessian");
        adgrad_buf_puts(&a->json_out, "{\"of\": ");
        adgrad_buf_json_str(&a->json_out, a->out_label, strlen(a->out_label));
        adgrad_buf_puts(&a->json_out, ", ");
        json_inputs(a);
        adgrad_buf_puts(&a->json_out, ", \"matrix\": ");
        json_matrix(&a->json_out, H, N, N);
        adgrad_buf_puts(&a->json_out, "}");
    } else {
        adgrad_buf *o = &a->text_out;
        adgrad_buf_puts(o, o->len ? "\n" : "");
        adgrad_buf_printf(o, "hessian of %s: %zux%zu, block by block (row: the first input's "
                             "element, column: the second's)\n",
                          a->out_label, N, N);
        int width = 7;
        for (int k = 0; k < a->nwrt; k++)
            for (int l = k; l < a->nwrt; l++) {
                int w = (int)(strlen(a->out_label) + strlen(wrt_name(a, k)) + strlen(wrt_name(a, l)) + 6);
                width = w > width ? w : width;
            }
        size_t r0 = 0;
        for (int k = 0; k < a->nwrt; k++) {
            size_t rk = ad_shape_size(ad_node_shape(a->t, in[k])), c0 = r0;
            for (int l = k; l < a->nwrt; l++) {
                ad_shape sl = ad_node_shape(a->t, in[l]);
                size_t cl = ad_shape_size(sl);
                char label[3 * ADGRAD_MAX_NAME + 16];
                snprintf(label, sizeof label, "d2%s/d%s d%s", a->out_label, wrt_name(a, k), wrt_name(a, l));
                ad_shape ks = ad_node_shape(a->t, in[k]);
                /* the block rows r0..r0+rk, columns c0..c0+cl */
                block(o, label, width, H + r0 * N, N, rk, c0, cl,
                      rk == 1 ? sl : (cl == 1 ? ks : sl));
                c0 += cl;
            }
            r0 += rk;
        }
    }
    free(in);
    free(H);
    return 0;
}

static int run_hvp(app *a)
{
    ad_node *in;
    size_t N;
    adgrad_error err = {0};
    if (mode_inputs(a, "--hvp", &in, &N))
        return EXIT_USAGE;
    adgrad_program *vp = NULL;
    double *v = calloc(N ? 2 * N : 1, sizeof *v);
    const double **vp_in = calloc((size_t)a->nwrt, sizeof *vp_in);
    double **hv = calloc((size_t)a->nwrt, sizeof *hv);
    int rc = 0;
    if (!v || !vp_in || !hv) {
        rc = app_errorf(a, "out of memory");
        goto out;
    }
    if (adgrad_parse(a->hvp, strlen(a->hvp), ADGRAD_PARSE_PROGRAM, &vp, &err)) {
        rc = app_error(a, "--hvp", NULL, &err);
        goto out;
    }
    for (int i = 0; i < vp->nstmt && !rc; i++) {
        const adgrad_stmt *st = &vp->stmt[i];
        ad_shape s;
        int k = -1;
        for (int j = 0; st->name && j < a->nwrt; j++)
            if (!strcmp(wrt_name(a, j), st->name))
                k = j;
        if (!st->name) {
            adgrad_fail(&err, st->line, st->col, "a direction reads 'W = [1, 0, 0]; b = 1'");
            rc = 1;
        } else if (k < 0) {
            adgrad_fail(&err, st->line, st->col, "'%s' is not one of the inputs differentiated "
                                                 "(--wrt)", st->name);
            rc = 1;
        } else if (!adgrad_literal(st->expr, &s, NULL)) {
            if (!literal_error(st->expr, &err))
                adgrad_fail(&err, st->line, st->col, "not a value");
            rc = 1;
        } else {
            ad_shape ws = ad_node_shape(a->t, in[k]);
            if (s.ndim != ws.ndim || s.rows != ws.rows || s.cols != ws.cols) {
                char s1[48], s2[48];
                adgrad_shape_words(s1, sizeof s1, s);
                adgrad_shape_words(s2, sizeof s2, ws);
                adgrad_fail(&err, st->expr->line, st->expr->col,
                            "the direction for %s is %s but %s is %s", st->name, s1, st->name, s2);
                rc = 1;
            } else {
                size_t off = 0;
                for (int j = 0; j < k; j++)
                    off += ad_shape_size(ad_node_shape(a->t, in[j]));
                adgrad_literal(st->expr, &s, v + off);
            }
        }
    }
    if (rc) {
        rc = app_error(a, "--hvp", vp, &err);
        goto out;
    }
    size_t off = 0;
    for (int k = 0; k < a->nwrt; k++) {
        vp_in[k] = v + off;
        hv[k] = v + N + off;
        off += ad_shape_size(ad_node_shape(a->t, in[k]));
    }
    if (ad_hvp(a->t, a->out_node, a->nwrt, in, vp_in, hv, NULL) != AD_OK) {
        rc = app_errorf(a, "--hvp: %s", ad_tape_errmsg(a->t));
        goto out;
    }
    if (a->json) {
        app_json_key(a, "hvp");
        adgrad_buf_puts(&a->json_out, "{\"of\": ");
        adgrad_buf_json_str(&a->json_out, a->out_label, strlen(a->out_label));
        adgrad_buf_puts(&a->json_out, ", \"direction\": {");
        for (int k = 0; k < a->nwrt; k++) {
            adgrad_buf_puts(&a->json_out, k ? ", " : "");
            adgrad_buf_json_str(&a->json_out, wrt_name(a, k), strlen(wrt_name(a, k)));
            adgrad_buf_puts(&a->json_out, ": ");
            adgrad_buf_json_values(&a->json_out, vp_in[k], ad_node_shape(a->t, in[k]));
        }
        adgrad_buf_puts(&a->json_out, "}, \"hv\": {");
        for (int k = 0; k < a->nwrt; k++) {
            adgrad_buf_puts(&a->json_out, k ? ", " : "");
            adgrad_buf_json_str(&a->json_out, wrt_name(a, k), strlen(wrt_name(a, k)));
            adgrad_buf_puts(&a->json_out, ": ");
            adgrad_buf_json_values(&a->json_out, hv[k], ad_node_shape(a->t, in[k]));
        }
        adgrad_buf_puts(&a->json_out, "}}");
    } else {
        adgrad_buf *o = &a->text_out;
        adgrad_buf_puts(o, o->len ? "\n" : "");
        adgrad_buf_printf(o, "hessian-vector product of %s along v (", a->out_label);
        for (int k = 0; k < a->nwrt; k++) {
            adgrad_buf_printf(o, "%sv_%s = ", k ? ", " : "", wrt_name(a, k));
            adgrad_buf_values(o, vp_in[k], ad_node_shape(a->t, in[k]), NULL);
        }
        adgrad_buf_puts(o, ")\n");
        int width = 7;
        for (int k = 0; k < a->nwrt; k++) {
            int w = (int)(strlen(a->out_label) + strlen(wrt_name(a, k)) + 7);
            width = w > width ? w : width;
        }
        for (int k = 0; k < a->nwrt; k++) {
            char label[2 * ADGRAD_MAX_NAME + 16];
            snprintf(label, sizeof label, "d2%s/d%s dv", a->out_label, wrt_name(a, k));
            named(o, label, width, hv[k], ad_node_shape(a->t, in[k]));
        }
    }
out:
    adgrad_program_free(vp);
    free(v);
    free(vp_in);
    free(hv);
    free(in);
    return rc;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void app_free(app *a)
{
    app_claims_free(a);
    adgrad_model_free(&a->model);
    adgrad_program_free(a->prog);
    ad_tape_free(a->t);
    free(a->text);
    free(a->in);
    free(a->stmt);
    free(a->wrt);
    free(a->expr);
    free(a->bind);
    adgrad_buf_free(&a->text_out);
    adgrad_buf_free(&a->json_out);
}

static int run(app *a, int argc, char **argv)
{
    adgrad_error err = {0};
    int rc = parse_args(a, argc, argv);
    if (rc >= 0)
        return rc;
    if (read_program(a))
        return EXIT_USAGE;
    if (adgrad_parse_text(a->text, a->text_len, &a->prog, &err))
        return app_error(a, NULL, &(adgrad_program){.text = a->text, .len = a->text_len}, &err);
    if (a->prog->nstmt == 0)
        return app_errorf(a, "the program is empty");
    if (adgrad_model_init(&a->model, a->prog, &err))
        return app_error(a, NULL, a->prog, &err);
    if (apply_values(a) || choose_wrt(a) || record(a) || choose_output(a))
        return EXIT_USAGE;
    if ((a->hessian || a->hvp) && (ad_node_is_nil(a->out_node) || !is_scalar(a, a->out_node)))
        return app_errorf(a, "--hessian and --hvp need a scalar output");
    if (a->nclaims && app_claims_prepare(a))
        return EXIT_USAGE;
    if (print_values(a) || backward(a))
        return EXIT_USAGE;
    print_gradient(a);
    if (trace_and_dot(a))
        return EXIT_USAGE;
    if (a->jacobian && run_jacobian(a))
        return EXIT_USAGE;
    if (a->hessian && run_hessian(a))
        return EXIT_USAGE;
    if (a->hvp && run_hvp(a))
        return EXIT_USAGE;
    int verdict = EXIT_AGREE;
    if (a->nclaims) {
        rc = app_claims_run(a);
        if (rc == EXIT_USAGE)
            return rc;
        if (rc == EXIT_DIFFER)
            verdict = EXIT_DIFFER;
    }
    if (a->gradcheck) {
        rc = app_gradcheck_run(a);
        if (rc == EXIT_USAGE)
            return rc;
        if (rc == EXIT_DIFFER)
            verdict = EXIT_DIFFER;
    }
    if (a->text_out.oom || a->json_out.oom)
        return app_errorf(a, "out of memory");
    if (a->json) {
        if (!a->json_fields)
            adgrad_buf_puts(&a->json_out, "{");
        adgrad_buf_puts(&a->json_out, "\n}\n");
        fputs(a->json_out.s, stdout);
    } else if (a->text_out.s) {
        fputs(a->text_out.s, stdout);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "adgrad: standard output: write error\n");
        return EXIT_USAGE;
    }
    return verdict;
}

int main(int argc, char **argv)
{
    app a;
    memset(&a, 0, sizeof a);
    a.out = a.out_input = -1;
    int rc = run(&a, argc, argv);
    app_free(&a);
    return rc;
}
