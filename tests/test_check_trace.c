/* test_check_trace.c -- the chain-rule trace and the DOT export: the seed
 * neuron against stored expected texts (tests/expected/, found beside this
 * source file through __FILE__), shape-level rules for matrices, fan-out,
 * custom ops, large tensors, error paths with messages, and allocation
 * failures. */
#include "support.h"

#include <autodiff/check.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing text sink ---- */

typedef struct sink {
    char *buf;
    size_t len, cap;
    int calls;
} sink;

static void sink_write(void *ud, const char *text, size_t len)
{
    sink *s = ud;
    if (s->len + len + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 1024;
        while (ncap < s->len + len + 1)
            ncap *= 2;
        char *p = realloc(s->buf, ncap);
        cr_assert_not_null(p);
        s->buf = p;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = '\0';
    s->calls++;
}

static void sink_free(sink *s)
{
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* Every line of want[] appears in text. */
static void expect_lines(const char *text, const char *const *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(strstr(text, want[i]), "missing:\n%s\nin:\n%s", want[i], text);
}
#define EXPECT_LINES(text, want) expect_lines((text), (want), sizeof(want) / sizeof((want)[0]))

/* Names nodes[i] names[i] for i < n, sweeps from J and writes J's trace
 * into s. */
static void trace_named(ad_tape *t, ad_node J, const ad_node *nodes, const char *const *names,
                        int n, sink *s)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(ad_set_name(t, nodes[i], names[i]), AD_OK, "%s", names[i]);
    cr_assert_eq(ad_backward(t, J), AD_OK, "%s", ad_tape_errmsg(t));
    cr_assert_eq(ad_trace(t, J, sink_write, s, NULL), AD_OK);
}

/* The dense layer of the lecture notes' exercise: W, b, x and a target. */
typedef struct layer {
    ad_node W, b, x, tg;
} layer;

static layer layer_leaves(ad_tape *t)
{
    static const double W0[12] = {4, 2, -5, 1, 1, -3, 2, 0.5, 0.5, 1, 1, -2};
    static const double b0[3] = {8, 1, -5}, x0[4] = {1, 0, 2, -1}, t0[3] = {5, 3, 1};
    layer L = {ad_variable(t, ad_shape_mat(3, 4), W0), ad_variable(t, ad_shape_vec(3), b0),
               ad_variable(t, ad_shape_vec(4), x0), ad_constant(t, ad_shape_vec(3), t0)};
    return L;
}

/* Reads tests/expected/<name>, located beside this source file. */
static char *read_expected(const char *name)
{
    char path[1024];
    const char *file = __FILE__, *slash = strrchr(file, '/');
    size_t dir = slash ? (size_t)(slash - file) : 0;
    snprintf(path, sizeof path, "%.*s%sexpected/%s", (int)dir, file, slash ? "/" : "", name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = calloc(1, 1 << 16);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---- the seed neuron, named as in docs/verifying.md ---- */

typedef struct neuron {
    ad_tape *t;
    ad_node W, x, b, y, Wx, z, yhat, e, sq, J;
} neuron;

static void neuron_build(neuron *n, const ad_tape_opts *opts)
{
    const double W0[3] = {4, 2, -5}, x0[3] = {1, 0, 2};
    n->t = ad_tape_new(opts);
    cr_assert_not_null(n->t);
    ad_tape *t = n->t;
    n->W = ad_variable(t, ad_shape_vec(3), W0);
    n->x = ad_variable(t, ad_shape_vec(3), x0);
    n->b = ad_scalar_var(t, 7);
    n->y = ad_scalar(t, 5);
    n->Wx = ad_dot(t, n->W, n->x);
    n->z = ad_add(t, n->Wx, n->b);
    n->yhat = ad_relu(t, n->z);
    n->e = ad_sub(t, n->yhat, n->y);
    n->sq = ad_square(t, n->e);
    n->J = ad_scale(t, n->sq, 0.5);
    const char *names[] = {"W", "x", "b", "y", "Wx", "z", "yhat", "e", "sq", "J"};
    ad_node *nodes[] = {&n->W, &n->x, &n->b, &n->y, &n->Wx, &n->z, &n->yhat, &n->e, &n->sq, &n->J};
    for (int i = 0; i < 10; i++)
        cr_assert_eq(ad_set_name(t, *nodes[i], names[i]), AD_OK);
    cr_assert_eq(ad_backward(t, n->J), AD_OK, "%s", ad_tape_errmsg(t));
}

Test(trace, seed_neuron_matches_expected_text)
{
    neuron n;
    neuron_build(&n, NULL);
    sink s = {0};
    cr_assert_eq(ad_trace(n.t, n.J, sink_write, &s, NULL), AD_OK);
    char *want = read_expected("neuron_trace.txt");
    cr_assert_str_eq(s.buf, want);
    /* the lines the lecture notes derive by hand */
    cr_assert_not_null(strstr(s.buf, "  dJ/dz = dJ/dyhat · relu'(z) = -4 · 1 = -4\n"));
    cr_assert_not_null(strstr(s.buf, "  dJ/dW = dJ/dWx · x = -4 · (1, 0, 2) = (-4, 0, -8)\n"));
    cr_assert_gt(s.calls, 1);
    free(want);
    sink_free(&s);
    ad_tape_free(n.t);
}

Test(trace, fprint_writes_the_same_text)
{
    neuron n;
    neuron_build(&n, NULL);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(ad_trace_fprint(f, n.t, n.J, NULL), AD_OK);
    rewind(f);
    char buf[8192] = {0};
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    char *want = read_expected("neuron_trace.txt");
    cr_assert_eq(len, strlen(want));
    cr_assert_str_eq(buf, want);
    free(want);
    ad_tape_free(n.t);
}

Test(trace, unnamed_nodes_fall_back_to_their_index)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node a = ad_scalar_var(t, 3);
    ad_node J = ad_mul(t, ad_exp(t, a), a); /* J = e^a a */
    cr_assert_eq(ad_backward(t, J), AD_OK);
    sink s = {0};
    cr_assert_eq(ad_trace(t, J, sink_write, &s, NULL), AD_OK);
    /* n3 = n2 · n1: a feeds two nodes, so its lines accumulate (+=) */
    cr_assert_not_null(strstr(s.buf, "reverse sweep from n3: 3 steps, seed dn3/dn3 = 1\n"), "%s",
                       s.buf);
    cr_assert_not_null(strstr(s.buf, "\nn3 = n2 · n1 = 60.2566\n"), "%s", s.buf);
    cr_assert_not_null(strstr(s.buf, "  dn3/dn1 += dn3/dn3 · n2 = 1 · 20.0855 = 20.0855\n"), "%s",
                       s.buf);
    cr_assert_not_null(strstr(s.buf, "  dn3/dn1 += dn3/dn2 · exp(n1) = 3 · 20.0855 = 60.2566\n"),
                       "%s", s.buf);
    cr_assert_not_null(strstr(s.buf, "\nn1: variable, scalar = 3\n  dn3/dn1 = 80.3421\n"), "%s",
                       s.buf);
    sink_free(&s);
    ad_tape_free(t);
}

/* ---- matrices: the shape-level rules ---- */

Test(trace, dense_layer_shows_shape_rules_and_values)
{
    ad_tape *t = ad_tape_new(NULL);
    const layer L = layer_leaves(t);
    ad_node W = L.W, b = L.b, x = L.x, tg = L.tg;
    ad_node Wx = ad_matvec(t, W, x);
    ad_node z = ad_add(t, Wx, b);
    ad_node y = ad_relu(t, z);
    ad_node e = ad_sub(t, y, tg);
    ad_node J = ad_scale(t, ad_sum(t, ad_square(t, e)), 0.5);
    const char *names[] = {"W", "b", "x", "t", "Wx", "z", "y", "e", "J"};
    const ad_node nodes[] = {W, b, x, tg, Wx, z, y, e, J};
    sink s = {0};
    trace_named(t, J, nodes, names, 9, &s);
    const char *want[] = {
        "\nWx = W · x = (-7, 4.5, 4.5)\n  dJ/dWx = (-4, 2.5, 0)\n",
        "  dJ/dW = dJ/dWx · x^T   (3x1)·(1x4) = [[-4, 0, -8, 4], [2.5, 0, 5, -2.5], [0, 0, 0, 0]]\n",
        "  dJ/dx = W^T · dJ/dWx   (4x3)·(3x1) = (-13.5, -15.5, 25, -2.75)\n",
        "  dJ/dz = dJ/dy ⊙ relu'(z) = (-4, 2.5, -1) ⊙ (1, 1, 0) = (-4, 2.5, 0)\n",
        "  dJ/db = dJ/dz · 1 = (-4, 2.5, 0)\n",
        "  (t is a constant: no gradient)\n",
        "\nW: variable, 3x4 = [[4, 2, -5, 1], [1, -3, 2, 0.5], [0.5, 1, 1, -2]]\n",
    };
    EXPECT_LINES(s.buf, want);
    sink_free(&s);

    /* max_values 2: tensors are named by shape, values hidden */
    ad_print_opts o = {0};
    o.max_values = 2;
    cr_assert_eq(ad_trace(t, J, sink_write, &s, &o), AD_OK);
    cr_assert_not_null(strstr(s.buf, "\nWx = W · x   [vector(3)]\n  dJ/dWx: vector(3), not shown\n"),
                       "%s", s.buf);
    cr_assert_not_null(strstr(s.buf, "  dJ/dW = dJ/dWx · x^T   (3x1)·(1x4)   [3x4]\n"), "%s",
                       s.buf);
    cr_assert_not_null(strstr(s.buf, "\nW: variable, 3x4\n  dJ/dW: 3x4, not shown\n"), "%s",
                       s.buf);
    sink_free(&s);
    ad_tape_free(t);
}

/* The same layer with ad_affine: one node, and the same numbers. */
Test(trace, affine_layer_vector_and_batch)
{
    ad_tape *t = ad_tape_new(NULL);
    layer L = layer_leaves(t);
    ad_node z = ad_affine(t, L.W, L.x, L.b);
    ad_node y = ad_relu(t, z);
    ad_node J = ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, y, L.tg))), 0.5);
    const char *names[] = {"W", "b", "x", "z", "y", "J"};
    const ad_node nodes[] = {L.W, L.b, L.x, z, y, J};
    sink s = {0};
    trace_named(t, J, nodes, names, 6, &s);
    const char *want[] = {
        "\nz = W · x + b = (1, 5.5, -0.5)\n  dJ/dz = (-4, 2.5, 0)\n",
        "  dJ/dW = dJ/dz · x^T   (3x1)·(1x4) = [[-4, 0, -8, 4], [2.5, 0, 5, -2.5], [0, 0, 0, 0]]\n",
        "  dJ/dx = W^T · dJ/dz   (4x3)·(3x1) = (-13.5, -15.5, 25, -2.75)\n",
        "  dJ/db = dJ/dz = (-4, 2.5, 0)\n",
    };
    EXPECT_LINES(s.buf, want);
    sink_free(&s);

    /* Two samples as rows: X W^T + b, and db sums dZ over the rows. */
    ad_tape_reset(t);
    const double X0[8] = {1, 0, 2, -1, 0, 1, 0, 1};
    L = layer_leaves(t);
    ad_node X = ad_variable(t, ad_shape_mat(2, 4), X0);
    ad_node Z = ad_affine(t, L.W, X, L.b);
    J = ad_sum(t, Z);
    const char *bnames[] = {"W", "b", "X", "Z", "J"};
    const ad_node bnodes[] = {L.W, L.b, X, Z, J};
    trace_named(t, J, bnodes, bnames, 5, &s);
    const char *bwant[] = {
        "\nZ = X · W^T + b = [[1, 5.5, -0.5], [11, -1.5, -6]]\n",
        "  dJ/dW = dJ/dZ^T · X   (3x2)·(2x4) = [[1, 1, 2, 0], [1, 1, 2, 0], [1, 1, 2, 0]]\n",
        "  dJ/dX = dJ/dZ · W   (2x3)·(3x4) = [[5.5, 0, -2, -0.5], [5.5, 0, -2, -0.5]]\n",
        "  dJ/db = sum_rows(dJ/dZ) = (2, 2, 2)\n",
    };
    EXPECT_LINES(s.buf, bwant);
    sink_free(&s);
    ad_tape_free(t);
}

