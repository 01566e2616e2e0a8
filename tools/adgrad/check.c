/* check.c -- --check (your derivatives against the tape, with
 * ad_handcheck_ex, which also diagnoses a failing claim) and --gradcheck
 * (the tape against central differences, with ad_gradcheck).
 *
 * A claim 'dW = EXPR' is about an input: ad_handcheck compares it with
 * the tape's dJ/dW at the given point and at random points, calling back
 * here to evaluate EXPR at each point (the program is recorded again, on a
 * scratch tape, with the inputs as constants at that point, then the
 * claims in order, so a claim may use every name of the program and the
 * claims before it).
 *
 * A claim 'dz = EXPR' about a statement z is checked the same way by
 * giving the check one more input, s_z, added to z (z + s_z replaces z for
 * the statements after it): dJ/ds_z is dJ/dz. s_z is 0 at the given point
 * and moves like the other inputs at the random points, shifting z, and
 * EXPR is evaluated with that same shift, so the two sides always describe
 * one point. The report says by how much z was shifted.
 *
 * A failing claim gets the library's diagnosis (a constant factor, a
 * transpose, a local derivative left out, ...: see docs/verifying.md),
 * which names the nodes of the check's recording -- named here after the
 * program's statements and expressions, so it says "node 'yhat' =
 * relu(z)". The diagnosis needs random points: none with --points 0. A
 * NaN or an infinity among your values is an error of ad_handcheck_ex;
 * adgrad counts it as a differing element instead (as ad_handcheck does),
 * by running ad_handcheck, without a diagnosis. */
#include "app.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROWS 40
#define SMALL_POINT 24

typedef struct ck {
    app *a;
    int nin;              /* the program's inputs                            */
    int ndelta;           /* the statement shifts: check inputs nin..        */
    int *delta_stmt;      /* ndelta                                          */
    int *target;          /* nclaims: the check input each claim is about    */
    int *claim_of;        /* nin + ndelta: the claim about each, or -1       */
    ad_node *shift;       /* nstmt                                           */
    ad_node *rec_nodes;   /* nstmt, for the check's recording                */
    ad_node *cb_nodes;    /* nstmt, for the callback's                       */
    ad_node *cb_in;       /* nin + ndelta                                    */
    ad_tape *scratch;
    ad_check_input *ci;   /* nin + ndelta                                    */
    double *zeros;        /* the shifts at the given point                   */
    size_t *off;          /* nin + ndelta + 1: element offsets               */
    double *points;       /* npoints * total: every point, for the report    */
    int npoints, seen;
    int failed;
    int nonfinite;        /* a claim's value was NaN or infinite somewhere  */
    adgrad_error err;
    int err_claim;        /* the claim the error is in, or -1: the program   */
} ck;

static void ck_free(ck *c)
{
    free(c->delta_stmt);
    free(c->target);
    free(c->claim_of);
    free(c->shift);
    free(c->rec_nodes);
    free(c->cb_nodes);
    free(c->cb_in);
    ad_tape_free(c->scratch);
    free(c->ci);
    free(c->zeros);
    free(c->off);
    free(c->points);
}

static ad_shape stmt_shape(const app *a, int s) { return ad_node_shape(a->t, a->stmt[s]); }

/* The check's recording: the program on the check's tape from its input
 * leaves, each shifted statement plus its shift. */
static ad_node check_fn(ad_tape *t, const ad_node *in, int n, void *ud)
{
    ck *c = ud;
    app *a = c->a;
    for (int s = 0; s < a->prog->nstmt; s++)
        c->shift[s] = ad_nil();
    for (int k = 0; k < c->ndelta && c->nin + k < n; k++)
        c->shift[c->delta_stmt[k]] = in[c->nin + k];
    adgrad_error err;
    /* nodes named after the program (1): the diagnoses name them */
    if (adgrad_model_record(t, &a->model, in, c->shift, c->rec_nodes, NULL, 1, &err))
        return ad_nil();
    return a->out >= 0 ? c->rec_nodes[a->out] : in[a->out_input];
}

/* The claims at one point: the program recorded with constants, then
 * each claim, copied into grad[] for the check inputs it is about. */
