/* fuzz_adgrad_parse.c -- libFuzzer harness for the expression language of
 * the adgrad program (tools/adgrad/parse.c, the translation unit with the
 * entry point adgrad_parse_text), and for what adgrad does with a text it
 * accepts.
 *
 * Every input is parsed three ways: as a program (adgrad_parse_text), as a
 * value given on the command line (--W 4,2,-5) and as a claim (--check
 * 'dW = ...'). Then, for a program that parses:
 *   - the model is built (which names are inputs; names used before
 *     their definition, defined twice, ...);
 *   - every input gets a value of a shape chosen by a hash of its name (a
 *     scalar, a vector of 3 or a 3x3 matrix) unless the text gives it one;
 *   - the program is recorded on a tape, naming every node after its
 *     source text as adgrad does, and swept backward from its last
 *     statement when that is a scalar;
 *   - the program is recorded again on a second tape with a shift added
 *     to every statement, as --check does for claims about statements.
 * Invariants, each a __builtin_trap() when broken:
 *   - a parse returns a program xor an error with a non-empty message and
 *     a place inside the text (line 1 .. lines, column >= 1), or no place
 *     at all (line 0, column 0);
 *   - the error's place can be shown (adgrad_show_place), for any bytes;
 *   - a recording that fails names its reason, and leaves the tape's
 *     sticky status set;
 *   - a successful recording gives every statement a node of the tape.
 * ASan and UBSan (tests/fuzz/flags.cmake) catch the rest: no crash, no
 * leak, no undefined behaviour on any input. */
#include "adgrad.h"

#include <autodiff/autodiff.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond))                                                                           \
            __builtin_trap();                                                                  \
    } while (0)

static int lines_of(const char *s, size_t n)
{
    int l = 1;
    for (size_t i = 0; i < n; i++)
        l += s[i] == '\n';
    return l;
}

/* The error of a failed parse: a message, and a place inside the text. */
static void check_error(const uint8_t *data, size_t size, const adgrad_error *err)
{
    CHECK(err->msg[0] != '\0');
    CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    if (err->line == 0) {
        CHECK(err->col == 0);
        return;
    }
    CHECK(err->line >= 1 && err->line <= lines_of((const char *)data, size));
    CHECK(err->col >= 1 && (size_t)err->col <= size + 1);
    adgrad_buf b = {0};
    adgrad_show_place(&b, (const char *)data, size, err->line, err->col);
    CHECK(b.oom || (b.s && b.len >= 4));
    adgrad_buf_free(&b);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int bind_inputs(adgrad_model *m)
{
    static const double vals[9] = {4, 2, -5, 1, 0, 2, 0.5, -3, 7};
    for (int i = 0; i < m->nin; i++) {
        adgrad_input *x = &m->in[i];
        if (x->stmt >= 0) { /* the text gives it a value */
            ad_shape s;
            if (!adgrad_literal(m->prog->stmt[x->stmt].expr, &s, NULL))
                return 1; /* a ragged literal, say: adgrad reports it */
            size_t n = ad_shape_size(s);
            double *v = malloc((n ? n : 1) * sizeof *v);
            if (!v)
                return 1;
            adgrad_literal(m->prog->stmt[x->stmt].expr, &s, v);
            int rc = adgrad_model_set(m, i, s, v);
            free(v);
            if (rc)
                return 1;
            continue;
        }
        uint32_t h = hash(x->name) % 3;
        ad_shape s = h == 0 ? ad_shape_scalar() : h == 1 ? ad_shape_vec(3) : ad_shape_mat(3, 3);
        if (adgrad_model_set(m, i, s, vals))
            return 1;
    }
    return 0;
}

static void record_program(adgrad_program *prog)
{
    adgrad_model m;
    adgrad_error err;
    if (adgrad_model_init(&m, prog, &err)) {
        CHECK(err.msg[0] != '\0');
        adgrad_model_free(&m);
        return;
    }
    const int n = prog->nstmt;
    ad_tape *t = ad_tape_new(NULL), *t2 = ad_tape_new(NULL);
    ad_node *in = calloc((size_t)m.nin + 1, sizeof *in);
    ad_node *stmt = calloc((size_t)n + 1, sizeof *stmt);
    ad_node *shift = calloc((size_t)n + 1, sizeof *shift);
    if (!t || !t2 || !in || !stmt || !shift || bind_inputs(&m))
        goto out;
    for (int i = 0; i < m.nin; i++)
        in[i] = ad_variable(t, m.in[i].shape, m.in[i].value);
    if (adgrad_model_record(t, &m, in, NULL, stmt, NULL, 1, &err)) {
        CHECK(err.msg[0] != '\0');
    } else {
        for (int i = 0; i < n; i++)
            CHECK(!ad_node_is_nil(stmt[i]) && ad_node_index(t, stmt[i]) > 0);
        if (n > 0 && ad_node_shape(t, stmt[n - 1]).ndim == 0)
            (void)ad_backward(t, stmt[n - 1]);
        /* again, with a shift on every computed statement (--check) */
        for (int i = 0; i < m.nin; i++)
            in[i] = ad_constant(t2, m.in[i].shape, m.in[i].value);
        for (int i = 0; i < n; i++)
            shift[i] = m.is_input[i] ? ad_nil()
                                     : ad_constant(t2, ad_node_shape(t, stmt[i]), NULL);
        adgrad_scope sc = {0};
        int rc = adgrad_model_record(t2, &m, in, shift, stmt, &sc, 0, &err);
        CHECK(rc == 0 || ad_tape_status(t2) != AD_OK || err.msg[0] != '\0');
        adgrad_scope_free(&sc);
    }
out:
    free(in);
    free(stmt);
    free(shift);
    ad_tape_free(t);
    ad_tape_free(t2);
    adgrad_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int modes[3] = {ADGRAD_PARSE_PROGRAM, ADGRAD_PARSE_VALUE, ADGRAD_PARSE_CLAIM};
    for (int k = 0; k < 3; k++) {
        adgrad_program *p = NULL;
        adgrad_error err;
        int rc = k == 0 ? adgrad_parse_text((const char *)data, size, &p, &err)
                        : adgrad_parse((const char *)data, size, modes[k], &p, &err);
        CHECK((rc == 0) == (p != NULL));
        if (rc) {
            check_error(data, size, &err);
            continue;
        }
        CHECK(p->len == size && p->text[size] == '\0');
        if (k == 0)
            record_program(p);
        else
            CHECK(p->nstmt == 1 && p->stmt[0].expr != NULL);
        adgrad_program_free(p);
    }
    return 0;
}