Test(trace, matmul_family_rules)
{
    const double A0[6] = {1, 2, 3, 4, 5, 6}, B0[6] = {1, 0, -1, 2, 0.5, 1};
    ad_tape *t = ad_tape_new(NULL);
    ad_node A = ad_variable(t, ad_shape_mat(2, 3), A0);
    ad_node B = ad_variable(t, ad_shape_mat(3, 2), B0);
    ad_node C, D;
    ad_node v = ad_variable(t, ad_shape_vec(2), B0);
    C = ad_matmul(t, A, B);
    D = ad_matmul_nt(t, C, ad_transpose(t, C));
    ad_node w = ad_matvec_t(t, A, v);                 /* (3) */
    ad_node O = ad_outer(t, w, v);                    /* 3x2 */
    ad_node J = ad_add(t, ad_sum(t, D), ad_sum(t, O));
    const char *names[] = {"A", "B", "v", "C", "D", "w", "O", "J"};
    const ad_node nodes[] = {A, B, v, C, D, w, O, J};
    sink s = {0};
    trace_named(t, J, nodes, names, 8, &s);
    const char *want[] = {
        "dJ/dA += dJ/dC · B^T   (2x2)·(2x3) = ",
        "dJ/dB = A^T · dJ/dC   (3x2)·(2x2) = ",
        "dJ/dC += dJ/dD · n5   (2x2)·(2x2) = ",
        "dJ/dn5 = dJ/dD^T · C   (2x2)·(2x2) = ",
        "dJ/dC += dJ/dn5^T = ",
        "\nw = A^T · v = ",
        "dJ/dA += v · dJ/dw^T   (2x1)·(1x3) = ",
        "dJ/dv += A · dJ/dw   (2x3)·(3x1) = ",
        "dJ/dw = dJ/dO · v   (3x2)·(2x1) = ",
        "dJ/dv += dJ/dO^T · w   (2x3)·(3x1) = ",
        "\nO = w · v^T = ",
        "\nD = C · n5^T = ",
    };
    EXPECT_LINES(s.buf, want);
    sink_free(&s);
    ad_tape_free(t);
}