static int claims_at(ck *c, const double *const *point, double *const *grad, int n)
{
    app *a = c->a;
    ad_tape *t = c->scratch;
    ad_tape_reset(t);
    for (int s = 0; s < a->prog->nstmt; s++)
        c->shift[s] = ad_nil();
    for (int i = 0; i < n; i++) {
        c->cb_in[i] = ad_constant(t, c->ci[i].shape, point[i]);
        if (i >= c->nin)
            c->shift[c->delta_stmt[i - c->nin]] = c->cb_in[i];
    }
    if (ad_tape_status(t) != AD_OK) {
        c->err_claim = -1;
        return adgrad_fail(&c->err, 0, 0, "%s", ad_tape_errmsg(t));
    }
    adgrad_scope sc = {0};
    int rc = 0;
    if (adgrad_model_record(t, &a->model, c->cb_in, c->shift, c->cb_nodes, &sc, 0, &c->err)) {
        c->err_claim = -1;
        rc = 1;
    }
    for (int k = 0; k < a->nclaims && !rc; k++) {
        const claim *cl = &a->claims[k];
        ad_node r = adgrad_record_expr(t, cl->prog, cl->prog->stmt[0].expr, &sc, 0, &c->err);
        if (ad_node_is_nil(r)) {
            c->err_claim = k;
            rc = 1;
            break;
        }
        ad_shape s = ad_node_shape(t, r);
        if (s.ndim != cl->shape.ndim || s.rows != cl->shape.rows || s.cols != cl->shape.cols) {
            char s1[48], s2[48];
            int line, col;
            adgrad_shape_words(s1, sizeof s1, s);
            adgrad_shape_words(s2, sizeof s2, cl->shape);
            adgrad_position(cl->prog->text, cl->prog->stmt[0].expr->begin, &line, &col);
            adgrad_fail(&c->err, line, col, "%s is %s but %s is %s: a derivative has the shape of "
                                            "what it is taken with respect to",
                        cl->prog->stmt[0].name, s1, cl->prog->stmt[0].name + 1, s2);
            c->err_claim = k;
            rc = 1;
            break;
        }
        if (adgrad_scope_add(&sc, cl->prog->stmt[0].name, r)) {
            c->err_claim = -1;
            rc = adgrad_fail(&c->err, 0, 0, "out of memory");
            break;
        }
        if (grad && grad[c->target[k]])
            memcpy(grad[c->target[k]], ad_value(t, r), ad_shape_size(s) * sizeof(double));
    }
    adgrad_scope_free(&sc);
    return rc;
}

static int yours(const double *const *point, double *const *grad, int n, void *ud)
{
    ck *c = ud;
    if (claims_at(c, point, grad, n)) {
        c->failed = 1;
        return 1;
    }
    if (c->seen < c->npoints) {
        size_t total = c->off[n];
        for (int i = 0; i < n; i++)
            memcpy(c->points + (size_t)c->seen * total + c->off[i], point[i],
                   ad_shape_size(c->ci[i].shape) * sizeof(double));
    }
    c->seen++;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; grad[i] && j < ad_shape_size(c->ci[i].shape); j++)
            if (!isfinite(grad[i][j]))
                c->nonfinite = 1;
    return 0;
}

static void claim_label(app *a, int k)
{
    if (a->nclaims == 1)
        snprintf(a->claims[k].label, sizeof a->claims[k].label, "--check");
    else
        snprintf(a->claims[k].label, sizeof a->claims[k].label, "--check %d", k + 1);
}

static int claim_fail(app *a, int k, int line, int col, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static int claim_fail(app *a, int k, int line, int col, const char *fmt, ...)
{
    adgrad_error err = {0};
    va_list ap;
    va_start(ap, fmt);
    err.line = line;
    err.col = col;
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    return app_error(a, a->claims[k].label, a->claims[k].prog, &err);
}

static int ck_init(ck *c, app *a, int with_claims)
{
    memset(c, 0, sizeof *c);
    c->a = a;
    c->nin = a->model.nin;
    c->err_claim = -1;
    const int nstmt = a->prog->nstmt;
    if (with_claims) {
        c->delta_stmt = malloc(((size_t)a->nclaims + 1) * sizeof *c->delta_stmt);
        c->target = malloc(((size_t)a->nclaims + 1) * sizeof *c->target);
        if (!c->delta_stmt || !c->target)
            return 1;
        for (int k = 0; k < a->nclaims; k++) {
            if (a->claims[k].input >= 0) {
                c->target[k] = a->claims[k].input;
            } else {
                c->target[k] = c->nin + c->ndelta;
                c->delta_stmt[c->ndelta++] = a->claims[k].stmt;
            }
        }
    }
    const int n = c->nin + c->ndelta;
    c->claim_of = malloc(((size_t)n + 1) * sizeof *c->claim_of);
    c->shift = calloc((size_t)nstmt + 1, sizeof *c->shift);
    c->rec_nodes = calloc((size_t)nstmt + 1, sizeof *c->rec_nodes);
    c->cb_nodes = calloc((size_t)nstmt + 1, sizeof *c->cb_nodes);
    c->cb_in = calloc((size_t)n + 1, sizeof *c->cb_in);
    c->ci = calloc((size_t)n + 1, sizeof *c->ci);
    c->off = calloc((size_t)n + 2, sizeof *c->off);
    c->scratch = ad_tape_new(NULL);
    if (!c->claim_of || !c->shift || !c->rec_nodes || !c->cb_nodes || !c->cb_in || !c->ci ||
        !c->off || !c->scratch)
        return 1;
    size_t zeros = 0;
    for (int k = 0; k < c->ndelta; k++)
        zeros += ad_shape_size(stmt_shape(a, c->delta_stmt[k]));
    c->zeros = calloc(zeros + 1, sizeof *c->zeros);
    if (!c->zeros)
        return 1;
    size_t z = 0;
    for (int i = 0; i < n; i++) {
        c->claim_of[i] = -1;
        ad_check_input *x = &c->ci[i];
        if (i < c->nin) {
            x->name = a->model.in[i].name;
            x->shape = a->model.in[i].shape;
            x->value = a->model.in[i].value;
        } else {
            int s = c->delta_stmt[i - c->nin];
            x->name = a->model.label[s];
            x->shape = stmt_shape(a, s);
            x->value = c->zeros + z;
            z += ad_shape_size(x->shape);
        }
        x->role = AD_INPUT_SKIP;
        c->off[i + 1] = c->off[i] + ad_shape_size(x->shape);
    }
    if (with_claims)
        for (int k = 0; k < a->nclaims; k++) {
            c->claim_of[c->target[k]] = k;
            c->ci[c->target[k]].role = AD_INPUT_COMPARE;
        }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Preparing the claims                                                */
/* ------------------------------------------------------------------ */

static int is_program_name(const app *a, const char *name)
{
    return adgrad_model_input(&a->model, name) >= 0 || adgrad_model_stmt(&a->model, name) >= 0;
}

int app_claims_prepare(app *a)
{
    if (ad_node_is_nil(a->out_node) || ad_node_shape(a->t, a->out_node).ndim != 0)
        return app_errorf(a, "--check needs a scalar output (name one with --of)");
    for (int k = 0; k < a->nclaims; k++) {
        claim *cl = &a->claims[k];
        adgrad_error err = {0};
        claim_label(a, k);
        if (adgrad_parse(cl->text, strlen(cl->text), ADGRAD_PARSE_CLAIM, &cl->prog, &err)) {
            adgrad_program tmp = {0};
            tmp.text = (char *)cl->text;
            tmp.len = strlen(cl->text);
            return app_error(a, cl->label, &tmp, &err);
        }
        const adgrad_stmt *st = &cl->prog->stmt[0];
        const char *target = st->name + 1;
        if (st->of && strcmp(st->of, a->out_label))
            return claim_fail(a, k, st->line, st->col,
                              "d%s/%s: the output is %s, not %s (choose it with --of %s)", st->of,
                              st->name, a->out_label, st->of, st->of);
        if (is_program_name(a, st->name))
            return claim_fail(a, k, st->line, st->col,
                              "'%s' is a name of the program; a claim needs a new name", st->name);
        cl->input = adgrad_model_input(&a->model, target);
        cl->stmt = cl->input >= 0 ? -1 : adgrad_model_stmt(&a->model, target);
        if (cl->input < 0 && cl->stmt < 0) {
            const char **names = malloc(((size_t)a->model.nin + (size_t)a->prog->nstmt + 1) *
                                        sizeof *names);
            size_t n = 0;
            for (int i = 0; names && i < a->model.nin; i++)
                names[n++] = a->model.in[i].name;
            for (int i = 0; names && i < a->prog->nstmt; i++)
                if (!a->model.is_input[i])
                    names[n++] = a->model.label[i];
            const char *s = names ? adgrad_suggest(target, names, n) : NULL;
            char hint[96] = "";
            if (s)
                snprintf(hint, sizeof hint, " (did you mean d%s?)", s);
            free(names);
            return claim_fail(a, k, st->line, st->col,
                              "%s: '%s' is neither an input nor a statement of the program%s",
                              st->name, target, hint);
        }
        cl->shape = cl->input >= 0 ? a->model.in[cl->input].shape : stmt_shape(a, cl->stmt);
        for (int j = 0; j < k; j++)
            if ((cl->input >= 0 && a->claims[j].input == cl->input) ||
                (cl->stmt >= 0 && a->claims[j].stmt == cl->stmt))
                return claim_fail(a, k, st->line, st->col, "%s is already claimed by %s", st->name,
                                  a->claims[j].label);
    }
    /* Record the claims once at the given point: names, shapes. */
    ck c;
    int rc = 0;
    if (ck_init(&c, a, 1)) {
        ck_free(&c);
        return app_errorf(a, "out of memory");
    }
    const int n = c.nin + c.ndelta;
    const double **point = malloc(((size_t)n + 1) * sizeof *point);
    if (!point) {
        rc = app_errorf(a, "out of memory");
    } else {
        for (int i = 0; i < n; i++)
            point[i] = c.ci[i].value;
        if (claims_at(&c, point, NULL, n)) {
            if (c.err_claim >= 0)
                rc = app_error(a, a->claims[c.err_claim].label, a->claims[c.err_claim].prog, &c.err);
            else
                rc = app_error(a, NULL, a->prog, &c.err);
        }
    }
    free(point);
    ck_free(&c);
    return rc;
}

void app_claims_free(app *a)
{
    for (int k = 0; k < a->nclaims; k++)
        adgrad_program_free(a->claims[k].prog);
    free(a->claims);
    a->claims = NULL;
    a->nclaims = 0;
}

/* ------------------------------------------------------------------ */
/* The report                                                          */
/* ------------------------------------------------------------------ */

static void num_g(adgrad_buf *b, double v)
{
    if (isnan(v) || isinf(v))
        adgrad_buf_num(b, v);
    else
        adgrad_buf_printf(b, "%g", v == 0 ? 0.0 : v);
}

static void values_g(adgrad_buf *b, const double *v, ad_shape s)
{
    if (s.ndim == 0) {
        num_g(b, v[0]);
        return;
    }
    if (s.ndim == 1) {
        adgrad_buf_puts(b, "(");
        for (uint32_t i = 0; i < s.rows; i++) {
            adgrad_buf_puts(b, i ? ", " : "");
            num_g(b, v[i]);
        }
        adgrad_buf_puts(b, ")");
        return;
    }
    adgrad_buf_puts(b, "[");
    for (uint32_t r = 0; r < s.rows; r++) {
        adgrad_buf_puts(b, r ? ", [" : "[");
        for (uint32_t k = 0; k < s.cols; k++) {
            adgrad_buf_puts(b, k ? ", " : "");
            num_g(b, v[(size_t)r * s.cols + k]);
        }
        adgrad_buf_puts(b, "]");
    }
    adgrad_buf_puts(b, "]");
}

static void describe_point(adgrad_buf *b, const ck *c, int p)
{
    const size_t total = c->off[c->nin + c->ndelta];
    if (p > 0)
        adgrad_buf_printf(b, "random point %d", p);
    else
        adgrad_buf_puts(b, "the given point");
    if (p >= c->seen || c->off[c->nin] > SMALL_POINT)
        return;
    const double *x = c->points + (size_t)p * total;
    adgrad_buf_puts(b, " (");
    for (int i = 0; i < c->nin; i++) {
        adgrad_buf_printf(b, "%s%s = ", i ? ", " : "", c->ci[i].name);
        values_g(b, x + c->off[i], c->ci[i].shape);
    }
    for (int i = c->nin; p > 0 && i < c->nin + c->ndelta; i++) {
        adgrad_buf_printf(b, "%s%s shifted by ", i == c->nin ? "; " : ", ", c->ci[i].name);
        values_g(b, x + c->off[i], c->ci[i].shape);
    }
    adgrad_buf_puts(b, ")");
}

static void mismatch(adgrad_buf *b, const ck *c, const ad_check_entry *e)
{
    app_elem_name(b, "d", c->ci[e->input].name, c->ci[e->input].shape, e->elem);
    adgrad_buf_puts(b, ": yours ");
    adgrad_buf_num(b, e->other);
    adgrad_buf_puts(b, ", tape ");
    adgrad_buf_num(b, e->tape);
}

static void effective_tol(const app *a, double def_atol, double def_rtol, double *atol, double *rtol)
{
    if (a->atol == 0 && a->rtol == 0) {
        *atol = def_atol;
        *rtol = def_rtol;
    } else {
        *atol = a->atol;
        *rtol = a->rtol;
    }
}

static void claim_text(adgrad_buf *b, const char *t)
{
    /* the claim as given, whitespace collapsed */
    int space = 0;
    size_t n = 0;
    for (const char *s = t; *s; s++) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            space = n > 0;
            continue;
        }
        if (space)
            adgrad_buf_puts(b, " ");
        space = 0;
        adgrad_buf_put(b, s, 1);
        n++;
    }
}