/* ---- custom ops and broadcasting ---- */

static void cube_fwd(const ad_call *k)
{
    for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
        k->out.val[i] = k->in[0].val[i] * k->in[0].val[i] * k->in[0].val[i];
}
static void cube_vjp(const ad_call *k)
{
    if (k->in[0].grad)
        for (size_t i = 0; i < ad_shape_size(k->out.shape); i++)
            k->in[0].grad[i] += k->out.grad[i] * 3 * k->in[0].val[i] * k->in[0].val[i];
}

Test(trace, custom_ops_and_broadcasts)
{
    static const ad_opdef cube = {.name = "cube", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    static const ad_opdef fake_relu = {.name = "relu", .arity = 1, .shape = NULL, .forward = cube_fwd, .vjp = cube_vjp, .ud = NULL};
    const double v0[2] = {1, 2};
    ad_tape *t = ad_tape_new(NULL);
    ad_node v = ad_variable(t, ad_shape_vec(2), v0);
    ad_node s = ad_scalar_var(t, 2);
    ad_node c = ad_apply(t, &cube, &v, 1, 0);
    ad_node f = ad_apply(t, &fake_relu, &c, 1, 0); /* a custom op named like a built-in */
    ad_node J = ad_sum(t, ad_mul(t, f, s));        /* s broadcast */
    ad_set_name(t, v, "v");
    ad_set_name(t, s, "s");
    ad_set_name(t, c, "c");
    ad_set_name(t, f, "f");
    ad_set_name(t, J, "J");
    cr_assert_eq(ad_backward(t, J), AD_OK);
    sink out = {0};
    cr_assert_eq(ad_trace(t, J, sink_write, &out, NULL), AD_OK);
    const char *want[] = {
        "\nc = cube(v) = (1, 8)\n",
        "  dJ/dv = dJ/dc · ∂cube/∂v = (",
        "\nf = relu(c) = (1, 512)\n",      /* not relu's formula */
        "  dJ/dc = dJ/df · ∂relu/∂c = ",
        "  dJ/ds = sum(dJ/dn5 ⊙ f) = 513\n",
        "\nn5 = f ⊙ s = (2, 1024)\n",
        "  dJ/df = dJ/dn5 ⊙ s = (1, 1) ⊙ (2, 2) = (2, 2)\n",
    };
    EXPECT_LINES(out.buf, want);
    sink_free(&out);
    ad_tape_free(t);
}

/* ---- DOT ---- */

Test(dot, seed_neuron_matches_expected_graph)
{
    neuron n;
    neuron_build(&n, NULL);
    sink s = {0};
    cr_assert_eq(ad_export_dot(n.t, n.J, sink_write, &s, NULL), AD_OK);
    char *want = read_expected("neuron.dot");
    cr_assert_str_eq(s.buf, want);
    free(want);
    sink_free(&s);

    FILE *f = tmpfile();
    cr_assert_eq(ad_export_dot_fprint(f, n.t, n.J, NULL), AD_OK);
    cr_assert_gt(ftell(f), 100);
    fclose(f);
    ad_tape_free(n.t);
}

Test(dot, whole_tape_subgraph_and_escaping)
{
    ad_tape *t = ad_tape_new(NULL);
    ad_node a = ad_scalar_var(t, 2);
    ad_node unused = ad_exp(t, a);
    ad_node J = ad_square(t, a);
    ad_set_name(t, a, "a \"quoted\" \\ name");
    (void)unused;
    cr_assert_eq(ad_backward(t, J), AD_OK);
    sink s = {0};
    cr_assert_eq(ad_export_dot(t, ad_nil(), sink_write, &s, NULL), AD_OK);
    cr_assert_not_null(strstr(s.buf, "n2 [shape=ellipse, label=\"n2 = exp(a \\\"quoted\\\" \\\\ name)"),
                       "%s", s.buf);
    cr_assert_not_null(strstr(s.buf, "  n1 -> n3;\n"), "%s", s.buf);
    cr_assert_null(strstr(s.buf, "peripheries"), "%s", s.buf); /* no output given */
    sink_free(&s);
    cr_assert_eq(ad_export_dot(t, J, sink_write, &s, NULL), AD_OK);
    cr_assert_null(strstr(s.buf, "n2 ["), "%s", s.buf); /* not an ancestor of J */
    cr_assert_not_null(strstr(s.buf, "n3 [shape=ellipse, peripheries=2, label=\"n3 = a"), "%s",
                       s.buf);
    cr_assert(!strncmp(s.buf, "digraph tape {\n", 15));
    cr_assert(!strcmp(s.buf + s.len - 2, "}\n"));
    sink_free(&s);
    ad_tape_free(t);
}

/* ---- errors ---- */

Test(trace, error_paths_have_messages)
{
    neuron n;
    neuron_build(&n, NULL);
    char err[128];
    ad_print_opts o = {0};
    o.errbuf = err;
    o.errcap = sizeof err;
    sink s = {0};
#define ERR(call, st, msg)                                                                    \
    do {                                                                                      \
        err[0] = '\0';                                                                        \
        cr_assert_eq((call), (st));                                                           \
        cr_assert_str_eq(err, (msg));                                                         \
    } while (0)
    ERR(ad_trace(NULL, n.J, sink_write, &s, &o), AD_EMISUSE, "trace: tape is NULL");
    ERR(ad_trace(n.t, n.J, NULL, &s, &o), AD_EMISUSE, "trace: write is NULL");
    ERR(ad_trace(n.t, ad_nil(), sink_write, &s, &o), AD_EMISUSE,
        "trace: the output is nil, stale or of another tape");
    ERR(ad_trace(n.t, n.y, sink_write, &s, &o), AD_EMISUSE,
        "trace: y depends on no variable: there is no sweep to trace");
    ERR(ad_trace_fprint(NULL, n.t, n.J, &o), AD_EMISUSE, "trace: the stream is NULL");
    ERR(ad_export_dot(NULL, n.J, sink_write, &s, &o), AD_EMISUSE, "export_dot: tape is NULL");
    ERR(ad_export_dot(n.t, n.J, NULL, &s, &o), AD_EMISUSE, "export_dot: write is NULL");
    ERR(ad_export_dot_fprint(NULL, n.t, n.J, &o), AD_EMISUSE, "export_dot: the stream is NULL");
    cr_assert_eq(ad_trace(n.t, ad_nil(), sink_write, &s, NULL), AD_EMISUSE); /* no errbuf */

    /* a node of another tape, and the trace before any sweep */
    ad_tape *t2 = ad_tape_new(NULL);
    ad_node q = ad_scalar_var(t2, 1);
    ad_node J2 = ad_square(t2, q);
    ERR(ad_trace(n.t, J2, sink_write, &s, &o), AD_EMISUSE,
        "trace: the output is nil, stale or of another tape");
    ERR(ad_export_dot(n.t, J2, sink_write, &s, &o), AD_EMISUSE,
        "export_dot: the output is stale or of another tape");
    ad_set_name(t2, J2, "L");
    ERR(ad_trace(t2, J2, sink_write, &s, &o), AD_EMISUSE,
        "trace: the adjoint of L is 0: call ad_backward(t, L) before ad_trace");
    /* a tape holding an error */
    ad_node bad = ad_dot(t2, q, ad_variable(t2, ad_shape_vec(2), NULL));
    (void)bad;
    ERR(ad_trace(t2, J2, sink_write, &s, &o), AD_EMISUSE,
        "trace: the tape holds an error: dot: u is a scalar but v is a vector of length 2");
    ERR(ad_export_dot(t2, J2, sink_write, &s, &o), AD_EMISUSE,
        "export_dot: the tape holds an error: dot: u is a scalar but v is a vector of length 2");
    cr_assert_eq(s.len, 0, "nothing written on errors");
    ad_tape_free(t2);
    ad_tape_free(n.t);
#undef ERR
}

Test(trace, allocation_failures_are_enomem_without_leaks)
{
    neuron n;
    neuron_build(&n, NULL);
    int done_trace = 0, done_dot = 0;
    for (long fail = 1; fail < 200 && !(done_trace && done_dot); fail++) {
        test_alloc a = {0};
        a.fail_at = fail;
        char err[128] = "";
        ad_print_opts o = {test_alloc_fn, &a, 0, err, sizeof err};
        sink s = {0};
        if (!done_trace) {
            int st = ad_trace(n.t, n.J, sink_write, &s, &o);
            cr_assert_eq(a.bytes, 0, "trace leaked %zu bytes at fail %ld", a.bytes, fail);
            if (st == AD_OK)
                done_trace = 1;
            else {
                cr_assert_eq(st, AD_ENOMEM, "fail %ld: %d", fail, st);
                cr_assert(!strncmp(err, "trace: out of memory", 20), "%s", err);
            }
        }
        sink_free(&s);
        a = (test_alloc){0};
        a.fail_at = fail;
        if (!done_dot) {
            int st = ad_export_dot(n.t, n.J, sink_write, &s, &o);
            cr_assert_eq(a.bytes, 0, "dot leaked %zu bytes at fail %ld", a.bytes, fail);
            if (st == AD_OK)
                done_dot = 1;
            else {
                cr_assert_eq(st, AD_ENOMEM, "fail %ld: %d", fail, st);
                cr_assert(!strncmp(err, "export_dot: out of memory", 25), "%s", err);
            }
        }
        sink_free(&s);
    }
    cr_assert(done_trace && done_dot);
    ad_tape_free(n.t);
}

/* A wide value is abbreviated; nodes a diagnosis points at are highlighted. */
Test(dot, wide_values_abbreviated_and_highlight)
{
    ad_tape *t = ad_tape_new(NULL);
    double w[20];
    for (int i = 0; i < 20; i++)
        w[i] = i % 2 ? -1 : 1;
    w[0] = 3;
    AD_LET(t, W, ad_variable(t, ad_shape_mat(4, 5), w));
    AD_LET(t, h, ad_tanh(t, W));
    AD_LET(t, J, ad_sum(t, h));
    cr_assert_eq(ad_backward(t, J), AD_OK);
    sink s = {0};
    const size_t hl[1] = {2};
    ad_dot_opts d = {sizeof d, hl, 1};
    cr_assert_eq(ad_export_dot_ex(t, J, sink_write, &s, NULL, &d), AD_OK);
    /* 20 values, norm sqrt(9 + 19) */
    cr_assert_not_null(strstr(s.buf, "W\\nvariable, 4x5\\nvalue 3, -1, 1, -1, ... (20 values, "
                                     "norm 5.2915)\\ngrad "),
                       "%s", s.buf);
    cr_assert_not_null(strstr(s.buf, "n2 [shape=ellipse, color=\"#d62728\", fontcolor=\"#d62728\", "
                                     "penwidth=2.5, label=\"h = tanh(W)"),
                       "%s", s.buf);
    cr_assert_null(strstr(s.buf + 1, "n1 [shape=box, style=filled, fillcolor=\"#dbe9f6\", color"),
                   "%s", s.buf);
    sink_free(&s);
    /* errors */
    char err[160];
    ad_print_opts o = {0};
    o.errbuf = err;
    o.errcap = sizeof err;
    const size_t bad[2] = {2, 4};
    d.highlight = bad;
    d.nhighlight = 2;
    cr_assert_eq(ad_export_dot_ex(t, J, sink_write, &s, &o, &d), AD_EMISUSE);
    cr_assert_str_eq(err, "export_dot: dopts.highlight[1] is 4; the tape's nodes are 1 .. 3");
    d.highlight = NULL;
    cr_assert_eq(ad_export_dot_ex(t, J, sink_write, &s, &o, &d), AD_EMISUSE);
    cr_assert_str_eq(err, "export_dot: dopts.highlight is NULL with nhighlight 2");
    d.size = 4;
    cr_assert_eq(ad_export_dot_ex(t, J, sink_write, &s, &o, &d), AD_EMISUSE);
    cr_assert(!strncmp(err, "export_dot: dopts.size is 4; set it to sizeof(ad_dot_opts)", 58), "%s",
              err);
    cr_assert_null(s.buf, "nothing written on an error");
    ad_tape_free(t);
}