/* The diagnosis of claim k's block, or NULL (not diagnosed: it passed,
 * or the check ran without random points or without ad_handcheck_ex:
 * diagnosed 0). */
static const ad_diagnosis *claim_diagnosis(const ck *c, const ad_check_report *rep, int k,
                                           int diagnosed)
{
    if (!diagnosed)
        return NULL;
    for (size_t i = 0; i < rep->ndiagnoses; i++) {
        const ad_diagnosis *d = &rep->diagnoses[i];
        if (d->input >= 0 && d->input < c->nin + c->ndelta && c->claim_of[d->input] == k &&
            d->failed)
            return d;
    }
    return NULL;
}

/* The diagnosis's sentence: its text after the counts ("dW: 3 of 12
 * elements differ, worst abs err 3.5 -- "). */
static const char *diagnosis_sentence(const ad_diagnosis *d)
{
    const char *s = strstr(d->text, " -- ");
    return s ? s + 4 : "no simple explanation found";
}

static const char *fit_kind(int kind)
{
    switch (kind) {
    case AD_DIAG_FACTOR: return "factor";
    case AD_DIAG_TRANSPOSE: return "transpose";
    case AD_DIAG_WRONG_INPUT: return "wrong_input";
    case AD_DIAG_MISSING_FACTOR: return "missing_factor";
    case AD_DIAG_EXTRA_FACTOR: return "extra_factor";
    case AD_DIAG_W_NOT_WT: return "w_not_wt";
    case AD_DIAG_MISSING_PATH: return "missing_path";
    default: return "none";
    }
}

/* "diagnosis": {"text", "nfits", "fits": [{"kind", ...}]} of one block. */
static void json_diagnosis(adgrad_buf *j, const ck *c, const ad_diagnosis *d)
{
    const char *text = diagnosis_sentence(d);
    adgrad_buf_puts(j, ", \"diagnosis\": {\"text\": ");
    adgrad_buf_json_str(j, text, strlen(text));
    adgrad_buf_printf(j, ", \"nfits\": %d, \"fits\": [", d->nfits);
    for (int i = 0; i < d->nfits && i < AD_DIAG_MAX_FITS; i++) {
        const ad_diag_fit *f = &d->fit[i];
        adgrad_buf_printf(j, "%s{\"kind\": \"%s\"", i ? ", " : "", fit_kind(f->kind));
        if (f->kind == AD_DIAG_FACTOR) {
            adgrad_buf_puts(j, ", \"factor\": ");
            adgrad_buf_json_num(j, f->factor);
        } else if (f->kind == AD_DIAG_WRONG_INPUT && f->other_input >= 0 &&
                   f->other_input < c->nin + c->ndelta) {
            const char *o = c->ci[f->other_input].name;
            adgrad_buf_puts(j, ", \"other_input\": ");
            adgrad_buf_json_str(j, o, strlen(o));
        } else if (f->name[0]) {
            adgrad_buf_puts(j, ", \"node\": ");
            adgrad_buf_json_str(j, f->name, strlen(f->name));
            if (f->slot >= 0)
                adgrad_buf_printf(j, ", \"operand\": %d", f->slot);
        }
        adgrad_buf_puts(j, "}");
    }
    adgrad_buf_puts(j, "]}");
}

static void report(app *a, const ck *c, const ad_check_report *rep, double atol, double rtol,
                   unsigned long long seed, int diagnosed)
{
    adgrad_buf t = {0};
    const int nrand = c->npoints - 1;
    adgrad_buf_printf(&t, "hand-derived gradient check: %s -- ", rep->failed ? "FAILED" : "passed");
    if (rep->failed)
        adgrad_buf_printf(&t, "%zu of %zu compared elements differ", rep->failed, rep->checked);
    else
        adgrad_buf_printf(&t, "%zu compared elements agree", rep->checked);
    if (nrand > 0)
        adgrad_buf_printf(&t, " (the given point and %d random point%s, seed %llu", nrand,
                          nrand == 1 ? "" : "s", seed);
    else
        adgrad_buf_puts(&t, " (the given point");
    adgrad_buf_printf(&t, ", atol %g, rtol %g)\n", atol, rtol);

    /* one line per claim */
    size_t *checked = calloc((size_t)a->nclaims + 1, sizeof *checked);
    size_t *failed = calloc((size_t)a->nclaims + 1, sizeof *failed);
    if (!checked || !failed) {
        free(checked);
        free(failed);
        a->text_out.oom = 1;
        adgrad_buf_free(&t);
        return;
    }
    for (size_t i = 0; i < rep->nentries; i++) {
        int k = c->claim_of[rep->entries[i].input];
        if (k < 0)
            continue;
        checked[k]++;
        failed[k] += rep->entries[i].verdict == AD_ELEM_FAIL;
    }
    for (int k = 0; k < a->nclaims; k++) {
        adgrad_buf_puts(&t, failed[k] ? "  FAILED  " : "  ok      ");
        claim_text(&t, a->claims[k].text);
        if (failed[k])
            adgrad_buf_printf(&t, "   (%zu of %zu elements differ)", failed[k], checked[k]);
        adgrad_buf_puts(&t, "\n");
        const ad_diagnosis *d = failed[k] ? claim_diagnosis(c, rep, k, diagnosed) : NULL;
        if (d)
            adgrad_buf_printf(&t, "          diagnosis: %s\n", diagnosis_sentence(d));
    }
    if (rep->failed && !diagnosed)
        adgrad_buf_puts(&t, c->nonfinite ? "(no diagnosis: a value of yours is not finite)\n"
                                           : "(no diagnosis: it needs random points, and "
                                             "--points is 0)\n");
    /* the mismatches, under the point they were found at */
    size_t shown = 0, hidden = 0;
    int last = -1;
    for (size_t i = 0; i < rep->nentries; i++) {
        const ad_check_entry *e = &rep->entries[i];
        if (e->verdict == AD_ELEM_OK)
            continue;
        if (shown >= MAX_ROWS) {
            hidden++;
            continue;
        }
        if (e->point != last) {
            adgrad_buf_puts(&t, "at ");
            describe_point(&t, c, e->point);
            adgrad_buf_puts(&t, ":\n");
            last = e->point;
        }
        adgrad_buf_puts(&t, "  ");
        mismatch(&t, c, e);
        adgrad_buf_puts(&t, "\n");
        shown++;
    }
    if (hidden)
        adgrad_buf_printf(&t, "(%zu more rows not shown)\n", hidden);
    if (rep->has_worst && rep->failed) {
        adgrad_buf_puts(&t, "worst: ");
        mismatch(&t, c, &rep->worst);
        adgrad_buf_printf(&t, ", abs err %.2g, rel err %.2g, at ", rep->worst.abs_err,
                          rep->worst.rel_err);
        if (rep->worst.point)
            adgrad_buf_printf(&t, "random point %d\n", rep->worst.point);
        else
            adgrad_buf_puts(&t, "the given point\n");
    }

    if (a->json) {
        adgrad_buf *j = &a->json_out;
        app_json_key(a, "check");
        adgrad_buf_printf(j, "{\"passed\": %s, \"checked\": %zu, \"failed\": %zu, \"points\": %d, "
                             "\"seed\": %llu, \"atol\": ",
                          rep->failed ? "false" : "true", rep->checked, rep->failed, c->npoints, seed);
        adgrad_buf_json_num(j, atol);
        adgrad_buf_puts(j, ", \"rtol\": ");
        adgrad_buf_json_num(j, rtol);
        adgrad_buf_puts(j, ",\n    \"claims\": [");
        for (int k = 0; k < a->nclaims; k++) {
            const claim *cl = &a->claims[k];
            adgrad_buf_puts(j, k ? ",\n      {\"claim\": " : "\n      {\"claim\": ");
            adgrad_buf_json_str(j, cl->text, strlen(cl->text));
            adgrad_buf_puts(j, ", \"with_respect_to\": ");
            const char *w = cl->prog->stmt[0].name + 1;
            adgrad_buf_json_str(j, w, strlen(w));
            adgrad_buf_printf(j, ", \"passed\": %s, \"checked\": %zu, \"failed\": %zu",
                              failed[k] ? "false" : "true", checked[k], failed[k]);
            const ad_diagnosis *d = failed[k] ? claim_diagnosis(c, rep, k, diagnosed) : NULL;
            if (d)
                json_diagnosis(j, c, d);
            adgrad_buf_puts(j, "}");
        }
        adgrad_buf_puts(j, "],\n    \"mismatches\": [");
        size_t listed = 0;
        for (size_t i = 0; i < rep->nentries && listed < 1000; i++) {
            const ad_check_entry *e = &rep->entries[i];
            if (e->verdict == AD_ELEM_OK)
                continue;
            adgrad_buf el = {0};
            app_elem_name(&el, "d", c->ci[e->input].name, c->ci[e->input].shape, e->elem);
            adgrad_buf_puts(j, listed++ ? ",\n      {\"element\": " : "\n      {\"element\": ");
            adgrad_buf_json_str(j, el.s ? el.s : "", el.len);
            adgrad_buf_free(&el);
            adgrad_buf_printf(j, ", \"point\": %d, \"yours\": ", e->point);
            adgrad_buf_json_num(j, e->other);
            adgrad_buf_puts(j, ", \"tape\": ");
            adgrad_buf_json_num(j, e->tape);
            adgrad_buf_puts(j, ", \"abs_err\": ");
            adgrad_buf_json_num(j, e->abs_err);
            adgrad_buf_puts(j, ", \"rel_err\": ");
            adgrad_buf_json_num(j, e->rel_err);
            adgrad_buf_puts(j, "}");
        }
        adgrad_buf_puts(j, "],\n    \"text\": ");
        adgrad_buf_json_str(j, t.s ? t.s : "", t.len);
        adgrad_buf_puts(j, "}");
    } else {
        adgrad_buf_puts(&a->text_out, a->text_out.len ? "\n" : "");
        adgrad_buf_put(&a->text_out, t.s ? t.s : "", t.len);
    }
    if (t.oom)
        a->text_out.oom = 1;
    free(checked);
    free(failed);
    adgrad_buf_free(&t);
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

int app_claims_run(app *a)
{
    ck c;
    if (ck_init(&c, a, 1)) {
        ck_free(&c);
        return app_errorf(a, "out of memory");
    }
    const int n = c.nin + c.ndelta;
    ad_check_opts o = {0};
    o.atol = a->atol;
    o.rtol = a->rtol;
    o.points = a->points_set ? (a->points > 0 ? a->points : -1) : 3;
    o.spread = a->spread;
    o.seed = a->seed ? a->seed : 1;
    c.npoints = 1 + (o.points > 0 ? o.points : 0);
    c.points = calloc((size_t)c.npoints * (c.off[n] ? c.off[n] : 1), sizeof *c.points);
    if (!c.points) {
        ck_free(&c);
        return app_errorf(a, "out of memory");
    }
    /* every failing claim diagnosed; a diagnosis needs random points */
    ad_handcheck_opts ho = {0};
    ho.size = sizeof ho;
    ho.diagnose = o.points > 0 ? "*" : NULL;
    ad_check_report rep;
    int st = ad_handcheck_ex(check_fn, &c, c.ci, n, yours, &c, &o, &ho, &rep);
    int diagnosed = o.points > 0;
    if (st != AD_OK && !c.failed && c.nonfinite) {
        /* a NaN or an infinity of yours: a differing element, as
         * ad_handcheck counts it, and no diagnosis */
        ad_check_report_free(&rep);
        c.seen = 0;
        diagnosed = 0;
        st = ad_handcheck(check_fn, &c, c.ci, n, yours, &c, &o, &rep);
    }
    int rc;
    if (st != AD_OK) {
        if (c.failed && c.err_claim >= 0)
            rc = app_error(a, a->claims[c.err_claim].label, a->claims[c.err_claim].prog, &c.err);
        else if (c.failed)
            rc = app_error(a, NULL, a->prog, &c.err);
        else
            rc = app_errorf(a, "--check: %s", rep.errmsg);
    } else {
        double atol, rtol;
        effective_tol(a, 1e-9, 1e-9, &atol, &rtol);
        report(a, &c, &rep, atol, rtol, (unsigned long long)o.seed, diagnosed);
        rc = rep.passed ? EXIT_AGREE : EXIT_DIFFER;
    }
    ad_check_report_free(&rep);
    ck_free(&c);
    return rc;
}

int app_gradcheck_run(app *a)
{
    ck c;
    if (ad_node_is_nil(a->out_node) || ad_node_shape(a->t, a->out_node).ndim != 0)
        return app_errorf(a, "--gradcheck needs a scalar output (name one with --of)");
    if (ck_init(&c, a, 0)) {
        ck_free(&c);
        return app_errorf(a, "out of memory");
    }
    int compared = 0;
    for (int i = 0; i < c.nin; i++)
        c.ci[i].role = AD_INPUT_CONSTANT;
    for (int k = 0; k < a->nwrt; k++)
        if (a->wrt[k] >= 0) {
            c.ci[a->wrt[k]].role = AD_INPUT_COMPARE;
            compared++;
        }
    if (!compared) {
        ck_free(&c);
        return app_errorf(a, "--gradcheck: no input to compare (--wrt names statements only)");
    }
    ad_check_opts o = {0};
    o.atol = a->atol;
    o.rtol = a->rtol;
    o.step = a->step;
    o.seed = a->seed ? a->seed : 1;
    ad_check_report rep;
    int st = ad_gradcheck(check_fn, &c, c.ci, c.nin, &o, &rep);
    int rc;
    if (st != AD_OK) {
        rc = app_errorf(a, "--gradcheck: %s", rep.errmsg);
    } else {
        if (a->json) {
            adgrad_buf *j = &a->json_out;
            app_json_key(a, "gradcheck");
            adgrad_buf_printf(j, "{\"passed\": %s, \"checked\": %zu, \"failed\": %zu, \"kinks\": %zu, "
                                 "\"text\": ",
                              rep.passed ? "true" : "false", rep.checked, rep.failed, rep.kinks);
            adgrad_buf_json_str(j, rep.text, rep.text_len);
            adgrad_buf_puts(j, "}");
        } else {
            adgrad_buf_puts(&a->text_out, a->text_out.len ? "\n" : "");
            adgrad_buf_put(&a->text_out, rep.text, rep.text_len);
        }
        rc = rep.passed ? EXIT_AGREE : EXIT_DIFFER;
    }
    ad_check_report_free(&rep);
    ck_free(&c);
    return rc;
}
